"""Triton backend: the same TorchScript served by a Triton Inference Server, reached over gRPC or HTTP.

Only the trunk (and the tiny head for cache misses) goes to Triton; conditions are applied here (DESIGN.md:
Triton's dynamic batcher concatenates requests, which suits condition-independent work only). Requests larger
than a model's `max_batch_size` are split client-side, since Triton would reject them.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np

from mfd_common.card import HEAD_INPUT, HEAD_MODEL, HEAD_OUTPUTS, TRUNK_INPUT, TRUNK_MODEL, TRUNK_OUTPUT

from ..metrics import get_metrics
from ..repository import ModelRepository
from ..settings import Settings
from .base import Backend, BackendUnavailable, HeadWeights


class TritonBackend(Backend):
    name = "triton"

    def __init__(self, settings: Settings, repository: ModelRepository):
        self.settings = settings
        self.repository = repository
        self.protocol = settings.triton_protocol
        self._client: Any = None
        self._module: Any = None
        self._max_batch: dict[str, int] = {}

    async def start(self) -> None:
        if self.protocol == "grpc":
            import tritonclient.grpc.aio as module
            self._client = module.InferenceServerClient(self.settings.triton_url)
        else:
            import tritonclient.http.aio as module
            self._client = module.InferenceServerClient(
                self.settings.triton_url, conn_timeout=self.settings.triton_timeout_s)
        self._module = module
        deadline = time.monotonic() + self.settings.triton_timeout_s
        last_error: Exception | None = None
        while time.monotonic() < deadline:  # Triton may still be loading models when we start
            try:
                if all([await self._client.is_model_ready(m) for m in (TRUNK_MODEL, HEAD_MODEL)]):
                    break
            except Exception as exc:  # noqa: BLE001 - connection refused etc. while Triton starts
                last_error = exc
            await asyncio.sleep(0.5)
        else:
            raise RuntimeError(f"Triton at {self.settings.triton_url} ({self.protocol}) has no ready "
                               f"{TRUNK_MODEL}/{HEAD_MODEL}: {last_error}")
        for model in (TRUNK_MODEL, HEAD_MODEL):
            config = await self._client.get_model_config(model, **({"as_json": True} if self.protocol == "grpc" else {}))
            config = config.get("config", config)
            self._max_batch[model] = int(config.get("max_batch_size", 0) or 0)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    async def ready(self) -> bool:
        try:
            return bool(await self._client.is_model_ready(TRUNK_MODEL))
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
        try:
            result = await self._client.infer(model, [tensor], outputs=requested,
                                              **({"client_timeout": self.settings.triton_timeout_s}
                                                 if self.protocol == "grpc" else {}))
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
