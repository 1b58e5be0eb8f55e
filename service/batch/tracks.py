"""Service layer (batch): `python -m service.batch tracks chr1:10,001-50,000 --conditions … --out DIR`: predicted
tracks as bigWig.

The model predicts, per window, the label of its central bin (the training layout: a window of `seq_len` bases
centred on a 128-bp bin; the bin size is the card's `config.data.bin_size`). So a region is tiled with the
genome's bin grid, each bin scored from the window centred on it, and every condition gets one bigWig whose
entries are the bins: `DIR/<condition>.bw` (the prediction) and, with `--with-biological` or
`--biological-only`, `DIR/<condition>.bio.bw` (technical features at their mean: the bias-free part), which open
side by side in IGV. Bins whose window would run off the chromosome are left empty (counted). Region syntax is
samtools': 1-based, inclusive, commas allowed; a bare chromosome name means all of it. Instead of a region, a BED
file of regions (0-based, half-open; `track`/`browser`/`#` lines skipped; extra columns ignored; `1` ↔ `chr1`
naming as for variants) scores the union of their bins, every chromosome in one bigWig per condition. Bins are
cut into shards of `--bins-per-shard` and resume like the variant shards (service.batch.shards).
"""
from __future__ import annotations

import argparse
import hashlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mfd_common.geometry import BIN_SIZE

from ..core.effects import EnsembleSpec, encode_windows, ensembled_scores
from ..core.engine import Engine
from ..core.genome import Genome
from .runtime import NamedCondition, resolve
from .shards import BatchError, WorkDir, atomic_output, my_shards, shard_ranges

_REGION = re.compile(r"^(?P<chrom>[^:\s]+)(:(?P<start>[\d,]+)-(?P<end>[\d,]+))?$")
DEFAULT_BIN_SIZE = BIN_SIZE  # the reference data set's bins; used when the card does not say


@dataclass(frozen=True)
class Region:
    chrom: str   # the FASTA's name
    start: int   # 0-based, inclusive
    end: int     # exclusive


def parse_region(text: str, genome: Genome) -> Region:
    match = _REGION.match(text.strip())
    if not match:
        raise BatchError(f"region {text!r}: expected chrom:start-end (1-based, inclusive) or a chromosome name")
    name = genome.resolve(match["chrom"])
    if name is None:
        raise BatchError(f"region {text!r}: unknown chromosome {match['chrom']!r} "
                         f"(the FASTA has {', '.join(list(genome.lengths)[:20])})")
    length = genome.lengths[name]
    if match["start"] is None:
        return Region(name, 0, length)
    start, end = int(match["start"].replace(",", "")), int(match["end"].replace(",", ""))
    if start < 1 or end < start or end > length:
        raise BatchError(f"region {text!r}: need 1 <= start <= end <= {length} (length of {name})")
    return Region(name, start - 1, end)


def read_bed(path: Path, genome: Genome) -> list[Region]:
    """Regions of a BED file (0-based, half-open); a bad line ends the job naming `file:line`."""
    regions: list[Region] = []
    try:
        handle = open(path, encoding="utf-8", errors="replace")
    except OSError as exc:
        raise BatchError(f"{path}: cannot read ({exc.strerror})") from None
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip() or line.startswith(("#", "track", "browser")):
                continue
            fields = line.rstrip("\r\n").split("\t")
            if len(fields) < 3:
                fields = line.split()
            if len(fields) < 3 or not fields[1].isdigit() or not fields[2].isdigit():
                raise BatchError(f"{path}:{number}: a BED line needs chrom, start and end (non-negative integers, "
                                 "tab-separated)")
            name = genome.resolve(fields[0])
            if name is None:
                raise BatchError(f"{path}:{number}: unknown chromosome {fields[0]!r} "
                                 f"(the FASTA has {', '.join(list(genome.lengths)[:20])})")
            start, end = int(fields[1]), int(fields[2])
            if end <= start or end > genome.lengths[name]:
                raise BatchError(f"{path}:{number}: need start < end <= {genome.lengths[name]} (length of {name})")
            regions.append(Region(name, start, end))
    if not regions:
        raise BatchError(f"{path}: no regions")
    return regions


def parse_regions(text: str, genome: Genome) -> list[Region]:
    """One region (`chrom:start-end` or a chromosome name) or, if `text` names a file, the regions of that BED."""
    path = Path(text)
    if path.is_file():
        return read_bed(path, genome)
    return [parse_region(text, genome)]


@dataclass(frozen=True)
class Grid:
    """The genome bins to score: `chrom[i]` (index into `names`) and `bins[i]`, sorted in FASTA order, unique."""
    names: list[str]
    chrom: np.ndarray
    bins: np.ndarray

    def digest(self) -> str:
        sha = hashlib.sha256(",".join(self.names).encode())
        sha.update(self.chrom.tobytes())
        sha.update(self.bins.tobytes())
        return sha.hexdigest()


def grid_of(regions: list[Region], genome: Genome, bin_size: int) -> Grid:
    names = list(genome.lengths)
    order = {name: i for i, name in enumerate(names)}
    per_region = [region_bins(r, bin_size) for r in regions]
    chrom = np.concatenate([np.full(len(b), order[r.chrom], np.int64) for r, b in zip(regions, per_region)])
    bins = np.concatenate(per_region)
    keys = np.unique(np.stack([chrom, bins], axis=1), axis=0)  # lexicographic: FASTA order, then position
    return Grid(names, keys[:, 0].copy(), keys[:, 1].copy())


