"""Training layer (analysis): the paper's gnomAD experiment: are large effects enriched among rare variants, for the
biological part more than for the technical one?

The library of `python -m training.rare_variant_enrichment` (the command parses the options and calls
`rare_variant_enrichment`):

    python -m training.rare_variant_enrichment VARIANTS.vcf.gz --fasta genome.fa [--model model_repository]
        [--conditions ID …] [--af-field AF] [--rare-below 0.01] [--quantiles 0.9,0.99] [--strands 2]
        [--out table.tsv|table.json]

Input: a VCF/BCF (plain, BGZF or gzip; as gnomAD or `bcftools` write it) whose INFO carries allele frequencies
(`--af-field`, default `AF`, Number=A: one per ALT allele, or Number=1). Each ALT allele of A/C/G/T bases is one
variant; symbolic alleles, missing AF, contigs the FASTA lacks and REF alleles that disagree with the FASTA are
skipped and counted by reason.

Effects: for each variant, the window of the model's length centred on its position is read from the FASTA (ref)
and the allele is substituted (alt; indels shift the right flank); features are averaged over both strands, and the
effect on each condition's biological and technical logit is Δf_bio · w_bio and Δf_tech · w_tech (the change of
the total logit when only that part's features change: the authors' "ver2" logits). As the authors' script
collapses many outputs, a variant's score per part is its largest |effect| over the conditions (default: every
trained track of the model).

Test: `training.evaluation.rare_variants.enrichment` per part and per quantile: rare = AF < `--rare-below`, large =
score above the quantile; Fisher's exact test, one-sided (rare variants more often large). The table has one row
per (part, quantile) with the 2 × 2 counts, odds ratio and p-value. The model is read from an exported repository
(`training.evaluation.exported_model`); the authors run this on gnomAD with 7 shifts × 2 strands, we centre one
window per strand (cheaper; the variant effect geometry of the batch tool is for scoring, this is a population
statistic).

Bad input raises `AnalysisInputError` naming the file (and record) or option; the command exits 2 with it.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mfd_common.publish import write_atomically

from .exported_model import AnalysisInputError, ExportedModel, Reference
from .rare_variants import enrichment

BASES = set("ACGT")
BUNDLED = Path(__file__).resolve().parents[2] / "model_repository"


@dataclass
class Variants:
    """The scorable variants of a VCF (one per ALT allele) and what was skipped, by reason."""

    chrom: list[str] = field(default_factory=list)
    pos0: list[int] = field(default_factory=list)       # 0-based start of REF
    ref: list[str] = field(default_factory=list)
    alt: list[str] = field(default_factory=list)
    af: list[float] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    records: int = 0

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + n


def read_variants(path: Path, reference: Reference, af_field: str) -> Variants:
    """Alleles with their allele frequency, checked against the FASTA (see module docs for what is skipped)."""
    import pysam

    if not path.is_file():
        raise AnalysisInputError(f"VCF: {path} does not exist")
    verbosity = pysam.set_verbosity(0)   # htslib's "could not retrieve index" note: no index is needed here
    try:
        vcf = pysam.VariantFile(str(path))
    except (OSError, ValueError) as err:
        raise AnalysisInputError(f"VCF: {path} is not a readable VCF/BCF ({err})") from None
    finally:
        pysam.set_verbosity(verbosity)
    with vcf:
        info = vcf.header.info
        if af_field not in info:
            raise AnalysisInputError(f"VCF: {path}: INFO/{af_field} is not declared in the header (allele frequencies "
                                     f"are required; name the field with --af-field)")
        if info[af_field].type not in ("Float", "Integer"):
            raise AnalysisInputError(f"VCF: {path}: INFO/{af_field} has Type={info[af_field].type}, expected Float")
        out = Variants()
        try:
            for record in vcf:
                out.records += 1
                _add_record(record, reference, af_field, out)
        except (OSError, ValueError) as err:
            raise AnalysisInputError(f"VCF: {path}: record {out.records}: {err}") from None
    return out


def _add_record(record, reference: Reference, af_field: str, out: Variants) -> None:
    alts = record.alts or ()
    if not alts:
        out.skip("no ALT allele")
        return
    chrom = reference.chrom(record.chrom)
    if chrom is None:
        out.skip("contig not in the FASTA", len(alts))
        return
    value = record.info.get(af_field)
    afs = value if isinstance(value, tuple) else (value,) * len(alts)
    if len(afs) != len(alts):
        afs = (None,) * len(alts)
    ref = record.ref.upper()
    genome_ref = reference.sequence(chrom, record.start, record.start + len(ref))
    for alt, af in zip(alts, afs):
        if af is None:
            out.skip(f"no {af_field} value")
        elif not 0.0 <= float(af) <= 1.0:
            raise ValueError(f"INFO/{af_field}={af} at {record.chrom}:{record.pos} is not a frequency in [0, 1]")
        elif not (set(ref) <= BASES and alt and set(alt.upper()) <= BASES):
            out.skip("REF or ALT not A/C/G/T (symbolic, *, N)")
        elif ref != genome_ref:
            out.skip("REF differs from the FASTA")
        else:
            out.chrom.append(chrom)
            out.pos0.append(record.start)
            out.ref.append(ref)
            out.alt.append(alt.upper())
            out.af.append(float(af))


def allele_windows(reference: Reference, chrom: str, pos0: int, ref: str, alt: str, length: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(ref tokens, alt tokens), each [length], the variant's first base at index length // 2."""
    from mfd_common.tokens import encode

    half = length // 2
    left = reference.sequence(chrom, pos0 - half, pos0)
    right = reference.sequence(chrom, pos0 + len(ref), pos0 + len(ref) + length)
    ref_seq = (left + ref + right)[:length]
    alt_seq = (left + alt + right)[:length]
    return encode(ref_seq, ambiguous_as_n=True), encode(alt_seq, ambiguous_as_n=True)


