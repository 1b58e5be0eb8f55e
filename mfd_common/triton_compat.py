"""Contract (mfd_common, deployment): which NGC Triton release can load a TorchScript file written by a given torch.

The table lives in k8s/components/triton/image-compat.yaml (one row per `tritonserver:<tag>-py3` release: the
exact libtorch version of its PyTorch backend, and where that was read). A TorchScript archive loads in the
libtorch that wrote it or a newer one, so the rule is `exporting torch <= image libtorch`, compared as PEP 440
versions: NGC builds are pre-releases (`2.13.0a0+…`), and 2.13.0a0 is *older* than the 2.13.0 release, while
2.13.0 <= 2.14.0a0 holds. Local build tags (`+cpu`, `+b4e4ee81d3`) are ignored.

Shared by `training.export` (a warning at export time) and the deployment tests (the configured tag must pass).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from packaging.version import Version

REPO_ROOT = Path(__file__).resolve().parent.parent
COMPAT_TABLE = REPO_ROOT / "k8s" / "components" / "triton" / "image-compat.yaml"
TRITON_KUSTOMIZATION = REPO_ROOT / "k8s" / "components" / "triton" / "kustomization.yaml"
TRITON_IMAGE = "nvcr.io/nvidia/tritonserver"


@dataclass(frozen=True)
class Release:
    tag: str          # "26.09"
    libtorch: str     # exactly as the release notes print it, e.g. "2.14.0a0"
    source: str       # where the row was read


def public_version(text: str) -> Version:
    """`2.13.0+cpu` / `2.10.0a0+b4e4ee81d3` → the version without its local build tag."""
    return Version(Version(text).public)


def loads(exporting_torch: str, libtorch: str) -> bool:
    """Whether a libtorch of version `libtorch` can load TorchScript saved by `exporting_torch`."""
    return public_version(exporting_torch) <= public_version(libtorch)


def load_table(path: Path = COMPAT_TABLE) -> dict[str, Release]:
    data = yaml.safe_load(Path(path).read_text())["releases"]
    return {str(tag): Release(str(tag), str(row["libtorch"]), str(row["source"])) for tag, row in data.items()}


def configured_tag(kustomization: Path = TRITON_KUSTOMIZATION) -> str | None:
    """The release set for the Triton image in the kustomize component (`26.09` for `newTag: 26.09-py3`)."""
    if not Path(kustomization).is_file():
        return None
    for image in yaml.safe_load(Path(kustomization).read_text()).get("images", []):
        if image.get("newName") == TRITON_IMAGE:
            return str(image["newTag"]).removesuffix("-py3")
    return None


def newest_compatible(exporting_torch: str, table: dict[str, Release]) -> Release | None:
    """The newest release whose libtorch loads what `exporting_torch` wrote (None if there is none)."""
    fitting = [r for r in table.values() if loads(exporting_torch, r.libtorch)]
    return max(fitting, key=lambda r: Version(r.tag)) if fitting else None


def incompatibility(exporting_torch: str, tag: str | None = None, table: dict[str, Release] | None = None
                    ) -> str | None:
    """A one-line reason why the Triton release `tag` (default: the configured one) may not load an export by
    `exporting_torch`, or None when it can. An unknown tag is a reason too: nobody read its libtorch."""
    tag = configured_tag() if tag is None else tag
    if tag is None:
        return None
    if table is None:
        if not COMPAT_TABLE.is_file():  # an installed package without the k8s/ tree: nothing to compare with
            return None
        table = load_table()
    release = table.get(tag)
    if release is None:
        return (f"Triton release {tag} is not in {COMPAT_TABLE.name}: its libtorch is unknown; add the row after "
                f"reading it in the NGC PyTorch {tag} release notes")
    if loads(exporting_torch, release.libtorch):
        return None
    better = newest_compatible(exporting_torch, table)
    hint = f"use tritonserver:{better.tag}-py3 (libtorch {better.libtorch})" if better else \
        "no listed release is new enough"
    return (f"tritonserver:{tag}-py3 carries libtorch {release.libtorch}, older than the exporting torch "
            f"{exporting_torch}: it may refuse model.pt; {hint}, or export inside nvcr.io/nvidia/pytorch:{tag}-py3")
