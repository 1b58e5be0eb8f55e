"""Training layer (evaluation): the pictures of `python -m training.report`, as matplotlib Figures.

Each function takes plain numbers (history rows, per-track metrics, a correlation matrix, variance shares) and
draws one figure; `training.report` gathers the numbers and writes the HTML. Kept apart so the figures can be
drawn in a notebook from a run's files without building a report.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

READOUT_COLORS = {"full": "#2166ac", "biological only": "#1b7837", "technical only": "#b2182b"}


def _value(row: dict[str, Any], *path: str) -> float:
    for key in path:
        row = row.get(key) if isinstance(row, dict) else None
    return float(row) if isinstance(row, (int, float)) else float("nan")


def learning_curves(history: Sequence[dict[str, Any]]) -> Any:
    """Loss (train, its task part, val), the independence penalty and val |corr|, val AUROC/AUPRC per epoch."""
    import matplotlib.pyplot as plt

    epochs = [int(h["epoch"]) for h in history]
    fig, (loss, indep, score) = plt.subplots(1, 3, figsize=(12, 3.4), layout="constrained")
    for label, path, style in [("train loss", ("train", "loss"), "-"), ("train task loss", ("train", "task"), ":"),
                               ("val loss", ("val", "loss"), "-")]:
        loss.plot(epochs, [_value(h, *path) for h in history], style, marker="o", label=label)
    loss.set_title("loss")
    indep.plot(epochs, [_value(h, "train", "penalty") for h in history], marker="o", label="train penalty")
    indep.plot(epochs, [_value(h, "val", "independence", "mean_abs_corr") for h in history], marker="o",
               label="val mean |corr(f_bio, f_tech)|")
    indep.set_title("independence")
    for label, key in [("val AUROC", "auroc_mean"), ("val AUPRC", "auprc_mean")]:
        score.plot(epochs, [_value(h, "val", key) for h in history], marker="o", label=label)
    score.set_title("validation (mean over tracks)")
    for ax in (loss, indep, score):
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
        ax.spines[["top", "right"]].set_visible(False)
        if len(epochs) < 12:
            ax.set_xticks(epochs)
    return fig


def per_track_scores(track_ids: Sequence[str], readouts: dict[str, dict[str, Sequence[float | None]]]) -> Any:
    """AUROC and AUPRC per track, one bar per read-out ({"full": {"auroc": [...], "auprc": [...]}, …})."""
    import matplotlib.pyplot as plt

    k, n = len(track_ids), len(readouts)
    y = np.arange(k)
    fig, axes = plt.subplots(1, 2, figsize=(11, 1.2 + 0.32 * k * max(1, n) ** 0.5), sharey=True,
                             layout="constrained")
    height = 0.8 / n
    for ax, metric, floor in [(axes[0], "auroc", 0.5), (axes[1], "auprc", None)]:
        for j, (name, values) in enumerate(readouts.items()):
            v = np.array([np.nan if x is None else x for x in values[metric]], dtype=float)
            ax.barh(y - 0.4 + height * (j + 0.5), v, height=height, label=name,
                    color=READOUT_COLORS.get(name, None))
        if floor is not None:
            ax.axvline(floor, color="0.5", linewidth=0.8, linestyle="--")
        ax.set_xlim(0, 1)
        ax.set_xlabel(metric.upper())
        ax.spines[["top", "right"]].set_visible(False)
    axes[0].set_yticks(y, list(track_ids), fontsize=7)
    axes[0].invert_yaxis()
    axes[0].legend(fontsize=7, loc="lower center", bbox_to_anchor=(1.0, 1.0), ncol=n, frameon=False)
    return fig


def cross_correlation_heatmap(corr: np.ndarray) -> Any:
    """corr[i, j] = Pearson correlation of biological feature i with technical feature j over windows."""
    import matplotlib.pyplot as plt

    d_bio, d_tech = corr.shape
    fig, ax = plt.subplots(figsize=(1.8 + 0.28 * d_tech, 1.2 + 0.28 * d_bio), layout="constrained")
    image = ax.imshow(corr, cmap="RdBu_r", vmin=-1, vmax=1, aspect="equal", interpolation="nearest")
    ax.set_xlabel(f"technical feature (d_tech = {d_tech})")
    ax.set_ylabel(f"biological feature (d_bio = {d_bio})")
    ax.set_title(f"corr(f_bio, f_tech): mean |r| = {np.abs(corr).mean():.3f}, max |r| = {np.abs(corr).max():.3f}",
                 fontsize=9)
    fig.colorbar(image, ax=ax, shrink=0.8, label="Pearson r")
    return fig


def variance_shares(track_ids: Sequence[str], bio_share: Sequence[float]) -> Any:
    """Per track, the share of the logit's variance over windows carried by the biological vs technical part."""
    import matplotlib.pyplot as plt

    share = np.array(bio_share, dtype=float)
    y = np.arange(len(track_ids))
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.3 * len(track_ids)), layout="constrained")
    ax.barh(y, share, color=READOUT_COLORS["biological only"], label="biological")
    ax.barh(y, 1 - share, left=share, color=READOUT_COLORS["technical only"], label="technical")
    ax.set_xlim(0, 1)
    ax.set_yticks(y, list(track_ids), fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("share of var(logit_bio) + var(logit_tech)")
    ax.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return fig
