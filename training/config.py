"""Training configuration: typed dataclasses loaded from YAML, strict about every key.

Why strict: a misspelt key (`penalty.wieght`) that is silently ignored trains a different model than the user
asked for, and nobody notices until the numbers look odd. So unknown keys are errors, and every error names the
full field path (`config: penalty.kind: must be one of none, covariance, adversarial`).

Relative paths in `data` are resolved against the directory of the config file, so a config travels with its
data folder (the demo writes `demo_data/config.yaml` next to the files it names).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import field
from pathlib import Path
from typing import Any, Literal, Mapping, Optional

import yaml
from pydantic import ConfigDict, TypeAdapter, ValidationError, field_validator
from pydantic.dataclasses import dataclass as _pydantic_dataclass

from mfd_common.codec import GROUPS, GroupLayout, Variable

from .model import ModelConfig


#: Strict: no unknown keys, no coercion ("3" is not an integer, 1 is not true); an int is accepted as a float.
STRICT = ConfigDict(strict=True, extra="forbid")


def dataclass(cls: type) -> type:
    """A config section: a dataclass that pydantic validates strictly."""
    return _pydantic_dataclass(cls, config=STRICT)


class ConfigError(ValueError):
    """A config value that cannot be used; the message starts with `config: <field path>:`."""

    def __init__(self, path: str, message: str):
        self.path = path
        super().__init__(f"config: {path}: {message}" if path else f"config: {message}")


@dataclass
class SplitConfig:
    """Chromosome-based split: whole chromosomes are held out, so no window leaks across splits.

    `train: null` means every chromosome not named in val or test.
    """

    val: list[str] = field(default_factory=list)
    test: list[str] = field(default_factory=list)
    train: Optional[list[str]] = None


@dataclass
class AugmentConfig:
    reverse_complement: bool = True   # flip tokens, keep labels (peaks have no strand)
    max_shift: int = 3                # uniform shift in [-max_shift, max_shift] bp; labels kept


@dataclass
class DataConfig:
    fasta: str = ""
    metadata: str = ""                 # track metadata TSV, one row per track
    peaks: str = "{peaks}"             # peak file per track: template filled from the TSV row, relative to the TSV
    id_column: str = "id"
    bin_size: int = 128
    chromosomes: Optional[list[str]] = None  # restrict to these (default: all chromosomes named by the split)
    max_n_fraction: float = 0.1        # windows with more N than this are dropped
    negative_fraction: float = 1.0     # keep this share of windows without any peak (all windows with a peak kept)
    stride_bins: int = 1               # one window per `stride_bins` bins
    split: SplitConfig = field(default_factory=SplitConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class VariableConfig:
    type: Literal["category", "multilabel", "float", "int", "year"] = "category"
    group: Literal["biological", "technical"] = "biological"
    intermediate: Literal["embed", "multihot", "identity"] = "multihot"
    intermediate_dim: int = 8
    separator: str = ","


@dataclass
class GroupConfig:
    direct: list[str] = field(default_factory=list)
    interact: list[str] = field(default_factory=list)
    out_dim: int = 32


@dataclass
class MetadataConfig:
    variables: dict[str, VariableConfig] = field(default_factory=dict)
    groups: dict[str, GroupConfig] = field(default_factory=dict)

    @field_validator("variables", "groups", mode="before")
    @classmethod
    def _empty_entries(cls, value: Any) -> Any:
        """`lab:` with nothing after it (YAML null) means a variable/group with all defaults."""
        return {k: ({} if v is None else v) for k, v in value.items()} if isinstance(value, Mapping) else value

    def to_codec_spec(self) -> tuple[list[Variable], dict[str, GroupLayout]]:
        """Unfitted `mfd_common.codec` variables and group layouts (vocabularies are fitted from the TSV)."""
        variables = [Variable(name=name, type=v.type, group=v.group, intermediate=v.intermediate,
                              intermediate_dim=v.intermediate_dim, separator=v.separator)
                     for name, v in self.variables.items()]
        groups = {name: GroupLayout(direct=list(g.direct), interact=list(g.interact), out_dim=g.out_dim)
                  for name, g in self.groups.items()}
        return variables, groups


@dataclass
class PenaltyConfig:
    kind: Literal["none", "covariance", "adversarial"] = "covariance"
    weight: float = 1.0
    warmup_steps: int = 0              # linear ramp of the weight, so the trunk first learns something to split
    disc_hidden: int = 64              # adversarial only: discriminator MLP width
    disc_lr: float = 1e-3
    disc_steps: int = 1                # discriminator updates per model update


@dataclass
class TrainConfig:
    epochs: int = 3
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    metadata_dropout: float = 0.1      # probability of zeroing one variable's code slice for one track per step
    device: str = "auto"               # auto | cpu | cuda
    num_workers: int = 0
    threads: Optional[int] = None      # torch CPU threads per process (default: torch's choice / cores ÷ ranks)
    max_steps_per_epoch: Optional[int] = None
    eval_max_windows: Optional[int] = None
    eval_batch_size: int = 256


@dataclass
class Config:
    name: str = "mfd"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    metadata: MetadataConfig = field(default_factory=MetadataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    penalty: PenaltyConfig = field(default_factory=PenaltyConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    base_dir: str = "."                # directory relative paths resolve against (set by the loader)

    def resolve(self, relpath: str) -> Path:
        path = Path(relpath).expanduser()
        return path if path.is_absolute() else Path(self.base_dir) / path

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("base_dir")
        return data


# ---- strict construction (pydantic) ----------------------------------------------------------------------

def _path(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def build(cls: type, data: Any, path: str = "") -> Any:
    """Build config section `cls` from a mapping; unknown keys and wrong types raise ConfigError with the path."""
    if data is None:
        data = {}
    try:  # JSON mode: strict about scalars, yet mappings may stand for sections (strict Python mode wants instances)
        return TypeAdapter(cls).validate_json(json.dumps(data, default=str))
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = _path(tuple(error["loc"]))
        where = f"{path}.{where}" if path and where else (path or where)
        raise ConfigError(where, _message(error)) from None


#: pydantic error type → our wording (the messages users and tests already know).
_EXPECTED = {"int": "an integer", "float": "a number", "bool": "true or false", "string": "a string",
             "list": "a list", "dict": "a mapping", "dataclass": "a mapping", "model": "a mapping"}


def _message(error: Mapping[str, Any]) -> str:
    kind = str(error["type"])
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        return "unknown key"
    got = f", got {error.get('input')!r}"
    if kind == "literal_error":
        expected = str((error.get("ctx") or {}).get("expected", "")).replace("'", "").replace(" or ", ", ")
        return f"must be one of {expected}{got}"
    for prefix, expected in _EXPECTED.items():
        if kind.startswith(prefix):
            return f"must be {expected}{got}"
    return f"{error['msg'][0].lower()}{error['msg'][1:]}{got}"


# ---- semantic validation -----------------------------------------------------------------------------------

def validate(cfg: Config) -> None:
    """Checks that need more than one field; every message names the field path."""
    try:
        cfg.model.validate()
    except ValueError as err:  # ModelConfig messages already start with "model.<field>"
        field_name, _, message = str(err).partition(" ")
        raise ConfigError(field_name, message) from None
    if cfg.data.bin_size != cfg.model.bin_size:
        raise ConfigError("data.bin_size", f"must equal the model's output bin ({cfg.model.bin_size} bp), "
                                           f"got {cfg.data.bin_size}")
    for key in ("fasta", "metadata"):
        if not getattr(cfg.data, key):
            raise ConfigError(f"data.{key}", "is required")
    if not cfg.data.split.val:
        raise ConfigError("data.split.val", "name at least one validation chromosome")
    overlap = set(cfg.data.split.val) & set(cfg.data.split.test)
    if cfg.data.split.train is not None:
        overlap |= set(cfg.data.split.train) & (set(cfg.data.split.val) | set(cfg.data.split.test))
    if overlap:
        raise ConfigError("data.split", f"chromosomes in more than one split: {', '.join(sorted(overlap))}")
    if not 0.0 <= cfg.data.max_n_fraction <= 1.0:
        raise ConfigError("data.max_n_fraction", f"must be in [0, 1], got {cfg.data.max_n_fraction}")
    if not 0.0 < cfg.data.negative_fraction <= 1.0:
        raise ConfigError("data.negative_fraction", f"must be in (0, 1], got {cfg.data.negative_fraction}")
    if cfg.data.stride_bins < 1:
        raise ConfigError("data.stride_bins", f"must be >= 1, got {cfg.data.stride_bins}")
    if cfg.data.augment.max_shift < 0:
        raise ConfigError("data.augment.max_shift", f"must be >= 0, got {cfg.data.augment.max_shift}")

    if not cfg.metadata.variables:
        raise ConfigError("metadata.variables", "declare at least one metadata variable")
    for name, variable in cfg.metadata.variables.items():
        if variable.intermediate_dim < 1:
            raise ConfigError(f"metadata.variables.{name}.intermediate_dim", "must be >= 1")
        if variable.intermediate == "identity" and variable.type in ("category", "multilabel"):
            pass  # identity on a one-hot is the same as multihot; allowed
    if set(cfg.metadata.groups) != set(GROUPS):
        missing = sorted(set(GROUPS) - set(cfg.metadata.groups))
        extra = sorted(set(cfg.metadata.groups) - set(GROUPS))
        if extra:
            raise ConfigError(f"metadata.groups.{extra[0]}", f"unknown group (allowed: {', '.join(GROUPS)})")
        raise ConfigError(f"metadata.groups.{missing[0]}", "is required")
    for group_name, group in cfg.metadata.groups.items():
        if not group.direct and not group.interact:
            raise ConfigError(f"metadata.groups.{group_name}", "lists no variables")
        for kind in ("direct", "interact"):
            for i, name in enumerate(getattr(group, kind)):
                where = f"metadata.groups.{group_name}.{kind}[{i}]"
                if name not in cfg.metadata.variables:
                    raise ConfigError(where, f"unknown variable {name!r} (declared: "
                                             f"{', '.join(cfg.metadata.variables)})")
                if cfg.metadata.variables[name].group != group_name:
                    raise ConfigError(where, f"variable {name!r} is declared in group "
                                             f"{cfg.metadata.variables[name].group!r}")

    if cfg.penalty.weight < 0:
        raise ConfigError("penalty.weight", f"must be >= 0, got {cfg.penalty.weight}")
    if cfg.model.head_kind == "baseline" and cfg.penalty.kind != "none":
        raise ConfigError("penalty.kind", "must be none for model.head_kind: baseline (it has no split latent)")
    for key in ("epochs", "batch_size", "eval_batch_size"):
        if getattr(cfg.train, key) < 1:
            raise ConfigError(f"train.{key}", f"must be >= 1, got {getattr(cfg.train, key)}")
    if cfg.train.batch_size < 2 and cfg.penalty.kind != "none":
        raise ConfigError("train.batch_size", "must be >= 2 for an independence penalty (it needs batch statistics)")
    if cfg.train.threads is not None and cfg.train.threads < 1:
        raise ConfigError("train.threads", f"must be >= 1, got {cfg.train.threads}")
    if cfg.train.lr <= 0:
        raise ConfigError("train.lr", f"must be > 0, got {cfg.train.lr}")
    if not 0.0 <= cfg.train.metadata_dropout < 1.0:
        raise ConfigError("train.metadata_dropout", f"must be in [0, 1), got {cfg.train.metadata_dropout}")
    if cfg.train.device not in ("auto", "cpu", "cuda") and not cfg.train.device.startswith("cuda:"):
        raise ConfigError("train.device", f"must be auto, cpu or cuda, got {cfg.train.device!r}")


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(dotted, "cannot set a field inside a non-mapping value")
    node[keys[-1]] = value


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """`--set train.epochs=2` style overrides; values are parsed as YAML (so `2`, `true`, `[chr1]` work)."""
    overrides: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError("", f"override {item!r} must look like section.field=value")
        overrides[key.strip()] = yaml.safe_load(raw)
    return overrides


def config_from_dict(data: Mapping[str, Any], base_dir: str | Path = ".",
                     overrides: Mapping[str, Any] | None = None) -> Config:
    raw = _deep_copy(dict(data))
    for key, value in (overrides or {}).items():
        _set_dotted(raw, key, value)
    if "base_dir" in raw:
        raise ConfigError("base_dir", "unknown key")
    cfg = build(Config, raw)
    cfg.base_dir = str(base_dir)
    validate(cfg)
    return cfg


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> Config:
    path = Path(path)
    if not path.is_file():
        raise ConfigError("", f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError("", f"{path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError("", f"{path} must hold a mapping at the top level")
    return config_from_dict(data, base_dir=path.resolve().parent, overrides=overrides)


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value
