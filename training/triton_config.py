"""Training layer (commands): validate the config.pbtxt files of model repositories (`training.repository`).

    python -m training.triton_config REPOSITORY [REPOSITORY …] [--backend pytorch_libtorch|python|any]

A folder of models (mfd_common.model_store) is checked model by model. Prints `ok` per valid repository; exits 1 if any config is invalid, naming the file and the reason.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from mfd_common.model_store import ModelStoreError, open_store

from .repository.triton_config import LIBTORCH_BACKEND, PYTHON_BACKEND, TritonConfigError, validate_repository


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Validate the config.pbtxt files of an mfd model repository.")
    parser.add_argument("repository", nargs="+", type=Path)
    parser.add_argument("--backend", choices=[LIBTORCH_BACKEND, PYTHON_BACKEND, "any"], default=LIBTORCH_BACKEND)
    args = parser.parse_args(argv)
    status = 0
    for given in args.repository:
        try:  # a folder of models is checked model by model
            repositories = list(open_store(given).models.values())
        except ModelStoreError:
            repositories = [given]  # validate_repository names what is missing
        for repository in repositories:
            try:
                configs = validate_repository(repository, backend=None if args.backend == "any" else args.backend)
            except TritonConfigError as err:
                print(f"FAIL {err}", file=sys.stderr)
                status = 1
            else:
                print(f"ok   {repository}: {', '.join(sorted(configs))}")
    return status


if __name__ == "__main__":
    sys.exit(main())
