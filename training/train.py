"""Training layer (commands): train an MFD model (or the plain-head baseline) from a YAML config.

    python -m training.train --config CONFIG [--out DIR] [--resume] [--force] [--set FIELD=VALUE …]
    torchrun --nproc_per_node N -m training.train --config CONFIG …

The run itself (phases, checkpoint, history) is `training.model.fit`. Bad input exits with status 2 and one line.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from mfd_common.codec import MetadataError

from .data.dataset import TrackTableError
from .data.genome import GenomeError
from .data.mapping import MappingError
from .data.peaks import PeakFileError
from .data.store import StoreError
from .model.config import ConfigError, load_config, parse_overrides
from .model.fit import run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train an MFD model (or the baseline) from a YAML config.")
    parser.add_argument("--config", required=True, help="YAML config (see training/configs/demo.yaml)")
    parser.add_argument("--mapping", help="the authors' metadata mapping YAML (replaces the config's metadata)")
    parser.add_argument("--out", help="checkpoint folder (default: runs/<name>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from train_state.pt")
    parser.add_argument("--force", action="store_true", help="overwrite a checkpoint already in --out")
    parser.add_argument("--set", action="append", metavar="FIELD=VALUE",
                        help="override a config field, e.g. --set train.epochs=2 (repeatable)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--stop-after", type=int, metavar="N",
                        help="stop after N epochs of this invocation (the schedule still spans train.epochs), e.g. "
                             "to fit a job's wall-clock limit; continue with --resume")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, parse_overrides(args.set), mapping=args.mapping)
        out = Path(args.out) if args.out else Path("runs") / cfg.name
        metrics = run(cfg, out, resume=args.resume, force=args.force, progress=not args.no_progress,
                      stop_after=args.stop_after)
    except (ConfigError, MappingError, MetadataError, GenomeError, PeakFileError, TrackTableError, StoreError,
            FileExistsError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0 and metrics:
        summary = {split: {k: metrics[split][k] for k in ("auroc_mean", "auprc_mean")}
                   for split in ("val", "test") if split in metrics}
        print(f"[mfd] done: {out} {json.dumps(summary)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
