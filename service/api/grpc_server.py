"""Service layer (api): gRPC front doors: the KServe v2 / Open Inference Protocol, so an unmodified
`tritonclient.grpc` client can call us.

BentoML 1.4's new service API has no gRPC, so a `grpc.aio` server runs inside the worker's event loop (started
from the service's on_startup hook) and calls the same Engine as the HTTP API.

Models: every served model by its name (GET /models; `/v2/models/<name>[/versions/<v>]`), and `mfd` (MODEL_NAME),
the historical name, for the default model; versions "" or the model's KServe version (its trunk's numeric version
folder, "1" as exported). An unknown model is NOT_FOUND listing the names. Tensors are decoded/encoded by
`service.api.tensors` (binary, whole-array):
  inputs   TOKENS     UINT8 [N, L]  base codes A=0 C=1 G=2 T=3 N=4, L = seq_len   } exactly one of these
           SEQUENCES  BYTES [N]     DNA windows (A/C/G/T/N, exactly seq_len each) }
           CONDITIONS BYTES [K]     one JSON value per condition: "ENCFF001", {"track": …} or {"biosample": …}
                                    (a bare, non-JSON string is a track id) — or the `conditions` parameter
  params   biological_only, reverse_complement, return_features (bool); conditions (string, JSON array)
  outputs  PROBABILITY, LOGIT, LOGIT_BIO, LOGIT_TECH FP32 [N, K]; FEATURES_BIO [N, D_bio], FEATURES_TECH
           [N, D_tech] (the scores by default, plus the features with return_features, or those requested)
Bad input → INVALID_ARGUMENT "FIELD: message"; missing/wrong `authorization: Bearer …` metadata →
UNAUTHENTICATED; overload → UNAVAILABLE; a call still running after MFD_REQUEST_TIMEOUT_S → DEADLINE_EXCEEDED.
Liveness/readiness/metadata RPCs need no token (probes).

Beside it, the typed `mfd.v1.Predictor/Predict` (service/api/proto/mfd_v1.proto) mirrors POST /predict message for
message, with the same validation (service.api.json_api), auth, admission control and metrics; its response is
written from the engine's score arrays, as the JSON one is. `Predictor/Attribute` mirrors POST /attribute
(service.api.attribute_grpc).
"""
from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

import grpc
from google.protobuf import struct_pb2
from google.protobuf.message import DecodeError
from tritonclient.grpc import service_pb2, service_pb2_grpc

from ..core.domain import Prediction
from ..core.engine import Engine
from ..core.models import ModelRegistry
from ..core.scoring import QUANTITIES
from ..errors import RequestError, deadline_exceeded
from . import tensors
from .admission import Admission, routed
from .json_api import JsonApi, kserve_version
from .proto import mfd_v1_pb2, mfd_v1_pb2_grpc
from .schemas import PredictRequest

logger = logging.getLogger(__name__)

MODEL_NAME = "mfd"
MODEL_VERSION = "1"
INPUTS = {"SEQUENCES": "sequences", "CONDITIONS": "conditions"}  # tensor → JSON field, for error names
ENDPOINT = "grpc_model_infer"


def grpc_field(field: str) -> str:
    """REST field names → tensor names (`sequences[2]` → `SEQUENCES[2]`), so errors name what the caller sent."""
    for tensor, rest in INPUTS.items():
        if field == rest or field.startswith(rest + "[") or field.startswith(rest + "."):
            return tensor + field[len(rest):]
    return field


def error_text(error: RequestError, tensor_names: bool = True) -> str:
    text = f"{grpc_field(error.field) if tensor_names else error.field}: {error.message}"
    if error.allowed:
        text += f" (allowed: {', '.join(map(str, error.allowed[:50]))}{' …' if len(error.allowed) > 50 else ''})"
    return text


def kserve_engine(models: ModelRegistry, name: str, version: str = "") -> Engine:
    """The engine KServe model `name` (version `version`) means: a served model's name, or `mfd` for the default
    model. RequestError 404 (NOT_FOUND) for an unknown name or version."""
    if name == MODEL_NAME and MODEL_NAME not in models.engines and models.default is not None:
        engine = models.default
    elif name in models.engines:
        engine = models.engines[name]
    else:
        known = models.names + ([MODEL_NAME] if models.default is not None else [])
        raise RequestError("model_name", f"unknown model {name!r}; this server serves {', '.join(known)}", known,
                           status=404, kind="not_found")
    served = kserve_version(engine)
    if version not in ("", served):
        raise RequestError("model_version", f"model {name!r} has no version {version!r}", [served], status=404,
                           kind="not_found")
    return engine


class InferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, models: ModelRegistry, admission: Admission):
        self.models = models
        self.admission = admission
        self.settings = models.settings

    # ---- health & metadata -----------------------------------------------------------------------------
    async def ServerLive(self, request, context):
        return service_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return service_pb2.ServerReadyResponse(ready=await self.models.ready())

    async def ModelReady(self, request, context):
        try:
            engine = kserve_engine(self.models, request.name, request.version)
        except RequestError:
            return service_pb2.ModelReadyResponse(ready=False)
        return service_pb2.ModelReadyResponse(ready=await engine.backend.ready())

    async def ServerMetadata(self, request, context):
        return service_pb2.ServerMetadataResponse(name="mfd-serve", version="1", extensions=["mfd"])

    async def ModelMetadata(self, request, context):
        try:
            engine = kserve_engine(self.models, request.name, request.version)
        except RequestError as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, error_text(exc))
        k = service_pb2.ModelMetadataResponse.TensorMetadata
        return service_pb2.ModelMetadataResponse(
            name=request.name, versions=[kserve_version(engine)], platform="mfd",
            inputs=[k(name="SEQUENCES", datatype="BYTES", shape=[-1]),
                    k(name="CONDITIONS", datatype="BYTES", shape=[-1]),
                    k(name="TOKENS", datatype="UINT8", shape=[-1, engine.card.seq_len])],
            outputs=[k(name=name, datatype="FP32", shape=[-1, -1]) for name in tensors.OUTPUT_OF])

    # ---- inference -----------------------------------------------------------------------------------
    def _parse(self, request, engine: Engine) -> tensors.InferInputs:
        return tensors.decode_request(request, seq_len=engine.card.seq_len,
                                      max_sequences=self.settings.max_sequences,
                                      max_conditions=self.settings.max_conditions)

    async def ModelInfer(self, request, context):
        async def handle():
            engine = kserve_engine(self.models, request.model_name, request.model_version)
            routed(engine.name)
            inputs = self._parse(request, engine)
            resolved = engine.resolve_conditions(inputs.conditions)
            scores = await engine.score(inputs.tokens, resolved, inputs.options)
            return tensors.encode_response(scores, inputs.outputs, model_name=request.model_name,
                                           model_version=kserve_version(engine), request_id=request.id)

        return await guarded(self.admission, context, ENDPOINT, handle)


# RequestError.status → gRPC code; statuses not listed are client errors (INVALID_ARGUMENT).
STATUS_CODES = {401: grpc.StatusCode.UNAUTHENTICATED, 404: grpc.StatusCode.NOT_FOUND,
                413: grpc.StatusCode.INVALID_ARGUMENT, 500: grpc.StatusCode.INTERNAL,
                503: grpc.StatusCode.UNAVAILABLE, 504: grpc.StatusCode.DEADLINE_EXCEEDED}


async def guarded(admission: Admission, context, endpoint: str, handle, *, tensor_names: bool = True):
    """One scoring RPC through the shared Admission; its RequestError becomes the matching gRPC status."""
    metadata = dict(context.invocation_metadata() or ())
    try:
        async with admission.call(endpoint, metadata.get("authorization")):
            # The server's own deadline, as BentoML's traffic timeout bounds HTTP: a call past it is cancelled
            # (its queued windows dropped by the batcher) and answered DEADLINE_EXCEEDED.
            timeout = admission.settings.request_timeout_s
            try:
                async with asyncio.timeout(timeout) as deadline:
                    return await handle()
            except TimeoutError:
                if deadline.expired():
                    raise deadline_exceeded(timeout) from None
                raise
    except RequestError as exc:
        code = STATUS_CODES.get(exc.status, grpc.StatusCode.INVALID_ARGUMENT if exc.status < 500
                                else grpc.StatusCode.INTERNAL)
        await context.abort(code, error_text(exc, tensor_names))


def struct_value(value: Any, field: str) -> Any:
    """A protobuf Struct / ListValue / scalar as the JSON value it stands for. Struct numbers are all doubles: whole
    ones go back to int (years, counts), and NaN or infinity, which JSON cannot hold, is refused naming `field`."""
    if isinstance(value, struct_pb2.Struct):
        return {key: struct_value(item, f"{field}.{key}") for key, item in value.items()}
    if isinstance(value, struct_pb2.ListValue):
        return [struct_value(item, f"{field}[{n}]") for n, item in enumerate(value)]
    if isinstance(value, float):
        if not math.isfinite(value):
            raise RequestError(field, f"{value} is not a finite number")
        return int(value) if value.is_integer() else value
    return value


def predict_message(prediction: Prediction, *, model: str, backend: str, return_features: bool) \
        -> mfd_v1_pb2.PredictResponse:
    """The typed response, written from the score arrays (the same numbers as the JSON body, as doubles)."""
    s = prediction.scores
    s.require_finite(with_features=return_features)
    response = mfd_v1_pb2.PredictResponse(model=model, backend=backend,
                                          biological_only=prediction.options.biological_only,
                                          reverse_complement=prediction.options.reverse_complement)
    for k, condition in enumerate(prediction.conditions):
        entry = response.conditions.add(index=k, track=condition.track or "")
        entry.metadata.update(condition.metadata)
    bias = s.bias.tolist()
    rows = zip(*(s.quantity(q).tolist() for q in QUANTITIES))
    f_bio = s.f_bio.tolist() if return_features else None
    f_tech = s.f_tech.tolist() if return_features else None
    for n, (window_id, (prob, logit, bio, tech)) in enumerate(zip(prediction.windows.ids, rows)):
        out = response.results.add(index=n, id=window_id, f_bio=f_bio[n] if f_bio else (),
                                   f_tech=f_tech[n] if f_tech else ())
        for k, (p, lo, bi, te) in enumerate(zip(prob, logit, bio, tech)):
            out.scores.add(condition=k, probability=p, logit=lo, logit_bio=bi, logit_tech=te, bias=bias[k])
    return response


