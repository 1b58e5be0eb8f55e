"""The GPU gate (scripts/gpu_check.sh) runs its CPU-only part here and says clearly that it skipped the CUDA part.

On a machine with an NVIDIA GPU the same script runs the CUDA parity rows and the CUDA benches (bench/README.md).
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
import torch

from tests.fixtures.infra import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "gpu_check.sh"


def gate_module():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO_ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: run scripts/gpu_check.sh for real")
def test_gate_runs_its_cpu_part_and_skips_cuda_with_a_clear_message(tmp_path):
    report = tmp_path / "gate.md"
    proc = subprocess.run([str(SCRIPT), "--out", str(report), "--quick"], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = report.read_text()
    assert "CUDA parts SKIPPED: no NVIDIA GPU visible to torch" in text
    assert "SKIPPED bench_trunk and bench_service on CUDA" in text and "pending" in text
    rows = [line for line in text.splitlines() if line.startswith("| cpu |")]
    assert len(rows) == 3 and all(row.rstrip(" |").endswith(("ok", "ref")) for row in rows), rows
    assert [line for line in text.splitlines() if line.startswith("| cuda |")] == \
        [f"| cuda | {p} | - | - | SKIPPED |" for p in ("fp32", "fp16", "bf16")]
    gate = gate_module()
    assert gate.main(["--report", str(tmp_path / "again.md"), "--windows", "4", "--require-cuda"]) == 3


def test_gate_fails_when_a_precision_leaves_its_tolerance(tmp_path, monkeypatch):
    gate = gate_module()
    monkeypatch.setitem(gate.TOLERANCES, "bf16", 1e-9)  # bf16 on CPU really differs from fp32 by ~1e-2
    assert gate.main(["--report", str(tmp_path / "r.md"), "--windows", "8"]) == 1
    assert "| cpu | bf16 |" in (tmp_path / "r.md").read_text() and "FAIL" in (tmp_path / "r.md").read_text()
