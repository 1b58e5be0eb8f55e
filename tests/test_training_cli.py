"""The training CLI end to end on the tiny demo: checkpoint + card, round trip, resume, evaluate, DDP, errors."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mfd_common.card import ModelCard

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--set", "model.channels=8", "--set", "train.batch_size=32", "--set", "train.threads=1",
        "--set", "data.negative_fraction=0.5", "--no-progress"]


def cli(*args: str, module: str = "training.train", launcher: list[str] | None = None,
        timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = (launcher or [sys.executable, "-m"]) + [module, *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def history(out: Path) -> list[dict]:
    """history.jsonl, parsed strictly: NaN / Infinity (which Python's json accepts) fail the test."""
    def refuse(name: str):
        raise ValueError(f"history.jsonl holds {name}, which is not JSON")
    return [json.loads(line, parse_constant=refuse) for line in (out / "history.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_train_checkpoint_card_round_trip_and_resume(tiny_demo_dir, tmp_path):
    config = str(tiny_demo_dir / "config.yaml")
    out = tmp_path / "run"
    first = cli("--config", config, "--out", str(out), "--set", "train.epochs=2", "--stop-after", "1", *TINY)
    assert first.returncode == 0, first.stderr
    assert "[mfd] epoch 1/2" in first.stdout and "val loss" in first.stdout and "epoch 2/2" not in first.stdout
    for name in ("model.safetensors", "model_card.json", "train_state.pt", "history.jsonl"):
        assert (out / name).is_file(), name
    card = ModelCard.load(out / "model_card.json")
    assert [t.id for t in card.tracks][:2] == ["DEMO001", "DEMO002"] and len(card.tracks) == 14
    assert card.tracks[2].metadata["target"] == "GATA1" and isinstance(card.tracks[2].metadata["read_depth"], float)
    assert card.d_tech + card.d_bio == 16 and card.window_bases == 2177 and card.onehot_order == 2
    assert all(isinstance(t.bias, float) for t in card.tracks) and card.bias_rule == "nearest_tracks_mean"
    assert card.config["penalty"]["kind"] == "covariance" and card.config["model"]["channels"] == 8
    assert card.config["train"]["optimizer"] == "adam_amsgrad" and card.config["metadata"]["lab"]["type"] == "category"
    assert len(card.checksums["model.safetensors"]) == 64 and card.versions["torch"] == torch.__version__
    codec = card.metadata_codec()
    assert codec.by_name["lab"].vocabulary == ["lab-A", "lab-B", "lab-C"]
    val = card.metrics["val"]
    assert 0.0 <= val["auroc_mean"] <= 1.0 and set(val["per_track"]) == {t.id for t in card.tracks}
    assert "mean_abs_corr" in val["independence"] and card.metrics["epoch"] == 1 and val["loss"] > 0

    # round trip: the loaded checkpoint reproduces the card's validation metrics exactly
    from training.model.checkpoint import load_checkpoint
    from training.model.config import load_config
    from training.data.dataset import load_training_data
    from training.evaluation.metrics import metrics_from_predictions
    from training.model.predict import predict
    model, loaded_card = load_checkpoint(out)
    data = load_training_data(load_config(tiny_demo_dir / "config.yaml"), splits=("val",))
    codes = codec.encode_many([t.metadata for t in loaded_card.tracks], strict=False)
    np.testing.assert_array_equal(codes, data.codes)
    # as training evaluated it: one thread, torch's deterministic kernels (training asks for them)
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        again = metrics_from_predictions(predict(model, data.splits["val"], codes), data.tracks.ids, model.d_tech)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    assert again["auroc_mean"] == pytest.approx(val["auroc_mean"], abs=1e-6)

    # refuses to overwrite, then resumes to epoch 2 and matches an uninterrupted 2-epoch run
    refused = cli("--config", config, "--out", str(out), "--set", "train.epochs=2", *TINY)
    assert refused.returncode == 2 and "already holds a checkpoint" in refused.stderr
    resumed = cli("--config", config, "--out", str(out), "--set", "train.epochs=2", "--resume", *TINY)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout and "epoch 2/2" in resumed.stdout and "epoch 1/2" not in resumed.stdout
    steps = [h["step"] for h in history(out)]
    assert len(steps) == 2 and steps[1] == 2 * steps[0]
    straight = tmp_path / "straight"
    full = cli("--config", config, "--out", str(straight), "--set", "train.epochs=2", *TINY)
    assert full.returncode == 0, full.stderr
    a, b = load_file(str(out / "model.safetensors")), load_file(str(straight / "model.safetensors"))
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)
    final = ModelCard.load(out / "model_card.json").metrics
    losses = [h["val"]["loss"] for h in history(out)]
    assert final["epoch"] == 1 + int(np.argmin(losses))  # the best val/loss epoch is the one kept
    assert "test" in final  # test metrics are computed once, for the kept checkpoint

    # evaluate CLI on the test split
    evaluated = cli(str(out), "--config", config, "--split", "test", module="training.evaluate")
    assert evaluated.returncode == 0, evaluated.stderr
    metrics = json.loads(evaluated.stdout)["test"]
    assert metrics["windows"] > 0 and 0.0 <= metrics["auroc_mean"] <= 1.0 and len(metrics["per_track"]) == 14


@pytest.mark.slow
def test_ddp_two_processes_on_cpu(tiny_demo_dir, tmp_path):
    out = tmp_path / "ddp"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m"]
    result = cli("--config", str(tiny_demo_dir / "config.yaml"), "--out", str(out), "--set", "train.epochs=1",
                 *TINY, launcher=launcher)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("[mfd] epoch 1/1") == 1  # only rank 0 reports and writes
    card = ModelCard.load(out / "model_card.json")
    train_windows = card.metrics["val"]["windows"]  # sanity: metrics exist
    assert train_windows > 0
    # two ranks × 16 windows per step: steps = train windows // (2 × 16)
    from training.model.config import load_config
    from training.data.dataset import load_training_data
    cfg = load_config(tiny_demo_dir / "config.yaml", {"data.negative_fraction": 0.5})
    n_train = len(load_training_data(cfg, splits=("train",)).splits["train"])
    assert history(out)[0]["step"] == n_train // 2 // 16


def test_cli_errors_are_clear(tiny_demo_dir, tmp_path, capsys):
    """In-process (`main(argv)`, what `python -m training.train` runs): exit 2 and one line, no traceback."""
    from training.train import main
    config = str(tiny_demo_dir / "config.yaml")
    cases = {
        "penalty.kind=cov": "config: penalty.kind: must be one of none, covariance, adversarial",
        "data.fasta=nowhere.fa": "nowhere.fa does not exist",
        "data.fasta=tracks.tsv": "is not a FASTA file",
    }
    for override, message in cases.items():
        assert main(["--config", config, "--out", str(tmp_path / "x"), "--set", override]) == 2, override
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (override, err)
        assert len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("kind", ["covariance+adversarial", "covariance+predictor"])
def test_adversary_runs_train_and_checkpoint_the_adversary(tiny_demo_dir, tmp_path, kind):
    out = tmp_path / "adv"
    result = cli("--config", str(tiny_demo_dir / "config.yaml"), "--out", str(out), "--set", "train.epochs=1",
                 "--set", f"penalty.kind={kind}", "--set", "penalty.coeff=0.5", "--set", "penalty.hidden=32",
                 "--set", "penalty.generator_every=2", "--set", "train.max_steps_per_epoch=6", *TINY)
    assert result.returncode == 0, result.stderr
    train = history(out)[0]["train"]
    assert train["adversary"] != 0.0 and train["penalty"] > 0.0  # the adversary ran and the model paid for it
    state = torch.load(out / "train_state.pt", weights_only=True)
    assert state["independence"] and state["independence_optimizer"]["state"]
    names = set(state["independence"])
    assert (any(n.startswith("discriminator.") for n in names) if kind.endswith("adversarial")
            else {n.split(".")[0] for n in names} == {"predictor_bio", "predictor_tech"})
