"""Training layer (data): reference genome access: a FASTA read through pyfaidx, returned as uint8 tokens (A,C,G,T,N =
0..4).

Why whole chromosomes as uint8: training draws thousands of random windows per second; slicing a numpy array
is free, while a pyfaidx lookup per window is not. A chromosome costs one byte per base (GRCh38: ~3 GB total).
Reference genomes carry a few IUPAC ambiguity codes (R, Y, M, …); for training they become N, unlike the serving
contract (`mfd_common.tokens.encode`) which rejects them, because here the input is a curated reference and not
a user's request.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyfaidx
from tqdm.auto import tqdm

from mfd_common.publish import staged, write_atomically
from mfd_common.tokens import N_CODE, InvalidSequenceError, encode


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

    def fetch_tokens(self, chrom: str, start: int, end: int) -> np.ndarray:
        """Tokens of chrom[start:end] read on demand through pyfaidx (nothing cached)."""
        self.check(chrom)
        return sequence_to_tokens(str(self._fasta[chrom][start:end]), f"{self.path}:{chrom}:{start + 1}-{end}")

    def close(self) -> None:
        self._fasta.close()


# ---- memory-mapped tokens: the paper-scale path -------------------------------------------------------------
# GRCh38 as uint8 tokens is 3.1 GB: fine on disk, too much to hold per DataLoader worker. So the genome is
# encoded once into one flat file that every worker memory-maps (pages are shared through the page cache).
# Chromosomes sit between runs of N (`GENOME_PAD` bases), so a window that runs off a chromosome end reads N,
# exactly as the in-memory path pads, without a per-window bounds check.

GENOME_PAD = 1 << 15
GENOME_FILE = "genome.u8"
GENOME_INDEX = "genome.json"
_FASTA_CHUNK = 1 << 23


class TokenGenome:
    """A memory-mapped uint8 token genome written by `build_token_genome`."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        index_path = self.directory / GENOME_INDEX
        if not index_path.is_file():
            raise GenomeError(f"{self.directory}: no complete token genome ({GENOME_INDEX} missing); "
                              f"build it with build_token_genome")
        index = json.loads(index_path.read_text())
        self.pad = int(index["pad"])
        self.fasta = index["fasta"]
        self.sizes: dict[str, int] = {c["name"]: int(c["size"]) for c in index["chromosomes"]}
        self.offsets: dict[str, int] = {c["name"]: int(c["offset"]) for c in index["chromosomes"]}
        self.tokens = np.memmap(self.directory / GENOME_FILE, dtype=np.uint8, mode="r")

    @property
    def chromosomes(self) -> list[str]:
        return list(self.sizes)

    def fetch(self, chrom: str, start: int, end: int) -> np.ndarray:
        """Tokens of chrom[start:end]; positions off the chromosome (up to `pad` bases) read as N."""
        if chrom not in self.sizes:
            raise GenomeError(f"chromosome {chrom!r} not found in {self.directory}")
        if start < -self.pad or end > self.sizes[chrom] + self.pad:
            raise GenomeError(f"{chrom}:{start}-{end} runs more than {self.pad} bases off the chromosome")
        base = self.offsets[chrom]
        return np.asarray(self.tokens[base + start:base + end])


def build_token_genome(fasta: str | Path, out_dir: str | Path, *, progress: bool = True) -> TokenGenome:
    """Encode a FASTA once into `out_dir/genome.u8` (+ `genome.json`); reused when already complete.

    Streams each chromosome through pyfaidx in 8-Mb slices (never a whole chromosome as a Python string) and
    writes to a temporary name renamed into place at the end, so an interrupted build leaves nothing that
    looks complete.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / GENOME_INDEX).is_file():
        return TokenGenome(out_dir)
    genome = Genome(fasta)
    total = sum(genome.sizes.values()) + GENOME_PAD * (len(genome.sizes) + 1)
    with staged(out_dir / GENOME_FILE) as partial:
        out = np.memmap(partial, dtype=np.uint8, mode="w+", shape=(total,))
        out[:] = N_CODE
        chroms, offset = [], GENOME_PAD
        bar = tqdm(total=sum(genome.sizes.values()), desc="genome → tokens", unit="bp", unit_scale=True,
                   disable=not progress, file=sys.stderr)
        for name, size in genome.sizes.items():
            for start in range(0, size, _FASTA_CHUNK):
                end = min(size, start + _FASTA_CHUNK)
                out[offset + start:offset + end] = genome.fetch_tokens(name, start, end)
                bar.update(end - start)
            chroms.append({"name": name, "size": size, "offset": offset})
            offset += size + GENOME_PAD
        bar.close()
        out.flush()
        del out
        genome.close()
    write_atomically(out_dir / GENOME_INDEX, json.dumps({"fasta": str(Path(fasta).resolve()), "pad": GENOME_PAD,
                                                         "chromosomes": chroms}, indent=1))
    return TokenGenome(out_dir)
