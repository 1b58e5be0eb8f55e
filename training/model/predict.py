"""Training layer (model): the model's predictions over windows, optionally averaged over both strands.

One function per kind of input (`predict`: an in-memory split; `predict_dataset`: a memory-mapped store split,
streamed batch by batch) over one loop (`predict_batches`). Both data sources (`training.data.sources`) and the
evaluation command use these; this module imports neither, so there is no import cycle between them.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator

import numpy as np
import torch

from mfd_common.numeric import sigmoid

from ..data.dataset import Windows
from ..data.loader import StoreWindowDataset, make_loader
from .network import MFDModel, reverse_complement_tokens


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


def predict_dataset(model: MFDModel, dataset: StoreWindowDataset, codes: np.ndarray | torch.Tensor, *,
                    batch_size: int = 256, device: str | torch.device = "cpu", max_windows: int | None = None,
                    reverse_complement: bool = True, num_workers: int = 0) -> dict[str, np.ndarray]:
    """Predictions over a memory-mapped split, streamed batch by batch, in genome order (build `dataset` without
    augmentation).

    Only the outputs are gathered, never the split's tokens; `max_windows` takes evenly spaced windows.
    """
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
