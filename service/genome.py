"""Genomic intervals → sequences through a pyfaidx-indexed reference FASTA.

Coordinates are BED-style: 0-based, half-open `[start, end)`. Anything that would read past a chromosome
(or names one the FASTA lacks) is a client error naming the field, never a silently shortened or padded window.
Chromosome names are matched across the two naming schemes (UCSC `chr1`/`chrM`, Ensembl/NCBI `1`/`MT`), because
VCFs and FASTAs of the same build routinely disagree on it; a name the FASTA has exactly always wins.
"""
from __future__ import annotations

import threading
from pathlib import Path

from .errors import RequestError


class Genome:
    def __init__(self, fasta: str | Path):
        import pyfaidx

        self.path = Path(fasta)
        # pyfaidx builds the .fai index on first open (and rebuilds a stale one: a .fai older than its FASTA
        # would silently return wrong bases); sequences are read lazily from disk.
        self._fasta = pyfaidx.Fasta(str(self.path), as_raw=True, sequence_always_upper=True,
                                    rebuild=True, build_index=True)
        self.lengths = {name: len(record) for name, record in self._fasta.records.items()}
        self._lock = threading.Lock()  # pyfaidx shares one file handle

    def close(self) -> None:
        self._fasta.close()

    def resolve(self, chrom: str) -> str | None:
        """The FASTA's name for `chrom` (`1` ↔ `chr1`, `MT` ↔ `chrM`), or None if it has none."""
        if chrom in self.lengths:
            return chrom
        bare = chrom[3:] if chrom.lower().startswith("chr") else chrom
        for candidate in (bare, "chr" + bare, *(("MT", "chrM") if bare.upper() in ("M", "MT") else ())):
            if candidate in self.lengths:
                return candidate
        return None

    def check_chrom(self, chrom: str, field: str) -> int:
        name = self.resolve(chrom)
        if name is None:
            raise RequestError(field, f"unknown chromosome {chrom!r}", sorted(self.lengths), kind="unknown_chrom")
        return self.lengths[name]

    def fetch(self, chrom: str, start: int, end: int, *, field: str) -> str:
        """Sequence of `[start, end)` on `chrom`; `field` names the request element for errors."""
        length = self.check_chrom(chrom, f"{field}.chrom")
        if start < 0:
            raise RequestError(f"{field}.start", f"start {start} is before the chromosome start (0)")
        if end > length:
            raise RequestError(f"{field}.end", f"end {end} is past the end of {chrom} (length {length})")
        if end <= start:
            raise RequestError(f"{field}.end", f"end {end} must be greater than start {start}")
        name = self.resolve(chrom)
        with self._lock:
            return str(self._fasta[name][start:end])
