"""Training layer (data): the random shift and strand of training windows, drawn one way for both data sources.

Why one function: the in-memory windows (`dataset.WindowDataset`) and the memory-mapped store
(`loader.StoreWindowDataset`) must augment identically, or a model trained from a store would not match one trained
from files.
"""
from __future__ import annotations

import numpy as np


def draw_augmentation(rng: np.random.Generator, n: int, max_shift: int, reverse_complement: bool,
                      per_batch: bool) -> tuple[np.ndarray, np.ndarray]:
    """(shift [n] int64, flip [n] bool) for a batch of n windows.

    Per batch (the reference): one shift in [-max_shift, max_shift] and one strand for all n windows, as the
    authors' dataset draws them once per BatchSampler index list. Per window: independent draws.
    """
    draws = 1 if per_batch else n
    shift = rng.integers(-max_shift, max_shift + 1, draws) if max_shift else np.zeros(draws, dtype=np.int64)
    flip = rng.random(draws) < 0.5 if reverse_complement else np.zeros(draws, dtype=bool)
    return np.broadcast_to(shift, n).astype(np.int64), np.broadcast_to(flip, n).copy()
