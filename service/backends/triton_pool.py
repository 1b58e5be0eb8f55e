"""Service layer (backends): client-side load balancing over every Triton pod: one client per pod address, round-robin
per call.

Why not one client to a ClusterIP Service: a gRPC channel (HTTP/2) or an HTTP keep-alive pool holds a few
long-lived connections, and kube-proxy balances *connections*, not calls, so each service pod stays pinned to
one Triton pod and scaling Triton out adds idle GPUs. Here `MFD_TRITON_URL` names one or more `host:port`
targets (comma-separated); each host is resolved to all its addresses (a headless Service resolves to one address
per ready pod), one client is kept per address, and calls rotate over them. Names are re-resolved every
`RESOLVE_EVERY_S`, so pods added by the HPA get traffic within seconds; gRPC's own `dns:///` resolver with
`round_robin` would spread calls too, but re-resolves only when a connection breaks, so it never sees scale-out.

A new address joins the rotation only after `verify` (the backend's check of the models it serves against the
model card) finds nothing wrong: a pod serving another model version never gets a call.

Retries. A call that could not reach its pod (connection refused or reset, gRPC UNAVAILABLE, HTTP 503: the
request was not processed) is retried on the next pod, and that address goes to the back of the rotation until
the next resolution. Nothing else is retried: not a request error (INVALID_ARGUMENT), and above all not a
timeout (DEADLINE_EXCEEDED, CANCELLED, a socket timeout): the pod may still be computing it, and under GPU
saturation re-sending a timed-out batch to every other pod multiplies the very load that made it slow. Retries
also draw on a token bucket (`RetryBudget`): each call earns `ratio` of a token and each retry spends one, so
retries stay below ~`ratio` of the calls (10 % by default, plus a small reserve) even when every pod refuses.
"""
from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import socket
import time
from typing import Any, Awaitable, Callable, TypeVar

logger = logging.getLogger(__name__)

#: Seconds between DNS resolutions of the targets (a new Triton pod gets traffic within this delay).
RESOLVE_EVERY_S = 10.0
#: Statuses meaning "this pod did not take the request", worth another pod (gRPC, and HTTP's equivalent).
UNREACHABLE_STATUS = ("StatusCode.UNAVAILABLE", "503")
#: Retries allowed per call, as a share of calls (token bucket refill), and the bucket's size (its reserve).
RETRY_RATIO = 0.1
RETRY_RESERVE = 10.0

T = TypeVar("T")


def parse_targets(url: str) -> list[tuple[str, int]]:
    """`host:port[,host:port…]` → [(host, port)]; IPv6 literals as `[::1]:8001`."""
    targets = []
    for item in (part.strip() for part in url.split(",")):
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"MFD_TRITON_URL entry {item!r} must be host:port")
        targets.append((host.strip("[]"), int(port)))
    if not targets:
        raise ValueError("MFD_TRITON_URL names no host:port")
    return targets


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_unreachable(exc: BaseException) -> bool:
    """True when the pod never took the request (retry elsewhere); False for the server refusing or failing this
    request, and for timeouts (the pod may still be working on it: never re-send)."""
    status = getattr(exc, "status", None)
    if callable(status):  # tritonclient's InferenceServerException carries the gRPC/HTTP status
        return str(status()) in UNREACHABLE_STATUS
    if isinstance(exc, TimeoutError):  # asyncio/socket timeouts are OSErrors too: checked first
        return False
    return isinstance(exc, (ConnectionError, OSError)) or type(exc).__name__ in (
        "ClientConnectorError", "ServerDisconnectedError", "ClientOSError")


class RetryBudget:
    """Token bucket for retries: each call adds `ratio` tokens (up to `reserve`), each retry takes one.

    Over any stretch of calls, retries <= ratio x calls + reserve: a fleet-wide outage costs ~10 % more calls,
    not N times more. The full reserve at start lets the first calls after a pod vanishes still fail over.
    """

    def __init__(self, ratio: float = RETRY_RATIO, reserve: float = RETRY_RESERVE):
        self.ratio, self.reserve = ratio, reserve
        self.tokens = reserve
        self.calls = self.retries = self.refused = 0

    def on_call(self) -> None:
        self.calls += 1
        self.tokens = min(self.reserve, self.tokens + self.ratio)

    def try_spend(self) -> bool:
        if self.tokens >= 1.0 - 1e-9:  # ten refills of 0.1 sum to 0.999…
            self.tokens -= 1.0
            self.retries += 1
            return True
        self.refused += 1
        return False


async def resolve(host: str, port: int) -> list[str]:
    """All addresses of a target: an IP literal as is, a name through the system resolver (search domains too)."""
    try:
        ipaddress.ip_address(host)
        return [format_address(host, port)]
    except ValueError:
        pass
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({format_address(info[4][0], port) for info in infos})


