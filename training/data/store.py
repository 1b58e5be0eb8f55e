"""Training layer (data): build a paper-scale data store: token genome + bit-packed labels + the track table.

    python -m training.build_store --fasta GRCh38.fa --encode-metadata metadata.tsv [--assembly GRCh38] \\
        [--encode-experiments experiments.tsv] [--status released] [--all-outputs] [--peaks-dir DIR] \\
        --out STORE_DIR [--min-overlap 64]
    python -m training.build_store --fasta genome.fa --tracks tracks.tsv --out STORE_DIR [--min-overlap 64]
    python -m training.build_store --fasta Homo_sapiens.GRCh38.dna.primary_assembly.fa \\
        --mfd-dataset data/processed/GRCh38/221111_128bp_minoverlap64_mincov2_nc10_tissues \\
        --mfd-metadata data/processed/221111_encode_metadata_processed.tsv --out STORE_DIR

`--encode-metadata` is the ENCODE portal's files report as downloaded (`training/encode.py`: released bed
narrowPeak / broadPeak files of one assembly, one per experiment, peak files `ENCFF….bed.gz` next to it or in
`--peaks-dir`; what was kept and skipped is printed). `--tracks` is our own track TSV (`training/dataset.py`: an
id column, a peak-file column, any metadata columns). `--mfd-dataset` is the authors' released data set
(`training/mfd_dataset.py`: their regions, labels, tracks and metadata columns, exactly).

The store directory (what `data.store.dir` of a training config names):

    store.json    written last: the build is complete; inputs, assembly, min overlap, tracks, variables
    genome/       genome.u8 + genome.json: the FASTA as memory-mapped uint8 tokens (`training.genome`)
    labels/       labels.bits + coverage.u16 + meta.json: one bit per (128-bp bin, track) (`training.labels`)
    tracks.tsv    one row per track, in store order (= label bit order = model output order): `id`, `peaks`
                  and one column per model variable (ENCODE: the `ENCODE_VARIABLES` names, e.g. `target`
                  "CTCF" from "CTCF-human"; --tracks: the input's columns as they are)

Staged: everything is built in `<out>.partial/` and renamed to `out` complete, so `out` is either a finished
store or absent. Restartable: each step keeps what is complete (the genome once encoded, the label tracks already set — see
`training.labels`), so rerunning the same command after an interruption or a fixed input file finishes the
build. Bad input exits with status 2 and one line naming the file and line, never a traceback.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from .dataset import TrackTable, TrackTableError, read_track_table
from .encode import ENCODE_VARIABLES, EncodeMetadataError, select_encode_tracks
from .genome import GENOME_INDEX, GenomeError, TokenGenome, build_token_genome
from .labels import LabelStore, LabelStoreError, TrackSource, build_label_store, replace_directory
from .mfd_dataset import MfdDatasetError, build_labels, dataset_files, open_dataset, read_metadata
from .peaks import PeakFileError

STORE_FORMAT = 1
STORE_FILE = "store.json"
GENOME_DIR = "genome"
LABELS_DIR = "labels"
TRACKS_FILE = "tracks.tsv"
ID_COLUMN = "id"
PEAKS_COLUMN = "peaks"


class StoreError(ValueError):
    """A store directory that is missing, unfinished, or inconsistent with itself or its inputs."""


@dataclass
class Store:
    """A finished store directory, as training opens it."""

    directory: Path
    info: dict[str, Any]

    @property
    def genome_dir(self) -> Path:
        return self.directory / GENOME_DIR

    @property
    def labels_dir(self) -> Path:
        return self.directory / LABELS_DIR

    @property
    def tracks_file(self) -> Path:
        return self.directory / TRACKS_FILE


def open_store(directory: str | Path) -> Store:
    """The store at `directory`, or StoreError saying how to build or finish it."""
    directory = Path(directory)
    info_path = directory / STORE_FILE
    if not info_path.is_file():
        partial = directory.with_name(directory.name + ".partial")
        state = (f"an unfinished build is in {partial}" if partial.is_dir()
                 else "an unfinished build" if directory.is_dir() else "no directory")
        raise StoreError(f"{directory}: not a finished data store ({STORE_FILE} missing: {state}); build it, or "
                         f"rerun the same build to finish it, with python -m training.build_store")
    info = json.loads(info_path.read_text())
    if info.get("format") != STORE_FORMAT:
        raise StoreError(f"{directory}: store format {info.get('format')}, this code reads {STORE_FORMAT}; rebuild it")
    return Store(directory, info)


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
    """`id`, `peaks` (absolute path), then the variables; written under a temporary name, then renamed."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow([ID_COLUMN, PEAKS_COLUMN, *variables])
        for tid, peaks, row in zip(table.ids, table.peak_paths, table.metadata):
            writer.writerow([tid, str(Path(peaks).resolve()), *(row.get(v, "") for v in variables)])
    os.replace(tmp, path)


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
                source: dict[str, Any], bin_size: int = 128, min_overlap: int = 64, force: bool = False,
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
    work = out.with_name(out.name + ".partial")   # the store is built here and renamed into place complete
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
    tmp = work / (STORE_FILE + ".tmp")
    tmp.write_text(json.dumps(info, indent=1) + "\n")
    os.replace(tmp, work / STORE_FILE)
    replace_directory(work, out)
    return Store(out, info)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.build_store",
                                     description="Build the token genome, bit-packed label store and track table "
                                                 "that `data.store` of a training config reads.")
    parser.add_argument("--fasta", required=True, help="reference FASTA (plain or bgzipped)")
    inputs = parser.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--encode-metadata", metavar="TSV", help="the ENCODE portal's metadata.tsv (files report)")
    inputs.add_argument("--tracks", metavar="TSV", help="our track TSV (an id column, a peak-file column, metadata)")
    inputs.add_argument("--mfd-dataset", metavar="DIR",
                        help="the authors' released data set: a directory with regions.bed[.gz] + overlaps.h5")
    parser.add_argument("--mfd-metadata", metavar="TSV",
                        help="--mfd-dataset: their processed track metadata TSV (indexed by File.accession)")
    parser.add_argument("--assembly", help="ENCODE `File assembly` to keep (default: the only one the peak files "
                                           "have; required when they have several)")
    parser.add_argument("--encode-experiments", metavar="TSV",
                        help="the portal's experiment report: the experiments' labs, organ/system/developmental "
                             "slims and life stage (joined on Experiment accession)")
    parser.add_argument("--status", default="released",
                        help="ENCODE `File Status` values to keep, comma-separated, or `any` (default released)")
    parser.add_argument("--all-outputs", action="store_true",
                        help="ENCODE: keep every peak file of an experiment (default: one per experiment)")
    parser.add_argument("--peaks-dir", help="where the ENCODE peak files are (default: next to metadata.tsv)")
    parser.add_argument("--id-column", default=ID_COLUMN, help="--tracks: the track id column (default id)")
    parser.add_argument("--peaks", default="{peaks}", dest="peaks_template",
                        help="--tracks: peak file per row, a template over its columns, relative to the TSV "
                             "(default {peaks})")
    parser.add_argument("--out", required=True, help="store directory")
    parser.add_argument("--min-overlap", type=int, default=64,
                        help="bp a peak must share with a 128-bp bin to label it (default 64, the paper's; 1 = any); "
                             "--mfd-dataset: the rule their data set was made with (64 for *_minoverlap64_*)")
    parser.add_argument("--bin-size", type=int, default=128)
    parser.add_argument("--force", action="store_true", help="replace a store built from other inputs")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:
        if args.peaks_dir is not None and not args.encode_metadata:
            raise StoreError("--peaks-dir goes with --encode-metadata (our --tracks TSV names its peak files)")
        if bool(args.mfd_metadata) != bool(args.mfd_dataset):
            raise StoreError("--mfd-dataset and --mfd-metadata go together")
        if args.encode_experiments and not args.encode_metadata:
            raise StoreError("--encode-experiments goes with --encode-metadata")
        labels = None
        if args.encode_metadata:
            metadata = Path(args.encode_metadata)
            statuses = None if args.status == "any" else [s.strip() for s in args.status.split(",") if s.strip()]
            table, selection = select_encode_tracks(metadata, assembly=args.assembly, peaks_dir=args.peaks_dir,
                                                    statuses=statuses, all_outputs=args.all_outputs,
                                                    experiments=args.encode_experiments)
            print(f"[mfd] {metadata}: {selection.summary()}", file=sys.stderr, flush=True)
            for note in selection.notes:
                print(f"[mfd] note: {note}", file=sys.stderr, flush=True)
            variables = [v for v in ENCODE_VARIABLES if table.metadata and v in table.metadata[0]]
            source = {"source": "encode", "metadata": str(metadata.resolve()), "assembly": selection.assembly,
                      "experiments": str(Path(args.encode_experiments).resolve()) if args.encode_experiments else None,
                      "selection": {"kept": selection.kept, "skipped": dict(selection.skipped)}}
        elif args.mfd_dataset:
            directory = Path(args.mfd_dataset)
            _, h5, label_ids, _, _ = dataset_files(directory)
            metadata = Path(args.mfd_metadata)
            table, variables = read_metadata(metadata, label_ids, h5)
            source = {"source": "mfd-dataset", "dataset": str(directory.resolve()), "metadata": str(metadata.resolve())}

            def labels(out: Path, genome: TokenGenome) -> LabelStore:
                dataset = open_dataset(directory, genome.sizes, args.bin_size)
                return build_labels(dataset, out, genome.sizes, bin_size=args.bin_size, min_overlap=args.min_overlap)
        else:
            metadata = Path(args.tracks)
            table = read_own_tracks(metadata, args.id_column, args.peaks_template)
            variables = list(table.metadata[0])
            source = {"source": "tracks", "metadata": str(metadata.resolve())}
        store = build_store(args.out, args.fasta, table, variables, source=source, bin_size=args.bin_size,
                            min_overlap=args.min_overlap, force=args.force, progress=not args.no_progress,
                            labels=labels)
    except (StoreError, EncodeMetadataError, MfdDatasetError, TrackTableError, PeakFileError, GenomeError,
            LabelStoreError, FileNotFoundError, IsADirectoryError, PermissionError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"[mfd] store {store.directory}: {store.info['n_tracks']} tracks × {store.info['n_bins']} bins of "
          f"{store.info['bin_size']} bp (min overlap {store.info['min_overlap']} bp), variables: "
          f"{', '.join(store.info['variables']) or 'none'}; train with data.store.dir: {store.directory}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
