"""Training layer (commands): the paper's gnomAD experiment on a VCF with allele frequencies.

    python -m training.rare_variant_enrichment VARIANTS.vcf.gz --fasta genome.fa [--model model_repository]
        [--conditions ID …] [--af-field AF] [--rare-below 0.01] [--quantiles 0.9,0.99] [--strands 2]
        [--out table.tsv|table.json]

Are large effects enriched among rare variants, for the biological part more than for the technical one? The
analysis is `training.evaluation.rare_variant_enrichment` (docs/analyses.md). Bad input exits with status 2 and
one line.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .evaluation.exported_model import run_analysis
from .evaluation.rare_variant_enrichment import BUNDLED, rare_variant_enrichment, write_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    parser.add_argument("vcf", type=Path, help="VCF/BCF with allele frequencies in INFO")
    parser.add_argument("--fasta", type=Path, required=True, help="the reference the VCF was called against")
    parser.add_argument("--model", type=Path, default=BUNDLED, help="exported model repository (default: bundled)")
    parser.add_argument("--conditions", nargs="+", default=None,
                        help="track ids or key=value;key=value metadata (default: every trained track)")
    parser.add_argument("--af-field", default="AF", help="INFO field with allele frequencies (default AF)")
    parser.add_argument("--rare-below", type=float, default=0.01, help="rare: AF below this (default 0.01)")
    parser.add_argument("--quantiles", default="0.9,0.99", help="large |effect|: above these quantiles")
    parser.add_argument("--strands", type=int, choices=(1, 2), default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="write the table here (.tsv, or .json with a summary)")
    args = parser.parse_args(argv)

    def analysis() -> tuple[list[dict], dict]:
        return rare_variant_enrichment(
            args.vcf, args.fasta, model_dir=args.model, conditions=args.conditions, af_field=args.af_field,
            rare_below=args.rare_below, quantiles=args.quantiles, strands=args.strands, threads=args.threads)

    return run_analysis(analysis, write_table, args.out)


if __name__ == "__main__":
    sys.exit(main())
