"""Training layer (data): tracks + genome + peaks → windows with labels, and the torch Dataset that serves them.

One window per 128-bp bin: the window is the `window_bases` bases (2177) centred on the bin, and its label
for track k says whether any peak of track k overlaps that central bin. Chromosomes are split whole into
train/val/test so that no sequence is seen in two splits.

Batches are assembled with one vectorised gather (`__getitems__`) instead of per-window Python, because on
CPU the per-window path costs as much as a small model's forward pass.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from mfd_common.codec import MetadataCodec, MetadataError
from mfd_common.tokens import N_CODE, reverse_complement

from ..model.config import AugmentConfig, Config, ConfigError
from .augment import draw_augmentation
from .genome import Genome
from .peaks import bin_overlaps, read_peaks


class TrackTableError(ValueError):
    """The track metadata TSV is missing a column, a file, or holds a value the codec cannot encode."""


@dataclass
class TrackTable:
    ids: list[str]
    metadata: list[dict[str, Any]]     # only the declared metadata variables, raw TSV strings
    peak_paths: list[Path]

    def __len__(self) -> int:
        return len(self.ids)


def read_track_table(path: str | Path, id_column: str, peaks_template: str,
                     variables: Sequence[str]) -> TrackTable:
    """Read the ENCODE-style TSV: one row per track, metadata columns, and where its peak file is."""
    path = Path(path)
    if not path.is_file():
        raise TrackTableError(f"track metadata TSV {path} does not exist")
    with open(path, newline="") as handle:
        reader = csv.DictReader((line for line in handle if not line.startswith("##")), delimiter="\t")
        columns = reader.fieldnames or []
        for needed, where in [(id_column, "data.id_column")] + [(v, f"metadata.variables.{v}") for v in variables]:
            if needed not in columns:
                raise TrackTableError(f"{path}: column {needed!r} ({where}) not found; columns: {', '.join(columns)}")
        ids: list[str] = []
        metadata: list[dict[str, Any]] = []
        peak_paths: list[Path] = []
        for lineno, row in enumerate(reader, start=2):
            track_id = (row.get(id_column) or "").strip()
            if not track_id:
                raise TrackTableError(f"{path}:{lineno}: empty {id_column!r}")
            if track_id in ids:
                raise TrackTableError(f"{path}:{lineno}: duplicate track id {track_id!r}")
            try:
                relpath = peaks_template.format_map({k: (v or "").strip() for k, v in row.items() if k})
            except KeyError as err:
                raise TrackTableError(f"data.peaks: template {peaks_template!r} names column {err.args[0]!r}, "
                                      f"which {path} does not have") from None
            ids.append(track_id)
            metadata.append({v: (row.get(v) or "").strip() for v in variables})
            peak_path = Path(relpath)
            peak_paths.append(peak_path if peak_path.is_absolute() else path.parent / peak_path)
    if not ids:
        raise TrackTableError(f"{path}: no tracks")
    return TrackTable(ids, metadata, peak_paths)


@dataclass
class Windows:
    """All windows of one split; `tokens` holds the split's chromosomes concatenated, each padded with N."""

    tokens: np.ndarray                 # uint8 [total padded length]
    starts: np.ndarray                 # int64 [n]: window start in `tokens` (before any shift)
    labels: np.ndarray                 # uint8 [n, K]
    chrom_index: np.ndarray            # int32 [n]
    bins: np.ndarray                   # int64 [n]: index of the central bin within its chromosome
    chroms: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.starts)

    def subset(self, index: np.ndarray) -> "Windows":
        return Windows(self.tokens, self.starts[index], self.labels[index], self.chrom_index[index],
                       self.bins[index], self.chroms)


def build_windows(genome: Genome, chroms: Sequence[str], peaks: Sequence[dict[str, np.ndarray]], *,
                  window_bases: int, bin_size: int, max_shift: int = 0, max_n_fraction: float = 0.1,
                  negative_fraction: float = 1.0, stride_bins: int = 1, seed: int = 0) -> Windows:
    flank = (window_bases - bin_size) // 2
    pad = flank + max_shift
    rng = np.random.default_rng(seed)
    pieces, starts, labels, chrom_index, bins = [], [], [], [], []
    offset = 0
    for ci, chrom in enumerate(chroms):
        tok = genome.tokens(chrom)
        n_bins = len(tok) // bin_size
        padded = np.concatenate([np.full(pad, N_CODE, np.uint8), tok, np.full(pad + bin_size, N_CODE, np.uint8)])
        b = np.arange(0, n_bins, stride_bins, dtype=np.int64)
        local = pad + b * bin_size - flank
        n_cum = np.concatenate([[0], np.cumsum(padded == N_CODE, dtype=np.int64)])
        n_frac = (n_cum[local + window_bases] - n_cum[local]) / window_bases
        keep = n_frac <= max_n_fraction
        b, local = b[keep], local[keep]
        lab = np.zeros((len(b), len(peaks)), dtype=np.uint8)
        empty = np.zeros((0, 2), dtype=np.int64)
        for k, track in enumerate(peaks):
            lab[:, k] = bin_overlaps(track.get(chrom, empty), n_bins, bin_size)[b]
        if negative_fraction < 1.0:
            keep = lab.any(axis=1) | (rng.random(len(b)) < negative_fraction)
            b, local, lab = b[keep], local[keep], lab[keep]
        pieces.append(padded)
        starts.append(local + offset)
        labels.append(lab)
        chrom_index.append(np.full(len(b), ci, dtype=np.int32))
        bins.append(b)
        offset += len(padded)
    if not pieces:
        raise ValueError("no chromosomes in this split")
    return Windows(np.concatenate(pieces), np.concatenate(starts), np.concatenate(labels),
                   np.concatenate(chrom_index), np.concatenate(bins), list(chroms))


