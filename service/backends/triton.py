"""Service layer (backends): the same TorchScript served by a Triton Inference Server, reached over gRPC or HTTP.

Only the trunk (and the tiny head for cache misses) goes to Triton; conditions are applied here
(docs/architecture.md: Triton's dynamic batcher concatenates requests, which suits condition-independent work only). Requests larger
than a model's `max_batch_size` are split client-side, since Triton would reject them.

Calls are spread over every Triton pod by `TritonPool` (client-side round-robin over the addresses that
MFD_TRITON_URL resolves to: in Kubernetes a headless Service). At start-up we wait for a pod with both models
ready for as long as MFD_TRITON_STARTUP_TIMEOUT_S allows (a GPU node scaling up and pulling the ~15 GB Triton image
takes minutes), logging while we wait, instead of failing fast into a crash loop. Then every reachable pod must
report, for both models, the card's identity (the MFD_* config parameters written at export: model name, sha256
of model.pt) and the card's tensors (names, dtypes, dims); on any difference start-up fails with one log line
naming the pod, the model and the field, and the service never becomes ready. Pods that appear later join the
pool only after passing the same check (`TritonPool(verify=…)`).

Triton's errors keep their meaning (`classify`): INVALID_ARGUMENT is a 422, UNAVAILABLE, NOT_FOUND (model not
loaded) and connection failures a 503, DEADLINE_EXCEEDED a 504, anything else a 500 that is logged.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import numpy as np

from mfd_common import serving
from mfd_common.card import HEAD_INPUT, HEAD_MODEL, HEAD_OUTPUTS, TRUNK_INPUT, TRUNK_MODEL, TRUNK_OUTPUT

from ..metrics import get_metrics
from ..repository import ModelRepository
from ..settings import Settings
from .base import Backend, BackendError, BackendRejected, BackendTimeout, BackendUnavailable, HeadWeights
from .triton_pool import TritonPool

logger = logging.getLogger(__name__)

#: Seconds between "still waiting for Triton" log lines during start-up.
WAIT_LOG_EVERY_S = 30.0

#: Triton statuses (gRPC, and the HTTP codes tritonclient reports) → the backend error they mean.
STATUS_ERRORS: dict[str, type[BackendError]] = {
    "StatusCode.INVALID_ARGUMENT": BackendRejected, "400": BackendRejected,
    "StatusCode.UNAVAILABLE": BackendUnavailable, "503": BackendUnavailable,
    "StatusCode.NOT_FOUND": BackendUnavailable, "404": BackendUnavailable,   # model not loaded: ours to fix
    "StatusCode.DEADLINE_EXCEEDED": BackendTimeout, "504": BackendTimeout,
}


class ModelMismatch(RuntimeError):
    """Triton serves models that are not the ones the service's model card describes."""


def classify(exc: BaseException, what: str) -> BackendError:
    """A tritonclient / aiohttp / OS failure of `what` as the BackendError its status means."""
    status = getattr(exc, "status", None)
    if callable(status):
        kind = STATUS_ERRORS.get(str(status()), BackendError)
        message = exc.message() if callable(getattr(exc, "message", None)) else str(exc)
    elif isinstance(exc, TimeoutError):
        kind, message = BackendTimeout, f"timed out ({type(exc).__name__})"
    elif isinstance(exc, (ConnectionError, OSError)) or type(exc).__name__.startswith(("Client", "Server")):
        kind, message = BackendUnavailable, str(exc) or type(exc).__name__
    else:
        kind, message = BackendError, f"{type(exc).__name__}: {exc}"
    return kind(f"{what}: {message}")


def _tensors(config: dict, key: str) -> list[tuple[str, str, tuple[int, ...]]]:
    return [(t["name"], str(t.get("data_type", "")).removeprefix("TYPE_"), tuple(int(d) for d in t.get("dims", [])))
            for t in config.get(key, [])]


def served_model_problems(model: str, config: dict, repository: ModelRepository) -> list[str]:
    """What in Triton's config of `model` (as JSON) disagrees with the card: identity parameters and tensors."""
    card = repository.card
    problems = []
    params = {k: v.get("string_value") for k, v in config.get("parameters", {}).items()}
    want_sha = card.checksums.get(serving.model_file_key(model))
    for key, want in ((serving.PARAM_MODEL_NAME, card.model_name), (serving.PARAM_MODEL_SHA256, want_sha)):
        if params.get(key) != want:
            problems.append(f"parameter {key} is {params.get(key)!r}, the card says {want!r}")
    expected = serving.served_tensors(card)[model]
    for kind, key in (("inputs", "input"), ("outputs", "output")):
        got = _tensors(config, key)
        if got != expected[kind]:
            problems.append(f"{kind} are {got}, the card says {expected[kind]}")
    return problems


