"""Kubernetes manifests: rendered by the real kustomize (kubectl kustomize), validated strictly.

- core objects: `kubernetes-validate --strict` (the Kubernetes OpenAPI schemas, unknown fields rejected), for the
  default Kubernetes version of the tool and for the oldest one we support;
- Prometheus Operator CRD objects (ServiceMonitor, PrometheusRule): the strict JSON Schemas vendored in k8s/schemas
  (from the PyPI package cloudcoil-models-prometheus-operator, see scripts/vendor_crd_schemas.py);
- then the wiring that no schema checks: selectors, named ports, probes, env, HPA targets and metrics, GPU
  scheduling, security contexts.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from tests.fixtures.infra import (
    ADAPTER_VALUES, OVERLAYS, REPO_ROOT, by_kind, crd_errors, is_crd_object, kubernetes_validate, render_overlay,
    run,
)

OLDEST_K8S = "1.29.0"
SERVICE_ENV = {"MFD_MODEL_REPOSITORY", "MFD_BACKEND", "MFD_TRITON_URL", "MFD_TRITON_PROTOCOL", "MFD_FASTA",
               "MFD_GRPC_PORT", "MFD_AUTH_TOKEN", "MFD_MAX_SEQUENCES", "MFD_MAX_CONDITIONS", "MFD_MAX_INFLIGHT",
               "MFD_DEVICE", "MFD_TRITON_STARTUP_TIMEOUT_S"}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {overlay: render_overlay(overlay) for overlay in OVERLAYS}


def write_docs(path: Path, docs: list[dict]) -> Path:
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("k8s_version", [None, OLDEST_K8S])
def test_core_objects_pass_kubernetes_validate_strict(rendered, overlay, k8s_version, tmp_path):
    core = [d for d in rendered[overlay] if not is_crd_object(d)]
    result = kubernetes_validate(write_docs(tmp_path / f"{overlay}.yaml", core), k8s_version)
    assert result.returncode == 0, result.stdout + result.stderr
    passed = re.findall(r"passed for resource (\S+)", result.stdout + result.stderr)
    assert len(passed) == len(core), (passed, result.stdout, result.stderr)
    assert "WARN" not in result.stdout + result.stderr


@pytest.mark.parametrize("mutation", ["typo_field", "wrong_type", "bad_hpa_metric_type"])
def test_kubernetes_validate_strict_rejects_broken_objects(rendered, mutation, tmp_path):
    """The validator is really strict: one misspelt field or wrong type in the rendered prod output fails it."""
    docs = copy.deepcopy([d for d in rendered["prod"] if not is_crd_object(d)])
    deployment = by_kind(docs, "Deployment")["mfd-service"]
    if mutation == "typo_field":
        deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["periodSecond"] = 5
    elif mutation == "wrong_type":
        deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "3000"
    else:
        by_kind(docs, "HorizontalPodAutoscaler")["mfd-service"]["spec"]["metrics"][0]["pods"]["target"]["type"] = \
            "AverageValues"
        by_kind(docs, "HorizontalPodAutoscaler")["mfd-service"]["spec"]["metrics"][0]["pods"]["extra"] = 1
    result = kubernetes_validate(write_docs(tmp_path / "broken.yaml", docs))
    assert result.returncode != 0, result.stdout


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_crd_objects_match_the_strict_prometheus_operator_schemas(rendered, overlay):
    crds = [d for d in rendered[overlay] if is_crd_object(d)]
    if overlay == "prod":
        assert sorted((d["kind"], d["metadata"]["name"]) for d in crds) == [
            ("PrometheusRule", "mfd-serve"), ("ServiceMonitor", "mfd-service"), ("ServiceMonitor", "mfd-triton")]
    else:
        assert crds == []  # dev runs on a bare cluster: no Prometheus Operator needed
    for doc in crds:
        assert crd_errors(doc) == [], doc["metadata"]["name"]


def test_crd_schemas_reject_unknown_fields_and_bad_values(rendered):
    docs = by_kind(rendered["prod"], "ServiceMonitor")
    monitor = copy.deepcopy(docs["mfd-service"])
    monitor["spec"]["endpoints"][0]["scrapeInterval"] = "15s"          # not a field (it is `interval`)
    assert any("scrapeInterval" in e for e in crd_errors(monitor))
    monitor = copy.deepcopy(docs["mfd-service"])
    monitor["spec"]["endpoints"][0]["interval"] = "15 seconds"         # not a Prometheus duration
    assert crd_errors(monitor)
    rule = copy.deepcopy(by_kind(rendered["prod"], "PrometheusRule")["mfd-serve"])
    [alerts] = [g for g in rule["spec"]["groups"] if g["name"] == "mfd-serve.alerts"]
    alerts["rules"][0]["labels"]["severity"] = 3                       # label values are strings
    assert crd_errors(rule)
    rule = copy.deepcopy(by_kind(rendered["prod"], "PrometheusRule")["mfd-serve"])
    rule["spec"]["groups"][0]["rulez"] = []
    assert crd_errors(rule)


def test_prometheusrule_and_dashboard_configmap_are_in_sync_with_monitoring_sources(rendered):
    result = run(["python3", str(REPO_ROOT / "scripts" / "sync_monitoring.py"), "--check"], cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    rule = by_kind(rendered["prod"], "PrometheusRule")["mfd-serve"]
    source = yaml.safe_load((REPO_ROOT / "monitoring/prometheus/mfd-rules.yaml").read_text())
    assert rule["spec"]["groups"] == source["groups"]
    dashboard = by_kind(rendered["prod"], "ConfigMap")["mfd-serve-grafana-dashboard"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["data"]["mfd-serve-dashboard.json"] == \
        (REPO_ROOT / "monitoring/grafana/mfd-serve-dashboard.json").read_text()


def containers(deployment: dict) -> list[dict]:
    return deployment["spec"]["template"]["spec"]["containers"]


def config_env(docs: list[dict]) -> dict[str, str]:
    [config] = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("mfd-service-config")]
    return config["data"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_select_pods_and_name_real_ports(rendered, overlay):
    docs = rendered[overlay]
    deployments = by_kind(docs, "Deployment")
    for name, svc in by_kind(docs, "Service").items():
        selector = svc["spec"]["selector"]
        matches = [d for d in deployments.values()
                   if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert len(matches) == 1, f"Service {name} selects {len(matches)} deployments"
        port_names = {p["name"] for c in containers(matches[0]) for p in c.get("ports", [])}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in port_names, (name, port)
    for name, dep in deployments.items():
        assert dep["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
        port_names = {p["name"] for c in containers(dep) for p in c.get("ports", [])}
        for c in containers(dep):
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert probe in c, (name, probe)
                assert c[probe]["httpGet"]["port"] in port_names
            assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
            assert c["resources"]["limits"]["memory"]
    for name, policy in by_kind(docs, "NetworkPolicy").items():
        [dep] = [d for d in deployments.values()
                 if policy["spec"]["podSelector"]["matchLabels"].items()
                 <= d["spec"]["template"]["metadata"]["labels"].items()]
        port_names = {p["name"] for c in containers(dep) for p in c.get("ports", [])}
        for rule in policy["spec"]["ingress"]:
            assert {p["port"] for p in rule["ports"]} <= port_names, (name, rule)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_unprivileged_with_the_model_repository_read_only(rendered, overlay):
    docs = rendered[overlay]
    [pvc] = by_kind(docs, "PersistentVolumeClaim").values()
    for name, dep in by_kind(docs, "Deployment").items():
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
        assert pod["automountServiceAccountToken"] is False
        for c in pod["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
            [mount] = [m for m in c["volumeMounts"] if m["mountPath"] == "/models"]
            assert mount["readOnly"] is True
            [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
            assert volume["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
            assert ":" in c["image"] and not c["image"].endswith(":latest"), c["image"]
    service = by_kind(docs, "Deployment")["mfd-service"]
    # The service image is the one the Dockerfile builds: uid 10001, bentoml serve on :3000.
    pod = service["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 10001
    assert containers(service)[0]["securityContext"]["readOnlyRootFilesystem"] is True
    assert "/tmp" in {m["mountPath"] for m in containers(service)[0]["volumeMounts"]}
    assert containers(service)[0]["args"][:3] == ["bentoml", "serve", "service.service:MFDService"]


def test_dev_overlay_is_one_embedded_cpu_replica_without_gpu_or_operator(rendered):
    docs = rendered["dev"]
    assert set(by_kind(docs, "Deployment")) == {"mfd-service"}
    dep = by_kind(docs, "Deployment")["mfd-service"]
    assert dep["spec"]["replicas"] == 1 and dep["metadata"]["namespace"] == "mfd-dev"
    assert containers(dep)[0]["image"] == "localhost/mfd-serve:dev"
    assert "nvidia.com/gpu" not in str(dep)
    assert not by_kind(docs, "HorizontalPodAutoscaler")
    env = config_env(docs)
    assert env["MFD_BACKEND"] == "embedded" and env["MFD_DEVICE"] == "cpu"
    assert set(env) <= SERVICE_ENV


def test_prod_overlay_runs_triton_on_gpu_nodes_behind_the_service(rendered):
    docs = rendered["prod"]
    deployments = by_kind(docs, "Deployment")
    assert set(deployments) == {"mfd-service", "mfd-triton"}
    assert all(d["metadata"]["namespace"] == "mfd" for d in docs if d["kind"] != "Namespace")
    triton = deployments["mfd-triton"]
    [c] = containers(triton)
    assert c["image"].startswith("nvcr.io/nvidia/tritonserver:")
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1 == c["resources"]["requests"]["nvidia.com/gpu"]
    assert triton["spec"]["template"]["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert any(t["key"] == "nvidia.com/gpu" for t in triton["spec"]["template"]["spec"]["tolerations"])
    args = c["args"]
    assert "--model-repository=/models/$(MODEL_VERSION)" in args
    assert {"--load-model=mfd_trunk", "--load-model=mfd_head"} <= set(args)
    assert "--metrics-config=summary_latencies=true" in args  # the dashboard's latency quantiles need it
    assert {p["containerPort"] for p in c["ports"]} == {8000, 8001, 8002}
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    shm = [v for v in triton["spec"]["template"]["spec"]["volumes"] if v["name"] == "dshm"]
    assert shm and shm[0]["emptyDir"]["medium"] == "Memory"
    # The service talks gRPC to the Triton Service's grpc port.
    env = config_env(docs)
    assert set(env) <= SERVICE_ENV
    assert env["MFD_BACKEND"] == "triton" and env["MFD_TRITON_PROTOCOL"] == "grpc"
    host, port = env["MFD_TRITON_URL"].split(":")
    triton_svc = by_kind(docs, "Service")[host]
    assert {"name": "grpc", "port": int(port)}.items() <= \
        [p for p in triton_svc["spec"]["ports"] if p["name"] == "grpc"][0].items()
    assert by_kind(docs, "PersistentVolumeClaim")["mfd-model-repository"]["spec"]["accessModes"] == ["ReadWriteMany"]
    # The service's config map is referenced under its hashed name.
    dep = deployments["mfd-service"]
    [ref] = containers(dep)[0]["envFrom"]
    assert ref["configMapRef"]["name"] in by_kind(docs, "ConfigMap")
    assert "replicas" not in dep["spec"]  # owned by the HPA


def test_hpas_target_real_deployments_with_metrics_the_adapter_serves(rendered):
    docs = rendered["prod"]
    adapter = yaml.safe_load(ADAPTER_VALUES.read_text())
    served = {rule["name"]["as"] for rule in adapter["rules"]["custom"]}
    hpas = by_kind(docs, "HorizontalPodAutoscaler")
    assert set(hpas) == {"mfd-service", "mfd-triton"}
    deployments = by_kind(docs, "Deployment")
    custom = set()
    for name, hpa in hpas.items():
        assert hpa["apiVersion"] == "autoscaling/v2"
        ref = hpa["spec"]["scaleTargetRef"]
        assert ref["kind"] == "Deployment" and ref["name"] in deployments
        assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
        for metric in hpa["spec"]["metrics"]:
            if metric["type"] == "Pods":
                custom.add(metric["pods"]["metric"]["name"])
    assert custom == {"mfd_inflight_requests", "triton_trunk_queue_time_per_request_us"}
    assert custom <= served


def test_servicemonitors_scrape_named_metrics_ports_with_the_jobs_the_rules_expect(rendered):
    docs = rendered["prod"]
    services = by_kind(docs, "Service")
    rules_text = (REPO_ROOT / "monitoring/prometheus/mfd-rules.yaml").read_text()
    for name, monitor in by_kind(docs, "ServiceMonitor").items():
        [svc] = [s for s in services.values()
                 if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]
        port_names = {p["name"] for p in svc["spec"]["ports"]}
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= port_names
        # jobLabel makes job="<app.kubernetes.io/name>", which the up{job=...} alerts use.
        job = svc["metadata"]["labels"][monitor["spec"]["jobLabel"]]
        assert f'up{{job="{job}"}}' in rules_text, job
