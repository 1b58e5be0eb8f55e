"""Service layer (core): genomic intervals → sequences through a pyfaidx-indexed reference FASTA.

Coordinates are BED-style: 0-based, half-open `[start, end)`. Anything that would read past a chromosome
(or names one the FASTA lacks) is a client error naming the field, never a silently shortened or padded window.
Chromosome names are matched across the two naming schemes (UCSC `chr1`/`chrM`, Ensembl/NCBI `1`/`MT`), because
VCFs and FASTAs of the same build routinely disagree on it; a name the FASTA has exactly always wins.

Reference FASTAs as published (issue 17): soft-masked lower case (UCSC) is upper-cased and IUPAC ambiguity codes
(R, Y, K, …) become N, as the reference pipeline reads them; a plain FASTA is read by pyfaidx (its `.fai` built
when missing or stale); a BGZF FASTA (`bgzip genome.fa`) is read by htslib through pysam with its `.fai` + `.gzi`
(built when missing). A plain-gzip FASTA cannot be read at random: the error says to recompress it with bgzip.
"""
from __future__ import annotations

import threading
from pathlib import Path

from ..errors import RequestError

#: Anything but A, C, G, T becomes N (IUPAC ambiguity codes, U, gaps), after upper-casing.
_TO_N = str.maketrans({c: "N" for c in "RYKMSWBDHVUX-.*"})


class GenomeError(ValueError):
    """The reference FASTA cannot be opened; the message says why and what to do."""


#: Bytes that tell the formats apart: gzip's magic and BGZF's extra field (and BCF's magic once inflated).
HEAD_BYTES = 18


def read_head(path: Path) -> bytes:
    """The first HEAD_BYTES bytes of a file (OSError when it cannot be read), for `compression_of` and sniffers."""
    with open(path, "rb") as handle:
        return handle.read(HEAD_BYTES)


def compression_of(head: bytes) -> str:
    """`bgzf`, `gzip` or `plain` from a file's first 18 bytes: gzip magic, then BGZF's `BC` extra field (SAM spec
    4.1), which is what lets htslib seek in the file."""
    if head[:2] != b"\x1f\x8b":
        return "plain"
    return "bgzf" if len(head) >= 14 and head[3] & 4 and head[12:14] == b"BC" else "gzip"


class Genome:
    def __init__(self, fasta: str | Path):
        self.path = Path(fasta)
        try:
            kind = compression_of(read_head(self.path))
        except OSError as exc:
            raise GenomeError(f"{self.path}: cannot read the reference FASTA ({exc.strerror})") from None
        if kind == "gzip":
            raise GenomeError(f"{self.path}: plain gzip cannot be read at random positions; recompress it with "
                              f"`zcat {self.path} | bgzip > genome.fa.gz` (or decompress it)")
        try:
            if kind == "bgzf":
                import pysam

                # htslib reads the .fai and .gzi beside the file and builds them when missing.
                self._faidx = pysam.FastaFile(str(self.path))
                self.lengths = dict(zip(self._faidx.references, self._faidx.lengths))
                self._fasta = None
            else:
                import pyfaidx

                # pyfaidx builds the .fai index on first open (and rebuilds a stale one: a .fai older than its
                # FASTA would silently return wrong bases); sequences are read lazily from disk.
                self._fasta = pyfaidx.Fasta(str(self.path), as_raw=True, sequence_always_upper=True,
                                            rebuild=True, build_index=True)
                self.lengths = {name: len(record) for name, record in self._fasta.records.items()}
        except (OSError, ValueError, RuntimeError) as exc:
            where = "beside it" if kind == "plain" else "(.fai and .gzi) beside it"
            raise GenomeError(f"{self.path}: cannot open or index the reference FASTA ({exc}); build the index "
                              f"{where} with `samtools faidx {self.path}` in a writable directory") from None
        self._lock = threading.Lock()  # pyfaidx / htslib share one file handle

    def close(self) -> None:
        (self._fasta if self._fasta is not None else self._faidx).close()

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
            if self._fasta is not None:
                sequence = str(self._fasta[name][start:end])
            else:
                sequence = self._faidx.fetch(name, start, end).upper()
        return sequence.translate(_TO_N)
