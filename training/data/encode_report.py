"""Training layer (data): the ENCODE portal's files report (`metadata.tsv`), read as users download it, → tracks.

What the portal writes: one row per file (peaks, their bigBed twins, alignments, signal tracks, other assemblies,
archived files), tab-separated, a header with spaces in the names. Columns are looked up by name (the portal has
added columns over time; `COLUMNS` lists the names accepted for each). Which rows become tracks:

1. **Peak files as BED**: `File type` `bed` with `File format type` narrowPeak / broadPeak (the portal writes
   `File format` "bed narrowPeak"). Their `bigBed narrowPeak` twins hold the same peaks (skipped: one peak set
   counted once), and so are bam, bigWig, … rows.
2. **`File Status` released** (`statuses`; archived, revoked, … skipped). A report without the column keeps all.
3. **One assembly** (`File assembly`): the one asked for, or the only one the peak rows have (several: an error).
4. **One track per experiment** (`Experiment accession`) unless `all_outputs`: the file flagged preferred default
   where the report has that column (`Preferred default` / `preferred_default`, added by the download query
   `files.preferred_default=true` or in the portal's file report), otherwise the best ranked by
   `OUTPUT_PREFERENCE` for the experiment's assay (TF ChIP-seq: optimal, then conservative IDR thresholded peaks;
   histone ChIP-seq: replicated, then pseudoreplicated peaks; DNase-seq: peaks; …), ties broken by status
   (released first), the pooled file (most `Biological replicate(s)`), the newest `File analysis title` (ENCODE4
   before ENCODE3, higher pipeline versions first), then the lowest accession. Legacy output-type spellings
   ("optimal idr thresholded peaks", "pseudo-replicated peaks") are normalised first (`normalise_output_type`).

Every skipped row is counted under its reason (`Selection.skipped`), which `build_store` prints.

Mapping to model variables (`ENCODE_VARIABLES`):

    model variable   files report column               note
    biosample        Biosample term name               e.g. K562, "liver"
    biosample_type   Biosample type                    cell line, tissue, primary cell …
    organism         Biosample organism
    target           Experiment target                 "CTCF-human" → "CTCF" (the -organism suffix is dropped)
    assay            Assay                             e.g. TF ChIP-seq, DNase-seq (technical)
    release_date     Experiment date released          YYYY-MM-DD; the codec's `year` type keeps the year
    output_type      Output type                       normalised, e.g. "conservative IDR thresholded peaks"
    lab              Lab (experiment report)           see below
    organ, system,   organ / system / developmental    experiment report; multi-valued, joined with ","
    developmental    slims (experiment report)
    life_stage       Life stage (experiment report)

The files report's `Lab` is the lab that *produced the file*: for processed files (all peak files) that is
"ENCODE Processing Pipeline", not the experiment's lab; and the files report has no organ / system /
developmental slims or life stage. Those come from the portal's experiment report (`report.tsv?type=Experiment`,
an optional second file, joined on its `Accession` = the files report's `Experiment accession`; `EXPERIMENT_COLUMNS`).
Without it, `lab` falls back to the files report's `Lab` (and `Selection.notes` says how many tracks got the
pipeline's name), and the slims come from the files report only if it has such columns. An empty value (DNase-seq
has no target) is the missing category.
"""
from __future__ import annotations

import csv
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from .dataset import TrackTable

