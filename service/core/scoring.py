"""Features × condition weights → logits, their biological/technical decomposition and probabilities.

    logit_tech = f_tech · w_tech      logit_bio = f_bio · w_bio      logit = logit_bio + logit_tech + bias

`biological_only` reports the technical contribution *at the feature mean*: the trunk's features are
batch-normalised, so the mean of f_tech over the training windows is 0 and "technique at its average" is
exactly f_tech := 0. Then logit = logit_bio + bias and logit_tech = 0: the bias-free biological read-out the
paper uses, with the condition's technical metadata still chosen by the caller but contributing nothing.

The arithmetic mirrors `training.model.apply_condition_weights` (float32, same order), which the tests check.
Everything is whole-array numpy (two matmuls and a few elementwise ops per request, whatever N and K are):
both the JSON and the binary transports serialise these arrays directly.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mfd_common.numeric import sigmoid

from .backends.base import HeadWeights


@dataclass(frozen=True)
class Scores:
    """[N, K] float32 arrays, one row per window and one column per condition.

    `features` is the trunk's [N, D_tech + D_bio] output (technical first) the scores were computed from;
    `f_tech`/`f_bio` are views into it, for callers that return the embeddings (`return_features`).
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

