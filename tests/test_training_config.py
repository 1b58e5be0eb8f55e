"""Config loading: the demo template is valid, and every bad value is reported with its field path."""
from pathlib import Path

import pytest
import yaml

from training.config import ConfigError, config_from_dict, load_config

TEMPLATE = Path(__file__).resolve().parents[1] / "training" / "configs" / "demo.yaml"


def template() -> dict:
    return yaml.safe_load(TEMPLATE.read_text())


def test_demo_template_loads_with_typed_sections(tmp_path):
    cfg = load_config(TEMPLATE)
    assert cfg.model.seq_len == 2176 and cfg.model.onehot_order == 2
    assert cfg.penalty.kind == "covariance"
    assert cfg.resolve(cfg.data.fasta) == TEMPLATE.parent / "genome.fa"
    variables, groups = cfg.metadata.to_codec_spec()
    assert {v.type for v in variables} == {"category", "multilabel", "float", "int", "year"}
    assert set(groups) == {"biological", "technical"}
    assert "target" in groups["biological"].direct


@pytest.mark.parametrize("override, path, fragment", [
    ({"penalty.kind": "cov"}, "penalty.kind", "must be one of none, covariance, adversarial"),
    ({"penalty.wieght": 1.0}, "penalty.wieght", "unknown key"),
    ({"train.epochs": "three"}, "train.epochs", "must be an integer"),
    ({"train.epochs": 0}, "train.epochs", "must be >= 1"),
    ({"model.onehot_order": 3}, "model.onehot_order", "must be 1 or 2"),
    ({"model.seq_len": 2048}, "model.seq_len", "odd multiple of 128"),
    ({"data.bin_size": 100}, "data.bin_size", "must equal the model's output bin"),
    ({"data.split.test": ["chr4"]}, "data.split", "more than one split: chr4"),
    ({"metadata.variables.lab.type": "colour"}, "metadata.variables.lab.type", "must be one of category"),
    ({"metadata.groups.technical.direct": ["lab", "biosample"]}, "metadata.groups.technical.direct[1]",
     "declared in group 'biological'"),
    ({"metadata.groups.biological.interact": ["tissue"]}, "metadata.groups.biological.interact[0]",
     "unknown variable 'tissue'"),
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
