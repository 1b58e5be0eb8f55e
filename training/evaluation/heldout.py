"""Training layer (analysis): the paper's imputation experiment: train with tracks held out, then predict those
tracks from their metadata alone.

The library of `python -m training.heldout` (the command reads the config and the track ids and calls
`heldout_experiment`):

    python -m training.heldout --config demo_data/config.yaml --out runs/heldout
        (--holdout-tracks ID … | --holdout-file FILE) [--set field=value …]
        [--reference-checkpoint DIR | --train-reference] [--target-variable target] [--no-progress]

What it does:
1. **Train without the held-out tracks.** The config's track table is copied to `OUT/data/tracks.tsv` without
   the held-out rows (each kept row's peak file resolved to an absolute path, so the copy finds the same files), and
   `training.model.fit.run` (what `python -m training.train` runs) trains on a derived config that reads it
   (`OUT/data/config.yaml`): the codec is fitted on the kept tracks only, exactly as if the held-out experiments
   did not exist. The checkpoint is `OUT/model`.
2. **Score the held-out tracks from their metadata.** Each held-out track's metadata row is encoded with the
   trained model's codec; a value the kept tracks never had (a new lab, a new year) cannot be encoded, so that
   variable is left unspecified (the codec's default for a missing variable) and reported in `unseen_values`. The
   model then predicts every window of the test split (both strands averaged, as in evaluation) for that condition;
   labels come from the held-out tracks' own peak files. AUROC per track for the total logit (`auroc_mfd`), its
   biological and technical parts (`auroc_mfd_bio`, `auroc_mfd_tech`; the authors' MFD, MFD_bio, MFD_tech), and a
   baseline that needs no metadata model: the mean logit of the trained tracks with the same target
   (`auroc_same_target_mean`; the authors' `same_target`, without their per-organ weights).
3. **Against the track seen in training** (where applicable): `--reference-checkpoint` names a model trained with
   all tracks (or `--train-reference` trains one with the same config into `OUT/reference`); for each held-out
   track that model has, `auroc_seen` is its own output's AUROC on the same windows.

Output: `OUT/heldout.json` (table + settings) and `OUT/heldout.tsv` (`write_outputs`, published atomically).
Works with the in-memory data path (`data.fasta` / `data.metadata` / `data.peaks`); a built store (`data.store`)
is refused with a message (its label matrix holds every track; build a second store from a files report without
them instead).
Bad input raises `HeldOutError` (or the data and config layers' errors) naming the option or file; the command
exits 2 with it.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mfd_common.card import CARD_FILENAME
from mfd_common.codec import MetadataCodec, MetadataError
from mfd_common.publish import write_atomically

from ..model.config import Config, config_from_dict

TSV_COLUMNS = ["track", "target", "positives", "windows", "auroc_mfd", "auroc_mfd_bio", "auroc_mfd_tech",
               "auroc_same_target_mean", "auroc_seen", "unseen_values"]
PEAKS_COLUMN = "heldout_peak_file"   # the derived table's column: each kept track's peak file, absolute


class HeldOutError(ValueError):
    """Bad held-out input; the message names the option or file."""


def read_holdout_file(path: Path) -> list[str]:
    """Track ids, one per line (blank lines and `#` comments skipped)."""
    if not path.is_file():
        raise HeldOutError(f"--holdout-file: {path} does not exist")
    ids = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    return [i for i in ids if i]


def read_rows(cfg: Config) -> tuple[list[str], list[dict[str, str]]]:
    """The config's track table as (columns, rows), with `##` comment lines skipped as `training.data.dataset` does."""
    path = cfg.resolve(cfg.data.metadata)
    if not path.is_file():
        raise HeldOutError(f"data.metadata: {path} does not exist")
    with open(path, newline="") as handle:
        reader = csv.DictReader((line for line in handle if not line.startswith("##")), delimiter="\t")
        rows = [dict(row) for row in reader]
        return list(reader.fieldnames or []), rows


def split_tracks(cfg: Config, holdout: list[str]) -> tuple[list[str], list[dict[str, str]], list[dict[str, str]]]:
    """(columns, kept rows, held-out rows in the order asked); every id must exist and some tracks must stay."""
    if cfg.data.store is not None:
        raise HeldOutError("data.store: holding tracks out of a built store is not supported; build a store from a "
                           "files report without those tracks, or use the in-memory data path")
    columns, rows = read_rows(cfg)
    id_column = cfg.data.id_column
    by_id = {(row.get(id_column) or "").strip(): row for row in rows}
    if len(set(holdout)) != len(holdout):
        raise HeldOutError("--holdout-tracks: a track id is given twice")
    missing = [t for t in holdout if t not in by_id]
    if missing:
        raise HeldOutError(f"--holdout-tracks: {', '.join(missing)} not in {cfg.resolve(cfg.data.metadata)} "
                           f"(column {id_column!r}; e.g. {', '.join(list(by_id)[:3])})")
    kept = [row for row in rows if (row.get(id_column) or "").strip() not in holdout]
    if not kept:
        raise HeldOutError("--holdout-tracks: every track is held out; nothing is left to train on")
    return columns, kept, [by_id[t] for t in holdout]


