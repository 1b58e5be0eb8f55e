"""Variant effect windows: reference and alternative sequences centred on a variant.

A variant is VCF-style: 1-based `pos` of the first reference base, `ref` and `alt` alleles (SNVs and small
indels; no symbolic alleles). Both windows start at the same genomic position, `seq_len // 2` bases left of
the variant, so the variant sits at the window centre in both; for indels the alternative haplotype is filled
(or cut) on the right from the reference, which keeps the left flank and the variant position identical.
The reference allele is checked against the FASTA: a mismatch almost always means the wrong genome build.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import RequestError
from .genome import Genome


@dataclass(frozen=True)
class VariantWindows:
    ref: str
    alt: str
    window_start: int  # 0-based genomic start of both windows


def variant_windows(genome: Genome, chrom: str, pos: int, ref: str, alt: str, seq_len: int,
                    *, field: str) -> VariantWindows:
    length = genome.check_chrom(chrom, f"{field}.chrom")
    ref, alt = ref.upper(), alt.upper()
    start0 = pos - 1
    window_start = start0 - seq_len // 2
    if pos < 1 or pos > length:
        raise RequestError(f"{field}.pos", f"position {pos} is outside {chrom} (1..{length})")
    if start0 + len(ref) > length:
        raise RequestError(f"{field}.ref", f"allele runs past the end of {chrom} (length {length})")
    if window_start < 0 or window_start + seq_len > length:
        raise RequestError(f"{field}.pos", f"a {seq_len}-bp window centred on {chrom}:{pos} runs off the "
                           f"chromosome (length {length}); variants within {seq_len // 2} bp of an end "
                           "cannot be scored")
    observed = genome.fetch(chrom, start0, start0 + len(ref), field=field)
    if observed != ref:
        raise RequestError(f"{field}.ref", f"reference allele {ref!r} does not match the genome at "
                           f"{chrom}:{pos} ({observed!r}); is the variant on the same genome build?",
                           status=422, kind="ref_mismatch")
    ref_seq = genome.fetch(chrom, window_start, window_start + seq_len, field=field)
    left = ref_seq[: seq_len // 2]
    right_start = start0 + len(ref)
    right_needed = seq_len - len(left) - len(alt)
    if right_needed > 0:
        right_end = right_start + right_needed
        if right_end > length:
            raise RequestError(f"{field}.pos", f"the alternative window runs past the end of {chrom} "
                               f"(length {length})")
        right = genome.fetch(chrom, right_start, right_end, field=field)
    else:
        right = ""
    alt_seq = (left + alt + right)[:seq_len]
    return VariantWindows(ref_seq, alt_seq, window_start)
