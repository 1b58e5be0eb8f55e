"""The rendered prod deployment has the properties a GPU cluster needs, checked on `kubectl kustomize` output:

redundancy (no `replicas` under an HPA, >= 2 replicas, PDBs that keep one, spread over nodes, rollouts that never
take the last replica), timings that line up (grace periods, preStop vs the Triton pool's DNS refresh, the
service's long wait for Triton), Pod Security `restricted` on every pod spec we ship (prod, dev, canary, loader),
a required auth Secret, an ingress that cannot reach /metrics, one model version shared by the service and Triton,
and a canary whose service pod only talks to its own Triton. The model loader's two scripts are run for real on
a copy of the bundled model repository.
"""
from __future__ import annotations

import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mfd_common.card import CARD_FILENAME
from service.backends.triton_pool import RESOLVE_EVERY_S

from tests.fixtures.infra import REPO_ROOT, by_kind, is_crd_object, kubernetes_validate, render_overlay
from tests.fixtures.k8s import render
import yaml

MODEL_REPOSITORY = REPO_ROOT / "model_repository"


@pytest.fixture(scope="module")
def loader() -> list[dict]:
    return render("k8s/model-loader")


def pod_spec(doc: dict) -> dict:
    return doc["spec"]["template"]["spec"]


def container(doc: dict, index: int = 0) -> dict:
    return pod_spec(doc)["containers"][index]


def pre_stop_sleep(c: dict) -> int:
    command = c["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    return int(command[1])


def env(c: dict) -> dict[str, dict]:
    return {e["name"]: e for e in c.get("env", [])}


# ---- Pod Security `restricted` (https://kubernetes.io/docs/concepts/security/pod-security-standards/) --------

ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected",
                   "secret"}


def restricted_violations(spec: dict) -> list[str]:
    """The rules of the `restricted` profile (latest) that a pod spec breaks; [] when it passes."""
    bad = []
    pod_sc = spec.get("securityContext", {})
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            bad.append(key)
    for volume in spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            bad.append(f"volume {volume['name']}: {kinds}")
    for c in spec.get("initContainers", []) + spec["containers"]:
        sc = c.get("securityContext", {})
        name = c["name"]
        if sc.get("privileged"):
            bad.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            bad.append(f"{name}: allowPrivilegeEscalation must be false")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            bad.append(f"{name}: capabilities must drop ALL")
        if set(sc.get("capabilities", {}).get("add", [])) - {"NET_BIND_SERVICE"}:
            bad.append(f"{name}: capabilities added")
        if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
            bad.append(f"{name}: runAsNonRoot")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            bad.append(f"{name}: runAsUser 0")
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            bad.append(f"{name}: seccompProfile {seccomp}")
        for port in c.get("ports", []):
            if port.get("hostPort"):
                bad.append(f"{name}: hostPort")
    return bad


