"""API layer (in-process): `mfd.Model.load(repository)`, the embedded engine behind the same methods as `Client`.

A Model is a `Client` whose transport is the service's own engine in this process instead of HTTP: every
method (`predict`, `predict_variants`, `attribute`, `metadata`, `tracks`) is the Client's, and each request body
it builds goes through the same strict JSON round trip, the same pydantic validation and the same JSON front
door (service.api.json_api, service.api.attribute_json) that a server runs, then through the same converters
(mfd.frames, mfd.attributions). So `Model.load(repo).predict(...)` returns the DataFrame `Client(url).predict(...)`
returns for a server of that repository, and refuses the same inputs with the same `ServiceError` (field,
message), by construction rather than by a second implementation.

The engine is asynchronous (micro-batcher, worker threads); a Model runs it on an event loop in a thread of its
own, so the methods are plain blocking calls that also work inside Jupyter (whose own loop is already running).
Batches are cut by the model's settings (`max_sequences` windows per engine call, 256 by default, shown with a
tqdm bar on long inputs); there is no request-size limit in-process beyond that batching.
"""
from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any, Coroutine

from .client import Client, ServiceError, _global_field

#: Settings a notebook user would not want the server's request limits for (everything else: service defaults).
_IN_PROCESS = {"MFD_MAX_CONDITIONS": "100000", "MFD_MAX_BODY_BYTES": str(2**40), "MFD_GRPC_PORT": "0",
               "MFD_MAX_ATTRIBUTION_FLOATS": str(2**28)}


class Model(Client):
    """The embedded engine in this process: `predict`, `predict_variants`, `attribute`, `metadata` as in Client."""

    def __init__(self, engine: Any, loop: asyncio.AbstractEventLoop, thread: threading.Thread, *,
                 batch_size: int | None = None, progress: bool | None = None):
        from service.api.attribute_json import AttributeApi, AttributeRequest
        from service.api.json_api import JsonApi
        from service.api.schemas import PredictRequest, VariantRequest

        self.engine, self._loop, self._thread = engine, loop, thread
        self.json = JsonApi(engine)
        self.attribute_api = AttributeApi(engine, self.json)
        self._routes = {"/predict": (PredictRequest, self.json.predict),
                        "/predict_variants": (VariantRequest, self.json.predict_variants),
                        "/attribute": (AttributeRequest, self.attribute_api.attribute)}
        self.url = f"in-process:{engine.settings.model_repository}"
        self.batch_size = batch_size
        self.progress = progress
        self._metadata = None
        self._closed = False

    @classmethod
    def load(cls, repository: str | Path, *, fasta: str | Path | None = None, device: str = "cpu",
             batch_size: int | None = None, progress: bool | None = None, **settings: Any) -> "Model":
        """Load an exported model repository (model_card.json + TorchScript) into this process.

        Args:
            repository: the model repository directory (e.g. the bundled `model_repository`).
            fasta: a reference FASTA (plain or BGZF) for `intervals=` and `predict_variants`.
            device: `cpu`, `cuda`, `cuda:1` …
            settings: any other service setting by field name (e.g. `torch_threads=2`, `precision="bf16"`,
                `max_sequences=64` windows per engine call); see service/settings.py.
        """
        from service.core.engine import Engine
        from service.settings import Settings

        env = {**_IN_PROCESS, "MFD_MODEL_REPOSITORY": str(repository), "MFD_DEVICE": device,
               "MFD_BACKEND": "embedded", **{f"MFD_{k.upper()}": str(v) for k, v in settings.items()}}
        if fasta is not None:
            env["MFD_FASTA"] = str(fasta)
        config = Settings.from_env(env)
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="mfd-model-loop", daemon=True)
        thread.start()

        async def start() -> Any:
            engine = Engine(config)
            await engine.start()
            return engine

        try:
            engine = asyncio.run_coroutine_threadsafe(start(), loop).result()
        except BaseException:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            raise
        return cls(engine, loop, thread, batch_size=batch_size, progress=progress)

    def _run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        if self._closed:
            coroutine.close()
            raise RuntimeError("this mfd.Model is closed")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None,
                 offsets: dict[str, int] | None = None) -> dict[str, Any]:
        """What the server would answer to `method path body`, computed here (RequestError → ServiceError)."""
        from service.api import strict_json
        from service.errors import RequestError, as_request_error

        try:
            if path == "/metadata":
                return self.json.metadata()
            model, handler = self._routes[path]
            parsed = self.json.parse(model, strict_json.loads(strict_json.dumps(body)))  # exactly as over HTTP
            return self._run(handler(parsed))
        except (RequestError, ArithmeticError) as exc:
            error = as_request_error(exc)
            raise ServiceError(error.status, _global_field(error.field, offsets or {}), error.message,
                               error.allowed) from None

    def close(self) -> None:
        if self._closed:
            return
        self._run(self.engine.close())
        self.attribute_api.attributor.close()
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()

    def __repr__(self) -> str:
        return f"mfd.Model({self.engine.name!r}, backend={self.engine.backend.name!r})"
