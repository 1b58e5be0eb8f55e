"""Evaluation metrics in plain numpy: AUROC/AUPRC per track and independence between latent halves.

No sklearn: these are a few lines each, and keeping them here means the numbers in a model card can be
reproduced from this file alone. Both are exact (ties handled), matching sklearn's roc_auc_score and
average_precision_score.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve via the rank-sum (Mann–Whitney U) with average ranks for ties; NaN if one class."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    # average rank within each group of tied scores
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(scores)]])
    avg = (starts + ends + 1) / 2.0  # 1-based average rank
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def auprc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Average precision: sum over distinct thresholds of (recall step) × precision; NaN without positives."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos = int(labels.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    last_of_group = np.concatenate([np.flatnonzero(np.diff(s)), [len(s) - 1]])
    tp = np.cumsum(y)[last_of_group]
    fp = (last_of_group + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / n_pos
    recall_step = np.diff(np.concatenate([[0.0], recall]))
    return float((recall_step * precision).sum())


def per_track_metrics(labels: np.ndarray, scores: np.ndarray, track_ids: list[str]) -> dict[str, Any]:
    """AUROC/AUPRC for every track plus their means over tracks that have both classes."""
    rocs = [auroc(labels[:, k], scores[:, k]) for k in range(labels.shape[1])]
    prcs = [auprc(labels[:, k], scores[:, k]) for k in range(labels.shape[1])]
    return {
        "auroc_mean": float(np.nanmean(rocs)) if not np.all(np.isnan(rocs)) else float("nan"),
        "auprc_mean": float(np.nanmean(prcs)) if not np.all(np.isnan(prcs)) else float("nan"),
        "per_track": {tid: {"auroc": r, "auprc": p, "positives": int(labels[:, k].sum())}
                      for k, (tid, r, p) in enumerate(zip(track_ids, rocs, prcs))},
    }


def _standardise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(axis=0)
    std = x.std(axis=0)
    return x / np.where(std > 1e-12, std, np.inf)  # constant features → 0, not NaN


def cross_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return _standardise(a).T @ _standardise(b) / len(a)


def linear_cka(a: np.ndarray, b: np.ndarray) -> float:
    """Linear CKA (Kornblith et al. 2019): 0 = no linear relation between the two representations, 1 = same."""
    a = np.asarray(a, dtype=np.float64) - np.mean(a, axis=0)
    b = np.asarray(b, dtype=np.float64) - np.mean(b, axis=0)
    cross = np.linalg.norm(a.T @ b) ** 2
    norm = np.linalg.norm(a.T @ a) * np.linalg.norm(b.T @ b)
    return float(cross / norm) if norm > 0 else 0.0


def independence_metrics(f_bio: np.ndarray, f_tech: np.ndarray) -> dict[str, float]:
    """How much the biological features still know about the technical ones (lower is better)."""
    corr = np.abs(cross_correlation(f_bio, f_tech))
    return {
        "mean_abs_corr": float(corr.mean()),
        "max_abs_corr": float(corr.max()),
        "rms_corr": float(np.sqrt((corr ** 2).mean())),
        "linear_cka": linear_cka(f_bio, f_tech),
    }


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64) - np.mean(a)
    b = np.asarray(b, dtype=np.float64) - np.mean(b)
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else 0.0