def collate_batched(batch: Any) -> Any:
    """`__getitems__` already returns a batch; the DataLoader must not collate it again."""
    return batch


class WindowDataset(torch.utils.data.Dataset):
    """Yields (uint8 tokens [L], float32 labels [K]); augmentation is seeded by (seed, epoch, indices)."""

    def __init__(self, windows: Windows, window_bases: int, augment: AugmentConfig | None = None, seed: int = 0):
        self.windows = windows
        self.window_bases = window_bases
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self._arange = np.arange(window_bases, dtype=np.int64)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, labels = self.__getitems__([index])
        return tokens[0], labels[0]

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = np.asarray(indices, dtype=np.int64)
        starts = self.windows.starts[index]
        flip = np.zeros(len(index), dtype=bool)
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, self.epoch, int(index[0]) if len(index) else 0, len(index)])
            shift, flip = draw_augmentation(rng, len(index), self.augment.max_shift, self.augment.reverse_complement,
                                            self.augment.per == "batch")
            starts = starts + shift
        tokens = self.windows.tokens[starts[:, None] + self._arange]
        if flip.any():
            tokens[flip] = reverse_complement(tokens[flip])
        labels = self.windows.labels[index].astype(np.float32)
        return torch.from_numpy(np.ascontiguousarray(tokens)), torch.from_numpy(labels)


@dataclass
class TrainingData:
    tracks: TrackTable
    codec: MetadataCodec
    codes: np.ndarray                  # float32 [K, codec.width]: each track's condition codes
    splits: dict[str, Windows]


def split_chromosomes(cfg: Config, genome: Genome) -> dict[str, list[str]]:
    split = cfg.data.split
    for name in ("val", "test"):
        for i, chrom in enumerate(getattr(split, name)):
            if chrom not in genome.sizes:
                raise ConfigError(f"data.split.{name}[{i}]", f"chromosome {chrom!r} not found in {genome.path}")
    if split.train is not None:
        for i, chrom in enumerate(split.train):
            if chrom not in genome.sizes:
                raise ConfigError(f"data.split.train[{i}]", f"chromosome {chrom!r} not found in {genome.path}")
        train = list(split.train)
    else:
        pool = cfg.data.chromosomes if cfg.data.chromosomes is not None else genome.chromosomes
        held = set(split.val) | set(split.test)
        train = [c for c in pool if c not in held]
    if cfg.data.chromosomes is not None:
        for i, chrom in enumerate(cfg.data.chromosomes):
            if chrom not in genome.sizes:
                raise ConfigError(f"data.chromosomes[{i}]", f"chromosome {chrom!r} not found in {genome.path}")
    if not train:
        raise ConfigError("data.split.train", "no training chromosomes left")
    return {"train": train, "val": list(split.val), "test": list(split.test)}


def tracks_and_codec(cfg: Config, table: Path, id_column: str, peaks_template: str
                     ) -> tuple[TrackTable, MetadataCodec, np.ndarray]:
    """The track table with the mapping's variables, the codec fitted on its rows, and each track's codes."""
    variables, groups = cfg.codec_spec()
    tracks = read_track_table(table, id_column, peaks_template, [v.name for v in variables])
    try:
        codec = MetadataCodec.fit(variables, groups, tracks.metadata,
                                  unspecified="zeros" if cfg.train.metadata_dropout > 0 else "mean")
        codes = codec.encode_many(tracks.metadata, strict=False)
    except MetadataError as err:
        raise TrackTableError(f"{table}: {err}") from None
    return tracks, codec, codes


def load_training_data(cfg: Config, splits: Sequence[str] = ("train", "val", "test")) -> TrainingData:
    """Everything the train loop needs, built from the config's files (errors name the file or field)."""
    genome = Genome(cfg.resolve(cfg.data.fasta))
    tracks, codec, codes = tracks_and_codec(cfg, cfg.resolve(cfg.data.metadata), cfg.data.id_column, cfg.data.peaks)
    peaks = [read_peaks(p, genome.sizes) for p in tracks.peak_paths]
    chroms = split_chromosomes(cfg, genome)
    out: dict[str, Windows] = {}
    for i, name in enumerate(splits):
        if not chroms[name]:
            continue
        out[name] = build_windows(
            genome, chroms[name], peaks, window_bases=cfg.model.window_bases, bin_size=cfg.data.bin_size,
            max_shift=cfg.data.augment.max_shift, max_n_fraction=cfg.data.max_n_fraction,
            negative_fraction=cfg.data.negative_fraction if name == "train" else 1.0,
            stride_bins=cfg.data.stride_bins, seed=cfg.seed + i)
    return TrainingData(tracks, codec, codes, out)
