"""Export to a Triton repository: TorchScript parity with eager, RC averaging, model card, config.pbtxt checks."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from mfd_common.card import CARD_FILENAME, HEAD_MODEL, TRUNK_MODEL, ModelCard, verify_checksums
from mfd_common.tokens import reverse_complement
from tests.fixtures.models import build_tiny_checkpoint
from training.repository import triton_config
from training.model.checkpoint import load_checkpoint
from training.repository.export import (ExportError, ExportParityError, check_parity, eager_features, eager_head,
                             export_repository)

REPO_ROOT = Path(__file__).resolve().parents[1]
COMMITTED_REPOSITORY = REPO_ROOT / "model_repository"
TOL = dict(rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def order1_checkpoint(tmp_path_factory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("order1_ckpt"), onehot_order=1, seed=3)


@pytest.fixture(scope="module")
def rc_repository(tiny_checkpoint, tmp_path_factory) -> Path:
    return export_repository(tiny_checkpoint, tmp_path_factory.mktemp("rc_repo"), reverse_complement_average=True)


def _tokens(n: int, window_bases: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, 5, size=(n, window_bases), dtype=np.uint8)  # includes N (4)
    return tokens


def _run_trunk(repository: Path, tokens: np.ndarray) -> np.ndarray:
    trunk = torch.jit.load(str(repository / TRUNK_MODEL / "1" / "model.pt"))
    with torch.no_grad():
        return trunk(torch.from_numpy(tokens)).numpy()


@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("rc_average", [False, True])
def test_exported_trunk_matches_eager(order, rc_average, tiny_checkpoint, order1_checkpoint, exported_repository,
                                      rc_repository, tmp_path):
    checkpoint = tiny_checkpoint if order == 2 else order1_checkpoint
    if order == 2:
        repository = rc_repository if rc_average else exported_repository
    else:
        repository = export_repository(checkpoint, tmp_path / "repo", reverse_complement_average=rc_average)
    model, card = load_checkpoint(checkpoint)
    assert card.onehot_order == order
    tokens = _tokens(5, card.window_bases, seed=order * 10 + rc_average)
    got = _run_trunk(repository, tokens)
    assert got.shape == (5, card.d_features) and got.dtype == np.float32
    with torch.no_grad():
        forward = model.features(torch.from_numpy(tokens)).numpy()
        backward = model.features(torch.from_numpy(reverse_complement(tokens))).numpy()
    expected = 0.5 * (forward + backward) if rc_average else forward
    np.testing.assert_allclose(got, expected, **TOL)
    np.testing.assert_allclose(got, eager_features(model, tokens, reverse_complement_average=rc_average), **TOL)
    # Strand symmetry holds exactly when averaging and (for a random model) clearly fails otherwise.
    flipped = _run_trunk(repository, reverse_complement(tokens))
    if rc_average:
        np.testing.assert_allclose(flipped, got, **TOL)
    else:
        assert np.abs(flipped - got).max() > 1e-3
    card_out = ModelCard.load(repository / CARD_FILENAME)
    assert card_out.reverse_complement_average is rc_average
    assert card_out.config["export"]["parity"]["features_max_abs_diff"] <= 1e-4


def test_exported_head_matches_eager_and_rebuilds_logits(tiny_checkpoint, exported_repository):
    model, card = load_checkpoint(tiny_checkpoint)
    codec = card.metadata_codec()
    codes = codec.encode_many([t.metadata for t in card.tracks] + [{}, {"biosample": "HepG2", "lab": "lab-A"}])
    head = torch.jit.load(str(exported_repository / HEAD_MODEL / "1" / "model.pt"))
    with torch.no_grad():
        w_tech, w_bio, bias = (t.numpy() for t in head(torch.from_numpy(codes)))
    k = len(codes)
    assert w_tech.shape == (k, card.d_tech) and w_bio.shape == (k, card.d_bio) and bias.shape == (k, 1)
    for got, want in zip((w_tech, w_bio, bias), eager_head(model, codes)):
        np.testing.assert_allclose(got, want, **TOL)
    # Trunk features + head weights reproduce the eager model's logits for the trained tracks.
    tokens = _tokens(3, card.window_bases, seed=7)
    features = _run_trunk(exported_repository, tokens)
    n_tracks = len(card.tracks)
    logits = (features[:, card.d_tech:] @ w_bio[:n_tracks].T + features[:, :card.d_tech] @ w_tech[:n_tracks].T
              + bias[:n_tracks, 0])
    with torch.no_grad():
        eager = model(torch.from_numpy(tokens), torch.from_numpy(codes[:n_tracks]))["logits"].numpy()
    np.testing.assert_allclose(logits, eager, rtol=1e-4, atol=1e-4)


def test_exported_trunk_rejects_bad_tokens(exported_repository):
    trunk = torch.jit.load(str(exported_repository / TRUNK_MODEL / "1" / "model.pt"))
    card = ModelCard.load(exported_repository / CARD_FILENAME)
    bad = torch.zeros((2, card.window_bases), dtype=torch.uint8)
    bad[1, 5] = 9
    with pytest.raises(Exception, match="codes > 4"):
        trunk(bad)
    with pytest.raises(Exception, match=f"shape \\[N, {card.window_bases}\\]"):
        trunk(torch.zeros((2, card.window_bases - 128), dtype=torch.uint8))
    with pytest.raises(Exception, match="uint8"):
        trunk(torch.zeros((2, card.window_bases), dtype=torch.float32))


def test_card_records_export(tiny_checkpoint, exported_repository):
    source = ModelCard.load(Path(tiny_checkpoint) / CARD_FILENAME)
    card = ModelCard.load(exported_repository / CARD_FILENAME)
    assert set(card.checksums) == {f"{TRUNK_MODEL}/1/model.pt", f"{HEAD_MODEL}/1/model.pt"}
    verify_checksums(card, exported_repository)  # relative to the repository root
    export = card.config["export"]
    assert export["source_checksums"] == source.checksums
    assert export["trunk"]["max_batch_size"] == 256 and export["head"]["bias_shape"] == "[K, 1]"
    assert card.versions["torch"] == torch.__version__.split("+")[0]
    assert card.versions["export_format"] == "1"
    assert [t.id for t in card.tracks] == [t.id for t in source.tracks] and card.codec == source.codec
    # Tampering with an exported file is caught by the card.
    copy = exported_repository.parent / "tampered_repo"
    shutil.copytree(exported_repository, copy, dirs_exist_ok=True)
    with open(copy / HEAD_MODEL / "1" / "model.pt", "ab") as handle:
        handle.write(b"x")
    with pytest.raises(ValueError, match="sha256"):
        verify_checksums(card, copy)


def test_fresh_export_configs_validate_and_match_card(exported_repository):
    configs = triton_config.validate_repository(exported_repository)
    card = ModelCard.load(exported_repository / CARD_FILENAME)
    trunk, head = configs[TRUNK_MODEL], configs[HEAD_MODEL]
    assert trunk.platform == "pytorch_libtorch" and trunk.max_batch_size == 256
    assert [i.name for i in trunk.input] == ["TOKENS__0"] and list(trunk.input[0].dims) == [card.window_bases]
    assert list(trunk.output[0].dims) == [card.d_features]
    assert trunk.instance_group[0].kind == triton_config.mc.ModelInstanceGroup.KIND_GPU
    assert list(trunk.dynamic_batching.preferred_batch_size) == [64, 128, 256]
    assert trunk.dynamic_batching.max_queue_delay_microseconds > 0
    assert [o.name for o in head.output] == ["W_TECH__0", "W_BIO__1", "BIAS__2"]
    assert list(head.output[2].dims) == [1] and list(head.input[0].dims) == [card.metadata_codec().width]


def test_committed_model_repository_is_valid():
    configs = triton_config.validate_repository(COMMITTED_REPOSITORY)
    assert set(configs) == {TRUNK_MODEL, HEAD_MODEL}
    card = ModelCard.load(COMMITTED_REPOSITORY / CARD_FILENAME)
    verify_checksums(card, COMMITTED_REPOSITORY)
    total = sum(p.stat().st_size for p in COMMITTED_REPOSITORY.rglob("*") if p.is_file())
    assert total < 20e6, f"committed model repository is {total / 1e6:.1f} MB"
    tokens = _tokens(2, card.window_bases, seed=11)
    assert np.isfinite(_run_trunk(COMMITTED_REPOSITORY, tokens)).all()
    proc = subprocess.run([sys.executable, "-m", "training.triton_config", str(COMMITTED_REPOSITORY)],
                          cwd=REPO_ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "ok" in proc.stdout


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize("model,old,new,message", [
    (TRUNK_MODEL, "TYPE_UINT8", "TYPE_FP32", "data_type TYPE_FP32, expected TYPE_UINT8"),
    (TRUNK_MODEL, "dims: 2177\n", "dims: 2175\n", "dims [2175], expected [2177]"),
    (TRUNK_MODEL, "kind: KIND_GPU", "kind: KIND_CPU", "KIND_GPU"),
    (TRUNK_MODEL, "max_queue_delay_microseconds", "max_queue_delay_micros", "not a valid Triton ModelConfig"),
    (TRUNK_MODEL, "preferred_batch_size: 64\n", "preferred_batch_size: 512\n", "outside 1..max_batch_size"),
    (TRUNK_MODEL, 'name: "FEATURES__0"', 'name: "FEATURES"', "output names"),
    (HEAD_MODEL, 'name: "BIAS__2"\n  data_type: TYPE_FP32\n  dims: 1\n',
     'name: "BIAS__2"\n  data_type: TYPE_FP32\n  dims: 2\n', "BIAS__2: dims [2], expected [1]"),
    (HEAD_MODEL, 'name: "mfd_head"', 'name: "mfd_heads"', "expected 'mfd_head'"),
    (HEAD_MODEL, 'key: "MFD_MODEL_SHA256"\n  value {\n    string_value: "', 'key: "MFD_MODEL_SHA256"\n  value {\n    string_value: "0',
     "come from different exports"),
])
def test_broken_configs_are_rejected(exported_repository, tmp_path, model, old, new, message):
    repository = tmp_path / "repo"
    shutil.copytree(exported_repository, repository)
    _replace(repository / model / "config.pbtxt", old, new)
    with pytest.raises(triton_config.TritonConfigError) as err:
        triton_config.validate_repository(repository)
    assert message in str(err.value)
    proc = subprocess.run([sys.executable, "-m", "training.triton_config", str(repository)], cwd=REPO_ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "FAIL" in proc.stderr


def test_missing_model_file_is_rejected(exported_repository, tmp_path):
    repository = tmp_path / "repo"
    shutil.copytree(exported_repository, repository)
    (repository / HEAD_MODEL / "1" / "model.pt").unlink()
    with pytest.raises(triton_config.TritonConfigError, match="model.pt is missing"):
        triton_config.validate_repository(repository)


def test_bad_checkpoints_fail_clearly(tiny_checkpoint, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export_repository(tmp_path / "nowhere", out)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="model_card.json is missing"):
        export_repository(tmp_path / "empty", out)
    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_checkpoint, corrupt)
    with open(corrupt / "model.safetensors", "r+b") as handle:
        handle.seek(-8, 2)
        handle.write(b"\xff" * 8)
    with pytest.raises(ValueError, match="sha256"):
        export_repository(corrupt, out)
    assert not out.exists() or not any(out.iterdir())

    baseline = tmp_path / "baseline"
    _export_baseline(baseline)
    with pytest.raises(ExportError, match="baseline"):
        export_repository(baseline, out)
    assert not (out / TRUNK_MODEL).exists()

    proc = subprocess.run([sys.executable, "-m", "training.export", str(corrupt), "--out", str(out)],
                          cwd=REPO_ROOT, capture_output=True, text=True)
    assert proc.returncode == 1 and "export failed" in proc.stderr and "sha256" in proc.stderr


def _export_baseline(directory: Path) -> None:
    from mfd_common.card import Track
    from tests.fixtures.models import TINY_TRACKS, tiny_codec
    from training.model.checkpoint import save_checkpoint
    from training.model.network import MFDModel, ModelConfig

    cfg = ModelConfig(channels=16, head_kind="baseline")
    codec = tiny_codec()
    model = MFDModel(cfg, codec, n_tracks=len(TINY_TRACKS)).eval()
    card = ModelCard(model_name="baseline", seq_len=cfg.window_bases, onehot_order=cfg.seq_order, d_tech=cfg.d_tech,
                     d_bio=cfg.d_bio, tracks=[Track(id=t["id"], metadata={}) for t in TINY_TRACKS],
                     codec=codec.to_dict())
    save_checkpoint(model, card, directory)


def test_parity_check_catches_a_different_model(tiny_checkpoint, order1_checkpoint, exported_repository):
    other, card = load_checkpoint(order1_checkpoint)
    with pytest.raises(ExportParityError, match="differs from eager"):
        check_parity(other, card, exported_repository / TRUNK_MODEL / "1" / "model.pt",
                     exported_repository / HEAD_MODEL / "1" / "model.pt", reverse_complement_average=False)
    model, card = load_checkpoint(tiny_checkpoint)
    with pytest.raises(ExportParityError, match="features differs"):  # RC flag mismatch is a parity failure too
        check_parity(model, card, exported_repository / TRUNK_MODEL / "1" / "model.pt",
                     exported_repository / HEAD_MODEL / "1" / "model.pt", reverse_complement_average=True)


def test_cli_export_keeps_other_files_and_replaces_models(tiny_checkpoint, tmp_path):
    out = tmp_path / "repo"
    out.mkdir()
    (out / "README.md").write_text("kept\n")
    (out / TRUNK_MODEL / "7").mkdir(parents=True)  # a stale version folder must not survive re-export
    proc = subprocess.run([sys.executable, "-m", "training.export", str(tiny_checkpoint), "--out", str(out),
                           "--rc-average", "--max-batch-size", "64"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "reverse_complement_average=True" in proc.stdout
    assert "TritonCompatWarning" not in proc.stderr  # the configured Triton release loads what torch 2.13 writes
    assert (out / "README.md").read_text() == "kept\n"
    assert not (out / TRUNK_MODEL / "7").exists()
    assert not list(out.glob(".export-*"))
    configs = triton_config.validate_repository(out)
    assert configs[TRUNK_MODEL].max_batch_size == 64
    assert max(configs[TRUNK_MODEL].dynamic_batching.preferred_batch_size) <= 64
    card = json.loads((out / CARD_FILENAME).read_text())
    assert card["reverse_complement_average"] is True


def test_export_warns_when_the_triton_release_carries_an_older_libtorch(tiny_checkpoint, tmp_path):
    from training.repository.export import TritonCompatWarning, export_repository, warn_if_triton_too_old

    with pytest.warns(TritonCompatWarning, match=r"libtorch 2\.13\.0a0, older than the exporting torch 2\.13\.0"):
        warn_if_triton_too_old("2.13.0", "26.07")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_if_triton_too_old("2.13.0", "26.08") is None
    with pytest.warns(TritonCompatWarning, match="export inside nvcr.io/nvidia/pytorch:25.10-py3"):
        export_repository(tiny_checkpoint, tmp_path / "repo", triton_tag="25.10", parity_windows=1)
    card = ModelCard.load(tmp_path / "repo" / CARD_FILENAME)
    assert card.versions["torch"] == torch.__version__.split("+")[0]  # the exporting torch, in the card


def test_cli_name_exports_into_a_folder_of_models(tiny_checkpoint, tmp_path, capsys):
    """`--name` writes <out>/<NAME>/ (a complete single-model repository) and the folder becomes a multi-model
    repository; without --name nothing changes (test above); bad names and a single-model --out exit 2."""
    from mfd_common.model_store import open_store
    from training.export import main

    models = tmp_path / "models"
    for name in ("tiny-a", "tiny.b"):
        assert main([str(tiny_checkpoint), "--out", str(models), "--name", name]) == 0
    store = open_store(models)
    assert store.layout == "multi" and store.names == ["tiny-a", "tiny.b"] and store.default is None
    for path in store.models.values():
        assert set(triton_config.validate_repository(path)) == {TRUNK_MODEL, HEAD_MODEL}
    assert not list(models.glob(".export-*")) and not list(models.glob("*/.export-*"))
    capsys.readouterr()
    assert main([str(tiny_checkpoint), "--out", str(models), "--name", "Tiny A"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--name 'Tiny A' is not valid" in err
    assert main([str(tiny_checkpoint), "--out", str(models / "tiny-a"), "--name", "nested"]) == 2
    assert "is a single-model repository" in capsys.readouterr().err
    assert sorted(p.name for p in models.iterdir()) == ["tiny-a", "tiny.b"]
