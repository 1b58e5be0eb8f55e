"""Several models in one deployment, on the Kubernetes side: the multi-model overlay rendered by the real kustomize and
validated strictly, and the loader Job's two scripts (busybox-style sh, then python) run for real on folders laid
out as the model image and the volume, publishing versions per model name, a model set and its Triton repository.
"""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mfd_common.card import CARD_FILENAME, HEAD_MODEL, TRUNK_MODEL
from mfd_common.model_delivery import parse_models
from mfd_common.model_store import open_store
from mfd_common.triton_repository import triton_names
from tests.fixtures.infra import REPO_ROOT, by_kind, crd_errors, is_crd_object, kubernetes_validate, kustomize

MODEL_REPOSITORY = REPO_ROOT / "model_repository"
OVERLAY = REPO_ROOT / "k8s" / "overlays" / "prod-multi-model"


def render(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(kustomize(path)) if d]


@pytest.fixture(scope="module")
def multi() -> list[dict]:
    return render(OVERLAY)


def pod_spec(doc: dict) -> dict:
    return doc["spec"]["template"]["spec"]


def env_of(doc: dict) -> list[dict]:
    return pod_spec(doc)["containers"][0]["env"]


def test_multi_model_overlay_passes_kubernetes_validate_strict(multi, tmp_path):
    core = [d for d in multi if not is_crd_object(d)]
    path = tmp_path / "multi.yaml"
    path.write_text(yaml.safe_dump_all(core, sort_keys=False))
    result = kubernetes_validate(path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARN" not in result.stdout + result.stderr
    for doc in (d for d in multi if is_crd_object(d)):
        assert crd_errors(doc) == [], doc["metadata"]["name"]


def test_service_reads_the_set_and_triton_its_generated_repository(multi):
    deployments = by_kind(multi, "Deployment")
    config_maps = by_kind(multi, "ConfigMap")
    service_env = env_of(deployments["mfd-service"])
    names = [e["name"] for e in service_env]
    # MODEL_VERSION must come first: $(MODEL_VERSION) expands only variables defined earlier in the list.
    assert names.index("MODEL_VERSION") < names.index("MFD_MODEL_REPOSITORY")
    repo = next(e for e in service_env if e["name"] == "MFD_MODEL_REPOSITORY")
    assert repo["value"] == "/models/sets/$(MODEL_VERSION)"
    model_map = service_env[names.index("MODEL_VERSION")]["valueFrom"]["configMapKeyRef"]["name"]
    assert config_maps[model_map]["data"]["MODEL_VERSION"] == "demo-set-1"
    args = pod_spec(deployments["mfd-triton"])["containers"][0]["args"]
    assert "--model-repository=/models/triton/$(MODEL_VERSION)" in args
    assert [a for a in args if a.startswith("--load-model")] == ["--load-model=*"]  # '*' must be the only one
    assert "--model-control-mode=explicit" in args
    triton_env = env_of(deployments["mfd-triton"])
    assert triton_env[0]["valueFrom"]["configMapKeyRef"]["name"] == model_map  # one set for both
    # The plain prod overlay is unchanged: one model at /models/<version>.
    prod = by_kind(render(REPO_ROOT / "k8s" / "overlays" / "prod"), "Deployment")
    assert {"name": "MFD_MODEL_REPOSITORY", "value": "/models/$(MODEL_VERSION)"} in env_of(prod["mfd-service"])
    assert "--load-model=mfd_trunk" in pod_spec(prod["mfd-triton"])["containers"][0]["args"]


def loader_scripts(job: dict, model: Path, models: Path) -> tuple[str, str]:
    spec = pod_spec(job)
    copy = spec["initContainers"][0]["args"][0].replace("/models", str(models)).replace("/model/", f"{model}/")
    publish = spec["containers"][0]["args"][0].replace('"/models"', repr(str(models)))
    return copy, publish


def test_loader_job_takes_the_set_from_its_config_map():
    docs = render(REPO_ROOT / "k8s" / "model-loader")
    [job] = by_kind(docs, "Job").values()
    [ref] = pod_spec(job)["containers"][0]["envFrom"]
    data = by_kind(docs, "ConfigMap")[ref["configMapRef"]["name"]]["data"]
    assert data == {"MODEL_SET": "", "MODELS": ""}  # default: versions only, as with one model


def _unseal(root: Path) -> None:
    for top, dirs, _ in os.walk(root):
        for name in dirs:
            path = Path(top) / name
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | stat.S_IWUSR)


