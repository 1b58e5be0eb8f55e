"""Service layer (api): the HTTP API, a FastAPI app that BentoML mounts (`@bentoml.asgi_app`); BentoML keeps processes
and probes.

Routes (JSON in and out, strict RFC 8259 both ways):
  POST /predict            windows (sequences or FASTA intervals) × conditions → probability, logits
  POST /predict_variants   chrom/pos/ref/alt × conditions → alt − ref effects
  POST /attribute          per-base attribution maps of logit, logit_bio, logit_tech (attribute_json.py)
  GET  /metadata           vocabularies, numeric ranges, trained tracks, limits (POST also answers);
                           `?model=<name>` picks the model (default: the default model)
  GET  /models             the served models: name, window, version, genome (docs/multi-model.md)
  GET  /docs.json, GET /   our OpenAPI document and Swagger UI on it (files from the swagger-ui-py wheel, served
                           under /docs-assets/: no CDN), whose worked examples run as written (docs_examples)

A body is read and parsed by us (`strict_json`), then validated by the pydantic request model *with the model's
context* (window length, limits), which FastAPI's own body parsing cannot pass; the models are still declared
in the OpenAPI document, and responses are documented by (and tested against) the response models. Every
failure, ours or the framework's (404, 405, 415, 413 …), leaves as `{"error": {"field", "message", "allowed"}}`.
"""
from __future__ import annotations

import asyncio
import importlib.resources
import json
from http import HTTPStatus
from typing import Any, Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import HTMLResponse, Response

from ..core.effects import MAX_SHIFTS
from ..errors import RequestError, internal
from . import docs_examples, json_api, strict_json
from .admission import Admission, ClientGone
from .attribute_json import AttributeApi, AttributeRequest, AttributeResponse
from .json_api import JsonApi
from .schemas import (ErrorResponse, MetadataResponse, ModelsResponse, PredictRequest, PredictResponse,
                      VariantRequest, VariantResponse)

TITLE = "MFD: Metadata-guided Feature Disentanglement"
DESCRIPTION = """\
Predicts functional-genomics tracks (e.g. ChIP-seq peaks) for DNA windows under **experimental conditions**:
a trained track id or any combination of metadata values (biosample, target, assay, lab, …), including
combinations never measured. Every logit splits into a biological part (`logit_bio`) and a technical part
(`logit_tech`); `biological_only` removes the technical one. GET /metadata lists the variables, their
allowed values and numeric ranges, the trained tracks and the window length.

Errors always have the shape `{"error": {"field": …, "message": …, "allowed": [...]}}`; `field` names the
offending value (`conditions[1].biosample`). The same model is served over gRPC (KServe v2 and `mfd.v1`)."""

ERROR_DOCS = {
    400: "Malformed body: not JSON, not UTF-8, or nested too deeply",
    401: "Missing or wrong bearer token (when MFD_AUTH_TOKEN is set)",
    413: "Too many sequences/conditions or body too large; the error names the field",
    415: "Content-Type is not application/json",
    422: "Invalid input; `error.field` names it and `error.allowed` lists valid values where known",
    503: "Server busy (MFD_MAX_INFLIGHT calls in flight) or model backend unavailable; retry",
}
JSON_TYPES = ("application/json",)


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"model": ErrorResponse, "description": ERROR_DOCS[s]} for s in statuses}


def _body(model: type) -> dict[str, Any]:
    """The request body as our own parser reads it; its examples are filled in by MFDApi.openapi (this server's)."""
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


def _set_examples(spec: dict[str, Any], path: str, examples: dict[str, tuple[str, dict[str, Any]]]) -> None:
    content = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    content["examples"] = {name: {"summary": summary, "value": value} for name, (summary, value) in examples.items()}


def _send_error(error: RequestError) -> Response:
    headers = {}
    if error.status == 401:
        headers["www-authenticate"] = "Bearer"
    elif error.kind == "overloaded":
        headers["retry-after"] = "1"
    return Response(strict_json.dumps(error.to_json()), status_code=error.status, headers=headers,
                    media_type="application/json")


def framework_error(status: int) -> RequestError:
    """Our error for a status the framework produced itself (unknown path, wrong method, probe failure …)."""
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "error"
    field = {404: "path", 405: "method", 415: "content-type"}.get(status, "request")
    return RequestError(field, phrase.lower(), status=status, kind=phrase.lower().replace(" ", "_"))


