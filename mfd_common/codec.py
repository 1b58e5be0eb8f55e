"""Contract (mfd_common): metadata → condition codes, one encoding for training (track metadata) and serving (requests).

It is the authors' column encoding (HealthML/MFD `MetadataColumnEmbedding`), so checkpoints trained with their
code read the same numbers here:
- `category`: every value is split on `','` (no stripping) into labels; a missing value is the label `'nan'`;
  the vocabulary is the sorted set of labels seen in the training tracks (or the mapping YAML's `labels:`, in
  that order); a value becomes a multi-hot vector over the vocabulary.
- `float` / `int`: one z-scored number, with the training tracks' mean and population std (ddof 0) unless the
  mapping gives `mean` / `std`.
- `date.year`: the year as a string, one-hot over the sorted years seen in training (YAML labels are ignored,
  as in the reference). If a training date was missing, the reference's pandas path turns years into floats, so
  its labels read `'2016.0'` and `'nan'`; we keep those labels as they are.

The codes of one condition are the variables' encodings concatenated in mapping order (`offsets`). A variable
left out of a request takes its `fill` codes: the mean of the training tracks' codes (the reference preset,
whose models never saw anything else) or zeros (models trained with our metadata dropout, which taught them that
zeros mean "averaged over"). A JSON `null` is the reference's missing-value category `'nan'`. Unknown labels are
rejected with the allowed values, never mapped to zero, because a typo would otherwise silently change the answer.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Literal, Mapping, Optional, Sequence

import numpy as np

VariableType = Literal["category", "float", "int", "date.year"]
Intermediate = Optional[Literal["linear", "embed", "rescale", "rescale_indep"]]
Group = Literal["biological", "technical"]
GROUPS: tuple[Group, Group] = ("biological", "technical")
VARIABLE_TYPES = ("category", "float", "int", "date.year")
INTERMEDIATES = (None, "linear", "embed", "rescale", "rescale_indep")
LABELLED_TYPES = ("category", "date.year")
NUMERIC_TYPES = ("float", "int")
MISSING_LABEL = "nan"  # str(float('nan')): what the reference's `str(val).split(',')` makes of a missing value
SEPARATOR = ","
UNSPECIFIED_POLICIES = ("mean", "zeros")
FLOAT32_MAX = float(np.finfo(np.float32).max)

# Cells pandas.read_csv reads as missing by default: the reference reads its metadata TSV with pandas, so a
# track table of ours treats the same cells as the missing-value category.
PANDAS_NA_STRINGS = frozenset({
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A",
    "NA", "NULL", "NaN", "None", "n/a", "nan", "null"})


class MetadataError(ValueError):
    """A metadata value that cannot be encoded; `field` names the variable, `allowed` lists valid values."""

    def __init__(self, field: str, message: str, allowed: Sequence[str] | None = None):
        self.field = field
        self.reason = message
        self.allowed = list(allowed) if allowed is not None else None
        super().__init__(f"{field}: {message}")


@dataclass
class Variable:
    """One metadata column: its type and intermediate transform, and (after fitting) vocabulary or scale.

    `group` is informational ("biological", "technical" or "both"): a variable may feed both groups, each with
    its own learned embedding of the same codes.
    """

    name: str
    type: VariableType
    intermediate: Intermediate = None
    intermediate_dim: Optional[int] = None
    group: str = "biological"
    vocabulary: list[str] = field(default_factory=list)
    mean: float = 0.0
    std: float = 1.0
    low: Optional[float] = None       # range of the training values (numeric types): requests must stay near it
    high: Optional[float] = None
    fill: list[float] = field(default_factory=list)  # codes used when a request leaves the variable out
    scale_fixed: bool = False         # mean/std given by the mapping, not fitted

    @property
    def width(self) -> int:
        """Number of code slots this variable occupies (the reference's `dim_input`)."""
        return len(self.vocabulary) if self.type in LABELLED_TYPES else 1

    @property
    def out_width(self) -> int:
        """Width after the intermediate transform (the reference's `dim_intermediate`)."""
        if self.intermediate in ("linear", "embed") and self.intermediate_dim is not None:
            return int(self.intermediate_dim)
        return self.width


@dataclass
class GroupLayout:
    """Which variables feed a group's output weights directly and which interact through the group's MLP."""

    direct: list[str] = field(default_factory=list)
    interact: list[str] = field(default_factory=list)
    out_dim: int = 32

    @property
    def variables(self) -> list[str]:
        """Every variable of the group once, direct first (a variable may be in both lists)."""
        return list(dict.fromkeys(self.direct + self.interact))


def is_missing(value: Any) -> bool:
    """JSON null, a float NaN (how pandas hands over an empty cell), or a cell pandas reads as missing."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value in PANDAS_NA_STRINGS


def category_labels(value: Any) -> list[str]:
    """The reference's `str(val).split(',')`, with missing values as `'nan'` and JSON lists as label lists."""
    if isinstance(value, (list, tuple)):
        labels: list[str] = []
        for item in value:
            labels.extend(category_labels(item))
        return labels
    if is_missing(value):
        return [MISSING_LABEL]
    return str(value).split(SEPARATOR)


_YEAR = re.compile(r"^\s*(\d{4})(?:$|[-/T ])")


def year_of(variable: Variable | str, value: Any) -> int:
    """The calendar year of a date (`2016-05-03`, `2016`, or an int); the reference keeps only the year."""
    name = variable if isinstance(variable, str) else variable.name
    if isinstance(value, bool):
        raise MetadataError(name, "expected a date or a year, got a boolean")
    if isinstance(value, (int, np.integer)) and 1000 <= int(value) <= 9999:
        return int(value)
    if isinstance(value, str):
        match = _YEAR.match(value)
        if match:
            return int(match.group(1))
    raise MetadataError(name, f"expected a date like 2016-05-03 or a year, got {_short(value)}")


def number_of(variable: Variable | str, value: Any) -> float:
    """A finite number; booleans and non-numeric strings are refused rather than coerced."""
    name = variable if isinstance(variable, str) else variable.name
    if isinstance(value, bool) or value is None:
        raise MetadataError(name, f"expected a number, got {_short(value)}")
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise MetadataError(name, f"expected a number, got {_short(value)}") from None
    elif isinstance(value, (int, float, np.integer, np.floating)):
        number = float(value)
    else:
        raise MetadataError(name, f"expected a number, got {_short(value)}")
    if not math.isfinite(number):
        raise MetadataError(name, f"expected a finite number, got {_short(value)}")
    return number


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _year_label(year: float | int, floats: bool) -> str:
    return f"{int(year)}.0" if floats else str(int(year))


class MetadataCodec:
    """Encodes metadata mappings into condition codes according to a fitted variable list."""

    def __init__(self, variables: Sequence[Variable], groups: Mapping[str, GroupLayout],
                 unspecified: str = "mean"):
        self.variables = list(variables)
        self.groups = {name: groups[name] for name in GROUPS}
        self.unspecified = unspecified
        self.by_name = {v.name: v for v in self.variables}
        if len(self.by_name) != len(self.variables):
            raise ValueError("metadata variable names must be unique")
        if unspecified not in UNSPECIFIED_POLICIES:
            raise ValueError(f"unspecified must be one of {UNSPECIFIED_POLICIES}, got {unspecified!r}")
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
        self.default_codes = np.zeros(self.width, dtype=np.float32)
        for variable in self.variables:
            if variable.fill:
                start, end = self.offsets[variable.name]
                self.default_codes[start:end] = np.asarray(variable.fill, dtype=np.float32)

    # ---- fitting (training side) -------------------------------------------------------------
    @classmethod
    def fit(cls, variables: Sequence[Variable], groups: Mapping[str, GroupLayout],
            rows: Iterable[Mapping[str, Any]], *, unspecified: str = "mean") -> "MetadataCodec":
        """Learn vocabularies and numeric scales from the training tracks, as the reference does.

        A variable that already carries a vocabulary (YAML `labels:` for a category) or a fixed mean/std (YAML
        `mean:`/`std:`) keeps it; observed labels outside a given vocabulary are an error, as in the reference.
        """
        rows = list(rows)
        fitted: list[Variable] = []
        for variable in variables:
            values = [row.get(variable.name) for row in rows]
            spec = Variable(**asdict(variable))
            if variable.type == "category":
                observed = sorted({label for v in values for label in category_labels(v)})
                if spec.vocabulary:
                    unexpected = [label for label in observed if label not in spec.vocabulary]
                    if unexpected:
                        raise MetadataError(variable.name, f"the tracks contain values outside its labels: "
                                                           f"{unexpected[:10]}", spec.vocabulary)
                else:
                    spec.vocabulary = observed
            elif variable.type == "date.year":
                floats = any(is_missing(v) for v in values)
                years = sorted({year_of(variable, v) for v in values if not is_missing(v)})
                labels = [_year_label(y, floats) for y in years]
                spec.vocabulary = labels + ([MISSING_LABEL] if floats else [])
                spec.vocabulary.sort()
            else:
                missing = [i for i, v in enumerate(values) if is_missing(v)]
                if missing:
                    raise MetadataError(variable.name, f"{len(missing)} track(s) have no value (first: row "
                                                       f"{missing[0]}); a {variable.type} has no missing-value "
                                                       f"category in the reference encoding")
                numbers = np.array([number_of(variable, v) for v in values], dtype=np.float64)
                if not variable.scale_fixed:
                    spec.mean = float(numbers.mean()) if numbers.size else 0.0
                    spec.std = float(numbers.std()) if numbers.size else 1.0
                if spec.std == 0 or not math.isfinite(spec.std):
                    raise MetadataError(variable.name, "is constant over the tracks (std 0): drop it or give "
                                                       "mean/std in the mapping")
                if numbers.size:
                    spec.low, spec.high = float(numbers.min()), float(numbers.max())
            fitted.append(spec)
        codec = cls(fitted, groups, unspecified)
        codes = codec.encode_many(rows, strict=False) if rows else np.zeros((0, codec.width), np.float32)
        for spec in fitted:
            start, end = codec.offsets[spec.name]
            fill = codes[:, start:end].mean(axis=0) if (unspecified == "mean" and len(rows)) else np.zeros(end - start)
            spec.fill = [float(x) for x in fill]
        return cls(fitted, groups, unspecified)

    # ---- encoding (both sides) ---------------------------------------------------------------
    def encode_value(self, variable: Variable, value: Any) -> np.ndarray:
        """The codes of one variable's value (length `variable.width`)."""
        codes = np.zeros(variable.width, dtype=np.float32)
        if variable.type == "category":
            if is_missing(value) and MISSING_LABEL not in variable.vocabulary:
                raise MetadataError(variable.name, "null is the missing-value category, which no training track "
                                                   "had; give a value or leave the variable out", variable.vocabulary)
            for label in category_labels(value):
                try:
                    codes[variable.vocabulary.index(label)] = 1.0
                except ValueError:
                    raise MetadataError(variable.name, f"unknown value {_short(label)}", variable.vocabulary) from None
        elif variable.type == "date.year":
            if is_missing(value) or value == MISSING_LABEL:
                label = MISSING_LABEL
            else:
                year = year_of(variable, value)
                label = next((c for c in (str(year), f"{year}.0") if c in variable.vocabulary), str(year))
            if label not in variable.vocabulary:
                raise MetadataError(variable.name, f"unknown year {_short(label)}", variable.vocabulary)
            codes[variable.vocabulary.index(label)] = 1.0
        else:
            if value is None:
                raise MetadataError(variable.name, f"a {variable.type} has no missing-value category; give a "
                                                   f"number or leave the variable out")
            scaled = (number_of(variable, value) - variable.mean) / variable.std
            if not abs(scaled) <= FLOAT32_MAX:
                raise MetadataError(variable.name, f"value {_short(value)} is out of range: it overflows float32 after scaling")
            codes[0] = scaled
        return codes

    def encode(self, values: Mapping[str, Any], *, strict: bool = True) -> np.ndarray:
        """Encode one metadata mapping; unknown variable names raise when `strict` (requests), else are ignored."""
        codes = self.default_codes.copy()
        for name, value in values.items():
            variable = self.by_name.get(name)
            if variable is None:
                if strict:
                    raise MetadataError(name, "unknown metadata variable", sorted(self.by_name))
                continue
            start, end = self.offsets[name]
            codes[start:end] = self.encode_value(variable, value)
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
            "unspecified": self.unspecified,
            "width": self.width,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "MetadataCodec":
        codec = cls([Variable(**v) for v in data["variables"]],
                    {name: GroupLayout(**layout) for name, layout in data["groups"].items()},
                    data.get("unspecified", "mean"))
        if "width" in data and data["width"] != codec.width:
            raise ValueError(f"codec width mismatch: card says {data['width']}, variables give {codec.width}")
        return codec

