"""Training layer (model): training configuration: pydantic models loaded from YAML, strict about every key, defaults =
the reference.

Why strict: a misspelt key (`penalty.coef`) that is silently ignored trains a different model than the user asked
for. Unknown keys are errors, and every error names the full field path (`config: penalty.kind: …`).

The defaults are the authors' recipe (HealthML/MFD): Adam with amsgrad at lr 1e-3, batch 256, covariance penalty
at coeff 0.01 with no warm-up, no dropout, no metadata dropout, best `val/loss` checkpoint kept. Our additions
(metadata dropout, AdamW, cosine schedule, gradient clipping, penalty warm-up, output-bias initialisation) are
named options, off unless a config turns them on.

`metadata` is the authors' mapping YAML: inline, or `metadata: {mapping: file.yaml}` (or `--mapping FILE`).
Relative paths resolve against the config file's directory, so a config travels with its data folder.

Data comes either from files read into memory (`data.fasta`, `data.metadata`, `data.peaks`, `data.split`: the
demo and small genomes) or from a store built by `python -m training.build_store` (`data.store`: the paper-scale
path, with the bins of interest and split of `data.store.universe`, `paper` = the authors' preset).
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal, Mapping, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator

from mfd_common.codec import GroupLayout, Variable
from mfd_common.geometry import BIN_SIZE

from ..data.mapping import MappingError, load_mapping, parse_mapping
from .network import ModelConfig


class ConfigError(ValueError):
    """A config value that cannot be used; the message starts with `config: <field path>:`."""

    def __init__(self, path: str, message: str):
        self.path = path
        super().__init__(f"config: {path}: {message}" if path else f"config: {message}")


# Unknown keys are errors; booleans are strict ("yes" is not a boolean); numbers may be written as YAML strings
# such as 1e-3 (PyYAML reads that as a string).
ModelConfig.__pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[attr-defined]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SplitConfig(_Strict):
    """Chromosome-based split: whole chromosomes are held out. `train: null` = every other chromosome."""

    val: list[str] = Field(default_factory=list)
    test: list[str] = Field(default_factory=list)
    train: Optional[list[str]] = None


class AugmentConfig(_Strict):
    reverse_complement: StrictBool = True   # the reference: random reverse complement, p = 0.5
    max_shift: int = Field(3, ge=0)   # the reference: random shift of ±3 bases
    # the reference draws one shift and one strand per batch (its dataset is indexed by a BatchSampler's whole
    # index list); `window` draws them per window (ours, an option)
    per: Literal["batch", "window"] = "batch"


PAPER_UNIVERSE: dict[str, Any] = {"min_overlap": 64, "min_coverage": 2, "val_fraction": 0.05, "val_blocks": 10,
                                  "val": [], "test": ["chr9", "chr10"], "chromosomes": None}


class UniverseConfig(_Strict):
    """`training.data.splits.Universe`: which bins are examples and how they split. Defaults = the paper's preset.

    min_overlap is fixed when the store is built (`build_store --min-overlap`) and must match it.
    """

    min_overlap: int = Field(64, ge=1)          # bp a peak shares with a bin to label it
    min_coverage: int = Field(2, ge=0)          # bins of interest: labelled by at least this many tracks (0 = all)
    val_fraction: float = Field(0.05, ge=0.0, lt=1.0)   # validation = this share of the kept bins, in blocks …
    val_blocks: int = Field(10, ge=1)
    val: list[str] = Field(default_factory=list)        # … or whole validation chromosomes (then val_fraction: 0)
    test: list[str] = Field(default_factory=lambda: ["chr9", "chr10"])
    chromosomes: Optional[list[str]] = None             # restrict the universe (default: every chromosome)


class StoreConfig(_Strict):
    """A store built by `python -m training.build_store`: it holds the genome, the labels and the track table."""

    dir: str
    universe: UniverseConfig = Field(default_factory=UniverseConfig)   # `paper` or a mapping
    num_workers: int = Field(0, ge=0)            # DataLoader workers over the memory-mapped store
    eval_max_windows: Optional[int] = Field(None, ge=1)   # per-epoch validation on at most this many windows

    @field_validator("universe", mode="before")
    @classmethod
    def _universe(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value != "paper":
                raise ValueError(f"must be paper or a mapping (min_overlap, min_coverage, val_fraction, val_blocks, "
                                 f"val, test, chromosomes), got {value!r}")
            return dict(PAPER_UNIVERSE)
        return value


# DataConfig fields that only the in-memory path (FASTA + track TSV + peaks) reads
IN_MEMORY_FIELDS = ("fasta", "metadata", "peaks", "id_column", "chromosomes", "max_n_fraction", "negative_fraction",
                    "stride_bins", "split")


class DataConfig(_Strict):
    store: Optional[StoreConfig] = None  # the paper-scale path; replaces fasta/metadata/peaks/split below
    fasta: str = ""
    metadata: str = ""                 # track metadata TSV, one row per track
    peaks: str = "{peaks}"             # peak file per track: template filled from the TSV row, relative to the TSV
    id_column: str = "id"
    bin_size: int = BIN_SIZE
    chromosomes: Optional[list[str]] = None
    max_n_fraction: float = Field(0.1, ge=0.0, le=1.0)
    negative_fraction: float = Field(1.0, gt=0.0, le=1.0)
    stride_bins: int = Field(1, ge=1)
    split: SplitConfig = Field(default_factory=SplitConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)


class PenaltyConfig(_Strict):
    kind: Literal["none", "covariance", "adversarial", "predictor", "covariance+adversarial",
                  "covariance+predictor"] = "covariance"
    coeff: float = Field(0.01, ge=0.0)  # the reference's coeff_cov: loss = BCE + coeff · (sum of terms)
    norm: Literal["frobenius", "l1"] = "frobenius"   # the reference's cov_norm: true → Frobenius
    hidden: int = Field(1024, ge=1)     # dim_hidden_discriminator (discriminator and predictors)
    layers: int = Field(3, ge=0)        # num_hidden_discriminator
    lr: float = Field(1e-3, gt=0.0)     # lr_discriminator (own Adam with amsgrad)
    generator_every: int = Field(1, ge=1)  # num_steps_discriminator: model steps on every n-th batch
    warmup_steps: int = Field(0, ge=0)  # ours: linear ramp of coeff


class TrainConfig(_Strict):
    epochs: int = Field(100, ge=1)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(1e-3, gt=0.0)
    optimizer: Literal["adam_amsgrad", "adamw"] = "adam_amsgrad"
    weight_decay: float = Field(0.0, ge=0.0)
    schedule: Literal["constant", "cosine"] = "constant"
    grad_clip: float = Field(0.0, ge=0.0)        # ours: 0 = off
    metadata_dropout: float = Field(0.0, ge=0.0, lt=1.0)  # ours: zero a variable's codes per (track, step)
    init_output_bias: StrictBool = False               # ours: start each track's bias at its positive rate's logit
    keep: Literal["best_val_loss", "last"] = "best_val_loss"
    device: str = "auto"
    num_workers: int = Field(0, ge=0)
    threads: Optional[int] = Field(None, ge=1)
    max_steps_per_epoch: Optional[int] = Field(None, ge=1)
    eval_max_windows: Optional[int] = Field(None, ge=1)   # validation only; test is always whole
    eval_batch_size: int = Field(256, ge=1)

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if value not in ("auto", "cpu", "cuda") and not value.startswith("cuda:"):
            raise ValueError(f"must be auto, cpu or cuda, got {value!r}")
        return value


class Config(_Strict):
    name: str = "mfd"
    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    metadata: dict[str, Any] = Field(default_factory=dict)   # the authors' mapping (or {mapping: FILE})
    model: ModelConfig = Field(default_factory=ModelConfig)
    penalty: PenaltyConfig = Field(default_factory=PenaltyConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    base_dir: str = Field(".", exclude=True)

    def resolve(self, relpath: str) -> Path:
        path = Path(relpath).expanduser()
        return path if path.is_absolute() else Path(self.base_dir) / path

    def mapping(self) -> dict[str, Any]:
        """The mapping YAML as a dict, read from its file when the config names one."""
        if set(self.metadata) == {"mapping"}:
            return load_mapping(self.resolve(str(self.metadata["mapping"])))
        return self.metadata

    def codec_spec(self) -> tuple[list[Variable], dict[str, GroupLayout]]:
        """Unfitted codec variables and group layouts (vocabularies are fitted from the tracks)."""
        source = str(self.resolve(str(self.metadata["mapping"]))) if set(self.metadata) == {"mapping"} else "config: metadata"
        return parse_mapping(self.mapping(), source)

    def to_dict(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        data["model"] = asdict(self.model)
        data["metadata"] = self.mapping()
        return data


def validate(cfg: Config) -> None:
    """Checks that need more than one field; every message names the field path."""
    try:
        cfg.model.validate()
    except ValueError as err:  # ModelConfig messages start with "model.<field>"
        field_name, _, message = str(err).partition(" ")
        raise ConfigError(field_name, message) from None
    if cfg.data.bin_size != cfg.model.bin_size:
        raise ConfigError("data.bin_size", f"must equal the model's output bin ({cfg.model.bin_size} bp), "
                                           f"got {cfg.data.bin_size}")
    if cfg.data.store is not None:
        _validate_store(cfg)
    else:
        _validate_in_memory(cfg)
    if not cfg.metadata:
        raise ConfigError("metadata", "give the metadata mapping (inline, or `mapping: FILE`)")
    try:
        cfg.codec_spec()
    except MappingError as err:
        raise ConfigError(f"metadata.{err.path}" if err.source == "config: metadata" else "metadata.mapping",
                          str(err) if err.source != "config: metadata" else str(err).split(": ", 2)[-1]) from None
    if cfg.model.head_kind == "baseline" and cfg.penalty.kind != "none":
        raise ConfigError("penalty.kind", "must be none for model.head_kind: baseline (it has no split latent)")
    if cfg.train.batch_size < 2 and cfg.penalty.kind != "none":
        raise ConfigError("train.batch_size", "must be >= 2 for an independence penalty (it needs batch statistics)")


def _validate_store(cfg: Config) -> None:
    for key in IN_MEMORY_FIELDS:
        if key in cfg.data.model_fields_set:
            raise ConfigError(f"data.{key}", "not used with data.store (the store holds the genome, tracks and "
                                             "labels; the split is data.store.universe)")
    universe = cfg.data.store.universe
    if universe.val and universe.val_fraction:
        raise ConfigError("data.store.universe.val", "give validation chromosomes or a val_fraction, not both "
                                                     "(set val_fraction: 0 to use val)")
    if not universe.val and not universe.val_fraction:
        raise ConfigError("data.store.universe.val_fraction", "must be > 0 unless val names validation chromosomes")
    overlap = set(universe.val) & set(universe.test)
    if overlap:
        raise ConfigError("data.store.universe", f"chromosomes in both val and test: {', '.join(sorted(overlap))}")


def _validate_in_memory(cfg: Config) -> None:
    for key in ("fasta", "metadata"):
        if not getattr(cfg.data, key):
            raise ConfigError(f"data.{key}", "is required (or give data.store)")
    if not cfg.data.split.val:
        raise ConfigError("data.split.val", "name at least one validation chromosome")
    overlap = set(cfg.data.split.val) & set(cfg.data.split.test)
    if cfg.data.split.train is not None:
        overlap |= set(cfg.data.split.train) & (set(cfg.data.split.val) | set(cfg.data.split.test))
    if overlap:
        raise ConfigError("data.split", f"chromosomes in more than one split: {', '.join(sorted(overlap))}")


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


def _error_path(error: Mapping[str, Any]) -> str:
    parts: list[str] = []
    for item in error["loc"]:
        if isinstance(item, int):
            parts[-1:] = [f"{parts[-1]}[{item}]"] if parts else [f"[{item}]"]
        else:
            parts.append(str(item))
    return ".".join(parts)


#: Keys renamed since configs were first written: old dotted path → the message naming the new key.
RENAMED_KEYS = {"model.seq_len": "renamed model.positions (one-hot positions: 2176 for the reference's windows of "
                                 "2177 bases); write positions instead"}


def _error_message(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        return RENAMED_KEYS.get(_error_path(error), "unknown key")
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        return f"must be one of {expected.replace(chr(39), '')}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"must be an integer, got {error.get('input')!r}"
    if kind in ("bool_type", "bool_parsing"):
        return f"must be true or false, got {error.get('input')!r}"
    if kind in ("float_type", "float_parsing"):
        return f"must be a number, got {error.get('input')!r}"
    if kind in ("greater_than_equal", "greater_than", "less_than", "less_than_equal"):
        ctx = error.get("ctx", {})
        op = {"greater_than_equal": ">=", "greater_than": ">", "less_than": "<", "less_than_equal": "<="}[kind]
        bound = next(iter(ctx.values()), "")
        return f"must be {op} {bound}, got {error.get('input')!r}"
    return str(error["msg"]).removeprefix("Value error, ")


def config_from_dict(data: Mapping[str, Any], base_dir: str | Path = ".",
                     overrides: Mapping[str, Any] | None = None, mapping: str | Path | None = None) -> Config:
    raw = yaml.safe_load(yaml.safe_dump(dict(data)))  # a deep, plain copy
    for key, value in (overrides or {}).items():
        _set_dotted(raw, key, value)
    if mapping is not None:
        raw["metadata"] = {"mapping": str(Path(mapping).resolve())}
    if "base_dir" in raw:
        raise ConfigError("base_dir", "unknown key")
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        raise ConfigError(_error_path(first), _error_message(first)) from None
    cfg.base_dir = str(base_dir)
    validate(cfg)
    return cfg


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None,
                mapping: str | Path | None = None) -> Config:
    path = Path(path)
    if not path.is_file():
        raise ConfigError("", f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError("", f"{path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError("", f"{path} must hold a mapping at the top level")
    return config_from_dict(data, base_dir=path.resolve().parent, overrides=overrides, mapping=mapping)
