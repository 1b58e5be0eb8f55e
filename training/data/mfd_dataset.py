"""Training layer (data): the authors' released data set (HealthML/MFD `download_data.sh`) → our label store.

Their layout (read from their `src/dataloading/dataloaders.py`, `src/features/label.py`, `metadata.py`):

    <assembly>/<name>/regions.bed[.gz]   the universe: 128-bp regions, BED3+ (tab or space separated, no
                                         header), Ensembl chromosome names (`1`, not `chr1`); row i = region i
    <assembly>/<name>/overlaps.h5        `query` int [N] (region rows, sorted ascending, a region without labels
                                         absent), `target` int [N, 1] (label index of each pair);
                                         attrs: `target.labels` = the ENCODE file accessions in output order,
                                         `target.N` = positives per label, `query.md5` = md5 of the BED's text
                                         (decompressed if gzipped)
    <name>_encode_metadata_processed.tsv one row per track; column names with '.' (their loader renames '.' → '_'),
                                         indexed by `File_accession`

What we make of it (`build_store --mfd-dataset DIR --mfd-metadata TSV`): a store whose label bits are exactly
their (region, label) pairs, whose universe is exactly their regions in their order (`labels/regions.i64`;
`training.data.splits` then splits them as their code does), whose tracks are `target.labels` in that order, and whose
`tracks.tsv` carries every column of their metadata TSV under their loader's names ('.' → '_'), with the value
normalisation their `MetadataLoader` applies (`normalise_ages`), so their mapping YAML applies unchanged.

Checks their loader leaves out (bad input stops with `file:line` or the dataset's name, never a traceback):
regions exactly `bin_size` long on the `bin_size` grid (our store's bins; a region off the grid cannot be one of
our bins), unique, inside the chromosome; `query` sorted and inside the BED; `target` inside `labels`; the md5
matching the BED (their code only warns: a mismatch means the labels belong to another BED). Chromosomes are
matched to the FASTA's names with or without `chr`, and `MT` ↔ `chrM`.
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import json
import shutil
import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from mfd_common.geometry import BIN_SIZE
from mfd_common.publish import partial_path, publish

from .dataset import TrackTable
from .labels import COVERAGE_FILE, FORMAT_VERSION, LABELS_FILE, META_FILE, REGIONS_FILE, LabelStore, _layout

ACCESSION_COLUMN = "File_accession"
CHUNK = 1 << 22


class MfdDatasetError(ValueError):
    """The released data set does not read as their loader expects; the message names the file (and line)."""


@dataclass
class MfdDataset:
    directory: Path
    bed: Path
    h5: Path
    labels: list[str]                  # file accessions, output order
    regions: np.ndarray                # int64 [R]: global bin id of each BED row (BED order)
    n_pairs: int


def resolve_chrom(name: str, sizes: Mapping[str, int]) -> str | None:
    """`1` ↔ `chr1`, `MT` ↔ `chrM` (Ensembl vs UCSC): the FASTA's name for a BED chromosome, or None."""
    if name in sizes:
        return name
    bare = name[3:] if name.startswith("chr") else name
    for candidate in (bare, "chr" + bare, *(("MT", "chrM", "M") if bare in ("M", "MT") else ())):
        if candidate in sizes:
            return candidate
    return None


