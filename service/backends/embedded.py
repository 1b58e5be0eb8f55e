"""Service layer (backends): embedded backend: the exported TorchScript files run inside the service process (CPU or
one GPU).

Inference runs on one dedicated thread: torch releases the GIL inside kernels, so the event loop keeps serving
HTTP/gRPC while a batch runs, and a single thread means batches never compete with each other for cores —
the micro-batcher in front of it is what gives concurrency its throughput.

On a GPU (MFD_DEVICE=cuda[:i]) the host↔device traffic is kept minimal: the trunk takes uint8 tokens and
one-hot encodes on the device (1 byte per base crosses PCIe, not 16 floats), tokens are staged in a reusable
pinned host buffer and copied asynchronously, and features come back through a pinned buffer too.
MFD_PRECISION=fp16/bf16 runs the trunk under torch.autocast (the TorchScript graph keeps its fp32 weights;
convolutions and matmuls run in the lower precision) and features are returned as float32 either way. The
head stays fp32: it runs once per new condition and its weights feed every score.
"""
from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from ..repository import ModelRepository
from ..settings import Settings
from .base import Backend, HeadWeights

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class PinnedStaging:
    """Grow-only pinned host buffers for one shape family, reused across calls (one inference thread)."""

    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype
        self.buffer: torch.Tensor | None = None

    def view(self, shape: tuple[int, ...]) -> torch.Tensor:
        rows, rest = shape[0], tuple(shape[1:])
        if self.buffer is None or self.buffer.shape[1:] != rest or self.buffer.shape[0] < rows:
            capacity = max(rows, 2 * (self.buffer.shape[0] if self.buffer is not None else 0))
            self.buffer = torch.empty((capacity, *rest), dtype=self.dtype, pin_memory=True)
        return self.buffer[:rows]


class EmbeddedBackend(Backend):
    name = "embedded"

    def __init__(self, settings: Settings, repository: ModelRepository):
        self.settings = settings
        self.repository = repository
        self.device = torch.device(settings.device)
        self.dtype = DTYPES[getattr(settings, "precision", "fp32")]
        self.cuda = self.device.type == "cuda"
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mfd-torch")
        self._trunk: torch.jit.ScriptModule | None = None
        self._head: torch.jit.ScriptModule | None = None
        self._tokens_in = PinnedStaging(torch.uint8) if self.cuda else None
        self._features_out = PinnedStaging(torch.float32) if self.cuda else None

    def _load(self) -> None:
        if self.settings.torch_threads:
            torch.set_num_threads(self.settings.torch_threads)
        if self.cuda and not torch.cuda.is_available():
            raise RuntimeError(f"MFD_DEVICE={self.settings.device} but torch sees no CUDA device "
                               f"(torch {torch.__version__}, built for CUDA {torch.version.cuda})")
        self._trunk = torch.jit.load(str(self.repository.trunk_path), map_location=self.device).eval()
        self._head = torch.jit.load(str(self.repository.head_path), map_location=self.device).eval()

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._load)

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def ready(self) -> bool:
        return self._trunk is not None and self._head is not None

    def _autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def _run_trunk(self, tokens: np.ndarray) -> np.ndarray:
        assert self._trunk is not None, "backend not started"
        tokens = np.ascontiguousarray(tokens, dtype=np.uint8)
        if not tokens.flags.writeable:  # e.g. a view of a gRPC buffer; torch wants writable memory
            tokens = tokens.copy()
        host = torch.from_numpy(tokens)
        with torch.inference_mode():
            if self.cuda:
                assert self._tokens_in is not None and self._features_out is not None
                staged = self._tokens_in.view(tuple(host.shape))
                staged.copy_(host)
                device_tokens = staged.to(self.device, non_blocking=True)
            else:
                device_tokens = host
            with self._autocast():
                out = self._trunk(device_tokens)
            out = out.float()
            if not self.cuda:
                return out.numpy()
            result = self._features_out.view(tuple(out.shape))
            result.copy_(out, non_blocking=True)
            torch.cuda.current_stream(self.device).synchronize()  # also ends the token copy: staging is free
            return result.numpy().copy()  # the pinned buffer is reused by the next batch

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