# model variable → (files report column names accepted, experiment report column names accepted)
VARIABLE_SOURCES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "biosample": (("Biosample term name",), ()),
    "biosample_type": (("Biosample type",), ()),
    "organism": (("Biosample organism",), ()),
    "target": (("Experiment target",), ()),
    "organ": (("Biosample organ slims",), ("Organ", "Biosample organ slims", "Organ slims")),
    "system": (("Biosample system slims",), ("System", "Biosample system slims", "System slims")),
    "developmental": (("Biosample developmental slims",),
                      ("Developmental slims", "Biosample developmental slims", "Developmental slim")),
    "life_stage": (("Biosample life stage",), ("Life stage", "Biosample life stage")),
    "assay": (("Assay",), ()),
    "lab": (("Lab",), ("Lab",)),
    "release_date": (("Experiment date released",), ()),
    "output_type": (("Output type",), ()),
}
ENCODE_VARIABLES: dict[str, str] = {v: files[0] for v, (files, _) in VARIABLE_SOURCES.items()}
# canonical key → files report column names accepted (first found wins)
COLUMNS: dict[str, tuple[str, ...]] = {
    "accession": ("File accession", "Accession"),
    "format": ("File format",),
    "type": ("File type",),
    "format_type": ("File format type",),
    "output_type": ("Output type",),
    "assembly": ("File assembly", "Assembly", "Genome assembly"),
    "experiment": ("Experiment accession",),
    "assay": ("Assay", "Assay term name"),
    "status": ("File Status", "File status", "Status"),
    "analysis": ("File analysis title", "Analysis title"),
    "replicates": ("Biological replicate(s)", "Biological replicates"),
    "preferred": ("Preferred default", "preferred_default", "Preferred Default", "File preferred default"),
}
EXPERIMENT_ACCESSION = ("Accession", "Experiment accession")
PEAK_FORMAT_TYPES = ("narrowPeak", "broadPeak")
PEAK_SUFFIXES = (".bed.gz", ".bed", ".narrowPeak.gz", ".narrowPeak", ".bigBed.bed.gz", ".bigBed.bed")
PIPELINE_LAB = "ENCODE Processing Pipeline"

# legacy / variant spellings (lower case, hyphens and spaces folded) → the portal's current output type
_OUTPUT_TYPE_NAMES = {
    "optimal idr thresholded peaks": "optimal IDR thresholded peaks",
    "conservative idr thresholded peaks": "conservative IDR thresholded peaks",
    "idr thresholded peaks": "IDR thresholded peaks",
    "replicated peaks": "replicated peaks",
    "pseudoreplicated peaks": "pseudoreplicated peaks",
    "pseudo replicated peaks": "pseudoreplicated peaks",
    "stable peaks": "stable peaks",
    "peaks": "peaks",
    "hotspots": "hotspots",
}
_TF = ("optimal IDR thresholded peaks", "conservative IDR thresholded peaks", "IDR thresholded peaks")
_HISTONE = ("replicated peaks", "pseudoreplicated peaks", "stable peaks")
# assay (lower case) → output types best first; types not listed rank after the listed ones
OUTPUT_PREFERENCE: dict[str, tuple[str, ...]] = {
    "tf chip-seq": _TF,
    "histone chip-seq": _HISTONE,
    "dnase-seq": ("peaks", "hotspots"),
    "atac-seq": _TF + _HISTONE,
}
DEFAULT_PREFERENCE = _TF + _HISTONE + ("peaks",)


class EncodeMetadataError(ValueError):
    """A metadata.tsv problem; the message starts with `path:line:` where a row is to blame."""


@dataclass
class Selection:
    """What was kept and why the rest was skipped (reason → rows), for the build's report."""

    kept: int = 0
    assembly: str = ""
    skipped: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{n} {reason}" for reason, n in sorted(self.skipped.items(), key=lambda kv: (-kv[1], kv[0]))]
        text = f"kept {self.kept} peak files ({self.assembly}); skipped {sum(self.skipped.values())}"
        return text + (f": {'; '.join(parts)}" if parts else "")


def normalise_target(value: str) -> str:
    """ENCODE writes targets as `<gene>-<organism>` (CTCF-human, H3K27ac-human, POLR2AphosphoS5-human)."""
    value = value.strip()
    for organism in ("-human", "-mouse", "-fly", "-worm"):
        if value.endswith(organism):
            return value[: -len(organism)]
    return value


def normalise_output_type(value: str) -> str:
    """The portal's current spelling of an output type ("pseudo-replicated peaks" → "pseudoreplicated peaks")."""
    key = re.sub(r"[\s_]+", " ", value.strip().lower()).replace("pseudo-", "pseudo")
    return _OUTPUT_TYPE_NAMES.get(key, value.strip())


def find_peak_file(directory: Path, accession: str) -> Path | None:
    for suffix in PEAK_SUFFIXES:
        candidate = directory / f"{accession}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _column(header: Sequence[str], names: Sequence[str]) -> str | None:
    return next((n for n in names if n in header), None)


