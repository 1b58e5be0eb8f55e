"""Training layer (analysis): the paper's VISTA enhancer experiment on a BED of labelled regions.

The library of `python -m training.enhancer_prediction` (the command parses the options and calls
`enhancer_prediction`):

    python -m training.enhancer_prediction REGIONS.bed --fasta genome.fa [--model model_repository]
        [--label-column 5] [--baseline-model OTHER_REPOSITORY] [--folds 5] [--out table.tsv|table.json]

Question: do the biological features f_bio tell enhancers from other regions better than the technical features
f_tech, once GC content (a confounder of peak calling and of enhancer sequence alike) is regressed out?

Input: a BED (plain or gzip; `track`/`browser`/`#` lines skipped) with the label in `--label-column` (1-based;
default 5, the score column, where the authors' VISTA BED says `positive`/`negative`): 1/0, positive/negative,
true/false, yes/no. Each region is cut as the authors cut VISTA elements: 128-bp pieces (one bin) tiled outwards
from the region's centre (an odd number, at least one, at most `--max-windows`), one model window centred on each
piece; features are averaged over both strands, then over the region's windows (the authors' `mean` aggregation).

Feature sets, each through `training.evaluation.enhancers.enhancer_auroc_table` (variance filter, standardise, L2
logistic regression, stratified k-fold AUROC, with and without GC regressed out):
- `f_bio`, `f_tech`: the model's two parts; `f_all`: both (the authors' "full");
- `kmer3`: the region's own 3-mer frequencies (both strands), a sequence baseline that needs no model;
- `baseline_model` with `--baseline-model`: all features of another exported model (e.g. the plain-head baseline);
- `gc_content`: GC alone, the confounder's own AUROC.

Bad input raises `AnalysisInputError` naming the file (and line) or option; the command exits 2 with it.
"""
from __future__ import annotations

import gzip
import json
import sys
from itertools import product
from pathlib import Path

import numpy as np

from mfd_common.geometry import BIN_SIZE
from mfd_common.publish import write_atomically
from mfd_common.tokens import N_CODE, reverse_complement

from .enhancers import enhancer_auroc_table
from .exported_model import AnalysisInputError, ExportedModel, Reference, gc_fraction

BUNDLED = Path(__file__).resolve().parents[2] / "model_repository"
PIECE = BIN_SIZE   # the authors cut VISTA elements into pieces of one bin
LABELS = {"1": 1, "0": 0, "positive": 1, "negative": 0, "true": 1, "false": 0, "yes": 1, "no": 0}


