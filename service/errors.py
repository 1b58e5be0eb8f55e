"""Service layer (shared): client errors: one exception type that names the offending field, and its one JSON shape.

Every bad input, whatever layer finds it (schema, metadata codec, FASTA lookup, variant check), ends up as
`{"error": {"field": ..., "message": ..., "allowed": [...]}}` over HTTP and INVALID_ARGUMENT "field: message"
over gRPC, so clients can point at the exact value to fix. Stack traces never reach a client.
"""
from __future__ import annotations

from typing import Any, Sequence

#: Longest `allowed` list sent back; a genome's contig list can be huge.
MAX_ALLOWED_LISTED = 200
#: Longest field path / message sent back: both can quote client input (a 1 MB key or value), which an
#: error must not echo in full.
MAX_FIELD_CHARS = 200
MAX_MESSAGE_CHARS = 500


def truncate(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, saying how much was dropped."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


class RequestError(Exception):
    """A request the service refuses. `status` is the HTTP status; `kind` labels `mfd_errors_total`."""

    def __init__(self, field: str, message: str, allowed: Sequence[Any] | None = None, *,
                 status: int = 422, kind: str = "invalid_argument"):
        self.field = truncate(field, MAX_FIELD_CHARS)
        self.message = truncate(message, MAX_MESSAGE_CHARS)
        self.allowed = [truncate(a, MAX_FIELD_CHARS) if isinstance(a, str) else a
                        for a in list(allowed)[:MAX_ALLOWED_LISTED + 1]] if allowed is not None else None
        self.allowed_total = len(allowed) if allowed is not None else 0
        self.status = status
        self.kind = kind
        super().__init__(f"{self.field}: {self.message}")

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"field": self.field, "message": self.message}
        if self.allowed is not None:
            body["allowed"] = self.allowed[:MAX_ALLOWED_LISTED]
            if self.allowed_total > MAX_ALLOWED_LISTED:
                body["allowed_truncated"] = self.allowed_total
        return {"error": body}


def backend_unavailable() -> RequestError:
    return RequestError("backend", "the model backend is unavailable; retry later", status=503,
                        kind="backend_unavailable")


def deadline_exceeded(timeout_s: float) -> RequestError:
    return RequestError("request", f"not answered within the server's deadline of {timeout_s:g} s "
                        "(MFD_REQUEST_TIMEOUT_S); send fewer windows per call", status=504, kind="deadline_exceeded")


def internal() -> RequestError:
    return RequestError("server", "internal error; see the server log", status=500, kind="internal")


def backend_timeout() -> RequestError:
    return RequestError("backend", "the model backend did not answer in time; retry later", status=504,
                        kind="backend_timeout")


def backend_rejected(exc: BaseException) -> RequestError:
    return RequestError("backend", f"the model server refused the request: {exc}", status=422,
                        kind="invalid_argument")


def as_request_error(exc: BaseException) -> RequestError:
    """The one failure table for every transport: client errors keep their status; from the backend, a refused
    request is a 422 (gRPC INVALID_ARGUMENT), an outage or a missing model a 503 (UNAVAILABLE), a timeout a 504
    (DEADLINE_EXCEEDED); anything else a 500 (INTERNAL) that the caller must log."""
    from .backends.base import BackendRejected, BackendTimeout, BackendUnavailable

    if isinstance(exc, RequestError):
        return exc
    if isinstance(exc, BackendUnavailable):
        return backend_unavailable()
    if isinstance(exc, BackendTimeout):
        return backend_timeout()
    if isinstance(exc, BackendRejected):
        return backend_rejected(exc)
    return internal()


def unauthorized() -> RequestError:
    return RequestError("authorization", "missing or invalid bearer token", status=401, kind="unauthorized")


def overloaded(limit: int) -> RequestError:
    return RequestError("request", f"server busy: {limit} requests in flight; retry later",
                        status=503, kind="overloaded")


def field_path(loc: Sequence[Any]) -> str:
    """pydantic error location → `sequences[3]`, `conditions[0].biosample`, `intervals[2].end`."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in ("str", "dict[str,union[str,int,float,list[str],none]]", "function-after", "function-plain"):
            continue  # union branch labels, not fields
        else:
            path += f".{part}" if path else str(part)
    return path or "body"


def from_validation_error(exc: Any) -> RequestError:
    """Turn the first pydantic error into a RequestError (status and allowed values come from our validators)."""
    errors = exc.errors(include_url=False)
    # Prefer our own (mfd_*) errors: in a union they explain more than "input should be a string".
    ours = [e for e in errors if str(e.get("type", "")).startswith("mfd")]
    error = (ours or errors)[0]
    ctx = error.get("ctx") or {}
    loc = [p for p in error.get("loc", ()) if not (isinstance(p, str) and ("[" in p or p in ("str", "dict")))]
    return RequestError(
        str(ctx["field"]) if ctx.get("field") else field_path(loc),
        str(ctx.get("reason") or error.get("msg", "invalid value")),
        ctx.get("allowed"),
        status=int(ctx.get("status", 422)),
        kind=str(ctx.get("kind", "invalid_argument")),
    )
