"""The ENCODE portal's `metadata.tsv` (files report), read as users download it, → tracks for training.

What it reads: one row per file, tab-separated, a header with spaces in the names (`File accession`,
`File format`, `File type`, `File format type`, `Output type`, `File assembly`, `Biosample term name`,
`Experiment target`, `Lab`, `Assay`, `Experiment date released`, …). Rows are filtered to one assembly and to
peak files; each kept row is a track whose peak file is found next to the TSV (or in `peaks_dir`) under its
accession: `ENCFF….bed.gz`, `.bed`, `.narrowPeak.gz`, `.narrowPeak` or `.bigBed.bed(.gz)` (a bigBed converted
with `bigBedToBed`).

Mapping to model variables (`ENCODE_VARIABLES`; a config names the variables it uses, only those columns
must exist):

    model variable   ENCODE column                     note
    biosample        Biosample term name               e.g. K562, "liver"
    biosample_type   Biosample type                    cell line, tissue, primary cell …
    organism         Biosample organism
    target           Experiment target                 "CTCF-human" → "CTCF" (the -organism suffix is dropped)
    organ            Biosample organ slims             multi-valued: ENCODE joins values with ","
    system           Biosample system slims            multi-valued
    developmental    Biosample developmental slims     multi-valued
    life_stage       Biosample life stage (if present)
    assay            Assay                             e.g. TF ChIP-seq, DNase-seq (technical)
    lab              Lab                               e.g. "Michael Snyder, Stanford" (technical)
    release_date     Experiment date released          YYYY-MM-DD; the codec's `year` type keeps the year
    output_type      Output type                       e.g. "IDR thresholded peaks" (technical)

The slims are not in every files report (they come with the experiment report); join them in as extra columns.
An empty value (DNase-seq has no target) is the missing category.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Mapping, Sequence

from .dataset import TrackTable

ENCODE_VARIABLES: dict[str, str] = {
    "biosample": "Biosample term name",
    "biosample_type": "Biosample type",
    "organism": "Biosample organism",
    "target": "Experiment target",
    "organ": "Biosample organ slims",
    "system": "Biosample system slims",
    "developmental": "Biosample developmental slims",
    "life_stage": "Biosample life stage",
    "assay": "Assay",
    "lab": "Lab",
    "release_date": "Experiment date released",
    "output_type": "Output type",
}
PEAK_FORMAT_TYPES = ("narrowPeak", "broadPeak")
PEAK_SUFFIXES = (".bed.gz", ".bed", ".narrowPeak.gz", ".narrowPeak", ".bigBed.bed.gz", ".bigBed.bed")
REQUIRED = ("File accession", "File format", "File assembly")


class EncodeMetadataError(ValueError):
    """A metadata.tsv problem; the message starts with `path:line:` where a row is to blame."""


def normalise_target(value: str) -> str:
    """ENCODE writes targets as `<gene>-<organism>` (CTCF-human, H3K27ac-human, POLR2AphosphoS5-human)."""
    value = value.strip()
    for organism in ("-human", "-mouse", "-fly", "-worm"):
        if value.endswith(organism):
            return value[: -len(organism)]
    return value


def is_peak_row(row: Mapping[str, str], formats: Sequence[str] = PEAK_FORMAT_TYPES) -> bool:
    """A peak file: `File format` (or `File type`) is bed/bigBed and names a peak format ("bed narrowPeak")."""
    text = " ".join((row.get(k) or "") for k in ("File format", "File type", "File format type")).lower()
    return ("bed" in text) and any(f.lower() in text for f in formats)


def find_peak_file(directory: Path, accession: str) -> Path | None:
    for suffix in PEAK_SUFFIXES:
        candidate = directory / f"{accession}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def read_encode_metadata(path: str | Path, *, assembly: str = "GRCh38", variables: Sequence[str] | None = None,
                         peaks_dir: str | Path | None = None, output_types: Sequence[str] | None = None,
                         formats: Sequence[str] = PEAK_FORMAT_TYPES,
                         mapping: Mapping[str, str] = ENCODE_VARIABLES) -> TrackTable:
    """Tracks (id = File accession) of one assembly's peak files, with model variables mapped from columns.

    `variables` defaults to every mapped variable whose column the file has. Raises EncodeMetadataError for a
    missing column, a malformed row, a duplicated accession, a missing peak file, or no row of `assembly`.
    """
    path = Path(path)
    if not path.is_file():
        raise EncodeMetadataError(f"{path}: metadata TSV does not exist")
    peaks_dir = Path(peaks_dir) if peaks_dir is not None else path.parent
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle, delimiter="\t")
        header = next(reader, None)
        if not header:
            raise EncodeMetadataError(f"{path}: empty file")
        header = [h.strip() for h in header]
        for column in REQUIRED:
            if column not in header:
                raise EncodeMetadataError(f"{path}:1: column {column!r} not found; is this the portal's "
                                          f"metadata.tsv? (columns: {', '.join(header[:12])} …)")
        if variables is None:
            variables = [v for v, col in mapping.items() if col in header]
        for v in variables:
            if v not in mapping:
                raise EncodeMetadataError(f"variable {v!r} has no ENCODE column (known: {', '.join(mapping)})")
            if mapping[v] not in header:
                raise EncodeMetadataError(f"{path}:1: column {mapping[v]!r} (for variable {v!r}) not found")
        ids: list[str] = []
        rows: list[dict[str, str]] = []
        files: list[Path] = []
        seen: dict[str, int] = {}
        assemblies: set[str] = set()
        for lineno, fields in enumerate(reader, start=2):
            if not fields or all(not f.strip() for f in fields):
                continue
            if len(fields) != len(header):
                raise EncodeMetadataError(f"{path}:{lineno}: {len(fields)} tab-separated fields, the header has "
                                          f"{len(header)}")
            row = dict(zip(header, (f.strip() for f in fields)))
            accession = row["File accession"]
            if not accession:
                raise EncodeMetadataError(f"{path}:{lineno}: empty 'File accession'")
            if accession in seen:
                raise EncodeMetadataError(f"{path}:{lineno}: duplicated accession {accession!r} (first on line "
                                          f"{seen[accession]})")
            seen[accession] = lineno
            assemblies.add(row["File assembly"] or "(none)")
            if row["File assembly"] != assembly or not is_peak_row(row, formats):
                continue
            if output_types is not None and row.get("Output type") not in output_types:
                continue
            peak = find_peak_file(peaks_dir, accession)
            if peak is None:
                raise EncodeMetadataError(f"{path}:{lineno}: no peak file for {accession} in {peaks_dir} (looked for "
                                          f"{', '.join(accession + s for s in PEAK_SUFFIXES)})")
            meta = {v: row[mapping[v]] for v in variables}
            if "target" in meta:
                meta["target"] = normalise_target(meta["target"])
            ids.append(accession)
            rows.append(meta)
            files.append(peak)
    if not ids:
        found = ", ".join(sorted(assemblies)) or "none"
        raise EncodeMetadataError(f"{path}: no {'/'.join(formats)} peak files for assembly {assembly!r} "
                                  f"(assemblies in the file: {found})")
    return TrackTable(ids, rows, files)
