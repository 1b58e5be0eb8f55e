"""Trunk throughput (windows/s): eager vs TorchScript (as exported) vs reduced precision, plus export parity.

    python -m bench.bench_trunk                       # default-size model (C=768, 2176 bp) + the demo model
    python -m bench.bench_trunk --checkpoint build/demo_ckpt --batch-size 16 --seconds 5 --json out.json

For every model: export it with `training.export` (parity-checked), then time `features(tokens)` for
  eager-fp32        MFDModel.features in eval mode (the training code)
  torchscript-fp32  the exported mfd_trunk/1/model.pt (what the service's embedded backend and Triton run)
  ts-frozen-fp32    the same after torch.jit.freeze (weights inlined as constants; device-neutral)
  ts-optimized-fp32 freeze + torch.jit.optimize_for_inference (on CPU: MKLDNN-specific, so not exportable for GPU)
  eager-fp16        weights and activations in float16
  eager-bf16        weights and activations in bfloat16
  autocast-bf16     fp32 weights, torch.autocast("cpu", bfloat16)
and report windows/s, the ratio to eager-fp32 and the max |Δ| of the features against eager-fp32 (features are
batch-normalised, so |f| is O(1) for a calibrated model). Reduced precision on CPU may be slow or unsupported:
what happens is what is reported. On a GPU pass `--device cuda`.
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from mfd_common.card import CARD_FILENAME, TRUNK_MODEL, ModelCard  # noqa: E402
from training.model.checkpoint import load_checkpoint  # noqa: E402
from training.repository.export import export_repository  # noqa: E402

DEMO_CHECKPOINT = REPO_ROOT / "build" / "demo_ckpt"


def default_size_checkpoint(directory: Path) -> Path:
    """A random-weight default-size model (C=768, 2176 bp, order 2) with calibrated BatchNorm statistics."""
    from bench.random_model import random_checkpoint
    return random_checkpoint(768, directory, onehot_order=2, seed=0)


def _cast_input_hook(module: torch.nn.Module, args):
    weight = module[0].weight
    return (args[0].to(weight.dtype),)


def low_precision(model, dtype: torch.dtype):
    """A copy of the model in `dtype`; the one-hot (float32) is cast on its way into the stem."""
    low = copy.deepcopy(model).to(dtype).eval()
    low.trunk.stem.register_forward_pre_hook(_cast_input_hook)
    return low


def _call(fn, tokens, sync) -> float:
    t0 = time.perf_counter()
    fn(tokens)
    sync()
    return time.perf_counter() - t0


def time_interleaved(fns: dict[str, Callable[[torch.Tensor], torch.Tensor]], tokens: torch.Tensor, seconds: float,
                     min_reps: int, sync: Callable[[], None]) -> dict[str, list[float]]:
    """Per-call seconds, variants run round-robin so that load from other processes hits all of them alike.

    A variant leaves the rotation once it has `min_reps` calls and `seconds` of timed calls (slow reduced-precision
    kernels thus get few calls, fast ones many)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    with torch.inference_mode():
        while True:
            active = [n for n in fns if len(times[n]) < min_reps or sum(times[n]) < seconds]
            if not active:
                return times
            for name in active:
                times[name].append(_call(fns[name], tokens, sync))


