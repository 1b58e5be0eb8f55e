"""Training layer (commands): evaluate a checkpoint on a split of a config's data and print the metrics report.

`python -m training.evaluate CKPT --config CONFIG [--split test]` rebuilds the split from the config's data
(in-memory files or `data.store`), matches tracks by id to the checkpoint's card, and prints the report: strict
JSON on stdout (`--out` writes it too; a value that does not exist, e.g. the AUROC of a track without positives,
is null) and a table on stderr. Whole split by default; the authors' metrics under their names (see
`metrics_from_predictions`), ours beside them. The
paper averages forward and reverse complement predictions at evaluation; we report both the forward-only and the
averaged numbers so the effect of averaging is visible rather than silently folded in.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data.sources import load_source
from .data.store import StoreError
from .evaluation.metrics import json_safe, metrics_from_predictions
from .model.checkpoint import load_checkpoint
from .model.config import ConfigError, load_config, parse_overrides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Evaluate an MFD checkpoint on a split of the config's data.")
    parser.add_argument("checkpoint", help="checkpoint folder (model.safetensors + model_card.json)")
    parser.add_argument("--config", required=True,
                        help="training config naming the data (FASTA, TSV and split, or data.store)")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override a config field")
    parser.add_argument("--no-rc", action="store_true", help="forward strand only")
    parser.add_argument("--max-windows", type=int, default=None,
                        help="at most this many windows (in-memory data: the first ones; a store: evenly spaced); "
                             "default: the whole split")
    parser.add_argument("--no-probes", action="store_true",
                        help="skip the authors' post-hoc probes (shuffle discriminator, R² predictors)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the forest and the probes (default 0)")
    parser.add_argument("--out", help="also write the metrics JSON here")
    args = parser.parse_args(argv)
    if args.max_windows is not None and args.max_windows < 1:
        print("error: --max-windows: must be at least 1", file=sys.stderr)
        return 2
    try:
        overrides = parse_overrides(args.set)
        cfg = load_config(args.config, overrides)
        model, card = load_checkpoint(args.checkpoint)
        source = load_source(cfg, splits=(args.split,))
    except (ConfigError, StoreError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.split not in source.split_sizes():
        where = "data.store.universe" if cfg.data.store is not None else f"data.split.{args.split}"
        print(f"error: config: {where}: the {args.split} split is empty", file=sys.stderr)
        return 2
    index = {tid: k for k, tid in enumerate(source.tracks.ids)}
    missing = [t.id for t in card.tracks if t.id not in index]
    if missing:
        where = cfg.data.store.dir if cfg.data.store is not None else cfg.data.metadata
        print(f"error: tracks of the checkpoint missing from {where}: {', '.join(missing)}", file=sys.stderr)
        return 2
    order = np.array([index[t.id] for t in card.tracks])
    codes = card.metadata_codec().encode_many([t.metadata for t in card.tracks], strict=False)
    pred = source.predict(model, args.split, cfg, torch.device("cpu"), codes=codes,
                          reverse_complement=not args.no_rc, tracks=order, max_windows=args.max_windows)
    found = metrics_from_predictions(pred, [t.id for t in card.tracks], card.d_tech, probes=not args.no_probes,
                                     seed=args.seed)
    metrics = json_safe({args.split: found})
    text = json.dumps(metrics, indent=2, allow_nan=False)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    print(report_table(args.split, metrics[args.split]), file=sys.stderr)
    return 0


def report_table(split: str, m: dict[str, Any]) -> str:
    """The report for people: the authors' figures under their names, then ours (the JSON has everything)."""
    def fmt(value: Any) -> str:
        return "n/a" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)

    rows = [("windows", m["windows"]), ("AUROC (mean over tracks, strand-averaged)", m["auroc_mean"]),
            ("AUPRC (mean over tracks, strand-averaged)", m["auprc_mean"]),
            ("AUROC forward strand", m["auroc_mean_forward"]), ("AUPRC forward strand", m["auprc_mean_forward"])]
    rows += [(f"authors: {k}", v) for k, v in m["authors"].items()]
    rows += [(f"ours: {k}", v) for k, v in m["independence"].items()]
    rows += [(f"ours: variance {k}", v) for k, v in m["variance_share"].items()]
    width = max(len(name) for name, _ in rows)
    return "\n".join([f"{split} split"] + [f"  {name:<{width}}  {fmt(value)}" for name, value in rows])


if __name__ == "__main__":
    sys.exit(main())
