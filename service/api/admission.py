"""Service layer (api): one front door for every call, HTTP and gRPC alike: auth, admission control, metrics and the
failure table.

- Bearer-token auth (MFD_AUTH_TOKEN), checked before a body is read; probes and /metrics never come here.
- Admission: at most MFD_MAX_INFLIGHT scoring calls (both transports together) run at once; the rest are
  refused at once (503 / UNAVAILABLE) before any work starts, so nothing is half-done and clients retry.
- Metrics: in-flight gauge, latency histogram and error counter per endpoint and model (names are a monitoring
  contract). The model is known only once the handler has routed the request: it tells its `Call`
  (`routed(name)`, or `call.route_to(name)`); until then, and for requests that never name a served model, `model=""`.
- Failures: whatever a handler raises leaves as a RequestError (`errors.as_request_error`), counted once and
  logged when it is ours, so each transport only maps RequestError → its status codes.

Everything runs on the worker's one event loop, so the in-flight counter needs no lock.
"""
from __future__ import annotations

import asyncio
import contextvars
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


class Call:
    """One admitted call: which model its metrics are labelled with (see `Admission.call`)."""

    def __init__(self, endpoint: str, gauge_of):
        self.endpoint = endpoint
        self.model = ""
        self._gauge_of = gauge_of
        self.gauge = gauge_of("")

    def route_to(self, model: str) -> None:
        """The request was routed to served model `model`: its in-flight count and later series carry it."""
        if model == self.model:
            return
        self.gauge.dec()
        self.model = model
        self.gauge = self._gauge_of(model)
        self.gauge.inc()


_CURRENT: contextvars.ContextVar[Call | None] = contextvars.ContextVar("mfd_admitted_call", default=None)


def routed(model: str) -> None:
    """Label the call being handled (in this task) with served model `model` (see `Call.route_to`); a no-op
    outside an admitted call (e.g. the batch tool)."""
    call = _CURRENT.get()
    if call is not None:
        call.route_to(model)


class Admission:
    def __init__(self, settings: Settings, backend: str):
        self.settings = settings
        self.backend = backend
        self.limit = settings.max_inflight
        self.inflight = 0

    @asynccontextmanager
    async def call(self, endpoint: str, authorization: str | None, *, scoring: bool = True) -> AsyncIterator[Call]:
        """Authorize and admit one call; the body runs the handler (and routes the `Call` it gets to its model).
        Raises RequestError for every failure."""
        metrics = get_metrics()
        if not token_ok(self.settings.auth_token, authorization):
            metrics.errors.labels(endpoint, "unauthorized", "").inc()
            raise unauthorized()
        if scoring:
            if self.inflight >= self.limit:
                metrics.errors.labels(endpoint, "overloaded", "").inc()
                raise overloaded(self.limit)
            self.inflight += 1
        call = Call(endpoint, lambda model: metrics.inflight.labels(endpoint, model))
        call.gauge.inc()
        token = _CURRENT.set(call)
        start = time.perf_counter()
        try:
            yield call
        except (asyncio.CancelledError, ClientGone):
            metrics.errors.labels(endpoint, "cancelled", call.model).inc()
            raise
        except Exception as exc:  # noqa: BLE001 - mapped once here for both transports
            error = as_request_error(exc)
            if error.status == 500:
                logger.error("%s failed", endpoint, exc_info=exc)
            elif error.kind in ("backend_unavailable", "backend_timeout"):
                logger.warning("%s: %s", endpoint, exc)
            metrics.errors.labels(endpoint, error.kind, call.model).inc()
            raise error from None
        finally:
            _CURRENT.reset(token)
            if scoring:
                self.inflight -= 1
            call.gauge.dec()
            metrics.request_latency.labels(endpoint, self.backend, call.model).observe(time.perf_counter() - start)
