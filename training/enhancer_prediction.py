"""Training layer (commands): the paper's VISTA enhancer experiment on a BED of labelled regions.

    python -m training.enhancer_prediction REGIONS.bed --fasta genome.fa [--model model_repository]
        [--label-column 5] [--baseline-model OTHER_REPOSITORY] [--folds 5] [--out table.tsv|table.json]

Do f_bio tell enhancers from other regions better than f_tech once GC content is regressed out? The analysis is
`training.evaluation.enhancer_prediction` (docs/analyses.md). Bad input exits with status 2 and one line.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .evaluation.enhancer_prediction import BUNDLED, enhancer_prediction, write_table
from .evaluation.exported_model import run_analysis


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    parser.add_argument("bed", type=Path, help="BED of labelled regions")
    parser.add_argument("--fasta", type=Path, required=True)
    parser.add_argument("--model", type=Path, default=BUNDLED, help="exported model repository (default: bundled)")
    parser.add_argument("--baseline-model", type=Path, default=None, help="another repository to compare with")
    parser.add_argument("--label-column", type=int, default=5, help="1-based column of the 0/1 label (default 5)")
    parser.add_argument("--max-windows", type=int, default=9, help="model windows per region at most (default 9)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strands", type=int, choices=(1, 2), default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="write the table here (.tsv, or .json with a summary)")
    args = parser.parse_args(argv)

    def analysis() -> tuple[list[dict], dict]:
        return enhancer_prediction(
            args.bed, args.fasta, model_dir=args.model, baseline_dir=args.baseline_model,
            label_column=args.label_column, max_windows=args.max_windows, folds=args.folds, seed=args.seed,
            strands=args.strands, threads=args.threads)

    return run_analysis(analysis, write_table, args.out)


if __name__ == "__main__":
    sys.exit(main())
