"""Service layer (batch): `python -m service.batch variants in.vcf.gz --conditions … --out out.vcf.gz`: variant
effects for a VCF/BCF.

    input records ─► record chunks (shards) ─► per ALT allele: check (symbolic? allele letters? REF = FASTA?)
                     ─► ref/alt windows (service.core.variants) ─► Engine.effects (service.core.effects)
                     ─► shard-NNNNNN.npz  (alt − ref per allele × quantity × condition; error code per allele)
    merge: input records again, in order ─► the same records written back with Number=A INFO fields
                     MFD_<condition>_{DPROB,DLOGIT,DBIO,DTECH} and MFD_ERROR ─► out.vcf.gz / .bcf / .vcf / .tsv

Multi-allelic records are split for scoring and written back whole, one value per ALT (Number=A); an allele that
cannot be scored gets missing values and its error code in MFD_ERROR, and is listed with the full message in
`<out>.errors.tsv`, so no record is dropped silently. `--on-error fail` stops at the first such allele instead.
Chromosome names are matched to the FASTA's scheme (`1` ↔ `chr1`); records keep their own names in the output.
"""
from __future__ import annotations

import argparse
import csv
import gzip
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from mfd_common.publish import PARTIAL_SUFFIX, publish

from ..core.effects import EnsembleSpec
from ..core.engine import Engine
from ..core.scoring import QUANTITIES
from ..core.variants import VariantSpec, check_variant
from ..errors import RequestError
from .runtime import NamedCondition, describe, resolve
from .shards import BatchError, WorkDir, atomic_output, my_shards, shard_ranges
from .vcf_input import PreparedInput, prepare_input

#: INFO suffix per effect quantity (alt − ref of the ensembled value).
SUFFIXES = {"probability": "DPROB", "logit": "DLOGIT", "logit_bio": "DBIO", "logit_tech": "DTECH"}
ERROR_FIELD = "MFD_ERROR"
#: Alleles scored per engine call: 2 × this × shifts × strands windows (≈ 7,000 at the paper's 7 × 2).
ALLELES_PER_CALL = 256


@dataclass(frozen=True)
class Record:
    ordinal: int
    chrom: str
    pos: int
    id: str | None
    ref: str
    alts: tuple[str, ...]


def open_input(path: Path, **options: Any):
    """pysam.VariantFile for reading; htslib's note that a .vcf.gz has no index is silenced (we read it whole)."""
    import pysam

    verbosity = pysam.set_verbosity(0)
    try:
        return pysam.VariantFile(str(path), **options)
    except (OSError, ValueError) as exc:
        raise BatchError(f"{path}: cannot read as VCF/BCF ({exc})") from None
    finally:
        pysam.set_verbosity(verbosity)


def prepare(args: argparse.Namespace, work: WorkDir, engine: Engine) -> PreparedInput:
    """Sniff and, if needed, normalise the input (service.batch.vcf_input); `args.source` is what htslib reads."""
    genome = engine.genome

    def length(contig: str) -> int | None:
        name = genome.resolve(contig) if genome is not None else None
        return genome.lengths[name] if name is not None else None

    prepared = prepare_input(args.input, work.root, length)
    args.source = prepared.path
    return prepared


def _records(vcf: Any, path: Path) -> Iterator[Any]:
    """htslib's records; a record it cannot parse ends the job with one line, not a traceback."""
    ordinal = 0
    iterator = iter(vcf)
    while True:
        try:
            rec = next(iterator)
        except StopIteration:
            return
        except (OSError, ValueError) as exc:
            raise BatchError(f"{path}: record {ordinal + 1}: htslib cannot parse it ({exc})") from None
        yield rec
        ordinal += 1


def read_records(path: Path) -> Iterator[Record]:
    with open_input(path, drop_samples=True) as vcf:
        for ordinal, rec in enumerate(_records(vcf, path)):
            yield Record(ordinal, rec.chrom, rec.pos, rec.id, rec.ref or "", tuple(rec.alts or ()))


def info_key(condition: str, quantity: str) -> str:
    return f"MFD_{condition}_{SUFFIXES[quantity]}"


# ---- scoring ---------------------------------------------------------------------------------------------------
def check_allele(record: Record, alt: str, field: str) -> VariantSpec:
    """The allele as the service would accept it (service.core.variants.check_variant, the checks /predict_variants
    applies), or RequestError (kind names the reason)."""
    reason = unscorable_alt(alt)
    if reason is not None:
        kind, what = reason
        raise RequestError(f"{field}.alt", f"{what} {alt!r} cannot be scored", kind=kind)
    return check_variant(record.chrom, record.pos, record.ref, alt, field=field, kind="invalid_allele")


