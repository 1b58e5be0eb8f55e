"""Service layer (core): features × condition weights → logits, their biological/technical split, probabilities.

    logit_tech = f_tech · w_tech      logit_bio = f_bio · w_bio      logit = logit_bio + logit_tech + bias

`biological_only` reports the technical contribution *at the feature mean*: the trunk's features are
batch-normalised, so the mean of f_tech over the training windows is 0 and "technique at its average" is
exactly f_tech := 0. Then logit = logit_bio + bias and logit_tech = 0: the bias-free biological read-out the
paper uses, with the condition's technical metadata still chosen by the caller but contributing nothing.

The arithmetic mirrors `training.model.apply_condition_weights` (float32, same order), which the tests check.
Everything is whole-array numpy (two matmuls and a few elementwise ops per request, whatever N and K are).

`Scores` is the one result type of the engine: every front door (REST JSON, typed gRPC, KServe tensors, the batch
tool) serialises from its arrays, and `QUANTITIES` is the one list of the per-condition score quantities.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from mfd_common.numeric import sigmoid

from ..backends.base import HeadWeights

#: The per-window, per-condition quantities, in the order every front door lists them (`bias` is per condition).
QUANTITIES = ("probability", "logit", "logit_bio", "logit_tech")


@dataclass(frozen=True)
class Scores:
    """[N, K] float32 arrays, one row per window and one column per condition, and the bias [K].

    `features` is the trunk's [N, D_tech + D_bio] output (technical first) the scores were computed from (None when
    not kept); `f_tech`/`f_bio` are views into it, for callers that return the embeddings (`return_features`).
    """

    probability: np.ndarray
    logit: np.ndarray
    logit_bio: np.ndarray
    logit_tech: np.ndarray
    bias: np.ndarray  # [K]
    features: np.ndarray | None = None
    d_tech: int = 0

    @property
    def f_tech(self) -> np.ndarray:
        assert self.features is not None
        return self.features[:, :self.d_tech]

    @property
    def f_bio(self) -> np.ndarray:
        assert self.features is not None
        return self.features[:, self.d_tech:]

    def quantity(self, name: str) -> np.ndarray:
        """One of QUANTITIES by name, [N, K]."""
        return getattr(self, name)

    def rows(self, part: slice) -> "Scores":
        """The windows `part` (a view; the bias is shared)."""
        features = None if self.features is None else self.features[part]
        return replace(self, probability=self.probability[part], logit=self.logit[part],
                       logit_bio=self.logit_bio[part], logit_tech=self.logit_tech[part], features=features)

    def mean_groups(self, size: int) -> "Scores":
        """Consecutive groups of `size` rows → their means, every quantity and the features averaged on its own
        (float64 accumulation, float32 out): probabilities are the mean of the sigmoids, not the sigmoid of a mean."""
        if size == 1:
            return self

        def average(a: np.ndarray) -> np.ndarray:
            return a.reshape(a.shape[0] // size, size, *a.shape[1:]).mean(axis=1, dtype=np.float64).astype(np.float32)

        features = None if self.features is None else average(self.features)
        return replace(self, probability=average(self.probability), logit=average(self.logit),
                       logit_bio=average(self.logit_bio), logit_tech=average(self.logit_tech), features=features)

    def require_finite(self, *, with_features: bool) -> None:
        """Refuse (as a server error) to answer with a non-finite score rather than let an encoder hide it (JSON
        has no NaN; orjson would write `null`)."""
        arrays = [self.probability, self.logit, self.logit_bio, self.logit_tech, self.bias]
        if with_features and self.features is not None:
            arrays.append(self.features)
        if not all(np.isfinite(a).all() for a in arrays):
            raise ArithmeticError("the model produced non-finite scores")


def score(features: np.ndarray, d_tech: int, weights: HeadWeights, *, biological_only: bool = False) -> Scores:
    features = np.asarray(features, dtype=np.float32)
    logit_bio = features[:, d_tech:] @ weights.w_bio.T
    if biological_only:
        logit_tech = np.zeros_like(logit_bio)
    else:
        logit_tech = features[:, :d_tech] @ weights.w_tech.T
    logit = logit_bio + logit_tech
    logit += weights.bias[None, :]
    return Scores(sigmoid(logit), logit, logit_bio, logit_tech, weights.bias, features, d_tech)