class TritonPool:
    """Clients for every resolved Triton address; `call` runs one request on the next reachable one."""

    def __init__(self, url: str, make_client: Callable[[str], Any], resolve_every_s: float = RESOLVE_EVERY_S,
                 budget: RetryBudget | None = None,
                 verify: Callable[[str, Any], Awaitable[list[str]]] | None = None):
        self.targets = parse_targets(url)
        self.budget = budget or RetryBudget()
        self._verify = verify               # (address, client) → problems; a new pod joins only without any
        self.rejected: dict[str, list[str]] = {}  # addresses kept out by `verify`, with their problems
        self._make_client = make_client
        self._resolve_every_s = resolve_every_s
        self._clients: dict[str, Any] = {}
        self._retired: list[Any] = []      # clients of addresses gone from DNS: closed one resolution later
        self._down: set[str] = set()        # addresses that failed since the last resolution
        self._cycle = itertools.count()
        self._resolved_at = float("-inf")
        self._lock = asyncio.Lock()
        self._closed = False

    @property
    def addresses(self) -> list[str]:
        return sorted(self._clients)

    async def refresh(self, force: bool = False) -> None:
        if self._closed or (not force and time.monotonic() - self._resolved_at < self._resolve_every_s):
            return
        async with self._lock:
            if not force and time.monotonic() - self._resolved_at < self._resolve_every_s:
                return
            found: set[str] = set()
            for host, port in self.targets:
                try:
                    found.update(await resolve(host, port))
                except OSError as exc:  # NXDOMAIN while no pod is ready yet: keep what we had
                    logger.warning("cannot resolve Triton target %s: %s", format_address(host, port), exc)
            stale, self._retired = self._retired, []
            if found:
                for address in sorted(found - set(self._clients)):
                    client = self._make_client(address)
                    if await self._admit(address, client):
                        self._clients[address] = client
                    else:
                        stale.append(client)
                for address in sorted(set(self._clients) - found):
                    self._retired.append(self._clients.pop(address))  # let calls in flight finish first
                for address in set(self.rejected) - found:  # a rejected pod that left is no longer a problem
                    del self.rejected[address]
            for client in stale:
                await client.close()
            self._down.clear()
            self._resolved_at = time.monotonic()

    async def _admit(self, address: str, client: Any) -> bool:
        """Whether a newly resolved pod may take calls: `verify` finds nothing wrong with what it serves. A pod
        that cannot answer yet is tried again at the next resolution; one serving other models is kept out (and
        listed in `rejected`) until it changes."""
        if self._verify is None:
            return True
        try:
            problems = await self._verify(address, client)
        except Exception as exc:  # noqa: BLE001 - not ready yet (model loading, pod starting): next resolution
            logger.info("Triton at %s not verified yet: %s", address, exc)
            return False
        if problems:
            if self.rejected.get(address) != problems:
                logger.error("Triton at %s serves other models than the model card describes, kept out of the "
                             "pool: %s", address, "; ".join(problems))
            self.rejected[address] = problems
            return False
        self.rejected.pop(address, None)
        return True

    def _order(self) -> list[str]:
        """Addresses starting at the next round-robin position, reachable ones first."""
        addresses = self.addresses
        if not addresses:
            return []
        start = next(self._cycle) % len(addresses)
        rotated = addresses[start:] + addresses[:start]
        return [a for a in rotated if a not in self._down] + [a for a in rotated if a in self._down]

    async def call(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        """`fn(client)` on the next address; when that pod did not take the request, on the next one, as far as
        the retry budget allows. Timeouts and request errors propagate at once."""
        if self._closed:
            raise ConnectionError("the Triton client pool is closed")
        await self.refresh()
        order = self._order()
        if not order:
            raise ConnectionError(f"no Triton address resolved for {self.targets}")
        self.budget.on_call()
        for attempt, address in enumerate(order):
            try:
                return await fn(self._clients[address])
            except Exception as exc:  # noqa: BLE001 - classified below
                if not is_unreachable(exc):
                    raise
                self._down.add(address)
                if attempt + 1 == len(order) or not self.budget.try_spend():
                    raise
                logger.warning("Triton at %s unreachable, trying another pod: %s", address, exc)
        raise AssertionError("unreachable")  # the loop returns or raises

    async def any(self, fn: Callable[[Any], Awaitable[bool]]) -> bool:
        """True if `fn(client)` is true for some address (readiness: one ready pod serves)."""
        await self.refresh()
        for address in self.addresses:
            try:
                if await fn(self._clients[address]):
                    return True
            except Exception:  # noqa: BLE001 - an unreachable pod is simply not ready
                continue
        return False

    async def close(self) -> None:
        self._closed = True
        for client in [*self._clients.values(), *self._retired]:
            await client.close()
        self._clients.clear()
        self._retired.clear()
