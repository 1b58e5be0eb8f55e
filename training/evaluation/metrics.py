"""Training layer (evaluation): evaluation metrics in plain numpy: AUROC/AUPRC per track and independence between latent
halves.

AUROC/AUPRC need no sklearn: a few lines each, exact (ties handled), matching sklearn's roc_auc_score and
average_precision_score. The authors' independence measures (a random forest telling real (bio, tech) feature
pairs from shuffled ones; the share of prediction variance each subspace carries) use scikit-learn's forest.
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


def json_safe(value: Any) -> Any:
    """`value` with every non-finite float (NaN, ±inf) replaced by None, so `json.dumps(..., allow_nan=False)`
    writes strict JSON (a track with one class has no AUROC; a ratio over zero variance has no value)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else float("nan")


# The authors' forest check: 50 validation batches of 256 windows; within each batch the real pairs
# [f_bio, f_tech] and fake pairs [f_bio, f_tech permuted within the batch]; then all rows shuffled and split 70/30.
RF_WINDOWS = 12_800
RF_BATCH = 256


def rf_independence_accuracy(f_bio: np.ndarray, f_tech: np.ndarray, *, windows: int | None = RF_WINDOWS,
                             batch: int = RF_BATCH, n_estimators: int = 100, max_depth: int = 4,
                             seed: int = 0) -> float:
    """The authors' `val/rf_accuracy`: test accuracy of a random forest telling real (bio, tech) pairs from shuffled.

    As their `eval_independence_rf` + `make_adversarial_batch`: `windows` windows (taken in a seeded random order,
    as their validation loader draws batches), pairs formed per batch of `batch` windows first, then every row
    shuffled and split 70 % fit / 30 % score; `RandomForestClassifier(max_depth=4)` with sklearn's defaults
    otherwise (100 trees, sqrt features, bootstrap). They leave the seeds free; we fix them. 0.5 = independent.
    Because a window's real and fake rows share f_bio and can land on both sides of the split, a forest that
    memorises f_bio can score a little under 0.5: that is the authors' number, kept as is.
    """
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(seed)
    n = len(f_bio)
    if n < 10:
        return float("nan")
    take = rng.permutation(n)[: n if windows is None else windows]
    bio, tech = np.asarray(f_bio)[take], np.asarray(f_tech)[take]
    rows, labels = [], []
    for start in range(0, len(take), batch):
        b, t = bio[start:start + batch], tech[start:start + batch]
        rows += [np.concatenate([b, t], axis=1), np.concatenate([b, t[rng.permutation(len(t))]], axis=1)]
        labels += [np.ones(len(b)), np.zeros(len(b))]
    x, y = np.concatenate(rows).astype(np.float32), np.concatenate(labels)
    order = rng.permutation(len(x))
    x, y = x[order], y[order]
    n_fit = int(0.7 * len(x))
    forest = RandomForestClassifier(n_estimators=n_estimators, max_depth=max_depth, random_state=seed, n_jobs=1)
    forest.fit(x[:n_fit], y[:n_fit])
    return float(forest.score(x[n_fit:], y[n_fit:]))


