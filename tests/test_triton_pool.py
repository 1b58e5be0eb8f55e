"""The Triton pool's retries against real gRPC endpoints on loopback (no tritonserver needed, so it runs fast):

- a port nobody listens on: tritonclient's aio client gets UNAVAILABLE, the call moves to the next pod;
- a real gRPC server that takes the call and never answers: DEADLINE_EXCEEDED, which is never re-sent (each
  server counts the calls it received);
- with every pod refusing, retries stay within the budget (10 % of calls plus a small reserve).
"""
from __future__ import annotations

import asyncio

import grpc
import pytest
import tritonclient.grpc.aio as grpcaio
from tritonclient.utils import InferenceServerException

from service.backends.triton_pool import RETRY_RATIO, RETRY_RESERVE, RetryBudget, TritonPool, is_unreachable

from tests.fixtures.processes import free_ports


class HangingServer:
    """A gRPC server that accepts every call (any method) and never answers it: a saturated Triton pod."""

    def __init__(self) -> None:
        self.calls = 0
        self.server: grpc.aio.Server | None = None
        self.port = 0

    async def start(self) -> "HangingServer":
        outer = self

        async def hang(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            outer.calls += 1
            await asyncio.sleep(30)
            return b""

        class Handler(grpc.GenericRpcHandler):
            def service(self, handler_call_details):
                return grpc.unary_unary_rpc_method_handler(hang)

        self.server = grpc.aio.server()
        self.server.add_generic_rpc_handlers((Handler(),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def stop(self) -> None:
        await self.server.stop(grace=None)


def live(timeout: float = 0.5):
    return lambda client: client.is_server_live(client_timeout=timeout)


def test_unreachable_means_not_taken_and_timeouts_are_not():
    assert is_unreachable(ConnectionRefusedError())
    assert is_unreachable(InferenceServerException("gone", status="StatusCode.UNAVAILABLE"))
    assert is_unreachable(InferenceServerException("busy", status="503"))
    for status in ("StatusCode.DEADLINE_EXCEEDED", "StatusCode.CANCELLED", "StatusCode.INVALID_ARGUMENT",
                   "StatusCode.INTERNAL", "400", "504", None):
        assert not is_unreachable(InferenceServerException("x", status=status)), status
    assert not is_unreachable(asyncio.TimeoutError()) and not is_unreachable(TimeoutError())
    assert not is_unreachable(ValueError("bad"))


def test_a_refused_pod_fails_over_but_a_timed_out_call_is_never_resent():
    async def scenario():
        hanging = [await HangingServer().start(), await HangingServer().start()]
        [dead] = free_ports(1)
        urls = ",".join([f"127.0.0.1:{dead}"] + [h.address for h in hanging])
        pool = TritonPool(urls, grpcaio.InferenceServerClient)
        try:
            await pool.refresh(force=True)
            assert len(pool.addresses) == 3
            outcomes = []
            for _ in range(3):  # start once at each address of the rotation
                try:
                    await pool.call(live(0.5))
                    outcomes.append("ok")
                except InferenceServerException as exc:
                    outcomes.append(str(exc.status()))
            return outcomes, [h.calls for h in hanging], pool.budget.retries
        finally:
            await pool.close()
            for h in hanging:
                await h.stop()

    outcomes, received, retries = asyncio.run(scenario())
    assert outcomes == ["StatusCode.DEADLINE_EXCEEDED"] * 3
    # 3 calls, 3 arrivals: each timed-out call reached exactly one pod; the refused port cost one retry.
    assert sum(received) == 3 and retries >= 1, (received, retries)


def test_retries_stay_within_the_budget_when_every_pod_refuses():
    calls = 200

    async def scenario():
        dead = free_ports(3)
        pool = TritonPool(",".join(f"127.0.0.1:{p}" for p in dead), grpcaio.InferenceServerClient)
        attempts = 0

        async def counted(client):
            nonlocal attempts
            attempts += 1
            return await client.is_server_live(client_timeout=2)

        try:
            for _ in range(calls):
                with pytest.raises(InferenceServerException, match="UNAVAILABLE|failed to connect|refused"):
                    await pool.call(counted)
        finally:
            await pool.close()
        return attempts, pool.budget

    attempts, budget = asyncio.run(scenario())
    extra = attempts - calls
    assert extra == budget.retries and budget.refused > 0
    assert extra <= RETRY_RATIO * calls + RETRY_RESERVE  # 30 at most, where retry-on-every-pod would cost 400
    assert extra >= RETRY_RESERVE  # the reserve is really spent first: failover works before the budget bites


def test_budget_refills_with_calls_and_caps_at_its_reserve():
    budget = RetryBudget(ratio=0.1, reserve=2)
    assert budget.try_spend() and budget.try_spend() and not budget.try_spend()
    for _ in range(9):
        budget.on_call()
    assert not budget.try_spend()  # 0.9 tokens
    budget.on_call()
    assert budget.try_spend()
    for _ in range(1000):
        budget.on_call()
    assert budget.tokens == 2


def test_a_pod_joins_the_rotation_only_once_verified():
    """New addresses pass `verify` first: one not answering yet is retried at the next resolution, one serving
    other models stays out (listed in `rejected`) and never gets a call."""
    class Client:
        def __init__(self, address: str):
            self.address, self.closed = address, False

        async def close(self):
            self.closed = True

    verdicts = {"10.0.0.1:8001": [], "10.0.0.2:8001": ["mfd_trunk: parameter MFD_MODEL_SHA256 differs"],
                "10.0.0.3:8001": ConnectionRefusedError("not up yet")}

    async def verify(address, client):
        verdict = verdicts[address]
        if isinstance(verdict, Exception):
            raise verdict
        return verdict

    async def scenario():
        pool = TritonPool("10.0.0.1:8001,10.0.0.2:8001,10.0.0.3:8001", Client, verify=verify)
        await pool.refresh(force=True)
        first = (pool.addresses, dict(pool.rejected))
        served = {await pool.call(lambda c: asyncio.sleep(0, c.address)) for _ in range(6)}
        verdicts["10.0.0.3:8001"] = []  # the third pod has loaded its models
        await pool.refresh(force=True)
        second = pool.addresses
        await pool.close()
        return first, served, second

    (addresses, rejected), served, later = asyncio.run(scenario())
    assert addresses == ["10.0.0.1:8001"] and list(rejected) == ["10.0.0.2:8001"]
    assert served == {"10.0.0.1:8001"}
    assert later == ["10.0.0.1:8001", "10.0.0.3:8001"]  # the rejected pod is still out after re-verification
