#!/usr/bin/env python3
"""Ops tooling (GPU gate): the bundled model in the embedded backend on CUDA, fp32/fp16/bf16, against CPU fp32.

    python scripts/gpu_check.py --report gpu_check.md [--repository model_repository] [--require-cuda]

Loads the repository with the service's own EmbeddedBackend (what `MFD_DEVICE=cuda MFD_PRECISION=…` runs), scores
seeded windows (N bases included) and every trained track's condition codes, and compares features and head
weights with CPU fp32. The error is relative to the largest CPU magnitude of each output (features are
batch-normalised, so O(1)); each precision has its own tolerance (TOLERANCES). Without CUDA the CUDA rows are
reported as SKIPPED with the reason, and the CPU rows (fp32 reloaded, bf16 under autocast) still run, so the
comparison code itself is exercised everywhere. Appends a markdown section to --report; exit 1 on a parity
failure, 3 when --require-cuda and no GPU is visible.
"""
from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from service.backends.embedded import EmbeddedBackend  # noqa: E402
from service.repository import load_repository  # noqa: E402
from service.settings import Settings  # noqa: E402

#: Max error relative to the largest CPU fp32 magnitude, per precision. fp32 on CUDA may use TF32 convolutions
#: (cuDNN's default), hence not 1e-6. First estimates: to be confirmed by the first GPU run (bench/README.md).
TOLERANCES = {"fp32": 5e-3, "fp16": 2e-2, "bf16": 6e-2}


def outputs(repository: Path, device: str, precision: str, tokens: np.ndarray, codes: np.ndarray
            ) -> tuple[dict[str, np.ndarray], float]:
    """Features and head weights from the embedded backend on `device` in `precision`, and the trunk's seconds."""
    settings = Settings(model_repository=repository, backend="embedded", device=device, precision=precision)
    backend = EmbeddedBackend(settings, load_repository(repository))

    async def run():
        await backend.start()
        try:
            await backend.features(tokens[:2])  # warm-up (CUDA context, cuDNN autotune)
            start = time.perf_counter()
            features = await backend.features(tokens)
            elapsed = time.perf_counter() - start
            head = await backend.head(codes)
            return {"features": features, "w_tech": head.w_tech, "w_bio": head.w_bio, "bias": head.bias}, elapsed
        finally:
            await backend.close()

    return asyncio.run(run())


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    scale = max(float(np.max(np.abs(want))), 1e-6)
    return float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)))) / scale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", type=Path, default=REPO_ROOT / "model_repository")
    parser.add_argument("--report", type=Path, required=True, help="markdown file to append the results to")
    parser.add_argument("--windows", type=int, default=64)
    parser.add_argument("--require-cuda", action="store_true", help="exit 3 instead of skipping without a GPU")
    args = parser.parse_args(argv)

    repository = load_repository(args.repository)
    card = repository.card
    rng = np.random.default_rng(2024)
    tokens = rng.integers(0, 4, size=(args.windows, card.seq_len), dtype=np.uint8)
    tokens[rng.random(tokens.shape) < 0.01] = 4
    codes = repository.codec.encode_many([t.metadata for t in card.tracks])

    reference, cpu_s = outputs(args.repository, "cpu", "fp32", tokens, codes)
    rows = [("cpu", "fp32 (reference)", "-", f"{args.windows / cpu_s:,.0f}", "ref")]
    runs = [("cpu", "fp32"), ("cpu", "bf16")]
    cuda = torch.cuda.is_available()
    if cuda:
        runs += [("cuda", p) for p in ("fp32", "fp16", "bf16")]
        skip = None
    else:
        skip = (f"no NVIDIA GPU visible to torch (torch.cuda.is_available() is False; torch {torch.__version__}, "
                f"built for CUDA {torch.version.cuda})")
    failures = []
    for device, precision in runs:
        got, seconds = outputs(args.repository, device, precision, tokens, codes)
        errors = {name: relative_error(got[name], reference[name]) for name in reference}
        worst = max(errors.values())
        # The head stays fp32 in every precision (embedded backend), so it must match as fp32 does.
        tolerance = TOLERANCES[precision] if device == "cuda" or precision != "fp32" else 1e-6
        ok = worst <= tolerance and all(got[n].shape == reference[n].shape for n in reference)
        if not ok:
            failures.append(f"{device} {precision}: max relative error {worst:.3g} > {tolerance:g} ({errors})")
        rows.append((device, precision, f"{worst:.2e} (tol {tolerance:g})", f"{args.windows / seconds:,.0f}",
                     "ok" if ok else "FAIL"))
    if skip:
        for precision in ("fp32", "fp16", "bf16"):
            rows.append(("cuda", precision, "-", "-", "SKIPPED"))

    lines = ["## Embedded backend parity: CUDA vs CPU fp32", "",
             f"repository `{args.repository}` (model {card.model_name!r}, seq_len {card.seq_len}, "
             f"d={card.d_features}); {args.windows} seeded windows, {len(card.tracks)} track conditions; torch "
             f"{torch.__version__}, Python {platform.python_version()}"
             + (f", GPU {torch.cuda.get_device_name(0)}" if cuda else ""), ""]
    if skip:
        lines += [f"**CUDA parts SKIPPED: {skip}.**", ""]
    lines += ["| device | precision | max rel. error vs CPU fp32 | windows/s (one call) | result |",
              "| --- | --- | --- | --- | --- |"]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    lines.append("")
    with open(args.report, "a") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    if failures:
        print("PARITY FAILED: " + "; ".join(failures), file=sys.stderr)
        return 1
    if skip and args.require_cuda:
        print(f"CUDA required: {skip}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
