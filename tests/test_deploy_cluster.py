"""Day-two properties of the rendered cluster (kubectl kustomize output), each a finding of issue 19:

batch jobs read the versioned model directory; Triton keeps the NGC entrypoint; the stable PDBs and spread
selectors never count canary pods and the monitors label series with the track; the hostname spread survives a
cordoned node; every ReadWriteMany claim names a storage class, one component per cloud; the Triton HPA metric is
the trunk's queue time only (evaluated by promtool on series from both models).
"""
from __future__ import annotations

import re
import shutil

import pytest
import yaml

from mfd_common.card import CARD_FILENAME
from tests.fixtures.infra import (ADAPTER_VALUES, REPO_ROOT, adapter_query, by_kind, kubernetes_validate, kustomize,
                                  promtool)
from tests.fixtures.k8s import render

CLOUD_CLASSES = {"aws-efs": "efs-sc", "gcp-filestore": "standard-rwx", "azure-files": "azurefile-csi",
                 "nfs": "nfs-csi"}


@pytest.fixture(scope="module")
def batch() -> list[dict]:
    return render("k8s/components/batch")


def pod_labels(doc: dict) -> dict:
    return doc["spec"]["template"]["metadata"]["labels"]


def selects(match_labels: dict, labels: dict) -> bool:
    return match_labels.items() <= labels.items()


def container_env(doc: dict) -> dict[str, dict]:
    return {e["name"]: e for e in doc["spec"]["template"]["spec"]["containers"][0].get("env", [])}


