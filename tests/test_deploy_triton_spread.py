"""Load spreads over Triton pods, and the service waits for Triton instead of crash-looping.

Two real tritonserver processes (tests/fixtures/triton.py) stand in for two Triton pods behind a headless Service:
MFD_TRITON_URL lists both addresses, as the headless Service's DNS name resolves to one address per ready pod.
Each server's own nv_inference_request_success counter says how many calls it served.
"""
from __future__ import annotations

import asyncio
import dataclasses
import re
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from mfd_common.card import TRUNK_MODEL
from service.backends.triton import TritonBackend
from service.backends.triton_pool import is_unreachable, parse_targets, resolve
from service.repository import load_repository
from service.settings import Settings

from tests.fixtures.processes import free_ports
from tests.fixtures.service import SEQ_LEN
from tests.fixtures.triton import TritonServer, build_python_backend_repository

pytestmark = pytest.mark.slow


def successes(server: TritonServer, model: str = TRUNK_MODEL) -> float:
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        text = response.read().decode()
    match = re.search(r'^nv_inference_request_success\{model="%s",version="1"\} (\S+)$' % model, text, re.M)
    return float(match.group(1)) if match else 0.0


def backend(repository: Path, url: str, **overrides) -> TritonBackend:
    settings = Settings(model_repository=repository, backend="triton", triton_url=url, triton_protocol="grpc",
                        **overrides)
    return TritonBackend(settings, load_repository(repository))


def test_targets_parse_and_names_resolve_to_every_address():
    assert parse_targets("mfd-triton:8001") == [("mfd-triton", 8001)]
    assert parse_targets("10.0.0.1:8001, 10.0.0.2:8001") == [("10.0.0.1", 8001), ("10.0.0.2", 8001)]
    assert parse_targets("[::1]:8001") == [("::1", 8001)]
    for bad in ("mfd-triton", "a:b", " , "):
        with pytest.raises(ValueError, match="MFD_TRITON_URL"):
            parse_targets(bad)
    assert asyncio.run(resolve("127.0.0.1", 8001)) == ["127.0.0.1:8001"]
    assert "127.0.0.1:8001" in asyncio.run(resolve("localhost", 8001))  # through the system resolver


def test_request_errors_are_not_retried_on_other_pods_but_unreachable_pods_are():
    from tritonclient.utils import InferenceServerException

    assert is_unreachable(ConnectionRefusedError())
    assert is_unreachable(InferenceServerException("gone", status="StatusCode.UNAVAILABLE"))
    assert not is_unreachable(InferenceServerException("bad shape", status="StatusCode.INVALID_ARGUMENT"))
    assert not is_unreachable(InferenceServerException("bad shape", status="400"))


def test_startup_waits_for_triton_then_gives_up_with_a_clear_error(exported_repository):
    [dead] = free_ports(1)
    slow = backend(exported_repository, f"127.0.0.1:{dead}", triton_startup_timeout_s=3.0)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="MFD_TRITON_STARTUP_TIMEOUT_S=3 s"):
        asyncio.run(slow.start())
    assert 2.5 <= time.monotonic() - started < 30


def test_calls_spread_over_two_triton_pods_and_survive_one_going_away(triton_server, exported_repository,
                                                                      tmp_path):
    # A second "pod", started only after the service began waiting for it: start() must wait, not fail.
    workdir = tmp_path / "triton-b"
    second = TritonServer(repository=build_python_backend_repository(exported_repository, workdir / "repository"),
                          workdir=workdir, source_repository=exported_repository)
    second.http_port, second.grpc_port, second.metrics_port = free_ports(3)
    tokens = np.random.default_rng(3).integers(0, 5, size=(2, SEQ_LEN), dtype=np.uint8)
    calls = 16

    async def scenario():
        waiting = backend(exported_repository, second.grpc_url)
        start = asyncio.create_task(waiting.start())
        await asyncio.sleep(2)
        assert not start.done() and not await waiting.ready()
        await asyncio.get_running_loop().run_in_executor(None, second.start)
        await asyncio.wait_for(start, timeout=120)
        assert await waiting.ready()
        await waiting.close()

        both = backend(exported_repository, f"{triton_server.grpc_url},{second.grpc_url}")
        await both.start()
        assert both.pool is not None and len(both.pool.addresses) == 2
        before = (successes(triton_server), successes(second))
        await asyncio.gather(*[both.features(tokens) for _ in range(calls)])
        after = (successes(triton_server), successes(second))
        second.stop()  # one pod goes away: calls go on, on the other one
        survivors = [await both.features(tokens) for _ in range(4)]
        await both.close()
        return before, after, survivors

    try:
        before, after, survivors = asyncio.run(scenario())
    finally:
        second.stop()
    served = [a - b for a, b in zip(after, before)]
    assert sum(served) == calls, served
    assert served[0] == served[1] == calls / 2, served  # strict round-robin, one client per pod
    assert all(f.shape == survivors[0].shape and np.isfinite(f).all() for f in survivors)



def test_pool_follows_membership_changes_and_closes_clients_of_pods_that_left():
    """Pods added or removed between resolutions (HPA scale-out, rollouts): new addresses get a client, and a
    departed pod's client is closed one resolution later, after calls in flight on it had time to finish."""
    from service.backends.triton_pool import TritonPool

    class Client:
        def __init__(self, address: str):
            self.address, self.closed = address, False

        async def close(self):
            self.closed = True

    async def scenario():
        pool = TritonPool("10.0.0.1:8001", Client)
        await pool.refresh(force=True)
        first = pool._clients["10.0.0.1:8001"]
        pool.targets = parse_targets("10.0.0.1:8001,10.0.0.2:8001")  # what a new DNS answer looks like
        await pool.refresh(force=True)
        assert pool.addresses == ["10.0.0.1:8001", "10.0.0.2:8001"]
        served = [await pool.call(lambda c: asyncio.sleep(0, c.address)) for _ in range(4)]
        assert sorted(served) == ["10.0.0.1:8001"] * 2 + ["10.0.0.2:8001"] * 2
        pool.targets = parse_targets("10.0.0.2:8001")
        await pool.refresh(force=True)
        assert pool.addresses == ["10.0.0.2:8001"] and not first.closed  # retired, not yet closed
        await pool.refresh(force=True)
        assert first.closed
        await pool.close()
        with pytest.raises(ConnectionError, match="closed"):
            await pool.call(lambda c: asyncio.sleep(0, c.address))

    asyncio.run(scenario())
