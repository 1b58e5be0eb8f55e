"""Training layer (data): build a paper-scale data store: token genome + bit-packed labels + the track table.

The command is `python -m training.build_store` (`training/build_store.py`, with examples); its inputs:

`--encode-metadata` is the ENCODE portal's files report as downloaded (`training/data/encode_report.py`: released bed
narrowPeak / broadPeak files of one assembly, one per experiment, peak files `ENCFF….bed.gz` next to it or in
`--peaks-dir`; what was kept and skipped is printed). `--tracks` is our own track TSV (`training/data/dataset.py`: an
id column, a peak-file column, any metadata columns). `--mfd-dataset` is the authors' released data set
(`training/data/mfd_dataset.py`: their regions, labels, tracks and metadata columns, exactly).

The store directory it writes (what `data.store.dir` of a training config names) is laid out in
`training.data.store`; the ENCODE track table's variable columns are the `ENCODE_VARIABLES` names (e.g. `target`
"CTCF" from "CTCF-human"), --tracks keeps the input's columns as they are.

Staged: everything is built in `<out>.partial/` and published as `out` complete (`mfd_common.publish`), so `out`
is either a finished store or absent. Restartable: each step keeps what is complete (the genome once encoded, the
label tracks already set — see `training.data.labels`), so rerunning the same command after an interruption or a
fixed input file finishes the build.
"""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any, Callable, Sequence

from mfd_common.geometry import BIN_SIZE
from mfd_common.publish import partial_path, publish, staged, write_atomically

from .dataset import TrackTable, TrackTableError, read_track_table
from .genome import GENOME_INDEX, GenomeError, TokenGenome, build_token_genome
from .labels import LabelStore, TrackSource, build_label_store
from .store import (GENOME_DIR, ID_COLUMN, LABELS_DIR, PEAKS_COLUMN, STORE_FILE, STORE_FORMAT, TRACKS_FILE, Store,
                    StoreError, open_store)


def read_tsv_header(path: Path) -> list[str]:
    """Column names of a TSV (lines starting with `##` skipped, as read_track_table does)."""
    if not path.is_file():
        raise TrackTableError(f"track TSV {path} does not exist")
    with open(path, newline="") as handle:
        reader = csv.reader((line for line in handle if not line.startswith("##")), delimiter="\t")
        return [c for c in next(reader, []) if c]


def read_own_tracks(path: Path, id_column: str, peaks_template: str) -> TrackTable:
    """Our TSV: every column except the id and the ones the peak-file template names is a metadata column."""
    header = read_tsv_header(path)
    _check_rows(path, header)
    used = {id_column} | {c for c in header if "{" + c + "}" in peaks_template}
    return read_track_table(path, id_column, peaks_template, [c for c in header if c not in used])


def _check_rows(path: Path, header: list[str]) -> None:
    """Every data row has the header's number of fields (DictReader would silently pad or spill over)."""
    with open(path, newline="") as handle:
        lines = [line for line in handle]
    for lineno, line in enumerate(lines, start=1):
        if line.startswith("##") or not line.strip():
            continue
        fields = next(csv.reader([line], delimiter="\t"))
        if len(fields) != len(header):
            raise TrackTableError(f"{path}:{lineno}: {len(fields)} tab-separated fields, the header has "
                                  f"{len(header)} ({', '.join(header)})")


def write_track_table(path: Path, table: TrackTable, variables: Sequence[str]) -> None:
    """`id`, `peaks` (absolute path), then the variables; written atomically (`mfd_common.publish`)."""
    with staged(path) as work, open(work, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow([ID_COLUMN, PEAKS_COLUMN, *variables])
        for tid, peaks, row in zip(table.ids, table.peak_paths, table.metadata):
            writer.writerow([tid, str(Path(peaks).resolve()), *(row.get(v, "") for v in variables)])


def _token_genome(fasta: Path, out: Path, *, force: bool, progress: bool) -> TokenGenome:
    if (out / GENOME_INDEX).is_file():
        existing = TokenGenome(out)
        if existing.fasta != str(fasta.resolve()):
            if not force:
                raise StoreError(f"{out} holds the genome of {existing.fasta}, not {fasta}; pass --force to "
                                 f"rebuild the store from {fasta}")
            shutil.rmtree(out)
    return build_token_genome(fasta, out, progress=progress)


def build_store(out: str | Path, fasta: str | Path, table: TrackTable, variables: Sequence[str], *,
                source: dict[str, Any], bin_size: int = BIN_SIZE, min_overlap: int = 64, force: bool = False,
                progress: bool = True, labels: Callable[[Path, TokenGenome], LabelStore] | None = None) -> Store:
    """Genome → labels → track table → store.json, staged in `<out>.partial/` and renamed to `out` when complete.

    Every step reuses what an earlier, interrupted run finished in the staging directory. `labels` builds the
    label store another way (the authors' released data set) instead of from the tracks' peak files.
    """
    out, fasta = Path(out), Path(fasta)
    if not fasta.is_file():
        raise GenomeError(f"FASTA {fasta} does not exist")
    if (out / STORE_FILE).is_file() and not force:
        done = open_store(out)
        if done.info.get("tracks") == table.ids and done.info.get("min_overlap") == min_overlap \
                and done.info.get("fasta") == str(fasta.resolve()) and done.info.get("bin_size") == bin_size:
            return done
        raise StoreError(f"{out} already holds a store built from other inputs or settings; pass --force to "
                         f"replace it, or choose another --out")
    if out.exists() and not (out / STORE_FILE).is_file() and any(out.iterdir()):
        raise StoreError(f"{out} exists and is not a finished store; remove it or choose another --out")
    work = partial_path(out)   # the store is built here and renamed into place complete
    work.mkdir(parents=True, exist_ok=True)
    genome = _token_genome(fasta, work / GENOME_DIR, force=force, progress=progress)
    if labels is not None:
        store = labels(work / LABELS_DIR, genome)
    else:
        store = build_label_store(work / LABELS_DIR,
                                  [TrackSource(t, Path(p)) for t, p in zip(table.ids, table.peak_paths)],
                                  genome.sizes, bin_size=bin_size, min_overlap=min_overlap, progress=progress,
                                  overwrite=force)
    write_track_table(work / TRACKS_FILE, table, variables)
    info = {
        "format": STORE_FORMAT, **source, "fasta": str(fasta.resolve()), "bin_size": bin_size,
        "min_overlap": min_overlap, "n_tracks": store.n_tracks, "n_bins": store.n_bins,
        "chromosomes": len(store.chromosomes), "tracks": store.track_ids, "variables": list(variables),
    }
    write_atomically(work / STORE_FILE, json.dumps(info, indent=1) + "\n")
    publish(work, out)
    return Store(out, info)
