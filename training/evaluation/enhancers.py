"""Training layer (analysis): enhancer prediction from embeddings, the paper's VISTA experiment, on features given.

Why: if f_bio carries biology and f_tech the assays' artefacts, a linear classifier on f_bio should tell enhancers
from non-enhancers better than one on f_tech, and GC content (a technical confounder of peak calling) should not
explain that away. As the authors' `vista_enhancer.py`: per feature set, drop near-constant features
(variance < 0.01), standardise, fit an L2 logistic regression, score AUROC on held-out regions; GC content of each
region is regressed out of the features first (least squares on [1, GC]; their `regress_out_X` omits the intercept,
which leaves the features' mean in; centring is the evident intent). Where they use one stratified 80/20 split we
cross-validate (stratified k-fold, seeded) and report the mean and spread.

Inputs are arrays (features per named set, 0/1 labels, GC per region); computing features from a checkpoint and a
BED of labelled regions is the caller's job (not built yet: see docs/analyses.md).
"""
from __future__ import annotations

import numpy as np


def regress_out(features: np.ndarray, covariate: np.ndarray) -> np.ndarray:
    """Residuals of each feature column after least squares on [1, covariate]."""
    x = np.column_stack([np.ones(len(covariate)), np.asarray(covariate, dtype=np.float64)])
    y = np.asarray(features, dtype=np.float64)
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    return y - x @ coef


def cross_validated_auroc(features: np.ndarray, labels: np.ndarray, *, folds: int = 5,
                          seed: int = 0) -> tuple[float, float]:
    """Mean and standard deviation over stratified folds of a logistic regression's held-out AUROC."""
    from sklearn.feature_selection import VarianceThreshold
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = np.asarray(labels).astype(int)
    if set(np.unique(labels)) != {0, 1}:
        raise ValueError("labels: need both classes, 0 and 1")
    if np.bincount(labels).min() < folds:
        raise ValueError(f"labels: each class needs at least {folds} regions for {folds}-fold cross-validation")
    scores = []
    for fit, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(features, labels):
        model = make_pipeline(VarianceThreshold(0.01), StandardScaler(), LogisticRegression(max_iter=1000))
        try:
            model.fit(features[fit], labels[fit])
        except ValueError:          # every feature near-constant: nothing to learn from
            scores.append(0.5)
            continue
        scores.append(roc_auc_score(labels[test], model.predict_proba(features[test])[:, 1]))
    return float(np.mean(scores)), float(np.std(scores))


def enhancer_auroc_table(feature_sets: dict[str, np.ndarray], labels: np.ndarray, gc: np.ndarray, *,
                         folds: int = 5, seed: int = 0) -> list[dict[str, float | str]]:
    """One row per feature set: cross-validated AUROC with GC regressed out and, for reference, without; plus a
    row for GC content alone."""
    rows: list[dict[str, float | str]] = []
    for name, features in feature_sets.items():
        raw = cross_validated_auroc(np.asarray(features, dtype=np.float64), labels, folds=folds, seed=seed)
        adjusted = cross_validated_auroc(regress_out(features, gc), labels, folds=folds, seed=seed)
        rows.append({"features": name, "auroc_gc_regressed": adjusted[0], "auroc_gc_regressed_sd": adjusted[1],
                     "auroc_raw": raw[0], "auroc_raw_sd": raw[1]})
    gc = np.asarray(gc, dtype=np.float64)
    gc_z = (gc - gc.mean()) / (gc.std() or 1.0)   # GC fractions vary by < 0.1: unscaled, the variance filter drops them
    gc_only = cross_validated_auroc(gc_z[:, None], labels, folds=folds, seed=seed)
    rows.append({"features": "gc_content", "auroc_gc_regressed": float("nan"), "auroc_gc_regressed_sd": float("nan"),
                 "auroc_raw": gc_only[0], "auroc_raw_sd": gc_only[1]})
    return rows
