"""Training layer (commands): write the deterministic demo data set (`training.data.demo_genome`).

    python -m training.demo_data [--out demo_data/] [--seed 0] [--scale 1.0]
"""
from __future__ import annotations

import argparse
import sys

from .data.demo_genome import BIN, DEFAULT_CHROMOSOMES, TRACKS, DemoSpec, generate

def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the MFD demo data set (genome, peaks, metadata, config).")
    parser.add_argument("--out", default="demo_data", help="output folder (default: demo_data/)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply chromosome lengths (128-bp multiples)")
    args = parser.parse_args(argv)
    chroms = {c: int(round(n * args.scale / BIN)) * BIN for c, n in DEFAULT_CHROMOSOMES.items()}
    out = generate(args.out, DemoSpec(chroms, seed=args.seed))
    print(f"wrote demo data to {out}/ ({sum(chroms.values()) / 1e6:.2f} Mb, {len(TRACKS)} tracks); "
          f"train with: python -m training.train --config {out}/config.yaml")


if __name__ == "__main__":
    sys.exit(main())
