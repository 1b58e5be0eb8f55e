"""Contract (mfd_common, deployment): the model-repository volume's layout, and the loader Job's publish step.

The volume (PVC `mfd-model-repository`, mounted at /models) holds immutable, versioned directories, written only
by the loader Job (k8s/model-loader) and read by every pod:

    /models/<version>/                          one model (today's single-model delivery, unchanged)
    /models/by-name/<name>/<version>/           one model's version: a single-model repository
    /models/sets/<set>/<name> -> ../../by-name/<name>/<version>
                                                a model set: a multi-model repository (mfd_common.model_store),
                                                the service's MFD_MODEL_REPOSITORY=/models/sets/<set>
    /models/triton/<set>/<name>__mfd_trunk/...  the set's Triton repository (mfd_common.triton_repository;
                                                relative symlinks into by-name/, no copy of the weights)

So a new version of one model is copied once, into by-name/, and a set only names which version of each model is
served together; a deployment switches sets as it switches versions (MODEL_VERSION names the set). Links are
relative, so they resolve wherever the volume is mounted.

`publish(root, set_name, models)` is what the Job's `publish` container runs (the `copy` init container, in the
model image, has staged the new files as `.staging-<version>` directories first):

1. every staged directory, `/models/.staging-<v>` or `/models/by-name/<name>/.staging-<v>`, is checked against the
   sha256 in its model_card.json, made read-only and renamed to its version (a rename is atomic: no pod ever sees
   half a version);
2. with a set: `/models/sets/<set>` and `/models/triton/<set>` are built under `.staging-<set>`, the set is opened
   with the model_store contract (names, cards), the Triton repository generated, both made read-only and renamed.
   A set that exists already must name exactly the same versions (sets are immutable too: publish a new one).

CLI: `python -m mfd_common.model_delivery /models [--set SET --models grch38=1.2.0,mm10=0.3.0]`; without `--set`,
the environment's MODEL_SET and MODELS are used (empty: versions only).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Sequence

from .card import CARD_FILENAME, ModelCard, verify_checksums
from .model_store import ModelStoreError, is_valid_model_name, open_store, validate_model_name
from .triton_repository import generate_triton_repository

BY_NAME = "by-name"
SETS = "sets"
TRITON = "triton"
STAGING = ".staging-"


def parse_models(text: str) -> dict[str, str]:
    """`"grch38=1.2.0,mm10=0.3.0"` (commas or spaces) → {name: version}; names and versions follow NAME_RULE."""
    models: dict[str, str] = {}
    for item in text.replace(",", " ").split():
        name, sep, version = item.partition("=")
        if not sep:
            raise ValueError(f"MODELS entry {item!r} is not <name>=<version>")
        validate_model_name(name, what="MODELS name")
        validate_model_name(version, what=f"MODELS version of {name}")
        if name in models:
            raise ValueError(f"MODELS names {name!r} twice")
        models[name] = version
    return models


def _chmod_tree(directory: Path, dir_mode: int, file_mode: int | None) -> None:
    """chmod a tree bottom-up without following symlinks (a link's target is another version's file)."""
    for top, dirs, files in os.walk(directory, topdown=False, followlinks=False):
        for name in files if file_mode is not None else []:
            if not os.path.islink(os.path.join(top, name)):
                os.chmod(os.path.join(top, name), file_mode)
        for name in dirs:
            if not os.path.islink(os.path.join(top, name)):
                os.chmod(os.path.join(top, name), dir_mode)
    os.chmod(directory, dir_mode)


def _seal(directory: Path) -> None:
    """Read-only for everyone (files 0444, folders 0555); symlinks are left as they are."""
    _chmod_tree(directory, 0o555, 0o444)


def _remove(directory: Path) -> None:
    """Remove a (possibly sealed) leftover staging tree."""
    _chmod_tree(directory, 0o755, None)
    shutil.rmtree(directory)


def _publish_staged(staged: Path, *, check_name: bool = True) -> Path:
    version = staged.name.removeprefix(STAGING)
    if check_name:  # by-name versions follow the name rule; legacy /models/<version> keep today's freedom
        validate_model_name(version, what=f"version folder of {staged}")
    verify_checksums(ModelCard.load(staged / CARD_FILENAME), staged)  # raises on any mismatch
    _seal(staged)
    target = staged.with_name(version)
    staged.rename(target)
    return target


def publish_versions(root: Path) -> list[Path]:
    """Check, seal and rename every staged version (legacy /models/.staging-<v> and by-name/<n>/.staging-<v>)."""
    published = [_publish_staged(p, check_name=False) for p in sorted(root.glob(f"{STAGING}*"))]
    for model_dir in sorted((root / BY_NAME).iterdir()) if (root / BY_NAME).is_dir() else []:
        if not model_dir.name.startswith(".") and not is_valid_model_name(model_dir.name):
            raise ModelStoreError(model_dir, f"{model_dir.name!r} is not a valid model name")
        published += [_publish_staged(p) for p in sorted(model_dir.glob(f"{STAGING}*"))]
    return published


def _link_target(name: str, version: str) -> str:
    return f"../../{BY_NAME}/{name}/{version}"


def publish_set(root: Path, set_name: str, models: dict[str, str]) -> Path:
    """Build /models/sets/<set> (+ its Triton repository) from published versions; return the set's path."""
    validate_model_name(set_name, what="MODEL_SET")
    if not models:
        raise ValueError(f"MODEL_SET={set_name} needs MODELS (<name>=<version>, ...)")
    for name, version in models.items():
        if not (root / BY_NAME / name / version / CARD_FILENAME).is_file():
            raise ModelStoreError(root / BY_NAME / name / version, f"model {name} version {version} is not "
                                                                   f"published (is it in the model image?)")
    sets, tritons = root / SETS, root / TRITON
    final = sets / set_name
    if final.exists():
        existing = {p.name: os.readlink(p) for p in final.iterdir() if p.is_symlink()}
        wanted = {n: _link_target(n, v) for n, v in models.items()}
        if existing != wanted:
            raise ModelStoreError(final, f"exists with other models {existing}; a set is immutable: publish a new "
                                         f"MODEL_SET")
        return final
    for parent in (sets, tritons):
        parent.mkdir(parents=True, exist_ok=True)
    staged_set, staged_triton = sets / f"{STAGING}{set_name}", tritons / f"{STAGING}{set_name}"
    for stale in (staged_set, staged_triton):
        if stale.exists():  # the leftover of a run that failed half-way
            _remove(stale)
    staged_set.mkdir()
    for name, version in models.items():
        (staged_set / name).symlink_to(_link_target(name, version))
    store = open_store(staged_set)
    generate_triton_repository(store, staged_triton, link="symlink")
    _seal(staged_set)
    _seal(staged_triton)
    if (tritons / set_name).exists():  # left by a run that stopped between the two renames
        raise ModelStoreError(tritons / set_name, "exists without its set: remove it and run the loader again")
    staged_triton.rename(tritons / set_name)
    staged_set.rename(final)
    return final