def expand(value: str, variables: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in env values."""
    return re.sub(r"\$\((\w+)\)", lambda m: variables[m.group(1)], value)


# ---- batch ---------------------------------------------------------------------------------------------------

def test_batch_jobs_read_the_versioned_model_directory_the_stable_triton_serves(prod, batch, tmp_path):
    config = next(d for d in batch if d["kind"] == "ConfigMap")
    served = next(d for d in prod if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("mfd-model"))
    version = config["data"]["MODEL_VERSION"]
    assert version == served["data"]["MODEL_VERSION"]
    assert "MFD_MODEL_REPOSITORY" not in config["data"]
    models = tmp_path / "models"  # the volume as the loader Job publishes it: /models/<version>/
    shutil.copytree(REPO_ROOT / "model_repository", models / version)
    for job in by_kind(batch, "Job").values():
        env = container_env(job)
        ref = env["MODEL_VERSION"]["valueFrom"]["configMapKeyRef"]
        assert ref["name"] == config["metadata"]["name"] and ref["key"] == "MODEL_VERSION"
        path = expand(env["MFD_MODEL_REPOSITORY"]["value"], {"MODEL_VERSION": version})
        assert path == f"/models/{version}"
        assert (models / path.removeprefix("/models/") / CARD_FILENAME).is_file()
        assert not (models / CARD_FILENAME).exists()  # what the old MFD_MODEL_REPOSITORY=/models pointed at


# ---- Triton container ------------------------------------------------------------------------------------------

def test_triton_keeps_the_ngc_entrypoint(prod):
    [c] = by_kind(prod, "Deployment")["mfd-triton"]["spec"]["template"]["spec"]["containers"]
    assert "command" not in c  # the NGC entrypoint runs the driver check and CUDA compat setup, then execs args
    assert c["args"][0] == "tritonserver" and all(a.startswith("--") for a in c["args"][1:])


# ---- stable and canary tracks ----------------------------------------------------------------------------------

def test_stable_pdbs_and_spread_never_count_canary_pods(prod, canary):
    stable, canaries = by_kind(prod, "Deployment"), by_kind(canary, "Deployment")
    assert {pod_labels(d)["mfd-serve/track"] for d in stable.values()} == {"stable"}
    assert {pod_labels(d)["mfd-serve/track"] for d in canaries.values()} == {"canary"}
    for name, pdb in by_kind(prod, "PodDisruptionBudget").items():
        selector = pdb["spec"]["selector"]["matchLabels"]
        assert [n for n, d in stable.items() if selects(selector, pod_labels(d))] == [name]
        assert not [n for n, d in canaries.items() if selects(selector, pod_labels(d))], name
    for docs, own, other in ((stable, "stable", canaries), (canaries, "canary", stable)):
        for name, dep in docs.items():
            constraints = dep["spec"]["template"]["spec"]["topologySpreadConstraints"]
            assert constraints, name
            for constraint in constraints:
                selector = constraint["labelSelector"]["matchLabels"]
                assert selector.get("mfd-serve/track") == own and selects(selector, pod_labels(dep)), (name, own)
                assert not [n for n, d in other.items() if selects(selector, pod_labels(d))], (name, constraint)
    assert not by_kind(canary, "PodDisruptionBudget")


def test_monitors_label_every_series_with_the_pods_track(prod):
    # Prometheus turns the pod label mfd-serve/track into this meta label (non-alphanumerics become "_").
    meta = "__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", "mfd-serve/track")
    for name, monitor in by_kind(prod, "ServiceMonitor").items():
        for endpoint in monitor["spec"]["endpoints"]:
            relabel = [r for r in endpoint.get("relabelings", []) if r.get("targetLabel") == "track"]
            assert relabel and relabel[0]["sourceLabels"] == [meta] and relabel[0]["action"] == "replace", name


# ---- scheduling ---------------------------------------------------------------------------------------------

def spread_allows(constraint: dict, node: str, nodes: dict[str, set[str]], pods_on: dict[str, int],
                  tolerated: set[str]) -> bool:
    """PodTopologySpread's filter for a hostname key, as the Kubernetes docs define it: placing one more matching
    pod on `node` must keep (count(node) + 1) - min(count over eligible domains) <= maxSkew. With
    nodeTaintsPolicy: Honor, nodes with a NoSchedule taint the pod does not tolerate are not domains."""
    if constraint.get("nodeTaintsPolicy", "Ignore") == "Honor":
        eligible = [n for n, taints in nodes.items() if taints <= tolerated]
    else:
        eligible = list(nodes)
    minimum = min(pods_on.get(n, 0) for n in eligible)
    return pods_on.get(node, 0) + 1 - minimum <= constraint["maxSkew"]


def test_triton_spread_tolerates_a_cordoned_node(prod):
    spec = by_kind(prod, "Deployment")["mfd-triton"]["spec"]["template"]["spec"]
    [by_node] = [t for t in spec["topologySpreadConstraints"] if t["topologyKey"] == "kubernetes.io/hostname"]
    assert by_node["whenUnsatisfiable"] == "DoNotSchedule" and by_node["nodeTaintsPolicy"] == "Honor"
    tolerated = {t["key"] for t in spec["tolerations"]}
    # Two GPU nodes, one cordoned and drained: its replica is recreated and only gpu-b can take it.
    nodes = {"gpu-a": {"node.kubernetes.io/unschedulable", "nvidia.com/gpu"}, "gpu-b": {"nvidia.com/gpu"}}
    assert spread_allows(by_node, "gpu-b", nodes, {"gpu-b": 1}, tolerated)
    assert not spread_allows({**by_node, "nodeTaintsPolicy": "Ignore"}, "gpu-b", nodes, {"gpu-b": 1}, tolerated)
    # Both nodes schedulable: the hard spread still keeps the replicas apart.
    nodes["gpu-a"] = {"nvidia.com/gpu"}
    assert not spread_allows(by_node, "gpu-b", nodes, {"gpu-b": 1}, tolerated)
    assert spread_allows(by_node, "gpu-a", nodes, {"gpu-b": 1}, tolerated)


# ---- storage ----------------------------------------------------------------------------------------------

def test_every_read_write_many_claim_names_a_storage_class(prod, batch):
    claims = [*by_kind(prod, "PersistentVolumeClaim").values(), *by_kind(batch, "PersistentVolumeClaim").values()]
    assert {c["metadata"]["name"] for c in claims} == {"mfd-model-repository", "mfd-batch-data"}
    for claim in claims:
        assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
        assert claim["spec"]["storageClassName"] in CLOUD_CLASSES.values(), claim["metadata"]["name"]


@pytest.mark.parametrize("cloud", sorted(CLOUD_CLASSES))
def test_each_cloud_component_names_its_read_write_many_class(cloud, tmp_path):
    overlay = tmp_path / "overlay"
    shutil.copytree(REPO_ROOT / "k8s", overlay / "k8s")  # kustomize wants relative paths under one root
    prod = overlay / "k8s/overlays/prod/kustomization.yaml"
    prod.write_text(prod.read_text().replace("../../components/storage/nfs", f"../../components/storage/{cloud}"))
    docs = [d for d in yaml.safe_load_all(kustomize(overlay / "k8s/overlays/prod")) if d]
    [claim] = by_kind(docs, "PersistentVolumeClaim").values()
    assert claim["spec"]["storageClassName"] == CLOUD_CLASSES[cloud]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    path = tmp_path / "claim.yaml"
    path.write_text(yaml.safe_dump(claim))
    result = kubernetes_validate(path)
    assert result.returncode == 0, result.stdout + result.stderr


# ---- autoscaling signal ----------------------------------------------------------------------------------------

def test_triton_hpa_metric_is_the_trunk_queue_only(prod, tmp_path):
    """The adapter's query for the Triton HPA, evaluated by promtool on a pod serving two models (the single-model
    names and a second model's `<name>__` prefixed ones, docs/multi-model.md) whose CPU head models have long queues
    and many requests: the answer is the mean queue time of the pod's trunk requests alone, over both trunks."""
    [hpa] = [h for h in by_kind(prod, "HorizontalPodAutoscaler").values()
             if h["spec"]["scaleTargetRef"]["name"] == "mfd-triton"]
    [metric] = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    [rule] = [r for r in yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"] if r["name"]["as"] == metric]
    assert 'model=~"(.+__)?mfd_trunk"' in rule["seriesQuery"]
    query = adapter_query(rule["metricsQuery"], "nv_inference_queue_duration_us", 'namespace="mfd",pod="triton-a"',
                          "pod")
    labels = 'job="mfd-triton", namespace="mfd", pod="triton-a", version="1"'
    # Per minute: trunk 60 requests queued 30 ms each (1.8e6 us), the second model's trunk 60 queued 10 ms each
    # (0.6e6 us): 2.4e6 us over 120 requests = 20 ms. Heads: 6000 requests queued 1 ms each, not counted.
    series = {'nv_inference_queue_duration_us{%s, model="mfd_trunk"}' % labels: "0+1800000x10",
              'nv_inference_request_success{%s, model="mfd_trunk"}' % labels: "0+60x10",
              'nv_inference_queue_duration_us{%s, model="grch38__mfd_trunk"}' % labels: "0+600000x10",
              'nv_inference_request_success{%s, model="grch38__mfd_trunk"}' % labels: "0+60x10",
              'nv_inference_queue_duration_us{%s, model="mfd_head"}' % labels: "0+6000000x10",
              'nv_inference_request_success{%s, model="mfd_head"}' % labels: "0+6000x10",
              'nv_inference_queue_duration_us{%s, model="grch38__mfd_head"}' % labels: "0+6000000x10",
              'nv_inference_request_success{%s, model="grch38__mfd_head"}' % labels: "0+6000x10"}
    (tmp_path / "empty.rules.yaml").write_text("groups: []\n")
    tests = {"rule_files": ["empty.rules.yaml"], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [{"series": k, "values": v} for k, v in series.items()],
        "promql_expr_test": [{"expr": query, "eval_time": "8m",
                              "exp_samples": [{"labels": '{pod="triton-a"}', "value": 20000}]}]}]}
    (tmp_path / "adapter.test.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    result = promtool("test", "rules", str(tmp_path / "adapter.test.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
