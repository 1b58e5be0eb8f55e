"""API layer (tables): service responses (the /predict and /predict_variants JSON) as pandas DataFrames.

One row per (window, condition) or (variant, condition), long format, so that `df.pivot(...)`, `groupby` and
seaborn work directly. The same converters serve the remote `Client` and, later, the in-process `Model`, so both
return identical tables. Indices (`window`, `variant`, `condition`) are positions in the caller's whole input,
not in the chunk a request carried.
"""
from __future__ import annotations

import json
from typing import Any, Sequence

import pandas as pd

SCORE_COLUMNS = ["probability", "logit", "logit_bio", "logit_tech", "bias"]
EFFECT_COLUMNS = ["ref_probability", "alt_probability", "ref_logit", "alt_logit", "delta_probability",
                  "delta_logit", "delta_logit_bio", "delta_logit_tech"]


def condition_name(condition: Any) -> str:
    """A readable label for a condition: the track id, or its metadata as compact `key=value` pairs."""
    if isinstance(condition, str):
        return condition
    if isinstance(condition, dict) and set(condition) == {"track"}:
        return str(condition["track"])
    if isinstance(condition, dict):
        return ",".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in condition.items())
    return str(condition)


def predict_rows(response: dict[str, Any], conditions: Sequence[Any], *, window_offset: int,
                 condition_offset: int) -> list[dict[str, Any]]:
    """Rows of one /predict response whose windows and conditions start at the given offsets of the input."""
    rows = []
    for result in response["results"]:
        interval = result.get("interval") or {}
        for score in result["scores"]:
            k = condition_offset + score["condition"]
            row = {"window": window_offset + result["index"], "id": result["id"]}
            if interval:
                row.update(chrom=interval["chrom"], start=interval["start"], end=interval["end"])
            row.update(condition=k, condition_name=condition_name(conditions[k]), track=score.get("track"))
            row.update({c: score[c] for c in SCORE_COLUMNS})
            rows.append(row)
    return rows


def variant_rows(response: dict[str, Any], conditions: Sequence[Any], *, variant_offset: int,
                 condition_offset: int) -> list[dict[str, Any]]:
    """Rows of one /predict_variants response, offsets as in `predict_rows`."""
    rows = []
    for result in response["results"]:
        for effect in result["effects"]:
            k = condition_offset + effect["condition"]
            row = {"variant": variant_offset + result["index"], "id": result["id"], "chrom": result["chrom"],
                   "pos": result["pos"], "ref": result["ref"], "alt": result["alt"], "condition": k,
                   "condition_name": condition_name(conditions[k]), "track": effect.get("track")}
            row.update({c: effect[c] for c in EFFECT_COLUMNS})
            rows.append(row)
    return rows


def frame(rows: list[dict[str, Any]], order: list[str]) -> pd.DataFrame:
    """Rows sorted by the input order (e.g. ["window", "condition"]), with a fresh 0..n-1 index."""
    df = pd.DataFrame(rows)
    return df.sort_values(order, kind="stable").reset_index(drop=True) if len(df) else df