class PredictorServicer(mfd_v1_pb2_grpc.PredictorServicer):
    """`mfd.v1.Predictor`: the typed mirror of POST /predict; `model` routes as the JSON body's does."""

    def __init__(self, models: ModelRegistry, admission: Admission):
        self.models = models
        self.apis = {name: JsonApi(engine) for name, engine in models.engines.items()}
        self.attribution: dict[str, Any] = {}  # model name → its /attribute front door, built on first use
        self.admission = admission

    @staticmethod
    def _request_dict(request) -> dict[str, Any]:
        """The message as the JSON body it mirrors, validated by the same pydantic model."""
        return scoring_body(request, biological_only=request.biological_only,
                            reverse_complement=request.reverse_complement, return_features=request.return_features)

    async def Predict(self, request, context):
        async def handle():
            engine = self.models.get(request.model or None)
            routed(engine.name)
            api = self.apis[engine.name]
            parsed = api.parse(PredictRequest, self._request_dict(request))
            prediction = await api.prediction(parsed)
            return predict_message(prediction, model=engine.name, backend=engine.backend.name,
                                   return_features=parsed.return_features)

        # Field names as in the proto / HTTP API (`conditions[0].lab`), not KServe tensor names.
        return await guarded(self.admission, context, "grpc_predict", handle, tensor_names=False)

    async def Attribute(self, request, context):
        """The typed mirror of POST /attribute (service.api.attribute_grpc)."""
        from .attribute_grpc import AttributeApi, attribute

        async def handle():
            engine = self.models.get(request.model or None)
            routed(engine.name)
            if engine.name not in self.attribution:
                self.attribution[engine.name] = AttributeApi(engine, self.apis[engine.name])
            return await attribute(self.attribution[engine.name], request)

        return await guarded(self.admission, context, "grpc_attribute", handle, tensor_names=False)


def scoring_body(request: Any, **options: Any) -> dict[str, Any]:
    """The windows (sequences, ids, intervals) and conditions of a typed mfd.v1 request as the JSON body they mirror,
    plus `options`: Predict and Attribute share these fields, so both are validated by the JSON front door's models."""
    data: dict[str, Any] = {"conditions": [], **options}
    if request.sequences:
        data["sequences"] = list(request.sequences)
    if request.sequence_ids:
        data["sequence_ids"] = list(request.sequence_ids)
    if request.intervals:
        data["intervals"] = [{"chrom": i.chrom, "start": i.start, "end": i.end, **({"id": i.id} if i.id else {})}
                             for i in request.intervals]
    for i, condition in enumerate(request.conditions):
        kind = condition.WhichOneof("kind")
        if kind == "track":
            data["conditions"].append(condition.track)
        else:
            data["conditions"].append(struct_value(condition.metadata, f"conditions[{i}]")
                                      if kind == "metadata" else {})
    return data


class UndecodableIsInvalidArgument(grpc.aio.ServerInterceptor):
    """A request that does not decode (invalid UTF-8 in a proto3 string, truncated bytes) is the client's error:
    INVALID_ARGUMENT, where grpc would answer UNKNOWN "Unexpected DecodeError". Unary methods only (all of ours).

    The method's deserializer is moved into the handler, where its failure can be answered.
    """

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None or handler.request_deserializer is None:
            return handler
        decode, behaviour = handler.request_deserializer, handler.unary_unary
        method = handler_call_details.method

        async def decoded(raw: bytes, context):
            try:
                request = decode(raw)
            except DecodeError:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"request: not a valid {method} request "
                                    "message (proto3 strings must be UTF-8 text)")
            return await behaviour(request, context)

        return handler._replace(request_deserializer=None, unary_unary=decoded)


async def start_grpc_server(models: ModelRegistry, admission: Admission, host: str, port: int) -> grpc.aio.Server:
    # SO_REUSEPORT only with several workers (they then share the port); otherwise a port already taken by
    # another process must fail loudly instead of silently splitting traffic with it.
    settings = models.settings
    server = grpc.aio.server(interceptors=[UndecodableIsInvalidArgument()], options=[("grpc.max_receive_message_length", settings.max_body_bytes),
                                      ("grpc.max_send_message_length", 256 * 1024 * 1024),
                                      ("grpc.so_reuseport", 1 if settings.workers > 1 else 0)])
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(models, admission), server)
    mfd_v1_pb2_grpc.add_PredictorServicer_to_server(PredictorServicer(models, admission), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise RuntimeError(f"cannot bind the gRPC server to {host}:{port}")
    await server.start()
    logger.info("KServe v2 gRPC server listening on %s:%d (models %s)", host, bound, ", ".join(models.names))
    return server
