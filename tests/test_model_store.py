"""mfd_common.model_store and mfd_common.triton_repository on real folders: copies of the bundled model_repository."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from mfd_common.card import CARD_FILENAME, HEAD_MODEL, TRUNK_MODEL, ModelCard, verify_checksums
from mfd_common.model_store import (
    ModelStoreError, UnknownModelError, detect_layout, discover_models, is_valid_model_name, named_model_dir,
    open_store, store_from_env, validate_model_name,
)
from mfd_common.serving import PARAM_MODEL_SHA256
from mfd_common.triton_repository import (
    generate_triton_repository, load_model_args, split_triton_model_name, triton_model_name, triton_names,
)

BUNDLED = Path(__file__).resolve().parent.parent / "model_repository"
BUNDLED_NAME = json.loads((BUNDLED / CARD_FILENAME).read_text())["model_name"]


def copy_model(destination: Path) -> Path:
    shutil.copytree(BUNDLED, destination)
    return destination


@pytest.fixture
def two_models(tmp_path) -> Path:
    root = tmp_path / "models"
    root.mkdir()
    copy_model(root / "grch38")
    copy_model(root / "mm10.v2")
    return root


@pytest.mark.parametrize("name", ["a", "grch38", "mm10.v2", "demo-v1", "c30_small", "x" * 63, "0.1.0"])
def test_valid_names(name):
    assert is_valid_model_name(name) and validate_model_name(name) == name


@pytest.mark.parametrize("name", ["", "A", "GRCh38", "-a", "a-", ".", "..", ".hidden", "a/b", "a b", "a__b",
                                  "x" * 64, "é", "a:b", "a%2Fb", "a\n"])
def test_invalid_names_are_refused_with_the_rule(name):
    assert not is_valid_model_name(name)
    with pytest.raises(ValueError, match=r"--name .* is not valid: 1-63 characters"):
        validate_model_name(name, what="--name")


def test_the_bundled_repository_is_one_model_named_by_its_card():
    store = open_store(BUNDLED)
    assert store.layout == "single" and store.names == [BUNDLED_NAME] == ["mfd-demo"]
    assert store.default == BUNDLED_NAME and store.path() == BUNDLED and store.path(BUNDLED_NAME) == BUNDLED
    assert store.resolve(None) == store.resolve("") == BUNDLED_NAME


def test_single_model_name_falls_back_to_the_folder_when_the_card_name_is_not_valid(tmp_path):
    root = copy_model(tmp_path / "grch38")
    card = json.loads((root / CARD_FILENAME).read_text())
    card["model_name"] = "MFD Human (GRCh38)"
    (root / CARD_FILENAME).write_text(json.dumps(card))
    assert discover_models(root) == {"grch38": root}
    bad_folder = tmp_path / "My Model"
    root.rename(bad_folder)
    with pytest.raises(ModelStoreError, match=r"My Model: neither the card's model_name 'MFD Human \(GRCh38\)' nor "
                                              r"the folder name 'My Model' is a valid model name"):
        discover_models(bad_folder)


def test_a_folder_of_models_is_named_by_its_subdirectories(two_models):
    (two_models / ".staging-x").mkdir()          # hidden entries are the loader's business: ignored
    (two_models / "README.md").write_text("two models\n")
    store = open_store(two_models)
    assert store.layout == "multi" and store.names == ["grch38", "mm10.v2"]
    assert store.models == {"grch38": two_models / "grch38", "mm10.v2": two_models / "mm10.v2"}
    assert store.default is None  # two models, no MFD_DEFAULT_MODEL: requests must name one
    with pytest.raises(UnknownModelError, match="grch38, mm10.v2"):
        store.resolve(None)
    with pytest.raises(UnknownModelError) as err:
        store.path("hg19")
    assert str(err.value) == "unknown model 'hg19'; this deployment serves grch38, mm10.v2"
    assert err.value.known == ["grch38", "mm10.v2"]
    # Each model folder is a complete single-model repository whose checksums verify.
    for path in store.models.values():
        verify_checksums(ModelCard.load(path / CARD_FILENAME), path)


def test_default_model_from_the_environment(two_models):
    store = store_from_env({"MFD_MODEL_REPOSITORY": str(two_models), "MFD_DEFAULT_MODEL": "mm10.v2"})
    assert store.default == "mm10.v2" and store.path() == two_models / "mm10.v2"
    with pytest.raises(ModelStoreError, match=r"MFD_DEFAULT_MODEL='hg19' names no model here; the models are "
                                              r"grch38, mm10.v2"):
        store_from_env({"MFD_MODEL_REPOSITORY": str(two_models), "MFD_DEFAULT_MODEL": "hg19"})
    with pytest.raises(ModelStoreError, match="MFD_MODEL_REPOSITORY is not set"):
        store_from_env({})
    # One model in a folder of models: it is the default.
    shutil.rmtree(two_models / "mm10.v2")
    assert open_store(two_models).default == "grch38"


def test_empty_missing_bad_name_half_copied_and_mixed_repositories_are_refused(tmp_path, two_models):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelStoreError, match=r"empty: holds no model"):
        open_store(empty)
    with pytest.raises(ModelStoreError, match=r"nowhere: no such directory"):
        open_store(tmp_path / "nowhere")

    bad = two_models / "GRCh38"
    (two_models / "grch38").rename(bad)
    with pytest.raises(ModelStoreError, match=r"GRCh38: 'GRCh38' is not a valid model name"):
        open_store(two_models)
    bad.rename(two_models / "grch38")

    (two_models / "hg19").mkdir()
    with pytest.raises(ModelStoreError, match=r"hg19: not a model: model_card.json is missing"):
        open_store(two_models)
    (two_models / "hg19").rmdir()

    mixed = copy_model(tmp_path / "mixed")
    copy_model(mixed / "mm10")
    with pytest.raises(ModelStoreError, match=r"mixed: mixes both layouts.*\['mm10'\]"):
        open_store(mixed)

    (two_models / "grch38" / CARD_FILENAME).write_text("{not json")
    with pytest.raises(ModelStoreError, match="cannot read the model card"):
        discover_models(two_models / "grch38")


def test_named_model_dir_for_writers(tmp_path):
    assert named_model_dir(tmp_path / "repo", "grch38") == tmp_path / "repo" / "grch38"
    with pytest.raises(ValueError, match="--name 'Bad Name' is not valid"):
        named_model_dir(tmp_path / "repo", "Bad Name")
    single = copy_model(tmp_path / "single")
    with pytest.raises(ModelStoreError, match="is a single-model repository"):
        named_model_dir(single, "grch38")


def test_triton_names_keep_todays_names_for_one_model_and_prefix_several(two_models):
    assert triton_names(open_store(BUNDLED)) == {BUNDLED_NAME: {TRUNK_MODEL: "mfd_trunk", HEAD_MODEL: "mfd_head"}}
    names = triton_names(open_store(two_models))
    assert names == {"grch38": {TRUNK_MODEL: "grch38__mfd_trunk", HEAD_MODEL: "grch38__mfd_head"},
                     "mm10.v2": {TRUNK_MODEL: "mm10.v2__mfd_trunk", HEAD_MODEL: "mm10.v2__mfd_head"}}
    for model, parts in names.items():
        for part, triton in parts.items():
            assert split_triton_model_name(triton) == (model, part)
    assert split_triton_model_name("mfd_head") == (None, HEAD_MODEL)
    for bad in ("grch38__mfd_tail", "__mfd_trunk", "Bad__mfd_trunk", "mfd_trunk2"):
        with pytest.raises(ValueError):
            split_triton_model_name(bad)
    with pytest.raises(ValueError, match="not valid"):
        triton_model_name("a__b", TRUNK_MODEL)
    assert load_model_args(open_store(two_models)) == [
        "--load-model=grch38__mfd_trunk", "--load-model=grch38__mfd_head",
        "--load-model=mm10.v2__mfd_trunk", "--load-model=mm10.v2__mfd_head"]


@pytest.mark.parametrize("link", ["symlink", "copy"])
def test_generated_triton_repository_renames_configs_only(two_models, tmp_path, link):
    out = tmp_path / "triton"
    names = generate_triton_repository(two_models, out, link=link)
    triton_dirs = sorted(p.name for p in out.iterdir())
    assert triton_dirs == sorted(t for parts in names.values() for t in parts.values())
    for model, parts in names.items():
        for part, triton in parts.items():
            generated, exported = mc.ModelConfig(), mc.ModelConfig()
            text_format.Parse((out / triton / "config.pbtxt").read_text(), generated)
            text_format.Parse((two_models / model / part / "config.pbtxt").read_text(), exported)
            assert generated.name == triton and exported.name == part
            exported.name = triton
            assert generated == exported  # tensors, batching, MFD_* identity: as exported
            served = out / triton / "1" / "model.pt"
            assert served.is_symlink() == (link == "symlink")
            assert not Path(str(served.readlink() if served.is_symlink() else "")).is_absolute()
            assert served.read_bytes() == (two_models / model / part / "1" / "model.pt").read_bytes()
            assert generated.parameters[PARAM_MODEL_SHA256].string_value == \
                ModelCard.load(two_models / model / CARD_FILENAME).checksums[f"{part}/1/model.pt"]
    with pytest.raises(ModelStoreError, match="is not empty"):
        generate_triton_repository(two_models, out)
    # Moving the whole volume keeps relative links working.
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.move(str(two_models), moved / "models")
    shutil.move(str(out), moved / "triton")
    assert (moved / "triton" / "grch38__mfd_trunk" / "1" / "model.pt").read_bytes()[:2] == b"PK"


def test_generator_refuses_a_model_without_its_parts(two_models, tmp_path):
    shutil.rmtree(two_models / "mm10.v2" / HEAD_MODEL / "1")
    with pytest.raises(ModelStoreError, match=r"mm10.v2/mfd_head: model 'mm10.v2' lacks"):
        generate_triton_repository(two_models, tmp_path / "triton")


def test_layout_detection(two_models):
    assert detect_layout(BUNDLED) == "single" and detect_layout(two_models) == "multi"


def test_triton_repository_cli(two_models, tmp_path, capsys):
    from mfd_common.triton_repository import main

    assert main([str(two_models), "--out", str(tmp_path / "t"), "--copy"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"tritonserver --model-repository={tmp_path / 't'} --model-control-mode=explicit")
    assert "--load-model=mm10.v2__mfd_head" in out
    assert not (tmp_path / "t" / "grch38__mfd_trunk" / "1" / "model.pt").is_symlink()
    assert main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "u")]) == 2
    assert "no such directory" in capsys.readouterr().err


def test_per_model_environment_variables():
    from mfd_common.model_store import check_env_vars_distinct, model_env_var

    assert model_env_var("MFD_FASTA", "grch38") == "MFD_FASTA_GRCH38"
    assert model_env_var("MFD_FASTA", "mm10.v2-small") == "MFD_FASTA_MM10_V2_SMALL"
    check_env_vars_distinct(["grch38", "mm10", "mm10_v2"])
    with pytest.raises(ValueError, match="'mm10-v2' and 'mm10.v2' share the variable MFD_FASTA_MM10_V2"):
        check_env_vars_distinct(["mm10-v2", "mm10.v2"])


def test_triton_config_cli_checks_each_model_of_a_folder(two_models, capsys):
    from training.triton_config import main

    assert main([str(two_models)]) == 0
    out = capsys.readouterr().out
    assert f"ok   {two_models / 'grch38'}: mfd_head, mfd_trunk" in out and f"{two_models / 'mm10.v2'}:" in out
    config = two_models / "mm10.v2" / "mfd_head" / "config.pbtxt"
    config.write_text(config.read_text().replace("TYPE_FP32", "TYPE_FP16", 1))
    assert main([str(two_models)]) == 1
    assert "mm10.v2/mfd_head/config.pbtxt" in capsys.readouterr().err