def bench_model(label: str, checkpoint: Path, *, batch_size: int, seconds: float, min_reps: int, device: str,
                rc_average: bool, workdir: Path) -> dict:
    t0 = time.perf_counter()
    repository = export_repository(checkpoint, workdir / f"repo-{label}", reverse_complement_average=rc_average)
    export_s = time.perf_counter() - t0
    card = ModelCard.load(repository / CARD_FILENAME)
    parity = card.config["export"]["parity"]
    model, _ = load_checkpoint(checkpoint)
    model = model.to(device).eval()
    n_params = sum(p.numel() for p in model.trunk.parameters())
    rng = np.random.default_rng(0)
    tokens = torch.from_numpy(rng.integers(0, 4, size=(batch_size, card.seq_len), dtype=np.uint8)).to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    scripted = torch.jit.load(str(repository / TRUNK_MODEL / "1" / "model.pt"), map_location=device).eval()
    variants: dict[str, Callable[[], Callable[[torch.Tensor], torch.Tensor]]] = {
        "eager-fp32": lambda: model.features,
        "torchscript-fp32": lambda: scripted,
        "ts-frozen-fp32": lambda: torch.jit.freeze(
            torch.jit.load(str(repository / TRUNK_MODEL / "1" / "model.pt"), map_location=device).eval()),
        "ts-optimized-fp32": lambda: torch.jit.optimize_for_inference(torch.jit.freeze(
            torch.jit.load(str(repository / TRUNK_MODEL / "1" / "model.pt"), map_location=device).eval())),
        "eager-fp16": lambda: low_precision(model, torch.float16).features,
        "eager-bf16": lambda: low_precision(model, torch.bfloat16).features,
        "autocast-bf16": lambda: (lambda x: _autocast(model, x, device)),
    }
    if rc_average:  # the eager reference must average strands too
        variants.pop("eager-fp16"), variants.pop("eager-bf16"), variants.pop("autocast-bf16")
    results: dict[str, dict] = {}
    fns: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
    outputs: dict[str, torch.Tensor] = {}
    for name, make in variants.items():
        try:
            fn = make()
            with torch.inference_mode():
                outputs[name] = fn(tokens).float().cpu()  # warm-up; also the output compared for accuracy
            sync()
            fns[name] = fn
        except Exception as err:  # report unsupported precision honestly instead of failing the run
            results[name] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"}
            print(f"  {label:<14} {name:<17} unsupported: {results[name]['error']}", flush=True)
    times = time_interleaved(fns, tokens, seconds, min_reps, sync)
    reference = outputs["eager-fp32"]
    for name in fns:
        out, calls = outputs[name], times[name]
        diff = float((out - reference).abs().max())
        rel = float((out - reference).pow(2).mean().sqrt() / reference.pow(2).mean().sqrt().clamp_min(1e-12))
        finite = bool(torch.isfinite(out).all())
        rate = batch_size / float(np.median(calls))
        results[name] = {"windows_per_s": rate, "best_windows_per_s": batch_size / min(calls), "calls": len(calls),
                         "max_abs_diff_vs_eager_fp32": diff, "rel_rms_diff_vs_eager_fp32": rel, "finite": finite}
        print(f"  {label:<14} {name:<17} {rate:9.2f} windows/s median (best {batch_size / min(calls):.2f}, "
              f"{len(calls)} calls × {batch_size})  max|Δ| vs eager-fp32 {diff:.2e}  rel rms {rel:.1e}"
              f"{'' if finite else '  NON-FINITE'}", flush=True)
    base = results.get("eager-fp32", {}).get("windows_per_s")
    for entry in results.values():
        if base and "windows_per_s" in entry:
            entry["ratio_vs_eager_fp32"] = entry["windows_per_s"] / base
    return {"label": label, "checkpoint": str(checkpoint), "model_name": card.model_name,
            "channels": card.config["model"]["channels"], "seq_len": card.seq_len, "onehot_order": card.onehot_order,
            "trunk_params": n_params, "batch_size": batch_size, "reverse_complement_average": rc_average,
            "export_seconds": export_s, "export_parity": parity, "variants": results,
            "model_pt_mb": (repository / TRUNK_MODEL / "1" / "model.pt").stat().st_size / 1e6}


def _autocast(model, tokens, device):
    with torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16):
        return model.features(tokens)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, action="append",
                        help="checkpoint(s) to bench; default: a default-size random model + build/demo_ckpt")
    parser.add_argument("--no-default-size", action="store_true", help="skip the default-size (C=768) model")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=6.0, help="timed seconds per variant (at least)")
    parser.add_argument("--min-reps", type=int, default=3, help="timed calls per variant (at least)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--rc-average", action="store_true", help="bench RC-averaged exports (2× the work)")
    parser.add_argument("--json", type=Path, help="write all figures to this file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.device}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}, batch {args.batch_size}", flush=True)
    report = {"torch": torch.__version__, "device": args.device, "threads": torch.get_num_threads(),
              "batch_size": args.batch_size, "models": []}
    with tempfile.TemporaryDirectory(prefix="bench-trunk-") as tmp:
        workdir = Path(tmp)
        targets: list[tuple[str, Path]] = []
        if not args.no_default_size:
            print("building the default-size model (C=768) …", flush=True)
            targets.append(("default-C768", default_size_checkpoint(workdir / "default_ckpt")))
        for path in args.checkpoint or ([DEMO_CHECKPOINT] if (DEMO_CHECKPOINT / CARD_FILENAME).is_file() else []):
            targets.append((Path(path).name, Path(path)))
        if not (args.checkpoint or (DEMO_CHECKPOINT / CARD_FILENAME).is_file()):
            print(f"(no demo checkpoint at {DEMO_CHECKPOINT}; pass --checkpoint to bench one)", flush=True)
        for label, checkpoint in targets:
            entry = bench_model(label, checkpoint, batch_size=args.batch_size, seconds=args.seconds,
                                min_reps=args.min_reps, device=args.device, rc_average=args.rc_average,
                                workdir=workdir)
            report["models"].append(entry)
    print()
    for entry in report["models"]:
        parity = entry["export_parity"]
        print(f"{entry['label']}: C={entry['channels']}, {entry['trunk_params'] / 1e6:.2f} M trunk params, "
              f"model.pt {entry['model_pt_mb']:.1f} MB, export {entry['export_seconds']:.1f} s, "
              f"export parity max|Δ| features {parity['features_max_abs_diff']:.2e}, head "
              f"{max(parity['w_tech_max_abs_diff'], parity['w_bio_max_abs_diff'], parity['bias_max_abs_diff']):.2e}")
        for name, result in entry["variants"].items():
            if "windows_per_s" in result:
                print(f"    {name:<17} {result['windows_per_s']:9.2f} windows/s (median; best "
                      f"{result['best_windows_per_s']:.2f})  ×{result.get('ratio_vs_eager_fp32', 0):.2f} "
                      f"vs eager-fp32   max|Δ| {result['max_abs_diff_vs_eager_fp32']:.2e}  "
                      f"rel rms {result['rel_rms_diff_vs_eager_fp32']:.1e}")
            else:
                print(f"    {name:<17} unsupported: {result['error']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
