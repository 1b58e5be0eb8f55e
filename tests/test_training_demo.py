"""On the demo data with planted truth, with the authors' recipe: MFD predicts as well as the baseline (the paper's
claim) and its biological read-out is free of the planted GC bias.

Both models are trained by `tests/fixtures/demo.py` with the reference preset (the config defaults: Adam with
amsgrad, lr 1e-3, covariance penalty at coeff 0.01, best val/loss kept); they differ only in the head (and with it
the penalty). The baseline (plain linear head over the whole latent) cannot keep lab-A's GC artefacts out of its
logits for a lab-A track; MFD can route them through the technical subspace, and the penalty keeps the biological
features from carrying GC along. We measure each model's biological logits' correlation with the planted per-bin GC
on held-out chromosomes.
"""
import json

import numpy as np
import pytest

from training.checkpoint import load_checkpoint
from training.config import load_config
from training.dataset import load_training_data
from training.evaluate import predict
from training.metrics import pearson

# Training both models takes ~6-8 minutes on 2 cores (the session fixture runs inside the first test).
pytestmark = pytest.mark.timeout(2400)

GC_TRACK_TARGET = ("K562", "GATA1", "lab-A")  # AT-rich motif measured by the GC-biased lab
AUROC_TOLERANCE = 0.01                          # the paper: MFD's AUROC matches the baseline's (converged run)
CI_AUROC_TOLERANCE = 0.1                        # after the CI's 15 epochs MFD is still catching up (measured 0.056)
GC_SHARE = 1 / 3                                # MFD's bio~GC correlation at most a third of the baseline's


def _held_out(demo_data_dir):
    cfg = load_config(demo_data_dir / "config.yaml")
    data = load_training_data(cfg, splits=("val", "test"))
    truth = np.load(demo_data_dir / "truth.npz")
    return data, truth


def _gc_of(windows, truth) -> np.ndarray:
    return np.array([truth[f"gc/{windows.chroms[c]}"][b] for c, b in zip(windows.chrom_index, windows.bins)])


def _readouts(models, demo_data_dir):
    data, truth = _held_out(demo_data_dir)
    info = json.loads((demo_data_dir / "truth.json").read_text())["tracks"]
    track = next(tid for tid, t in info.items() if (t["biosample"], t["target"], t["lab"]) == GC_TRACK_TARGET)
    k = data.tracks.ids.index(track)
    result = {"track": track}
    for name, path in models.items():
        model, card = load_checkpoint(path)
        per_split = []
        for split in ("val", "test"):
            windows = data.splits[split]
            pred = predict(model, windows, data.codes)
            per_split.append((pred, _gc_of(windows, truth), windows.labels[:, k]))
        gc = np.concatenate([p[1] for p in per_split])
        bio = np.concatenate([p[0]["logits_bio"][:, k] for p in per_split])
        tech = np.concatenate([p[0]["logits_tech"][:, k] for p in per_split])
        total = np.concatenate([p[0]["logits"][:, k] for p in per_split])
        result[name] = {"corr_bio_gc": pearson(bio, gc), "corr_tech_gc": pearson(tech, gc),
                        "corr_total_gc": pearson(total, gc), "card": card,
                        "history": [json.loads(line) for line in (path / "history.jsonl").read_text().splitlines()]}
    print({name: {k: v for k, v in r.items() if k.startswith("corr")} for name, r in result.items() if name != "track"})
    print({name: r["card"].metrics["test"]["auroc_mean"] for name, r in result.items() if name != "track"})
    return result


@pytest.fixture(scope="module")
def readouts(demo_models, demo_data_dir):
    return _readouts(demo_models, demo_data_dir)


@pytest.mark.slow
def test_both_models_learn_the_planted_biology(readouts):
    for name in ("mfd", "baseline"):
        history = readouts[name]["history"]
        assert history[-1]["train"]["task"] < 0.85 * history[0]["train"]["task"], name  # loss decreases
        test = readouts[name]["card"].metrics["test"]
        assert test["auroc_mean"] > 0.7, (name, test["auroc_mean"])


@pytest.mark.slow
def test_mfd_auroc_is_close_to_the_baseline_at_the_ci_budget(readouts):
    mfd, baseline = (readouts[n]["card"].metrics["test"]["auroc_mean"] for n in ("mfd", "baseline"))
    assert mfd >= baseline - CI_AUROC_TOLERANCE, (mfd, baseline)


@pytest.mark.paper
def test_paper_claim_mfd_predicts_as_well_as_the_baseline(paper_demo_models, demo_data_dir):
    """The paper's claim on the converged demo run (60 epochs each; `make test-paper`, ~25 min on 2 cores)."""
    result = _readouts(paper_demo_models, demo_data_dir)
    mfd, baseline = (result[n]["card"].metrics["test"]["auroc_mean"] for n in ("mfd", "baseline"))
    assert mfd >= baseline - AUROC_TOLERANCE, (mfd, baseline)
    assert result["mfd"]["corr_bio_gc"] <= GC_SHARE * result["baseline"]["corr_bio_gc"]


@pytest.mark.slow
def test_mfd_biological_logits_are_free_of_the_planted_gc_bias(readouts):
    mfd, baseline = readouts["mfd"], readouts["baseline"]
    # the bias is really there: the baseline's read-out for the lab-A track follows GC
    assert baseline["corr_bio_gc"] > 0.2, baseline["corr_bio_gc"]
    # MFD's biological read-out follows it at most a third as much (signed: GATA1's motif is AT-rich, so a
    # read-out free of the artefact correlates *negatively* with GC) …
    assert mfd["corr_bio_gc"] <= GC_SHARE * baseline["corr_bio_gc"], (mfd["corr_bio_gc"], baseline["corr_bio_gc"])
    # … because the technical read-out took it (the full prediction still fits lab-A's GC-biased peaks).
    # Measured: bio −0.03 / tech +0.22 after the CI's 15 epochs, bio −0.25 / tech +0.47 converged (epoch 41).
    assert mfd["corr_tech_gc"] > mfd["corr_bio_gc"] + 0.15, (mfd["corr_tech_gc"], mfd["corr_bio_gc"])


@pytest.mark.slow
def test_penalty_reduces_bio_tech_cross_correlation(readouts):
    # same trunk and schedule; only MFD is penalised, so its latent halves are far less correlated
    mfd = readouts["mfd"]["card"].metrics["val"]["independence"]
    baseline = readouts["baseline"]["card"].metrics["val"]["independence"]
    assert mfd["mean_abs_corr"] < 0.7 * baseline["mean_abs_corr"], (mfd, baseline)
