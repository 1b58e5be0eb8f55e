"""Training layer (data): paper-scale label store: one bit per (128-bp bin, track), memory-mapped from disk.

Why bits on disk: GRCh38 has ~24 M bins; 2,106 tracks as a dense uint8 matrix is 50 GB, as bits 6.3 GB
(264 bytes a bin). Row-major (bin-major) because training reads all tracks of a few random bins at a time: one
contiguous 264-byte row per window. The file is memory-mapped, so DataLoader workers share the page cache
instead of each holding a copy, and RAM stays bounded by what the OS decides to cache.

Layout of a store directory (`build_label_store` writes it, `LabelStore` reads it):

    meta.json      tracks, bin size, min overlap, chromosomes with their bin offsets, format version
    labels.bits    uint8 [total_bins, ceil(K / 8)]: bit k % 8 (little-endian bit order) of byte k // 8 = track k
    coverage.u16   uint16 [total_bins]: how many tracks label the bin (bins of interest = coverage >= N)
    regions.i64    optional, int64 [n]: a fixed universe (the authors' released data set's regions, in their BED's
                   order; `training.data.mfd_dataset`): when present, these bins are the universe

Building streams each peak file in chunks and ORs its bits into the memory-mapped file, one track at a time.
Setting bits is idempotent, so the build is resumable: `progress.json` records the tracks done, and a restart
with the same inputs continues from there. Everything is written under `<store>.partial/` and renamed into
place only when complete, so a half-built store can never be opened as a finished one.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from mfd_common.geometry import BIN_SIZE
from mfd_common.publish import partial_path, publish, write_atomically

from .peaks import expand_ranges, hit_bin_ranges, iter_peak_chunks

FORMAT_VERSION = 1
META_FILE = "meta.json"
LABELS_FILE = "labels.bits"
COVERAGE_FILE = "coverage.u16"
PROGRESS_FILE = "progress.json"
REGIONS_FILE = "regions.i64"   # optional: int64 global bin ids of a fixed universe, in its source's order
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint16)
_COVERAGE_CHUNK = 1 << 18


class LabelStoreError(ValueError):
    """A store that is missing, incomplete or does not match the inputs it is used with."""


@dataclass(frozen=True)
class TrackSource:
    id: str
    path: Path


def _settings_key(chrom_sizes: Mapping[str, int], bin_size: int, min_overlap: int, n_tracks: int) -> str:
    """What every bit depends on; a resumed build must match it."""
    return hashlib.sha256(json.dumps({"version": FORMAT_VERSION, "bin_size": bin_size, "min_overlap": min_overlap,
                                      "n_tracks": n_tracks, "chroms": list(chrom_sizes.items())}).encode()).hexdigest()


def _file_key(track: TrackSource) -> list:
    """A done track is reused on resume only if its file is unchanged (same path, size and mtime)."""
    stat = track.path.stat()
    return [track.id, str(track.path), stat.st_size, stat.st_mtime_ns]


class LabelStore:
    """Read side: labels of any bins as bits, uint8 or float32, without loading the file."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        meta_path = self.directory / META_FILE
        if not meta_path.is_file():
            partial = partial_path(self.directory)
            hint = f" (an unfinished build is in {partial}: run the build again to resume it)" if partial.exists() else ""
            raise LabelStoreError(f"{self.directory}: not a finished label store ({META_FILE} missing){hint}")
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("version") != FORMAT_VERSION:
            raise LabelStoreError(f"{self.directory}: store format {self.meta.get('version')}, this code reads "
                                  f"{FORMAT_VERSION}; rebuild it")
        self.track_ids: list[str] = list(self.meta["tracks"])
        self.bin_size: int = int(self.meta["bin_size"])
        self.min_overlap: int = int(self.meta["min_overlap"])
        self.chromosomes: list[str] = [c["name"] for c in self.meta["chromosomes"]]
        self.chrom_sizes: dict[str, int] = {c["name"]: int(c["size"]) for c in self.meta["chromosomes"]}
        self.bin_offsets = np.array([c["bin_offset"] for c in self.meta["chromosomes"]], dtype=np.int64)
        self.n_bins = int(self.meta["total_bins"])
        self.row_bytes = int(self.meta["row_bytes"])
        self.bits = np.memmap(self.directory / LABELS_FILE, dtype=np.uint8, mode="r",
                              shape=(self.n_bins, self.row_bytes))
        self.coverage = np.memmap(self.directory / COVERAGE_FILE, dtype=np.uint16, mode="r", shape=(self.n_bins,))
        regions = self.directory / REGIONS_FILE
        self.regions: np.ndarray | None = np.fromfile(regions, dtype=np.int64) if regions.is_file() else None

    @property
    def n_tracks(self) -> int:
        return len(self.track_ids)

    def chrom_bins(self, chrom: str) -> tuple[int, int]:
        """[first, end) global bin ids of a chromosome."""
        i = self.chromosomes.index(chrom)
        return int(self.bin_offsets[i]), int(self.bin_offsets[i] + self.chrom_sizes[chrom] // self.bin_size)

    def locate(self, bins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Global bin ids → (chromosome index, bin index within the chromosome)."""
        ci = np.searchsorted(self.bin_offsets, bins, side="right") - 1
        return ci, bins - self.bin_offsets[ci]

    def labels(self, bins: np.ndarray, dtype: type = np.uint8, tracks: np.ndarray | None = None) -> np.ndarray:
        """[len(bins), K] labels (0/1) of the given global bins; `tracks` reorders/selects columns."""
        packed = self.bits[np.asarray(bins, dtype=np.int64)]
        dense = np.unpackbits(packed, axis=1, count=self.n_tracks, bitorder="little")
        if tracks is not None:
            dense = dense[:, tracks]
        return dense if dtype is np.uint8 else dense.astype(dtype)

    def bins_of_interest(self, min_coverage: int, chroms: Sequence[str] | None = None) -> np.ndarray:
        """Sorted global bin ids covered by at least `min_coverage` tracks (0 = every bin)."""
        pieces = []
        for chrom in (chroms if chroms is not None else self.chromosomes):
            first, end = self.chrom_bins(chrom)
            if min_coverage <= 0:
                pieces.append(np.arange(first, end, dtype=np.int64))
            else:
                pieces.append(first + np.flatnonzero(self.coverage[first:end] >= min_coverage))
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)


def _layout(chrom_sizes: Mapping[str, int], bin_size: int) -> tuple[list[dict], int]:
    chroms, offset = [], 0
    for name, size in chrom_sizes.items():
        chroms.append({"name": name, "size": int(size), "bin_offset": offset})
        offset += int(size) // bin_size
    return chroms, offset


def _set_track(bits: np.ndarray, track: int, source: TrackSource, chrom_sizes: Mapping[str, int],
               bin_offsets: np.ndarray, n_bins_chrom: np.ndarray, bin_size: int, min_overlap: int) -> int:
    """OR one track's bit into every bin its peaks hit; returns the number of bins hit."""
    column = bits[:, track >> 3]   # a strided view: only the rows we touch are read and written
    mask = np.uint8(1 << (track & 7))
    hit = []
    for ci, start, end in iter_peak_chunks(source.path, chrom_sizes):
        first, last = hit_bin_ranges(start, end, bin_size, min_overlap)
        # a bin cut by the chromosome end (size % bin_size) is not in the store: clip to whole bins
        last = np.minimum(last, n_bins_chrom[ci] - 1)
        hit.append(expand_ranges(first + bin_offsets[ci], last + bin_offsets[ci]))
    if not hit:
        return 0
    rows = np.unique(np.concatenate(hit))
    column[rows] |= mask
    return len(rows)


def build_label_store(out: str | Path, tracks: Sequence[TrackSource], chrom_sizes: Mapping[str, int], *,
                      bin_size: int = BIN_SIZE, min_overlap: int = 1, progress: bool = True,
                      overwrite: bool = False) -> LabelStore:
    """Build (or resume building) a label store at `out` from one peak file per track.

    Peak-file errors (malformed rows, another assembly) stop the build with `file:line`; fix the file and run
    again: the tracks already done are kept.
    """
    out = Path(out)
    ids = [t.id for t in tracks]
    if not tracks:
        raise LabelStoreError("no tracks to build a label store from")
    seen: dict[str, int] = {}
    for i, tid in enumerate(ids):
        if tid in seen:
            raise LabelStoreError(f"duplicate track id {tid!r} (tracks {seen[tid]} and {i})")
        seen[tid] = i
    if not 1 <= min_overlap <= bin_size:
        raise LabelStoreError(f"min_overlap must be in [1, {bin_size}], got {min_overlap}")
    if (out / META_FILE).is_file():
        if not overwrite:
            store = LabelStore(out)
            if store.track_ids == ids and store.bin_size == bin_size and store.min_overlap == min_overlap:
                return store
            raise LabelStoreError(f"{out} already holds a label store for other tracks or settings; "
                                  f"pass overwrite=True (--force) to replace it")
    partial = partial_path(out)
    settings = _settings_key(chrom_sizes, bin_size, min_overlap, len(tracks))
    done, done_keys, hits = 0, [], [0] * len(tracks)
    state_path = partial / PROGRESS_FILE
    if state_path.is_file():
        state = json.loads(state_path.read_text())
        if state.get("settings") == settings:
            for k, key in enumerate(state.get("done", [])):   # the longest prefix of unchanged tracks
                if k >= len(tracks) or not tracks[k].path.is_file() or key != _file_key(tracks[k]):
                    break
                done_keys.append(key)
                hits[k] = state["hits"][k]
            done = len(done_keys)
        if done < len(state.get("done", [])):   # a changed track's bits cannot be taken back out: start over
            done, done_keys, hits = 0, [], [0] * len(tracks)
    if done == 0 and partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)

    chroms, total_bins = _layout(chrom_sizes, bin_size)
    row_bytes = (len(tracks) + 7) // 8
    mode = "r+" if done else "w+"
    bits = np.memmap(partial / LABELS_FILE, dtype=np.uint8, mode=mode, shape=(total_bins, row_bytes))
    bin_offsets = np.array([c["bin_offset"] for c in chroms], dtype=np.int64)
    n_bins_chrom = np.array([c["size"] // bin_size for c in chroms], dtype=np.int64)
    bar = tqdm(total=len(tracks), initial=done, desc="peaks → label bits", unit="track",
               disable=not progress, file=sys.stderr)
    for k in range(done, len(tracks)):
        hits[k] = _set_track(bits, k, tracks[k], chrom_sizes, bin_offsets, n_bins_chrom, bin_size, min_overlap)
        bits.flush()
        done_keys.append(_file_key(tracks[k]))
        _write_json(state_path, {"settings": settings, "done": done_keys, "hits": hits[:k + 1]})
        bar.update(1)
    bar.close()

    coverage = np.memmap(partial / COVERAGE_FILE, dtype=np.uint16, mode="w+", shape=(total_bins,))
    for start in range(0, total_bins, _COVERAGE_CHUNK):
        coverage[start:start + _COVERAGE_CHUNK] = _POPCOUNT[bits[start:start + _COVERAGE_CHUNK]].sum(axis=1)
    coverage.flush()
    del bits, coverage
    _write_json(partial / META_FILE, {
        "version": FORMAT_VERSION, "bin_size": bin_size, "min_overlap": min_overlap, "tracks": ids,
        "peak_files": [str(t.path) for t in tracks], "bins_hit": hits, "chromosomes": chroms,
        "total_bins": total_bins, "row_bytes": row_bytes, "settings": settings,
    })
    (partial / PROGRESS_FILE).unlink()
    publish(partial, out)
    return LabelStore(out)


def _write_json(path: Path, data: dict) -> None:
    """Written atomically: a crash leaves either the old or the new file, never half of one."""
    write_atomically(path, json.dumps(data))
