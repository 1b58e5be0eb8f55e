"""The BentoML service: `bentoml serve service.service:MFDService` (HTTP on 3000, gRPC on MFD_GRPC_PORT).

HTTP API (JSON; OpenAPI at /docs.json, UI at /):
  POST /predict            windows (sequences or FASTA intervals) × conditions → probability, logit, bio/tech logits
  POST /predict_variants   chrom/pos/ref/alt × conditions → alt − ref effects
  GET  /metadata           vocabularies, trained tracks, limits (also POST, as BentoML routes are POST-only)
  GET  /metrics            BentoML's bentoml_service_* series and our mfd_* series

Request bodies are parsed by the Engine (not by BentoML's own validation) so that every bad input comes back
as `{"error": {"field", "message", "allowed"}}` with a 4xx status instead of BentoML's generic 400 format;
the pydantic models are still the input specs, so OpenAPI documents them fully.
"""
from __future__ import annotations

import logging
import typing as t

import bentoml
from _bentoml_sdk.io_models import IOMixin
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .backends import BackendUnavailable
from .engine import Engine
from .errors import RequestError
from .gate import GateMiddleware
from .metrics import get_metrics
from .responses import dumps
from .schemas import MetadataResponse, PredictRequest, PredictResponse, VariantRequest, VariantResponse
from .settings import Settings

logger = logging.getLogger("mfd.service")
SETTINGS = Settings.from_env()


class RawBody:
    """The undecoded request body; the Engine validates it with the model's context (seq_len, limits)."""

    def __init__(self, body: bytes):
        self.body = body


class _RawBodyMixin(IOMixin):
    @classmethod
    async def from_http_request(cls, request: Request, serde: t.Any) -> t.Any:  # type: ignore[override]
        return RawBody(await request.body())


class PredictBody(_RawBodyMixin, PredictRequest):
    """Input spec of /predict: documented as PredictRequest, parsed by the Engine."""


class VariantBody(_RawBodyMixin, VariantRequest):
    """Input spec of /predict_variants: documented as VariantRequest, parsed by the Engine."""


def json_response(payload: t.Any, status: int = 200) -> Response:
    return Response(dumps(payload), status_code=status, media_type="application/json")


@bentoml.service(
    name="mfd",
    # One worker per replica by default (scale with replicas); with MFD_WORKERS > 1 every worker runs its own
    # engine and gRPC server, sharing the gRPC port through SO_REUSEPORT, and MFD_MAX_INFLIGHT is per worker.
    workers=SETTINGS.workers,
    traffic={"timeout": 300},
    # BentoML 1.4.40 swaps its internal client session every 100 requests / 300 s and drops calls in flight.
    runner_connection={"max_requests": 10**9, "max_age": 1e9},
    metrics={"enabled": True, "namespace": "bentoml_service"},
)
class MFDService:
    def __init__(self) -> None:
        self.settings = SETTINGS
        self.metrics = get_metrics()  # after BentoML set up multiprocess metrics in this worker
        self.engine = Engine(self.settings)
        self.grpc_server: t.Any = None

    @bentoml.on_startup
    async def _start(self) -> None:
        await self.engine.start()
        if self.settings.grpc_port:
            from .grpc_server import start_grpc_server

            self.grpc_server = await start_grpc_server(self.engine, self.settings.grpc_host, self.settings.grpc_port)
        logger.info("mfd service ready: model %s, backend %s", self.engine.card.model_name, self.engine.backend.name)

    @bentoml.on_shutdown
    async def _stop(self) -> None:
        if self.grpc_server is not None:
            await self.grpc_server.stop(grace=2)
        await self.engine.close()

    async def _run(self, endpoint: str, call: t.Callable[[], t.Awaitable[t.Any]]) -> Response:
        """Run one request; every failure becomes our error JSON (4xx for the client's, 503/500 for ours)."""
        try:
            return json_response(await call())
        except RequestError as exc:
            error = exc
        except BackendUnavailable as exc:
            logger.warning("%s: %s", endpoint, exc)
            error = RequestError("backend", "the model backend is unavailable; retry later", status=503,
                                 kind="backend_unavailable")
        except Exception:  # noqa: BLE001 - logged here, never sent to the client
            logger.exception("%s failed", endpoint)
            error = RequestError("server", "internal error; see the server log", status=500, kind="internal")
        self.metrics.errors.labels(endpoint, error.kind).inc()
        return JSONResponse(error.to_json(), status_code=error.status)

    @bentoml.api(route="/predict")
    async def predict(self, request: PredictBody, /) -> PredictResponse:  # type: ignore[return-value]
        """Score windows (sequences or genomic intervals) under experimental conditions."""
        body = t.cast(RawBody, request).body
        return await self._run(  # type: ignore[return-value]
            "predict", lambda: self.engine.predict(self.engine.parse_json(PredictRequest, body)))

    @bentoml.api(route="/predict_variants")
    async def predict_variants(self, request: VariantBody, /) -> VariantResponse:  # type: ignore[return-value]
        """Variant effects (alt − ref) per condition; windows centred on each variant, ref checked."""
        body = t.cast(RawBody, request).body
        return await self._run(  # type: ignore[return-value]
            "predict_variants", lambda: self.engine.predict_variants(self.engine.parse_json(VariantRequest, body)))

    @bentoml.api(route="/metadata")
    async def metadata(self) -> MetadataResponse:  # type: ignore[return-value]
        """Metadata vocabularies (allowed values), trained tracks, window length and limits."""
        return json_response(self.engine.metadata())  # type: ignore[return-value]


MFDService.add_asgi_middleware(GateMiddleware, settings=SETTINGS)
