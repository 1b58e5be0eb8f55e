"""Service layer (api): `POST /attribute` over REST JSON: request and response schemas, body → Attributor → body.

The request names its windows and conditions exactly as /predict does (the same validators, limits and the
engine's one condition parser); `method`, `parts`, `window`, `steps` and `baseline` are checked by the engine's
Attributor (service.core.attribution) so every front door refuses the same values with the same messages.
The response nests per sequence, then per part, then per condition: `results[n].maps[part][k]` is the issue's
[L][4] map over bases A, C, G, T (L = the window's length), `results[n].score[part][k]` the sequence's score.
Arrays go to orjson as numpy arrays (checked finite by the Attributor), so a 2177 × 4 map costs no Python loop.
"""
from __future__ import annotations

from typing import Annotated, Any, Optional

import numpy as np
from pydantic import BaseModel, Field, model_validator

from mfd_common import tokens as dna

from ..core.attribution import AttributeOptions, attributor_for
from ..core.attributions import BASES, METHODS, PARTS, Attribution
from ..core.domain import Windows
from ..core.engine import Engine
from .json_api import JsonApi, conditions_json
from .schemas import (CONDITIONS_DOC, Condition, DnaSequence, Interval, ResolvedConditionOut, _Scoring, _Strict,
                      one_window_source)


class AttributionWindow(_Strict):
    """Positions [start, end) of each sequence to attribute (0-based, end exclusive); only those are mutated."""

    start: int = Field(description="First position (0-based).")
    end: int = Field(description="One past the last position; at most the window length.")


class AttributeRequest(_Scoring):
    """Per-base attribution maps of windows under conditions, for the logit and its biological / technical parts."""

    sequences: Optional[Annotated[list[DnaSequence], Field(min_length=1)]] = Field(
        None, description="DNA windows of exactly the model's length (A/C/G/T/N, any case).")
    sequence_ids: Optional[list[str]] = Field(None, description="Optional ids echoed in the results.")
    intervals: Optional[Annotated[list[Interval], Field(min_length=1)]] = Field(
        None, description="Genomic windows read from the server's FASTA (instead of `sequences`).")
    conditions: Annotated[list[Condition], Field(min_length=1)] = Field(description=CONDITIONS_DOC)
    method: str = Field("ism", description="`ism` (in-silico mutagenesis, any backend), `gradient_x_input` or "
                                           "`integrated_gradients` (embedded backend only; docs/attributions.md).",
                        json_schema_extra={"enum": list(METHODS)})
    parts: Optional[list[str]] = Field(None, description="Any of `logit`, `logit_bio`, `logit_tech` (default all).",
                                       json_schema_extra={"items": {"enum": list(PARTS)}})
    window: Optional[AttributionWindow] = Field(None, description="Attribute only these positions (ISM mutates "
                                                                  "only them: a 5% window costs about 5%).")
    reverse_complement: bool = Field(False, description="Score every (mutated) window on both strands and average, "
                                                        "as /predict's `reverse_complement`.")
    steps: Optional[int] = Field(None, description="integrated_gradients: Gauss–Legendre nodes (1–512, default 64).")
    baseline: str = Field("zero", description="integrated_gradients: `zero` (the all-N input) or `uniform`.")

    @model_validator(mode="after")
    def _one_source(self) -> "AttributeRequest":
        return one_window_source(self)

    def options(self) -> AttributeOptions:
        return AttributeOptions(self.method, self.parts, self.window, self.reverse_complement, self.steps,
                                self.baseline)


class AttributionResult(BaseModel):
    index: int
    id: str
    interval: Optional[Interval] = None
    sequence: str = Field(description="The window's bases (positions start … end − 1 of the sequence).")
    score: dict[str, list[float]] = Field(description="Per part, the sequence's score under each condition [K].")
    maps: dict[str, list[list[list[float]]]] = Field(
        description="Per part, [K][W][4] over bases A, C, G, T. ISM: score with that base − the sequence's score "
                    "(0 at the own base); gradient methods: the dinucleotide attribution projected onto bases.")
    baseline_score: Optional[dict[str, list[float]]] = Field(None, description="integrated_gradients only.")
    completeness_gap: Optional[dict[str, list[float]]] = Field(
        None, description="integrated_gradients only: Σ map − (score − baseline_score), the quadrature error.")


class AttributeResponse(BaseModel):
    model: str
    backend: str
    method: str
    parts: list[str]
    bases: str = BASES
    window: AttributionWindow
    reverse_complement: bool
    forward_passes: Optional[int] = Field(None, description="ISM: trunk passes spent.")
    conditions: list[ResolvedConditionOut]
    results: list[AttributionResult]


def attribute_payload(result: Attribution, windows: Windows, conditions: list, *, model: str, backend: str,
                      reverse_complement: bool) -> dict[str, Any]:
    """The /attribute body (AttributeResponse); numpy arrays left for orjson to write."""
    intervals = ([{"chrom": i.chrom, "start": i.start, "end": i.end, "id": i.id} for i in windows.intervals]
                 if windows.intervals is not None else [None] * len(windows.ids))
    results = []
    for n, (window_id, interval) in enumerate(zip(windows.ids, intervals)):
        arrays = {key: {part: np.ascontiguousarray(a) for part, a in by_part.items()}  # orjson: C order only
                  for key, by_part in result.for_sequence(n).items()}
        results.append({"index": n, "id": window_id, "interval": interval,
                        "sequence": dna.decode(result.tokens[n]), **arrays})
    details = result.details or {}
    return {"model": model, "backend": backend, "method": result.method, "parts": list(result.parts),
            "bases": BASES, "window": {"start": result.start, "end": result.end},
            "reverse_complement": reverse_complement, "forward_passes": details.get("forward_passes"),
            "conditions": conditions_json(conditions), "results": results}


class AttributeApi:
    """The /attribute front door of one Engine (its JsonApi parses; its Attributor computes)."""

    def __init__(self, engine: Engine, json: JsonApi | None = None):
        self.engine = engine
        self.json = json or JsonApi(engine)
        self.attributor = attributor_for(engine)

    async def attribute(self, request: AttributeRequest) -> dict[str, Any]:
        engine = self.engine
        windows, conditions = self.json.windows_and_conditions(request)
        result = await self.attributor.attribute(windows, conditions, request.options())
        return attribute_payload(result, windows, conditions, model=engine.name, backend=engine.backend.name,
                                 reverse_complement=request.reverse_complement)
