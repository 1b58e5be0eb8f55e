"""Training layer (evaluation): a run's report as one HTML file (`python -m training.report CKPT --out report.html`).

What a reader wants from a finished run, drawn (training.evaluation.report_figures) and inlined as base64 PNG, so the file
opens anywhere, offline, with no CDN and no JavaScript:

- learning curves from `history.jsonl` (loss, penalty, validation AUROC/AUPRC and bio–tech |corr| per epoch);
- per-track AUROC/AUPRC of three read-outs — full (`logit`), biological only (`logit_bio + bias`, what the
  service's `biological_only` answers) and technical only (`logit_tech + bias`);
- the cross-correlation of the biological and technical features (d_bio × d_tech heatmap);
- per track, the share of the logit's variance carried by each part.

Training stores only the full read-out (the card's per-track metrics, `history.jsonl`); the other read-outs, the
heatmap and the per-track shares need the model's predictions on a split. With `--config` (the training config
naming the data, as `python -m training.evaluate` takes it) the report computes them from the checkpoint through
training's own `load_source(...).predict`; without it, the report shows what the files hold and says what is
missing and why.
"""
from __future__ import annotations

import base64
import datetime as dt
import html
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mfd_common.card import ModelCard
from mfd_common.numeric import sigmoid

from . import report_figures as figures

#: Windows predicted for the data sections by default (evenly spread over the split for a store).
DEFAULT_MAX_WINDOWS = 4000


@dataclass
class Readouts:
    """What the data sections draw: per-track scores per read-out, the feature correlation, variance shares."""

    split: str
    windows: int
    track_ids: list[str]
    scores: dict[str, dict[str, list[float | None]]]  # read-out → {"auroc": [K], "auprc": [K]}
    means: dict[str, dict[str, float]] = field(default_factory=dict)
    corr: np.ndarray | None = None
    bio_share: list[float] | None = None


def read_history(checkpoint: Path) -> list[dict[str, Any]]:
    path = checkpoint / "history.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _mean(values: list[float | None]) -> float:
    finite = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def readouts_from_predictions(pred: dict[str, np.ndarray], track_ids: list[str], d_tech: int,
                              split: str) -> Readouts:
    """Full, biological-only and technical-only per-track metrics, features' cross-correlation, variance shares.

    A read-out drops the other part and keeps the bias, as the service's `biological_only` does; with both
    strands in `pred`, each strand is scored and the two sigmoids averaged, as training's evaluation does for the
    full read-out. The per-track AUROC of the full read-out therefore equals the card's.
    """
    from .metrics import cross_correlation, per_track_metrics

    both = "logits_rev" in pred
    bias = (pred["logits_fwd"] - pred["logits_bio_fwd"] - pred["logits_tech_fwd"]).mean(axis=0)
    strands = ("fwd", "rev") if both else ("fwd",)

    def probability(part: str | None) -> np.ndarray:
        logits = [pred[f"logits_{strand}"] if part is None else pred[f"logits_{part}_{strand}"] + bias
                  for strand in strands]
        return np.mean([sigmoid(x) for x in logits], axis=0)

    scores, means = {}, {}
    for name, part in [("full", None), ("biological only", "bio"), ("technical only", "tech")]:
        found = per_track_metrics(pred["labels"], probability(part), track_ids)
        scores[name] = {m: [found["per_track"][t][m] for t in track_ids] for m in ("auroc", "auprc")}
        means[name] = {"auroc_mean": found["auroc_mean"], "auprc_mean": found["auprc_mean"]}
    features = pred["features"]
    var_bio, var_tech = np.var(pred["logits_bio"], axis=0), np.var(pred["logits_tech"], axis=0)
    total = var_bio + var_tech
    share = np.where(total > 0, var_bio / np.where(total > 0, total, 1.0), np.nan)
    return Readouts(split, int(len(pred["labels"])), list(track_ids), scores, means,
                    corr=cross_correlation(features[:, d_tech:], features[:, :d_tech]), bio_share=share.tolist())


def predict_split(checkpoint: Path, config: Path, split: str, max_windows: int | None,
                  reverse_complement: bool) -> tuple[dict[str, np.ndarray], ModelCard]:
    """The checkpoint's predictions on a split of the config's data (as `python -m training.evaluate` makes them)."""
    import torch

    from ..model.checkpoint import load_checkpoint
    from ..model.config import load_config
    from ..data.sources import load_source

    cfg = load_config(config)
    model, card = load_checkpoint(checkpoint)
    source = load_source(cfg, splits=(split,))
    if split not in source.split_sizes():
        raise ValueError(f"--split: the {split} split of {config} is empty")
    index = {tid: k for k, tid in enumerate(source.tracks.ids)}
    missing = [t.id for t in card.tracks if t.id not in index]
    if missing:
        raise ValueError(f"--config: tracks of the checkpoint missing from its data: {', '.join(missing)}")
    codes = card.metadata_codec().encode_many([t.metadata for t in card.tracks], strict=False)
    pred = source.predict(model, split, cfg, torch.device("cpu"), codes=codes, reverse_complement=reverse_complement,
                          tracks=np.array([index[t.id] for t in card.tracks]), max_windows=max_windows)
    return pred, card


