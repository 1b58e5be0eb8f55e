"""Evaluation: predictions over a split (optionally averaged over both strands) and the metrics the card reports.

`python -m training.evaluate CKPT --config CONFIG [--split test]` rebuilds the split from the config's data
(in-memory files or `data.store`), matches tracks by id to the checkpoint's card, and prints the report: strict
JSON on stdout (`--out` writes it too; a value that does not exist, e.g. the AUROC of a track without positives,
is null) and a table on stderr. Whole split by default; the authors' metrics under their names (see
`metrics_from_predictions`), ours beside them. The
paper averages forward and reverse complement predictions at evaluation; we report both the forward-only and the
averaged numbers so the effect of averaging is visible rather than silently folded in.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import numpy as np
import torch

from mfd_common.numeric import sigmoid

from .config import ConfigError, load_config, parse_overrides
from .dataset import Windows
from .metrics import (independence_metrics, json_safe, per_track_metrics, prediction_variance_ratios,
                      rf_independence_accuracy, shuffled_pair_accuracy, variance_share)
from .model import MFDModel, reverse_complement_tokens

if TYPE_CHECKING:
    from .loader import StoreWindowDataset


def predict(model: MFDModel, windows: Windows, codes: np.ndarray | torch.Tensor, *, batch_size: int = 256,
            device: str | torch.device = "cpu", max_windows: int | None = None,
            reverse_complement: bool = True) -> dict[str, np.ndarray]:
    """Predictions for the first `max_windows` windows of an in-memory split (see `predict_batches`)."""
    n = len(windows) if max_windows is None else min(len(windows), max_windows)
    offsets = np.arange(model.cfg.window_bases, dtype=np.int64)

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, n, batch_size):
            index = np.arange(start, min(start + batch_size, n))
            yield windows.tokens[windows.starts[index][:, None] + offsets], windows.labels[index]

    return predict_batches(model, batches(), codes, device=device, reverse_complement=reverse_complement)


def subsample_index(n: int, max_windows: int | None) -> np.ndarray:
    """All of range(n), or `max_windows` indices spread evenly over it (a capped split still spans every
    chromosome of the split instead of only the first one)."""
    if max_windows is None or max_windows >= n:
        return np.arange(n, dtype=np.int64)
    return np.unique(np.linspace(0, n - 1, max_windows).round().astype(np.int64))


def predict_dataset(model: MFDModel, dataset: "StoreWindowDataset", codes: np.ndarray | torch.Tensor, *,
                    batch_size: int = 256, device: str | torch.device = "cpu", max_windows: int | None = None,
                    reverse_complement: bool = True, num_workers: int = 0) -> dict[str, np.ndarray]:
    """Predictions over a memory-mapped split, streamed batch by batch, in genome order (build `dataset` without
    augmentation).

    Only the outputs are gathered, never the split's tokens; `max_windows` takes evenly spaced windows.
    """
    from .loader import make_loader

    index = subsample_index(len(dataset), max_windows)
    loader = make_loader(dataset, batch_size, sampler=index.tolist(), num_workers=num_workers, drop_last=False)
    return predict_batches(model, loader, codes, device=device, reverse_complement=reverse_complement)


@torch.no_grad()
def predict_batches(model: MFDModel, batches: Iterable[tuple[Any, Any]], codes: np.ndarray | torch.Tensor, *,
                    device: str | torch.device = "cpu", reverse_complement: bool = True) -> dict[str, np.ndarray]:
    """Logits (forward, reverse, averaged), their bio/tech parts and forward features for (tokens, labels) batches.

    The model is put in eval mode (BatchNorm running statistics) and restored to its previous mode after.
    """
    was_training = model.training
    model.eval()
    codes_t = torch.as_tensor(codes, dtype=torch.float32, device=device)
    parts: dict[str, list[np.ndarray]] = {}
    for tokens, labels in batches:
        tokens = torch.as_tensor(tokens).to(device)
        out = model(tokens, codes_t)
        got = {"logits_fwd": out["logits"], "logits_bio_fwd": out["logits_bio"],
               "logits_tech_fwd": out["logits_tech"], "features": out["features"]}
        if reverse_complement:
            rc = reverse_complement_tokens(tokens)
            out_rc = model(rc, codes_t)
            got.update({"logits_rev": out_rc["logits"], "logits_bio_rev": out_rc["logits_bio"],
                        "logits_tech_rev": out_rc["logits_tech"]})
        for key, value in got.items():
            parts.setdefault(key, []).append(value.float().cpu().numpy())
        parts.setdefault("labels", []).append(np.asarray(labels, dtype=np.uint8))
    model.train(was_training)
    if "labels" not in parts:
        raise ValueError("no windows to predict")
    result = {k: np.concatenate(v) for k, v in parts.items()}
    for key in ("logits", "logits_bio", "logits_tech"):
        result[key] = (result[f"{key}_fwd"] + result[f"{key}_rev"]) / 2 if reverse_complement else result[f"{key}_fwd"]
    if reverse_complement:
        result["prob"] = (sigmoid(result["logits_fwd"]) + sigmoid(result["logits_rev"])) / 2
    else:
        result["prob"] = sigmoid(result["logits_fwd"])
    return result


def metrics_from_predictions(pred: dict[str, np.ndarray], track_ids: list[str], d_tech: int, *,
                             forest: bool = True, probes: bool = False, seed: int = 0) -> dict[str, Any]:
    """AUROC/AUPRC per track (strand-averaged and forward-only), the authors' independence measures, and ours.

    `authors` holds what their code logs, under their names: `rf_accuracy` (a random forest telling real
    (bio, tech) pairs from shuffled ones, 12,800 windows; 0.5 = independent) and the variance ratios of the
    sigmoid of the bias-free bio / tech logits on the forward strand; with `probes`, also the post-hoc shuffle
    discriminator and R² predictors of their `independence_metrics.py` (trained on the frozen features).
    `forest=False` leaves out the authors' forest (~8 s on 12,800 windows: training's per-epoch validation skips
    it and computes it for the kept checkpoint's test metrics). `independence` (|corr|, CKA, and our cheaper
    forest that splits windows before pairing) and `variance_share` are ours, kept as extras.
    """
    labels = pred["labels"]
    averaged = per_track_metrics(labels, pred["prob"], track_ids)
    forward = per_track_metrics(labels, pred["logits_fwd"], track_ids)
    f = pred["features"]
    f_bio, f_tech = f[:, d_tech:], f[:, :d_tech]
    authors: dict[str, Any] = {}
    if forest:
        authors["rf_accuracy"] = rf_independence_accuracy(f_bio, f_tech, seed=seed)
    authors.update(prediction_variance_ratios(pred["logits_bio_fwd"], pred["logits_tech_fwd"]))
    if probes:
        from .probes import posthoc_probes

        authors.update(posthoc_probes(f_bio, f_tech, seed=seed))
    return {
        "windows": int(len(labels)),
        "auroc_mean": averaged["auroc_mean"],
        "auprc_mean": averaged["auprc_mean"],
        "auroc_mean_forward": forward["auroc_mean"],
        "auprc_mean_forward": forward["auprc_mean"],
        "per_track": averaged["per_track"],
        "authors": authors,
        "independence": {**independence_metrics(f_bio, f_tech),
                         "rf_shuffled_pair_accuracy": shuffled_pair_accuracy(f_bio, f_tech, seed=seed)},
        "variance_share": variance_share(pred["logits_bio"], pred["logits_tech"]),
    }


def main(argv: list[str] | None = None) -> int:
    from .build_store import StoreError
    from .checkpoint import load_checkpoint
    from .sources import load_source

    parser = argparse.ArgumentParser(description="Evaluate an MFD checkpoint on a split of the config's data.")
    parser.add_argument("checkpoint", help="checkpoint folder (model.safetensors + model_card.json)")
    parser.add_argument("--config", required=True,
                        help="training config naming the data (FASTA, TSV and split, or data.store)")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override a config field")
    parser.add_argument("--no-rc", action="store_true", help="forward strand only")
    parser.add_argument("--max-windows", type=int, default=None,
                        help="at most this many windows (in-memory data: the first ones; a store: evenly spaced); "
                             "default: the whole split")
    parser.add_argument("--no-probes", action="store_true",
                        help="skip the authors' post-hoc probes (shuffle discriminator, R² predictors)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the forest and the probes (default 0)")
    parser.add_argument("--out", help="also write the metrics JSON here")
    args = parser.parse_args(argv)
    if args.max_windows is not None and args.max_windows < 1:
        print("error: --max-windows: must be at least 1", file=sys.stderr)
        return 2
    try:
        overrides = parse_overrides(args.set)
        cfg = load_config(args.config, overrides)
        model, card = load_checkpoint(args.checkpoint)
        source = load_source(cfg, splits=(args.split,))
    except (ConfigError, StoreError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.split not in source.split_sizes():
        where = "data.store.universe" if cfg.data.store is not None else f"data.split.{args.split}"
        print(f"error: config: {where}: the {args.split} split is empty", file=sys.stderr)
        return 2
    index = {tid: k for k, tid in enumerate(source.tracks.ids)}
    missing = [t.id for t in card.tracks if t.id not in index]
    if missing:
        where = cfg.data.store.dir if cfg.data.store is not None else cfg.data.metadata
        print(f"error: tracks of the checkpoint missing from {where}: {', '.join(missing)}", file=sys.stderr)
        return 2
    order = np.array([index[t.id] for t in card.tracks])
    codes = card.metadata_codec().encode_many([t.metadata for t in card.tracks], strict=False)
    pred = source.predict(model, args.split, cfg, torch.device("cpu"), codes=codes,
                          reverse_complement=not args.no_rc, tracks=order, max_windows=args.max_windows)
    found = metrics_from_predictions(pred, [t.id for t in card.tracks], card.d_tech, probes=not args.no_probes,
                                     seed=args.seed)
    metrics = json_safe({args.split: found})
    text = json.dumps(metrics, indent=2, allow_nan=False)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    print(report_table(args.split, metrics[args.split]), file=sys.stderr)
    return 0


def report_table(split: str, m: dict[str, Any]) -> str:
    """The report for people: the authors' figures under their names, then ours (the JSON has everything)."""
    def fmt(value: Any) -> str:
        return "n/a" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)

    rows = [("windows", m["windows"]), ("AUROC (mean over tracks, strand-averaged)", m["auroc_mean"]),
            ("AUPRC (mean over tracks, strand-averaged)", m["auprc_mean"]),
            ("AUROC forward strand", m["auroc_mean_forward"]), ("AUPRC forward strand", m["auprc_mean_forward"])]
    rows += [(f"authors: {k}", v) for k, v in m["authors"].items()]
    rows += [(f"ours: {k}", v) for k, v in m["independence"].items()]
    rows += [(f"ours: variance {k}", v) for k, v in m["variance_share"].items()]
    width = max(len(name) for name, _ in rows)
    return "\n".join([f"{split} split"] + [f"  {name:<{width}}  {fmt(value)}" for name, value in rows])


if __name__ == "__main__":
    sys.exit(main())
