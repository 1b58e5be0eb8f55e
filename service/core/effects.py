"""Service layer (scoring): shift × strand ensembling and variant effects (alt − ref), the arithmetic shared by
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

from .backends.base import HeadWeights
from .scoring import Scores, score

#: The paper's ensemble: 7 shifted crops × 2 strands.
PAPER_SHIFTS = 7
PAPER_STRANDS = 2
#: Upper bound on shifts: each shift multiplies the trunk work; beyond ~a dozen the crops stop adding information.
MAX_SHIFTS = 16

QUANTITIES = ("probability", "logit", "logit_bio", "logit_tech")

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
    alleles spliced in were validated strictly before (service.schemas)."""
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
    if spec.size == 1:
        return scores
    return mean_groups(scores, spec.size)


def mean_groups(scores: Scores, size: int) -> Scores:
    """Scores of consecutive groups of `size` rows → their means (float64 accumulation, float32 out)."""
    def average(a: np.ndarray) -> np.ndarray:
        rows = a.shape[0]
        return a.reshape(rows // size, size, *a.shape[1:]).mean(axis=1, dtype=np.float64).astype(np.float32)
    features = None if scores.features is None else average(scores.features)
    return Scores(average(scores.probability), average(scores.logit), average(scores.logit_bio),
                  average(scores.logit_tech), scores.bias, features, scores.d_tech)


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

    def delta_features(self) -> tuple[np.ndarray, np.ndarray]:
        """alt − ref of the ensembled features: (f_bio [V, D_bio], f_tech [V, D_tech]), as their script stores
        `features_biological` / `features_technical`."""
        return self.alt.f_bio - self.ref.f_bio, self.alt.f_tech - self.ref.f_tech

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
        features = None if scores.features is None else scores.features[part]
        return Scores(scores.probability[part], scores.logit[part], scores.logit_bio[part],
                      scores.logit_tech[part], scores.bias, features, scores.d_tech)
    return Effects(half(slice(0, n_variants)), half(slice(n_variants, 2 * n_variants)))