def shuffled_pair_accuracy(f_bio: np.ndarray, f_tech: np.ndarray, *, max_samples: int = 2000, seed: int = 0,
                           n_estimators: int = 50, max_depth: int = 4) -> float:
    """Held-out accuracy of a random forest telling real [f_bio, f_tech] rows from [f_bio, shuffled f_tech].

    0.5 = the forest cannot tell them apart (the subspaces look independent); 1.0 = fully dependent. As the
    authors' forest (depth 4) but ours: windows split 70/30 *before* pairing, 50 trees on 2,000 windows.
    """
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(seed)
    n = len(f_bio)
    if n < 10:
        return float("nan")
    take = rng.permutation(n)[:max_samples]
    bio, tech = np.asarray(f_bio)[take], np.asarray(f_tech)[take]
    # Split windows before pairing: if a window's real pair were fitted and its fake twin (same f_bio) scored,
    # the forest would be pushed below 0.5 by memorising f_bio. (The authors pair first, then split.)
    n_fit = int(0.7 * len(bio))

    def pairs(b: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        real = np.concatenate([b, t], axis=1)
        fake = np.concatenate([b, t[rng.permutation(len(t))]], axis=1)
        return (np.concatenate([real, fake]).astype(np.float32),
                np.concatenate([np.ones(len(real)), np.zeros(len(fake))]))

    x_fit, y_fit = pairs(bio[:n_fit], tech[:n_fit])
    x_score, y_score = pairs(bio[n_fit:], tech[n_fit:])
    forest = RandomForestClassifier(n_estimators=n_estimators, max_depth=max_depth, random_state=seed, n_jobs=1)
    forest.fit(x_fit, y_fit)
    return float(forest.score(x_score, y_score))


def prediction_variance_ratios(logits_bio: np.ndarray, logits_tech: np.ndarray) -> dict[str, float | None]:
    """The authors' variance logging: variances over windows of sigmoid(bio logit) and sigmoid(tech logit).

    Their model logs these on validation (forward strand, no augmentation), on the per-part logits *without* the
    per-track bias (so sigmoid(0) = 0.5 is the neutral point), population variance per track, then:
    `ratio_of_mean_variances_bio/tech` = mean var_bio / mean var_tech; `mean_contribution_of_bio_variance` =
    mean over tracks of var_bio / (var_bio + var_tech); `mean_variances_ratio_bio/tech` = mean over tracks of
    var_bio / var_tech; `variance_preds_biological` / `_technical` = the mean variances. Names are theirs. A
    ratio with a zero denominator is None (they would log inf or NaN).
    """
    from mfd_common.numeric import sigmoid

    var_bio = np.var(sigmoid(np.asarray(logits_bio, dtype=np.float64)), axis=0)
    var_tech = np.var(sigmoid(np.asarray(logits_tech, dtype=np.float64)), axis=0)
    total, ok = var_bio + var_tech, var_tech > 0
    return json_safe({
        "ratio_of_mean_variances_bio/tech": _ratio(var_bio.mean(), var_tech.mean()),
        "mean_contribution_of_bio_variance": float(np.mean(var_bio[total > 0] / total[total > 0]))
        if (total > 0).any() else float("nan"),
        "mean_variances_ratio_bio/tech": float(np.mean(var_bio[ok] / var_tech[ok])) if ok.all() else float("nan"),
        "variance_preds_biological": float(var_bio.mean()),
        "variance_preds_technical": float(var_tech.mean()),
    })


def variance_share(logits_bio: np.ndarray, logits_tech: np.ndarray) -> dict[str, float | None]:
    """Ours: how much of the logits' variation (over windows, per track) each subspace carries.

    `bio_share` = mean over tracks of var(bio logit) / (var(bio logit) + var(tech logit)), on raw (strand-averaged)
    logits rather than the authors' sigmoids; the per-track bias is constant over windows and carries no
    variance. A ratio with a zero denominator is None, never inf (history.jsonl must stay JSON).
    """
    var_bio = np.var(np.asarray(logits_bio, dtype=np.float64), axis=0)
    var_tech = np.var(np.asarray(logits_tech, dtype=np.float64), axis=0)
    total = var_bio + var_tech
    share = np.where(total > 0, var_bio / np.where(total > 0, total, 1.0), np.nan)
    bio_share = float(np.nanmean(share)) if np.isfinite(share).any() else float("nan")
    return json_safe({
        "bio_share": bio_share,
        "tech_share": 1.0 - bio_share,
        "ratio_of_mean_variances_bio_tech": _ratio(var_bio.mean(), var_tech.mean()),
    })


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
        from ..evaluation.probes import posthoc_probes

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
