"""Service layer (api): the typed gRPC `mfd.v1.Predictor/Attribute`, the protobuf mirror of POST /attribute.

The message is turned into the JSON body it mirrors and validated by the same pydantic model
(`attribute_json.AttributeRequest`), so windows, conditions, methods, parts, windows and limits are refused with
the same fields and messages as over HTTP; the engine's `Attributor` computes. Proto3 has no "unset" for scalars:
an empty `method` means `ism`, `steps` 0 the default, an empty `baseline` `zero`, no `parts` all three, an unset
`window` the whole window. Maps travel as packed float32 [K, P, W, 4] per window (C order: condition, part as in
`parts`, position, base A, C, G, T): 4 bytes a value instead of JSON's ~12, for bulk callers.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .attribute_json import AttributeApi, AttributeRequest
from .proto import mfd_v1_pb2


def request_dict(request: Any) -> dict[str, Any]:
    """An mfd.v1.AttributeRequest as the /attribute JSON body it mirrors."""
    from .grpc_server import scoring_body

    data = scoring_body(request, method=request.method or "ism", reverse_complement=request.reverse_complement)
    if request.parts:
        data["parts"] = list(request.parts)
    if request.HasField("window"):
        data["window"] = {"start": request.window.start, "end": request.window.end}
    if request.steps:
        data["steps"] = request.steps
    if request.baseline:
        data["baseline"] = request.baseline
    return data


def attribute_message(body: dict[str, Any]) -> mfd_v1_pb2.AttributeResponse:
    """The typed response from the /attribute body (numpy arrays in-process): the same numbers, as float32."""
    parts = body["parts"]
    response = mfd_v1_pb2.AttributeResponse(model=body["model"], backend=body["backend"], method=body["method"],
                                            parts=parts, start=body["window"]["start"], end=body["window"]["end"],
                                            reverse_complement=body["reverse_complement"])
    for condition in body["conditions"]:
        entry = response.conditions.add(index=condition["index"], track=condition["track"] or "")
        entry.metadata.update(condition["metadata"])

    def stacked(by_part: dict[str, Any], axis: int) -> np.ndarray:
        return np.stack([np.asarray(by_part[p], dtype=np.float32) for p in parts], axis=axis)

    for result in body["results"]:
        out = response.results.add(index=result["index"], id=result["id"], sequence=result["sequence"])
        out.maps.extend(stacked(result["maps"], 1).ravel().tolist())          # [K, P, W, 4]
        out.score.extend(stacked(result["score"], 1).ravel().tolist())        # [K, P]
        if result.get("baseline_score") is not None:
            out.baseline_score.extend(stacked(result["baseline_score"], 1).ravel().tolist())
    return response


async def attribute(api: AttributeApi, request: Any) -> mfd_v1_pb2.AttributeResponse:
    parsed = api.json.parse(AttributeRequest, request_dict(request))
    return attribute_message(await api.attribute(parsed))
