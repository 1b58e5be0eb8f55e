"""Service layer (core): variant effect windows: reference and alternative sequences centred on a variant.

A variant is VCF-style: 1-based `pos` of the first reference base, `ref` and `alt` alleles (SNVs and small
indels; no symbolic alleles). Both windows start at the same genomic position, `length // 2` bases left of
the variant, so the variant sits at the window centre in both; for indels the alternative haplotype is filled
(or cut) on the right from the reference, which keeps the left flank and the variant position identical (as the
authors' `VariantParser.get_variant_seq` does). `length` is the model's `seq_len`, or `seq_len + shifts − 1` when
the window is read for shift ensembling (service.core.effects).
The reference allele is checked against the FASTA: a mismatch almost always means the wrong genome build, or
REF and ALT swapped, which the message says when the ALT allele is what the genome holds.
"""
from __future__ import annotations

from dataclasses import dataclass

from mfd_common import tokens

from ..errors import RequestError
from .genome import Genome

#: Longest REF or ALT allele scored: small indels only; longer changes move much of a window and need other models.
MAX_ALLELE_LENGTH = 100


@dataclass(frozen=True)
class VariantSpec:
    """A variant as the engine takes it, whatever front door it came through (JSON, VCF record)."""

    chrom: str
    pos: int
    ref: str
    alt: str
    id: str | None = None

    @property
    def label(self) -> str:
        """The id echoed in results: the caller's, else `chrom:pos:ref>alt`."""
        return self.id or f"{self.chrom}:{self.pos}:{self.ref}>{self.alt}"


def allele_problem(value: str) -> str | None:
    """Why `value` is not a scorable allele (empty, too long, not A/C/G/T/N), or None."""
    if not value:
        return "allele must not be empty (write indels VCF-style with the anchor base)"
    if len(value) > MAX_ALLELE_LENGTH:
        return f"alleles longer than {MAX_ALLELE_LENGTH} bp are not supported"
    try:
        tokens.encode(value)
    except tokens.InvalidSequenceError as exc:
        return str(exc)
    return None


def check_variant(chrom: str, pos: int, ref: str, alt: str, variant_id: str | None = None, *,
                  field: str, kind: str = "invalid_argument") -> VariantSpec:
    """The variant with upper-cased alleles, or a RequestError naming `field.<part>`: the checks every front door
    applies before a window is read (the JSON schema runs the same `allele_problem` through pydantic)."""
    if not chrom:
        raise RequestError(f"{field}.chrom", "chromosome name must not be empty", kind=kind)
    if pos < 1:
        raise RequestError(f"{field}.pos", f"position {pos} must be at least 1 (VCF positions are 1-based)",
                           kind=kind)
    for name, allele in (("ref", ref), ("alt", alt)):
        problem = allele_problem(allele)
        if problem is not None:
            allowed = list(tokens.ALPHABET) if problem.startswith("invalid base") else None
            raise RequestError(f"{field}.{name}", problem, allowed, kind=kind)
    if ref.upper() == alt.upper():
        raise RequestError(f"{field}.alt", "alt allele equals the ref allele", kind=kind)
    return VariantSpec(chrom, pos, ref.upper(), alt.upper(), variant_id)


@dataclass(frozen=True)
class VariantWindows:
    ref: str
    alt: str
    window_start: int  # 0-based genomic start of both windows


def check_ref(genome: Genome, chrom: str, pos: int, ref: str, alt: str, *, field: str) -> None:
    """Raise a RequestError (kind `ref_mismatch`) unless the genome holds `ref` at `chrom:pos`."""
    length = genome.check_chrom(chrom, f"{field}.chrom")
    start0 = pos - 1
    if pos < 1 or pos > length:
        raise RequestError(f"{field}.pos", f"position {pos} is outside {chrom} (1..{length})", kind="out_of_range")
    if start0 + len(ref) > length:
        raise RequestError(f"{field}.ref", f"allele runs past the end of {chrom} (length {length})",
                           kind="out_of_range")
    observed = genome.fetch(chrom, start0, start0 + len(ref), field=field)
    if observed != ref:
        hint = ("; the genome holds the ALT allele there: are REF and ALT swapped?"
                if genome.fetch(chrom, start0, min(start0 + len(alt), length), field=field) == alt
                else "; is the variant on the same genome build?")
        raise RequestError(f"{field}.ref", f"reference allele {ref!r} does not match the genome at "
                           f"{chrom}:{pos} ({observed!r}){hint}", status=422, kind="ref_mismatch")


def variant_windows(genome: Genome, chrom: str, pos: int, ref: str, alt: str, length: int,
                    *, field: str) -> VariantWindows:
    """Ref and alt windows of `length` bases with the variant's first base at index `length // 2`."""
    ref, alt = ref.upper(), alt.upper()
    check_ref(genome, chrom, pos, ref, alt, field=field)
    chrom_length = genome.check_chrom(chrom, f"{field}.chrom")
    start0 = pos - 1
    left_len = length // 2
    window_start = start0 - left_len
    if window_start < 0 or window_start + length > chrom_length:
        raise RequestError(f"{field}.pos", f"a {length}-bp window centred on {chrom}:{pos} runs off the "
                           f"chromosome (length {chrom_length}); variants within {left_len} bp of an end "
                           "cannot be scored", kind="near_edge")
    ref_seq = genome.fetch(chrom, window_start, window_start + length, field=field)
    left = ref_seq[:left_len]
    right_start = start0 + len(ref)
    right_needed = length - left_len - len(alt)
    right = ""
    if right_needed > 0:
        right_end = right_start + right_needed
        if right_end > chrom_length:
            raise RequestError(f"{field}.pos", f"the alternative window runs past the end of {chrom} "
                               f"(length {chrom_length})", kind="near_edge")
        right = genome.fetch(chrom, right_start, right_end, field=field)
    alt_seq = (left + alt + right)[:length]
    return VariantWindows(ref_seq, alt_seq, window_start)