def publish(root: str | Path, set_name: str | None = None, models: dict[str, str] | None = None) -> list[str]:
    """The loader Job's publish step; returns log lines."""
    root = Path(root)
    lines = [f"version {p.relative_to(root)} published" for p in publish_versions(root)]
    if set_name:
        final = publish_set(root, set_name, models or {})
        lines.append(f"set {set_name} at {final}: " + ", ".join(
            f"{n}={os.readlink(p).rsplit('/', 1)[-1]}" for n, p in sorted(open_store(final).models.items())))
    lines.append("versions: " + ", ".join(sorted(p.name for p in root.iterdir()
                                                 if (p / CARD_FILENAME).is_file())))
    if (root / BY_NAME).is_dir():
        for model_dir in sorted(p for p in (root / BY_NAME).iterdir() if not p.name.startswith(".")):
            lines.append(f"model {model_dir.name}: " + ", ".join(
                sorted(p.name for p in model_dir.iterdir() if not p.name.startswith("."))))
    if (root / SETS).is_dir():
        lines.append("sets: " + ", ".join(sorted(p.name for p in (root / SETS).iterdir()
                                                 if not p.name.startswith("."))))
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mfd_common.model_delivery", description=__doc__.split("\n")[0])
    parser.add_argument("root", type=Path, help="the model-repository volume (/models)")
    parser.add_argument("--set", dest="set_name", default=os.environ.get("MODEL_SET", ""),
                        help="model set to publish (default: $MODEL_SET; empty: versions only)")
    parser.add_argument("--models", default=os.environ.get("MODELS", ""),
                        help="the set's models, <name>=<version>[,...] (default: $MODELS)")
    args = parser.parse_args(argv)
    try:
        for line in publish(args.root, args.set_name or None, parse_models(args.models)):
            print(line)
    except (ModelStoreError, ValueError, FileNotFoundError) as err:
        print(f"model delivery failed: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
