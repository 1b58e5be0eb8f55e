"""Service layer (core): adaptive micro-batching of trunk calls across concurrent requests (one per engine).

Requests enqueue their windows and await a future. One worker task takes everything queued (up to `max_batch`
windows), waits at most `max_wait` for more to arrive while the queue is short, runs one trunk call and hands
each request back exactly its own rows, in order. Under load, windows pile up while the previous batch runs,
so batches grow by themselves (adaptive). The extra wait is only spent when `active()` (requests inside the
engine) says more requests are on their way than are already queued, so a lone request never waits.

Correctness: the trunk is in eval mode (BatchNorm uses running statistics), so a window's features do not
depend on what else shares its batch. A failing batch fails every request in it, with no partial results.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import numpy as np

from ..metrics import get_metrics

TrunkFn = Callable[[np.ndarray], Awaitable[np.ndarray]]


@dataclass
class _Item:
    tokens: np.ndarray
    owner: int
    future: asyncio.Future = field(repr=False)


class MicroBatcher:
    def __init__(self, fn: TrunkFn, *, backend: str, max_batch: int = 64, max_wait_s: float = 0.002,
                 active: Callable[[], int] | None = None):
        self.fn = fn
        self.backend = backend
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.active = active
        self._submissions = 0
        self._queue: deque[_Item] = deque()
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None

    def _ensure_worker(self) -> None:
        if self._worker is None or self._worker.done():
            self._wakeup = asyncio.Event()
            self._worker = asyncio.get_running_loop().create_task(self._run(), name="mfd-batcher")

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        while self._queue:
            item = self._queue.popleft()
            if not item.future.done():
                item.future.set_exception(RuntimeError("service shutting down"))

    async def submit(self, tokens: np.ndarray) -> np.ndarray:
        """Features for `tokens` [n, L]; large requests are cut into chunks that can share batches with others."""
        if tokens.shape[0] == 0:
            raise ValueError("no windows to score")
        self._ensure_worker()
        loop = asyncio.get_running_loop()
        futures = []
        self._submissions += 1
        for start in range(0, tokens.shape[0], self.max_batch):
            item = _Item(tokens[start:start + self.max_batch], self._submissions, loop.create_future())
            self._queue.append(item)
            futures.append(item.future)
        assert self._wakeup is not None
        self._wakeup.set()
        parts = await asyncio.gather(*futures)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _queued_windows(self) -> int:
        return sum(item.tokens.shape[0] for item in self._queue)

    def _worth_waiting(self) -> bool:
        if self.max_wait_s <= 0 or self._queued_windows() >= self.max_batch:
            return False
        if self.active is None:
            return True
        return self.active() > len({item.owner for item in self._queue})

    async def _run(self) -> None:
        assert self._wakeup is not None
        metrics = get_metrics()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                if self._worth_waiting():
                    await asyncio.sleep(self.max_wait_s)  # let concurrent requests join this batch
                batch: list[_Item] = []
                size = 0
                while self._queue and size + self._queue[0].tokens.shape[0] <= self.max_batch:
                    item = self._queue.popleft()
                    if item.future.done():  # caller gave up (cancelled); do not spend compute on it
                        continue
                    batch.append(item)
                    size += item.tokens.shape[0]
                if not batch:
                    continue
                tokens = batch[0].tokens if len(batch) == 1 else np.concatenate([b.tokens for b in batch])
                start = time.perf_counter()
                try:
                    features = await self.fn(tokens)
                    if features.shape[0] != tokens.shape[0]:
                        raise RuntimeError(f"trunk returned {features.shape[0]} rows for {tokens.shape[0]} windows")
                except Exception as exc:  # noqa: BLE001 - delivered to every waiting request
                    for item in batch:
                        if not item.future.done():
                            item.future.set_exception(exc)
                    continue
                metrics.trunk_latency.labels(self.backend).observe(time.perf_counter() - start)
                metrics.batch_size.labels(self.backend).observe(size)
                metrics.windows_scored.labels(self.backend).inc(size)
                offset = 0
                for item in batch:
                    n = item.tokens.shape[0]
                    if not item.future.done():
                        item.future.set_result(features[offset:offset + n])
                    offset += n
