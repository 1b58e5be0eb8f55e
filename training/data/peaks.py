"""Training layer (data): peak files (BED3+ / ENCODE narrowPeak, plain or gzipped) → interval arrays → per-bin labels.

Errors name `file:line`, because with thousands of ENCODE files the only useful message is the one that says
which file and which row to open. Intervals are half-open 0-based (BED). Files are streamed in chunks
(`iter_peak_chunks`) so that a paper-scale build never holds a whole file, let alone the genome, as Python lists.

A bin counts as hit by a peak when they share at least `min_overlap` bp: 1 = any overlap (our original rule),
64 = the authors' `128bp_minoverlap64` data set.
"""
from __future__ import annotations

import gzip
from pathlib import Path
from typing import IO, Iterator, Mapping

import numpy as np


class PeakFileError(ValueError):
    """A malformed peak file; the message starts with `path:line:`."""


def open_text(path: Path) -> IO[str]:
    """Open plain or gzip (also bgzip) text by its magic bytes, not its name: ENCODE names are not reliable."""
    with open(path, "rb") as handle:
        magic = handle.read(2)
    return gzip.open(path, "rt") if magic == b"\x1f\x8b" else open(path, "rt")


def _assembly_hint(chrom: str, chrom_sizes: Mapping[str, int]) -> str:
    if ("chr" + chrom) in chrom_sizes:
        return f" (the genome names it 'chr{chrom}': UCSC vs Ensembl naming)"
    if chrom.startswith("chr") and chrom[3:] in chrom_sizes:
        return f" (the genome names it {chrom[3:]!r}: UCSC vs Ensembl naming)"
    return " (not in the reference FASTA; is this file from another assembly?)"


def iter_peak_chunks(path: str | Path, chrom_sizes: Mapping[str, int], chunk_lines: int = 200_000
                     ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Stream a BED/narrowPeak file as (chrom index int32, start int64, end int64) chunks.

    `chrom index` indexes `list(chrom_sizes)`. Every chromosome must exist in the genome and every interval must
    fit inside it: a peak file from another assembly is the usual cause, and training on it would silently
    produce wrong labels.
    """
    path = Path(path)
    if not path.is_file():
        raise PeakFileError(f"{path}: peak file does not exist")
    index = {name: i for i, name in enumerate(chrom_sizes)}
    sizes = list(chrom_sizes.values())
    chroms: list[int] = []
    starts: list[int] = []
    ends: list[int] = []
    try:
        with open_text(path) as handle:
            for lineno, line in enumerate(handle, start=1):
                if not line.strip() or line.startswith(("#", "track", "browser")):
                    continue
                fields = line.rstrip("\n\r").split("\t", 3)
                if len(fields) < 3:
                    fields = line.split(None, 3)
                if len(fields) < 3:
                    raise PeakFileError(f"{path}:{lineno}: expected at least 3 tab-separated columns "
                                        f"(chrom, start, end), got {len(fields)}")
                chrom = fields[0]
                try:
                    start, end = int(fields[1]), int(fields[2])
                except ValueError:
                    raise PeakFileError(f"{path}:{lineno}: start and end must be integers, "
                                        f"got {fields[1]!r} and {fields[2]!r}") from None
                ci = index.get(chrom)
                if ci is None:
                    raise PeakFileError(f"{path}:{lineno}: unknown chromosome {chrom!r}"
                                        f"{_assembly_hint(chrom, chrom_sizes)}")
                if start < 0:
                    raise PeakFileError(f"{path}:{lineno}: negative start {start}")
                if start >= end:
                    raise PeakFileError(f"{path}:{lineno}: start {start} must be less than end {end}")
                if end > sizes[ci]:
                    raise PeakFileError(f"{path}:{lineno}: end {end} is past the end of {chrom} "
                                        f"({sizes[ci]} bp; is this file from another assembly?)")
                chroms.append(ci)
                starts.append(start)
                ends.append(end)
                if len(chroms) >= chunk_lines:
                    yield (np.asarray(chroms, np.int32), np.asarray(starts, np.int64), np.asarray(ends, np.int64))
                    chroms, starts, ends = [], [], []
    except UnicodeDecodeError:
        raise PeakFileError(f"{path}: not a text BED/narrowPeak file (a bigBed must first be converted with "
                            f"bigBedToBed)") from None
    except (EOFError, gzip.BadGzipFile) as err:
        raise PeakFileError(f"{path}: truncated or corrupt gzip file ({err})") from None
    if chroms:
        yield (np.asarray(chroms, np.int32), np.asarray(starts, np.int64), np.asarray(ends, np.int64))


def read_peaks(path: str | Path, chrom_sizes: Mapping[str, int]) -> dict[str, np.ndarray]:
    """Read a whole BED/narrowPeak file; returns {chrom: int64 [n, 2] sorted (start, end)} (small data only)."""
    names = list(chrom_sizes)
    parts: dict[str, list[np.ndarray]] = {}
    for ci, start, end in iter_peak_chunks(path, chrom_sizes):
        for c in np.unique(ci):
            keep = ci == c
            parts.setdefault(names[c], []).append(np.stack([start[keep], end[keep]], axis=1))
    out: dict[str, np.ndarray] = {}
    for chrom, pieces in parts.items():
        array = np.concatenate(pieces)
        out[chrom] = array[np.argsort(array[:, 0], kind="stable")]
    return out


def hit_bin_ranges(starts: np.ndarray, ends: np.ndarray, bin_size: int, min_overlap: int = 1
                   ) -> tuple[np.ndarray, np.ndarray]:
    """First and last (inclusive) bin that each interval overlaps by at least `min_overlap` bp.

    Interior bins are fully covered; only the two end bins can fall short. Intervals that hit no bin come back
    with first > last.
    """
    if not 1 <= min_overlap <= bin_size:
        raise ValueError(f"min_overlap must be in [1, {bin_size}], got {min_overlap}")
    first = starts // bin_size
    last = (ends - 1) // bin_size
    first_overlap = np.minimum(ends, (first + 1) * bin_size) - starts
    last_overlap = ends - np.maximum(starts, last * bin_size)
    return first + (first_overlap < min_overlap), last - (last_overlap < min_overlap)


def expand_ranges(first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """All integers in each [first, last] range, concatenated (empty ranges skipped), vectorised."""
    counts = np.maximum(last - first + 1, 0)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    keep = counts > 0
    first, counts = first[keep], counts[keep]
    starts_at = np.repeat(np.cumsum(counts) - counts, counts)
    return np.repeat(first, counts) + (np.arange(total, dtype=np.int64) - starts_at)


def bin_overlaps(intervals: np.ndarray, n_bins: int, bin_size: int, min_overlap: int = 1) -> np.ndarray:
    """bool [n_bins]: does any interval overlap bin b = [b*bin_size, (b+1)*bin_size) by >= min_overlap bp?"""
    out = np.zeros(n_bins, dtype=bool)
    if intervals.size == 0:
        return out
    first, last = hit_bin_ranges(intervals[:, 0], intervals[:, 1], bin_size, min_overlap)
    bins = expand_ranges(np.clip(first, 0, n_bins), np.clip(last, -1, n_bins - 1))
    out[bins] = True
    return out
