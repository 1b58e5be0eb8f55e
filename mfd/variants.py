"""API layer (variant input): the variants a user has — a DataFrame or a VCF/BCF file — as /predict_variants items.

Files are read by htslib through pysam (plain, gzip or BGZF text VCF, BCF), the field's reader, so whatever
bcftools writes is read as bcftools reads it. A record with several ALT alleles gives one variant per allele.
ALT alleles the service cannot score (symbolic `<DEL>`, breakends, `*`, missing `.`) are not sent; they are
listed in the returned `skipped` with the reason, never dropped silently.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

REQUIRED = ("chrom", "pos", "ref", "alt")
_BASES = re.compile(r"^[ACGTNacgtn]+$")


def _unscorable(alt: str | None) -> str | None:
    if alt is None or alt in (".", ""):
        return "missing ALT allele"
    if not _BASES.match(alt):
        return f"ALT {alt[:40]!r} is not a sequence of A/C/G/T/N (symbolic or breakend alleles are not scored)"
    return None


def from_vcf(path: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(variants, skipped) from a VCF/BCF file; each skipped entry names the record and why."""
    import pysam

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"variants: {path}: no such file")
    variants: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    verbosity = pysam.set_verbosity(0)  # htslib's note that a .vcf.gz has no index: we read it whole
    try:
        with pysam.VariantFile(str(path), drop_samples=True) as vcf:
            for number, record in enumerate(vcf, start=1):
                for alt in record.alts or (None,):
                    item = {"chrom": record.chrom, "pos": int(record.pos), "ref": record.ref or "", "alt": alt}
                    if record.id:
                        item["id"] = record.id if len(record.alts or ()) < 2 else f"{record.id}:{alt}"
                    reason = _unscorable(alt)
                    if reason:
                        skipped.append({**item, "record": number, "reason": reason})
                    else:
                        variants.append(item)
    except (OSError, ValueError) as exc:
        raise ValueError(f"variants: {path}: cannot read as VCF/BCF ({exc})") from None
    finally:
        pysam.set_verbosity(verbosity)
    return variants, skipped


def from_frame(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Variants from a DataFrame with columns chrom, pos (1-based, VCF), ref, alt and optionally id."""
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(f"variants: the DataFrame lacks column(s) {', '.join(missing)} "
                         f"(needs {', '.join(REQUIRED)}; pos is 1-based as in VCF)")
    items = []
    for row in df.itertuples(index=False):
        item = {"chrom": str(row.chrom), "pos": int(row.pos), "ref": str(row.ref), "alt": str(row.alt)}
        variant_id = getattr(row, "id", None)
        if variant_id is not None and not (isinstance(variant_id, float) and variant_id != variant_id):
            item["id"] = str(variant_id)
        items.append(item)
    return items


def load(variants: pd.DataFrame | str | Path | list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict]]:
    """(variants, skipped) from any accepted form."""
    if isinstance(variants, (str, Path)):
        return from_vcf(variants)
    if isinstance(variants, pd.DataFrame):
        return from_frame(variants), []
    if isinstance(variants, list):
        return from_frame(pd.DataFrame(variants)), []
    raise TypeError(f"variants: expected a DataFrame, a VCF/BCF path or a list of dicts, not {type(variants).__name__}")
