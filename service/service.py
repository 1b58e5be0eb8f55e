"""Service layer (entry): the BentoML service: `bentoml serve service.service:MFDService` (HTTP on 3000, gRPC on
MFD_GRPC_PORT).

BentoML runs the process: workers, start-up/shutdown hooks, /livez, /readyz (our `__is_ready__`) and
/metrics. The HTTP API itself is the FastAPI app in `http_api.py`, mounted with the public
`@bentoml.asgi_app`; the gRPC servers (`grpc_server.py`) run in the same event loop. Both transports call one
Engine through one Admission (auth, in-flight limit, metrics, failure table).
"""
from __future__ import annotations

import gc
import logging
import os
import typing as t

import bentoml

from . import preflight
from .api.admission import Admission
from .api.http_api import FrontDoor, app, attach
from .core.engine import Engine
from .metrics import get_metrics

logger = logging.getLogger("mfd.service")
# Checked in BentoML's main process before any worker starts: a bad start-up ends it with one line, exit 2.
SETTINGS = preflight.settings_or_exit()
preflight.watch_workers()


def _cannot_start(exc: Exception) -> None:
    """A worker's start-up failed: have the whole server stop with one line (see service.preflight) rather than
    let BentoML restart this worker forever; a traceback only outside such a server."""
    message = f"{type(exc).__name__}: {exc}"
    if not preflight.worker_failed(message):
        raise exc
    logger.error("cannot start: %s", preflight.one_line(message))
    os._exit(preflight.EXIT_STATUS)


@bentoml.asgi_app(app, path="/")
@bentoml.service(
    name="mfd",
    # One worker per replica by default (scale with replicas); with MFD_WORKERS > 1 every worker runs its own
    # engine and gRPC server, sharing the gRPC port through SO_REUSEPORT, and MFD_MAX_INFLIGHT is per worker.
    workers=SETTINGS.workers,
    traffic={"timeout": SETTINGS.request_timeout_s},
    tracing={} if SETTINGS.tracing else {"excluded_urls": [".*"]},  # memory: see Settings.tracing
    # BentoML 1.4.40 swaps its internal client session every 100 requests / 300 s and drops calls in flight.
    runner_connection={"max_requests": 10**9, "max_age": 1e9},
    metrics={"enabled": True, "namespace": "bentoml_service"},
)
class MFDService:
    def __init__(self) -> None:
        self.settings = SETTINGS
        get_metrics()  # create our series now, after BentoML set up multiprocess metrics in this worker
        try:
            self.engine = Engine(self.settings)
        except Exception as exc:  # noqa: BLE001 - any failure here ends the server, see _cannot_start
            _cannot_start(exc)
        self.admission = Admission(self.settings, self.engine.backend.name)
        self.grpc_server: t.Any = None
        attach(self.engine, self.admission)

    @bentoml.on_startup
    async def _start(self) -> None:
        try:
            await self.engine.start()
        except Exception as exc:  # noqa: BLE001 - any failure here ends the server, see _cannot_start
            _cannot_start(exc)
        # Everything loaded so far (torch, the model, BentoML) lives as long as the process: move it out of the
        # cyclic GC's reach, so full collections under load scan only request garbage (shorter pauses).
        gc.collect()
        gc.freeze()
        if self.settings.grpc_port:
            from .api.grpc_server import start_grpc_server

            self.grpc_server = await start_grpc_server(self.engine, self.admission, self.settings.grpc_host,
                                                       self.settings.grpc_port)
        logger.info("mfd service ready: model %s, backend %s", self.engine.card.model_name, self.engine.backend.name)

    @bentoml.on_shutdown
    async def _stop(self) -> None:
        if self.grpc_server is not None:
            # As long as HTTP's drain: in-flight RPCs get the request deadline to finish (returns at once when idle).
            await self.grpc_server.stop(grace=self.settings.request_timeout_s)
        await self.engine.close()

    async def __is_ready__(self) -> bool:
        """/readyz: false while the backend cannot serve (Triton down), so Kubernetes stops routing here."""
        return await self.engine.backend.ready()


MFDService.add_asgi_middleware(FrontDoor)
