"""Training layer (commands): import a checkpoint trained with the authors' code into a model repository.

    python -m training.import_reference CHECKPOINT.ckpt --mapping MAPPING.yaml --out DIR [--name NAME]

(with --name the model is written to DIR/NAME/, one model of a multi-model repository, mfd_common.model_store)
The import itself is `training.reference.importer`; a failure exits with status 1 and one line.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from mfd_common.card import CARD_FILENAME, ModelCard

from .reference.checkpoint import ReferenceImportError
from .reference.importer import import_reference
from .repository.export import output_dir


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.import_reference",
                                     description="Import a checkpoint trained with the authors' code into a model "
                                                 "repository the service serves unchanged.")
    parser.add_argument("checkpoint", type=Path,
                        help="Lightning .ckpt written by the authors' code (IEAquaticDilated)")
    parser.add_argument("--mapping", type=Path, required=True, help="the metadata mapping YAML it was trained with")
    parser.add_argument("--out", type=Path, required=True,
                        help="model repository to write (must not exist or be empty); with --name, the folder of "
                             "models to write <out>/<NAME>/ into")
    parser.add_argument("--name", help="the model's name (mfd_common.model_store rule): written to <out>/<NAME>/ "
                                       "with NAME in the card (default: --out itself, named by the checkpoint's file)")
    args = parser.parse_args(argv)
    out_dir = output_dir(args.out, args.name, "import_reference")
    if out_dir is None:
        return 2
    try:
        out = import_reference(args.checkpoint, args.mapping, out_dir, name=args.name)
    except ReferenceImportError as err:
        print(f"import failed: {err}", file=sys.stderr)
        return 1
    card = ModelCard.load(out / CARD_FILENAME)
    print(f"imported {card.model_name!r}: {len(card.tracks)} tracks, window {card.seq_len} bases, "
          f"d_tech={card.d_tech} d_bio={card.d_bio} → {out} (serve with MFD_MODEL_REPOSITORY={out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
