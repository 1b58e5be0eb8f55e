"""Strict JSON in and out (RFC 8259), so pathological bodies are client errors and responses are standard.

Python's `json` accepts `NaN`/`Infinity` literals, turns `1e999` into infinity, parses integers of any length
and recurses once per nesting level. Here a request body is refused, with a 4xx naming the reason, when it
- is not UTF-8 JSON (400) or nests deeper than MAX_DEPTH (400; MFD requests need 4 levels),
- holds a NaN/Infinity literal or a number that is not finite as a double (422),
- holds an integer outside ±(2**53 - 1), the range JSON numbers keep exactly (I-JSON, RFC 7493) (422).
Responses are written with `allow_nan=False`: a non-finite number in a result raises instead of producing
non-standard JSON (the caller turns that into a logged 500, never into a malformed body).
"""
from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from .errors import RequestError, truncate

MAX_DEPTH = 32
MAX_SAFE_INTEGER = 2**53 - 1
_OPENERS, _CLOSERS = np.frombuffer(b"[{", np.uint8), np.frombuffer(b"]}", np.uint8)
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)


def _reject_constant(name: str) -> Any:
    raise RequestError("body", f"{name} is not a JSON number (RFC 8259 has no NaN or Infinity)")


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > 16 or abs(int(text)) > MAX_SAFE_INTEGER:
        raise RequestError("body", f"integer {truncate(text, 40)} is outside ±{MAX_SAFE_INTEGER} "
                           "(the range JSON keeps exactly)")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise RequestError("body", f"number {truncate(text, 40)} overflows a double")
    return value


def nesting_depth(body: bytes) -> int:
    """Deepest array/object nesting in `body`, brackets inside strings ignored (C-speed: regex + numpy)."""
    structural = np.frombuffer(_STRING.sub(b"", body), dtype=np.uint8)
    if structural.size == 0:
        return 0
    steps = np.isin(structural, _OPENERS).astype(np.int32) - np.isin(structural, _CLOSERS).astype(np.int32)
    return int(np.cumsum(steps).max(initial=0))


def loads(body: bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse a request body strictly; RequestError (4xx, field `body`) on anything RFC 8259 or we refuse."""
    if not body.strip():
        raise RequestError("body", "request body is empty; send a JSON object", status=400)
    # The depth scan runs on the bytes before parsing, so a 100k-deep body never reaches a recursive parser.
    if nesting_depth(body) > max_depth:
        raise RequestError("body", f"JSON nests deeper than {max_depth} levels", status=400)
    try:
        return json.loads(body, parse_constant=_reject_constant, parse_int=_parse_int, parse_float=_parse_float)
    except RequestError:
        raise
    except RecursionError:
        raise RequestError("body", f"JSON nests deeper than {max_depth} levels", status=400) from None
    except UnicodeDecodeError:
        raise RequestError("body", "request body is not UTF-8 text", status=400) from None
    except ValueError as exc:
        raise RequestError("body", f"request body is not valid JSON: {truncate(str(exc), 200)}", status=400) from None


def dumps(payload: Any) -> bytes:
    """Compact RFC 8259 JSON; ValueError on NaN/Infinity anywhere in `payload`."""
    return json.dumps(payload, separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode()
