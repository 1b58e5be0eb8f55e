"""Embedded backend: the exported TorchScript files run inside the service process (CPU or one GPU).

Inference runs on one dedicated thread: torch releases the GIL inside kernels, so the event loop keeps serving
HTTP/gRPC while a batch runs, and a single thread means batches never compete with each other for cores —
the micro-batcher in front of it is what gives concurrency its throughput.
"""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from ..repository import ModelRepository
from ..settings import Settings
from .base import Backend, HeadWeights


class EmbeddedBackend(Backend):
    name = "embedded"

    def __init__(self, settings: Settings, repository: ModelRepository):
        self.settings = settings
        self.repository = repository
        self.device = torch.device(settings.device)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mfd-torch")
        self._trunk: torch.jit.ScriptModule | None = None
        self._head: torch.jit.ScriptModule | None = None

    def _load(self) -> None:
        if self.settings.torch_threads:
            torch.set_num_threads(self.settings.torch_threads)
        self._trunk = torch.jit.load(str(self.repository.trunk_path), map_location=self.device).eval()
        self._head = torch.jit.load(str(self.repository.head_path), map_location=self.device).eval()

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._load)

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def ready(self) -> bool:
        return self._trunk is not None and self._head is not None

    def _run_trunk(self, tokens: np.ndarray) -> np.ndarray:
        assert self._trunk is not None, "backend not started"
        with torch.inference_mode():
            out = self._trunk(torch.from_numpy(np.ascontiguousarray(tokens)).to(self.device))
        return out.float().cpu().numpy()

    def _run_head(self, codes: np.ndarray) -> HeadWeights:
        assert self._head is not None, "backend not started"
        with torch.inference_mode():
            w_tech, w_bio, bias = self._head(torch.from_numpy(np.ascontiguousarray(codes, dtype=np.float32))
                                             .to(self.device))
        return HeadWeights(w_tech.float().cpu().numpy(), w_bio.float().cpu().numpy(),
                           bias.float().reshape(-1).cpu().numpy())

    async def features(self, tokens: np.ndarray) -> np.ndarray:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._run_trunk, tokens)

    async def head(self, codes: np.ndarray) -> HeadWeights:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._run_head, codes)
