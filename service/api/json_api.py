"""Score arrays → the JSON response body of /predict (and the typed gRPC mirror).

The format is fixed (one object per window and condition, see schemas.PredictResponse); what this module
does is build it from whole arrays: one `tolist()` per array, then a single comprehension that zips rows
with per-condition constants, and `dumps` through orjson. No scoring or per-window numpy work happens here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from .conditions import ResolvedCondition
from .scoring import Scores


@dataclass(frozen=True)
class Prediction:
    """Everything a transport needs to answer a predict call: the conditions as understood, window ids,
    the intervals they came from (None for sequences) and the [N, K] score arrays (with the features)."""

    conditions: list[ResolvedCondition]
    ids: list[str]
    intervals: list[dict[str, Any]] | None
    scores: Scores


def dumps(payload: Any) -> bytes:
    """Compact JSON through orjson, for payloads built by `predict_payload` (which checked every number is finite:
    orjson would write NaN/Infinity as `null`, silently changing a result, where RFC 8259 has no such numbers)."""
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)


def require_finite(scores: Scores, *, with_features: bool) -> None:
    """Refuse (as a server error) to answer with a non-finite score rather than let JSON encoding hide it."""
    arrays = [scores.probability, scores.logit, scores.logit_bio, scores.logit_tech, scores.bias]
    if with_features and scores.features is not None:
        arrays.append(scores.features)
    if not all(np.isfinite(a).all() for a in arrays):
        raise ArithmeticError("the model produced non-finite scores")


def predict_payload(prediction: Prediction, *, model: str, backend: str, biological_only: bool,
                    reverse_complement: bool, return_features: bool = False) -> dict[str, Any]:
    s = prediction.scores
    require_finite(s, with_features=return_features)
    resolved = prediction.conditions
    columns = [(k, c.track, b) for k, c, b in zip(range(len(resolved)), resolved, s.bias.tolist())]
    rows = zip(s.probability.tolist(), s.logit.tolist(), s.logit_bio.tolist(), s.logit_tech.tolist())
    intervals = prediction.intervals or [None] * len(prediction.ids)
    results = [
        {"index": n, "id": window_id, "interval": interval,
         "scores": [{"condition": k, "track": track, "probability": p, "logit": lo, "logit_bio": bi,
                     "logit_tech": te, "bias": bias}
                    for (k, track, bias), p, lo, bi, te in zip(columns, prob, logit, bio, tech)]}
        for n, (window_id, interval, (prob, logit, bio, tech)) in enumerate(zip(prediction.ids, intervals, rows))
    ]
    if return_features:
        for result, f_bio, f_tech in zip(results, s.f_bio.tolist(), s.f_tech.tolist()):
            result["f_bio"] = f_bio
            result["f_tech"] = f_tech
    return {"model": model, "backend": backend, "biological_only": biological_only,
            "reverse_complement": reverse_complement,
            "conditions": [c.to_json(k) for k, c in enumerate(resolved)], "results": results}

