"""Training layer (data): open a finished data store (what `data.store.dir` of a training config names).

The store directory, as `training.data.store_builder` writes it (`python -m training.build_store`):

    store.json    written last: the build is complete; inputs, assembly, min overlap, tracks, variables
    genome/       genome.u8 + genome.json: the FASTA as memory-mapped uint8 tokens (`training.data.genome`)
    labels/       labels.bits + coverage.u16 + meta.json: one bit per (128-bp bin, track) (`training.data.labels`)
    tracks.tsv    one row per track, in store order (= label bit order = model output order): `id`, `peaks`
                  and one column per model variable

This module only reads; training opens stores through it and never imports the builder.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mfd_common.publish import partial_path

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
        partial = partial_path(directory)   # where an unfinished build is staged
        state = (f"an unfinished build is in {partial}" if partial.is_dir()
                 else "an unfinished build" if directory.is_dir() else "no directory")
        raise StoreError(f"{directory}: not a finished data store ({STORE_FILE} missing: {state}); build it, or "
                         f"rerun the same build to finish it, with python -m training.build_store")
    info = json.loads(info_path.read_text())
    if info.get("format") != STORE_FORMAT:
        raise StoreError(f"{directory}: store format {info.get('format')}, this code reads {STORE_FORMAT}; rebuild it")
    return Store(directory, info)
