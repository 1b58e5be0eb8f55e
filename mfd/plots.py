"""API layer (plots): pictures of what the API returns, as matplotlib Figures (the `plots` extra).

- `attribution_logos`: three stacked sequence logos — full logit, biological part, technical part — of one window
  under one condition, from three [L][4] maps (bases A, C, G, T), drawn by logomaker. The three rows share one
  y-scale: whether a motif is biology or the assay's artefact is read off the relative heights, which
  independent scales would hide.
- `variant_effects`: one variant under each condition: REF and ALT probability side by side, and the effect on
  the logit (ALT − REF) split into its biological and technical parts (two bars from 0; the total, their sum,
  as a black diamond).

Both take plain arrays / the service's JSON / `mfd.Client` DataFrames, and return the Figure for the caller to
show or save (`fig.savefig("x.png", dpi=150)`); nothing is written or shown here.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

BASES = ["A", "C", "G", "T"]
PART_LABELS = {"logit": "full (logit)", "logit_bio": "biological (logit_bio)", "logit_tech": "technical (logit_tech)"}
BIO_COLOR, TECH_COLOR = "#1b7837", "#b2182b"


def _as_map(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"{name}: an attribution map has shape [L][4] (bases A, C, G, T), not {list(array.shape)}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name}: the map holds NaN or infinite values")
    return array


def _observed(array: np.ndarray, sequence: str, name: str) -> np.ndarray:
    """Keep each position's value at the sequence's own base (the usual 'attribution × one-hot' logo)."""
    if len(sequence) != len(array):
        raise ValueError(f"sequence: {len(sequence)} bases for a {name} map of {len(array)} positions")
    mask = np.zeros_like(array)
    for p, base in enumerate(sequence.upper()):
        if base in "ACGT":
            mask[p, "ACGT".index(base)] = 1.0
    return array * mask


def attribution_logos(full: Any, bio: Any, tech: Any, *, sequence: str | None = None, center: bool = False,
                      start: int = 0, title: str | None = None, width_per_base: float = 0.16) -> Any:
    """Stacked logos (full / biological / technical) of one window and condition.

    Args:
        full, bio, tech: [L][4] maps over A, C, G, T (e.g. /attribute's `logit`, `logit_bio`, `logit_tech`).
        sequence: the window's bases; when given, only each position's own base is drawn (attribution × input).
        center: subtract each position's mean over the four bases first (ISM maps: the mean effect of a change
            becomes 0, so the drawn letters show which bases raise or lower the score).
        start: coordinate of the first position (axis labels), e.g. the window's genomic start.
    """
    import logomaker
    import matplotlib.pyplot as plt

    maps = {"logit": _as_map(full, "full"), "logit_bio": _as_map(bio, "bio"), "logit_tech": _as_map(tech, "tech")}
    lengths = {len(m) for m in maps.values()}
    if len(lengths) != 1:
        raise ValueError(f"full, bio, tech: the maps have different lengths {sorted(lengths)}")
    length = lengths.pop()
    for part, array in maps.items():
        if center:
            array = array - array.mean(axis=1, keepdims=True)
        if sequence is not None:
            array = _observed(array, sequence, part)
        maps[part] = array
    heights = [np.clip(m, 0, None).sum(1).max(initial=0) for m in maps.values()]
    depths = [np.clip(m, None, 0).sum(1).min(initial=0) for m in maps.values()]
    top, bottom = max(heights), min(depths)
    pad = 0.05 * ((top - bottom) or 1.0)
    fig, axes = plt.subplots(3, 1, figsize=(max(6.0, 1.5 + width_per_base * length), 5.4), sharex=True,
                             layout="constrained")
    for ax, (part, array) in zip(axes, maps.items()):
        df = pd.DataFrame(array, columns=BASES, index=np.arange(start, start + length))
        logomaker.Logo(df, ax=ax, color_scheme="classic", flip_below=False, show_spines=False)
        ax.set_ylim(bottom - pad, top + pad)
        ax.set_xlim(start - 0.5, start + length - 0.5)
        ax.ticklabel_format(axis="x", useOffset=False, style="plain")
        ax.axhline(0, color="0.6", linewidth=0.5)
        ax.set_ylabel(PART_LABELS[part], fontsize=8)
        ax.spines[["top", "right"]].set_visible(False)
    axes[-1].set_xlabel("position")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def _effects_table(effects: Any, variant: int | str | None) -> tuple[pd.DataFrame, str]:
    """One variant's rows (condition_name, ref/alt probability, delta_logit{,_bio,_tech}) and its label."""
    if isinstance(effects, dict) and "results" in effects:  # a /predict_variants response
        names = [c.get("track") or ",".join(f"{k}={v}" for k, v in c["metadata"].items())
                 for c in effects["conditions"]]
        results = effects["results"]
        pick = 0 if variant is None else next((i for i, r in enumerate(results) if variant in (r["index"], r["id"])),
                                              None)
        if pick is None:
            raise ValueError(f"variant: {variant!r} is not in the response")
        r = results[pick]
        rows = [{**e, "condition_name": names[e["condition"]]} for e in r["effects"]]
        return pd.DataFrame(rows), f"{r['chrom']}:{r['pos']} {r['ref']}>{r['alt']}" + (
            f" ({r['id']})" if r["id"] and not r["id"].startswith(f"{r['chrom']}:") else "")
    if isinstance(effects, pd.DataFrame):  # mfd.Client.predict_variants
        first = effects["variant"].iloc[0] if variant is None else variant
        rows = effects[(effects["variant"] == first) | (effects["id"] == first)]
        if rows.empty:
            raise ValueError(f"variant: {variant!r} is not in the table")
        r = rows.iloc[0]
        return rows.reset_index(drop=True), f"{r['chrom']}:{r['pos']} {r['ref']}>{r['alt']} ({r['id']})"
    raise TypeError("effects: expected a /predict_variants response (dict) or an mfd.Client DataFrame")


