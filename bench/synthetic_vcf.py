"""Bench layer: generated inputs for the variant benches and tests: a FASTA read into memory, random SNVs on it.

One place for both (bench/bench_variants.py and tests/test_batch_vcf_inputs.py used to carry their own FASTA
readers). The FASTA is read with pysam (htslib), as users' tools read it; sequences keep their case, so a test
can plant soft-masked stretches and a caller upper-cases when it needs reference bases.
"""
from __future__ import annotations

import gzip
import random
from pathlib import Path


def read_fasta(path: str | Path) -> dict[str, str]:
    """{name: sequence} in file order, case kept (small genomes only: everything is held in memory)."""
    import pysam

    with pysam.FastxFile(str(path)) as handle:
        return {record.name: record.sequence for record in handle}


def write_snv_vcf(path: Path, sequences: dict[str, str], n: int, *, compression: str = "bgzf", seed: int = 0,
                  margin: int = 5_000) -> Path:
    """A sorted sites-only VCF 4.2 of `n` random SNVs (repeated positions allowed) at least `margin` bases from
    chromosome ends, spread over the chromosomes by length; written as text straight into BGZF (pysam) or plain
    gzip (level 1), in chunks, so a million records take little memory."""
    import pysam

    seqs = {k: v.upper() for k, v in sequences.items() if len(v) > 2 * margin}
    rng = random.Random(seed)
    total = sum(len(s) - 2 * margin for s in seqs.values())
    header = ("##fileformat=VCFv4.2\n" + "".join(f"##contig=<ID={k},length={len(v)}>\n" for k, v in seqs.items())
              + "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")
    if compression not in ("bgzf", "gzip"):
        raise ValueError(f"compression must be bgzf or gzip, got {compression!r}")
    handle = pysam.BGZFile(str(path), "wb") if compression == "bgzf" else gzip.open(path, "wb", compresslevel=1)
    with handle:
        handle.write(header.encode())
        left = n
        for i, (chrom, seq) in enumerate(seqs.items()):
            count = left if i == len(seqs) - 1 else round(n * (len(seq) - 2 * margin) / total)
            left -= count
            positions = sorted(rng.randrange(margin, len(seq) - margin) for _ in range(count))
            lines = []
            for pos in positions:
                ref = seq[pos - 1]
                alt = rng.choice([b for b in "ACGT" if b != ref])
                lines.append(f"{chrom}\t{pos}\t.\t{ref}\t{alt}\t.\tPASS\t.\n")
                if len(lines) == 65536:
                    handle.write("".join(lines).encode())
                    lines = []
            handle.write("".join(lines).encode())
    return path
