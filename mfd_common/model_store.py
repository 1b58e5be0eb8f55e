"""Contract (mfd_common): what `MFD_MODEL_REPOSITORY` may hold, one model or several, and how models are named.

A repository is EITHER

- a **single-model repository** (today's layout, the bundled `model_repository/`): `model_card.json`,
  `mfd_trunk/<v>/model.pt` + `config.pbtxt`, `mfd_head/<v>/model.pt` + `config.pbtxt` at its root; OR
- a **multi-model repository**: a folder whose subdirectories `<name>/` are each a single-model repository.

Which one is decided by the root alone: a root holding `model_card.json` is a single-model repository (its
subdirectories are that model's parts), a root without one is a folder of models. A root that holds a card AND a
subdirectory holding a card is refused (a model copied into another model's folder is a mistake, not a layout).
In a folder of models, entries starting with "." (staging directories, `.snapshot`) and plain files (a README) are
ignored; any other subdirectory must hold `model_card.json`, so a half-copied model is an error, never silently
left out.

**Names** (`NAME_RULE`): 1-63 characters, lower-case letters, digits, ".", "_" and "-", starting and ending with a
letter or digit, and no "__". Why: the name is a URL path segment (`/v2/models/<name>/infer`; no "/", no "." or
".." alone), a Prometheus label value and a Kubernetes label value (63 characters, alphanumeric at both ends), a
directory name on every filesystem, and the prefix of Triton model names `<name>__mfd_trunk`
(mfd_common.triton_repository), which "__" inside a name would make ambiguous.

The **name of a single-model repository** is its card's `model_name` when that obeys the rule (the bundled demo:
"mfd-demo"), else the repository folder's name when that does (an imported card named "MFD human" in
`/models/grch38/` is "grch38"); else it is refused. In a multi-model repository the subdirectory's name is the
model's name, whatever its card says, so one card can be published twice ("demo-v1", "demo-v2").

The **default model** is the only model, or the one `MFD_DEFAULT_MODEL` names; with several models and no
default, requests must name their model (`ModelStore.default` is None) — a repository of two models never
silently picks one.

This module only lays out and names; loading and verifying a model's card and weights stay with the consumer
(the service's repository loader, training.triton_config), one model folder at a time.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Mapping

from .card import CARD_FILENAME

#: The model-name rule (see the module docstring for why each part).
NAME_RULE = re.compile(r"(?!.*__)[a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?")
NAME_RULE_TEXT = ("1-63 characters of a-z, 0-9, '.', '_', '-', starting and ending with a letter or digit, "
                  "without '__'")
REPOSITORY_ENV = "MFD_MODEL_REPOSITORY"
DEFAULT_MODEL_ENV = "MFD_DEFAULT_MODEL"

Layout = Literal["single", "multi"]


class ModelStoreError(ValueError):
    """A repository that is not laid out as the contract says; names the path and the reason."""

    def __init__(self, path: str | Path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class UnknownModelError(KeyError):
    """A model name that the repository does not hold (the service maps it to 404 / NOT_FOUND)."""

    def __init__(self, name: str, known: list[str]):
        self.name = name
        self.known = known
        super().__init__(name)

    def __str__(self) -> str:
        return f"unknown model {self.name!r}; this deployment serves {', '.join(self.known) or 'no model'}"


def is_valid_model_name(name: str) -> bool:
    return isinstance(name, str) and NAME_RULE.fullmatch(name) is not None


def validate_model_name(name: str, *, what: str = "model name") -> str:
    """`name` unchanged if it obeys NAME_RULE; ValueError naming `what`, the value and the rule otherwise."""
    if not is_valid_model_name(name):
        raise ValueError(f"{what} {name!r} is not valid: {NAME_RULE_TEXT}")
    return name


def is_model_dir(path: str | Path) -> bool:
    """Whether `path` is one model's folder (a single-model repository): it holds `model_card.json`."""
    return (Path(path) / CARD_FILENAME).is_file()


def _card_model_name(root: Path) -> str | None:
    card_path = root / CARD_FILENAME
    try:
        value = json.loads(card_path.read_text()).get("model_name")
    except (OSError, ValueError, AttributeError) as exc:
        raise ModelStoreError(card_path, f"cannot read the model card: {exc}") from exc
    return value if isinstance(value, str) else None


def single_model_name(root: str | Path) -> str:
    """The name of the single-model repository at `root`: its card's `model_name`, else the folder's name."""
    root = Path(root)
    card_name = _card_model_name(root)
    if card_name is not None and is_valid_model_name(card_name):
        return card_name
    folder = root.resolve().name
    if is_valid_model_name(folder):
        return folder
    raise ModelStoreError(root, f"neither the card's model_name {card_name!r} nor the folder name {folder!r} is a "
                                f"valid model name ({NAME_RULE_TEXT}); rename the folder")


def detect_layout(root: str | Path) -> Layout:
    """"single" if `root` holds a model card, "multi" otherwise (nothing is validated here)."""
    return "single" if is_model_dir(root) else "multi"


