"""Bench: the demo claims' margins over training seeds and torch thread counts (`python -m bench.demo_claims_sweep`).

Why: a scientific claim tested near its threshold fails on some other CPU. This trains the MFD/baseline pair of
`tests/test_training_demo.py` (the claims flavour of the demo data, same preset) for each (seed, threads), prints
each run's claim margins (`training.evaluation.demo_claims`) and the min / median / max per claim, so the test's
thresholds can be set below the worst run with room. The pair trains side by side, one process per model, as the
test fixture does.

    python -m bench.demo_claims_sweep --seeds 0 1 2 3 4 --threads 1 2 --out build/claims_sweep
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from training.evaluation.demo_claims import claims, gc_readouts
from training.data.demo_genome import generate
from training.evaluation.demo_preset import DEMO_CI_OVERRIDES, claims_spec

ROOT = Path(__file__).resolve().parents[1]


def _train_stage(data_dir: Path, out: Path, runs: dict[str, dict], threads: int, resume: bool,
                 stop_after: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads)}
    procs = {}
    for name, run in runs.items():
        sets = [a for k, v in {**run, "train.threads": threads}.items() for a in ("--set", f"{k}={v}")]
        cmd = [sys.executable, "-m", "training.train", "--config", str(data_dir / "config.yaml"), "--out",
               str(out / name), "--no-progress", "--stop-after", str(stop_after),
               *(["--resume"] if resume else ["--force"]), *sets]
        procs[name] = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       text=True)
    for name, proc in procs.items():
        output, _ = proc.communicate()
        with open(out / f"{name}.log", "a") as log:
            log.write(output)
        if proc.returncode != 0:
            raise SystemExit(f"training {name} failed:\n{output[-3000:]}")


def train_pair_budgets(data_dir: Path, out: Path, overrides: dict, threads: int,
                       budgets: list[int]) -> dict[int, dict[str, Path]]:
    """The pair trained once to max(budgets) epochs, snapshotted at each budget.

    With the reference's constant learning rate and per-epoch seeding, stopping at epoch n (`--stop-after`) and
    resuming is exact, so the snapshot at n is the checkpoint a run of n epochs keeps (best val/loss so far, test
    metrics of that one): one run answers every budget.
    """
    runs = {"mfd": {**overrides, "train.epochs": max(budgets)},
            "baseline": {**overrides, "train.epochs": max(budgets), "model.head_kind": "baseline",
                         "penalty.kind": "none"}}
    out.mkdir(parents=True, exist_ok=True)
    snapshots, done = {}, 0
    for budget in sorted(budgets):
        _train_stage(data_dir, out, runs, threads, resume=done > 0, stop_after=budget - done)
        done = budget
        snap = out / f"epochs{budget}"
        for name in runs:
            shutil.copytree(out / name, snap / name, dirs_exist_ok=True)
        snapshots[budget] = {name: snap / name for name in runs}
    return snapshots


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="extra override on top of the CI preset (repeatable)")
    parser.add_argument("--budgets", type=int, nargs="+", default=[int(DEMO_CI_OVERRIDES["train.epochs"])],
                        help="epoch budgets to report, from one run per (seed, threads)")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "claims_sweep")
    args = parser.parse_args(argv)
    data_dir = args.out / "demo_data"
    if not (data_dir / "config.yaml").exists():
        generate(data_dir, claims_spec())
    extra = dict(item.split("=", 1) for item in args.set)
    rows = []
    for threads in args.threads:
        for seed in args.seeds:
            started = time.perf_counter()
            overrides = {**DEMO_CI_OVERRIDES, **extra, "seed": seed}
            snapshots = train_pair_budgets(data_dir, args.out / f"t{threads}_s{seed}", overrides, threads,
                                           args.budgets)
            for budget, models in snapshots.items():
                row = {"seed": seed, "threads": threads, "epochs": budget, **claims(gc_readouts(models, data_dir)),
                       "seconds": round(time.perf_counter() - started)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    (args.out / "sweep.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for budget in sorted(set(args.budgets)):
        print(f"epochs {budget}: claim      min      median   max")
        for key in ("auroc_gap", "bio_gc_share", "tech_minus_bio", "auroc_mfd", "auroc_baseline", "bio_gc_mfd",
                    "bio_gc_baseline", "tech_gc_mfd"):
            values = np.array([r[key] for r in rows if r["epochs"] == budget])
            print(f"  {key:16s} {values.min():+.3f}   {np.median(values):+.3f}   {values.max():+.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