def variant_effects(effects: Any, variant: int | str | None = None, *, title: str | None = None) -> Any:
    """REF vs ALT probability per condition, and ALT − REF logit split into biological and technical parts.

    `effects`: a /predict_variants response or `mfd.Client.predict_variants`'s DataFrame; `variant`: its index
    or id (default: the first).
    """
    import matplotlib.pyplot as plt

    table, label = _effects_table(effects, variant)
    k = len(table)
    y = np.arange(k)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 1.2 + 0.45 * k), sharey=True, layout="constrained")
    left.barh(y - 0.2, table["ref_probability"], height=0.4, color="0.65", label="REF")
    left.barh(y + 0.2, table["alt_probability"], height=0.4, color="#2166ac", label="ALT")
    left.set_xlim(0, 1)
    left.set_xlabel("probability")
    left.set_yticks(y, table["condition_name"].astype(str), fontsize=8)
    left.invert_yaxis()
    left.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
    bio, tech = table["delta_logit_bio"].to_numpy(), table["delta_logit_tech"].to_numpy()
    # side by side, each from 0 (stacking misleads when the parts have opposite signs); the total as a marker
    right.barh(y - 0.2, bio, height=0.4, color=BIO_COLOR, label="biological")
    right.barh(y + 0.2, tech, height=0.4, color=TECH_COLOR, label="technical")
    right.scatter(table["delta_logit"], y, marker="D", s=22, color="black", zorder=3, label="total Δlogit")
    right.axvline(0, color="0.4", linewidth=0.8)
    right.set_xlabel("effect on the logit (ALT − REF)")
    right.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
    for ax in (left, right):
        ax.spines[["top", "right"]].set_visible(False)
    fig.suptitle(title or f"variant {label}", fontsize=10)
    return fig


def to_png(fig: Any, *, dpi: int = 110) -> bytes:
    """The figure as PNG bytes (and closed: notebooks and reports make many)."""
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return buffer.getvalue()


def parts_from_maps(maps: dict[str, Sequence[Sequence[float]]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(full, bio, tech) from a {part: [L][4]} mapping such as one /attribute result (missing part → error)."""
    missing = [p for p in PART_LABELS if p not in maps]
    if missing:
        raise ValueError(f"maps: missing part(s) {', '.join(missing)}")
    return tuple(_as_map(maps[p], p) for p in PART_LABELS)  # type: ignore[return-value]
