"""Service throughput and latency: end to end vs the raw TorchScript trunk, and the service layer alone.

    python -m bench.bench_service [--repository model_repository | --channels 30] [--windows-per-request 16]
                                  [--conditions 4] [--concurrency 8] [--requests 64] [--threads 2] [--rounds 3]
    python -m bench.bench_service --null-trunk [--windows-per-request 256] …

End to end (default): rounds alternate (raw, service, raw, …) and medians are reported, so load from other
processes hits both alike.
1. raw trunk: `torch.jit.load(mfd_trunk/1/model.pt)` in this process, batches of --windows-per-request windows,
   back to back (the ceiling: no transport, parsing, conditions or batching);
2. service: a real `bentoml serve` (embedded backend) on free loopback ports, --concurrency clients sending
   --windows-per-request windows × --conditions conditions per request, over JSON/HTTP (/predict) and over
   binary KServe gRPC (TOKENS UINT8 [N, L], conditions as a request parameter, FP32 outputs), one client
   alone (c=1), and batch-1: one client sending one window per request, vs one raw trunk call on one window
   (the latency the service adds).
Both use --threads torch threads. The model comes from --repository (any exported repository, so it follows
training/model.py), or with --channels N a random-weight model of that width is built and exported first
(needs the training code; 30 = the paper's reference width for this bench, 768 = the paper's large model).

--null-trunk: the same service, but the repository's trunk is replaced by a TorchScript module that returns
features at once (a slice of the tokens as floats), so what is measured is the service layer alone: transport,
parsing, validation, tokenising, batching, scoring, serialisation (MFD_MAX_BATCH=256, as for a GPU). Reported
as windows/s of wall time and as
windows per server CPU-second (user+system time of the service's processes, read from /proc), i.e. windows/s
per worker core: that figure does not depend on how busy the shared machine or the in-process client is.
End to end also reports windows per CPU-second (raw: this process's CPU time) and the minimum latency, the
figures that stay meaningful when other processes share the cores.
The clients run on the same machine and take CPU from the server; on a 2-core box that lowers wall figures.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench.null_trunk import null_trunk_repository  # noqa: E402
from bench.processes import ServerProcess, free_ports  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def build_repository(channels: int, workdir: Path, template: Path = REPO_ROOT / "model_repository") -> Path:
    """A random-weight model `channels` wide with the schema and tracks of `template`'s card, exported."""
    from bench.random_model import random_repository

    return random_repository(channels, workdir, template=template)


def bench_raw(repository: Path, windows: int, requests: int, threads: int, seq_len: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    device = os.environ.get("MFD_DEVICE", "cpu")  # the raw trunk on the service's device (scripts/gpu_check.sh)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    trunk = torch.jit.load(str(repository / "mfd_trunk" / "1" / "model.pt"), map_location=device).eval()
    tokens = torch.from_numpy(np.random.default_rng(0).integers(0, 4, (windows, seq_len), dtype=np.uint8))
    with torch.inference_mode():
        for _ in range(3):
            trunk(tokens.to(device)).cpu()
        latencies = []
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(requests):
            t0 = time.perf_counter()
            trunk(tokens.to(device)).cpu()  # host to device and back, as the service pays it
            sync()
            latencies.append(time.perf_counter() - t0)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"windows_per_s": windows * requests / elapsed, "windows_per_cpu_s": windows * requests / cpu,
            "p50_ms": 1e3 * percentile(latencies, 50), "p95_ms": 1e3 * percentile(latencies, 95),
            "min_ms": 1e3 * min(latencies)}


class Service(ServerProcess):
    """A `bentoml serve` process group on free loopback ports; `cpu_seconds()` sums its processes' CPU time."""

    LOG_NAME = "bentoml.log"
    LOG_TAIL = 4000
    WHAT = "bentoml serve"

    def __init__(self, repository: Path, threads: int, workdir: Path, extra_env: dict[str, str] | None = None):
        super().__init__(workdir)
        port, self.grpc_port = free_ports(2)
        env = {**os.environ, "MFD_MODEL_REPOSITORY": str(repository), "MFD_GRPC_PORT": str(self.grpc_port),
               "MFD_GRPC_HOST": "127.0.0.1", "MFD_TORCH_THREADS": str(threads), "MFD_MAX_SEQUENCES": "4096",
               "MFD_MAX_INFLIGHT": "1024", "BENTOML_HOME": str(workdir / "bentoml_home"),
               "PYTHONPATH": str(REPO_ROOT), **(extra_env or {})}
        self.url = f"http://127.0.0.1:{port}"
        self.grpc_url = f"127.0.0.1:{self.grpc_port}"
        self.run([sys.executable, "-m", "bentoml", "serve", "service.service:MFDService", "--host", "127.0.0.1",
                  "--port", str(port)], 180, env=env, cwd=REPO_ROOT, poll_s=0.3)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def cpu_seconds(self) -> float:
        """user + system CPU time of the service's processes (the arbiter and every worker below it)."""
        import psutil

        total = 0.0
        try:
            root = psutil.Process(self.process.pid)
            processes = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0.0
        for proc in processes:
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total


