"""Training layer (commands): `python -m training.report CKPT --out report.html`, a run's report as one HTML file.

Learning curves, per-track AUROC/AUPRC of the full, biological-only and technical-only read-outs, the bio × tech
feature correlation and variance shares, inlined as PNG (no CDN, no JavaScript): `training.evaluation.report`.
Bad input exits 2 with one line.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .evaluation.report import DEFAULT_MAX_WINDOWS, build_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="checkpoint folder (model_card.json, history.jsonl, model.safetensors)")
    parser.add_argument("--out", required=True, help="the HTML file to write")
    parser.add_argument("--config", help="training config naming the data: enables the biological-only read-out, "
                                         "the feature heatmap and per-track variance shares")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument("--max-windows", type=int, default=DEFAULT_MAX_WINDOWS,
                        help=f"windows predicted (default {DEFAULT_MAX_WINDOWS}; 0: the whole split)")
    parser.add_argument("--no-rc", action="store_true", help="forward strand only")
    args = parser.parse_args(argv)
    if args.max_windows < 0:
        print("error: --max-windows: must be 0 (all) or more", file=sys.stderr)
        return 2
    try:
        from .data.store import StoreError
        from .model.config import ConfigError

        text = build_report(args.checkpoint, config=args.config, split=args.split,
                            max_windows=args.max_windows or None, reverse_complement=not args.no_rc)
    except (ConfigError, StoreError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    Path(args.out).write_text(text, encoding="utf-8")
    print(json.dumps({"out": str(args.out), "bytes": len(text.encode())}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
