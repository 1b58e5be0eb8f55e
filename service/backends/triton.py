"""Triton backend: the same TorchScript served by a Triton Inference Server, reached over gRPC or HTTP.

Only the trunk (and the tiny head for cache misses) goes to Triton; conditions are applied here (DESIGN.md:
Triton's dynamic batcher concatenates requests, which suits condition-independent work only). Requests larger
than a model's `max_batch_size` are split client-side, since Triton would reject them.

Calls are spread over every Triton pod by `TritonPool` (client-side round-robin over the addresses that
MFD_TRITON_URL resolves to: in Kubernetes a headless Service). At start-up we wait for a pod with both models
ready for as long as MFD_TRITON_STARTUP_TIMEOUT_S allows (a GPU node scaling up and pulling the ~15 GB Triton image
takes minutes), logging while we wait, instead of failing fast into a crash loop.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import numpy as np

from mfd_common.card import HEAD_INPUT, HEAD_MODEL, HEAD_OUTPUTS, TRUNK_INPUT, TRUNK_MODEL, TRUNK_OUTPUT

from ..metrics import get_metrics
from ..repository import ModelRepository
from ..settings import Settings
from .base import Backend, BackendUnavailable, HeadWeights
from .triton_pool import TritonPool

logger = logging.getLogger(__name__)

#: Seconds between "still waiting for Triton" log lines during start-up.
WAIT_LOG_EVERY_S = 30.0


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
        self.pool = TritonPool(self.settings.triton_url, self._make_client)
        await self._wait_for_models()
        for model in (TRUNK_MODEL, HEAD_MODEL):
            config = await self.pool.call(lambda c, m=model: c.get_model_config(
                m, **({"as_json": True} if self.protocol == "grpc" else {})))
            config = config.get("config", config)
            self._max_batch[model] = int(config.get("max_batch_size", 0) or 0)

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
        except Exception as exc:  # noqa: BLE001 - tritonclient/aiohttp/grpc errors alike
            raise BackendUnavailable(f"Triton {self.protocol} call to {model} failed: {exc}") from exc
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