def unscorable_alt(alt: str) -> tuple[str, str] | None:
    """(error code, description) for ALT alleles that are not sequence: scored as nothing, reported per allele."""
    if alt in (".", ""):
        return "missing_alt", "missing ALT allele"
    if alt == "*":
        return "spanning_deletion", "spanning deletion allele"
    if alt in ("<NON_REF>", "<*>"):
        return "reference_block", "gVCF 'any other allele'"
    if alt.startswith("<"):
        return "symbolic_allele", "symbolic ALT allele"
    if "[" in alt or "]" in alt or (len(alt) > 1 and (alt.startswith(".") or alt.endswith("."))):
        return "breakend", "breakend ALT allele"
    return None


async def score_shard(engine: Engine, records: list[Record], resolved: list, spec: EnsembleSpec, *,
                      biological_only: bool, fail_fast: bool) -> dict[str, np.ndarray]:
    """Effects of every ALT allele of `records`: values [A, 4, K] (NaN where not scored) and per-allele errors."""
    assert engine.genome is not None
    ordinals, allele_index, codes, messages, todo, windows = [], [], [], [], [], []
    for record in records:
        for a, alt in enumerate(record.alts or ("",)):
            row = len(ordinals)
            ordinals.append(record.ordinal)
            allele_index.append(a)
            field = f"record {record.ordinal + 1} ({record.chrom}:{record.pos} {record.ref}>{alt})"
            try:
                variant = check_allele(record, alt, field)
                windows.append(engine.variant_window(variant, spec, field=field))
                todo.append(row)
                codes.append("")
                messages.append("")
            except RequestError as exc:
                if fail_fast:
                    raise BatchError(f"{exc.field}: {exc.message}") from None
                codes.append(exc.kind)
                messages.append(f"{exc.field}: {exc.message}")
    values = np.full((len(ordinals), len(QUANTITIES), len(resolved)), np.nan, dtype=np.float32)
    for start in range(0, len(todo), ALLELES_PER_CALL):
        effects = await engine.effects(windows[start:start + ALLELES_PER_CALL], resolved, spec,
                                       biological_only=biological_only)
        rows = np.array(todo[start:start + ALLELES_PER_CALL])
        for q, quantity in enumerate(QUANTITIES):
            values[rows, q, :] = effects.delta(quantity)
    return {"ordinal": np.array(ordinals, dtype=np.int64), "allele": np.array(allele_index, dtype=np.int32),
            "values": values, "error": np.array(codes, dtype=str), "message": np.array(messages, dtype=str)}


async def compute_shards(engine: Engine, args: argparse.Namespace, work: WorkDir, total: int,
                         conditions: list[NamedCondition], spec: EnsembleSpec) -> int:
    """Score this process's missing shards; returns how many it computed."""
    from tqdm import tqdm

    ranges = shard_ranges(total, args.records_per_shard)
    todo = [i for i in my_shards(len(ranges), args.shard_index, args.shard_count) if not work.done(i)]
    resolved = resolve(engine, conditions)
    if not todo:
        return 0
    wanted = set(todo)
    progress = tqdm(total=sum(ranges[i][1] - ranges[i][0] for i in todo), unit="rec", disable=args.no_progress,
                    desc=f"variants shard-set {args.shard_index}/{args.shard_count}", file=sys.stderr)
    chunk: list[Record] = []
    current = -1
    with progress:
        for record in read_records(args.source):
            shard = record.ordinal // args.records_per_shard
            if shard not in wanted:
                continue
            if shard != current and chunk:
                await _finish(engine, work, current, chunk, resolved, spec, args, progress)
                chunk = []
            current = shard
            chunk.append(record)
        if chunk:
            await _finish(engine, work, current, chunk, resolved, spec, args, progress)
    return len(todo)


async def _finish(engine, work, shard, chunk, resolved, spec, args, progress) -> None:
    arrays = await score_shard(engine, chunk, resolved, spec, biological_only=args.biological_only,
                               fail_fast=args.on_error == "fail")
    work.save(shard, arrays)
    progress.update(len(chunk))


# ---- merge -----------------------------------------------------------------------------------------------------
def _alleles(work: WorkDir, count: int) -> Iterator[tuple[int, int, np.ndarray, str, str]]:
    for shard in range(count):
        data = work.load(shard)
        for i in range(len(data["ordinal"])):
            yield (int(data["ordinal"][i]), int(data["allele"][i]), data["values"][i], str(data["error"][i]),
                   str(data["message"][i]))