def readouts_from_card(card: ModelCard) -> Readouts | None:
    """The full read-out as training stored it in the card (test split if computed, else validation)."""
    split = "test" if "test" in card.metrics else "val" if "val" in card.metrics else None
    if split is None or "per_track" not in card.metrics[split]:
        return None
    per_track = card.metrics[split]["per_track"]
    ids = [t.id for t in card.tracks if t.id in per_track]
    scores = {"full": {m: [per_track[t].get(m) for t in ids] for m in ("auroc", "auprc")}}
    return Readouts(split, int(card.metrics[split].get("windows", 0)), ids, scores,
                    {"full": {"auroc_mean": card.metrics[split].get("auroc_mean"),
                              "auprc_mean": card.metrics[split].get("auprc_mean")}})


# ---- HTML ----------------------------------------------------------------------------------------------------
def _img(fig: Any, alt: str) -> str:
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return f"{value:.4f}" if isinstance(value, float) else html.escape(str(value))


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


STYLE = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
img{max-width:100%;display:block;margin:.5em 0}table{border-collapse:collapse;font-size:.9em}
td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left}.note{color:#555;font-style:italic}"""


def render_html(checkpoint: Path, card: ModelCard, history: list[dict[str, Any]], readouts: Readouts | None,
                data_note: str | None) -> str:
    import matplotlib

    matplotlib.use("Agg")
    cfg = card.config or {}
    head = [("model", card.model_name), ("checkpoint", str(checkpoint)), ("tracks", len(card.tracks)),
            ("d_bio / d_tech", f"{card.d_bio} / {card.d_tech}"),
            ("head", cfg.get("model", {}).get("head_kind", "n/a")),
            ("penalty", f"{cfg.get('penalty', {}).get('kind', 'n/a')} × {cfg.get('penalty', {}).get('coeff', 'n/a')}"),
            ("kept epoch", card.metrics.get("epoch", "n/a"))]
    parts = [f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>MFD training report: "
             f"{html.escape(card.model_name)}</title><style>{STYLE}</style></head><body>",
             f"<h1>MFD training report: {html.escape(card.model_name)}</h1>",
             "<table>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in head) + "</table>",
             "<h2>Learning curves</h2>"]
    parts.append(_img(figures.learning_curves(history), "learning curves") if history
                 else _note("no history.jsonl in the checkpoint folder: no learning curves."))
    parts.append("<h2>Per-track AUROC / AUPRC: full vs biological-only read-out</h2>")
    if readouts is not None:
        parts.append(f"<p>{html.escape(readouts.split)} split, {readouts.windows} windows.</p>")
        parts.append("<table><tr><th>read-out</th><th>AUROC (mean over tracks)</th><th>AUPRC (mean)</th></tr>"
                     + "".join(f"<tr><td>{html.escape(n)}</td><td>{_fmt(m['auroc_mean'])}</td>"
                               f"<td>{_fmt(m['auprc_mean'])}</td></tr>" for n, m in readouts.means.items())
                     + "</table>")
        parts.append(_img(figures.per_track_scores(readouts.track_ids, readouts.scores), "per-track AUROC and AUPRC"))
    if data_note:
        parts.append(_note(data_note))
    parts.append("<h2>Cross-correlation of biological and technical features</h2>")
    if readouts is not None and readouts.corr is not None:
        parts.append(_img(figures.cross_correlation_heatmap(readouts.corr), "bio/tech cross-correlation heatmap"))
    else:
        parts.append(_note("needs the features of a split: run with --config."))
    parts.append("<h2>Variance shares</h2>")
    if readouts is not None and readouts.bio_share is not None:
        parts.append(_img(figures.variance_shares(readouts.track_ids, readouts.bio_share), "variance shares"))
    stored = {s: card.metrics[s].get("variance_share") for s in ("val", "test") if s in card.metrics}
    rows = [(s, v) for s, v in stored.items() if isinstance(v, dict)]
    if rows:
        parts.append("<p>As training stored them (mean over tracks):</p><table><tr><th>split</th><th>bio share</th>"
                     "<th>tech share</th></tr>" + "".join(f"<tr><td>{s}</td><td>{_fmt(v.get('bio_share'))}</td>"
                                                          f"<td>{_fmt(v.get('tech_share'))}</td></tr>"
                                                          for s, v in rows) + "</table>")
    parts.append(f"<p class=note>Written by python -m training.report at "
                 f"{dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}.</p></body></html>")
    return "\n".join(parts)


def build_report(checkpoint: str | Path, *, config: str | Path | None = None, split: str = "test",
                 max_windows: int | None = DEFAULT_MAX_WINDOWS, reverse_complement: bool = True) -> str:
    """The report's HTML for a checkpoint folder (model_card.json, history.jsonl, model.safetensors)."""
    checkpoint = Path(checkpoint)
    if not (checkpoint / "model_card.json").is_file():
        raise FileNotFoundError(f"{checkpoint}: no model_card.json (not a checkpoint folder)")
    card = ModelCard.load(checkpoint / "model_card.json")
    history = read_history(checkpoint)
    if config is not None:
        pred, card = predict_split(checkpoint, Path(config), split, max_windows, reverse_complement)
        readouts, note = readouts_from_predictions(pred, [t.id for t in card.tracks], card.d_tech, split), None
    else:
        readouts = readouts_from_card(card)
        note = ("Biological-only and technical-only read-outs, the feature heatmap and per-track variance shares "
                "need predictions on a split, which training does not store: run with --config CONFIG (the "
                "training config that names the data). Shown: the full read-out from the card.")
    return render_html(checkpoint, card, history, readouts, note)
