"""Training layer (commands): write the deterministic demo data set (`training.data.demo_genome`).

    python -m training.demo_data [--out demo_data/] [--seed 0] [--scale 1.0] [--motif-bin-rate 0.08] [--copies 2]
                                 [--gc-neutral]

The defaults write the data the bundled model was trained on; `--motif-bin-rate` / `--copies` plant more or
stronger sites, `--gc-neutral` keeps each site's bin at its GC; the claims flavour of
`training.evaluation.demo_preset` is `--motif-bin-rate 0.12 --copies 3 --gc-neutral`.
"""
from __future__ import annotations

import argparse
import sys

from .data.demo_genome import (BIN, COPIES, DEFAULT_CHROMOSOMES, MAX_COPIES, MOTIF_BIN_RATE, TRACKS, DemoSpec,
                               DemoSpecError, generate)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the MFD demo data set (genome, peaks, metadata, config).")
    parser.add_argument("--out", default="demo_data", help="output folder (default: demo_data/)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply chromosome lengths (128-bp multiples)")
    parser.add_argument("--motif-bin-rate", type=float, default=MOTIF_BIN_RATE,
                        help=f"per TF: share of 128-bp bins holding a motif site (default {MOTIF_BIN_RATE})")
    parser.add_argument("--copies", type=int, default=COPIES,
                        help=f"motif instances per site, 1-{MAX_COPIES} (default {COPIES}: a homotypic pair)")
    parser.add_argument("--gc-neutral", action="store_true",
                        help="planting a site leaves its bin's GC as it was (motifs independent of the GC artefact)")
    args = parser.parse_args(argv)
    if not args.scale > 0:
        print(f"error: --scale: must be > 0, got {args.scale}", file=sys.stderr)
        return 2
    chroms = {c: int(round(n * args.scale / BIN)) * BIN for c, n in DEFAULT_CHROMOSOMES.items()}
    try:
        spec = DemoSpec(chroms, seed=args.seed, motif_bin_rate=args.motif_bin_rate, copies=args.copies,
                        gc_neutral=args.gc_neutral)
    except DemoSpecError as err:   # the spec's field is this command's option of the same name
        print(f"error: --{err.field.replace('_', '-')}: {err.reason}", file=sys.stderr)
        return 2
    out = generate(args.out, spec)
    print(f"wrote demo data to {out}/ ({sum(chroms.values()) / 1e6:.2f} Mb, {len(TRACKS)} tracks); "
          f"train with: python -m training.train --config {out}/config.yaml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
