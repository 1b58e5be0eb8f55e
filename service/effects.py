"""Shift × strand ensembling and variant effects (alt − ref): the arithmetic shared by /predict_variants and the
batch tool, so both report the same numbers.

The paper's gnomAD scoring (HealthML/MFD `predict_gnomad_variants.py`) reads each window a few positions longer
than the model's input, crops it at every offset 0 … shifts−1, scores each crop on both strands and averages:

    long window   [N, seq_len + shifts − 1] tokens
    crops         [N, shifts × strands, seq_len]   (crop i = long[:, i:i + seq_len]; strand 2 = its reverse complement)
    scores        [N, shifts × strands, K]  → mean over axis 1 → [N, K]

What is averaged is what they average: probabilities (the mean of the per-crop sigmoids, not the sigmoid of a mean)
and the logits, biological and technical logits. Logits are linear in the features, so their mean equals the score
of the mean features; probabilities are not, so every crop is scored. Their crops are one dinucleotide position
longer than the model input (the trunk tolerates it); ours are exactly `seq_len` bases, the evident intent.
With an odd number of shifts the middle crop is the plain, non-ensembled window centred on the variant.

An effect is (ensembled alt) − (ensembled ref) per quantity, as in their script.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mfd_common import tokens as dna

from .backends.base import HeadWeights
from .scoring import Scores, score

#: The paper's ensemble: 7 shifted crops × 2 strands.
PAPER_SHIFTS = 7
PAPER_STRANDS = 2
#: Upper bound on shifts: each shift multiplies the trunk work; beyond ~a dozen the crops stop adding information.
MAX_SHIFTS = 16

QUANTITIES = ("probability", "logit", "logit_bio", "logit_tech")


@dataclass(frozen=True)
class EnsembleSpec:
    """How many shifted crops and strands are averaged per window (1 × 1: the plain window)."""

    shifts: int = PAPER_SHIFTS
    strands: int = PAPER_STRANDS

    def __post_init__(self) -> None:
        if not 1 <= self.shifts <= MAX_SHIFTS:
            raise ValueError(f"shifts must be between 1 and {MAX_SHIFTS}, got {self.shifts}")
        if self.strands not in (1, 2):
            raise ValueError(f"strands must be 1 (forward) or 2 (forward and reverse complement), got {self.strands}")

    @property
    def size(self) -> int:
        """Windows scored per long window."""
        return self.shifts * self.strands

    def read_length(self, seq_len: int) -> int:
        """Bases to read per window so that every crop is `seq_len` long."""
        return seq_len + self.shifts - 1

    def to_json(self) -> dict[str, int]:
        return {"shifts": self.shifts, "strands": self.strands}


def encode_windows(sequences: list[str]) -> np.ndarray:
    """Reference-derived windows → uint8 [N, L]. IUPAC codes in a reference FASTA mean "unknown base" (N); the
    alleles spliced in were validated strictly before (service.schemas)."""
    return np.stack([dna.encode(s, ambiguous_as_n=True) for s in sequences])


def crops(long_tokens: np.ndarray, seq_len: int, spec: EnsembleSpec) -> np.ndarray:
    """uint8 [N, seq_len + shifts − 1] → [N × shifts × strands, seq_len], grouped per long window.

    Row order within a group: shift 0 forward, shift 0 reverse, shift 1 forward, … (strands inner).
    """
    n, length = long_tokens.shape
    if length != spec.read_length(seq_len):
        raise ValueError(f"long windows have {length} bases, expected {spec.read_length(seq_len)}")
    index = np.arange(spec.shifts)[:, None] + np.arange(seq_len)[None, :]     # [shifts, seq_len]
    forward = long_tokens[:, index]                                             # [N, shifts, seq_len]
    if spec.strands == 1:
        return forward.reshape(n * spec.shifts, seq_len)
    both = np.stack([forward, dna.reverse_complement(forward)], axis=2)         # [N, shifts, 2, seq_len]
    return both.reshape(n * spec.size, seq_len)


def mean_scores(scores: Scores, spec: EnsembleSpec) -> Scores:
    """Per-crop scores [N × E, K] → ensembled [N, K] (E = shifts × strands), averaging each quantity."""
    if spec.size == 1:
        return scores
    rows, k = scores.logit.shape
    def average(a: np.ndarray) -> np.ndarray:
        return a.reshape(rows // spec.size, spec.size, k).mean(axis=1, dtype=np.float64).astype(np.float32)
    return Scores(average(scores.probability), average(scores.logit), average(scores.logit_bio),
                  average(scores.logit_tech), scores.bias)


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
        """alt − ref of one of QUANTITIES, [V, K] float32."""
        return getattr(self.alt, quantity) - getattr(self.ref, quantity)

    def row_json(self, i: int, tracks: list[str | None]) -> list[dict[str, Any]]:
        """The per-condition effect dicts of variant `i` (the /predict_variants `effects` list)."""
        ref_p, alt_p = self.ref.probability[i].tolist(), self.alt.probability[i].tolist()
        ref_l, alt_l = self.ref.logit[i].tolist(), self.alt.logit[i].tolist()
        deltas = {q: self.delta(q)[i].tolist() for q in QUANTITIES}
        return [{"condition": k, "track": track,
                 "ref_probability": ref_p[k], "alt_probability": alt_p[k],
                 "ref_logit": ref_l[k], "alt_logit": alt_l[k],
                 "delta_probability": deltas["probability"][k], "delta_logit": deltas["logit"][k],
                 "delta_logit_bio": deltas["logit_bio"][k], "delta_logit_tech": deltas["logit_tech"][k]}
                for k, track in enumerate(tracks)]


def split_effects(scores: Scores, n_variants: int) -> Effects:
    """Ensembled scores of [refs; alts] (2V rows, refs first) → Effects."""
    def half(part: slice) -> Scores:
        return Scores(scores.probability[part], scores.logit[part], scores.logit_bio[part],
                      scores.logit_tech[part], scores.bias)
    return Effects(half(slice(0, n_variants)), half(slice(n_variants, 2 * n_variants)))
