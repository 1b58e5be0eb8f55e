"""Reference genome access: a FASTA read through pyfaidx, returned as uint8 tokens (A,C,G,T,N = 0..4).

Why whole chromosomes as uint8: training draws thousands of random windows per second; slicing a numpy array
is free, while a pyfaidx lookup per window is not. A chromosome costs one byte per base (GRCh38: ~3 GB total).
Reference genomes carry a few IUPAC ambiguity codes (R, Y, M, …); for training they become N, unlike the serving
contract (`mfd_common.tokens.encode`) which rejects them, because here the input is a curated reference and not
a user's request.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyfaidx

from mfd_common.tokens import InvalidSequenceError, encode


class GenomeError(ValueError):
    """The FASTA is missing, is not a FASTA, or lacks a requested chromosome."""


def sequence_to_tokens(sequence: str, where: str = "sequence") -> np.ndarray:
    """Encode a reference sequence; letters other than ACGT become N, anything else is an error."""
    try:
        return encode(sequence, ambiguous_as_n=True)
    except InvalidSequenceError as err:
        raise GenomeError(f"{where}: invalid character {err.letter!r} at position {err.position}") from None


class Genome:
    """A reference FASTA with cached per-chromosome token arrays."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise GenomeError(f"FASTA {self.path} does not exist")
        with open(self.path, "rb") as handle:
            head = handle.read(2)
        if head[:2] == b"\x1f\x8b":
            pass  # bgzipped FASTA: pyfaidx reads it (plain gzip fails below with pyfaidx's own message)
        else:
            with open(self.path, "rb") as handle:
                first = b""
                for line in handle:
                    if line.strip():
                        first = line.strip()
                        break
            if not first.startswith(b">"):
                raise GenomeError(f"{self.path} is not a FASTA file: the first line must start with '>' "
                                  f"(got {first[:40]!r})")
        try:
            self._fasta = pyfaidx.Fasta(str(self.path), as_raw=True, sequence_always_upper=False,
                                        read_long_names=False, rebuild=True)
        except (pyfaidx.FastaIndexingError, pyfaidx.UnsupportedCompressionFormat, ValueError) as err:
            raise GenomeError(f"{self.path} could not be indexed as FASTA: {err}") from None
        self.sizes: dict[str, int] = {name: len(self._fasta[name]) for name in self._fasta.keys()}
        self._cache: dict[str, np.ndarray] = {}

    @property
    def chromosomes(self) -> list[str]:
        return list(self.sizes)

    def check(self, chrom: str, what: str = "chromosome") -> None:
        if chrom not in self.sizes:
            shown = ", ".join(list(self.sizes)[:20]) + (" …" if len(self.sizes) > 20 else "")
            raise GenomeError(f"{what} {chrom!r} not found in {self.path} (it has: {shown})")

    def tokens(self, chrom: str) -> np.ndarray:
        """The whole chromosome as uint8 tokens (cached)."""
        self.check(chrom)
        if chrom not in self._cache:
            self._cache[chrom] = sequence_to_tokens(str(self._fasta[chrom][:]), f"{self.path}:{chrom}")
        return self._cache[chrom]

    def close(self) -> None:
        self._fasta.close()
