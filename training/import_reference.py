"""Training layer (commands): import a checkpoint trained with the authors' code into a model repository.

    python -m training.import_reference CHECKPOINT.ckpt --mapping MAPPING.yaml --out DIR [--name NAME]

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

def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.import_reference",
                                     description="Import a checkpoint trained with the authors' code into a model "
                                                 "repository the service serves unchanged.")
    parser.add_argument("checkpoint", type=Path,
                        help="Lightning .ckpt written by the authors' code (IEAquaticDilated)")
    parser.add_argument("--mapping", type=Path, required=True, help="the metadata mapping YAML it was trained with")
    parser.add_argument("--out", type=Path, required=True, help="model repository to write (must not exist or be empty)")
    parser.add_argument("--name", help="model name in the card (default: the checkpoint's file name)")
    args = parser.parse_args(argv)
    try:
        out = import_reference(args.checkpoint, args.mapping, args.out, name=args.name)
    except ReferenceImportError as err:
        print(f"import failed: {err}", file=sys.stderr)
        return 1
    card = ModelCard.load(out / CARD_FILENAME)
    print(f"imported {card.model_name!r}: {len(card.tracks)} tracks, window {card.seq_len} bases, "
          f"d_tech={card.d_tech} d_bio={card.d_bio} → {out} (serve with MFD_MODEL_REPOSITORY={out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
