"""Cross-cutting HTTP concerns, as one ASGI middleware in front of BentoML's API routes.

- Bearer-token auth (MFD_AUTH_TOKEN) before the body is even read; health, readiness and /metrics stay open
  so probes and Prometheus need no secret.
- Overload shedding: at most MFD_MAX_INFLIGHT scoring requests (HTTP and gRPC together) are admitted; the
  rest get 503 at once, before any work starts, so nothing is half-done and clients can retry elsewhere.
- Latency / in-flight / error metrics per endpoint.
- `GET /metadata` (BentoML API routes are POST-only) is served by rewriting it to the POST API, and the
  OpenAPI document is amended to show that and our error responses.
"""
from __future__ import annotations

import hmac
import json
import time
from typing import Any, Awaitable, Callable

from .errors import RequestError, overloaded, unauthorized
from .metrics import get_metrics
from .settings import Settings

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

SCORING = {"/predict": "predict", "/predict_variants": "predict_variants"}
PROTECTED = {**SCORING, "/metadata": "metadata"}


class InflightLimiter:
    """A non-blocking admission counter shared by the HTTP gate and the gRPC server (one event loop)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.current = 0

    def try_acquire(self) -> bool:
        if self.current >= self.limit:
            return False
        self.current += 1
        return True

    def release(self) -> None:
        self.current -= 1


_limiter: InflightLimiter | None = None


def limiter(settings: Settings) -> InflightLimiter:
    global _limiter
    if _limiter is None:
        _limiter = InflightLimiter(settings.max_inflight)
    return _limiter


def token_ok(settings: Settings, header: str | None) -> bool:
    """Constant-time check of `Authorization: Bearer <token>`; always true when auth is off."""
    if not settings.auth_token:
        return True
    if not header:
        return False
    scheme, _, value = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), settings.auth_token.encode())


async def send_error(send: Send, error: RequestError, extra_headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps(error.to_json()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               *extra_headers]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


ERROR_RESPONSES = {
    "401": "Missing or wrong bearer token (when MFD_AUTH_TOKEN is set)",
    "413": "Too many sequences/conditions or body too large; the error names the field",
    "422": "Invalid input; `error.field` names it and `error.allowed` lists valid values where known",
    "503": "Server busy (MFD_MAX_INFLIGHT requests in flight); nothing was computed, retry",
}


def amend_openapi(spec: dict[str, Any]) -> dict[str, Any]:
    """Document GET /metadata and our error shape on the scoring routes."""
    paths = spec.get("paths", {})
    for path, name in PROTECTED.items():
        post = paths.get(path, {}).get("post")
        if not post:
            continue
        responses = post.setdefault("responses", {})
        for status, text in ERROR_RESPONSES.items():
            if path == "/metadata" and status in ("413", "422"):
                continue
            responses[status] = {"description": text, "content": {"application/json": {"schema": {
                "type": "object", "properties": {"error": {"type": "object", "properties": {
                    "field": {"type": "string"}, "message": {"type": "string"},
                    "allowed": {"type": "array", "items": {}}}, "required": ["field", "message"]}}}}}}
        if path == "/metadata":
            get = {k: v for k, v in post.items() if k != "requestBody"}
            get["operationId"] = "metadata__get"
            paths[path]["get"] = get
    return spec


class GateMiddleware:
    def __init__(self, app: Callable[..., Awaitable[None]], settings: Settings | None = None):
        self.app = app
        self.settings = settings or Settings.from_env()
        self.backend = self.settings.backend

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        if path == "/docs.json" and scope.get("method") == "GET":
            return await self._openapi(scope, receive, send)
        endpoint = PROTECTED.get(path)
        if endpoint is None:
            return await self.app(scope, receive, send)
        if path == "/metadata" and scope.get("method") == "GET":
            scope = {**scope, "method": "POST",
                     "headers": [(k, v) for k, v in scope["headers"] if k not in (b"content-type", b"content-length")]
                     + [(b"content-type", b"application/json"), (b"content-length", b"2")]}
            receive = _fixed_body(b"{}", receive)
        metrics = get_metrics()
        start = time.perf_counter()
        headers = dict(scope.get("headers") or [])
        auth = headers.get(b"authorization")
        if not token_ok(self.settings, auth.decode("latin-1") if auth else None):
            metrics.errors.labels(endpoint, "unauthorized").inc()
            return await send_error(send, unauthorized(), [(b"www-authenticate", b"Bearer")])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.settings.max_body_bytes:
            metrics.errors.labels(endpoint, "too_large").inc()
            return await send_error(send, RequestError(
                "body", f"request body of {int(length)} bytes exceeds the limit of {self.settings.max_body_bytes}",
                status=413, kind="too_large"))
        admitted = endpoint not in SCORING.values() or limiter(self.settings).try_acquire()
        if not admitted:
            metrics.errors.labels(endpoint, "overloaded").inc()
            return await send_error(send, overloaded(self.settings.max_inflight), [(b"retry-after", b"1")])
        gauge = metrics.inflight.labels(endpoint)
        gauge.inc()
        try:
            await self.app(scope, receive, send)  # the handler counts its own errors
        finally:
            gauge.dec()
            if endpoint in SCORING.values():
                limiter(self.settings).release()
            metrics.request_latency.labels(endpoint, self.backend).observe(time.perf_counter() - start)

    async def _openapi(self, scope: Scope, receive: Receive, send: Send) -> None:
        start_message: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def capture(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start_message.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, capture)
        body = b"".join(chunks)
        if start_message.get("status") == 200:
            try:
                body = json.dumps(amend_openapi(json.loads(body))).encode()
            except ValueError:
                pass
        headers = [(k, v) for k, v in start_message.get("headers", []) if k != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": start_message.get("status", 500), "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _fixed_body(body: bytes, original: Receive) -> Receive:
    """A receive channel that yields `body` once, then defers to the real one (for disconnect detection)."""
    sent = {"done": False}

    async def receive() -> dict[str, Any]:
        if not sent["done"]:
            sent["done"] = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await original()

    return receive
