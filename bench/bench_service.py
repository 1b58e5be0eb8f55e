"""End-to-end service throughput and latency vs the raw TorchScript trunk, measured in the same run.

    python bench/bench_service.py [--repository model_repository] [--channels 0] [--windows-per-request 16]
                                  [--conditions 4] [--concurrency 8] [--requests 64] [--threads 2] [--rounds 3]

Rounds alternate (raw, service, raw, …) and medians are reported, so load from other processes hits both alike.
1. raw trunk: `torch.jit.load(mfd_trunk/1/model.pt)` in this process, batches of --windows-per-request windows,
   back to back (the ceiling: no HTTP, JSON, conditions or batching);
2. service: a real `bentoml serve` (embedded backend) on a free loopback port, --concurrency clients posting
   /predict with --windows-per-request sequences × --conditions conditions each (throughput), and one client
   alone (c=1: the per-request latency overhead over the raw trunk call).
Both use --threads torch threads. Prints windows/s and p50/p95 latency of each, and the ratios. With --channels N
a random-weight model of that width is built and exported first (needs the training code; 768 = the paper's).
The client runs on the same machine and takes CPU from the server; on a 2-core box that lowers the service figures.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def build_repository(channels: int, workdir: Path) -> Path:
    from tests.fixtures.models import build_tiny_checkpoint
    from training.export import export_repository

    checkpoint = build_tiny_checkpoint(workdir / "ckpt", channels=channels)
    return Path(export_repository(checkpoint, workdir / "repository"))


def bench_raw(repository: Path, windows: int, requests: int, threads: int, seq_len: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    trunk = torch.jit.load(str(repository / "mfd_trunk" / "1" / "model.pt")).eval()
    tokens = torch.from_numpy(np.random.default_rng(0).integers(0, 4, (windows, seq_len), dtype=np.uint8))
    with torch.inference_mode():
        for _ in range(3):
            trunk(tokens)
        latencies = []
        start = time.perf_counter()
        for _ in range(requests):
            t0 = time.perf_counter()
            trunk(tokens)
            latencies.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - start
    return {"windows_per_s": windows * requests / elapsed, "p50_ms": 1e3 * percentile(latencies, 50),
            "p95_ms": 1e3 * percentile(latencies, 95)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_service(repository: Path, threads: int, workdir: Path) -> tuple[subprocess.Popen, str]:
    port, grpc_port = free_port(), free_port()
    env = {**os.environ, "MFD_MODEL_REPOSITORY": str(repository), "MFD_GRPC_PORT": str(grpc_port),
           "MFD_GRPC_HOST": "127.0.0.1", "MFD_TORCH_THREADS": str(threads), "MFD_MAX_SEQUENCES": "4096",
           "BENTOML_HOME": str(workdir / "bentoml_home")}
    log = open(workdir / "bentoml.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "bentoml", "serve", "service.service:MFDService",
                                "--host", "127.0.0.1", "--port", str(port)], cwd=REPO_ROOT, env=env,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError((workdir / "bentoml.log").read_text()[-4000:])
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as r:
                if r.status == 200:
                    return process, url
        except OSError:
            time.sleep(0.3)
    raise RuntimeError("service did not become ready")


def stop_service(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


async def bench_service(url: str, body: bytes, windows: int, requests: int, concurrency: int) -> dict:
    import httpx

    latencies: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=concurrency)) as client:
        headers = {"content-type": "application/json"}
        for _ in range(2):  # warm-up
            (await client.post(f"{url}/predict", content=body, headers=headers)).raise_for_status()
        for i in range(requests):
            queue.put_nowait(i)

        async def worker() -> None:
            while True:
                try:
                    queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                t0 = time.perf_counter()
                response = await client.post(f"{url}/predict", content=body, headers=headers)
                response.raise_for_status()
                latencies.append(time.perf_counter() - t0)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return {"windows_per_s": windows * requests / elapsed, "p50_ms": 1e3 * percentile(latencies, 50),
            "p95_ms": 1e3 * percentile(latencies, 95)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repository", type=Path, default=REPO_ROOT / "model_repository")
    parser.add_argument("--channels", type=int, default=0, help="build+export a random model of this width")
    parser.add_argument("--windows-per-request", type=int, default=16)
    parser.add_argument("--conditions", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternate raw and service rounds, report medians (robust to a busy machine)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="mfd-bench-") as tmp:
        workdir = Path(tmp)
        repository = build_repository(args.channels, workdir) if args.channels else args.repository
        card = json.loads((repository / "model_card.json").read_text())
        seq_len = card["seq_len"]
        tracks = [t["id"] for t in card["tracks"]]
        rng = random.Random(0)
        sequences = ["".join(rng.choice("ACGT") for _ in range(seq_len)) for _ in range(args.windows_per_request)]
        conditions = [tracks[i % len(tracks)] if i < len(tracks) else {"lab": None} for i in range(args.conditions)]
        body = json.dumps({"sequences": sequences, "conditions": conditions}).encode()

        process, url = start_service(repository, args.threads, workdir)
        raw_rounds, served_rounds, single_rounds = [], [], []
        try:
            for _ in range(args.rounds):
                raw_rounds.append(bench_raw(repository, args.windows_per_request, args.requests, args.threads,
                                            seq_len))
                served_rounds.append(asyncio.run(bench_service(url, body, args.windows_per_request, args.requests,
                                                               args.concurrency)))
                single_rounds.append(asyncio.run(bench_service(url, body, args.windows_per_request,
                                                               max(args.requests // 4, 8), 1)))
        finally:
            stop_service(process)

        def median(rounds: list[dict]) -> dict:
            return {k: float(np.median([r[k] for r in rounds])) for k in rounds[0]}

        raw, served, single = median(raw_rounds), median(served_rounds), median(single_rounds)

    print(f"model {card['model_name']} (d={card['d_tech'] + card['d_bio']}, channels "
          f"{card.get('config', {}).get('model', {}).get('channels', '?')}), {args.windows_per_request} windows × "
          f"{args.conditions} conditions per request, concurrency {args.concurrency}, {args.requests} requests, "
          f"{args.threads} torch threads, {os.cpu_count()} CPUs, median of {args.rounds} alternating rounds")
    print(f"{'':22}{'windows/s':>12}{'p50 ms':>10}{'p95 ms':>10}")
    rows = (("raw trunk", raw), (f"service HTTP c={args.concurrency}", served), ("service HTTP c=1", single))
    for name, r in rows:
        print(f"{name:22}{r['windows_per_s']:12.1f}{r['p50_ms']:10.1f}{r['p95_ms']:10.1f}")
    print(f"service/raw throughput {served['windows_per_s'] / raw['windows_per_s']:.2f}× (c={args.concurrency}), "
          f"{single['windows_per_s'] / raw['windows_per_s']:.2f}× (c=1); latency at c=1: "
          f"p50 {single['p50_ms'] / raw['p50_ms']:.2f}×, p95 {single['p95_ms'] / raw['p95_ms']:.2f}× "
          f"(+{single['p50_ms'] - raw['p50_ms']:.1f} ms p50 overhead per request)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
