"""Training layer (data): where training examples come from, behind one interface, so that the training loop
(`training.model.fit`) stays one loop.

Two sources:
- `MemorySource`: the demo / small-genome path (`training.data.dataset`): FASTA + track TSV + peak files, labels as
  a dense matrix, whole chromosomes held out (`data.fasta`, `data.metadata`, `data.split`).
- `StoreSource`: the paper-scale path (`data.store`): a store built by `python -m training.build_store`, labels
  bit-packed and memory-mapped, the universe and split of `data.store.universe` (`training.data.splits`), batches from
  DataLoader workers, evaluation streamed batch by batch.

Both fit the metadata codec the same way (`training.data.dataset.tracks_and_codec` on the track table), so a model
trained from either serves the same codes for the same metadata.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from mfd_common.codec import MetadataCodec

from ..model.config import Config, ConfigError
from ..model.network import MFDModel
from ..model.predict import predict, predict_dataset, subsample_index
from .dataset import (TrackTable, TrainingData, WindowDataset, Windows, collate_batched, load_training_data,
                      tracks_and_codec)
from .labels import LabelStore, LabelStoreError
from .loader import StoreWindowDataset, make_loader
from .splits import SplitError, Universe, split_bins
from .store import StoreError, open_store

SPLITS = ("train", "val", "test")
RATE_SAMPLE = 200_000   # training windows read to estimate each track's positive rate (init_output_bias)


def eval_limit(cfg: Config, split: str) -> int | None:
    """The config's `eval_max_windows` (store setting first) for the per-epoch validation only.

    It keeps each epoch's validation affordable; the test figures the card reports are over the whole test split
    (a subsample only when asked: `training.evaluate --max-windows`).
    """
    if split != "val":
        return None
    store = cfg.data.store
    if store is not None and store.eval_max_windows is not None:
        return store.eval_max_windows
    return cfg.train.eval_max_windows


class DataSource:
    """Tracks, codec and per-split windows for training and evaluation."""

    tracks: TrackTable
    codec: MetadataCodec
    codes: np.ndarray                  # float32 [K, codec.width]

    def split_sizes(self) -> dict[str, int]:
        """Windows per split present (an empty split is absent)."""
        raise NotImplementedError

    def train_loader(self, cfg: Config, batch_size: int, sampler: torch.utils.data.Sampler
                     ) -> torch.utils.data.DataLoader:
        """Augmented training batches (tokens uint8 [B, window], labels float32 [B, K])."""
        raise NotImplementedError

    @property
    def train_set(self) -> torch.utils.data.Dataset:
        raise NotImplementedError

    def positive_rate(self) -> np.ndarray:
        """float [K]: each track's share of positive training windows."""
        raise NotImplementedError

    def predict(self, model: MFDModel, split: str, cfg: Config, device: torch.device,
                codes: np.ndarray | None = None, reverse_complement: bool = True,
                tracks: np.ndarray | None = None, max_windows: int | None = None) -> dict[str, np.ndarray]:
        """Predictions over `split` (see `training.evaluate.predict_batches`): at most `max_windows` windows if
        given, else the config's cap for the split (`eval_limit`).

        `codes` default to the source's tracks'; `tracks` reorders/selects label columns (a checkpoint's order).
        """
        raise NotImplementedError


class MemorySource(DataSource):
    def __init__(self, cfg: Config, data: TrainingData):
        self.data = data
        self.tracks, self.codec, self.codes = data.tracks, data.codec, data.codes
        self._train = (WindowDataset(data.splits["train"], cfg.model.window_bases, cfg.data.augment, seed=cfg.seed)
                       if "train" in data.splits else None)

    def split_sizes(self) -> dict[str, int]:
        return {name: len(windows) for name, windows in self.data.splits.items()}

    @property
    def train_set(self) -> torch.utils.data.Dataset:
        return self._train

    def train_loader(self, cfg: Config, batch_size: int, sampler: torch.utils.data.Sampler
                     ) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(self._train, batch_size=batch_size, sampler=sampler, drop_last=True,
                                           collate_fn=collate_batched, num_workers=cfg.train.num_workers)

    def positive_rate(self) -> np.ndarray:
        return self.data.splits["train"].labels.mean(axis=0)

    def predict(self, model: MFDModel, split: str, cfg: Config, device: torch.device,
                codes: np.ndarray | None = None, reverse_complement: bool = True,
                tracks: np.ndarray | None = None, max_windows: int | None = None) -> dict[str, np.ndarray]:
        windows = self.data.splits[split]
        if tracks is not None:
            windows = Windows(windows.tokens, windows.starts, windows.labels[:, tracks], windows.chrom_index,
                              windows.bins, windows.chroms)
        return predict(model, windows, self.codes if codes is None else codes,
                       batch_size=cfg.train.eval_batch_size, device=device,
                       max_windows=max_windows or eval_limit(cfg, split), reverse_complement=reverse_complement)


