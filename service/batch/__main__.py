"""Service layer (batch): `python -m service.batch {variants,tracks} …`: batch scoring over the service's engine
(embedded or Triton).

    python -m service.batch variants in.vcf.gz --fasta genome.fa --conditions DEMO001 '{"biosample": "HepG2"}' \\
        --out out.vcf.gz                          # or out.bcf, out.vcf, out.tsv(.gz)
    python -m service.batch tracks chr1:100,001-200,000 --fasta genome.fa --conditions DEMO001 --out tracks/ \\
        --with-biological
    python -m service.batch attribute regions.bed --fasta genome.fa --conditions DEMO001 --out contrib/
                                                  # <condition>.{bio,tech}.contrib.bw + tracks.ini (attribute.py)

Both cut their input into shards kept in a work directory (default: beside the output) and resume after a crash
without redoing finished shards. In parallel (a Kubernetes Indexed Job, k8s/components/batch) every process runs
`--shard-index i --shard-count N --no-merge` on a shared volume, and one more runs `--merge-only --wait-s T`.
Exit status: 0 done, 2 a job that cannot go on (message on stderr). A JSON summary goes to stdout.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from ..core.effects import DEFAULT_GEOMETRY, PAPER_SHIFTS, PAPER_STRANDS
from . import attribute as attribute_mod
from . import tracks as tracks_mod
from . import variants as variants_mod
from .runtime import (add_engine_options, add_ensemble_options, ensemble_from, open_engine, parse_conditions,
                      resolve)
from .shards import BatchError, WorkDir, shard_ranges


def _sharding_options(parser: argparse.ArgumentParser, unit: str, default: int) -> None:
    group = parser.add_argument_group("shards and resuming")
    group.add_argument(f"--{unit}-per-shard", type=int, default=default, help=f"{unit} per shard (default {default})")
    group.add_argument("--work", type=Path, default=None, help="work directory for shard files (resume state)")
    group.add_argument("--shard-index", type=int, default=0, help="this process's index (Indexed Job: 0..N-1)")
    group.add_argument("--shard-count", type=int, default=1, help="number of processes sharing the work")
    group.add_argument("--no-merge", action="store_true", help="compute shards only (parallel workers)")
    group.add_argument("--merge-only", action="store_true", help="only merge finished shards into the output")
    group.add_argument("--wait-s", type=float, default=0.0,
                       help="when merging, wait this long for shards of other processes (default: do not wait)")
    group.add_argument("--keep-work", action="store_true", help="keep the work directory after a merge")
    group.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m service.batch", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    v = sub.add_parser("variants", help="variant effects for a VCF/BCF, written back as VCF/BCF or a table")
    v.add_argument("input", type=Path, help="VCF, VCF.gz or BCF")
    v.add_argument("--out", type=Path, required=True, help=".vcf.gz, .vcf, .bcf or .tsv[.gz]")
    v.add_argument("--format", choices=("vcf.gz", "vcf", "bcf", "tsv"), default=None,
                   help="output format (default: from the --out name)")
    v.add_argument("--on-error", choices=("skip", "fail"), default="skip",
                   help="skip: write the record with MFD_ERROR and count it (default); fail: stop at the first")
    add_engine_options(v)
    add_ensemble_options(v, shifts=PAPER_SHIFTS, strands=PAPER_STRANDS, geometry=DEFAULT_GEOMETRY)
    _sharding_options(v, "records", 2000)
    v.set_defaults(run=run_variants)

    t = sub.add_parser("tracks", help="predicted tracks of a region as bigWig files, one per condition")
    t.add_argument("region", help="chrom:start-end (1-based, inclusive), a chromosome name, or a BED file of regions")
    t.add_argument("--out", type=Path, required=True, help="output directory for <condition>[.bio].bw")
    t.add_argument("--value", choices=("probability", "logit"), default="probability")
    t.add_argument("--with-biological", action="store_true",
                   help="also write <condition>.bio.bw, the biological-only read-out")
    add_engine_options(t)
    add_ensemble_options(t, shifts=1, strands=PAPER_STRANDS)
    _sharding_options(t, "bins", 512)
    t.set_defaults(run=run_tracks)
    attribute_mod.add_parser(sub)
    return parser


def _check_sharding(args: argparse.Namespace) -> None:
    if args.no_merge and args.merge_only:
        raise BatchError("--no-merge and --merge-only exclude each other")
    per_shard = getattr(args, "records_per_shard", None) or getattr(args, "bins_per_shard", None)
    if per_shard is None or per_shard < 1 or args.shard_count < 1:
        raise BatchError("shard sizes and --shard-count must be >= 1")


def _merge_ready(args: argparse.Namespace, work: WorkDir, count: int) -> None:
    if args.wait_s > 0:
        work.wait_for(count, args.wait_s)
    elif missing := work.missing(count):
        raise BatchError(f"{len(missing)} of {count} shards are not computed yet (first: {missing[:5]}); "
                         "run the other --shard-index processes, or merge with --wait-s")


async def run_variants(args: argparse.Namespace) -> dict[str, Any]:
    _check_sharding(args)
    fmt = variants_mod.output_format(args.out, args.format)
    spec = ensemble_from(args)
    conditions = parse_conditions(args.conditions)
    if not args.input.exists():
        raise BatchError(f"{args.input}: no such file")
    work = WorkDir(args.work or args.out.with_name(args.out.name + ".mfd-work"))
    async with open_engine(args, start=not args.merge_only) as engine:
        resolved = resolve(engine, conditions)
        prepared = variants_mod.prepare(args, work, engine)
        total = prepared.records
        count = len(shard_ranges(total, args.records_per_shard))
        stat = args.input.stat()
        work.prepare({"kind": "variants", "input": str(args.input.resolve()), "input_bytes": stat.st_size,
                      "records": total, "records_per_shard": args.records_per_shard,
                      "conditions": [[c.name, c.value] for c in conditions], "ensemble": spec.to_json(),
                      "biological_only": args.biological_only, "model": engine.card.model_name,
                      "checksums": engine.card.checksums})
        computed = 0 if args.merge_only else await variants_mod.compute_shards(engine, args, work, total,
                                                                               conditions, spec)
        summary: dict[str, Any] = {"command": "variants", "records": total, "shards": count,
                                   "shards_computed": computed, "ensemble": spec.to_json(),
                                   "input_format": prepared.kind, "input_rewritten": prepared.rewritten}
        if args.no_merge:
            return summary
        _merge_ready(args, work, count)
        alleles = sum(len(work.load(i)["ordinal"]) for i in range(count))
        errors = variants_mod.ErrorReport(args.out)
        try:
            if fmt == "tsv":
                variants_mod.write_table(args, work, count, conditions, errors)
            else:
                variants_mod.write_vcf(args, work, count, fmt, conditions, resolved, spec, engine, errors)
        except BaseException:
            errors.finish(ok=False)
            raise
    report = errors.finish()
    summary.update({"out": str(args.out), "format": fmt, "alleles": alleles, "scored": alleles - len(errors),
                    "errors": dict(errors.counts), "error_report": str(report) if report else None})
    if not args.keep_work:
        shutil.rmtree(work.root, ignore_errors=True)
    return summary


async def run_tracks(args: argparse.Namespace) -> dict[str, Any]:
    _check_sharding(args)
    spec = ensemble_from(args)
    conditions = parse_conditions(args.conditions)
    work = WorkDir(args.work or args.out / ".mfd-work")
    async with open_engine(args, start=not args.merge_only) as engine:
        assert engine.genome is not None
        regions = tracks_mod.parse_regions(args.region, engine.genome)
        resolve(engine, conditions)
        bin_size = tracks_mod.bin_size_of(engine)
        grid = tracks_mod.grid_of(regions, engine.genome, bin_size)
        count = tracks_mod.shard_count(grid, args.bins_per_shard)
        where = ([regions[0].chrom, regions[0].start, regions[0].end] if len(regions) == 1
                 else {"bed": str(Path(args.region).resolve()), "bins": grid.digest()})
        work.prepare({"kind": "tracks", "region": where, "bin_size": bin_size,
                      "bins_per_shard": args.bins_per_shard, "value": args.value,
                      "outputs": tracks_mod.outputs(args), "conditions": [[c.name, c.value] for c in conditions],
                      "ensemble": spec.to_json(), "model": engine.card.model_name,
                      "checksums": engine.card.checksums})
        computed = 0 if args.merge_only else await tracks_mod.compute_shards(engine, args, work, grid,
                                                                             conditions, spec)
        first = regions[0]
        summary: dict[str, Any] = {"command": "tracks", "region": f"{first.chrom}:{first.start + 1}-{first.end}"
                                   if len(regions) == 1 else args.region, "regions": len(regions),
                                   "bins": len(grid.bins), "bin_size": bin_size, "shards": count,
                                   "shards_computed": computed, "ensemble": spec.to_json()}
        if args.no_merge:
            return summary
        _merge_ready(args, work, count)
        files, skipped = tracks_mod.write_bigwigs(args, work, count, grid, engine.genome, conditions, bin_size)
    summary.update({"files": [str(f) for f in files], "bins_empty": skipped})
    if not args.keep_work:
        shutil.rmtree(work.root, ignore_errors=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = asyncio.run(args.run(args))
    except BatchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
