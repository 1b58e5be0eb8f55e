#!/usr/bin/env python3
"""Check that a running Triton serves the exported model as the embedded TorchScript backend computes it.

For the image-compatibility check on a GPU node (docs/deploy.md): Triton's libtorch backend (on GPU) loads
`model.pt` from the model repository; this script sends the same random windows and the trained tracks'
conditions through the service's Triton backend and through the embedded (in-process, CPU) backend, and fails if
features or head weights differ beyond float tolerance. A Triton whose libtorch cannot load the file never gets
here: its models are not ready and the script says so.

    kubectl -n mfd port-forward svc/mfd-triton 8001:8001 &   # or any pod's address
    python scripts/triton_parity.py --triton-url 127.0.0.1:8001 --repository /path/to/model_repository/0.2.0
"""
from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.backends.embedded import EmbeddedBackend  # noqa: E402
from service.backends.triton import TritonBackend  # noqa: E402
from service.repository import load_repository  # noqa: E402
from service.settings import Settings  # noqa: E402


async def compare(triton_url: str, repository_path: Path, windows: int, atol: float, seed: int = 0) -> dict[str, float]:
    """Max absolute difference per output between Triton and the embedded backend; raises if above `atol`."""
    repository = load_repository(repository_path)
    base = Settings(model_repository=repository_path, triton_startup_timeout_s=60.0)
    triton = TritonBackend(Settings.model_validate({**base.model_dump(), "backend": "triton", "triton_url": triton_url}),
                           repository)
    embedded = EmbeddedBackend(base, repository)
    tokens = np.random.default_rng(seed).integers(0, 5, size=(windows, repository.card.seq_len), dtype=np.uint8)
    codes = repository.codec.encode_many([t.metadata for t in repository.card.tracks])
    await triton.start()
    await embedded.start()
    try:
        pairs = {"features": (await triton.features(tokens), await embedded.features(tokens))}
        head_t, head_e = await triton.head(codes), await embedded.head(codes)
    finally:
        await triton.close()
        await embedded.close()
    for name in ("w_tech", "w_bio", "bias"):
        pairs[name] = (getattr(head_t, name), getattr(head_e, name))
    diffs = {}
    for name, (a, b) in pairs.items():
        if a.shape != b.shape:
            raise AssertionError(f"{name}: Triton shape {a.shape} != embedded {b.shape}")
        diffs[name] = float(np.max(np.abs(a - b))) if a.size else 0.0
    bad = {k: v for k, v in diffs.items() if v > atol}
    if bad:
        raise AssertionError(f"Triton and the embedded backend disagree beyond {atol}: {bad}")
    return diffs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--triton-url", required=True, help="host:port of Triton's gRPC endpoint")
    parser.add_argument("--repository", type=Path, required=True, help="the exported model repository (one version)")
    parser.add_argument("--windows", type=int, default=64)
    parser.add_argument("--atol", type=float, default=1e-3, help="GPU kernels (TF32, cuDNN) differ from CPU by ~1e-4")
    args = parser.parse_args(argv)
    diffs = asyncio.run(compare(args.triton_url, args.repository, args.windows, args.atol))
    print("max |Triton - embedded|:", ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
