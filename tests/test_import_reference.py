"""`python -m training.import_reference`: the authors' Lightning checkpoints → a repository the service serves.

Fixtures are built in the authors' format (tests/fixtures/reference_checkpoint.py); expected numbers come from
the eager MFDModel the fixture checkpoint was made from, with condition codes from an independent pandas
implementation of the reference encoding.
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from mfd_common import tokens
from mfd_common.card import ModelCard
from tests.fixtures.reference_checkpoint import (MAPPING, NEW_CONDITION, Pandas1Frame, ReferenceFixture,
                                                  build_reference_checkpoint, load_df_raw, reference_codes,
                                                  write_reference_checkpoint)
from tests.fixtures.service import REPO_ROOT, run_service
from training.reference.importer import import_reference
from training.reference.checkpoint import ReferenceImportError

PARITY = 1e-5


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> ReferenceFixture:
    return build_reference_checkpoint(tmp_path_factory.mktemp("reference"))


@pytest.fixture(scope="module")
def imported(reference: ReferenceFixture, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("imported") / "repo"
    return import_reference(reference.checkpoint, reference.mapping, out, name="their-model")


def random_windows(n: int, length: int, seed: int) -> np.ndarray:
    rng = random.Random(seed)
    return np.stack([tokens.encode("".join(rng.choice("ACGT") for _ in range(length))) for _ in range(n)])


def exported_logits(repo: Path, windows: np.ndarray, codes: np.ndarray, bias: np.ndarray) -> dict[str, np.ndarray]:
    trunk = torch.jit.load(str(repo / "mfd_trunk" / "1" / "model.pt")).eval()
    head = torch.jit.load(str(repo / "mfd_head" / "1" / "model.pt")).eval()
    card = ModelCard.load(repo / "model_card.json")
    with torch.no_grad():
        f = trunk(torch.from_numpy(windows)).double().numpy()
        w_tech, w_bio, _ = (t.double().numpy() for t in head(torch.from_numpy(codes)))
    d = card.d_tech
    return {"logits_tech": f[:, :d] @ w_tech.T, "logits_bio": f[:, d:] @ w_bio.T,
            "logits": f[:, :d] @ w_tech.T + f[:, d:] @ w_bio.T + bias}


def eager(model, windows: np.ndarray, codes: np.ndarray | None = None) -> dict[str, np.ndarray]:
    with torch.no_grad():
        out = model(torch.from_numpy(windows), None if codes is None else torch.from_numpy(codes))
    return {k: v.double().numpy() for k, v in out.items() if k != "features"}


def assert_untouched(out: Path, existed: bool) -> None:
    if existed:
        assert out.is_dir() and not any(out.iterdir()), f"{out} was written to"
    else:
        assert not out.exists(), f"{out} was created"
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.import-")], "staging left behind"


# ---- import → export parity ------------------------------------------------------------------------------

def test_card_keeps_their_track_order_ids_metadata_and_biases(reference: ReferenceFixture, imported: Path):
    card = ModelCard.load(imported / "model_card.json")
    assert [t.id for t in card.tracks] == list(reference.df.index)
    assert [t.bias for t in card.tracks] == pytest.approx(reference.model.bias.tolist(), abs=1e-7)
    third = card.tracks[2].metadata
    assert third["proc_target"] is None                      # NaN in df_raw → null → the 'nan' category
    assert third["Biosample_term_name"] == "GM12878" and third["reproducible_peaks"] == 23000
    assert card.tracks[0].metadata["Biosample_organ_slims"] == "blood,bone marrow"
    assert card.window_bases == 2177 and card.onehot_order == 2   # 2176 dinucleotide positions
    source = card.config["source"]
    assert source["file"] == reference.checkpoint.name and len(source["sha256"]) == 64
    assert (source["epoch"], source["global_step"], source["lightning_version"]) == (7, 8312, "1.9.4")
    assert source["hparams"]["C"] == 16 and "metadata_loader" not in source["hparams"]
    codec = card.metadata_codec()
    assert codec.by_name["proc_Assay_lvl1"].vocabulary == MAPPING["proc_Assay_lvl1"]["labels"]  # YAML order kept
    assert "spot2_score" not in codec.by_name                 # defined, but named by no group


def test_exported_trunk_and_head_match_eager_for_tracks_and_a_new_combination(reference: ReferenceFixture,
                                                                              imported: Path):
    card = ModelCard.load(imported / "model_card.json")
    codec = card.metadata_codec()
    windows = random_windows(5, card.window_bases, seed=3)
    # Trained tracks: codes re-encoded from the card's metadata, each track's own bias.
    track_codes = np.stack([codec.encode(t.metadata) for t in card.tracks])
    got = exported_logits(imported, windows, track_codes, np.array([t.bias for t in card.tracks]))
    want = eager(reference.model, windows)
    for key in ("logits", "logits_bio", "logits_tech"):
        np.testing.assert_allclose(got[key], want[key], atol=PARITY, rtol=0)
    assert np.ptp(want["logits_bio"], axis=0).max() > 1e-3   # windows differ: a mix-up could not pass
    # A combination never measured: weights from the metadata (bias compared separately: no reference value).
    new_codes = codec.encode(NEW_CONDITION)[None, :]
    independent = reference_codes(reference.df, MAPPING, reference.order, pd.DataFrame([NEW_CONDITION]))
    np.testing.assert_allclose(new_codes, independent, atol=1e-6)
    got = exported_logits(imported, windows, new_codes, np.zeros(1))
    want = eager(reference.model, windows, independent)
    for key in ("logits_bio", "logits_tech"):
        np.testing.assert_allclose(got[key], want[key], atol=PARITY, rtol=0)


def test_pandas1_pickles_and_older_checkpoints_without_newer_hparams(tmp_path: Path):
    # Older runs: pandas 1.x BlockManager layout, and hparams added later missing (seq_order defaults to 1).
    newer = ("seq_order", "biological_subspace_ratio", "linearly_embed_direct_features", "learn_signal_to_noise",
             "labels_encoder", "biological_subspace_n", "technical_subspace_n", "C_embed")
    fx = build_reference_checkpoint(tmp_path / "old", seq_order=1, pandas1=True, drop_hparams=newer)
    repo = import_reference(fx.checkpoint, fx.mapping, tmp_path / "repo")
    card = ModelCard.load(repo / "model_card.json")
    assert card.onehot_order == 1 and card.window_bases == 2176
    assert [t.id for t in card.tracks] == list(fx.df.index)
    windows = random_windows(3, card.window_bases, seed=5)
    codes = np.stack([card.metadata_codec().encode(t.metadata) for t in card.tracks])
    got = exported_logits(repo, windows, codes, np.array([t.bias for t in card.tracks]))
    np.testing.assert_allclose(got["logits"], eager(fx.model, windows)["logits"], atol=PARITY, rtol=0)


@pytest.mark.slow
def test_served_track_ids_give_eager_logits(reference: ReferenceFixture, tmp_path: Path):
    """The real CLI writes the repository; a real `bentoml serve` answers with the eager model's logits."""
    out = tmp_path / "served"
    result = subprocess.run([sys.executable, "-m", "training.import_reference", str(reference.checkpoint),
                             "--mapping", str(reference.mapping), "--out", str(out)],
                            cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    card = ModelCard.load(out / "model_card.json")
    rng = random.Random(11)
    sequences = ["".join(rng.choice("ACGT") for _ in range(card.window_bases)) for _ in range(3)]
    ids = [t.id for t in card.tracks]
    conditions = [ids[1], ids[2], dict(NEW_CONDITION)]
    with run_service(out, tmp_path / "svc", env={"MFD_BACKEND": "embedded"}) as service:
        meta = httpx.get(f"{service.http_url}/metadata", timeout=30).json()
        response = httpx.post(f"{service.http_url}/predict", timeout=120,
                              json={"sequences": sequences, "conditions": conditions, "biological_only": False})
    assert response.status_code == 200, response.text
    assert str(card.window_bases) in str(meta)
    scores = np.array([[[s[k] for k in ("logit", "logit_bio", "logit_tech")] for s in r["scores"]]
                       for r in response.json()["results"]])
    windows = np.stack([tokens.encode(s) for s in sequences])
    want = eager(reference.model, windows)
    for j, key in enumerate(("logits", "logits_bio", "logits_tech")):
        np.testing.assert_allclose(scores[:, :2, j], want[key][:, 1:3], atol=1e-4, rtol=0)
    new = eager(reference.model, windows,
                reference_codes(reference.df, MAPPING, reference.order, pd.DataFrame([NEW_CONDITION])))
    np.testing.assert_allclose(scores[:, 2, 1], new["logits_bio"][:, 0], atol=1e-4, rtol=0)
    np.testing.assert_allclose(scores[:, 2, 2], new["logits_tech"][:, 0], atol=1e-4, rtol=0)


# ---- refusals: clear error, nothing written --------------------------------------------------------------

class RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("existed", [False, True])
def test_refuses_a_pickle_that_would_run_code(reference: ReferenceFixture, tmp_path: Path, existed: bool):
    marker = tmp_path / "pwned"
    ckpt = write_reference_checkpoint(tmp_path / "evil.ckpt", reference.state_dict, reference.df,
                                      extra_hparams={"callback": RunsCode(marker)})
    out = tmp_path / "out"
    if existed:
        out.mkdir()
    with pytest.raises(ReferenceImportError, match=r"refusing to unpickle (posix|os|nt)\.system: not on the allow-list"):
        import_reference(ckpt, reference.mapping, out)
    assert not marker.exists()
    assert_untouched(out, existed)


def test_refuses_an_unknown_class_in_the_metadata(reference: ReferenceFixture, tmp_path: Path):
    df = load_df_raw()
    df["Library_lab"] = df["Library_lab"].astype("category")  # a pandas Categorical block
    ckpt = write_reference_checkpoint(tmp_path / "cat.ckpt", reference.state_dict, df)
    # pandas 2.3 pickles the Categorical through pandas._libs.arrays.__pyx_unpickle_NDArrayBacked
    with pytest.raises(ReferenceImportError, match=r"refusing to unpickle pandas\.[\w.]+: not on the allow-list"):
        import_reference(ckpt, reference.mapping, tmp_path / "out")
    assert_untouched(tmp_path / "out", existed=False)


def test_not_a_lightning_file(reference: ReferenceFixture, tmp_path: Path):
    text = tmp_path / "notes.ckpt"
    text.write_text("hello")
    with pytest.raises(ReferenceImportError, match=r"notes\.ckpt: not a Lightning checkpoint \(not a torch zip"):
        import_reference(text, reference.mapping, tmp_path / "out")
    plain = tmp_path / "weights.ckpt"
    torch.save({"state_dict": reference.state_dict}, plain)
    with pytest.raises(ReferenceImportError, match=r"weights\.ckpt: not a Lightning checkpoint: key "
                                                   r"'hyper_parameters' is missing"):
        import_reference(plain, reference.mapping, tmp_path / "out")
    assert_untouched(tmp_path / "out", existed=False)


def test_refuses_a_baseline_checkpoint(reference: ReferenceFixture, tmp_path: Path):
    baseline = {k: v for k, v in reference.state_dict.items()
                if not k.startswith(("metadata_embedding.", "bn_features.", "bias", "predictor_"))}
    ckpt = write_reference_checkpoint(tmp_path / "baseline.ckpt", baseline, reference.df)
    with pytest.raises(ReferenceImportError, match=r"baseline\.ckpt: not an IEAquaticDilated checkpoint.*"
                                                   r"AquaticDilated"):
        import_reference(ckpt, reference.mapping, tmp_path / "out")
    assert_untouched(tmp_path / "out", existed=False)


def _mapping_variant(tmp_path: Path, edit) -> Path:
    mapping = yaml.safe_load(yaml.safe_dump(MAPPING))
    edit(mapping)
    path = tmp_path / "variant.yaml"
    path.write_text(yaml.safe_dump(mapping, sort_keys=False))
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["proc_Assay_lvl1"].update(labels=["ChIP-seq", "DNase-seq", "ATAC-seq", "CUT&RUN"]),
     r"does not match the checkpoint: variable 'proc_Assay_lvl1' encodes track"),
    (lambda m: m["proc_age_bin"].update(mean=0.0, std=1.0),
     r"does not match the checkpoint: variable 'proc_age_bin' encodes track"),
    (lambda m: m["Biosample_organ_slims"].update(type="date.year", intermediate=None),
     r"Biosample_organ_slims"),
    (lambda m: m["Biosample_term_name"].update(intermediate_dim=6),
     r"state_dict key 'metadata_embedding\.embedding_biological\.column_embeddings\.Biosample_term_name\."
     r"embedding\.0\.weight' has shape \[8, 4\].*expects \[12, 4\]"),
    (lambda m: m["frip"].update(intermediate="multihot"), r"variant\.yaml: frip\.intermediate: unknown intermediate"),
    (lambda m: m["technical_features"]["interact"]["variables"].remove("frip"),
     r"column embedding the mapping does not name \(metadata_embedding\.embedding_technical\.column_embeddings\.frip"),
    (lambda m: m.update(cell_line={"type": "category", "intermediate": None})
     or m["biological_features"]["interact"]["variables"].append("cell_line"),
     r"variable 'cell_line' is not a column of the checkpoint's metadata"),
])
def test_mapping_that_does_not_match_the_checkpoint(reference: ReferenceFixture, tmp_path: Path, edit, message):
    mapping = _mapping_variant(tmp_path, edit)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ReferenceImportError, match=message):
        import_reference(reference.checkpoint, mapping, out)
    assert_untouched(out, existed=True)


