"""Contract (mfd_common): the window geometry training and serving share, each fact named for what it counts.

Two lengths describe one input window and must not be confused (docs/contract.md):

- `WINDOW_BASES` = 2177: *bases* in a request window. The trunk's `TOKENS__0` input is this wide, and the model
  card's `seq_len` field states it (the card field keeps its historic name; `ModelCard.window_bases` reads it).
- `DINUCLEOTIDE_POSITIONS` = 2176: *positions* the one-hot layer produces from those bases: overlapping k-mers of
  `ONEHOT_ORDER` = 2 at stride 1, so `WINDOW_BASES − ONEHOT_ORDER + 1`. The reference calls this number `seq_len`;
  our model config calls it `positions` (`training.model.network.ModelConfig`).

`BIN_SIZE` = 128 bp is the genome bin one output position covers (the stem and six tower poolings halve 2**7
times), the bin a peak labels and the stride the service tiles a region with.
"""
from __future__ import annotations

ONEHOT_ORDER = 2
WINDOW_BASES = 2177
BIN_SIZE = 128


def positions_in_window(window_bases: int, order: int) -> int:
    """k-mer positions (stride 1) in a window of `window_bases` bases: order 2 → one fewer than the bases."""
    return window_bases - order + 1


def bases_for_positions(positions: int, order: int) -> int:
    """Bases a window needs to hold `positions` k-mers of `order` at stride 1 (the inverse of the above)."""
    return positions + order - 1


DINUCLEOTIDE_POSITIONS = positions_in_window(WINDOW_BASES, ONEHOT_ORDER)
