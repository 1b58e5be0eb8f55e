"""Training layer (data): which bins are training examples (the universe) and how they split into train / validation /
test.

Two ways, both over a `LabelStore`:
- **paper preset** (`Universe.paper()`): the authors' `128bp_minoverlap64_mincov2` data set. Labels need
  >= 64 bp of overlap (a store property, set at build time), the universe is the bins that at least 2 tracks
  label, test = chr9 + chr10, and validation = blocks cut out of the remaining bins: the remaining bins in
  genome order are split into 10 equal intervals and the first ≈5 % (of all kept bins, as their code computes
  it) / 10 of each interval become validation. Blocks rather than random bins because neighbouring bins share
  most of their sequence: random validation bins would leak into training.
- **chromosome split** (our original option): every bin (or bins at a coverage threshold), whole chromosomes
  held out as validation and test.

A store built from the authors' released data set (`training.data.mfd_dataset`) carries its own universe: their
regions, in their BED's order. Then the universe is exactly those bins (`min_coverage` does not apply: their
data set already kept its bins of interest), and the validation blocks are cut in the BED's order, as their code
cuts them (`bed.index[~test]`).

Chromosome names are matched with or without the `chr` prefix (GRCh38 from UCSC vs Ensembl), as their loader did.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .labels import LabelStore


class SplitError(ValueError):
    """A split that names chromosomes the store lacks or leaves a split empty."""


@dataclass
class Universe:
    """Bins of interest and the split; `min_overlap` is checked against the store (it is fixed at build)."""

    min_overlap: int = 1               # bp a peak must share with a bin to label it
    min_coverage: int = 0              # keep bins labelled by at least this many tracks (0 = all bins)
    test: list[str] = field(default_factory=list)
    val: list[str] = field(default_factory=list)           # whole validation chromosomes …
    val_fraction: float = 0.0          # … or this share of all kept bins, as blocks of the non-test ones
    val_blocks: int = 10
    chromosomes: list[str] | None = None                   # restrict the universe (default: all in the store)

    @classmethod
    def paper(cls) -> "Universe":
        return cls(min_overlap=64, min_coverage=2, test=["chr9", "chr10"], val_fraction=0.05, val_blocks=10)

    def validate(self) -> None:
        if self.val and self.val_fraction:
            raise SplitError("give validation chromosomes (val) or a val_fraction, not both")
        if not 0.0 <= self.val_fraction < 1.0:
            raise SplitError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.val_blocks < 1:
            raise SplitError(f"val_blocks must be >= 1, got {self.val_blocks}")
        overlap = set(self.val) & set(self.test)
        if overlap:
            raise SplitError(f"chromosomes in both val and test: {', '.join(sorted(overlap))}")


def resolve_chromosome(name: str, available: Sequence[str], what: str) -> str:
    """`chr9` ↔ `9`: accept either naming; unknown names are an error listing what the store has."""
    for candidate in (name, name[3:] if name.startswith("chr") else "chr" + name):
        if candidate in available:
            return candidate
    shown = ", ".join(list(available)[:25]) + (" …" if len(available) > 25 else "")
    raise SplitError(f"{what}: chromosome {name!r} is not in the label store (it has: {shown})")


def validation_blocks(n_remaining: int, n_total: int, fraction: float, blocks: int) -> np.ndarray:
    """bool [n_remaining]: which of the remaining bins (in genome order) are validation bins.

    `blocks` equal intervals, the first round(fraction · n_total / blocks) bins of each go to validation.
    """
    is_val = np.zeros(n_remaining, dtype=bool)
    if fraction <= 0 or n_remaining < 2:
        return is_val
    blocks = min(blocks, n_remaining // 2)            # tiny sets: fewer blocks, each keeps a training part
    interval = n_remaining // blocks
    per_block = min(max(1, int(fraction * n_total // blocks)), interval - 1)
    is_val[:] = (np.arange(n_remaining) % interval) < per_block
    return is_val


def split_bins(store: LabelStore, universe: Universe) -> dict[str, np.ndarray]:
    """{train, val, test}: sorted global bin ids of each split (empty splits are left out)."""
    universe.validate()
    if universe.min_overlap != store.min_overlap:
        raise SplitError(f"the universe asks for min_overlap {universe.min_overlap} bp but {store.directory} was "
                         f"built with {store.min_overlap} bp; rebuild the store with --min-overlap "
                         f"{universe.min_overlap}")
    available = store.chromosomes
    pool = ([resolve_chromosome(c, available, "chromosomes") for c in universe.chromosomes]
            if universe.chromosomes is not None else list(available))
    test = [resolve_chromosome(c, available, "test") for c in universe.test]
    val = [resolve_chromosome(c, available, "val") for c in universe.val]
    held = set(test) | set(val)
    train_chroms = [c for c in pool if c not in held]
    if store.regions is not None:
        out = _region_splits(store, pool, train_chroms, val, test)
    else:
        out = {
            "train": store.bins_of_interest(universe.min_coverage, train_chroms),
            "val": store.bins_of_interest(universe.min_coverage, val),
            "test": store.bins_of_interest(universe.min_coverage, test),
        }
    if universe.val_fraction:
        remaining = out["train"]
        is_val = validation_blocks(len(remaining), len(remaining) + len(out["test"]), universe.val_fraction,
                                   universe.val_blocks)
        out["train"], out["val"] = remaining[~is_val], remaining[is_val]
    out = {name: np.sort(bins) for name, bins in out.items()}
    if len(out["train"]) == 0:
        raise SplitError("no training bins left (check min_coverage and the held-out chromosomes)")
    return {name: bins for name, bins in out.items() if len(bins)}


def _region_splits(store: LabelStore, pool: Sequence[str], train_chroms: Sequence[str], val: Sequence[str],
                   test: Sequence[str]) -> dict[str, np.ndarray]:
    """The store's fixed regions by chromosome, each split kept in the regions' own (BED) order."""
    regions = store.regions
    chrom_of = np.asarray(store.chromosomes, dtype=object)[store.locate(regions)[0]] if len(regions) else \
        np.zeros(0, dtype=object)
    pooled = np.isin(chrom_of, list(pool))
    return {name: regions[pooled & np.isin(chrom_of, list(chroms))]
            for name, chroms in (("train", train_chroms), ("val", val), ("test", test))}