async def _drive(call, requests: int, concurrency: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    remaining = [requests]

    async def worker() -> None:
        while remaining[0] > 0:
            remaining[0] -= 1
            t0 = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - start, latencies


async def bench_http(service: Service, body: bytes, windows: int, requests: int, concurrency: int) -> dict:
    import httpx

    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=concurrency)) as client:
        headers = {"content-type": "application/json"}

        async def call() -> None:
            response = await client.post(f"{service.url}/predict", content=body, headers=headers)
            response.raise_for_status()

        for _ in range(2):
            await call()
        return await _measure(service, call, windows, requests, concurrency)


def infer_request(tokens: np.ndarray, conditions: list) -> object:
    """A KServe v2 ModelInferRequest: TOKENS UINT8 [N, L] raw, conditions once as a JSON parameter."""
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name="mfd")
    request.inputs.add(name="TOKENS", datatype="UINT8", shape=list(tokens.shape))
    request.raw_input_contents.append(np.ascontiguousarray(tokens, np.uint8).tobytes())
    request.parameters["conditions"].string_param = json.dumps(conditions)
    return request


async def bench_grpc(service: Service, request, windows: int, requests: int, concurrency: int) -> dict:
    import grpc
    from tritonclient.grpc import service_pb2_grpc

    async with grpc.aio.insecure_channel(service.grpc_url, options=[
            ("grpc.max_receive_message_length", 256 << 20), ("grpc.max_send_message_length", 256 << 20)]) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)

        async def call() -> None:
            response = await stub.ModelInfer(request)
            assert len(response.raw_output_contents) == 4

        for _ in range(2):
            await call()
        return await _measure(service, call, windows, requests, concurrency)


async def _measure(service: Service, call, windows: int, requests: int, concurrency: int) -> dict:
    cpu0 = service.cpu_seconds()
    elapsed, latencies = await _drive(call, requests, concurrency)
    cpu = max(service.cpu_seconds() - cpu0, 1e-9)
    return {"windows_per_s": windows * requests / elapsed, "windows_per_cpu_s": windows * requests / cpu,
            "p50_ms": 1e3 * percentile(latencies, 50), "p95_ms": 1e3 * percentile(latencies, 95),
            "min_ms": 1e3 * min(latencies)}


