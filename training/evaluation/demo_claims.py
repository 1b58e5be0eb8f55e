"""Training layer (evaluation): the paper's claims, measured on the demo data's planted truth (MFD vs the plain-head
baseline).

Why here and not in the tests: the same numbers are asserted by `tests/test_training_demo.py`, swept over seeds
and thread counts by `bench/demo_claims_sweep.py`, and quoted in `docs/reproducibility.md`; one definition keeps
them the same numbers.

The claims, for the lab-A GATA1 track in K562 (an AT-rich motif measured by the GC-biased lab), on the held-out
chromosomes (val + test):
  * `auroc_gap`   = baseline test AUROC − MFD test AUROC            (MFD predicts as well as the baseline)
  * `bio_gc_share` = MFD bio~GC / baseline bio~GC                     (the biological read-out is free of GC)
  * `tech_minus_bio` = MFD tech~GC − MFD bio~GC                       (the technical read-out took the GC bias)
where x~GC is the Pearson correlation of a read-out's logits with the planted per-bin GC content.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..data.dataset import load_training_data
from ..model.checkpoint import load_checkpoint
from ..model.config import load_config
from ..model.predict import predict
from .metrics import pearson

GC_TRACK_TARGET = ("K562", "GATA1", "lab-A")


def _gc_of(windows: Any, truth: Any) -> np.ndarray:
    return np.array([truth[f"gc/{windows.chroms[c]}"][b] for c, b in zip(windows.chrom_index, windows.bins)])


def gc_readouts(models: dict[str, Path], demo_data_dir: Path) -> dict[str, Any]:
    """Per model: the GC correlations of its bio / tech / total logits for the GC track, its card and history."""
    cfg = load_config(demo_data_dir / "config.yaml")
    data = load_training_data(cfg, splits=("val", "test"))
    truth = np.load(demo_data_dir / "truth.npz")
    info = json.loads((demo_data_dir / "truth.json").read_text())["tracks"]
    track = next(tid for tid, t in info.items() if (t["biosample"], t["target"], t["lab"]) == GC_TRACK_TARGET)
    k = data.tracks.ids.index(track)
    gc = np.concatenate([_gc_of(data.splits[split], truth) for split in ("val", "test")])
    result: dict[str, Any] = {"track": track}
    for name, path in models.items():
        model, card = load_checkpoint(path)
        preds = [predict(model, data.splits[split], data.codes) for split in ("val", "test")]
        part = {key: np.concatenate([p[key][:, k] for p in preds]) for key in ("logits_bio", "logits_tech", "logits")}
        history = [json.loads(line) for line in (Path(path) / "history.jsonl").read_text().splitlines()]
        result[name] = {"corr_bio_gc": pearson(part["logits_bio"], gc), "corr_tech_gc": pearson(part["logits_tech"], gc),
                        "corr_total_gc": pearson(part["logits"], gc), "card": card, "history": history}
    return result


def claims(readouts: dict[str, Any]) -> dict[str, float]:
    """The three claim margins (see the module docstring) plus the raw numbers they come from."""
    mfd, baseline = readouts["mfd"], readouts["baseline"]
    auroc = {name: float(readouts[name]["card"].metrics["test"]["auroc_mean"]) for name in ("mfd", "baseline")}
    return {
        "auroc_mfd": auroc["mfd"], "auroc_baseline": auroc["baseline"],
        "auroc_gap": auroc["baseline"] - auroc["mfd"],
        "bio_gc_mfd": mfd["corr_bio_gc"], "bio_gc_baseline": baseline["corr_bio_gc"],
        "bio_gc_share": mfd["corr_bio_gc"] / baseline["corr_bio_gc"] if baseline["corr_bio_gc"] else float("nan"),
        "tech_gc_mfd": mfd["corr_tech_gc"],
        "tech_minus_bio": mfd["corr_tech_gc"] - mfd["corr_bio_gc"],
    }