def peak_file(cfg: Config, row: dict[str, str]) -> str:
    """The row's peak file as `training.data.dataset.read_track_table` resolves it, absolute."""
    table = cfg.resolve(cfg.data.metadata)
    try:
        relpath = cfg.data.peaks.format_map({k: (v or "").strip() for k, v in row.items() if k})
    except KeyError as err:
        raise HeldOutError(f"data.peaks: template {cfg.data.peaks!r} names column {err.args[0]!r}, which "
                           f"{table} does not have") from None
    path = Path(relpath)
    return str((path if path.is_absolute() else table.parent / path).resolve())


def derived_config(cfg: Config, rows: list[dict[str, str]], columns: list[str], directory: Path) -> Config:
    """A config identical to `cfg` but reading a track table of `rows` written into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    table = directory / "tracks.tsv"
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=[*columns, PEAKS_COLUMN], delimiter="\t", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, PEAKS_COLUMN: peak_file(cfg, row)})
    write_atomically(table, text.getvalue())
    data = cfg.to_dict()
    data["data"].update({"fasta": str(cfg.resolve(cfg.data.fasta).resolve()), "metadata": str(table.resolve()),
                         "peaks": "{" + PEAKS_COLUMN + "}"})
    data["data"].pop("store", None)
    write_atomically(directory / "config.yaml", yaml.safe_dump(data, sort_keys=False))
    return config_from_dict(data, base_dir=directory)


def encode_seen(codec: MetadataCodec, row: dict[str, Any]) -> tuple[np.ndarray, dict[str, str]]:
    """Codes of a metadata row; variables whose value the codec never saw are left unspecified (and returned)."""
    usable, unseen = {}, {}
    for variable in codec.variables:
        if variable.name not in row:
            continue
        try:
            codec.encode({variable.name: row[variable.name]})
            usable[variable.name] = row[variable.name]
        except MetadataError:
            unseen[variable.name] = str(row[variable.name])
    return codec.encode(usable), unseen


def heldout_windows(cfg: Config, heldout_rows: list[dict[str, str]]):
    """The test split's windows (the same windows as training's test split: every bin of the test chromosomes that
    passes the N filter) labelled by the held-out tracks' own peak files."""
    from ..data.dataset import build_windows, split_chromosomes
    from ..data.genome import Genome
    from ..data.peaks import read_peaks

    genome = Genome(cfg.resolve(cfg.data.fasta))
    chroms = split_chromosomes(cfg, genome)["test"]
    if not chroms:
        raise HeldOutError("data.split.test: the config has no test chromosomes to score the held-out tracks on")
    peaks = [read_peaks(Path(peak_file(cfg, row)), genome.sizes) for row in heldout_rows]
    return build_windows(genome, chroms, peaks, window_bases=cfg.model.window_bases, bin_size=cfg.data.bin_size,
                         max_shift=cfg.data.augment.max_shift, max_n_fraction=cfg.data.max_n_fraction,
                         stride_bins=cfg.data.stride_bins, seed=cfg.seed + 2)