def median(rounds: list[dict]) -> dict:
    return {k: float(np.median([r[k] for r in rounds])) for k in rounds[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repository", type=Path, default=REPO_ROOT / "model_repository")
    parser.add_argument("--channels", type=int, default=0, help="build+export a random model of this width")
    parser.add_argument("--null-trunk", action="store_true", help="measure the service layer alone")
    parser.add_argument("--windows-per-request", type=int, default=None,
                        help="default 16 (256 with --null-trunk: whole requests as a GPU client would send)")
    parser.add_argument("--conditions", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--requests", type=int, default=None, help="per round; default 64 (300 with --null-trunk)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads; default all CPUs (1 with --null-trunk)")
    parser.add_argument("--omp-wait-policy", default="PASSIVE", choices=("PASSIVE", "ACTIVE"),
                        help="OMP_WAIT_POLICY for the raw trunk and the service alike (PASSIVE: idle torch threads "
                             "sleep instead of spinning, which otherwise takes cores from the event loop)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternate raw and service rounds, report medians (robust to a busy machine)")
    args = parser.parse_args(argv)
    if "torch" not in sys.modules:  # libgomp reads it once, when torch loads; the service inherits it
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy
    windows = args.windows_per_request or (256 if args.null_trunk else 16)
    requests = args.requests or (300 if args.null_trunk else 64)
    args.threads = args.threads or (1 if args.null_trunk else os.cpu_count() or 1)

    with tempfile.TemporaryDirectory(prefix="mfd-bench-") as tmp:
        workdir = Path(tmp)
        repository = build_repository(args.channels, workdir) if args.channels else args.repository.resolve()
        card = json.loads((repository / "model_card.json").read_text())
        served_repository = null_trunk_repository(repository, workdir) if args.null_trunk else repository
        seq_len = card["seq_len"]
        tracks = [t["id"] for t in card["tracks"]]
        rng = random.Random(0)
        sequences = ["".join(rng.choice("ACGT") for _ in range(seq_len)) for _ in range(windows)]
        conditions = [tracks[i % len(tracks)] if i < len(tracks) else {"lab": None} for i in range(args.conditions)]
        body = json.dumps({"sequences": sequences, "conditions": conditions}).encode()
        from mfd_common import tokens as dna
        request = infer_request(dna.encode_many(sequences), conditions)
        single_body = json.dumps({"sequences": sequences[:1], "conditions": conditions}).encode()
        single_request = infer_request(dna.encode_many(sequences[:1]), conditions)

        # The null trunk stands in for a GPU: batch as the service would for one (MFD_MAX_BATCH's GPU default
        # is 64; a free trunk makes every batch boundary pure overhead, so allow whole requests).
        service = Service(served_repository, args.threads, workdir,
                          {"MFD_MAX_BATCH": "256"} if args.null_trunk else None)
        rows: dict[str, list[dict]] = {}
        try:
            for _ in range(args.rounds):
                if not args.null_trunk:
                    rows.setdefault("raw trunk", []).append(bench_raw(repository, windows, requests, args.threads,
                                                                      seq_len))
                for c in (args.concurrency, 1):
                    n = requests if c > 1 else max(requests // 4, 8)
                    rows.setdefault(f"JSON/HTTP c={c}", []).append(
                        asyncio.run(bench_http(service, body, windows, n, c)))
                    rows.setdefault(f"binary gRPC c={c}", []).append(
                        asyncio.run(bench_grpc(service, request, windows, n, c)))
                if not args.null_trunk:  # batch-1 latency: one window per request, one client, vs one raw call
                    rows.setdefault("raw trunk 1 window", []).append(bench_raw(repository, 1, 20, args.threads,
                                                                               seq_len))
                    rows.setdefault("JSON/HTTP 1 window", []).append(
                        asyncio.run(bench_http(service, single_body, 1, 20, 1)))
                    rows.setdefault("binary gRPC 1 window", []).append(
                        asyncio.run(bench_grpc(service, single_request, 1, 20, 1)))
        finally:
            service.stop()
        result = {name: median(r) for name, r in rows.items()}

    channels = card.get("config", {}).get("model", {}).get("channels", "?")
    print(f"model {card['model_name']} (d={card['d_tech'] + card['d_bio']}, channels {channels}, seq_len {seq_len})"
          f"{' with a NULL trunk' if args.null_trunk else ''}; {windows} windows × {args.conditions} conditions per "
          f"request, {requests} requests at c={args.concurrency}, {args.threads} torch threads, {os.cpu_count()} "
          f"CPUs (load avg {os.getloadavg()[0]:.1f}), median of {args.rounds} alternating rounds")
    print(f"{'':22} {'windows/s':>11} {'win/CPU-s':>11} {'p50 ms':>9} {'p95 ms':>9} {'min ms':>9}")
    for name, r in result.items():
        # a space before every column: a value wider than its column (a near-zero CPU time in a tiny run) must
        # still parse as its own field
        print(f"{name:22} {r['windows_per_s']:11.1f} {r['windows_per_cpu_s']:11.1f}"
              f" {r['p50_ms']:9.2f} {r['p95_ms']:9.2f} {r['min_ms']:9.2f}")
    if not args.null_trunk:
        raw = result["raw trunk"]
        for transport in ("JSON/HTTP", "binary gRPC"):
            many, one = result[f"{transport} c={args.concurrency}"], result[f"{transport} c=1"]
            single, raw1 = result[f"{transport} 1 window"], result["raw trunk 1 window"]
            print(f"{transport}: service/raw throughput {many['windows_per_s'] / raw['windows_per_s']:.2f}× "
                  f"(c={args.concurrency}), {one['windows_per_s'] / raw['windows_per_s']:.2f}× (c=1); per CPU-second "
                  f"{many['windows_per_cpu_s'] / raw['windows_per_cpu_s']:.2f}× (c={args.concurrency}); latency over "
                  f"raw, {windows} windows c=1: p50 {one['p50_ms'] - raw['p50_ms']:+.2f} ms; batch-1: p50 "
                  f"{single['p50_ms'] - raw1['p50_ms']:+.2f} ms, min {single['min_ms'] - raw1['min_ms']:+.2f} ms")
    else:
        print("windows per server CPU-second = windows/s per worker core (goals: binary ≥ 50k, JSON ≥ 15k)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