def _file_kind(row: Mapping[str, str], cols: Mapping[str, str | None]) -> tuple[str, str]:
    """(file type, format type): from `File type` / `File format type`, else the two words of `File format`."""
    words = (row.get(cols["format"] or "", "") or "").split()
    ftype = row.get(cols["type"] or "", "") or (words[0] if words else "")
    ftype2 = row.get(cols["format_type"] or "", "") or (words[1] if len(words) > 1 else "")
    return ftype, ftype2


def _is_true(value: str) -> bool:
    return value.strip().lower() in ("true", "1", "yes", "y", "t")


def _analysis_key(title: str) -> tuple:
    """Newer first: "ENCODE4 v1.10.0 GRCh38" sorts before "ENCODE4 v1.9.1 GRCh38" and "ENCODE3 GRCh38"."""
    return tuple(-int(n) for n in re.findall(r"\d+", title))


def _rank(row: Mapping[str, str], cols: Mapping[str, str | None], assay: str) -> tuple:
    preference = OUTPUT_PREFERENCE.get(assay.lower(), DEFAULT_PREFERENCE)
    output = normalise_output_type(row.get(cols["output_type"] or "", ""))
    status = row.get(cols["status"] or "", "released")
    replicates = [r for r in re.split(r"[,\s]+", row.get(cols["replicates"] or "", "")) if r]
    return (preference.index(output) if output in preference else len(preference), status != "released",
            -len(replicates), _analysis_key(row.get(cols["analysis"] or "", "")), row[cols["accession"]])


def read_table(path: Path, header_hint: str) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Header + (line number, row) of a portal TSV. The portal's reports (not metadata.tsv) start with a line
    giving the date and query URL: everything before the first line holding `header_hint` as a column is skipped."""
    if not path.is_file():
        raise EncodeMetadataError(f"{path}: file does not exist")
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            lines = list(csv.reader(handle, delimiter="\t"))
    except UnicodeDecodeError as err:
        raise EncodeMetadataError(f"{path}: not UTF-8 text ({err.reason}); is this the portal's TSV?") from None
    start = next((i for i, fields in enumerate(lines[:5]) if header_hint in (f.strip() for f in fields)), None)
    if start is None:
        shown = ", ".join(f.strip() for f in (lines[0] if lines else [])[:12])
        raise EncodeMetadataError(f"{path}:1: column {header_hint!r} not found; is this the portal's report? "
                                  f"(columns: {shown or 'none'} …)")
    header = [h.strip() for h in lines[start]]
    rows = []
    for lineno, fields in enumerate(lines[start + 1:], start=start + 2):
        if not fields or all(not f.strip() for f in fields):
            continue
        if len(fields) != len(header):
            raise EncodeMetadataError(f"{path}:{lineno}: {len(fields)} tab-separated fields, the header has "
                                      f"{len(header)}")
        rows.append((lineno, dict(zip(header, (f.strip() for f in fields)))))
    return header, rows


def read_experiment_report(path: str | Path) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """{experiment accession: variable → value} from the portal's experiment report, and variable → column used."""
    path = Path(path)
    header, rows = read_table(path, "Accession")
    accession = _column(header, EXPERIMENT_ACCESSION)
    used = {v: c for v, (_, names) in VARIABLE_SOURCES.items() if names and (c := _column(header, names))}
    out: dict[str, dict[str, str]] = {}
    for lineno, row in rows:
        key = row[accession]
        if not key:
            raise EncodeMetadataError(f"{path}:{lineno}: empty {accession!r}")
        if key in out:
            raise EncodeMetadataError(f"{path}:{lineno}: experiment {key!r} listed twice")
        out[key] = {v: row[c] for v, c in used.items()}
    return out, used