def read_regions(path: Path, reference: Reference, label_column: int) -> tuple[list[tuple[str, int, int]], np.ndarray]:
    """(regions as (FASTA chrom, start, end), 0/1 labels); errors name `file:line`."""
    if not path.is_file():
        raise AnalysisInputError(f"BED: {path} does not exist")
    with open(path, "rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    regions, labels = [], []
    try:
        handle = gzip.open(path, "rt") if gzipped else open(path)
        with handle:
            for lineno, line in enumerate(handle, start=1):
                if not line.strip() or line.startswith(("#", "track", "browser")):
                    continue
                fields = line.rstrip("\n").split("\t")
                where = f"BED: {path}:{lineno}"
                if len(fields) < max(3, label_column):
                    raise AnalysisInputError(f"{where}: {len(fields)} tab-separated columns; need chrom, start, end "
                                             f"and the label in column {label_column}")
                try:
                    start, end = int(fields[1]), int(fields[2])
                except ValueError:
                    raise AnalysisInputError(f"{where}: start/end must be integers, got {fields[1]!r}, "
                                             f"{fields[2]!r}") from None
                chrom = reference.chrom(fields[0])
                if chrom is None:
                    raise AnalysisInputError(f"{where}: chromosome {fields[0]!r} is not in the FASTA")
                if not 0 <= start < end <= reference.sizes[chrom]:
                    raise AnalysisInputError(f"{where}: interval {start}-{end} is empty or outside {chrom} "
                                             f"(0-{reference.sizes[chrom]})")
                label = LABELS.get(fields[label_column - 1].strip().lower())
                if label is None:
                    raise AnalysisInputError(f"{where}: label {fields[label_column - 1]!r} in column {label_column} "
                                             f"is not one of 1/0, positive/negative, true/false, yes/no")
                regions.append((chrom, start, end))
                labels.append(label)
    except (UnicodeDecodeError, OSError, EOFError) as err:
        raise AnalysisInputError(f"BED: {path}: not a text BED ({err})") from None
    labels_arr = np.asarray(labels, dtype=np.int64)
    if len(set(labels)) < 2:
        raise AnalysisInputError(f"BED: {path}: {len(labels)} regions, all labelled {labels[0] if labels else '-'}; "
                                 f"both classes are needed")
    return regions, labels_arr


def piece_centres(start: int, end: int, max_windows: int) -> list[int]:
    """Centres of the 128-bp pieces tiled outwards from the region's centre: an odd count, 1 ≤ n ≤ max_windows."""
    n = max(1, (end - start) // PIECE)
    n = n - 1 if n % 2 == 0 else n
    n = min(n, max_windows if max_windows % 2 else max_windows - 1)
    mid = (start + end) // 2
    return [mid + k * PIECE for k in range(-(n // 2), n // 2 + 1)]


def region_features(model: ExportedModel, reference: Reference, regions: list[tuple[str, int, int]],
                    max_windows: int, strands: int = 2) -> np.ndarray:
    """float [regions, d_tech + d_bio]: window features averaged per region."""
    owner, windows = [], []
    for i, (chrom, start, end) in enumerate(regions):
        for centre in piece_centres(start, end, max_windows):
            windows.append(reference.window(chrom, centre, model.window))
            owner.append(i)
    features = model.features(np.stack(windows), strands=strands)
    owner_arr = np.asarray(owner)
    sums = np.zeros((len(regions), features.shape[1]))
    np.add.at(sums, owner_arr, features)
    return sums / np.bincount(owner_arr, minlength=len(regions))[:, None]


KMERS = ["".join(p) for p in product("ACGT", repeat=3)]


def kmer_frequencies(tokens: np.ndarray, k: int = 3) -> np.ndarray:
    """float [4**k]: frequencies of the k-mers of both strands among those without N."""
    counts = np.zeros(4 ** k)
    for strand in (tokens, reverse_complement(tokens)):
        windows = np.lib.stride_tricks.sliding_window_view(strand, k)
        windows = windows[(windows != N_CODE).all(axis=1)]
        index = (windows * (4 ** np.arange(k - 1, -1, -1))).sum(axis=1)
        counts += np.bincount(index, minlength=4 ** k)
    return counts / max(1.0, counts.sum())


def standardise(x: np.ndarray) -> np.ndarray:
    """Columns z-scored: k-mer frequencies vary by < 0.01, which the variance filter (0.01) would drop whole."""
    sd = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def region_tokens(reference: Reference, regions: list[tuple[str, int, int]]) -> list[np.ndarray]:
    from mfd_common.tokens import encode
    return [encode(reference.sequence(c, s, e), ambiguous_as_n=True) for c, s, e in regions]


def write_table(rows: list[dict], out: Path | None, summary: dict) -> None:
    columns = ["features", "auroc_gc_regressed", "auroc_gc_regressed_sd", "auroc_raw", "auroc_raw_sd"]
    text = "\n".join(["\t".join(columns)] + ["\t".join(r["features"] if c == "features" else f"{r[c]:.4f}"
                                                       for c in columns) for r in rows]) + "\n"
    if out is not None:
        if out.suffix == ".json":
            safe = [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()} for r in rows]
            write_atomically(out, json.dumps({**summary, "rows": safe}, indent=2) + "\n")
        else:
            write_atomically(out, text)
    sys.stdout.write(text)


def enhancer_prediction(bed: Path, fasta: Path, *, model_dir: Path = BUNDLED, baseline_dir: Path | None = None,
                        label_column: int = 5, max_windows: int = 9, folds: int = 5, seed: int = 0,
                        strands: int = 2, threads: int | None = None) -> tuple[list[dict], dict]:
    """(the AUROC table, one row per feature set; a summary of the run) for the regions of `bed`."""
    if label_column < 1:
        raise AnalysisInputError(f"--label-column: 1-based, got {label_column}")
    if max_windows < 1 or folds < 2:
        raise AnalysisInputError("--max-windows must be >= 1 and --folds >= 2")
    reference = Reference(fasta)
    model = ExportedModel(model_dir, threads=threads)
    baseline = ExportedModel(baseline_dir, threads=threads) if baseline_dir else None
    regions, labels = read_regions(bed, reference, label_column)
    if np.bincount(labels).min() < folds:
        raise AnalysisInputError(f"BED: {bed}: each class needs at least --folds {folds} regions "
                                 f"(got {np.bincount(labels).tolist()} negatives/positives)")
    features = region_features(model, reference, regions, max_windows, strands)
    tokens = region_tokens(reference, regions)
    gc = np.array([gc_fraction(t[None])[0] for t in tokens])
    sets = {"f_bio": features[:, model.d_tech:], "f_tech": features[:, :model.d_tech], "f_all": features,
            "kmer3": standardise(np.stack([kmer_frequencies(t) for t in tokens]))}
    if baseline is not None:
        sets["baseline_model"] = region_features(baseline, reference, regions, max_windows, strands)
    rows = enhancer_auroc_table(sets, labels, gc, folds=folds, seed=seed)
    summary = {"regions": len(regions), "positives": int(labels.sum()), "model": str(model_dir),
               "folds": folds, "strands": strands}
    return rows, summary