def test_restricted_check_catches_what_the_profile_forbids(prod):
    triton = by_kind(prod, "Deployment")["mfd-triton"]
    spec = yaml.safe_load(yaml.safe_dump(pod_spec(triton)))
    assert restricted_violations(spec) == []
    spec["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    spec["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    del spec["securityContext"]["seccompProfile"]
    assert len(restricted_violations(spec)) == 3


@pytest.mark.parametrize("source", ["k8s/overlays/prod", "k8s/overlays/dev", "k8s/canary", "k8s/model-loader"])
def test_every_pod_we_ship_meets_pod_security_restricted(source):
    docs = render(source)
    pods = [d for d in docs if d["kind"] in ("Deployment", "Job")]
    assert pods
    for doc in pods:
        assert restricted_violations(pod_spec(doc)) == [], doc["metadata"]["name"]
    for namespace in by_kind(docs, "Namespace").values():
        assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("source", ["k8s/canary", "k8s/model-loader"])
def test_canary_and_loader_pass_kubernetes_validate_strict(source, tmp_path):
    core = [d for d in render(source) if not is_crd_object(d)]
    path = tmp_path / "docs.yaml"
    path.write_text(yaml.safe_dump_all(core, sort_keys=False))
    result = kubernetes_validate(path)
    assert result.returncode == 0 and "WARN" not in result.stdout + result.stderr, result.stdout + result.stderr


# ---- redundancy and rollouts ------------------------------------------------------------------------------

def test_hpas_own_replicas_and_pdbs_keep_one_pod(prod):
    deployments = by_kind(prod, "Deployment")
    pdbs = list(by_kind(prod, "PodDisruptionBudget").values())
    for hpa in by_kind(prod, "HorizontalPodAutoscaler").values():
        target = deployments[hpa["spec"]["scaleTargetRef"]["name"]]
        name = target["metadata"]["name"]
        assert "replicas" not in target["spec"], f"{name}: every apply would reset the HPA's choice"
        minimum = hpa["spec"]["minReplicas"]
        assert minimum >= 2, name
        labels = target["spec"]["template"]["metadata"]["labels"]
        [pdb] = [p for p in pdbs if p["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        if "minAvailable" in pdb["spec"]:
            kept = pdb["spec"]["minAvailable"]
        else:
            kept = minimum - pdb["spec"]["maxUnavailable"]
        assert 1 <= kept < minimum, (name, pdb["spec"])  # one always serves, and a node can still be drained
        rolling = target["spec"]["strategy"]["rollingUpdate"]
        assert rolling["maxUnavailable"] == 0 and rolling["maxSurge"] >= 1, name


def test_triton_spreads_over_gpu_nodes_and_leaves_dns_before_draining(prod):
    triton = by_kind(prod, "Deployment")["mfd-triton"]
    spec = pod_spec(triton)
    [by_node] = [t for t in spec["topologySpreadConstraints"] if t["topologyKey"] == "kubernetes.io/hostname"]
    assert by_node["maxSkew"] == 1 and by_node["whenUnsatisfiable"] == "DoNotSchedule"
    assert by_node["labelSelector"]["matchLabels"].items() <= spec["nodeSelector"].items() | \
        triton["spec"]["template"]["metadata"]["labels"].items()
    c = container(triton)
    sleep = pre_stop_sleep(c)
    assert sleep > RESOLVE_EVERY_S  # the service's pool re-resolves the headless name before Triton stops
    exit_timeout = int(next(a for a in c["args"] if a.startswith("--exit-timeout-secs=")).split("=")[1])
    assert spec["terminationGracePeriodSeconds"] >= sleep + exit_timeout


def test_service_reaches_every_triton_pod_through_a_headless_service(prod):
    config = next(d for d in prod if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("mfd-service-config"))
    host, port = config["data"]["MFD_TRITON_URL"].split(":")
    svc = by_kind(prod, "Service")[host]
    assert svc["spec"]["clusterIP"] == "None"
    assert int(port) in {p["port"] for p in svc["spec"]["ports"] if p["name"] == "grpc"}


# ---- timings ---------------------------------------------------------------------------------------------

def test_service_timings_line_up(prod):
    from service.service import MFDService

    request_timeout = MFDService.config["traffic"]["timeout"]
    service = by_kind(prod, "Deployment")["mfd-service"]
    c = container(service)
    assert pod_spec(service)["terminationGracePeriodSeconds"] >= pre_stop_sleep(c) + request_timeout
    # The service may wait MFD_TRITON_STARTUP_TIMEOUT_S for Triton before it listens: the startup probe must
    # allow that long, or the kubelet restarts it in a loop while a GPU node comes up.
    config = next(d for d in prod if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("mfd-service-config"))
    startup_timeout = float(config["data"]["MFD_TRITON_STARTUP_TIMEOUT_S"])
    assert startup_timeout >= 600
    probe = c["startupProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] >= startup_timeout + 60


# ---- security defaults -----------------------------------------------------------------------------------

def test_prod_requires_the_auth_secret_and_dev_does_not(prod):
    ref = env(container(by_kind(prod, "Deployment")["mfd-service"]))["MFD_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == "mfd-auth" and ref["optional"] is False
    dev = env(container(by_kind(render_overlay("dev"), "Deployment")["mfd-service"]))
    assert dev["MFD_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True


def routed(path: str, rule_path: str, path_type: str) -> bool:
    """Whether an Ingress path rule matches a request path (Exact, or Prefix by whole path segments)."""
    if path_type == "Exact":
        return path == rule_path
    prefix = rule_path.rstrip("/")
    return path == prefix or path.startswith(prefix + "/") or prefix == ""


def test_ingress_routes_the_api_but_never_metrics(prod):
    [ingress] = by_kind(prod, "Ingress").values()
    paths = [(p["path"], p["pathType"]) for r in ingress["spec"]["rules"] for p in r["http"]["paths"]]
    for request in ("/predict", "/predict_variants", "/metadata"):
        assert any(routed(request, *p) for p in paths), request
    for request in ("/metrics", "/metrics/", "/docs", "/livez"):
        assert not any(routed(request, *p) for p in paths), request
    assert routed("/metrics", "/", "Prefix")  # the check would catch a catch-all rule


# ---- model delivery --------------------------------------------------------------------------------------

def model_version_env(doc: dict) -> tuple[str, str]:
    [c] = [c for c in pod_spec(doc)["containers"]]
    ref = env(c)["MODEL_VERSION"]["valueFrom"]["configMapKeyRef"]
    return ref["name"], ref["key"]


def test_service_and_triton_read_one_versioned_immutable_model_directory(prod):
    deployments = by_kind(prod, "Deployment")
    service, triton = deployments["mfd-service"], deployments["mfd-triton"]
    assert model_version_env(service) == model_version_env(triton)
    configmap, key = model_version_env(service)
    version = by_kind(prod, "ConfigMap")[configmap]["data"][key]
    assert re.fullmatch(r"[0-9A-Za-z][0-9A-Za-z._-]*", version)
    assert env(container(service))["MFD_MODEL_REPOSITORY"]["value"] == "/models/$(MODEL_VERSION)"
    assert "--model-repository=/models/$(MODEL_VERSION)" in container(triton)["args"]
    pvc = by_kind(prod, "PersistentVolumeClaim")["mfd-model-repository"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]  # pods on many nodes read while the loader writes
    for doc in (service, triton):
        [volume] = [v for v in pod_spec(doc)["volumes"] if "persistentVolumeClaim" in v]
        assert volume["persistentVolumeClaim"]["readOnly"] is True


def test_canary_pairs_its_service_pod_with_its_own_triton(prod, canary):
    stable_svc = by_kind(prod, "Service")["mfd-triton"]["spec"]["selector"]
    canary_svc = by_kind(canary, "Service")["mfd-triton-canary"]["spec"]["selector"]
    deployments = {**by_kind(prod, "Deployment"), **by_kind(canary, "Deployment")}
    assert set(deployments) == {"mfd-service", "mfd-triton", "mfd-service-canary", "mfd-triton-canary"}

    def selected(selector):
        return {n for n, d in deployments.items() if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()}

    assert selected(stable_svc) == {"mfd-triton"} and selected(canary_svc) == {"mfd-triton-canary"}
    user_facing = by_kind(prod, "Service")["mfd-service"]["spec"]["selector"]
    assert selected(user_facing) == {"mfd-service", "mfd-service-canary"}  # the canary gets its share of users
    config = next(d for d in canary if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("mfd-service-config"))
    assert config["data"]["MFD_TRITON_URL"].split(":")[0] == "mfd-triton-canary"
    versions = {name: by_kind(docs, "ConfigMap")[model_version_env(deployments[name])[0]]["data"]["MODEL_VERSION"]
                for docs, name in ((prod, "mfd-triton"), (canary, "mfd-triton-canary"))}
    assert versions["mfd-triton"] != versions["mfd-triton-canary"], versions
    assert not {"PersistentVolumeClaim", "Namespace", "HorizontalPodAutoscaler", "Ingress"} & {d["kind"] for d in canary}
    assert all(d["metadata"]["namespace"] == "mfd" for d in canary)


def loader_scripts(job: dict, model: Path, models: Path) -> tuple[str, str]:
    spec = pod_spec(job)
    copy = spec["initContainers"][0]["args"][0].replace("/models", str(models)).replace("/model/", f"{model}/")
    publish = spec["containers"][0]["args"][0].replace('"/models"', repr(str(models)))
    return copy, publish


def test_model_loader_publishes_a_verified_read_only_version_once(loader, tmp_path):
    [job] = by_kind(loader, "Job").values()
    model, models = tmp_path / "model", tmp_path / "models"
    shutil.copytree(MODEL_REPOSITORY, model / "0.1.0")
    models.mkdir()
    copy, publish = loader_scripts(job, model, models)
    assert copy != pod_spec(job)["initContainers"][0]["args"][0] and str(models) in publish

    def run_job() -> str:
        out = subprocess.run(["sh", "-euc", copy], capture_output=True, text=True, check=True).stdout
        done = subprocess.run([sys.executable, "-c", publish], capture_output=True, text=True, cwd=REPO_ROOT)
        assert done.returncode == 0, done.stderr
        return out + done.stdout

    first = run_job()
    assert "version 0.1.0 published" in first
    published = models / "0.1.0"
    assert (published / CARD_FILENAME).read_bytes() == (MODEL_REPOSITORY / CARD_FILENAME).read_bytes()
    assert not [p for p in models.iterdir() if p.name.startswith(".")]
    for path in [published, *published.rglob("*")]:
        assert not path.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH), path
    # Immutable: publishing again leaves the version alone.
    assert "already published" in run_job()
    # A corrupted staged file is refused: nothing is published under that version.
    shutil.copytree(MODEL_REPOSITORY, model / "0.2.0")
    [weights] = sorted((model / "0.2.0").rglob("model.pt"))[:1]
    weights.write_bytes(weights.read_bytes()[:-1] + bytes([weights.read_bytes()[-1] ^ 1]))
    subprocess.run(["sh", "-euc", copy], capture_output=True, text=True, check=True)
    refused = subprocess.run([sys.executable, "-c", publish], capture_output=True, text=True, cwd=REPO_ROOT)
    assert refused.returncode != 0 and "does not match the model card" in refused.stderr
    assert not (models / "0.2.0").exists()
    for path in models.rglob("*"):  # let pytest clean up the read-only tree
        path.chmod(path.stat().st_mode | stat.S_IWUSR)