def select_encode_tracks(path: str | Path, *, assembly: str | None = None, variables: Sequence[str] | None = None,
                         peaks_dir: str | Path | None = None, formats: Sequence[str] = PEAK_FORMAT_TYPES,
                         statuses: Sequence[str] | None = ("released",), all_outputs: bool = False,
                         experiments: str | Path | None = None) -> tuple[TrackTable, Selection]:
    """Tracks (id = file accession, files report order) and what was kept / skipped; see the module docstring.

    `variables` defaults to every variable some input has a column for. Raises EncodeMetadataError naming
    `file:line` for a malformed row, a duplicated accession, a missing peak file or experiment-report row, an
    ambiguous or absent assembly.
    """
    path = Path(path)
    peaks_dir = Path(peaks_dir) if peaks_dir is not None else path.parent
    header, rows = read_table(path, "File accession" if "File accession" in _peek_header(path) else "Accession")
    cols = {key: _column(header, names) for key, names in COLUMNS.items()}
    if cols["format"] is None and (cols["type"] is None or cols["format_type"] is None):
        raise EncodeMetadataError(f"{path}:1: column 'File format' not found (nor 'File type' + 'File format "
                                  f"type'); is this the portal's metadata.tsv?")
    if cols["assembly"] is None:
        raise EncodeMetadataError(f"{path}:1: column 'File assembly' not found; is this the portal's metadata.tsv?")
    exp_values, exp_columns = (read_experiment_report(experiments) if experiments is not None else ({}, {}))
    file_columns = {v: c for v, (names, _) in VARIABLE_SOURCES.items() if (c := _column(header, names))}
    available = set(file_columns) | set(exp_columns)
    if variables is None:
        variables = [v for v in VARIABLE_SOURCES if v in available]
    for v in variables:
        if v not in VARIABLE_SOURCES:
            raise EncodeMetadataError(f"variable {v!r} has no ENCODE column (known: {', '.join(VARIABLE_SOURCES)})")
        if v not in available:
            raise EncodeMetadataError(f"{path}:1: column {ENCODE_VARIABLES[v]!r} (for variable {v!r}) not found")

    sel = Selection()
    seen: dict[str, int] = {}
    candidates: list[tuple[int, dict[str, str]]] = []
    for lineno, row in rows:
        accession = row[cols["accession"]]
        if not accession:
            raise EncodeMetadataError(f"{path}:{lineno}: empty {cols['accession']!r}")
        if accession in seen:
            raise EncodeMetadataError(f"{path}:{lineno}: duplicated accession {accession!r} (first on line "
                                      f"{seen[accession]})")
        seen[accession] = lineno
        ftype, ftype2 = _file_kind(row, cols)
        if ftype.lower() != "bed" or ftype2 not in formats:
            label = row.get(cols["format"] or "", "") or f"{ftype} {ftype2}".strip()
            sel.skipped[f"format {label or '(none)'}"] += 1
            continue
        status = row.get(cols["status"] or "", "")
        if statuses is not None and cols["status"] is not None and status not in statuses:
            sel.skipped[f"status {status or '(none)'}"] += 1
            continue
        candidates.append((lineno, row))
    if cols["status"] is None and statuses is not None:
        sel.notes.append(f"{path.name} has no 'File Status' column: every file's status taken as released")

    assemblies = Counter(row[cols["assembly"]] or "(none)" for _, row in candidates)
    if assembly is None:
        if len(assemblies) > 1:
            found = ", ".join(f"{a} ({n} files)" for a, n in sorted(assemblies.items()))
            raise EncodeMetadataError(f"{path}: peak files of several assemblies ({found}); choose one with "
                                      f"--assembly")
        assembly = next(iter(assemblies), "")
    sel.assembly = assembly
    kept_rows = []
    for lineno, row in candidates:
        if row[cols["assembly"]] != assembly:
            sel.skipped[f"assembly {row[cols['assembly']] or '(none)'}"] += 1
        else:
            kept_rows.append((lineno, row))
    if not kept_rows:
        everything = Counter(row[cols["assembly"]] or "(none)" for _, row in rows)
        skipped = "; ".join(f"{n} {r}" for r, n in sorted(sel.skipped.items(), key=lambda kv: (-kv[1], kv[0])))
        raise EncodeMetadataError(f"{path}: no {'/'.join(formats)} peak files for assembly {assembly!r} "
                                  f"(assemblies in the file: {', '.join(sorted(everything)) or 'none'})"
                                  + (f"; skipped: {skipped}" if skipped else ""))

    if not all_outputs:
        kept_rows = _one_per_experiment(kept_rows, cols, sel)

    ids: list[str] = []
    metadata: list[dict[str, str]] = []
    files: list[Path] = []
    pipeline_labs = 0
    for lineno, row in kept_rows:
        accession = row[cols["accession"]]
        peak = find_peak_file(peaks_dir, accession)
        if peak is None:
            raise EncodeMetadataError(f"{path}:{lineno}: no peak file for {accession} in {peaks_dir} (looked for "
                                      f"{', '.join(accession + s for s in PEAK_SUFFIXES)})")
        experiment = row.get(cols["experiment"] or "", "")
        if experiments is not None and experiment not in exp_values:
            raise EncodeMetadataError(f"{path}:{lineno}: experiment {experiment or '(empty)'!r} of {accession} is "
                                      f"not in the experiment report {experiments}")
        exp = exp_values.get(experiment, {})
        meta = {}
        for v in variables:
            meta[v] = exp[v] if v in exp else row.get(file_columns.get(v, ""), "")
        if "target" in meta:
            meta["target"] = normalise_target(meta["target"])
        if "output_type" in meta:
            meta["output_type"] = normalise_output_type(meta["output_type"])
        pipeline_labs += meta.get("lab") == PIPELINE_LAB
        ids.append(accession)
        metadata.append(meta)
        files.append(peak)
    if pipeline_labs:
        sel.notes.append(f"'lab' of {pipeline_labs} tracks is {PIPELINE_LAB!r} (the files report's Lab is who "
                         f"processed the file): pass the experiment report for the experiments' labs")
    sel.kept = len(ids)
    return TrackTable(ids, metadata, files), sel