class StoreSource(DataSource):
    def __init__(self, cfg: Config, splits: Sequence[str] = SPLITS):
        assert cfg.data.store is not None
        self.cfg = cfg
        settings = cfg.data.store
        try:
            self.store = open_store(cfg.resolve(settings.dir))
            labels = LabelStore(self.store.labels_dir)
        except (StoreError, LabelStoreError) as err:
            raise ConfigError("data.store.dir", str(err)) from None
        if labels.bin_size != cfg.model.bin_size:
            raise ConfigError("data.store.dir", f"{self.store.directory} has {labels.bin_size}-bp bins, the model "
                                                f"predicts {cfg.model.bin_size}-bp bins")
        self.tracks, self.codec, self.codes = tracks_and_codec(cfg, self.store.tracks_file, "id", "{peaks}")
        if self.tracks.ids != labels.track_ids:
            raise ConfigError("data.store.dir", f"{self.store.tracks_file} does not list the label store's tracks "
                                                f"in its order; rebuild the store")
        u = settings.universe
        universe = Universe(min_overlap=u.min_overlap, min_coverage=u.min_coverage, test=list(u.test), val=list(u.val),
                            val_fraction=u.val_fraction, val_blocks=u.val_blocks, chromosomes=u.chromosomes)
        try:
            bins = split_bins(labels, universe)
        except SplitError as err:
            raise ConfigError("data.store.universe", str(err)) from None
        self.bins = {name: b for name, b in bins.items() if name in splits}
        self.labels = labels
        window = cfg.model.window_bases
        augment = cfg.data.augment
        self._train = (StoreWindowDataset(self.store.labels_dir, self.store.genome_dir, self.bins["train"], window,
                                          max_shift=augment.max_shift, reverse_complement=augment.reverse_complement,
                                          augment_per_batch=augment.per == "batch", seed=cfg.seed) if "train" in self.bins else None)

    def split_sizes(self) -> dict[str, int]:
        return {name: len(b) for name, b in self.bins.items()}

    @property
    def train_set(self) -> torch.utils.data.Dataset:
        return self._train

    def train_loader(self, cfg: Config, batch_size: int, sampler: torch.utils.data.Sampler
                     ) -> torch.utils.data.DataLoader:
        return make_loader(self._train, batch_size, sampler=sampler, num_workers=cfg.data.store.num_workers,
                           seed=cfg.seed)

    def positive_rate(self) -> np.ndarray:
        bins = self.bins["train"][subsample_index(len(self.bins["train"]), RATE_SAMPLE)]
        counts = np.zeros(self.labels.n_tracks, dtype=np.int64)
        for start in range(0, len(bins), 16_384):   # 2,106 tracks unpacked: ~35 MB a chunk
            counts += self.labels.labels(bins[start:start + 16_384]).sum(axis=0, dtype=np.int64)
        return counts / max(1, len(bins))

    def eval_dataset(self, split: str, tracks: np.ndarray | None = None) -> StoreWindowDataset:
        """Unaugmented windows of `split`, labels as uint8 (optionally reordered to `tracks`)."""
        return StoreWindowDataset(self.store.labels_dir, self.store.genome_dir, self.bins[split],
                                  self.cfg.model.window_bases, label_dtype=np.uint8, tracks=tracks)

    def predict(self, model: MFDModel, split: str, cfg: Config, device: torch.device,
                codes: np.ndarray | None = None, reverse_complement: bool = True,
                tracks: np.ndarray | None = None, max_windows: int | None = None) -> dict[str, np.ndarray]:
        store = cfg.data.store
        limit = max_windows or eval_limit(cfg, split)
        return predict_dataset(model, self.eval_dataset(split, tracks), self.codes if codes is None else codes,
                               batch_size=cfg.train.eval_batch_size, device=device, max_windows=limit,
                               reverse_complement=reverse_complement, num_workers=store.num_workers)


def load_source(cfg: Config, splits: Sequence[str] = SPLITS) -> DataSource:
    """The source the config names: `data.store` if set, else the in-memory files."""
    if cfg.data.store is not None:
        return StoreSource(cfg, splits)
    return MemorySource(cfg, load_training_data(cfg, splits))

