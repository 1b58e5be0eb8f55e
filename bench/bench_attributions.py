"""Attribution cost on the bundled model: ISM windows/s vs the raw trunk on the same windows, window ISM vs full.

    nice -n 19 python -m bench.bench_attributions                    # 1 sequence, 1 torch thread, 3 repeats
    python -m bench.bench_attributions --threads 4 --repeats 5 --json out.json

Measures, on one CPU (or --device cuda):
  ism          service.core.attributions.ism over the whole window through EmbeddedBackend.features, or with
               --batcher through the service's MicroBatcher (what /attribute will run): mutated windows built,
               chunked, scored for every part and condition
  raw trunk    the same mutated windows, pre-built, through the TorchScript trunk in calls of the size the ISM
               run made (--chunk, or MFD_MAX_BATCH with --batcher: 16 on CPU, faster per window than 256 there)
  ratio        ism windows/s ÷ raw trunk windows/s (target ≥ 0.9: ISM's own work is a copy and two matmuls)
  window       ISM of a window of --window-fraction of the sequence, seconds ÷ full ISM seconds (target ≈ the
               fraction: a 5% window mutates only 3 × 5% of the positions)
  gradients    seconds per sequence for gradient × input and integrated gradients (64 steps), for scale
  --http URL   also POST /attribute (ISM, the same sequences and conditions, full and window) to a running
               server of the same repository: windows/s over real HTTP, and ÷ the raw trunk's windows/s
ISM and raw runs alternate, so load from other processes hits both alike; the median of --repeats is reported.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from mfd_common import tokens as dna  # noqa: E402
from service.core.attribution_gradients import TrunkGradients  # noqa: E402
from service.core.attributions import ism, mutated_windows, plan_mutations  # noqa: E402
from service.backends.embedded import EmbeddedBackend  # noqa: E402
from service.core.batcher import MicroBatcher  # noqa: E402
from service.repository import load_repository  # noqa: E402
from service.settings import Settings  # noqa: E402

CONDITIONS = [{"biosample": "K562", "target": "GATA1", "assay": "ChIP-seq", "lab": "lab-A"},
              {"biosample": "HepG2", "target": "HNF4A", "lab": "lab-C"}]


async def run(args: argparse.Namespace) -> dict:
    repository = load_repository(args.repository)
    settings = Settings.from_env({"MFD_TORCH_THREADS": str(args.threads), "MFD_DEVICE": args.device})
    backend = EmbeddedBackend(settings, repository)
    await backend.start()
    trunk = torch.jit.load(str(repository.trunk_path), map_location=args.device).eval()
    d_tech, length = repository.card.d_tech, repository.card.seq_len
    weights = await backend.head(repository.codec.encode_many(CONDITIONS))
    batcher = MicroBatcher(backend.features, backend=backend.name, max_batch=settings.max_batch,
                           max_wait_s=settings.batch_wait_ms / 1000.0, active=lambda: 1) if args.batcher else None
    features = batcher.submit if batcher else backend.features
    tokens = np.random.default_rng(0).integers(0, 4, size=(args.sequences, length), dtype=np.uint8)
    plan = plan_mutations(tokens, 0, length)
    call = settings.max_batch if batcher else args.chunk  # windows per trunk call in the ISM run: the same here
    windows = [mutated_windows(tokens, plan, slice(b, b + call)) for b in range(0, plan.row.size, call)]
    width = max(1, round(args.window_fraction * length))
    window = ((length - width) // 2, (length - width) // 2 + width)

    def raw() -> None:
        with torch.inference_mode():
            for chunk in windows:
                trunk(torch.from_numpy(chunk).to(args.device)).float().cpu()

    async def timed(coro_or_fn) -> float:
        t0 = time.perf_counter()
        result = coro_or_fn()
        if asyncio.iscoroutine(result):
            await result
        return time.perf_counter() - t0

    for _ in range(2):  # TorchScript's profiling executor optimises during the first calls
        await backend.features(windows[0])
        raw()
    ism_s, raw_s, win_s = [], [], []
    for _ in range(args.repeats):
        ism_s.append(await timed(lambda: ism(tokens, features, weights, d_tech, chunk_size=args.chunk)))
        raw_s.append(await timed(raw))
        win_s.append(await timed(lambda: ism(tokens, features, weights, d_tech, window=window,
                                             chunk_size=args.chunk)))
    n_windows = plan.row.size
    torch.set_num_threads(args.threads)
    grads = TrunkGradients(trunk, d_tech)
    t0 = time.perf_counter()
    grads.gradient_x_input(tokens[:1], weights)
    gxi = time.perf_counter() - t0
    t0 = time.perf_counter()
    grads.integrated_gradients(tokens[:1], weights)
    ig = time.perf_counter() - t0
    if batcher:
        await batcher.close()
    await backend.close()
    ism_med, raw_med, win_med = (statistics.median(x) for x in (ism_s, raw_s, win_s))
    http = over_http(args, tokens, window, n_windows, raw_med) if args.http else {}
    return {**http, "model": repository.card.model_name, "via": "micro-batcher" if batcher else "backend",
            "max_batch": settings.max_batch, "trunk_call": call, "seq_len": length, "sequences": args.sequences,
            "conditions": len(CONDITIONS), "threads": args.threads, "device": args.device, "chunk": args.chunk,
            "windows": int(n_windows), "ism_windows_per_s": n_windows / ism_med,
            "raw_trunk_windows_per_s": n_windows / raw_med, "ism_over_raw": raw_med / ism_med,
            "window": list(window), "window_fraction": width / length, "window_over_full_seconds": win_med / ism_med,
            "gradient_x_input_s": gxi, "integrated_gradients_64_s": ig,
            "ism_s": ism_s, "raw_s": raw_s, "window_s": win_s}


def over_http(args: argparse.Namespace, tokens: np.ndarray, window: tuple[int, int], n_windows: int,
              raw_med: float) -> dict:
    """POST /attribute to `args.http`, full ISM and the window, `args.repeats` times each, alternating."""
    import httpx

    body = {"sequences": [dna.decode(t) for t in tokens], "conditions": CONDITIONS, "method": "ism"}
    full_s, win_s = [], []
    with httpx.Client(base_url=args.http, timeout=600) as client:
        for _ in range(args.repeats):
            for payload, out in ((body, full_s), ({**body, "window": {"start": window[0], "end": window[1]}}, win_s)):
                t0 = time.perf_counter()
                response = client.post("/attribute", json=payload)
                out.append(time.perf_counter() - t0)
                if response.status_code != 200:
                    raise SystemExit(f"/attribute: HTTP {response.status_code}: {response.text[:300]}")
    full, part = statistics.median(full_s), statistics.median(win_s)
    return {"http_ism_windows_per_s": n_windows / full, "http_over_raw": raw_med / full,
            "http_window_over_full_seconds": part / full, "http_ism_s": full_s, "http_window_s": win_s}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_attributions", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", type=Path, default=REPO_ROOT / "model_repository")
    parser.add_argument("--sequences", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--window-fraction", type=float, default=0.05)
    parser.add_argument("--batcher", action="store_true",
                        help="send ISM's windows through the service's MicroBatcher (MFD_MAX_BATCH windows per trunk "
                             "call, as /attribute will) instead of straight to the backend")
    parser.add_argument("--http", default=None, help="base URL of a running server of the same repository: also "
                                                     "time POST /attribute over HTTP")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    report = asyncio.run(run(args))
    print(f"{report['model']}: {report['windows']} mutated windows ({report['sequences']} × {report['seq_len']} bases, "
          f"{report['conditions']} conditions), {report['threads']} thread(s), {report['device']}, "
          f"chunk {report['chunk']}, "
          f"ISM via {report['via']}" + (f" (max_batch {report['max_batch']})" if report['via'] != "backend" else ""))
    print(f"  ism        {report['ism_windows_per_s']:9.1f} windows/s")
    print(f"  raw trunk  {report['raw_trunk_windows_per_s']:9.1f} windows/s")
    print(f"  ism / raw  {report['ism_over_raw']:9.3f}   (target >= 0.9)")
    print(f"  window {report['window_fraction']:.1%}: {report['window_over_full_seconds']:.3f} of the full ISM's time")
    print(f"  gradient x input {report['gradient_x_input_s']:.2f} s, integrated gradients (64 steps) "
          f"{report['integrated_gradients_64_s']:.2f} s per sequence")
    if args.http:
        print(f"  /attribute over HTTP {report['http_ism_windows_per_s']:9.1f} windows/s, "
              f"{report['http_over_raw']:.3f} of the raw trunk; window {report['http_window_over_full_seconds']:.3f} "
              "of the full ISM's time")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