def test_loader_publishes_models_by_name_a_set_and_its_triton_repository(tmp_path):
    [job] = by_kind(render(REPO_ROOT / "k8s" / "model-loader"), "Job").values()
    model, models = tmp_path / "model", tmp_path / "models"
    shutil.copytree(MODEL_REPOSITORY, model / "0.1.0")              # one model, as before
    shutil.copytree(MODEL_REPOSITORY, model / "grch38" / "1.0.0")   # several: /model/<name>/<version>/
    shutil.copytree(MODEL_REPOSITORY, model / "mm10" / "0.3.0")
    models.mkdir()
    copy, publish = loader_scripts(job, model, models)

    def run_job(set_name: str, models_text: str) -> subprocess.CompletedProcess:
        out = subprocess.run(["sh", "-euc", copy], capture_output=True, text=True, check=True).stdout
        done = subprocess.run([sys.executable, "-c", publish], capture_output=True, text=True, cwd=REPO_ROOT,
                              env={**os.environ, "MODEL_SET": set_name, "MODELS": models_text})
        done.stdout = out + done.stdout
        return done

    try:
        first = run_job("set-1", "grch38=1.0.0,mm10=0.3.0")
        assert first.returncode == 0, first.stderr
        for line in ("version 0.1.0 staged", "model grch38 version 1.0.0 staged", "version 0.1.0 published",
                     "version by-name/grch38/1.0.0 published", "set set-1 at", "grch38=1.0.0, mm10=0.3.0"):
            assert line in first.stdout, first.stdout
        assert not [p for p in models.rglob(".staging-*")]
        # What the service opens (MFD_MODEL_REPOSITORY=/models/sets/$(MODEL_VERSION)): a folder of two models.
        store = open_store(models / "sets" / "set-1")
        assert store.layout == "multi" and store.names == ["grch38", "mm10"]
        assert os.readlink(models / "sets" / "set-1" / "grch38") == "../../by-name/grch38/1.0.0"
        assert (store.path("grch38") / CARD_FILENAME).read_bytes() == (MODEL_REPOSITORY / CARD_FILENAME).read_bytes()
        # What Triton loads (--model-repository=/models/triton/$(MODEL_VERSION) --load-model=*): every part.
        triton = models / "triton" / "set-1"
        expected = sorted(t for parts in triton_names(store).values() for t in parts.values())
        assert sorted(p.name for p in triton.iterdir()) == expected == [
            "grch38__mfd_head", "grch38__mfd_trunk", "mm10__mfd_head", "mm10__mfd_trunk"]
        for name in expected:
            part = TRUNK_MODEL if name.endswith(TRUNK_MODEL) else HEAD_MODEL
            weights = triton / name / "1" / "model.pt"
            assert weights.is_symlink() and weights.read_bytes() == (MODEL_REPOSITORY / part / "1" / "model.pt").read_bytes()
        # Everything published is read-only for everyone.
        for root in (models / "by-name" / "grch38" / "1.0.0", models / "sets" / "set-1", triton, models / "0.1.0"):
            for path in [root, *root.rglob("*")]:
                if not path.is_symlink():
                    assert not path.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH), path

        # Immutable: running again changes nothing; a set of that name with other versions is refused.
        again = run_job("set-1", "grch38=1.0.0,mm10=0.3.0")
        assert again.returncode == 0 and "model grch38 version 1.0.0 already published" in again.stdout
        changed = run_job("set-1", "grch38=1.0.0")
        assert changed.returncode == 1 and "a set is immutable" in changed.stderr
        # A set naming a version that is not published, or a bad name: refused, one line, no set written.
        missing = run_job("set-2", "grch38=9.9.9")
        assert missing.returncode == 1 and "model grch38 version 9.9.9 is not published" in missing.stderr
        bad = run_job("set-2", "GRCh38=1.0.0")
        assert bad.returncode == 1 and "MODELS name 'GRCh38' is not valid" in bad.stderr
        assert sorted(p.name for p in (models / "sets").iterdir()) == ["set-1"]
        # A new model version goes next to the old one; a new set picks it.
        shutil.copytree(MODEL_REPOSITORY, model / "mm10" / "0.4.0")
        newer = run_job("set-2", "grch38=1.0.0 mm10=0.4.0")
        assert newer.returncode == 0, newer.stderr
        assert os.readlink(models / "sets" / "set-2" / "mm10") == "../../by-name/mm10/0.4.0"
        assert sorted(p.name for p in (models / "by-name" / "mm10").iterdir()) == ["0.3.0", "0.4.0"]
    finally:
        _unseal(models)  # let pytest clean up the read-only tree


def test_parse_models_rules():
    assert parse_models("grch38=1.0.0, mm10=0.3.0") == {"grch38": "1.0.0", "mm10": "0.3.0"}
    assert parse_models("") == {}
    for text, message in (("grch38", "not <name>=<version>"), ("a=1,a=2", "names 'a' twice"),
                          ("a=V1", "version of a 'V1' is not valid")):
        with pytest.raises(ValueError, match=message):
            parse_models(text)
