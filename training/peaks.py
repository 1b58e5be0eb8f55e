"""Peak files (BED3+ / ENCODE narrowPeak) → per-chromosome interval arrays → per-bin labels.

Errors name `file:line`, because with hundreds of ENCODE files the only useful message is the one that says
which file and which row to open. Intervals are half-open 0-based (BED); label logic is vectorised numpy.
"""
from __future__ import annotations

import gzip
from pathlib import Path
from typing import Mapping

import numpy as np


class PeakFileError(ValueError):
    """A malformed peak file; the message starts with `path:line:`."""


def _open_text(path: Path):
    with open(path, "rb") as handle:
        magic = handle.read(2)
    return gzip.open(path, "rt") if magic == b"\x1f\x8b" else open(path, "rt")


def read_peaks(path: str | Path, chrom_sizes: Mapping[str, int]) -> dict[str, np.ndarray]:
    """Read a BED/narrowPeak file; returns {chrom: int64 [n, 2] sorted (start, end)}.

    Every chromosome must exist in the genome (`chrom_sizes`) and every interval must fit inside it: a peak
    file from another assembly is the usual cause, and training on it would silently produce wrong labels.
    """
    path = Path(path)
    if not path.is_file():
        raise PeakFileError(f"{path}: peak file does not exist")
    by_chrom: dict[str, list[tuple[int, int]]] = {}
    try:
        with _open_text(path) as handle:
            for lineno, line in enumerate(handle, start=1):
                if not line.strip() or line.startswith(("#", "track", "browser")):
                    continue
                fields = line.rstrip("\n\r").split("\t")
                if len(fields) < 3:
                    fields = line.split()
                if len(fields) < 3:
                    raise PeakFileError(f"{path}:{lineno}: expected at least 3 tab-separated columns "
                                        f"(chrom, start, end), got {len(fields)}")
                chrom = fields[0]
                try:
                    start, end = int(fields[1]), int(fields[2])
                except ValueError:
                    raise PeakFileError(f"{path}:{lineno}: start and end must be integers, "
                                        f"got {fields[1]!r} and {fields[2]!r}") from None
                if start < 0:
                    raise PeakFileError(f"{path}:{lineno}: negative start {start}")
                if start >= end:
                    raise PeakFileError(f"{path}:{lineno}: start {start} must be less than end {end}")
                if chrom not in chrom_sizes:
                    raise PeakFileError(f"{path}:{lineno}: unknown chromosome {chrom!r} (not in the reference "
                                        f"FASTA; is this file from another assembly?)")
                if end > chrom_sizes[chrom]:
                    raise PeakFileError(f"{path}:{lineno}: end {end} is past the end of {chrom} "
                                        f"({chrom_sizes[chrom]} bp)")
                by_chrom.setdefault(chrom, []).append((start, end))
    except UnicodeDecodeError:
        raise PeakFileError(f"{path}: not a text BED/narrowPeak file") from None
    out: dict[str, np.ndarray] = {}
    for chrom, intervals in by_chrom.items():
        array = np.asarray(intervals, dtype=np.int64)
        out[chrom] = array[np.argsort(array[:, 0], kind="stable")]
    return out


def bin_overlaps(intervals: np.ndarray, n_bins: int, bin_size: int) -> np.ndarray:
    """bool [n_bins]: does any interval overlap bin b = [b*bin_size, (b+1)*bin_size)?

    A difference array over first/last overlapped bins, then a cumulative sum: O(n_peaks + n_bins).
    """
    if intervals.size == 0:
        return np.zeros(n_bins, dtype=bool)
    first = intervals[:, 0] // bin_size
    last = (intervals[:, 1] - 1) // bin_size
    first = np.clip(first, 0, n_bins)
    last = np.clip(last, -1, n_bins - 1)
    keep = first <= last
    diff = np.zeros(n_bins + 1, dtype=np.int32)
    np.add.at(diff, first[keep], 1)
    np.add.at(diff, last[keep] + 1, -1)
    return np.cumsum(diff[:-1]) > 0
