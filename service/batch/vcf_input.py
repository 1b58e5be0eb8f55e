"""Service layer (batch): users' VCF/BCF files as they come, made readable and writable by htslib.

Real files break htslib in ways our own fixtures never did (issue 17):
- many projects publish `.vcf.gz` compressed with plain gzip, not BGZF: it can only be streamed, never seeked;
- many VCFs have no `##contig` lines: htslib reads them but aborts the process on write ("Contig not defined
  in header"), and records with symbolic alleles get an `END` it must find declared.

So the input is first sniffed by content (magic bytes, never the name): BCF is used as it is (its header must
declare its contigs). A text VCF (plain, gzip or BGZF) is streamed once, line by line, to count its records, check
each line's fixed columns (errors name `file:line`) and collect the contigs it uses. If it is plain gzip, or its
header lacks a used contig or `END`, it is rewritten **streaming** to a BGZF copy in the work directory with the
missing `##contig` lines added (lengths from the FASTA index, as `bcftools reheader --fai` does; a contig the
FASTA lacks is declared without a length and its records get `MFD_ERROR=unknown_chrom`) and `END` declared.
Records are copied byte for byte. Memory stays bounded whatever the file size.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Optional

from ..core.genome import compression_of, read_head
from .shards import BatchError, atomic_output

END_LINE = '##INFO=<ID=END,Number=1,Type=Integer,Description="End position of the variant described in this record">'


@dataclass(frozen=True)
class PreparedInput:
    path: Path            # what htslib reads: the user's file, or the normalised BGZF copy
    kind: str             # "bcf", "vcf" (plain text), "bgzf" or "gzip" (the user's file)
    records: int
    rewritten: bool       # True when `path` is a copy in the work directory
    added_contigs: tuple[str, ...] = ()


def sniff(path: Path) -> str:
    """`bcf`, `bgzf` (a BGZF text VCF), `gzip` (plain gzip) or `vcf`, from the file's first bytes."""
    try:
        head = read_head(path)
    except OSError as exc:
        raise BatchError(f"{path}: cannot read ({exc.strerror})") from None
    if head[:3] == b"BCF":
        return "bcf"  # uncompressed BCF
    compression = compression_of(head)
    if compression == "plain":
        return "vcf"
    try:
        with gzip.open(path, "rb") as handle:
            inner = handle.read(5)
    except (OSError, EOFError, zlib.error) as exc:
        raise BatchError(f"{path}: not a readable gzip/BGZF file ({exc})") from None
    if inner[:3] == b"BCF":
        return "bcf"
    return compression


def _text(path: Path, kind: str) -> IO[str]:
    raw = gzip.open(path, "rb") if kind in ("bgzf", "gzip") else open(path, "rb")
    return io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="")


def _contig_id(line: str) -> Optional[str]:
    inner = line[len("##contig=<"):].rstrip("\r\n").rstrip(">")
    for part in inner.split(","):
        key, _, value = part.partition("=")
        if key.strip() == "ID":
            return value.strip()
    return None


@dataclass
class _Scan:
    header: list[str]
    records: int
    used: list[str]