def _grouped(work: WorkDir, count: int) -> Iterator[tuple[int, list[tuple[np.ndarray, str, str]]]]:
    """Per record ordinal (ascending), its alleles' (values [4, K], error code, message)."""
    current, group = -1, []
    for ordinal, _, values, code, message in _alleles(work, count):
        if ordinal != current and group:
            yield current, group
            group = []
        current = ordinal
        group.append((values, code, message))
    if group:
        yield current, group


def output_format(path: Path, requested: str | None) -> str:
    if requested:
        return requested
    name = path.name.lower()
    if name.endswith((".tsv", ".tsv.gz", ".txt", ".txt.gz")):
        return "tsv"
    if name.endswith(".bcf"):
        return "bcf"
    if name.endswith((".vcf.gz", ".vcf.bgz")):
        return "vcf.gz"
    if name.endswith(".vcf"):
        return "vcf"
    raise BatchError(f"--out {path}: cannot tell the format from the name; use .vcf.gz, .vcf, .bcf or .tsv[.gz] "
                     "or pass --format")


def _header(vin: Any, conditions: list[NamedCondition], resolved: list, spec: EnsembleSpec, engine: Engine,
            biological_only: bool):
    header = vin.header.copy()
    header.add_line(f"##mfd_model={engine.card.model_name}")
    header.add_line(f"##mfd_ensemble=shifts:{spec.shifts},strands:{spec.strands},geometry:{spec.geometry},"
                    f"biological_only:{str(biological_only).lower()}")
    what = {"probability": "probability", "logit": "logit", "logit_bio": "biological logit (f_bio.w_bio)",
            "logit_tech": "technical logit (f_tech.w_tech)"}
    for named, condition in zip(conditions, resolved):
        for quantity in QUANTITIES:
            key = info_key(named.name, quantity)
            if key not in header.info:
                header.info.add(key, "A", "Float",
                                f"MFD alt - ref {what[quantity]}, mean over {spec.shifts} shifts x {spec.strands} "
                                f"strands; condition {named.name}: {describe(condition)}")
    if "END" not in header.info:  # VCF's reserved key; htslib writes it for symbolic alleles it passes through
        header.info.add("END", "1", "Integer", "End position of the variant described in this record")
    if ERROR_FIELD not in header.info:
        header.info.add(ERROR_FIELD, ".", "String",
                        "Why MFD did not score each ALT allele (. = scored; one code if ALT is missing); "
                        "details in the .errors.tsv report")
    return header


def _info_value(value: float) -> str:
    return "." if np.isnan(value) else f"{value:g}"


def _annotated(line: str, extra: list[str]) -> str:
    """`line` (one VCF record as htslib formats it) with `extra` INFO entries appended; nothing else changes."""
    fields = line.rstrip("\n").split("\t", 8)
    if extra:
        fields[7] = ";".join(extra) if fields[7] == "." else fields[7] + ";" + ";".join(extra)
    return "\t".join(fields) + "\n"


def write_vcf(args: argparse.Namespace, work: WorkDir, count: int, fmt: str, conditions: list[NamedCondition],
              resolved: list, spec: EnsembleSpec, engine: Engine, errors: ErrorReport) -> None:
    """The input records, in order, each with our INFO entries appended to its text.

    Records are never modified through pysam's INFO setter: it adds an `END` to every record with a symbolic
    allele (a gVCF's `A,<NON_REF>` gets `END=pos`), which would change records we only annotate. So each record
    is formatted by htslib as read and our entries are appended to its INFO column; the text is written as VCF
    (BGZF for .vcf.gz), and for .bcf converted by htslib (read and written unmodified)."""
    import pysam

    text_path = work.root / "merged.vcf.gz" if fmt == "bcf" else None
    with open_input(args.source) as vin, atomic_output(args.out) as tmp:
        header = _header(vin, conditions, resolved, spec, engine, args.biological_only)
        target = text_path or tmp
        handle = pysam.BGZFile(str(target), "wb") if fmt in ("vcf.gz", "bcf") else open(target, "wb")
        with handle:
            handle.write(str(header).encode())
            groups = _grouped(work, count)
            buffer: list[str] = []
            for ordinal, rec in enumerate(_records(vin, args.input)):
                got, alleles = next(groups, (None, []))
                if got != ordinal:
                    raise BatchError(f"shard files do not match the input at record {ordinal + 1}; "
                                     "was the input changed? remove the work directory and rerun")
                extra = [f"{info_key(named.name, quantity)}={','.join(_info_value(v[q, k]) for v, _, _ in alleles)}"
                         for k, named in enumerate(conditions if rec.alts else ())
                         for q, quantity in enumerate(QUANTITIES)]
                if any(code for _, code, _ in alleles):
                    extra.append(f"{ERROR_FIELD}={','.join(code or '.' for _, code, _ in alleles)}")
                    errors.extend([str(ordinal + 1), rec.chrom, str(rec.pos), rec.id or ".", rec.ref or ".",
                                   (rec.alts or (".",))[a] if rec.alts else ".", code, message]
                                  for a, (_, code, message) in enumerate(alleles) if code)
                buffer.append(_annotated(str(rec), extra))
                if len(buffer) >= 4096:
                    handle.write("".join(buffer).encode())
                    buffer = []
            handle.write("".join(buffer).encode())
        if text_path is not None:
            with open_input(text_path) as text, pysam.VariantFile(str(tmp), "wb", header=text.header) as vout:
                for rec in _records(text, text_path):
                    vout.write(rec)
            text_path.unlink()
    if fmt in ("vcf.gz", "bcf"):
        write_index(args.out, fmt)


