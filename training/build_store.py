"""Training layer (commands): build a paper-scale data store (`training.data.store_builder`) from the command line.

    python -m training.build_store --fasta GRCh38.fa --encode-metadata metadata.tsv [--assembly GRCh38] \\
        [--encode-experiments experiments.tsv] [--status released] [--all-outputs] [--peaks-dir DIR] \\
        --out STORE_DIR [--min-overlap 64]
    python -m training.build_store --fasta genome.fa --tracks tracks.tsv --out STORE_DIR [--min-overlap 64]
    python -m training.build_store --fasta Homo_sapiens.GRCh38.dna.primary_assembly.fa \\
        --mfd-dataset data/processed/GRCh38/221111_128bp_minoverlap64_mincov2_nc10_tissues \\
        --mfd-metadata data/processed/221111_encode_metadata_processed.tsv --out STORE_DIR

Bad input exits with status 2 and one line naming the file and line, never a traceback.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from mfd_common.geometry import BIN_SIZE

from .data.dataset import TrackTableError
from .data.encode_report import ENCODE_VARIABLES, EncodeMetadataError, select_encode_tracks
from .data.genome import GenomeError, TokenGenome
from .data.labels import LabelStore, LabelStoreError
from .data.mfd_dataset import MfdDatasetError, build_labels, dataset_files, open_dataset, read_metadata
from .data.peaks import PeakFileError
from .data.store import ID_COLUMN, StoreError
from .data.store_builder import build_store, read_own_tracks


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
    parser.add_argument("--bin-size", type=int, default=BIN_SIZE)
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
        labels: Callable[[Path, TokenGenome], LabelStore] | None = None   # default: labels from the peak files
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

            def their_labels(out: Path, genome: TokenGenome) -> LabelStore:
                dataset = open_dataset(directory, genome.sizes, args.bin_size)
                return build_labels(dataset, out, genome.sizes, bin_size=args.bin_size, min_overlap=args.min_overlap)
            labels = their_labels
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