def _scan(path: Path, kind: str) -> _Scan:
    """One streaming pass: header lines, record count, contigs in order of first use; bad lines name file:line."""
    header: list[str] = []
    used: dict[str, None] = {}
    records = 0
    try:
        with _text(path, kind) as handle:
            number = 0
            for number, line in enumerate(handle, start=1):
                if number == 1 and not line.startswith("##fileformat=VCF"):
                    raise BatchError(f"{path}:1: not a VCF (the first line must be ##fileformat=VCFv4.x)")
                if line.startswith("#"):
                    if records:
                        raise BatchError(f"{path}:{number}: header line after the first record")
                    header.append(line if line.endswith("\n") else line + "\n")
                    continue
                if not line.strip():
                    continue
                if not header or not header[-1].startswith("#CHROM"):
                    raise BatchError(f"{path}:{number}: record before the #CHROM header line")
                fields = line.rstrip("\r\n").split("\t", 8)
                if len(fields) < 8:
                    raise BatchError(f"{path}:{number}: {len(fields)} tab-separated columns, a VCF record has at "
                                     "least 8 (CHROM POS ID REF ALT QUAL FILTER INFO)")
                if not fields[1].isdigit():
                    raise BatchError(f"{path}:{number}: POS {fields[1]!r} is not a positive integer")
                if not fields[3] or not fields[4]:
                    raise BatchError(f"{path}:{number}: empty REF or ALT column (use . for a missing ALT)")
                used.setdefault(fields[0], None)
                records += 1
    except (OSError, EOFError, zlib.error) as exc:
        raise BatchError(f"{path}: truncated or corrupt compressed data ({exc})") from None
    if not header:
        raise BatchError(f"{path}:1: not a VCF (no header)")
    if not header[-1].startswith("#CHROM"):
        raise BatchError(f"{path}: no #CHROM header line")
    return _Scan(header, records, list(used))


def prepare_input(path: Path, work_root: Path, contig_length: Callable[[str], Optional[int]],
                  log: IO[str] = sys.stderr) -> PreparedInput:
    """The file htslib should read (see the module docstring), with its record count."""
    kind = sniff(path)
    if kind == "bcf":
        return PreparedInput(path, kind, _count_bcf(path), False)
    scan = _scan(path, kind)
    declared = {_contig_id(line) for line in scan.header if line.startswith("##contig=<")}
    missing = [c for c in scan.used if c not in declared]
    has_end = any(line.startswith("##INFO=<ID=END,") for line in scan.header)
    if kind in ("vcf", "bgzf") and not missing and has_end:
        return PreparedInput(path, kind, scan.records, False)
    extra = []
    for contig in missing:
        length = contig_length(contig)
        extra.append(f"##contig=<ID={contig}" + (f",length={length}>\n" if length else ">\n"))
    if not has_end:
        extra.append(END_LINE + "\n")
    header = scan.header[:-1] + extra + scan.header[-1:]
    work_root.mkdir(parents=True, exist_ok=True)
    # Named by the input's identity: a work directory of another job (refused later by its manifest) never has
    # its copy overwritten, and parallel workers of one job write the same bytes to the same name.
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    target = work_root / f"input-{key}.vcf.gz"
    _rewrite(path, kind, header, target)
    why = []
    if kind == "gzip":
        why.append("plain gzip (not BGZF) recompressed to BGZF")
    if missing:
        why.append(f"{len(missing)} ##contig line(s) added from the FASTA index ({', '.join(missing[:5])}"
                   f"{', …' if len(missing) > 5 else ''})")
    if not has_end:
        why.append("INFO END declared")
    print(f"input {path}: {'; '.join(why)}; reading the copy {target}", file=log)
    return PreparedInput(target, kind, scan.records, True, tuple(missing))


def _rewrite(path: Path, kind: str, header: list[str], target: Path) -> None:
    """Stream the new header and the records, unchanged, into a BGZF file (atomically)."""
    import pysam

    with atomic_output(target) as tmp:
        with pysam.BGZFile(str(tmp), "wb") as out, _text(path, kind) as handle:
            out.write("".join(header).encode())
            buffer: list[str] = []
            size = 0
            for line in handle:
                if line.startswith("#") or not line.strip():
                    continue
                buffer.append(line if line.endswith("\n") else line + "\n")
                size += len(line)
                if size > 1 << 20:
                    out.write("".join(buffer).encode())
                    buffer, size = [], 0
            if buffer:
                out.write("".join(buffer).encode())


def _count_bcf(path: Path) -> int:
    import pysam

    verbosity = pysam.set_verbosity(0)
    try:
        with pysam.VariantFile(str(path), drop_samples=True) as vcf:
            return sum(1 for _ in vcf)
    except (OSError, ValueError) as exc:
        raise BatchError(f"{path}: cannot read as BCF ({exc})") from None
    finally:
        pysam.set_verbosity(verbosity)
