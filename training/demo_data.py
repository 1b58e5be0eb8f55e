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

from .data.demo_genome import BIN, COPIES, DEFAULT_CHROMOSOMES, MOTIF_BIN_RATE, TRACKS, DemoSpec, generate


def _argument_error(args: argparse.Namespace) -> str | None:
    """The first out-of-range option, as one line naming it, or None."""
    if not args.scale > 0:
        return f"--scale: must be > 0, got {args.scale}"
    if not 0 < args.motif_bin_rate <= 0.2:
        return f"--motif-bin-rate: must be in (0, 0.2] (five TFs share each bin's draw), got {args.motif_bin_rate}"
    if not 1 <= args.copies <= 4:
        return f"--copies: must be 1-4 (each instance needs its own slot of the 128-bp bin), got {args.copies}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the MFD demo data set (genome, peaks, metadata, config).")
    parser.add_argument("--out", default="demo_data", help="output folder (default: demo_data/)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply chromosome lengths (128-bp multiples)")
    parser.add_argument("--motif-bin-rate", type=float, default=MOTIF_BIN_RATE,
                        help=f"per TF: share of 128-bp bins holding a motif site (default {MOTIF_BIN_RATE})")
    parser.add_argument("--copies", type=int, default=COPIES,
                        help=f"motif instances per site, 1-4 (default {COPIES}: a homotypic pair)")
    parser.add_argument("--gc-neutral", action="store_true",
                        help="planting a site leaves its bin's GC as it was (motifs independent of the GC artefact)")
    args = parser.parse_args(argv)
    error = _argument_error(args)
    if error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    chroms = {c: int(round(n * args.scale / BIN)) * BIN for c, n in DEFAULT_CHROMOSOMES.items()}
    out = generate(args.out, DemoSpec(chroms, seed=args.seed, motif_bin_rate=args.motif_bin_rate, copies=args.copies,
                                         gc_neutral=args.gc_neutral))
    print(f"wrote demo data to {out}/ ({sum(chroms.values()) / 1e6:.2f} Mb, {len(TRACKS)} tracks); "
          f"train with: python -m training.train --config {out}/config.yaml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
