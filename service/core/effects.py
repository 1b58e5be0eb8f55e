"""Service layer (core): shift × strand ensembling and variant effects (alt − ref), the arithmetic shared by
/predict_variants and the batch tool, so both report the same numbers. docs/variant-effects.md has the why.

Two crop geometries (`EnsembleSpec.geometry`):

- **reference** (the default): the authors' gnomAD script (HealthML/MFD `predict_gnomad_variants.py`). The window
  is read shifts + 1 bases longer than the model's (2185 = 2177 + 8 at 7 shifts); forward crops start at offsets
  0 … shifts−1; reverse-complement crops are cut from the reverse complement of the *whole* long window at the same
  offsets, so in forward coordinates they start at shifts … 1: one position off the forward ones. Their crops are
  one base longer than the model input (2178 bases, 2177 dinucleotide positions); the trunk's central output bin
  never sees that last base (its receptive field is bases 125 … 2051 of 2177 in the reference architecture), so
  we score the first `seq_len` bases of each crop: the same numbers, from the one exported input length. A reverse
  crop's first `seq_len` bases are the reverse complement of long[j : j + seq_len] with j = shifts + 1 − i.
- **centred**: ours before issue 18. The window is read shifts − 1 bases longer and both strands use the crops
  long[i : i + seq_len], i = 0 … shifts−1; with an odd number of shifts the middle crop is the plain window centred
  on the variant.

    long window   [N, read_length] tokens
    crops         [N, shifts × strands, seq_len]
    scores        [N, shifts × strands, K]  → mean over axis 1 → [N, K]

What is averaged is what they average: probabilities (the mean of the per-crop sigmoids, not the sigmoid of a mean),
the logits, biological and technical logits, and the features. Logits are linear in the features, so their mean
equals the score of the mean features; probabilities are not, so every crop is scored.

An effect is (ensembled alt) − (ensembled ref) per quantity, as in their script.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mfd_common import tokens as dna

from ..backends.base import HeadWeights
from .scoring import Scores, score

#: The paper's ensemble: 7 shifted crops × 2 strands.
PAPER_SHIFTS = 7
PAPER_STRANDS = 2
#: Upper bound on shifts: each shift multiplies the trunk work; beyond ~a dozen the crops stop adding information.
MAX_SHIFTS = 16

#: Crop geometries: "reference" = the authors' gnomAD script, "centred" = crops around the centred window.
GEOMETRIES = ("reference", "centred")
DEFAULT_GEOMETRY = "reference"


@dataclass(frozen=True)
class EnsembleSpec:
    """How many shifted crops and strands are averaged per window, cut in which geometry (module docstring);
    1 × 1 centred is the plain window."""

    shifts: int = PAPER_SHIFTS
    strands: int = PAPER_STRANDS
    geometry: str = DEFAULT_GEOMETRY

    def __post_init__(self) -> None:
        if not 1 <= self.shifts <= MAX_SHIFTS:
            raise ValueError(f"shifts must be between 1 and {MAX_SHIFTS}, got {self.shifts}")
        if self.strands not in (1, 2):
            raise ValueError(f"strands must be 1 (forward) or 2 (forward and reverse complement), got {self.strands}")
        if self.geometry not in GEOMETRIES:
            raise ValueError(f"geometry must be one of {', '.join(GEOMETRIES)}, got {self.geometry!r}")

    @property
    def size(self) -> int:
        """Windows scored per long window."""
        return self.shifts * self.strands

    def read_length(self, seq_len: int) -> int:
        """Bases to read per window: shifts + 1 more than the model's for the reference geometry (their
        `seq_len + 8` dinucleotide positions at 7 shifts), shifts − 1 more for centred crops."""
        return seq_len + self.shifts + (1 if self.geometry == "reference" else -1)

    def offsets(self) -> tuple[list[int], list[int]]:
        """Start offsets in the long window of the forward crops and of the windows whose reverse complements are
        the reverse crops (both `seq_len` long), paired by shift index."""
        forward = list(range(self.shifts))
        if self.geometry == "reference":
            return forward, [self.shifts + 1 - i for i in forward]
        return forward, forward

    def to_json(self) -> dict[str, Any]:
        return {"shifts": self.shifts, "strands": self.strands, "geometry": self.geometry}


def encode_windows(sequences: list[str]) -> np.ndarray:
    """Reference-derived windows → uint8 [N, L]. IUPAC codes in a reference FASTA mean "unknown base" (N); the
    alleles spliced in were validated strictly before (service.core.variants.check_allele)."""
    return np.stack([dna.encode(s, ambiguous_as_n=True) for s in sequences])


def crops(long_tokens: np.ndarray, seq_len: int, spec: EnsembleSpec) -> np.ndarray:
    """uint8 [N, spec.read_length(seq_len)] → [N × shifts × strands, seq_len], grouped per long window.

    Row order within a group: shift 0 forward, shift 0 reverse, shift 1 forward, … (strands inner).
    """
    n, length = long_tokens.shape
    if length != spec.read_length(seq_len):
        raise ValueError(f"long windows have {length} bases, expected {spec.read_length(seq_len)}")
    starts_forward, starts_reverse = spec.offsets()
    window = np.arange(seq_len)[None, :]
    forward = long_tokens[:, np.array(starts_forward)[:, None] + window]        # [N, shifts, seq_len]
    if spec.strands == 1:
        return forward.reshape(n * spec.shifts, seq_len)
    reverse = dna.reverse_complement(long_tokens[:, np.array(starts_reverse)[:, None] + window])
    both = np.stack([forward, reverse], axis=2)                                 # [N, shifts, 2, seq_len]
    return both.reshape(n * spec.size, seq_len)


def mean_scores(scores: Scores, spec: EnsembleSpec) -> Scores:
    """Per-crop scores [N × E, K] → ensembled [N, K] (E = shifts × strands), averaging each quantity and the
    features [N × E, D] → [N, D] when present."""
    return scores.mean_groups(spec.size)


def ensembled_scores(features: np.ndarray, d_tech: int, weights: HeadWeights, spec: EnsembleSpec, *,
                     biological_only: bool) -> Scores:
    """Per-crop features [N × E, D] (crops() order) → ensembled scores [N, K]."""
    return mean_scores(score(features, d_tech, weights, biological_only=biological_only), spec)


@dataclass(frozen=True)
class Effects:
    """Variant effects for V variants × K conditions: ensembled ref and alt scores and their difference."""

    ref: Scores
    alt: Scores

    def delta(self, quantity: str) -> np.ndarray:
        """alt − ref of one of service.core.scoring.QUANTITIES, [V, K] float32."""
        return self.alt.quantity(quantity) - self.ref.quantity(quantity)

    def delta_features(self) -> tuple[np.ndarray, np.ndarray]:
        """alt − ref of the ensembled features: (f_bio [V, D_bio], f_tech [V, D_tech]), as their script stores
        `features_biological` / `features_technical`."""
        return self.alt.f_bio - self.ref.f_bio, self.alt.f_tech - self.ref.f_tech


def split_effects(scores: Scores, n_variants: int) -> Effects:
    """Ensembled scores of [refs; alts] (2V rows, refs first) → Effects."""
    return Effects(scores.rows(slice(0, n_variants)), scores.rows(slice(n_variants, 2 * n_variants)))
