"""Training layer (data): the authors' metadata mapping YAML → our codec's variables and group layouts.

Their format, read as is (HealthML/MFD `MetadataEmbedding`):

    Biosample_term_name:            # one entry per metadata column
      type: category                # category | float | int | date.year
      intermediate: embed           # null | linear | embed | rescale | rescale_indep
      intermediate_dim: 96          # linear / embed only (default: the column's input width)
      labels: [...]                 # category only: fixes the vocabulary and its order
      mean: 0.0                     # float / int only: fixes the z-score
      std: 1.0
    biological_features:
      direct:   {variables: [proc_target]}
      interact: {variables: [Biosample_term_name, ...], out_dim: 256}
    technical_features: {...}

Entries not named by either group are ignored, as in the reference. Errors name the file and the key path.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import yaml

from mfd_common.codec import GROUPS, INTERMEDIATES, VARIABLE_TYPES, GroupLayout, Variable

GROUP_KEYS = {"biological": "biological_features", "technical": "technical_features"}
VARIABLE_KEYS = {"type", "intermediate", "intermediate_dim", "labels", "mean", "std"}


class MappingError(ValueError):
    """The mapping cannot be used; the message starts with `<source>: <key path>:`."""

    def __init__(self, source: str, path: str, message: str):
        self.source, self.path = source, path
        super().__init__(f"{source}: {path}: {message}" if path else f"{source}: {message}")


def load_mapping(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise MappingError(str(path), "", "mapping file does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise MappingError(str(path), "", f"not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise MappingError(str(path), "", "must hold a mapping at the top level")
    return data


def _names(source: str, where: str, value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MappingError(source, where, "must be a list of variable names")
    return list(value)


def parse_mapping(data: Mapping[str, Any], source: str = "mapping") -> tuple[list[Variable], dict[str, GroupLayout]]:
    """Variables (in the order the groups first name them) and group layouts; unfitted (no vocabularies yet)."""
    groups: dict[str, GroupLayout] = {}
    for group in GROUPS:
        key = GROUP_KEYS[group]
        spec = data.get(key)
        if not isinstance(spec, Mapping):
            raise MappingError(source, key, "is required (a mapping with direct and interact)")
        unknown = set(spec) - {"direct", "interact"}
        if unknown:
            raise MappingError(source, f"{key}.{sorted(unknown)[0]}", "unknown key (allowed: direct, interact)")
        direct = spec.get("direct") or {}
        interact = spec.get("interact") or {}
        if not isinstance(direct, Mapping) or not isinstance(interact, Mapping):
            raise MappingError(source, key, "direct and interact must be mappings with `variables`")
        out_dim = interact.get("out_dim")
        if not isinstance(out_dim, int) or isinstance(out_dim, bool) or out_dim < 1:
            raise MappingError(source, f"{key}.interact.out_dim", f"must be a positive integer, got {out_dim!r}")
        layout = GroupLayout(direct=_names(source, f"{key}.direct.variables", direct.get("variables")),
                             interact=_names(source, f"{key}.interact.variables", interact.get("variables")),
                             out_dim=out_dim)
        if not layout.interact:
            raise MappingError(source, f"{key}.interact.variables", "name at least one variable")
        groups[group] = layout

    membership: dict[str, list[str]] = {}
    for group, layout in groups.items():
        for name in layout.variables:
            membership.setdefault(name, []).append(group)
    variables = [_variable(data, name, groups_of, source) for name, groups_of in membership.items()]
    return variables, groups


def _variable(data: Mapping[str, Any], name: str, groups_of: list[str], source: str) -> Variable:
    spec = data.get(name)
    if not isinstance(spec, Mapping):
        raise MappingError(source, name, "is named by a group but not defined (give its type and intermediate)")
    unknown = set(spec) - VARIABLE_KEYS
    if unknown:
        raise MappingError(source, f"{name}.{sorted(unknown)[0]}", f"unknown key (allowed: {', '.join(sorted(VARIABLE_KEYS))})")
    vtype = spec.get("type")
    if vtype not in VARIABLE_TYPES:
        raise MappingError(source, f"{name}.type", f"must be one of {', '.join(VARIABLE_TYPES)}, got {vtype!r}")
    if "intermediate" not in spec:
        raise MappingError(source, f"{name}.intermediate", "is required (null for identity)")
    intermediate = spec["intermediate"]
    if intermediate not in INTERMEDIATES:
        raise MappingError(source, f"{name}.intermediate", f"unknown intermediate {intermediate!r} (allowed: null, "
                                                           f"{', '.join(i for i in INTERMEDIATES if i)})")
    if intermediate in ("rescale", "rescale_indep") and vtype != "category":
        raise MappingError(source, f"{name}.intermediate", f"{intermediate} is only meaningful for category variables")
    dim = spec.get("intermediate_dim")
    if dim is not None and (not isinstance(dim, int) or isinstance(dim, bool) or dim < 1):
        raise MappingError(source, f"{name}.intermediate_dim", f"must be a positive integer, got {dim!r}")
    variable = Variable(name=name, type=vtype, intermediate=intermediate,
                        intermediate_dim=dim if intermediate in ("linear", "embed") else None,
                        group=groups_of[0] if len(groups_of) == 1 else "both")
    if vtype == "category" and spec.get("labels") is not None:
        labels = spec["labels"]
        if not isinstance(labels, list) or not labels:
            raise MappingError(source, f"{name}.labels", "must be a non-empty list")
        variable.vocabulary = [str(label) for label in labels]
    if vtype in ("float", "int") and ("mean" in spec or "std" in spec):
        if "mean" not in spec or "std" not in spec:
            raise MappingError(source, name, "give both mean and std, or neither")
        try:
            variable.mean, variable.std = float(spec["mean"]), float(spec["std"])
        except (TypeError, ValueError):
            raise MappingError(source, f"{name}.mean", "mean and std must be numbers") from None
        if variable.std <= 0:
            raise MappingError(source, f"{name}.std", f"must be > 0, got {spec['std']!r}")
        variable.scale_fixed = True
    return variable