def effect_scores(model: ExportedModel, reference: Reference, variants: Variants, conditions: list[str], *,
                  strands: int = 2, chunk: int = 256) -> dict[str, np.ndarray]:
    """Per part (`bio`, `tech`, `total`): each variant's largest |Δ logit| over the conditions."""
    w_tech, w_bio = model.condition_weights(conditions)
    d = model.d_tech
    scores: dict[str, list[np.ndarray]] = {"bio": [], "tech": [], "total": []}
    for start in range(0, len(variants.af), chunk):
        pairs = [allele_windows(reference, variants.chrom[i], variants.pos0[i], variants.ref[i], variants.alt[i],
                                model.window) for i in range(start, min(start + chunk, len(variants.af)))]
        ref_tokens = np.stack([p[0] for p in pairs])
        alt_tokens = np.stack([p[1] for p in pairs])
        delta = model.features(alt_tokens, strands=strands) - model.features(ref_tokens, strands=strands)
        bio = delta[:, d:] @ w_bio.T            # [n, K]
        tech = delta[:, :d] @ w_tech.T
        scores["bio"].append(np.abs(bio).max(axis=1))
        scores["tech"].append(np.abs(tech).max(axis=1))
        scores["total"].append(np.abs(bio + tech).max(axis=1))
    return {k: np.concatenate(v) for k, v in scores.items()}


def enrichment_table(af: np.ndarray, scores: dict[str, np.ndarray], quantiles: list[float], rare_below: float
                     ) -> list[dict]:
    rows = []
    for part, score in scores.items():
        for q in quantiles:
            row = enrichment(af, score, rare_below=rare_below, large_quantile=q)
            rows.append({"part": part, "quantile": q, "threshold": float(np.quantile(score, q)), **row})
    return rows


def _quantiles(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise AnalysisInputError(f"--quantiles: {text!r} is not a comma-separated list of numbers") from None
    if not values or not all(0 < q < 1 for q in values):
        raise AnalysisInputError(f"--quantiles: each must lie strictly between 0 and 1, got {text!r}")
    return values


def write_table(rows: list[dict], out: Path | None, summary: dict) -> None:
    columns = ["part", "quantile", "threshold", "rare_large", "rare_small", "common_large", "common_small",
               "odds_ratio", "p_value"]
    lines = ["\t".join(columns)] + ["\t".join(f"{r[c]:.6g}" if isinstance(r[c], float) else str(r[c])
                                              for c in columns) for r in rows]
    text = "\n".join(lines) + "\n"
    if out is not None:
        if out.suffix == ".json":
            write_atomically(out, json.dumps({**summary, "rows": rows}, indent=2) + "\n")
        else:
            write_atomically(out, text)
    sys.stdout.write(text)


def rare_variant_enrichment(vcf: Path, fasta: Path, *, model_dir: Path = BUNDLED, conditions: list[str] | None = None,
                            af_field: str = "AF", rare_below: float = 0.01, quantiles: str = "0.9,0.99",
                            strands: int = 2, threads: int | None = None) -> tuple[list[dict], dict]:
    """(the Fisher table, one row per part and quantile; a summary of the run) for the variants of `vcf`.

    `quantiles` is the option's text (comma-separated); `conditions` None means every trained track."""
    if not 0 < rare_below < 1:
        raise AnalysisInputError(f"--rare-below: must lie strictly between 0 and 1, got {rare_below}")
    quantile_values = _quantiles(quantiles)
    reference = Reference(fasta)
    model = ExportedModel(model_dir, threads=threads)
    conditions = conditions or [t.id for t in model.card.tracks]
    model.condition_weights(conditions)   # validate before the long pass
    variants = read_variants(vcf, reference, af_field)
    af = np.asarray(variants.af)
    n_rare = int((af < rare_below).sum())
    if n_rare == 0 or n_rare == len(af):
        raise AnalysisInputError(f"VCF: {vcf}: {len(af)} scorable variants, {n_rare} rare "
                                 f"(AF < {rare_below}): the test needs both rare and common variants")
    scores = effect_scores(model, reference, variants, conditions, strands=strands)
    rows = enrichment_table(af, scores, quantile_values, rare_below)
    summary = {"records": variants.records, "variants": len(af), "rare": n_rare, "skipped": variants.skipped,
               "conditions": conditions, "rare_below": rare_below, "strands": strands}
    return rows, summary
