"""The Triton image can load what we export: the exporting torch vs the image's libtorch, and a parity tool.

No GPU and no NGC registry are reachable here, so the pairing is checked offline: the torch version recorded in
the model card (training.export writes `versions.torch`) against the libtorch of the Triton tag set in
k8s/components/triton/kustomization.yaml, per k8s/components/triton/image-compat.yaml (exact versions from the
NGC PyTorch release notes of the same tag, each row with its source), compared as PEP 440 versions
(mfd_common.triton_compat). scripts/triton_parity.py, the check to run on a GPU node against the real libtorch
backend, is exercised here against the CPU test Triton (tests/fixtures/triton.py).
"""
from __future__ import annotations

import asyncio
import json

import pytest
from packaging.version import Version

from mfd_common import triton_compat

from tests.fixtures.infra import REPO_ROOT, by_kind, render_overlay

COMPAT = REPO_ROOT / "k8s/components/triton/image-compat.yaml"


def triton_release() -> str:
    [triton] = [d for d in by_kind(render_overlay("prod"), "Deployment").values() if d["metadata"]["name"] == "mfd-triton"]
    image = triton["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.startswith("nvcr.io/nvidia/tritonserver:") and image.endswith("-py3"), image
    return image.rsplit(":", 1)[1].removesuffix("-py3")


def exporting_torch() -> str:
    card = json.loads((REPO_ROOT / "model_repository/model_card.json").read_text())
    return card["versions"]["torch"]


def test_versions_compare_as_pep440_with_pre_releases_older_than_releases():
    assert triton_compat.loads("2.13.0", "2.14.0a0")
    assert not triton_compat.loads("2.13.0", "2.13.0a0")       # a pre-release of 2.13 is older than 2.13.0
    assert triton_compat.loads("2.13.0a0", "2.13.0a0+b4e4ee81d3")  # local build tags do not count
    assert triton_compat.loads("2.13.0+cpu", "2.13.0")
    assert not triton_compat.loads("2.13.0", "2.9.0a0")          # 9 < 13 numerically, not as text


def test_compat_table_is_exact_sourced_and_monotonic():
    table = triton_compat.load_table(COMPAT)
    releases = sorted(table, key=Version)
    assert releases and all(len(r) == 5 and r[2] == "." for r in releases)
    for release in table.values():
        version = Version(release.libtorch)
        assert len(version.release) == 3, release          # exact, as the notes print it: never "2.9"
        assert version.is_prerelease, release              # NGC builds are a0 pre-releases
        assert release.source.strip(), release
    versions = [triton_compat.public_version(table[r].libtorch) for r in releases]
    assert versions == sorted(versions)  # NGC never ships an older PyTorch in a later release


def test_the_configured_release_is_in_the_table_and_is_what_kustomize_renders():
    assert triton_compat.configured_tag() == triton_release()
    assert triton_release() in triton_compat.load_table(COMPAT), \
        f"add {triton_release()} to {COMPAT.name} after reading its libtorch version"


def test_exporting_torch_is_not_newer_than_the_images_libtorch():
    table = triton_compat.load_table(COMPAT)
    libtorch = table[triton_release()].libtorch
    assert triton_compat.loads(exporting_torch(), libtorch), (exporting_torch(), triton_release(), libtorch)
    assert triton_compat.incompatibility(exporting_torch()) is None


def test_the_deployment_uses_the_newest_release_that_loads_our_export():
    table = triton_compat.load_table(COMPAT)
    assert triton_compat.newest_compatible(exporting_torch(), table).tag == triton_release()
    # and the check really refuses the releases whose libtorch is older (the 2.13.0a0 pre-release included)
    for tag in ("25.10", "26.06", "26.07"):
        reason = triton_compat.incompatibility(exporting_torch(), tag, table)
        assert reason and "older than the exporting torch" in reason and "nvcr.io/nvidia/pytorch" in reason, tag
    assert "not in image-compat.yaml" in triton_compat.incompatibility("2.13.0", "24.01", table)


def test_parity_tool_agrees_with_a_real_triton(triton_server, exported_repository):
    import importlib.util

    spec = importlib.util.spec_from_file_location("triton_parity", REPO_ROOT / "scripts/triton_parity.py")
    parity = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(parity)
    diffs = asyncio.run(parity.compare(triton_server.grpc_url, exported_repository, windows=4, atol=1e-4))
    assert set(diffs) == {"features", "w_tech", "w_bio", "bias"} and max(diffs.values()) <= 1e-4
    with pytest.raises(AssertionError, match="disagree"):  # the tolerance is really applied
        asyncio.run(parity.compare(triton_server.grpc_url, exported_repository, windows=4, atol=-1.0))
