"""Training throughput (windows/s) of the reference preset: MFD vs the baseline head, at C=30 and C=768.

    python -m bench.bench_training [--channels 30 768] [--batch 256] [--steps 5] [--device cpu|cuda]

Measures full training steps of the authors' recipe (forward, BCE, the penalty, backward, Adam with amsgrad; for
`covariance+predictor` also the predictors' own step) after warm-up steps, on random tokens, so the number is the
model's cost and not the data pipeline's. Rows per channel count: baseline (no penalty), MFD with the covariance
penalty (the paper's default) and MFD with covariance + R² predictor (the paper's trained checkpoint). Ratios are
measured side by side in one run. The reference batch is 256; on a CPU, C=768 at batch 256 takes minutes per
step, so pass a smaller `--batch` there (windows/s barely depends on it once the batch is not tiny).
"""
from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from mfd_common.codec import GroupLayout, MetadataCodec, Variable
from training.model.network import MFDModel, ModelConfig
from training.model.penalty import IndependencePenalty


def bench_codec(n_tracks: int) -> tuple[MetadataCodec, list[dict]]:
    rows = [{"biosample": f"cell{i % 7}", "target": f"tf{i % 11}", "lab": f"lab{i % 3}", "assay": f"assay{i % 2}"}
            for i in range(n_tracks)]
    variables = [Variable("target", "category", "rescale_indep"), Variable("biosample", "category", "embed", 8),
                 Variable("lab", "category"), Variable("assay", "category")]
    groups = {"biological": GroupLayout(direct=["target"], interact=["biosample", "target"], out_dim=16),
              "technical": GroupLayout(direct=["lab"], interact=["lab", "assay"], out_dim=8)}
    return MetadataCodec.fit(variables, groups, rows), rows


def measure(channels: int, kind: str, penalty: str, args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    codec, rows = bench_codec(args.tracks)
    cfg = ModelConfig(channels=channels, head_kind=kind)
    model = MFDModel(cfg, codec, args.tracks, torch.as_tensor(codec.encode_many(rows))).to(args.device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, amsgrad=True)
    independence = IndependencePenalty(penalty, model.d_bio, model.d_tech).to(args.device)
    tokens = torch.randint(0, 5, (args.batch, cfg.window_bases), dtype=torch.uint8, device=args.device)
    labels = (torch.rand(args.batch, args.tracks, device=args.device) < 0.05).float()

    def step() -> None:
        out = model(tokens)
        f = out["features"]
        terms = independence.model_term(f[:, model.d_tech:], f[:, :model.d_tech])
        loss = F.binary_cross_entropy_with_logits(out["logits"], labels) + 0.01 * sum(terms.values(), torch.zeros(()))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        independence.adversary_step(f[:, model.d_tech:], f[:, :model.d_tech])

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
    return {"channels": channels, "model": kind, "penalty": penalty,
            "windows_per_s": args.batch * args.steps / elapsed, "ms_per_step": 1000 * elapsed / args.steps,
            "parameters": sum(p.numel() for p in model.parameters())}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, nargs="+", default=[30, 768])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--tracks", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for channels in args.channels:
        group = [measure(channels, "baseline", "none", args), measure(channels, "mfd", "covariance", args),
                 measure(channels, "mfd", "covariance+predictor", args)]
        for row in group:
            row["ratio_vs_baseline"] = row["windows_per_s"] / group[0]["windows_per_s"]
        rows += group
    if args.json:
        print(json.dumps({"device": args.device, "threads": torch.get_num_threads(), "rows": rows}, indent=2))
        return
    print(f"device={args.device} threads={torch.get_num_threads()} batch={args.batch} window=2177 bases "
          f"steps={args.steps} (reference preset: Adam amsgrad, coeff 0.01)")
    print(f"{'C':>5} {'model':<10}{'penalty':<22}{'params':>12}{'windows/s':>12}{'ms/step':>10}{'vs baseline':>13}")
    for row in rows:
        print(f"{row['channels']:>5} {row['model']:<10}{row['penalty']:<22}{row['parameters']:>12,}"
              f"{row['windows_per_s']:>12.1f}{row['ms_per_step']:>10.1f}{row['ratio_vs_baseline']:>13.2f}")


if __name__ == "__main__":
    main()
