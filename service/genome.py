"""Genomic intervals → sequences through a pyfaidx-indexed reference FASTA.

Coordinates are BED-style: 0-based, half-open `[start, end)`. Anything that would read past a chromosome
(or names one the FASTA lacks) is a client error naming the field, never a silently shortened or padded window.
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

    def check_chrom(self, chrom: str, field: str) -> int:
        length = self.lengths.get(chrom)
        if length is None:
            raise RequestError(field, f"unknown chromosome {chrom!r}", sorted(self.lengths))
        return length

    def fetch(self, chrom: str, start: int, end: int, *, field: str) -> str:
        """Sequence of `[start, end)` on `chrom`; `field` names the request element for errors."""
        length = self.check_chrom(chrom, f"{field}.chrom")
        if start < 0:
            raise RequestError(f"{field}.start", f"start {start} is before the chromosome start (0)")
        if end > length:
            raise RequestError(f"{field}.end", f"end {end} is past the end of {chrom} (length {length})")
        if end <= start:
            raise RequestError(f"{field}.end", f"end {end} must be greater than start {start}")
        with self._lock:
            return str(self._fasta[chrom][start:end])