class TritonBackend(Backend):
    name = "triton"

    def __init__(self, settings: Settings, repository: ModelRepository):
        self.settings = settings
        self.repository = repository
        self.protocol = settings.triton_protocol
        self.pool: TritonPool | None = None
        self._module: Any = None
        self._max_batch: dict[str, int] = {}

    def _make_client(self, address: str) -> Any:
        if self.protocol == "grpc":
            return self._module.InferenceServerClient(address)
        return self._module.InferenceServerClient(address, conn_timeout=self.settings.triton_timeout_s)

    async def start(self) -> None:
        if self.protocol == "grpc":
            import tritonclient.grpc.aio as module
        else:
            import tritonclient.http.aio as module
        self._module = module
        self.pool = TritonPool(self.settings.triton_url, self._make_client, verify=self._served_problems)
        await self._wait_for_models()
        self._check_served_models()
        for model in (TRUNK_MODEL, HEAD_MODEL):
            config = await self.pool.call(lambda c, m=model: self._model_config(c, m))
            self._max_batch[model] = int(config.get("max_batch_size", 0) or 0)

    async def _model_config(self, client: Any, model: str) -> dict:
        config = await client.get_model_config(model, **({"as_json": True} if self.protocol == "grpc" else {}))
        return config.get("config", config)

    async def _served_problems(self, address: str, client: Any) -> list[str]:
        """What a pod serves that the card does not describe (the pool admits a pod only without any)."""
        configs = {m: await self._model_config(client, m) for m in (TRUNK_MODEL, HEAD_MODEL)}
        return [f"{model}: {p}" for model, config in configs.items()
                for p in served_model_problems(model, config, self.repository)]

    def _check_served_models(self) -> None:
        """At start-up every pod must serve exactly what the card describes; otherwise fail, loudly. (Later pods
        that do not are kept out of the pool by its `verify` hook.)"""
        assert self.pool is not None
        problems = [f"Triton at {address}, {p}" for address, found in sorted(self.pool.rejected.items())
                    for p in found]
        if problems:
            message = (f"Triton serves other models than the model card at {self.repository.root} describes "
                       f"({self.repository.card.model_name!r}): " + "; ".join(problems))
            logger.error("refusing to start: %s", message)
            raise ModelMismatch(message)
        logger.info("Triton serves the card's models (%s, sha256 %s…) on %s", self.repository.card.model_name,
                    self.repository.card.checksums.get(serving.model_file_key(TRUNK_MODEL), "")[:12],
                    ", ".join(self.pool.addresses))

    async def _models_ready(self, client: Any) -> bool:
        return all([await client.is_model_ready(m) for m in (TRUNK_MODEL, HEAD_MODEL)])

    async def _wait_for_models(self) -> None:
        """Until one Triton pod has both models ready, or MFD_TRITON_STARTUP_TIMEOUT_S has passed."""
        assert self.pool is not None
        started = time.monotonic()
        deadline = started + self.settings.triton_startup_timeout_s
        next_log = started + WAIT_LOG_EVERY_S
        while True:
            await self.pool.refresh(force=True)
            self._check_served_models()  # a pod serving other models: fail now, not after the timeout
            if await self.pool.any(self._models_ready):
                logger.info("Triton ready at %s after %.0f s", ", ".join(self.pool.addresses),
                            time.monotonic() - started)
                return
            now = time.monotonic()
            if now >= deadline:
                raise RuntimeError(
                    f"no Triton pod at {self.settings.triton_url} ({self.protocol}) had {TRUNK_MODEL} and "
                    f"{HEAD_MODEL} ready within MFD_TRITON_STARTUP_TIMEOUT_S="
                    f"{self.settings.triton_startup_timeout_s:g} s (addresses: {self.pool.addresses or 'none'})")
            if now >= next_log:
                logger.warning("waiting for Triton at %s (%.0f s of %g s; addresses: %s)", self.settings.triton_url,
                               now - started, self.settings.triton_startup_timeout_s, self.pool.addresses or "none")
                next_log = now + WAIT_LOG_EVERY_S
            await asyncio.sleep(1.0)

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()

    async def ready(self) -> bool:
        if self.pool is None:
            return False
        try:
            return await self.pool.any(lambda c: c.is_model_ready(TRUNK_MODEL))
        except Exception:  # noqa: BLE001 - readiness probes must not raise
            return False

    async def _infer(self, model: str, input_name: str, datatype: str, array: np.ndarray,
                     outputs: tuple[str, ...]) -> list[np.ndarray]:
        limit = self._max_batch.get(model, 0)
        if limit and array.shape[0] > limit:
            parts = [await self._infer(model, input_name, datatype, array[i:i + limit], outputs)
                     for i in range(0, array.shape[0], limit)]
            return [np.concatenate([p[j] for p in parts]) for j in range(len(outputs))]
        tensor = self._module.InferInput(input_name, list(array.shape), datatype)
        if self.protocol == "http":
            tensor.set_data_from_numpy(array, binary_data=True)
            requested = [self._module.InferRequestedOutput(o, binary_data=True) for o in outputs]
        else:
            tensor.set_data_from_numpy(array)
            requested = [self._module.InferRequestedOutput(o) for o in outputs]
        start = time.perf_counter()
        timeout = {"client_timeout": self.settings.triton_timeout_s} if self.protocol == "grpc" else {}
        assert self.pool is not None, "TritonBackend.start() was not awaited"
        try:
            result = await self.pool.call(lambda c: c.infer(model, [tensor], outputs=requested, **timeout))
        except Exception as exc:  # noqa: BLE001 - tritonclient/aiohttp/grpc errors alike, classified by status
            raise classify(exc, f"Triton {self.protocol} call to {model}") from exc
        get_metrics().triton_roundtrip.labels(self.protocol, model).observe(time.perf_counter() - start)
        return [result.as_numpy(o) for o in outputs]

    async def features(self, tokens: np.ndarray) -> np.ndarray:
        (features,) = await self._infer(TRUNK_MODEL, TRUNK_INPUT, "UINT8", np.ascontiguousarray(tokens, np.uint8),
                                        (TRUNK_OUTPUT,))
        return features.astype(np.float32, copy=False)

    async def head(self, codes: np.ndarray) -> HeadWeights:
        w_tech, w_bio, bias = await self._infer(HEAD_MODEL, HEAD_INPUT, "FP32",
                                                np.ascontiguousarray(codes, np.float32), HEAD_OUTPUTS)
        return HeadWeights(w_tech.astype(np.float32), w_bio.astype(np.float32),
                           bias.astype(np.float32).reshape(-1))