@pytest.mark.parametrize("hparam, value, message", [
    ("learn_signal_to_noise", True, r"hyper_parameters\.learn_signal_to_noise is True"),
    ("biological_subspace_ratio", None, r"hyper_parameters\.biological_subspace_ratio is None"),
    ("C_embed", 40, r"hyper_parameters\.C_embed is 40"),
    ("n_classes", 5, r"n_classes=5, metadata_loader\.df_raw has 6 rows"),
])
def test_unsupported_hparams_are_named(reference: ReferenceFixture, tmp_path: Path, hparam, value, message):
    ckpt = write_reference_checkpoint(tmp_path / "h.ckpt", reference.state_dict, reference.df,
                                      extra_hparams={hparam: value})
    with pytest.raises(ReferenceImportError, match=message):
        import_reference(ckpt, reference.mapping, tmp_path / "out")
    assert_untouched(tmp_path / "out", existed=False)


def test_refuses_a_non_empty_output_directory(reference: ReferenceFixture, tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ReferenceImportError, match="exists and is not empty"):
        import_reference(reference.checkpoint, reference.mapping, out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_cli_reports_errors_without_traceback(reference: ReferenceFixture, tmp_path: Path, capsys):
    from training.import_reference import main

    assert main([str(tmp_path / "missing.ckpt"), "--mapping", str(reference.mapping), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "import failed:" in err and "missing.ckpt: checkpoint file does not exist" in err


def test_pandas1_fixture_really_uses_the_old_layout(reference: ReferenceFixture, tmp_path: Path):
    """Guard for the fixture itself: the pandas 1.x pickle has no `_unpickle_block`, the 2.x one does."""
    import pickle

    old, new = pickle.dumps(Pandas1Frame(reference.df), protocol=2), pickle.dumps(reference.df, protocol=2)
    assert b"_unpickle_block" not in old and b"BlockManager" in old
    assert b"_unpickle_block" in new


def test_cli_name_writes_one_model_of_a_multi_model_repository(reference: ReferenceFixture, tmp_path: Path,
                                                              capsys):
    """`--name` puts the import at <out>/<NAME>/ beside the models already there (the bundled demo here)."""
    import shutil

    from mfd_common.model_store import open_store
    from training.import_reference import main

    models = tmp_path / "models"
    shutil.copytree(REPO_ROOT / "model_repository", models / "demo")
    assert main([str(reference.checkpoint), "--mapping", str(reference.mapping), "--out", str(models),
                 "--name", "their-model"]) == 0
    store = open_store(models, default="demo")
    assert store.names == ["demo", "their-model"] and store.layout == "multi"
    theirs, demo = (ModelCard.load(store.path(n) / "model_card.json") for n in ("their-model", "demo"))
    assert theirs.model_name == "their-model"
    assert [t.id for t in theirs.tracks] == list(reference.df.index)
    assert not {t.id for t in theirs.tracks} & {t.id for t in demo.tracks}
    # A bad name, or a --out that is itself one model's repository: exit 2, one line, nothing written.
    capsys.readouterr()
    assert main([str(reference.checkpoint), "--mapping", str(reference.mapping), "--out", str(models),
                 "--name", "Their Model"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--name 'Their Model' is not valid" in err
    assert main([str(reference.checkpoint), "--mapping", str(reference.mapping), "--out", str(models / "demo"),
                 "--name", "x"]) == 2
    assert "is a single-model repository" in capsys.readouterr().err
    assert sorted(p.name for p in models.iterdir()) == ["demo", "their-model"]
    assert not (models / "demo" / "x").exists()
