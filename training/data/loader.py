"""Training layer (data): windows over a memory-mapped label store and token genome: the paper-scale torch Dataset.

Contract with the model: each example is (tokens uint8 [window_bases], labels [n_tracks]) where tokens use the
codes of `mfd_common.tokens` and the label is the central 128-bp bin's. `window_bases` is the model's input
length (the reference model: 2177 bases = seq_len 2176 dinucleotide positions + 1); the window starts
`window_bases // 2 - bin_size // 2` bases before its bin, as the authors centre regions (floor left, ceil right).

Batches come from `__getitems__` (one vectorised gather per batch, `collate_batched` passes them through), so a
worker spends its time in numpy copies, not per-window Python. Memory maps are opened lazily in each worker and
never pickled (pickling an np.memmap copies its data).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

from mfd_common.tokens import reverse_complement

from .augment import draw_augmentation
from .genome import GenomeError, TokenGenome
from .labels import LabelStore


class StoreWindowDataset(torch.utils.data.Dataset):
    """Yields (uint8 tokens [window_bases], labels [K]) for the global bins `bins` of a label store.

    Augmentation (training only): a uniform shift in [-max_shift, max_shift] bases and a reverse complement with
    probability 0.5, drawn once per batch (the reference) or per window, seeded by (seed, epoch, batch) so a run is
    reproducible for any number of workers.
    """

    def __init__(self, store_dir: str | Path, genome_dir: str | Path, bins: np.ndarray, window_bases: int, *,
                 max_shift: int = 0, reverse_complement: bool = False, augment_per_batch: bool = True,
                 seed: int = 0, label_dtype: Any = np.float32, tracks: np.ndarray | None = None):
        self.store_dir, self.genome_dir = Path(store_dir), Path(genome_dir)
        self.bins = np.asarray(bins, dtype=np.int64)
        self.window_bases = int(window_bases)
        self.max_shift = int(max_shift)
        self.reverse_complement = bool(reverse_complement)
        self.augment_per_batch = bool(augment_per_batch)
        self.seed = seed
        self.epoch = 0
        self.label_dtype = label_dtype
        self.tracks = tracks
        self._store: LabelStore | None = None
        self._genome: TokenGenome | None = None
        self._check()

    def _check(self) -> None:
        store, genome = self.open()
        for chrom in store.chromosomes:
            if genome.sizes.get(chrom) != store.chrom_sizes[chrom]:
                raise GenomeError(f"{self.genome_dir}: chromosome {chrom} is {genome.sizes.get(chrom)} bp, the label "
                                  f"store {self.store_dir} was built for {store.chrom_sizes[chrom]} bp")
        reach = self.window_bases // 2 + self.max_shift + store.bin_size
        if reach > genome.pad:
            raise ValueError(f"window_bases {self.window_bases} + shift {self.max_shift} reaches {reach} bases past "
                             f"a chromosome end; the token genome pads only {genome.pad}")
        if len(self.bins) and (self.bins.min() < 0 or self.bins.max() >= store.n_bins):
            raise ValueError(f"bin ids out of range [0, {store.n_bins})")

    def open(self) -> tuple[LabelStore, TokenGenome]:
        if self._store is None or self._genome is None:
            self._store = LabelStore(self.store_dir)
            self._genome = TokenGenome(self.genome_dir)
            offsets = np.array([self._genome.offsets[c] for c in self._store.chromosomes], dtype=np.int64)
            self._chrom_base = offsets + self._store.bin_size // 2 - self.window_bases // 2
            self._windows = sliding_window_view(self._genome.tokens, self.window_bases)
        return self._store, self._genome

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in ("_store", "_genome", "_windows", "_chrom_base"):
            state.pop(key, None)
        state["_store"] = state["_genome"] = None
        return state

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def n_tracks(self) -> int:
        return self.open()[0].n_tracks if self.tracks is None else len(self.tracks)

    def __len__(self) -> int:
        return len(self.bins)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, labels = self.__getitems__([index])
        return tokens[0], labels[0]

    def starts(self, bins: np.ndarray) -> np.ndarray:
        """Offset in the token genome of each bin's (unshifted) window."""
        store, _ = self.open()
        ci, local = store.locate(bins)
        return self._chrom_base[ci] + local * store.bin_size

    def batch(self, index: np.ndarray, augment: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(tokens uint8 [n, window_bases], labels [n, K]) as numpy arrays."""
        store, _ = self.open()
        index = np.asarray(index, dtype=np.int64)
        bins = self.bins[index]
        starts = self.starts(bins)
        flip = None
        if augment and (self.max_shift or self.reverse_complement):
            rng = np.random.default_rng([self.seed, self.epoch, int(index[0]) if len(index) else 0, len(index)])
            shift, flip = draw_augmentation(rng, len(index), self.max_shift, self.reverse_complement,
                                            self.augment_per_batch)
            starts = starts + shift
        tokens = self._windows[starts]      # one gather: [n, window_bases] copied out of the memory map
        if flip is not None and flip.any():
            tokens[flip] = reverse_complement(tokens[flip])
        labels = store.labels(bins, self.label_dtype, self.tracks)
        return tokens, labels

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, labels = self.batch(np.asarray(indices, dtype=np.int64))
        return torch.from_numpy(tokens), torch.from_numpy(labels)


def make_loader(dataset: StoreWindowDataset, batch_size: int, *, shuffle: bool = True, num_workers: int = 0,
                seed: int = 0, drop_last: bool = True, sampler: torch.utils.data.Sampler | None = None
                ) -> torch.utils.data.DataLoader:
    """A DataLoader that hands whole index lists to `__getitems__` (vectorised) in each worker."""
    from .dataset import collate_batched

    if sampler is None:
        generator = torch.Generator().manual_seed(seed)
        sampler = (torch.utils.data.RandomSampler(dataset, generator=generator) if shuffle
                   else torch.utils.data.SequentialSampler(dataset))
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last, collate_fn=collate_batched,
        num_workers=num_workers, persistent_workers=False, prefetch_factor=4 if num_workers else None,
        pin_memory=torch.cuda.is_available())
