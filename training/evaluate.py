"""Evaluation: predictions over a split (optionally averaged over both strands) and the metrics the card reports.

`python -m training.evaluate CKPT --config CONFIG [--split test]` rebuilds the split from the config's files,
matches tracks by id to the checkpoint's card, and prints JSON metrics. The paper averages forward and reverse
complement predictions at evaluation; we report both the forward-only and the averaged numbers so the effect
of averaging is visible rather than silently folded in.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mfd_common.numeric import sigmoid
from mfd_common.tokens import COMPLEMENT_CODES

from .config import ConfigError, load_config, parse_overrides
from .dataset import Windows
from .metrics import independence_metrics, per_track_metrics
from .model import MFDModel


@torch.no_grad()
def predict(model: MFDModel, windows: Windows, codes: np.ndarray | torch.Tensor, *, batch_size: int = 256,
            device: str | torch.device = "cpu", max_windows: int | None = None,
            reverse_complement: bool = True) -> dict[str, np.ndarray]:
    """Logits (forward, reverse, averaged), their bio/tech parts and forward features for every window.

    The model is put in eval mode (BatchNorm running statistics) and restored to its previous mode after.
    """
    was_training = model.training
    model.eval()
    seq_len = model.cfg.seq_len
    n = len(windows) if max_windows is None else min(len(windows), max_windows)
    codes_t = torch.as_tensor(codes, dtype=torch.float32, device=device)
    offsets = np.arange(seq_len, dtype=np.int64)
    complement = torch.as_tensor(COMPLEMENT_CODES, device=device)
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, n, batch_size):
        index = np.arange(start, min(start + batch_size, n))
        tokens = torch.from_numpy(windows.tokens[windows.starts[index][:, None] + offsets]).to(device)
        out = model(tokens, codes_t)
        got = {"logits_fwd": out["logits"], "logits_bio_fwd": out["logits_bio"],
               "logits_tech_fwd": out["logits_tech"], "features": out["features"]}
        if reverse_complement:
            rc = complement[tokens.long()].flip(1)
            out_rc = model(rc, codes_t)
            got.update({"logits_rev": out_rc["logits"], "logits_bio_rev": out_rc["logits_bio"],
                        "logits_tech_rev": out_rc["logits_tech"]})
        for key, value in got.items():
            parts.setdefault(key, []).append(value.float().cpu().numpy())
    model.train(was_training)
    result = {k: np.concatenate(v) for k, v in parts.items()}
    for key in ("logits", "logits_bio", "logits_tech"):
        result[key] = (result[f"{key}_fwd"] + result[f"{key}_rev"]) / 2 if reverse_complement else result[f"{key}_fwd"]
    if reverse_complement:
        result["prob"] = (sigmoid(result["logits_fwd"]) + sigmoid(result["logits_rev"])) / 2
    else:
        result["prob"] = sigmoid(result["logits_fwd"])
    result["labels"] = windows.labels[:n]
    return result


def metrics_from_predictions(pred: dict[str, np.ndarray], track_ids: list[str], d_tech: int) -> dict[str, Any]:
    """AUROC/AUPRC per track (strand-averaged and forward-only) and latent independence."""
    labels = pred["labels"]
    averaged = per_track_metrics(labels, pred["prob"], track_ids)
    forward = per_track_metrics(labels, pred["logits_fwd"], track_ids)
    f = pred["features"]
    return {
        "windows": int(len(labels)),
        "auroc_mean": averaged["auroc_mean"],
        "auprc_mean": averaged["auprc_mean"],
        "auroc_mean_forward": forward["auroc_mean"],
        "auprc_mean_forward": forward["auprc_mean"],
        "per_track": averaged["per_track"],
        "independence": independence_metrics(f[:, d_tech:], f[:, :d_tech]),
    }


def main(argv: list[str] | None = None) -> int:
    from .checkpoint import load_checkpoint
    from .dataset import load_training_data

    parser = argparse.ArgumentParser(description="Evaluate an MFD checkpoint on a split of the config's data.")
    parser.add_argument("checkpoint", help="checkpoint folder (model.safetensors + model_card.json)")
    parser.add_argument("--config", required=True, help="training config naming the FASTA, TSV and split")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override a config field")
    parser.add_argument("--no-rc", action="store_true", help="forward strand only")
    parser.add_argument("--max-windows", type=int, default=None)
    parser.add_argument("--out", help="also write the metrics JSON here")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, parse_overrides(args.set))
        model, card = load_checkpoint(args.checkpoint)
        data = load_training_data(cfg, splits=(args.split,))
    except (ConfigError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.split not in data.splits:
        print(f"error: config: data.split.{args.split}: no chromosomes in this split", file=sys.stderr)
        return 2
    index = {tid: k for k, tid in enumerate(data.tracks.ids)}
    missing = [t.id for t in card.tracks if t.id not in index]
    if missing:
        print(f"error: tracks of the checkpoint missing from {cfg.data.metadata}: {', '.join(missing)}",
              file=sys.stderr)
        return 2
    order = np.array([index[t.id] for t in card.tracks])
    windows = data.splits[args.split]
    windows = Windows(windows.tokens, windows.starts, windows.labels[:, order], windows.chrom_index,
                      windows.bins, windows.chroms)
    codes = card.metadata_codec().encode_many([t.metadata for t in card.tracks], strict=False)
    pred = predict(model, windows, codes, batch_size=cfg.train.eval_batch_size, max_windows=args.max_windows,
                   reverse_complement=not args.no_rc)
    metrics = {args.split: metrics_from_predictions(pred, [t.id for t in card.tracks], card.d_tech)}
    text = json.dumps(metrics, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