def write_index(out: Path, fmt: str) -> Path | None:
    """Tabix index (.tbi) beside a .vcf.gz, CSI (.csi) beside a .bcf; an unsorted input gets none (logged)."""
    import pysam

    suffix = ".csi" if fmt == "bcf" else ".tbi"
    index = out.with_name(out.name + suffix)
    index.unlink(missing_ok=True)
    verbosity = pysam.set_verbosity(0)  # htslib's own lines would repeat ours
    try:
        pysam.tabix_index(str(out), preset="vcf", force=True, keep_original=True, csi=fmt == "bcf")
    except (OSError, ValueError):
        index.unlink(missing_ok=True)
        print(f"note: {out} was not indexed: the input is not sorted by position (records keep the input's "
              "order); sort it with `bcftools sort` for an indexed output", file=sys.stderr)
        return None
    finally:
        pysam.set_verbosity(verbosity)
    return index


def write_table(args: argparse.Namespace, work: WorkDir, count: int, conditions: list[NamedCondition],
                errors: ErrorReport) -> None:
    columns = ["chrom", "pos", "id", "ref", "alt", "error"] + [
        f"{named.name}.delta_{quantity}" for named in conditions for quantity in QUANTITIES]
    opener = gzip.open if args.out.name.endswith(".gz") else open
    records = read_records(args.source)
    with atomic_output(args.out) as tmp:
        with opener(tmp, "wt", newline="") as handle:
            writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
            writer.writerow(columns)
            for ordinal, alleles in _grouped(work, count):
                record = next(records)
                if record.ordinal != ordinal:
                    raise BatchError(f"shard files do not match the input at record {ordinal + 1}")
                for a, (values, code, message) in enumerate(alleles):
                    alt = record.alts[a] if record.alts else "."
                    row = [record.chrom, record.pos, record.id or ".", record.ref, alt, code or "."]
                    row += ["NA" if np.isnan(values[q, k]) else f"{values[q, k]:.6g}"
                            for k in range(len(conditions)) for q in range(len(QUANTITIES))]
                    writer.writerow(row)
                    if code:
                        errors.extend([[str(ordinal + 1), record.chrom, str(record.pos), record.id or ".",
                                        record.ref, alt, code, message]])


class ErrorReport:
    """`<out>.errors.tsv`, streamed while merging (a gVCF may hold millions of reference blocks: memory stays
    bounded) to a temporary name beside it and renamed on `finish`; counts per error code for the summary."""

    COLUMNS = ["record", "chrom", "pos", "id", "ref", "alt", "error", "message"]

    def __init__(self, out: Path):
        self.path = out.with_name(out.name + ".errors.tsv")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.counts: Counter[str] = Counter()
        self._tmp = self.path.with_name(f".{self.path.name}{PARTIAL_SUFFIX}")
        self._handle = open(self._tmp, "w", newline="")
        self._writer = csv.writer(self._handle, delimiter="\t", lineterminator="\n")
        self._writer.writerow(self.COLUMNS)

    def extend(self, rows: Iterable[list[str]]) -> None:
        for row in rows:
            self.counts[row[6]] += 1
            self._writer.writerow(row)

    def __len__(self) -> int:
        return sum(self.counts.values())

    def finish(self, ok: bool = True) -> Path | None:
        """After a successful run: the report under its name if there were errors (else an old one removed).
        After a failed run (`ok=False`): only the temporary file is removed."""
        self._handle.close()
        if ok and self.counts:
            publish(self._tmp, self.path)
            return self.path
        self._tmp.unlink(missing_ok=True)
        if ok:
            self.path.unlink(missing_ok=True)
        return None
