"""Metadata → condition codes: the one encoding shared by training (track metadata) and serving (requests).

Every metadata variable becomes a slice of a float32 code vector:
- `category`: one-hot over the vocabulary, `multilabel`: multi-hot (values split on `separator`);
- `float`, `int`, `year`: one standardised number ((x - mean) / std, dates reduced to their year).
An unspecified variable is all zeros. Training drops variables at random (metadata dropout), so zeros mean
"averaged over this variable" and a request may name any subset of variables, including combinations that
were never measured. Unknown categorical values are rejected with the allowed values, never mapped to zero,
because a typo would otherwise silently become "unspecified".
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Literal, Mapping, Sequence

import numpy as np

VariableType = Literal["category", "multilabel", "float", "int", "year"]
Group = Literal["biological", "technical"]
GROUPS: tuple[Group, Group] = ("biological", "technical")
CATEGORICAL_TYPES = ("category", "multilabel")
NUMERIC_TYPES = ("float", "int", "year")
MISSING_STRINGS = {"", "na", "nan", "none", "null", "n/a"}


class MetadataError(ValueError):
    """A metadata value that cannot be encoded; `field` names the variable, `allowed` lists valid values."""

    def __init__(self, field: str, message: str, allowed: Sequence[str] | None = None):
        self.field = field
        self.allowed = list(allowed) if allowed is not None else None
        super().__init__(f"{field}: {message}")


@dataclass
class Variable:
    """One metadata column: how it is typed, grouped, and (after fitting) its vocabulary or scale."""

    name: str
    type: VariableType
    group: Group
    intermediate: Literal["embed", "multihot", "identity"] = "multihot"
    intermediate_dim: int = 8
    separator: str = ","
    vocabulary: list[str] = field(default_factory=list)
    mean: float = 0.0
    std: float = 1.0

    @property
    def width(self) -> int:
        """Number of code slots this variable occupies."""
        return len(self.vocabulary) if self.type in CATEGORICAL_TYPES else 1

    @property
    def out_width(self) -> int:
        """Width after the intermediate transform (what the metadata network sees)."""
        return self.intermediate_dim if self.intermediate == "embed" else self.width


@dataclass
class GroupLayout:
    """Which variables of a group feed forward directly and which interact through a shared layer."""

    direct: list[str] = field(default_factory=list)
    interact: list[str] = field(default_factory=list)
    out_dim: int = 32


def is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    if isinstance(value, str) and value.strip().lower() in MISSING_STRINGS:
        return True
    if isinstance(value, (list, tuple)) and len(value) == 0:
        return True
    return False


def _labels(value: Any, separator: str) -> list[str]:
    if isinstance(value, (list, tuple)):
        items = [str(v) for v in value]
    else:
        items = str(value).split(separator)
    return [item.strip() for item in items if item.strip()]


_YEAR = re.compile(r"^\s*(\d{4})")


def _number(variable: Variable, value: Any) -> float:
    if isinstance(value, bool):
        raise MetadataError(variable.name, f"expected a {variable.type}, got a boolean")
    if variable.type == "year" and isinstance(value, str):
        match = _YEAR.match(value)
        if not match:
            raise MetadataError(variable.name, f"expected a year or a date like 2016-05-03, got {value!r}")
        return float(match.group(1))
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise MetadataError(variable.name, f"expected a {variable.type}, got {value!r}") from None
    if not math.isfinite(number):
        raise MetadataError(variable.name, f"expected a finite number, got {value!r}")
    if variable.type in ("int", "year") and number != int(number):
        raise MetadataError(variable.name, f"expected a whole number, got {value!r}")
    return number


class MetadataCodec:
    """Encodes metadata mappings into condition codes according to a fitted variable list."""

    def __init__(self, variables: Sequence[Variable], groups: Mapping[str, GroupLayout]):
        self.variables = list(variables)
        self.groups = {name: groups[name] for name in GROUPS}
        self.by_name = {v.name: v for v in self.variables}
        if len(self.by_name) != len(self.variables):
            raise ValueError("metadata variable names must be unique")
        self.offsets: dict[str, tuple[int, int]] = {}
        start = 0
        for variable in self.variables:
            self.offsets[variable.name] = (start, start + variable.width)
            start += variable.width
        self.width = start
        for group_name, layout in self.groups.items():
            for name in layout.direct + layout.interact:
                if name not in self.by_name:
                    raise ValueError(f"group {group_name!r} names unknown variable {name!r}")
                if self.by_name[name].group != group_name:
                    raise ValueError(f"variable {name!r} is {self.by_name[name].group}, listed under {group_name}")

    # ---- fitting (training side) -------------------------------------------------------------
    @classmethod
    def fit(cls, variables: Sequence[Variable], groups: Mapping[str, GroupLayout],
            rows: Iterable[Mapping[str, Any]]) -> "MetadataCodec":
        """Learn vocabularies (sorted, for reproducibility) and numeric scales from the track table."""
        rows = list(rows)
        fitted: list[Variable] = []
        for variable in variables:
            values = [row.get(variable.name) for row in rows]
            present = [v for v in values if not is_missing(v)]
            spec = Variable(**{**asdict(variable), "vocabulary": [], "mean": 0.0, "std": 1.0})
            if variable.type in CATEGORICAL_TYPES:
                vocab: set[str] = set()
                for value in present:
                    vocab.update(_labels(value, variable.separator) if variable.type == "multilabel" else [str(value).strip()])
                spec.vocabulary = sorted(vocab)
            else:
                numbers = np.array([_number(variable, v) for v in present], dtype=np.float64)
                if numbers.size:
                    spec.mean = float(numbers.mean())
                    spec.std = float(numbers.std()) or 1.0
            fitted.append(spec)
        return cls(fitted, groups)

    # ---- encoding (both sides) ---------------------------------------------------------------
    def encode(self, values: Mapping[str, Any], *, strict: bool = True) -> np.ndarray:
        """Encode one metadata mapping. Unknown variable names raise when `strict` (requests), else are ignored."""
        codes = np.zeros(self.width, dtype=np.float32)
        for name, value in values.items():
            variable = self.by_name.get(name)
            if variable is None:
                if strict:
                    raise MetadataError(name, "unknown metadata variable", sorted(self.by_name))
                continue
            if is_missing(value):
                continue
            start, end = self.offsets[name]
            if variable.type in CATEGORICAL_TYPES:
                labels = _labels(value, variable.separator) if variable.type == "multilabel" else [str(value).strip()]
                for label in labels:
                    try:
                        index = variable.vocabulary.index(label)
                    except ValueError:
                        raise MetadataError(name, f"unknown value {label!r}", variable.vocabulary) from None
                    codes[start + index] = 1.0
            else:
                codes[start] = (_number(variable, value) - variable.mean) / variable.std
        return codes

    def encode_many(self, rows: Sequence[Mapping[str, Any]], *, strict: bool = True) -> np.ndarray:
        return np.stack([self.encode(row, strict=strict) for row in rows]) if rows else np.zeros((0, self.width), np.float32)

    def variable_mask(self, name: str) -> np.ndarray:
        """Boolean mask over code slots that belong to one variable (used by metadata dropout)."""
        mask = np.zeros(self.width, dtype=bool)
        start, end = self.offsets[name]
        mask[start:end] = True
        return mask

    # ---- serialisation -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "variables": [asdict(v) for v in self.variables],
            "groups": {name: asdict(layout) for name, layout in self.groups.items()},
            "width": self.width,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "MetadataCodec":
        codec = cls([Variable(**v) for v in data["variables"]],
                    {name: GroupLayout(**layout) for name, layout in data["groups"].items()})
        if "width" in data and data["width"] != codec.width:
            raise ValueError(f"codec width mismatch: card says {data['width']}, variables give {codec.width}")
        return codec