def bed_md5(path: Path) -> str:
    """md5 of the BED's text, decompressed when gzipped (as their `dataloading.utils.md5` computes it)."""
    digest = hashlib.md5()
    opener = gzip.open if path.name.endswith("gz") else open
    with opener(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_regions(bed: Path, chrom_sizes: Mapping[str, int], bin_size: int) -> np.ndarray:
    """Global bin id (our store's layout over `chrom_sizes`) of every BED row, in BED order."""
    offsets, offset = {}, 0
    for name, size in chrom_sizes.items():
        offsets[name] = offset
        offset += int(size) // bin_size
    bins = []
    resolved: dict[str, str | None] = {}
    opener = gzip.open if bed.name.endswith(".gz") else open
    with opener(bed, "rt") as handle:
        for lineno, line in enumerate(handle, start=1):
            fields = line.split("\t") if "\t" in line else line.split()
            if len(fields) < 3:
                raise MfdDatasetError(f"{bed}:{lineno}: expected chrom, start, end; got {line.strip()[:60]!r}")
            chrom = fields[0]
            if chrom not in resolved:
                resolved[chrom] = resolve_chrom(chrom, chrom_sizes)
                if resolved[chrom] is None:
                    raise MfdDatasetError(f"{bed}:{lineno}: chromosome {chrom!r} is not in the FASTA (with or "
                                          f"without 'chr'); is the FASTA their assembly?")
            name = resolved[chrom]
            try:
                start, end = int(fields[1]), int(fields[2])
            except ValueError:
                raise MfdDatasetError(f"{bed}:{lineno}: start/end are not integers") from None
            if end - start != bin_size or start % bin_size:
                raise MfdDatasetError(f"{bed}:{lineno}: region {chrom}:{start}-{end} is not a {bin_size}-bp bin "
                                      f"on the {bin_size}-bp grid (the store's bins); use --bin-size to match")
            if end > (chrom_sizes[name] // bin_size) * bin_size:
                raise MfdDatasetError(f"{bed}:{lineno}: region {chrom}:{start}-{end} is past the last whole bin "
                                      f"of {name} ({chrom_sizes[name]} bp in the FASTA)")
            bins.append(offsets[name] + start // bin_size)
    regions = np.asarray(bins, dtype=np.int64)
    if len(regions) == 0:
        raise MfdDatasetError(f"{bed}: no regions")
    unique, first = np.unique(regions, return_index=True)
    if len(unique) != len(regions):
        dup = np.setdiff1d(np.arange(len(regions)), first)[0]
        raise MfdDatasetError(f"{bed}:{dup + 1}: region listed twice")
    return regions


def dataset_files(directory: str | Path) -> tuple[Path, Path, list[str], str | None, int]:
    """(regions BED, overlaps.h5, label accessions in output order, the BED's md5 attribute, number of pairs)."""
    try:
        import h5py   # optional dependency (the `data` extra): only this reader needs it
    except ImportError:
        raise MfdDatasetError("reading their overlaps.h5 needs h5py: pip install 'mfd-serve[data]'") from None

    directory = Path(directory)
    bed = next((directory / n for n in ("regions.bed", "regions.bed.gz") if (directory / n).is_file()), None)
    h5 = directory / "overlaps.h5"
    if bed is None or not h5.is_file():
        raise MfdDatasetError(f"{directory}: not one of their data set directories (needs regions.bed[.gz] and "
                              f"overlaps.h5, e.g. data/processed/GRCh38/221111_128bp_minoverlap64_mincov2_nc10_tissues)")
    try:
        handle = h5py.File(h5, "r")
    except OSError as err:
        raise MfdDatasetError(f"{h5}: not an HDF5 file ({err})") from None
    with handle:
        for name in ("query", "target"):
            if name not in handle:
                raise MfdDatasetError(f"{h5}: dataset {name!r} missing (has: {', '.join(handle)})")
        query, target = handle["query"], handle["target"]
        if query.ndim != 1 or target.ndim not in (1, 2) or (target.ndim == 2 and target.shape[1] != 1) \
                or target.shape[0] != query.shape[0]:
            raise MfdDatasetError(f"{h5}: 'query' {query.shape} and 'target' {target.shape}: expected (N,) and "
                                  f"(N, 1)")
        if query.dtype.kind not in "iu" or target.dtype.kind not in "iu":
            raise MfdDatasetError(f"{h5}: 'query'/'target' must be integers, got {query.dtype}/{target.dtype}")
        raw = target.attrs.get("labels")
        if raw is None:
            raise MfdDatasetError(f"{h5}: attribute 'labels' of 'target' (the file accessions) missing")
        labels = [x.decode() if isinstance(x, bytes) else str(x) for x in np.asarray(raw).ravel()]
        md5 = query.attrs.get("md5")
        n_pairs = int(query.shape[0])
    if not labels:
        raise MfdDatasetError(f"{h5}: target.labels is empty")
    if len(set(labels)) != len(labels):
        dup = next(k for k, n in Counter(labels).items() if n > 1)
        raise MfdDatasetError(f"{h5}: accession {dup!r} appears twice in target.labels")
    if md5 is not None:
        md5 = md5.decode() if isinstance(md5, bytes) else str(md5)
    return bed, h5, labels, md5, n_pairs


def open_dataset(directory: str | Path, chrom_sizes: Mapping[str, int], bin_size: int = BIN_SIZE) -> MfdDataset:
    """Check and read the regions and the h5's shapes and attributes (the pairs are streamed later)."""
    bed, h5, labels, md5, n_pairs = dataset_files(directory)
    if md5 is not None and md5 != bed_md5(bed):
        raise MfdDatasetError(f"{h5}: query.md5 {md5} does not match {bed} (md5 {bed_md5(bed)}): the labels "
                              f"were made for another regions file")
    regions = read_regions(bed, chrom_sizes, bin_size)
    return MfdDataset(Path(directory), bed, h5, labels, regions, n_pairs)


def build_labels(dataset: MfdDataset, out: str | Path, chrom_sizes: Mapping[str, int], *, bin_size: int,
                 min_overlap: int) -> LabelStore:
    """Their (region, label) pairs → our bit-packed label store with their regions as its universe.

    Streamed in chunks of the h5; written under `<out>.partial/` and renamed complete.
    """
    import h5py

    out = Path(out)
    if (out / META_FILE).is_file():
        store = LabelStore(out)
        if store.track_ids == dataset.labels and store.regions is not None \
                and np.array_equal(store.regions, dataset.regions):
            return store
        shutil.rmtree(out)
    partial = partial_path(out)
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    chroms, total_bins = _layout(chrom_sizes, bin_size)
    k = len(dataset.labels)
    row_bytes = (k + 7) // 8
    bits = np.memmap(partial / LABELS_FILE, dtype=np.uint8, mode="w+", shape=(total_bins, row_bytes))
    flat = bits.reshape(-1)
    hits = np.zeros(k, dtype=np.int64)
    previous = -1
    with h5py.File(dataset.h5, "r") as handle:
        query, target = handle["query"], handle["target"]
        for start in range(0, dataset.n_pairs, CHUNK):
            q = np.asarray(query[start:start + CHUNK], dtype=np.int64)
            t = np.asarray(target[start:start + CHUNK], dtype=np.int64).reshape(-1)
            if len(q) and (q[0] < previous or np.any(np.diff(q) < 0)):
                raise MfdDatasetError(f"{dataset.h5}: 'query' is not sorted ascending near row {start} (their "
                                      f"loader requires it)")
            if len(q) and (q.min() < 0 or q.max() >= len(dataset.regions)):
                raise MfdDatasetError(f"{dataset.h5}: 'query' holds row {q.max() if q.max() >= 0 else q.min()}, "
                                      f"outside {dataset.bed} ({len(dataset.regions)} regions)")
            if len(t) and (t.min() < 0 or t.max() >= k):
                raise MfdDatasetError(f"{dataset.h5}: 'target' holds label {t.max() if t.max() >= 0 else t.min()}"
                                      f", but target.labels names {k}")
            previous = int(q[-1]) if len(q) else previous
            byte = dataset.regions[q] * row_bytes + (t >> 3)
            for bit in range(8):
                sel = (t & 7) == bit
                if sel.any():
                    index = np.unique(byte[sel])
                    flat[index] |= np.uint8(1 << bit)
            hits += np.bincount(t, minlength=k)
    bits.flush()
    coverage = np.memmap(partial / COVERAGE_FILE, dtype=np.uint16, mode="w+", shape=(total_bins,))
    popcount = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint16)
    for start in range(0, total_bins, 1 << 18):
        coverage[start:start + (1 << 18)] = popcount[bits[start:start + (1 << 18)]].sum(axis=1)
    coverage.flush()
    del bits, flat, coverage
    dataset.regions.tofile(partial / REGIONS_FILE)
    meta = {"version": FORMAT_VERSION, "bin_size": bin_size, "min_overlap": min_overlap, "tracks": dataset.labels,
            "peak_files": [], "bins_hit": hits.tolist(), "chromosomes": chroms, "total_bins": total_bins,
            "row_bytes": row_bytes, "settings": f"mfd-dataset {dataset.directory.resolve()}",
            "regions": int(len(dataset.regions))}
    (partial / META_FILE).write_text(json.dumps(meta))
    publish(partial, out)
    return LabelStore(out)


def read_metadata(path: str | Path, labels: Sequence[str], h5: Path) -> tuple[TrackTable, list[str]]:
    """Their processed metadata TSV → one row per label (output order), columns renamed '.' → '_' as their
    loader does, values normalised as their loader does (`normalise_ages`); each track's `peaks` is the h5 its labels came from. Returns the table and its
    columns."""
    path = Path(path)
    if not path.is_file():
        raise MfdDatasetError(f"{path}: metadata TSV does not exist")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle, delimiter="\t")
        header = [h.strip().replace(".", "_") for h in next(reader, [])]
        if ACCESSION_COLUMN not in header:
            raise MfdDatasetError(f"{path}:1: column 'File.accession' / {ACCESSION_COLUMN!r} not found")
        rows: dict[str, dict[str, str]] = {}
        for lineno, fields in enumerate(reader, start=2):
            if not fields or all(not f.strip() for f in fields):
                continue
            if len(fields) != len(header):
                raise MfdDatasetError(f"{path}:{lineno}: {len(fields)} tab-separated fields, the header has "
                                      f"{len(header)}")
            row = dict(zip(header, (f.strip() for f in fields)))
            if row[ACCESSION_COLUMN] in rows:
                raise MfdDatasetError(f"{path}:{lineno}: accession {row[ACCESSION_COLUMN]!r} listed twice")
            rows[row[ACCESSION_COLUMN]] = row
    missing = [a for a in labels if a not in rows]
    if missing:
        raise MfdDatasetError(f"{path}: {len(missing)} of the data set's tracks have no row (first: {missing[0]})")
    normalise_ages(list(rows.values()))
    columns = [c for c in header if c != ACCESSION_COLUMN]
    return TrackTable(list(labels), [{c: rows[a][c] for c in columns} for a in labels],
                      [h5 for _ in labels]), columns


def normalise_ages(rows: list[dict[str, str]]) -> None:
    """Their `MetadataLoader`'s age clean-up, over all rows of the TSV (before subsetting, as theirs):
    `proc_age_bin` "90 or above" → "90"; a row without `proc_age_bin_units` gets, if its
    `proc_Biosample_life_stage` is known, the median `proc_age_bin` and the most common unit of the rows of the
    same organism and life stage with a known age, else -1 / "unknown"; a still missing `proc_age_bin` is -1."""
    needed = ("proc_age_bin", "proc_age_bin_units", "proc_Biosample_life_stage", "Biosample_organism")
    if not rows or any(c not in rows[0] for c in needed):
        return
    for row in rows:
        if row["proc_age_bin"] == "90 or above":
            row["proc_age_bin"] = "90"
    filled = {}
    for i, row in enumerate(rows):
        if row["proc_age_bin_units"] not in _MISSING:
            continue
        if row["proc_Biosample_life_stage"] == "unknown":
            filled[i] = ("-1", "unknown")
            continue
        peers = [r for r in rows if r["Biosample_organism"] == row["Biosample_organism"]
                 and r["proc_Biosample_life_stage"] == row["proc_Biosample_life_stage"]
                 and r["proc_age_bin"] != "unknown"]
        ages = [a for a in (_number(r["proc_age_bin"]) for r in peers) if a is not None]
        units = Counter(r["proc_age_bin_units"] for r in peers if r["proc_age_bin_units"] not in _MISSING)
        if not ages or not units:
            filled[i] = ("", "")
            continue
        top = max(units.values())
        filled[i] = (repr(float(statistics.median(ages))), sorted(u for u, n in units.items() if n == top)[0])
    for i, (age, unit) in filled.items():
        rows[i]["proc_age_bin"], rows[i]["proc_age_bin_units"] = age, unit
    for row in rows:
        if row["proc_age_bin"] in _MISSING:
            row["proc_age_bin"] = "-1"


_MISSING = ("", "NA", "nan", "NaN")


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None