def _candidate_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def discover_models(root: str | Path) -> dict[str, Path]:
    """Model name → model folder, sorted by name; ModelStoreError for anything the contract refuses."""
    root = Path(root)
    if not root.is_dir():
        raise ModelStoreError(root, f"no such directory (set {REPOSITORY_ENV} to a model repository)")
    if detect_layout(root) == "single":
        nested = [p.name for p in _candidate_dirs(root) if is_model_dir(p)]
        if nested:
            raise ModelStoreError(root, f"mixes both layouts: it holds {CARD_FILENAME} (a single-model repository) "
                                        f"and models in {nested}; move the root's model into its own subdirectory")
        return {single_model_name(root): root}
    models: dict[str, Path] = {}
    for path in _candidate_dirs(root):
        if not is_valid_model_name(path.name):
            raise ModelStoreError(path, f"{path.name!r} is not a valid model name ({NAME_RULE_TEXT})")
        if not is_model_dir(path):
            raise ModelStoreError(path, f"not a model: {CARD_FILENAME} is missing (a model folder holds "
                                        f"{CARD_FILENAME}, mfd_trunk/ and mfd_head/)")
        models[path.name] = path
    if not models:
        raise ModelStoreError(root, f"holds no model: neither {CARD_FILENAME} nor subdirectories <name>/ with one "
                                    f"(export one with `python -m training.export CKPT --out {root}`)")
    return models


def choose_default(names: list[str], requested: str | None, *, root: str | Path = "") -> str | None:
    """The default model: `requested` (MFD_DEFAULT_MODEL) if given, else the only model, else None."""
    if requested:
        if requested not in names:
            raise ModelStoreError(root, f"{DEFAULT_MODEL_ENV}={requested!r} names no model here; the models are "
                                        f"{', '.join(names)}")
        return requested
    return names[0] if len(names) == 1 else None


@dataclass(frozen=True)
class ModelStore:
    """The models of one repository: `models` maps each name to its folder (a single-model repository)."""

    root: Path
    layout: Layout
    models: dict[str, Path]
    default: str | None

    @property
    def names(self) -> list[str]:
        return list(self.models)

    def resolve(self, name: str | None) -> str:
        """The model a request means: `name`, or the default when it names none; UnknownModelError otherwise."""
        if name is None or name == "":
            if self.default is None:
                raise UnknownModelError("", self.names)
            return self.default
        if name not in self.models:
            raise UnknownModelError(name, self.names)
        return name

    def path(self, name: str | None = None) -> Path:
        return self.models[self.resolve(name)]


def open_store(root: str | Path, default: str | None = None) -> ModelStore:
    """Discover the models under `root` and pick the default (`default`, e.g. MFD_DEFAULT_MODEL's value)."""
    root = Path(root)
    models = discover_models(root)
    return ModelStore(root=root, layout=detect_layout(root), models=models,
                      default=choose_default(list(models), default or None, root=root))


def store_from_env(environ: Mapping[str, str] | None = None) -> ModelStore:
    """`open_store` from MFD_MODEL_REPOSITORY and MFD_DEFAULT_MODEL."""
    env = os.environ if environ is None else environ
    if not env.get(REPOSITORY_ENV):
        raise ModelStoreError("", f"{REPOSITORY_ENV} is not set")
    return open_store(env[REPOSITORY_ENV], env.get(DEFAULT_MODEL_ENV))


def model_env_var(prefix: str, name: str) -> str:
    """The per-model environment variable `<prefix>_<NAME>` (e.g. MFD_FASTA_GRCH38 for model "grch38"): the name
    upper-cased with "." and "-" as "_", since shells take only [A-Z0-9_] in variable names."""
    return f"{prefix}_{validate_model_name(name).upper().replace('.', '_').replace('-', '_')}"


def check_env_vars_distinct(names: list[str], prefix: str = "MFD_FASTA") -> None:
    """ValueError if two model names share a per-model variable ("mm10-v2" and "mm10.v2" → MFD_FASTA_MM10_V2)."""
    seen: dict[str, str] = {}
    for name in names:
        var = model_env_var(prefix, name)
        if var in seen:
            raise ValueError(f"models {seen[var]!r} and {name!r} share the variable {var}: rename one, or name "
                             f"their files in a mapping file")
        seen[var] = name


def named_model_dir(repository: str | Path, name: str) -> Path:
    """Where a writer (training.export/import_reference --name) puts model `name` in a multi-model repository.

    Refuses a bad name (ValueError) and a repository root that is itself a single-model repository
    (ModelStoreError): writing `<root>/<name>/` there would make a mix of both layouts.
    """
    validate_model_name(name, what="--name")
    repository = Path(repository)
    if is_model_dir(repository):
        raise ModelStoreError(repository, f"is a single-model repository ({CARD_FILENAME} at its root); "
                                          f"--name writes into a folder of models: choose another --out")
    return repository / name