def bin_size_of(engine: Engine) -> int:
    return int(engine.card.config.get("data", {}).get("bin_size", DEFAULT_BIN_SIZE))


def region_bins(region: Region, bin_size: int) -> np.ndarray:
    """Indices of the grid bins overlapping the region."""
    return np.arange(region.start // bin_size, -(-region.end // bin_size), dtype=np.int64)


def window_starts(bins: np.ndarray, bin_size: int, seq_len: int, spec: EnsembleSpec) -> np.ndarray:
    """0-based start of the window read for each bin: the bin centred (as in training), widened for the shifts
    so that the middle crop is the plain window."""
    return bins * bin_size - (seq_len - bin_size) // 2 - (spec.shifts - 1) // 2


def outputs(args: argparse.Namespace) -> list[bool]:
    """The biological_only settings to write: [False], [True] or [False, True]."""
    if args.biological_only:
        return [True]
    return [False, True] if args.with_biological else [False]


async def score_bins(engine: Engine, grid: Grid, chrom: np.ndarray, bins: np.ndarray, resolved: list,
                     spec: EnsembleSpec, bin_size: int, value: str, bio_settings: list[bool]) -> dict[str, np.ndarray]:
    """values [n_scored, len(bio_settings), K] for the bins whose window lies on the chromosome."""
    assert engine.genome is not None
    length = spec.read_length(engine.card.seq_len)
    starts = window_starts(bins, bin_size, engine.card.seq_len, spec)
    chrom_length = np.array([engine.genome.lengths[grid.names[c]] for c in chrom], dtype=np.int64)
    ok = (starts >= 0) & (starts + length <= chrom_length)
    scored = bins[ok]
    values = np.zeros((len(scored), len(bio_settings), len(resolved)), dtype=np.float32)
    if len(scored):
        tokens = encode_windows([engine.genome.fetch(grid.names[c], int(s), int(s) + length, field="region")
                                 for c, s in zip(chrom[ok], starts[ok])])
        weights = await engine.conditions.weights(resolved)
        features = await engine.crop_features(tokens, spec)   # one trunk pass serves both read-outs
        for j, biological_only in enumerate(bio_settings):
            scores = ensembled_scores(features, engine.card.d_tech, weights, spec, biological_only=biological_only)
            values[:, j, :] = getattr(scores, value)
    return {"chrom": chrom[ok], "bins": scored, "values": values, "skipped": np.array(int((~ok).sum()))}


async def compute_shards(engine: Engine, args: argparse.Namespace, work: WorkDir, grid: Grid,
                         conditions: list[NamedCondition], spec: EnsembleSpec) -> int:
    from tqdm import tqdm

    bin_size = bin_size_of(engine)
    ranges = shard_ranges(len(grid.bins), args.bins_per_shard)
    todo = [i for i in my_shards(len(ranges), args.shard_index, args.shard_count) if not work.done(i)]
    resolved = resolve(engine, conditions)
    with tqdm(total=sum(ranges[i][1] - ranges[i][0] for i in todo), unit="bin", disable=args.no_progress,
              desc=f"tracks shard-set {args.shard_index}/{args.shard_count}", file=sys.stderr) as progress:
        for i in todo:
            start, end = ranges[i]
            work.save(i, await score_bins(engine, grid, grid.chrom[start:end], grid.bins[start:end], resolved, spec,
                                          bin_size, args.value, outputs(args)))
            progress.update(end - start)
    return len(todo)


def shard_count(grid: Grid, bins_per_shard: int) -> int:
    return len(shard_ranges(len(grid.bins), bins_per_shard))


def write_bigwigs(args: argparse.Namespace, work: WorkDir, count: int, grid: Grid, genome: Genome,
                  conditions: list[NamedCondition], bin_size: int) -> tuple[list[Path], int]:
    """One bigWig per condition and read-out; returns the files and the number of bins left empty."""
    import pyBigWig

    parts = [work.load(i) for i in range(count)]
    bins = np.concatenate([p["bins"] for p in parts]) if parts else np.zeros(0, np.int64)
    chrom = np.concatenate([p["chrom"] for p in parts]) if parts else np.zeros(0, np.int64)
    names = [grid.names[c] for c in chrom]
    values = (np.concatenate([p["values"] for p in parts]) if parts
              else np.zeros((0, len(outputs(args)), len(conditions)), np.float32))
    skipped = int(sum(int(p["skipped"]) for p in parts))
    chrom_length = np.array([genome.lengths[n] for n in names], dtype=np.int64)
    starts = bins * bin_size
    ends = np.minimum(starts + bin_size, chrom_length)
    written: list[Path] = []
    args.out.mkdir(parents=True, exist_ok=True)
    for j, biological_only in enumerate(outputs(args)):
        for k, named in enumerate(conditions):
            path = args.out / f"{named.name}{'.bio' if biological_only else ''}.bw"
            with atomic_output(path) as tmp:
                bw = pyBigWig.open(str(tmp), "w")
                try:
                    bw.addHeader(list(genome.lengths.items()), maxZooms=10)
                    if len(bins):
                        bw.addEntries(names, starts.tolist(), ends=ends.tolist(),
                                      values=values[:, j, k].astype(np.float64).tolist())
                finally:
                    bw.close()
            written.append(path)
    return written, skipped