def condition_logits(model, windows, codes: np.ndarray, batch_size: int = 256) -> dict[str, np.ndarray]:
    """Logits [n, K] and their bio/tech parts for any condition codes [K, W], both strands averaged.

    `MFDModel.forward` adds the trained tracks' own biases (one per trained track), so conditions that are not
    trained tracks go through `head_weights`, whose bias follows the card's bias rule (a constant per condition:
    it cannot change an AUROC)."""
    import torch

    from ..model.network import apply_condition_weights, reverse_complement_tokens

    offsets = np.arange(model.cfg.window_bases, dtype=np.int64)
    parts: dict[str, list[np.ndarray]] = {"logits": [], "logits_bio": [], "logits_tech": []}
    with torch.no_grad():
        w_tech, w_bio, bias = model.head_weights(torch.as_tensor(codes, dtype=torch.float32))
        for start in range(0, len(windows), batch_size):
            index = np.arange(start, min(start + batch_size, len(windows)))
            tokens = torch.from_numpy(windows.tokens[windows.starts[index][:, None] + offsets])
            fwd = apply_condition_weights(model.features(tokens), model.d_tech, w_tech, w_bio, bias)
            rev = apply_condition_weights(model.features(reverse_complement_tokens(tokens)), model.d_tech, w_tech,
                                          w_bio, bias)
            for key in parts:
                parts[key].append(((fwd[key] + rev[key]) / 2).numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


def score(cfg: Config, model_dir: Path, heldout: list[str], heldout_rows: list[dict[str, str]], windows,
          target_variable: str, reference_dir: Path | None) -> list[dict[str, Any]]:
    """One row per held-out track (see module docs)."""
    from ..model.checkpoint import load_checkpoint
    from ..model.predict import predict
    from .metrics import auroc

    model, card = load_checkpoint(model_dir)
    if model.cfg.head_kind != "mfd":
        raise HeldOutError(f"model.head_kind: {model.cfg.head_kind} has no metadata head; only an MFD model can "
                           f"score a track it was not trained on")
    codec = card.metadata_codec()
    codes, unseen = zip(*(encode_seen(codec, row) for row in heldout_rows))
    trained_codes = codec.encode_many([t.metadata for t in card.tracks])
    pred = condition_logits(model, windows, np.concatenate([np.stack(codes), trained_codes]),
                            cfg.train.eval_batch_size)
    k = len(heldout)
    reference: dict[str, np.ndarray] = {}
    if reference_dir is not None:
        ref_model, ref_card = load_checkpoint(reference_dir)
        ref_ids = [t.id for t in ref_card.tracks]
        present = [t for t in heldout if t in ref_ids]
        if present:   # the tracks' own outputs, own biases included
            ref_pred = predict(ref_model, windows, ref_model.track_codes, batch_size=cfg.train.eval_batch_size)
            reference = {t: ref_pred["logits"][:, ref_ids.index(t)] for t in present}
    rows = []
    for i, track in enumerate(heldout):
        target = str(heldout_rows[i].get(target_variable, ""))
        same = [k + j for j, t in enumerate(card.tracks) if str(t.metadata.get(target_variable, "")) == target]
        y = windows.labels[:, i]
        rows.append({
            "track": track, "target": target, "positives": int(y.sum()), "windows": int(len(y)),
            "auroc_mfd": auroc(y, pred["logits"][:, i]),
            "auroc_mfd_bio": auroc(y, pred["logits_bio"][:, i]),
            "auroc_mfd_tech": auroc(y, pred["logits_tech"][:, i]),
            "auroc_same_target_mean": auroc(y, pred["logits"][:, same].mean(axis=1)) if same else float("nan"),
            "auroc_seen": auroc(y, reference[track]) if track in reference else float("nan"),
            "unseen_values": unseen[i],
        })
    return rows


def write_outputs(out: Path, rows: list[dict[str, Any]], settings: dict[str, Any]) -> str:
    from .metrics import json_safe

    write_atomically(out / "heldout.json", json.dumps(json_safe({**settings, "tracks": rows}), indent=2) + "\n")

    def fmt(value: Any) -> str:
        if isinstance(value, float):
            return "nan" if np.isnan(value) else f"{value:.4f}"
        if isinstance(value, dict):
            return ",".join(f"{k}={v}" for k, v in value.items()) or "-"
        return str(value)

    text = "\n".join(["\t".join(TSV_COLUMNS)] + ["\t".join(fmt(r[c]) for c in TSV_COLUMNS) for r in rows]) + "\n"
    write_atomically(out / "heldout.tsv", text)
    return text


def heldout_experiment(cfg: Config, holdout: list[str], out: Path, *, reference_checkpoint: Path | None = None,
                       train_reference: bool = False, target_variable: str = "target", force: bool = False,
                       score_only: bool = False, progress: bool = True) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Train without `holdout` into `out/model` (unless `score_only`), optionally a reference with every track, and
    score the held-out tracks (see module docs): (one row per held-out track, the run's settings)."""
    from ..model.fit import run

    if not holdout:
        raise HeldOutError("--holdout-tracks: no track ids given")
    columns, kept, heldout_rows = split_tracks(cfg, holdout)
    out.mkdir(parents=True, exist_ok=True)
    train_cfg = derived_config(cfg, kept, columns, out / "data")
    windows = heldout_windows(cfg, heldout_rows)
    if not score_only:
        run(train_cfg, out / "model", force=force, progress=progress)
    elif not (out / "model" / CARD_FILENAME).is_file():
        raise HeldOutError(f"--score-only: {out / 'model'} holds no checkpoint; run without --score-only")
    reference_dir = reference_checkpoint
    if train_reference:
        reference_dir = out / "reference"
        if not score_only:
            run(cfg, reference_dir, force=force, progress=progress)
    if reference_dir is not None and not (reference_dir / CARD_FILENAME).is_file():
        raise HeldOutError(f"--reference-checkpoint: {reference_dir} is not a checkpoint (no {CARD_FILENAME})")
    rows = score(cfg, out / "model", holdout, heldout_rows, windows, target_variable, reference_dir)
    settings = {"held_out": holdout, "kept": len(kept), "reference": str(reference_dir) if reference_dir else None,
                "split": "test"}
    return rows, settings
