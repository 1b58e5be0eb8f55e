"""Batch tool at scale: variants/s and peak memory of `python -m service.batch variants` (CPU, embedded backend).

    python -m bench.bench_variants [--records 1000000] [--geometries 1x1,7x2] [--threads 2]
                                   [--compression bgzf|gzip] [--out-dir DIR]

Generates the demo genome (training.demo_data, deterministic) and a VCF of `--records` random SNVs on all its
chromosomes, written as text straight into BGZF (or plain gzip, which the batch tool must recompress while
streaming), then times the whole command (process start, model load, input pass, scoring, VCF write) with the
bundled model (model_repository/, C=30) for each shifts × strands geometry. Peak RSS is the batch process's own
(`wait4` rusage), so the bound the issue sets, < 1 GB whatever the input size, is checked per geometry. The
issue's figure is the default 1 M records; small `--records` counts only show the bench works. The bench may use
training (the service code it measures does not).
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RSS_LIMIT_MB = 1024


def _sequences(fasta: Path) -> dict[str, str]:
    seqs: dict[str, list[str]] = {}
    name = ""
    for line in fasta.read_text().splitlines():
        if line.startswith(">"):
            name = line[1:].split()[0]
            seqs[name] = []
        elif line:
            seqs[name].append(line.strip())
    return {k: "".join(v).upper() for k, v in seqs.items()}


def make_inputs(directory: Path, n: int, compression: str, seed: int = 0) -> tuple[Path, Path]:
    """The demo genome and a sorted VCF of `n` SNVs (repeated positions allowed) 5 kb away from chromosome ends."""
    import pysam

    from training.data.demo_genome import generate

    generate(directory / "demo")
    fasta = directory / "demo" / "genome.fa"
    seqs = _sequences(fasta)
    rng = random.Random(seed)
    total = sum(len(s) - 10_000 for s in seqs.values())
    header = ("##fileformat=VCFv4.2\n" + "".join(f"##contig=<ID={k},length={len(v)}>\n" for k, v in seqs.items())
              + "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")
    path = directory / "bench.vcf.gz"
    handle = pysam.BGZFile(str(path), "wb") if compression == "bgzf" else gzip.open(path, "wb", compresslevel=1)
    with handle:
        handle.write(header.encode())
        left = n
        for i, (chrom, seq) in enumerate(seqs.items()):
            count = left if i == len(seqs) - 1 else round(n * (len(seq) - 10_000) / total)
            left -= count
            positions = sorted(rng.randrange(5_000, len(seq) - 5_000) for _ in range(count))
            lines = []
            for pos in positions:
                ref = seq[pos - 1]
                alt = rng.choice([b for b in "ACGT" if b != ref])
                lines.append(f"{chrom}\t{pos}\t.\t{ref}\t{alt}\t.\tPASS\t.\n")
                if len(lines) == 65536:
                    handle.write("".join(lines).encode())
                    lines = []
            handle.write("".join(lines).encode())
    return fasta, path


def run(fasta: Path, vcf: Path, out: Path, shifts: int, strands: int, threads: int) -> tuple[float, int, dict]:
    """(seconds end to end, peak RSS in MB of the batch process, its JSON summary)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads),
           "MFD_TORCH_THREADS": str(threads)}
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "service.batch", "variants", str(vcf), "--fasta",
                                    str(fasta), "--conditions", "DEMO001", "--out", str(out), "--shifts",
                                    str(shifts), "--strands", str(strands), "--no-progress"],
                                   env=env, stdout=stdout, stderr=stderr, cwd=ROOT)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        elapsed = time.perf_counter() - start
        stdout.seek(0)
        stderr.seek(0)
        if process.returncode != 0:
            raise SystemExit(stderr.read()[-3000:])
        summary = json.loads(stdout.read().strip().splitlines()[-1])
    return elapsed, usage.ru_maxrss // 1024, summary  # Linux: ru_maxrss in KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--geometries", default="1x1,7x2", help="shifts x strands per run, comma-separated")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compression", choices=("bgzf", "gzip"), default="bgzf")
    parser.add_argument("--out-dir", type=Path, default=None, help="keep inputs and outputs here")
    args = parser.parse_args()
    geometries = [tuple(int(x) for x in g.split("x")) for g in args.geometries.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        directory = args.out_dir or Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        fasta, vcf = make_inputs(directory, args.records, args.compression)
        print(f"input: {args.records} records, {vcf.stat().st_size / 1e6:.1f} MB ({args.compression})")
        results = []
        for shifts, strands in geometries:
            elapsed, rss, summary = run(fasta, vcf, directory / f"out_{shifts}x{strands}.vcf.gz", shifts, strands,
                                        args.threads)
            rate = summary["scored"] / elapsed
            results.append({"geometry": f"{shifts}x{strands}", "records": summary["records"],
                            "scored": summary["scored"], "seconds": round(elapsed, 1),
                            "variants_per_s": round(rate, 1), "peak_rss_mb": rss, "rss_ok": rss < RSS_LIMIT_MB})
            print(f"ensemble {shifts}x{strands}: {summary['scored']} variants in {elapsed:.1f} s end to end = "
                  f"{rate:.1f} variants/s ({2 * shifts * strands} windows per variant); peak RSS {rss} MB "
                  f"({'<' if rss < RSS_LIMIT_MB else '>='} {RSS_LIMIT_MB} MB)")
        print(json.dumps({"records": args.records, "threads": args.threads, "compression": args.compression,
                          "runs": results}))
        if not all(r["rss_ok"] for r in results):
            raise SystemExit(f"peak RSS over {RSS_LIMIT_MB} MB")


if __name__ == "__main__":
    main()
