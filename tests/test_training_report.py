"""python -m training.report on a tiny model trained here (seconds): the numbers it draws agree with what training
stored, the HTML is self-contained (inline PNGs, no network), and headless chromium renders it with its images."""
from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")
import matplotlib.image  # noqa: E402

from mfd_common.card import ModelCard  # noqa: E402

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
IMG = re.compile(r'<img alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)">')


def run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def trained(tiny_demo_dir, tmp_path_factory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("report_run") / "ckpt"
    config = tiny_demo_dir / "config.yaml"
    result = run("-m", "training.train", "--config", str(config), "--out", str(out), "--no-progress",
                 "--set", "train.epochs=2", "--set", "model.channels=8", "--set", "train.batch_size=32",
                 "--set", "train.threads=1", "--set", "data.negative_fraction=0.5")
    assert result.returncode == 0, result.stderr
    return out, config


@pytest.fixture(scope="module")
def report(trained, tmp_path_factory) -> Path:
    checkpoint, config = trained
    out = tmp_path_factory.mktemp("report") / "report.html"
    result = run("-m", "training.report", str(checkpoint), "--config", str(config), "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out


def pictures(text: str) -> dict[str, np.ndarray]:
    found = {}
    for alt, data in IMG.findall(text):
        png = base64.b64decode(data, validate=True)
        found[alt] = matplotlib.image.imread(io.BytesIO(png), format="png")[..., :3]
    return found


def test_report_numbers_agree_with_training_and_the_html_stands_alone(trained, report):
    checkpoint, config = trained
    text = report.read_text()
    images = pictures(text)
    assert set(images) == {"learning curves", "per-track AUROC and AUPRC", "bio/tech cross-correlation heatmap",
                           "variance shares"}
    for alt, pixels in images.items():
        assert pixels.shape[0] > 200 and pixels.shape[1] > 400 and pixels.std() > 0.05, alt
    assert not re.search(r"(src|href)=\"(https?:)?//", text) and "<script" not in text  # nothing fetched

    # in-process, the same computation: the full read-out is training's own test evaluation (the card's numbers)
    from training.evaluation.report import predict_split, readouts_from_predictions
    card = ModelCard.load(checkpoint / "model_card.json")
    pred, _ = predict_split(checkpoint, config, "test", None, True)
    readouts = readouts_from_predictions(pred, [t.id for t in card.tracks], card.d_tech, "test")
    assert readouts.means["full"]["auroc_mean"] == pytest.approx(card.metrics["test"]["auroc_mean"], abs=1e-4)
    assert f"{readouts.means['biological only']['auroc_mean']:.4f}" in text
    assert np.nanmean(readouts.bio_share) == pytest.approx(card.metrics["test"]["variance_share"]["bio_share"],
                                                           abs=1e-4)
    full, bio = (np.array(readouts.scores[r]["auroc"], dtype=float) for r in ("full", "biological only"))
    assert np.nanmax(np.abs(full - bio)) > 1e-3  # the read-outs differ: not the same column twice
    corr = readouts.corr
    assert corr.shape == (card.d_bio, card.d_tech) and np.abs(corr).max() <= 1 + 1e-9
    assert np.abs(corr).mean() == pytest.approx(json.loads(json.dumps(
        card.metrics["test"]["independence"]["mean_abs_corr"])), abs=1e-4)


def test_report_without_data_says_what_it_cannot_show(trained, tmp_path):
    checkpoint, _ = trained
    out = tmp_path / "card_only.html"
    result = run("-m", "training.report", str(checkpoint), "--out", str(out))
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert set(pictures(text)) == {"learning curves", "per-track AUROC and AUPRC"}
    assert "run with --config" in text
    bad = run("-m", "training.report", str(checkpoint.parent / "missing"), "--out", str(tmp_path / "x.html"))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "no model_card.json" in bad.stderr


def test_report_renders_in_headless_chromium(report, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is not installed (scripts/install_tools.sh installs it)"
    out = report
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'p'}"]
    shot = tmp_path / "shot.png"
    subprocess.run([chromium, *flags, "--window-size=1250,3600", f"--screenshot={shot}", out.as_uri()],
                   capture_output=True, timeout=120, check=True)
    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.shape[:2] == (3600, 1250)
    # the figures' colours, drawn: saturated pixels in the upper (curves, bars) and lower (heatmap, shares) halves
    saturated = pixels.max(axis=2) - pixels.min(axis=2) > 0.4
    upper, lower = saturated[:1800].mean(), saturated[1800:].mean()
    assert upper > 0.01 and lower > 0.005, (upper, lower)
    dom = subprocess.run([chromium, *flags, "--dump-dom", out.as_uri()], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert dom.count("<img ") == 4 and "Cross-correlation of biological and technical features" in dom
