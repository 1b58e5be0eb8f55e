"""Training throughput (windows/s) of MFD vs the baseline head on the same synthetic batches.

    python bench/bench_training.py [--channels 32] [--order 2] [--batch 64] [--steps 10] [--device cpu|cuda]

Measures full training steps (forward, BCE, independence penalty for MFD, backward, AdamW step) after warm-up
steps, on random tokens, so the number is the model's cost and not the data pipeline's. Prints a table and the
MFD/baseline ratio (the price of the metadata head and the penalty).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mfd_common.codec import GroupLayout, MetadataCodec, Variable  # noqa: E402
from training.model import MFDModel, ModelConfig  # noqa: E402
from training.penalty import AdversarialPenalty, cross_covariance_penalty  # noqa: E402


def bench_codec(n_tracks: int) -> tuple[MetadataCodec, list[dict]]:
    rows = [{"biosample": f"cell{i % 7}", "target": f"tf{i % 11}", "lab": f"lab{i % 3}", "assay": f"assay{i % 2}"}
            for i in range(n_tracks)]
    variables = [Variable("biosample", "category", "biological", "embed", 8), Variable("target", "category", "biological"),
                 Variable("lab", "category", "technical"), Variable("assay", "category", "technical")]
    groups = {"biological": GroupLayout(direct=["target"], interact=["biosample", "target"], out_dim=16),
              "technical": GroupLayout(direct=["lab", "assay"], interact=["lab", "assay"], out_dim=8)}
    return MetadataCodec.fit(variables, groups, rows), rows


def measure(kind: str, penalty: str, args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    codec, rows = bench_codec(args.tracks)
    cfg = ModelConfig(channels=args.channels, onehot_order=args.order, head_kind=kind)
    model = MFDModel(cfg, codec, n_tracks=args.tracks).to(args.device).train()
    codes = torch.as_tensor(codec.encode_many(rows), device=args.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    adversary = AdversarialPenalty(model.d_bio, model.d_tech).to(args.device) if penalty == "adversarial" else None
    tokens = torch.randint(0, 5, (args.batch, cfg.seq_len), dtype=torch.uint8, device=args.device)
    labels = (torch.rand(args.batch, args.tracks, device=args.device) < 0.05).float()

    def step() -> None:
        out = model(tokens, codes)
        loss = F.binary_cross_entropy_with_logits(out["logits"], labels)
        f = out["features"]
        if penalty == "covariance":
            loss = loss + cross_covariance_penalty(f[:, model.d_tech:], f[:, :model.d_tech])
        elif adversary is not None:
            adversary.discriminator_step(f[:, model.d_tech:], f[:, :model.d_tech])
            loss = loss + adversary(f[:, model.d_tech:], f[:, :model.d_tech])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(args.warmup):
        step()
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    return {"model": kind, "penalty": penalty, "windows_per_s": args.batch * args.steps / elapsed,
            "ms_per_step": 1000 * elapsed / args.steps, "parameters": sum(p.numel() for p in model.parameters())}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--order", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--tracks", type=int, default=14)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [measure("baseline", "none", args), measure("mfd", "covariance", args),
            measure("mfd", "adversarial", args)]
    base = rows[0]["windows_per_s"]
    for row in rows:
        row["ratio_vs_baseline"] = row["windows_per_s"] / base
    if args.json:
        print(json.dumps({"device": args.device, "threads": torch.get_num_threads(), "rows": rows}, indent=2))
        return
    print(f"device={args.device} threads={torch.get_num_threads()} channels={args.channels} order={args.order} "
          f"batch={args.batch} seq_len=2176 steps={args.steps}")
    print(f"{'model':<10}{'penalty':<13}{'params':>10}{'windows/s':>12}{'ms/step':>10}{'vs baseline':>13}")
    for row in rows:
        print(f"{row['model']:<10}{row['penalty']:<13}{row['parameters']:>10,}{row['windows_per_s']:>12.1f}"
              f"{row['ms_per_step']:>10.1f}{row['ratio_vs_baseline']:>13.2f}")


if __name__ == "__main__":
    main()
