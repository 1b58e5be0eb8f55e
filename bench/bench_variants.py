"""Batch tool throughput end to end: variants/s of `python -m service.batch variants` (CPU, embedded backend).

    python -m bench.bench_variants [--variants 200] [--shifts 7] [--strands 2] [--threads 2] [--out-dir DIR]

Generates the demo genome (training.demo_data, deterministic) and a VCF of random SNVs on it with pysam, then
times the whole command (process start, model load, VCF read, scoring, VCF write) for the requested ensemble and
for the single window (1 × 1) in the same run, so the ratio shows what the paper's ensemble costs. The bench may
use training (the service code it measures does not).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_inputs(directory: Path, n: int, seed: int = 0) -> tuple[Path, Path]:
    import pysam

    from training.demo_data import generate

    generate(directory / "demo")
    fasta = directory / "demo" / "genome.fa"
    sequence = "".join(line.strip() for line in fasta.read_text().splitlines()
                       if line and not line.startswith(">"))[:320_000]  # chr1 is first
    rng = random.Random(seed)
    header = pysam.VariantHeader()
    header.contigs.add("chr1", length=320_000)
    path = directory / "bench.vcf.gz"
    positions = sorted(rng.sample(range(5_000, 315_000), n))
    with pysam.VariantFile(str(path), "wz", header=header) as out:
        for pos in positions:
            ref = sequence[pos - 1]
            out.write(out.new_record(contig="chr1", start=pos - 1, alleles=(ref, rng.choice([b for b in "ACGT" if b != ref]))))
    return fasta, path


def run(fasta: Path, vcf: Path, out: Path, shifts: int, strands: int, threads: int) -> tuple[float, dict]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads),
           "MFD_TORCH_THREADS": str(threads)}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "service.batch", "variants", str(vcf), "--fasta", str(fasta),
                             "--conditions", "DEMO001", "--out", str(out), "--shifts", str(shifts), "--strands",
                             str(strands), "--no-progress"], env=env, capture_output=True, text=True, cwd=ROOT)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    return elapsed, json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", type=int, default=200)
    parser.add_argument("--shifts", type=int, default=7)
    parser.add_argument("--strands", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        fasta, vcf = make_inputs(directory, args.variants)
        rows = []
        for shifts, strands in ((args.shifts, args.strands), (1, 1)):
            elapsed, summary = run(fasta, vcf, directory / f"out_{shifts}x{strands}.vcf.gz", shifts, strands,
                                   args.threads)
            rows.append((shifts, strands, elapsed, summary["scored"]))
            print(f"ensemble {shifts}x{strands}: {summary['scored']} variants in {elapsed:.1f} s end to end = "
                  f"{summary['scored'] / elapsed:.1f} variants/s ({2 * shifts * strands} windows per variant)")
        print(f"ensemble cost: {rows[0][2] / rows[1][2]:.1f}x the single-window run (same machine, same run)")


if __name__ == "__main__":
    main()
