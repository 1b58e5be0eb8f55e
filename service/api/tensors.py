"""Service layer (api): KServe v2 tensors ↔ the engine's arrays for the binary inference path (no per-base strings, no
JSON on the hot path).

Request (model `mfd`), windows as exactly one of:
  TOKENS     UINT8 [N, L]   base codes A=0 C=1 G=2 T=3 N=4 (mfd_common.tokens), L = the model card's seq_len
  SEQUENCES  BYTES [N]      raw ASCII windows (A/C/G/T/N, any case), each exactly L long
and the conditions once per request, as either
  CONDITIONS BYTES [K]      one JSON value per condition ("ENCFF001", {"track": …}, {"biosample": …, …};
                            a bare non-JSON string is a track id), or
  parameter `conditions`    string: a JSON array of the same values.
Parameters (bool): biological_only, reverse_complement, return_features (adds the feature outputs).
Outputs, FP32, in raw_output_contents: PROBABILITY, LOGIT, LOGIT_BIO, LOGIT_TECH [N, K];
FEATURES_BIO [N, D_bio], FEATURES_TECH [N, D_tech] (requested by name or with return_features).

Both window forms are decoded with whole-buffer numpy operations: a raw BYTES tensor of N equal-length
windows is N × (4-byte length + L bytes), which reshapes to [N, 4 + L] and goes through one table lookup.
Errors are RequestErrors naming the tensor (`TOKENS[3]`, `SEQUENCES[1]`, `CONDITIONS[0].lab`) with the same
messages and statuses as the JSON API.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from tritonclient.grpc import service_pb2

from mfd_common import tokens as dna

from ..core.domain import ScoreOptions
from ..core.scoring import QUANTITIES, Scores
from ..errors import RequestError
from . import strict_json

#: Output tensor → the `Scores` attribute it carries: the score quantities (by default), then the features.
SCORE_OUTPUTS = tuple(q.upper() for q in QUANTITIES)
FEATURE_OUTPUTS = ("FEATURES_BIO", "FEATURES_TECH")
OUTPUT_OF = {**{q.upper(): q for q in QUANTITIES}, **dict(zip(FEATURE_OUTPUTS, ("f_bio", "f_tech")))}
WINDOW_INPUTS = ("TOKENS", "SEQUENCES")
INPUTS = ("SEQUENCES", "CONDITIONS", "TOKENS")
BOOL_PARAMETERS = ("biological_only", "reverse_complement", "return_features")
CONDITIONS_PARAMETER = "conditions"
ALPHABET = list(dna.ALPHABET)


@dataclass(frozen=True)
class InferInputs:
    """A decoded, validated ModelInferRequest (conditions still as decoded values for the ConditionResolver)."""

    tokens: np.ndarray  # uint8 [N, L]
    conditions: list[Any]
    options: ScoreOptions
    outputs: tuple[str, ...]


def _too_many(field: str, count: int, limit: int) -> RequestError:
    return RequestError(field, f"{count} items exceed this server's limit of {limit} per request "
                        "(split the request)", status=413, kind="too_large")


def _bytes_items(name: str, tensor, buffer: bytes | None) -> list[bytes]:
    """The elements of a BYTES tensor (4-byte little-endian length + bytes each, or `bytes_contents`)."""
    if buffer is None:
        items = list(tensor.contents.bytes_contents)
    else:
        items, offset = [], 0
        view = memoryview(buffer)
        while offset < len(view):
            if offset + 4 > len(view):
                raise RequestError(name, "malformed BYTES tensor: truncated length prefix")
            size = int.from_bytes(view[offset:offset + 4], "little")
            if offset + 4 + size > len(view):
                raise RequestError(name, "malformed BYTES tensor: element runs past the buffer")
            items.append(bytes(view[offset + 4:offset + 4 + size]))
            offset += 4 + size
    if len(items) != tensor.shape[0]:
        raise RequestError(name, f"shape says {tensor.shape[0]} elements, got {len(items)}")
    return items


def decode_tokens(tensor, buffer: bytes | None, seq_len: int) -> np.ndarray:
    """TOKENS UINT8 [N, L] → uint8 codes, checked against the alphabet and the window length."""
    if tensor.datatype != "UINT8":
        raise RequestError("TOKENS", f"datatype must be UINT8, got {tensor.datatype}")
    shape = list(tensor.shape)
    if len(shape) != 2 or shape[1] != seq_len:
        raise RequestError("TOKENS", f"shape must be [n, {seq_len}] (the model's window length), got {shape}")
    if buffer is not None:
        codes = np.frombuffer(buffer, dtype=np.uint8)
    else:  # KServe carries UINT8 in uint_contents when not raw
        codes = np.asarray(tensor.contents.uint_contents, dtype=np.uint32)
        if codes.size and codes.max() > 255:
            raise RequestError("TOKENS", "UINT8 values must be 0-255")
        codes = codes.astype(np.uint8)
    if codes.size != shape[0] * shape[1]:
        raise RequestError("TOKENS", f"shape {shape} needs {shape[0] * shape[1]} bytes, got {codes.size}")
    codes = codes.reshape(shape[0], shape[1])
    bad = dna.first_invalid(codes)
    if bad is not None:
        row, position = bad
        raise RequestError(f"TOKENS[{row}]", f"invalid token {int(codes[row, position])} at position {position} "
                           "(codes: A=0, C=1, G=2, T=3, N=4)", list(range(dna.N_CODE + 1)))
    return codes


def decode_sequences(tensor, buffer: bytes | None, seq_len: int) -> np.ndarray:
    """SEQUENCES BYTES [N] → uint8 codes [N, L]; a fully vectorised fast path when every window has length L."""
    if tensor.datatype != "BYTES":
        raise RequestError("SEQUENCES", f"datatype must be BYTES, got {tensor.datatype}")
    if len(tensor.shape) != 1:
        raise RequestError("SEQUENCES", f"shape must be [n], got {list(tensor.shape)}")
    n = int(tensor.shape[0])
    if buffer is not None and n and len(buffer) == n * (4 + seq_len):
        block = np.frombuffer(buffer, dtype=np.uint8).reshape(n, 4 + seq_len)
        prefixes = block[:, :4].copy().view("<u4").reshape(-1)
        if np.all(prefixes == seq_len):
            codes = dna.encode_ascii(block[:, 4:])
            bad = dna.first_invalid(codes)
            if bad is None:
                return codes
    # General path (ragged or invalid input): per-window checks, to name the first bad window exactly.
    items = _bytes_items("SEQUENCES", tensor, buffer)
    rows = []
    for i, item in enumerate(items):
        codes = dna.encode_ascii(np.frombuffer(item, dtype=np.uint8))
        bad = np.flatnonzero(codes == dna.INVALID_CODE)
        if bad.size:
            position = int(bad[0])
            letter = chr(item[position]) if item[position] < 128 else f"\\x{item[position]:02x}"
            raise RequestError(f"SEQUENCES[{i}]", str(dna.InvalidSequenceError(position, letter)), ALPHABET)
        if codes.size != seq_len:
            raise RequestError(f"SEQUENCES[{i}]", f"sequence length {codes.size} must equal the model's window "
                               f"length {seq_len}")
        rows.append(codes)
    return np.stack(rows) if rows else np.zeros((0, seq_len), dtype=np.uint8)


def _bool_parameters(request) -> dict[str, bool]:
    values: dict[str, bool] = {}
    for name, param in request.parameters.items():
        if name not in BOOL_PARAMETERS:
            continue  # tritonclient adds its own (e.g. sequence/priority); ignore unknown ones
        if param.WhichOneof("parameter_choice") != "bool_param":
            raise RequestError(f"parameters.{name}", "must be a bool parameter")
        values[name] = param.bool_param
    return values


def _conditions(request, tensors: dict[str, Any], raw: dict[str, bytes | None]) -> list[Any]:
    param = request.parameters.get(CONDITIONS_PARAMETER) if CONDITIONS_PARAMETER in request.parameters else None
    if "CONDITIONS" in tensors and param is not None:
        raise RequestError("CONDITIONS", "give the conditions as the CONDITIONS tensor or the `conditions` "
                           "parameter, not both")
    if param is not None:
        if param.WhichOneof("parameter_choice") != "string_param":
            raise RequestError("parameters.conditions", "must be a string parameter holding a JSON array")
        values = strict_json.loads_value(param.string_param.encode("utf-8"), "parameters.conditions")
        if not isinstance(values, list):
            raise RequestError("parameters.conditions", "must be a JSON array of conditions")
        return values
    if "CONDITIONS" not in tensors:
        raise RequestError("CONDITIONS", "input is required (or the `conditions` parameter)", list(INPUTS))
    tensor = tensors["CONDITIONS"]
    if tensor.datatype != "BYTES":
        raise RequestError("CONDITIONS", f"datatype must be BYTES, got {tensor.datatype}")
    if len(tensor.shape) != 1:
        raise RequestError("CONDITIONS", f"shape must be [k], got {list(tensor.shape)}")
    return [strict_json.condition_value(item, f"CONDITIONS[{i}]")
            for i, item in enumerate(_bytes_items("CONDITIONS", tensor, raw["CONDITIONS"]))]


def decode_request(request, *, seq_len: int, max_sequences: int, max_conditions: int) -> InferInputs:
    """Validate and decode a ModelInferRequest's inputs (model name/version are the servicer's business)."""
    raw_buffers = list(request.raw_input_contents)
    if raw_buffers and len(raw_buffers) != len(request.inputs):
        raise RequestError("raw_input_contents", "one raw buffer per input is required")
    tensors: dict[str, Any] = {}
    raw: dict[str, bytes | None] = {}
    for i, tensor in enumerate(request.inputs):
        if tensor.name not in INPUTS:
            raise RequestError(tensor.name, "unknown input", list(INPUTS))
        if tensor.name in tensors:
            raise RequestError(tensor.name, "input given twice")
        tensors[tensor.name] = tensor
        raw[tensor.name] = raw_buffers[i] if raw_buffers else None
    raw.setdefault("CONDITIONS", None)
    given = [name for name in WINDOW_INPUTS if name in tensors]
    if len(given) != 1:
        raise RequestError("SEQUENCES", "give exactly one of the TOKENS or SEQUENCES inputs", list(WINDOW_INPUTS))
    window_input = given[0]
    count = int(tensors[window_input].shape[0]) if tensors[window_input].shape else 0
    if count > max_sequences:
        raise _too_many(window_input, count, max_sequences)
    if window_input == "TOKENS":
        window_tokens = decode_tokens(tensors["TOKENS"], raw["TOKENS"], seq_len)
    else:
        window_tokens = decode_sequences(tensors["SEQUENCES"], raw["SEQUENCES"], seq_len)
    if window_tokens.shape[0] == 0:
        raise RequestError(window_input, "at least one window is required")
    conditions = _conditions(request, tensors, raw)
    if not conditions:
        raise RequestError("CONDITIONS", "at least one condition is required")
    if len(conditions) > max_conditions:
        raise _too_many("CONDITIONS", len(conditions), max_conditions)
    params = _bool_parameters(request)
    requested = tuple(o.name for o in request.outputs)
    for name in requested:
        if name not in OUTPUT_OF:
            raise RequestError("outputs", f"unknown output {name!r}", list(OUTPUT_OF))
    outputs = requested or (tuple(OUTPUT_OF) if params.get("return_features") else SCORE_OUTPUTS)
    options = ScoreOptions(params.get("biological_only", False), params.get("reverse_complement", False))
    return InferInputs(window_tokens, conditions, options, outputs)


def encode_response(scores: Scores, outputs: tuple[str, ...], *, model_name: str, model_version: str,
                    request_id: str) -> service_pb2.ModelInferResponse:
    """FP32 tensors in raw_output_contents (little-endian, row-major), in the order they were requested."""
    response = service_pb2.ModelInferResponse(model_name=model_name, model_version=model_version, id=request_id)
    for name in outputs:
        array = np.ascontiguousarray(getattr(scores, OUTPUT_OF[name]), dtype="<f4")
        response.outputs.add(name=name, datatype="FP32", shape=array.shape)
        response.raw_output_contents.append(array.tobytes())
    return response