class MFDApi(FastAPI):
    """FastAPI with our OpenAPI document (title, model, examples) and our error JSON for every error."""

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema:
            return self.openapi_schema
        engine = getattr(self.state, "engine", None)
        model = engine.card.model_name if engine is not None else "unloaded"
        version = model_version(engine.card.checksums) if engine is not None else "0"
        spec = get_openapi(title=TITLE, version=f"{model} ({version})", description=DESCRIPTION
                           + f"\n\nServing model **{model}**, version `{version}`.", routes=self.routes)
        if engine is not None:  # worked examples from this server's model and genome: they run as written
            models = getattr(self.state, "models", None)
            named = models is not None and len(models.names) > 1  # several models: the examples name theirs
            for path, examples in (("/predict", docs_examples.predict_examples(engine)),
                                   ("/predict_variants", docs_examples.variant_examples(engine, MAX_SHIFTS))):
                if named:
                    examples = {key: (summary, {"model": engine.name, **value})
                                for key, (summary, value) in examples.items()}
                _set_examples(spec, path, examples)
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        for request_model in (PredictRequest, VariantRequest, AttributeRequest):
            schema = request_model.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(schema.pop("$defs", {}))
            schemas[request_model.__name__] = schema
        if engine is not None and engine.settings.auth_token:  # the UI's "Authorize" button sends the token
            spec["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
            spec["security"] = [{"bearer": []}]
        self.openapi_schema = spec
        return spec


def model_version(checksums: dict[str, str]) -> str:
    """A short, stable version id of the served weights: the first 12 hex digits of the trunk's checksum."""
    for name, digest in sorted(checksums.items()):
        if "trunk" in name:
            return digest.split(":")[-1][:12]
    return "unversioned"


app = MFDApi(title=TITLE, description=DESCRIPTION, docs_url=None, redoc_url=None, openapi_url=None)


@app.exception_handler(RequestError)
async def _request_error(_: Request, exc: RequestError) -> Response:
    return _send_error(exc)


@app.exception_handler(StarletteHTTPException)
async def _http_error(_: Request, exc: StarletteHTTPException) -> Response:
    return _send_error(framework_error(exc.status_code))


@app.exception_handler(RequestValidationError)
async def _validation_error(_: Request, exc: RequestValidationError) -> Response:
    return _send_error(RequestError("request", "invalid request"))


@app.exception_handler(Exception)
async def _unexpected(_: Request, exc: Exception) -> Response:
    return _send_error(internal())


# ---- request plumbing -------------------------------------------------------------------------------------
async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 415/413 before (or while) reading when it is not JSON or too large."""
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if content_type not in JSON_TYPES and not content_type.endswith("+json"):
        raise RequestError("content-type", f"send Content-Type: application/json (got {content_type!r})",
                           ["application/json"], status=415, kind="unsupported_media_type")
    too_large = RequestError("body", f"request body exceeds the limit of {limit} bytes", status=413,
                             kind="too_large")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def until_disconnected(request: Request, work: Awaitable[Any]) -> Any:
    """Run `work`, cancelling it the moment the client disconnects (its queued windows are then dropped by
    the batcher and its admission slot freed by the caller's `Admission.call`)."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
    if not task.done() or task.cancelled():
        try:
            await task
        except asyncio.CancelledError:
            pass
        raise ClientGone()
    return task.result()


Handler = Callable[[Any], Awaitable[dict[str, Any]]]


def route(state: Any, data: Any, call: Any) -> JsonApi:
    """The JSON door of the model a decoded body names (`"model"`, default: the default model); the admitted
    `call` is labelled with it. RequestError 404 for an unknown name (service.core.models)."""
    engine = state.models.get(data.get("model") if isinstance(data, dict) else None)
    call.route_to(engine.name)
    return state.apis[engine.name]


async def _score(request: Request, endpoint: str, model: type, run: Callable[[JsonApi], Handler],
                 serialise: Callable[[Any], bytes] = strict_json.dumps) -> Response:
    state = request.app.state
    async with state.admission.call(endpoint, request.headers.get("authorization")) as call:
        body = await read_body(request, state.settings.max_body_bytes)
        data = strict_json.loads(body)
        api = route(state, data, call)
        parsed = api.parse(model, data)
        result = await until_disconnected(request, run(api)(parsed))
        return Response(serialise(result), media_type="application/json")


@app.post("/predict", summary="Score windows under conditions", response_model=None,
          responses={200: {"model": PredictResponse}, **_errors(400, 401, 413, 415, 422, 503)},
          openapi_extra=_body(PredictRequest))
async def predict(request: Request) -> Response:
    """Score DNA windows (sequences, or intervals of the server's genome) under experimental conditions."""
    # orjson (several times faster than the stdlib on this hot path); predict_payload checked every number is finite
    return await _score(request, "predict", PredictRequest, lambda api: api.predict, json_api.dumps)


@app.post("/predict_variants", summary="Variant effects (alt − ref)", response_model=None,
          responses={200: {"model": VariantResponse}, **_errors(400, 401, 413, 415, 422, 503)},
          openapi_extra=_body(VariantRequest))
async def predict_variants(request: Request) -> Response:
    """Variant effects per condition; windows are centred on each variant and the ref allele is checked."""
    return await _score(request, "predict_variants", VariantRequest, lambda api: api.predict_variants)


@app.post("/attribute", summary="Per-base attributions (ISM, gradient × input, integrated gradients)",
          response_model=None, responses={200: {"model": AttributeResponse}, **_errors(400, 401, 413, 415, 422, 503)},
          openapi_extra=_body(AttributeRequest))
async def attribute(request: Request) -> Response:
    """Which bases drive the logit, its biological part and its technical part: one [L][4] map (A, C, G, T) per
    window, condition and part. `ism` runs on any backend; the gradient methods need the embedded one."""
    return await _score(request, "attribute", AttributeRequest,
                        lambda api: request.app.state.attribute_apis[api.engine.name].attribute,
                        json_api.dumps)


@app.api_route("/metadata", methods=["GET", "POST"], summary="Model metadata", response_model=None,
               responses={200: {"model": MetadataResponse}, **_errors(401)})
async def metadata(request: Request, model: str | None = None) -> Response:
    """Metadata variables (allowed values, numeric ranges), trained tracks, window length and limits of one model
    (`?model=<name>`; default: the default model)."""
    state = request.app.state
    async with state.admission.call("metadata", request.headers.get("authorization"), scoring=False) as call:
        engine = state.models.get(model)
        call.route_to(engine.name)
        return Response(strict_json.dumps(state.apis[engine.name].metadata()), media_type="application/json")


@app.get("/models", summary="The served models", response_model=None,
         responses={200: {"model": ModelsResponse}, **_errors(401)})
async def models(request: Request) -> Response:
    """Every model this deployment serves: its name (what `model` takes), window length, version and genome."""
    state = request.app.state
    async with state.admission.call("models", request.headers.get("authorization"), scoring=False):
        return Response(strict_json.dumps(json_api.models_payload(state.models)), media_type="application/json")


@app.get("/docs.json", include_in_schema=False)
async def openapi_document(request: Request) -> Response:
    return Response(json.dumps(request.app.openapi()), media_type="application/json")


#: Swagger UI 5 (OpenAPI 3.1) as shipped in the swagger-ui-py wheel: served from here, never from a CDN.
SWAGGER_UI_FILES = importlib.resources.files("swagger_ui") / "static"
ASSETS = "/docs-assets"
app.mount(ASSETS, StaticFiles(directory=str(SWAGGER_UI_FILES)), name="docs-assets")


@app.get("/", include_in_schema=False)
async def docs_page(request: Request) -> HTMLResponse:
    """Swagger UI on /docs.json: markdown descriptions rendered, every operation with "Try it out"."""
    return get_swagger_ui_html(openapi_url="docs.json", title=TITLE,
                               swagger_js_url=f"{ASSETS[1:]}/swagger-ui-bundle.js",
                               swagger_css_url=f"{ASSETS[1:]}/swagger-ui.css",
                               swagger_favicon_url=f"{ASSETS[1:]}/favicon-32x32.png",
                               swagger_ui_parameters={"tryItOutEnabled": True, "defaultModelsExpandDepth": 0})


# ---- BentoML's own routes ----------------------------------------------------------------------------------
class FrontDoor:
    """ASGI middleware in front of BentoML's router (registered with the public `add_asgi_middleware`).

    BentoML routes `/` and `/docs.json` to its boilerplate page and spec before mounted apps are tried, so
    those paths (and the docs page's assets) are handed to our app. Probes and /metrics stay BentoML's; any error it answers there
    in plain text (a failing /readyz, a wrong method) is rewritten to our error JSON.
    """

    OWN_PATHS = frozenset({"/", "/docs.json"})

    def __init__(self, inner: Any, api: Any = None):
        self.app = inner
        self.api = api if api is not None else app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        if path in self.OWN_PATHS or path.startswith(ASSETS + "/"):
            return await self.api(scope, receive, send)
        await self.app(scope, receive, _json_errors(send))


def _json_errors(send: Any) -> Any:
    replaced = False

    async def wrapped(message: dict[str, Any]) -> None:
        nonlocal replaced
        if message["type"] == "http.response.start" and message["status"] >= 400:
            headers = dict(message.get("headers") or [])
            if not headers.get(b"content-type", b"").startswith(b"application/json"):
                replaced = True
                body = strict_json.dumps(framework_error(message["status"]).to_json())
                await send({"type": "http.response.start", "status": message["status"], "headers": [
                    (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        if replaced and message["type"] == "http.response.body":
            return
        await send(message)

    return wrapped


def attach(models: Any, admission: Admission) -> None:
    """Give the app this worker's models (service.core.models.ModelRegistry) and admission (called from the
    BentoML service's constructor). `engine` / `json` are the default model's (or the first's): the docs page."""
    app.state.models = models
    app.state.apis = {name: JsonApi(engine) for name, engine in models.engines.items()}
    app.state.engine = models.any
    app.state.json = app.state.apis[models.any.name]
    app.state.attribute_apis = {name: AttributeApi(engine, app.state.apis[name])
                                for name, engine in models.engines.items()}
    app.state.settings = models.settings
    app.state.admission = admission
    app.openapi_schema = None
