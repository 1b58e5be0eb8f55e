"""Training layer (commands): the paper's imputation experiment: train with tracks held out, then predict those
tracks from their metadata alone.

    python -m training.heldout --config demo_data/config.yaml --out runs/heldout
        (--holdout-tracks ID … | --holdout-file FILE) [--set field=value …]
        [--reference-checkpoint DIR | --train-reference] [--target-variable target] [--no-progress]

The experiment is `training.evaluation.heldout` (docs/analyses.md). Output: `OUT/heldout.json`, `OUT/heldout.tsv`
and the table on stdout. Bad input exits with status 2 and one line.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mfd_common.codec import MetadataError

from .evaluation.heldout import HeldOutError, heldout_experiment, read_holdout_file, write_outputs
from .model.config import ConfigError, load_config, parse_overrides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    parser.add_argument("--config", required=True, help="training config YAML (in-memory data path)")
    parser.add_argument("--out", required=True, type=Path, help="output folder (model/, data/, heldout.json)")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--holdout-tracks", nargs="+", metavar="ID", help="track ids to hold out of training")
    group.add_argument("--holdout-file", type=Path, help="file with one track id per line")
    parser.add_argument("--set", action="append", metavar="FIELD=VALUE", help="config override (repeatable)")
    ref = parser.add_mutually_exclusive_group()
    ref.add_argument("--reference-checkpoint", type=Path, help="a model trained with all tracks, for auroc_seen")
    ref.add_argument("--train-reference", action="store_true", help="train that model too (OUT/reference)")
    parser.add_argument("--target-variable", default="target", help="metadata variable of the same-target baseline")
    parser.add_argument("--force", action="store_true", help="overwrite checkpoints already in OUT")
    parser.add_argument("--score-only", action="store_true",
                        help="do not train: score with the checkpoints already in OUT (model/, reference/)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    from .data.dataset import TrackTableError
    from .data.genome import GenomeError
    from .data.mapping import MappingError
    from .data.peaks import PeakFileError
    from .data.store import StoreError

    try:
        cfg = load_config(args.config, parse_overrides(args.set))
        holdout = args.holdout_tracks or read_holdout_file(args.holdout_file)
        if not holdout:
            raise HeldOutError(f"--holdout-file: {args.holdout_file} lists no track ids")
        rows, settings = heldout_experiment(
            cfg, holdout, args.out, reference_checkpoint=args.reference_checkpoint,
            train_reference=args.train_reference, target_variable=args.target_variable, force=args.force,
            score_only=args.score_only, progress=not args.no_progress)
    except (HeldOutError, ConfigError, MappingError, MetadataError, GenomeError, PeakFileError, TrackTableError,
            StoreError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    settings = {"config": str(Path(args.config).resolve()), **settings}
    sys.stdout.write(write_outputs(args.out, rows, settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
