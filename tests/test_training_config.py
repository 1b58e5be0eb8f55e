"""Config loading: the demo template is valid, and every bad value is reported with its field path."""
from pathlib import Path

import pytest
import yaml

from training.model.config import ConfigError, config_from_dict, load_config

TEMPLATE = Path(__file__).resolve().parents[1] / "training" / "configs" / "demo.yaml"


def template() -> dict:
    data = yaml.safe_load(TEMPLATE.read_text())
    data["metadata"] = yaml.safe_load(TEMPLATE.with_name("demo_mapping.yaml").read_text())
    return data


def test_demo_template_loads_with_typed_sections(tmp_path):
    import shutil
    shutil.copy(TEMPLATE, tmp_path / "config.yaml")
    shutil.copy(TEMPLATE.with_name("demo_mapping.yaml"), tmp_path / "mapping.yaml")
    cfg = load_config(tmp_path / "config.yaml")
    assert cfg.model.positions == 2176 and cfg.model.seq_order == 2 and cfg.model.window_bases == 2177
    assert cfg.penalty.kind == "covariance" and cfg.penalty.coeff == 0.01
    assert cfg.resolve(cfg.data.fasta) == tmp_path / "genome.fa"
    variables, groups = cfg.codec_spec()
    assert {v.type for v in variables} == {"category", "float", "int", "date.year"}
    assert {v.intermediate for v in variables} == {None, "linear", "embed", "rescale", "rescale_indep"}
    assert set(groups) == {"biological", "technical"}
    assert "target" in groups["biological"].direct


def test_defaults_are_the_reference_recipe():
    from training.model.config import Config
    cfg = Config()
    assert (cfg.train.optimizer, cfg.train.lr, cfg.train.batch_size, cfg.train.schedule) == ("adam_amsgrad", 1e-3, 256, "constant")
    assert (cfg.train.weight_decay, cfg.train.grad_clip, cfg.train.metadata_dropout, cfg.train.keep) == (0.0, 0.0, 0.0, "best_val_loss")
    assert (cfg.penalty.kind, cfg.penalty.coeff, cfg.penalty.warmup_steps, cfg.penalty.norm) == ("covariance", 0.01, 0, "frobenius")
    assert (cfg.penalty.hidden, cfg.penalty.layers) == (1024, 3)
    m = cfg.model
    assert (m.channels, m.tower_layers, m.dilated_layers, m.dilation_rate, m.crop, m.positions, m.seq_order) == (768, 6, 2, 1.5, 8, 2176, 2)
    assert (m.dropout_dilated, m.dropout_pointwise, m.activation, m.biological_subspace_ratio) == (0.0, 0.0, "gelu", 0.5)


@pytest.mark.parametrize("override, path, fragment", [
    ({"penalty.kind": "cov"}, "penalty.kind", "must be one of none, covariance, adversarial"),
    ({"penalty.wieght": 1.0}, "penalty.wieght", "unknown key"),
    ({"train.epochs": "three"}, "train.epochs", "must be an integer"),
    ({"train.epochs": 0}, "train.epochs", "must be >= 1"),
    ({"model.seq_order": 3}, "model.seq_order", "must be 1 or 2"),
    ({"model.positions": 2048}, "model.positions", "output positions"),
    ({"model.seq_len": 2176}, "model.seq_len", "renamed model.positions"),
    ({"model.chanels": 30}, "model.chanels", "unknown key"),
    ({"data.bin_size": 100}, "data.bin_size", "must equal the model's output bin"),
    ({"data.split.test": ["chr4"]}, "data.split", "more than one split: chr4"),
    ({"metadata.lab.type": "colour"}, "metadata.lab.type", "must be one of category"),
    ({"metadata.lab.intermediate": "multihot"}, "metadata.lab.intermediate", "unknown intermediate 'multihot'"),
    ({"metadata.biological_features.interact.variables": ["tissue"]}, "metadata.tissue", "not defined"),
    ({"metadata.technical_features.interact.out_dim": 0}, "metadata.technical_features.interact.out_dim", "positive"),
    ({"model.head_kind": "baseline"}, "penalty.kind", "must be none for model.head_kind: baseline"),
    ({"data.augment.reverse_complement": "yes"}, "data.augment.reverse_complement", "true or false"),
])
def test_bad_values_name_the_field(override, path, fragment):
    with pytest.raises(ConfigError) as err:
        config_from_dict(template(), overrides=override)
    assert err.value.path == path
    assert str(err.value).startswith(f"config: {path}: ")
    assert fragment in str(err.value)


def test_missing_required_and_unknown_top_level(tmp_path):
    data = template()
    del data["data"]["fasta"]
    with pytest.raises(ConfigError, match=r"^config: data.fasta: is required"):
        config_from_dict(data)
    data = template()
    data["trainer"] = {}
    with pytest.raises(ConfigError, match=r"^config: trainer: unknown key"):
        config_from_dict(data)
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
