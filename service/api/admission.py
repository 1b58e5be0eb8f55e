"""Service layer (api): one front door for every call, HTTP and gRPC alike: auth, admission control, metrics and the
failure table.

- Bearer-token auth (MFD_AUTH_TOKEN), checked before a body is read; probes and /metrics never come here.
- Admission: at most MFD_MAX_INFLIGHT scoring calls (both transports together) run at once; the rest are
  refused at once (503 / UNAVAILABLE) before any work starts, so nothing is half-done and clients retry.
- Metrics: in-flight gauge, latency histogram and error counter per endpoint (names are a monitoring contract).
- Failures: whatever a handler raises leaves as a RequestError (`errors.as_request_error`), counted once and
  logged when it is ours, so each transport only maps RequestError → its status codes.

Everything runs on the worker's one event loop, so the in-flight counter needs no lock.
"""
from __future__ import annotations

import asyncio
import hmac
import logging
import time
from contextlib import asynccontextmanager
from typing import AsyncIterator

from ..errors import as_request_error, overloaded, unauthorized
from ..metrics import get_metrics
from ..settings import Settings

logger = logging.getLogger("mfd.service")


class ClientGone(Exception):
    """The HTTP client disconnected before its answer was ready; its work was cancelled."""


def token_ok(expected: str | None, header: str | None) -> bool:
    """Constant-time check of `Authorization: Bearer <token>`; always true when auth is off."""
    if not expected:
        return True
    if not header:
        return False
    scheme, _, value = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), expected.encode())


class Admission:
    def __init__(self, settings: Settings, backend: str):
        self.settings = settings
        self.backend = backend
        self.limit = settings.max_inflight
        self.inflight = 0

    @asynccontextmanager
    async def call(self, endpoint: str, authorization: str | None, *, scoring: bool = True) -> AsyncIterator[None]:
        """Authorize and admit one call; the body runs the handler. Raises RequestError for every failure."""
        metrics = get_metrics()
        if not token_ok(self.settings.auth_token, authorization):
            metrics.errors.labels(endpoint, "unauthorized").inc()
            raise unauthorized()
        if scoring:
            if self.inflight >= self.limit:
                metrics.errors.labels(endpoint, "overloaded").inc()
                raise overloaded(self.limit)
            self.inflight += 1
        gauge = metrics.inflight.labels(endpoint)
        gauge.inc()
        start = time.perf_counter()
        try:
            yield
        except (asyncio.CancelledError, ClientGone):
            metrics.errors.labels(endpoint, "cancelled").inc()
            raise
        except Exception as exc:  # noqa: BLE001 - mapped once here for both transports
            error = as_request_error(exc)
            if error.status == 500:
                logger.error("%s failed", endpoint, exc_info=exc)
            elif error.kind in ("backend_unavailable", "backend_timeout"):
                logger.warning("%s: %s", endpoint, exc)
            metrics.errors.labels(endpoint, error.kind).inc()
            raise error from None
        finally:
            if scoring:
                self.inflight -= 1
            gauge.dec()
            metrics.request_latency.labels(endpoint, self.backend).observe(time.perf_counter() - start)
