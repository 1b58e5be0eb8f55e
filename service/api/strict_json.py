"""Service layer (api): strict JSON in and out (RFC 8259), so pathological bodies are client errors and responses are
standard.

Python's `json` accepts `NaN`/`Infinity` literals, turns `1e999` into infinity, parses integers of any length
and recurses once per nesting level. Here a request body is refused, with a 4xx naming the reason, when it
- is not UTF-8 JSON (400) or nests deeper than MAX_DEPTH (400; MFD requests need 4 levels),
- holds text that is not Unicode: invalid UTF-8 bytes, or a lone surrogate escape such as `"\\ud800"` (400,
  naming the field that holds it; I-JSON, RFC 7493 §2.1, forbids both). Python's `json` would pass both on as
  strings that no encoder can write back, so they would otherwise fail far later, as a 500,
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

from ..errors import RequestError, truncate

MAX_DEPTH = 32
MAX_SAFE_INTEGER = 2**53 - 1
_OPENERS, _CLOSERS = np.frombuffer(b"[{", np.uint8), np.frombuffer(b"]}", np.uint8)
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
#: A `\uD800`–`\uDFFF` escape: a surrogate, usually half of a pair (fine); only then are strings inspected.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATES = re.compile("[\ud800-\udfff]")


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


def loads(body: bytes, *, max_depth: int = MAX_DEPTH, root: str = "") -> Any:
    """Parse a request body strictly; RequestError (4xx) on anything RFC 8259 / I-JSON or we refuse.

    Errors about the body as a whole name the field `body` (or `root`); text that is not Unicode names the
    path of the string holding it, below `root` (`conditions[0].biosample`, `CONDITIONS[2].lab`).
    """
    whole = root or "body"
    if not body.strip():
        raise RequestError(whole, "request body is empty; send a JSON object", status=400)
    # The depth scan runs on the bytes before parsing, so a 100k-deep body never reaches a recursive parser.
    # A body with at most max_depth opening brackets in all cannot nest deeper: most bodies (a few lists of long
    # sequences) skip the scan, whose string-stripping pass costs ~10 ms on a 256-window body.
    if body.count(b"[") + body.count(b"{") > max_depth and nesting_depth(body) > max_depth:
        raise RequestError(whole, f"JSON nests deeper than {max_depth} levels", status=400)
    try:
        text, bad_bytes = body.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        # Decoded anyway (bad bytes → U+DC80…U+DCFF), so the string that holds them can be named below.
        text, bad_bytes = body.decode("utf-8", "surrogateescape"), exc
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_int=_parse_int, parse_float=_parse_float)
    except RequestError as exc:
        raise RequestError(root or exc.field, exc.message, status=exc.status) from None
    except RecursionError:
        raise RequestError(whole, f"JSON nests deeper than {max_depth} levels", status=400) from None
    except ValueError as exc:
        if bad_bytes is not None:
            raise RequestError(whole, f"request body is not UTF-8 text: {_bad_bytes(bad_bytes)}",
                               status=400) from None
        raise RequestError(whole, f"request body is not valid JSON: {truncate(str(exc), 200)}", status=400) from None
    if bad_bytes is not None or _SURROGATE_ESCAPE.search(body):
        _refuse_non_unicode(value, root, bad_bytes)
    return value


def loads_value(raw: bytes, field: str) -> Any:
    """Parse one JSON value carried inside another wire format (a KServe parameter or tensor element, a
    command-line argument) with the body's rules; errors name `field` and speak of the value, not a body."""
    try:
        return loads(raw, root=field)
    except RequestError as exc:
        raise RequestError(exc.field, exc.message.replace("request body is ", ""), status=exc.status,
                           kind=exc.kind) from None


def condition_value(raw: bytes | str, field: str) -> Any:
    """A condition given as text (KServe CONDITIONS element, batch `--conditions` argument): strict JSON when it
    looks like JSON (`"ENCFF001"`, `{"track": …}`, `{"biosample": …}`), else a bare track id. The value then goes
    to the one condition parser, `service.core.conditions.ConditionResolver.parse`."""
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError(field, "conditions must be UTF-8 JSON") from None
    else:
        text, raw = raw, raw.encode("utf-8", "surrogatepass")
    if not text.lstrip().startswith(("{", "[", '"')):
        if _SURROGATES.search(text):
            raise RequestError(field, f"string \"{_shown(text, False)}\" holds a lone surrogate, which is not "
                               "Unicode text", status=400, kind="invalid_text")
        return text
    return loads_value(raw, field)


def _bad_bytes(exc: UnicodeDecodeError) -> str:
    return f"invalid UTF-8 byte 0x{exc.object[exc.start]:02x} at byte offset {exc.start}"


def _child(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _shown(text: str, raw_bytes: bool) -> str:
    """`text` printable in an error, itself valid UTF-8: undecodable bytes as `\\xff`, surrogates as `\\ud800`."""
    if raw_bytes:
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return truncate(text.encode("utf-8", "backslashreplace").decode("utf-8"), 60)


def _refuse_non_unicode(value: Any, root: str, bad_bytes: UnicodeDecodeError | None) -> None:
    """RequestError naming the first string (value or key) that holds a surrogate; iterative, no recursion."""
    reason = (f"is not UTF-8 text ({_bad_bytes(bad_bytes)})" if bad_bytes is not None else
              "holds a lone surrogate escape (\\ud800-\\udfff without its pair), which is not Unicode text")
    stack: list[tuple[str, Any]] = [(root, value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if _SURROGATES.search(item):
                raise RequestError(path or "body", f"string \"{_shown(item, bad_bytes is not None)}\" {reason}", status=400,
                                   kind="invalid_text")
        elif isinstance(item, dict):
            for key, child in reversed(list(item.items())):
                if _SURROGATES.search(key):
                    raise RequestError(path or "body", f"key \"{_shown(key, bad_bytes is not None)}\" {reason}", status=400,
                                       kind="invalid_text")
                stack.append((_child(path, key), child))
        elif isinstance(item, list):
            stack.extend((_child(path, i), child) for i, child in reversed(list(enumerate(item))))
    if bad_bytes is not None:  # every string decoded: the bad bytes sat outside strings (json refused those)
        raise RequestError(root or "body", f"request body is not UTF-8 text: {_bad_bytes(bad_bytes)}", status=400)


def dumps(payload: Any) -> bytes:
    """Compact RFC 8259 JSON; ValueError on NaN/Infinity anywhere in `payload`."""
    return json.dumps(payload, separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode()
