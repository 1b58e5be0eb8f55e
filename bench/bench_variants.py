"""Batch tool at scale: streaming memory over 1 M records, and variants/s with the real model (CPU, embedded).

    python -m bench.bench_variants [--records 1000000] [--model-records 500] [--geometries 1x1,7x2]
                                   [--threads 2] [--compression bgzf|gzip] [--out-dir DIR]

Two measurements, each reported with what it is (issue 17, "Bench"):

1. **streaming** (`--records`, default 1 M): `python -m service.batch variants` over the whole generated VCF
   with a *null trunk* (bench/null_trunk.py: the bundled repository with its trunk replaced by a module that
   returns features at once). Everything else is the real tool: VCF parsing, windows from the FASTA, tokens,
   the ensemble geometry, batching, scoring through the real head, the BGZF + index write. Reported: records,
   seconds, records/s of the tool without the trunk, and the process's **peak RSS**, which must stay < 1 GB
   whatever the input size (streaming, not loading).
2. **model** (`--model-records`, default 500): the same command with the bundled C=30 model
   (model_repository/) on the first records of a VCF generated the same way: **variants/s** of the real thing.
   On a 2-core CPU the real model manages a few variants/s at 7×2 (28 windows per variant), so 1 M records with
   it take days; the subset gives the rate, the null-trunk run the memory bound. On a GPU machine pass
   `--model-records 1000000` (and `--device cuda`) to time the whole file.

Measured 2026-12-04 (`nice -n 19 python -m bench.bench_variants`, defaults, 2 threads, on a shared 2-core machine
at load average ~7, so rates are low bounds): streaming 1 M records, null trunk: 1×1 404 s = 2,475 variants/s,
peak RSS 282 MB; 7×2 2,257 s = 443 variants/s, peak RSS 351 MB. Bundled C=30 model, 500 records: 1×1 19.1
variants/s (peak RSS 334 MB), 7×2 4.9 variants/s (377 MB).

Both run at each shifts × strands geometry of `--geometries` (1×1 and the reference 7×2 by default). Timings are
end to end (process start, model load, input pass, scoring, write); peak RSS is the batch process's own
(its /proc VmHWM, sampled until it exits). The genome is the demo genome (training.data.demo_genome, deterministic), SNVs from bench/synthetic_vcf.py. The
bench may use training (the service code it measures does not).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.null_trunk import null_trunk_repository  # noqa: E402
from bench.synthetic_vcf import read_fasta, write_snv_vcf  # noqa: E402

RSS_LIMIT_MB = 1024
BUNDLED = ROOT / "model_repository"


def make_genome(directory: Path) -> Path:
    """The demo genome (the bundled model's training genome), generated once into `directory`."""
    from training.data.demo_genome import generate

    fasta = directory / "demo" / "genome.fa"
    if not fasta.is_file():
        generate(directory / "demo")
    return fasta


def _high_water_kib(pid: int) -> int:
    """VmHWM of a running process (Linux /proc), 0 once it is gone.

    Not getrusage/wait4: Linux carries the parent's high-water mark into a forked child across exec, so a child of
    a large process (a test runner holding servers and models) reports the parent's peak, not its own."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def run(fasta: Path, vcf: Path, out: Path, repository: Path, shifts: int, strands: int, threads: int,
        device: str | None = None) -> tuple[float, int, dict]:
    """(seconds end to end, peak RSS in MB of the batch process, its JSON summary)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads),
           "MFD_TORCH_THREADS": str(threads)}
    command = [sys.executable, "-m", "service.batch", "variants", str(vcf), "--fasta", str(fasta), "--conditions",
               "DEMO001", "--out", str(out), "--shifts", str(shifts), "--strands", str(strands), "--no-progress",
               "--model-repository", str(repository)] + (["--device", device] if device else [])
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(command, env=env, stdout=stdout, stderr=stderr, cwd=ROOT)
        peak_kib = 0
        while process.poll() is None:  # its own high-water mark, sampled until it exits
            peak_kib = max(peak_kib, _high_water_kib(process.pid))
            time.sleep(0.05)
        returncode = process.returncode
        elapsed = time.perf_counter() - start
        stdout.seek(0)
        stderr.seek(0)
        if returncode != 0:
            raise SystemExit(stderr.read()[-3000:])
        summary = json.loads(stdout.read().strip().splitlines()[-1])
    return elapsed, peak_kib // 1024, summary


def measure(kind: str, fasta: Path, vcf: Path, repository: Path, geometries: list[tuple[int, int]],
            args: argparse.Namespace, directory: Path) -> list[dict]:
    results = []
    for shifts, strands in geometries:
        elapsed, rss, summary = run(fasta, vcf, directory / f"out_{kind}_{shifts}x{strands}.vcf.gz", repository,
                                    shifts, strands, args.threads, args.device)
        rate = summary["scored"] / elapsed
        results.append({"measure": kind, "trunk": "null" if kind == "streaming" else "bundled C=30",
                        "geometry": f"{shifts}x{strands}", "records": summary["records"],
                        "scored": summary["scored"], "seconds": round(elapsed, 1), "variants_per_s": round(rate, 1),
                        "peak_rss_mb": rss, "rss_ok": rss < RSS_LIMIT_MB})
        label = ("streaming, NULL trunk (service work + memory, not model speed)" if kind == "streaming"
                 else "bundled C=30 model (real variants/s)")
        print(f"{label}: ensemble {shifts}x{strands}: {summary['scored']:,} of {summary['records']:,} records scored "
              f"in {elapsed:.1f} s end to end = {rate:,.1f} variants/s ({2 * shifts * strands} windows per variant); "
              f"peak RSS {rss} MB ({'<' if rss < RSS_LIMIT_MB else '>='} {RSS_LIMIT_MB} MB)", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="streaming run (null trunk); 0 = skip")
    parser.add_argument("--model-records", type=int, default=500, help="real-model run; 0 = skip")
    parser.add_argument("--geometries", default="1x1,7x2", help="shifts x strands per run, comma-separated")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default=None, help="embedded backend device (cpu, cuda)")
    parser.add_argument("--compression", choices=("bgzf", "gzip"), default="bgzf")
    parser.add_argument("--repository", type=Path, default=BUNDLED, help="model repository (default: bundled)")
    parser.add_argument("--out-dir", type=Path, default=None, help="keep inputs and outputs here")
    args = parser.parse_args(argv)
    geometries = [tuple(int(x) for x in g.split("x")) for g in args.geometries.split(",")]
    results: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        directory = args.out_dir or Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        fasta = make_genome(directory)
        sequences = read_fasta(fasta)
        if args.records:
            vcf = write_snv_vcf(directory / "bench.vcf.gz", sequences, args.records, compression=args.compression)
            print(f"streaming input: {args.records:,} records, {vcf.stat().st_size / 1e6:.1f} MB "
                  f"({args.compression})", flush=True)
            null_repository = null_trunk_repository(args.repository, Path(tempfile.mkdtemp(dir=directory)))
            results += measure("streaming", fasta, vcf, null_repository, geometries, args, directory)
        if args.model_records:
            vcf = write_snv_vcf(directory / "bench_model.vcf.gz", sequences, args.model_records,
                                compression=args.compression)
            print(f"model input: {args.model_records:,} records ({args.compression})", flush=True)
            results += measure("model", fasta, vcf, args.repository, geometries, args, directory)
    print(json.dumps({"records": args.records, "model_records": args.model_records, "threads": args.threads,
                      "compression": args.compression, "runs": results}))
    if not all(r["rss_ok"] for r in results):
        print(f"error: peak RSS over {RSS_LIMIT_MB} MB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