def _peek_header(path: Path) -> list[str]:
    """Column names of the first lines (the files report's `File accession`, or a file report's `Accession`)."""
    if not path.is_file():
        raise EncodeMetadataError(f"{path}: metadata TSV does not exist")
    with open(path, encoding="utf-8", errors="replace") as handle:
        return [f.strip() for line in (handle.readline(), handle.readline()) for f in line.split("\t")]


def _one_per_experiment(rows: list[tuple[int, dict[str, str]]], cols: Mapping[str, str | None],
                        sel: Selection) -> list[tuple[int, dict[str, str]]]:
    """The preferred default file of each experiment where flagged, else the best ranked; file order kept."""
    groups: dict[str, list[tuple[int, dict[str, str]]]] = defaultdict(list)
    for lineno, row in rows:
        experiment = row.get(cols["experiment"] or "", "") or f"(file {row[cols['accession']]})"
        groups[experiment].append((lineno, row))
    if cols["experiment"] is None:
        sel.notes.append("no 'Experiment accession' column: every peak file is its own experiment")
    chosen: set[int] = set()
    for group in groups.values():
        flagged = [item for item in group if cols["preferred"] and _is_true(item[1].get(cols["preferred"], ""))]
        pool = flagged or group
        assay = pool[0][1].get(cols["assay"] or "", "")
        best = min(pool, key=lambda item: _rank(item[1], cols, assay))
        chosen.add(best[0])
        for lineno, row in group:
            if lineno != best[0]:
                why = "not the experiment's preferred default" if flagged else "another output of the experiment"
                sel.skipped[f"{why} ({normalise_output_type(row.get(cols['output_type'] or '', '')) or '?'})"] += 1
    return [item for item in rows if item[0] in chosen]


def read_encode_metadata(path: str | Path, *, assembly: str | None = None, variables: Sequence[str] | None = None,
                         peaks_dir: str | Path | None = None, formats: Sequence[str] = PEAK_FORMAT_TYPES,
                         statuses: Sequence[str] | None = ("released",), all_outputs: bool = False,
                         experiments: str | Path | None = None) -> TrackTable:
    """The tracks of `select_encode_tracks`, without the selection report."""
    return select_encode_tracks(path, assembly=assembly, variables=variables, peaks_dir=peaks_dir, formats=formats,
                                statuses=statuses, all_outputs=all_outputs, experiments=experiments)[0]
