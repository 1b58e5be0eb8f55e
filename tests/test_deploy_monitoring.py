"""Prometheus rules, the Grafana dashboard and the prometheus-adapter rules, checked with real tools:

- `promtool check rules` and `promtool test rules` (unit tests that make every alert fire, and a mutated copy of the
  rules that must make them fail);
- the dashboard's structure, and every PromQL expression in it parsed by Prometheus's own parser (promtool);
- a real Prometheus (Debian package) scraping real servers started here: the service with the embedded backend,
  the service with the Triton backend, and a real tritonserver started with the production metrics flags
  (k8s/components/triton: latency summaries). Each target carries the labels the Prometheus Operator sets
  (job, namespace, pod, service, container and `endpoint=<port name>`), so a scraped label that clashes with them
  shows up as `exported_*` and fails the tests. The rules are loaded into that Prometheus and must evaluate
  without error and produce series; every dashboard query and every adapter query must run and, except for the
  GPU-only ones, return data.
"""
from __future__ import annotations

import concurrent.futures
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import yaml

from tests.fixtures.infra import (
    ADAPTER_VALUES, DASHBOARD_FILE, RULES_FILE, RULES_TESTS, PrometheusServer, ScrapeTarget, adapter_query,
    by_kind, check_exprs_parse, fast_rules_copy, grafana_expr_to_promql, prometheus_relabel_configs, promtool,
    render_overlay, run_prometheus,
)
from tests.fixtures.service import random_sequences

NAMESPACE = "mfd-test"


def rules_doc() -> dict:
    return yaml.safe_load(RULES_FILE.read_text())


def all_rules() -> list[dict]:
    return [rule for group in rules_doc()["groups"] for rule in group["rules"]]


def dashboard() -> dict:
    return json.loads(DASHBOARD_FILE.read_text())


def dashboard_targets() -> list[tuple[str, str, str]]:
    """(panel title, refId, expr) for every query of every panel."""
    out = []
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], target["refId"], target["expr"]))
    return out


def expand(expr: str) -> str:
    return grafana_expr_to_promql(expr, {"namespace": ".*", "model": ".*", "pod": ".*"})


# ---- rules: promtool ------------------------------------------------------------------------------------------

def test_promtool_check_rules():
    result = promtool("check", "rules", str(RULES_FILE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(all_rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass():
    result = promtool("test", "rules", str(RULES_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_unit_tested_firing():
    tests = yaml.safe_load(RULES_TESTS.read_text())["tests"]
    fired = {case["alertname"] for t in tests for case in t.get("alert_rule_test", []) if case["exp_alerts"]}
    alerts = {rule["alert"] for rule in all_rules() if "alert" in rule}
    assert alerts <= fired, f"alerts without a firing test: {sorted(alerts - fired)}"
    for rule in all_rules():
        if "alert" in rule:
            assert rule["labels"]["severity"] in ("critical", "warning")
            assert {"summary", "description"} <= set(rule["annotations"])


@pytest.mark.parametrize("alert, old, new", [
    ("TritonHighQueueTime", "> 50000", "> 500000"),
    ("MFDHighServerErrorRatio", "> 0.05", "> 0.5"),
    ("MFDHighServerErrorRatio", "(mfd:request_rate:5m) > 0.1", "(mfd:request_rate:5m) > 0"),  # traffic guard
    ("TritonInferenceFailures", "triton:request_rate:5m > 0.1", "triton:request_rate:5m > 0"),
    ("MFDLoadShedding", "> 0.02", "> 0.2"),
    ("MFDServiceDown", "for: 2m", "for: 20m"),
    ("TritonAbsent", "for: 5m", "for: 30m"),
    ("MFDContainerOOMKilled", 'reason="OOMKilled"', 'reason="Error"'),
    ("TritonGPUSaturated", "> 0.9", "> 0.99"),
    ("TritonGPUMemoryHigh", "> 0.92", "> 0.99"),
])
def test_unit_tests_catch_a_changed_alert(tmp_path, alert, old, new):
    """promtool's unit tests really evaluate the alerts: a changed threshold or `for` makes them fail."""
    doc = rules_doc()
    text = yaml.safe_dump(doc, sort_keys=False, width=1000)
    [rule] = [r for g in doc["groups"] for r in g["rules"] if r.get("alert") == alert]
    key, _, value = new.partition(" ")
    if key == "for:":
        rule["for"] = value
    else:
        assert rule["expr"].count(old) == 1, rule["expr"]
        rule["expr"] = rule["expr"].replace(old, new)
    assert yaml.safe_dump(doc, sort_keys=False, width=1000) != text
    (tmp_path / "mfd-rules.yaml").write_text(yaml.safe_dump(doc, sort_keys=False, width=1000))
    tests = yaml.safe_load(RULES_TESTS.read_text())
    tests["rule_files"] = [str(tmp_path / "mfd-rules.yaml")]
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(tests, sort_keys=False, width=1000))
    result = promtool("test", "rules", str(tmp_path / "t.yaml"))
    assert result.returncode != 0 and alert in result.stdout + result.stderr, result.stdout


# ---- Grafana dashboard: structure and offline parse ----------------------------------------------------------

def test_dashboard_structure():
    dash = dashboard()
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    used_vars = set()
    for panel in dash["panels"]:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24 and grid["h"] > 0
        if panel["type"] == "row":
            continue
        assert panel["type"] in ("timeseries", "stat", "gauge", "bargauge", "table", "heatmap")
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        assert panel["fieldConfig"]["defaults"]["unit"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            assert target["expr"].strip()
            used_vars |= set(re.findall(r"\$(\w+)", target["expr"])) - {"__rate_interval"}
    assert used_vars <= set(variables), used_vars - set(variables)
    # No two panels overlap on the grid.
    cells = set()
    for panel in dash["panels"]:
        g = panel["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"panel {panel['title']} overlaps another at {(x, y)}"
                cells.add((x, y))


def test_dashboard_covers_gpu_latency_queue_utilisation_service_and_errors():
    exprs = " ".join(e for _, _, e in dashboard_targets())
    for needle in ("nv_inference_request_summary_us", 'quantile=~"0.5|0.95|0.99"', "nv_inference_queue_duration_us",
                   "nv_inference_compute_infer", "nv_gpu_utilization", "nv_gpu_memory_used_bytes",
                   "nv_inference_count", "nv_inference_request_failure", "nv_inference_pending_request_count",
                   "mfd_request_latency_seconds_bucket", "mfd_windows_scored_total", "mfd_errors_total",
                   "mfd_inflight_requests", "mfd_triton_roundtrip_seconds_bucket", "mfd_trunk_latency_seconds_bucket",
                   "mfd_batch_size", "mfd_condition_cache_hits_total", "bentoml_service_request"):
        assert needle in exprs, needle
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}, sum by (le, model, route, backend) (rate(mfd_request_latency_seconds_bucket" \
            in exprs


def test_gpu_latency_means_divide_by_successful_requests_and_batch_size_has_a_panel():
    """Triton adds queue/compute/request durations once per successful request; executions give the batch size."""
    exprs = [e for _, _, e in dashboard_targets()] + [r["expr"] for r in all_rules() if "record" in r]
    durations = [e for e in exprs if "_duration_us" in e]
    assert len(durations) >= 6
    for expr in durations:
        assert "rate(nv_inference_request_success" in expr and "exec_count" not in expr, expr
    batch = [e for t, _, e in dashboard_targets() if "batch size" in t.lower()]
    assert any(re.search(r"rate\(nv_inference_count\{.*\) / clamp_min\(.*rate\(nv_inference_exec_count\{", e)
               for e in batch), batch


def test_our_series_never_use_labels_the_prometheus_operator_sets():
    """The Operator sets job, namespace, pod, service, container, instance and endpoint=<port> on every target;
    a series of ours with one of those labels would be renamed exported_<label> and the rules would miss it.
    (The real-Prometheus test below checks the scraped series themselves.)"""
    text = RULES_FILE.read_text() + DASHBOARD_FILE.read_text() + ADAPTER_VALUES.read_text()
    assert "endpoint" not in re.sub(r"#.*", "", RULES_FILE.read_text())
    assert "{{endpoint}}" not in text and "by (endpoint" not in text and "le, endpoint" not in text


def test_every_dashboard_and_adapter_query_parses(tmp_path):
    exprs = {f"{title}/{ref}": expand(expr) for title, ref, expr in dashboard_targets()}
    for i, rule in enumerate(yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"]):
        exprs[f"adapter{i}"] = adapter_query(rule["metricsQuery"], rule["name"]["as"], 'namespace="x",pod=~"a|b"',
                                             "pod")
    result = check_exprs_parse(exprs, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout
    # And the parser is not lenient: a broken query fails the same check.
    broken = check_exprs_parse({"x": "sum by (model (rate(nv_inference_count[5m]))"}, tmp_path)
    assert broken.returncode != 0


# ---- a real Prometheus scraping real servers ------------------------------------------------------------------

@dataclass
class Stack:
    prometheus: PrometheusServer
    pods: dict[str, list[str]]  # job -> pod label values
    traffic_end: float
    before_traffic: dict[str, list[dict]]  # query -> result, taken once all targets were up and before any request
    repository: Path  # the model repository both services serve


def production_triton_metrics_flags() -> list[str]:
    """The --metrics-config flags of the Triton Deployment in the rendered prod overlay."""
    [triton] = [d for d in render_overlay("prod") if d["kind"] == "Deployment" and d["metadata"]["name"] == "mfd-triton"]
    flags = [a for a in triton["spec"]["template"]["spec"]["containers"][0]["args"] if a.startswith("--metrics-config")]
    assert flags
    return flags


def operator_labels(service: str, port: str, pod: str, container: str) -> dict[str, str]:
    """The target labels a ServiceMonitor gives a pod (besides job and instance): what our series must survive."""
    return {"namespace": NAMESPACE, "service": service, "endpoint": port, "pod": pod, "container": container}


def send_traffic(service) -> None:
    url = f"{service.http_url}/predict"
    windows = random_sequences(6, seed=3)
    payloads = [{"sequences": windows[i % 5:i % 5 + 2], "conditions": ["ENCFF001", {"lab": "lab-B"}]}
                for i in range(12)]
    with httpx.Client(headers=service.headers, timeout=60) as client:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            statuses = list(pool.map(lambda p: client.post(url, json=p).status_code, payloads))
        assert statuses == [200] * len(payloads)
        bad = client.post(url, json={"sequences": windows[:1], "conditions": [{"biosample": "nope"}]})
        assert bad.status_code == 422
        assert client.get(f"{service.http_url}/metadata").status_code == 200


@pytest.fixture(scope="module")
def stack(exported_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Prometheus scraping an embedded service, a Triton-backed service and Triton, all started here: the series
    must hold only this module's traffic (the session's services also serve other modules' bad-input tests)."""
    from tests.fixtures.service import run_service
    from tests.fixtures.triton import TritonServer, build_python_backend_repository

    flags = production_triton_metrics_flags()

    class ProductionMetricsTriton(TritonServer):
        def command(self) -> list[str]:
            return super().command() + flags

    workdir = tmp_path_factory.mktemp("monitoring_stack")
    repository = build_python_backend_repository(exported_repository, workdir / "triton_repository")
    triton = ProductionMetricsTriton(repository=repository, workdir=workdir / "triton",
                                     source_repository=exported_repository)
    triton.start()
    try:
        with run_service(exported_repository, workdir / "svc_triton",
                         env={"MFD_BACKEND": "triton", "MFD_TRITON_URL": triton.grpc_url,
                              "MFD_TRITON_PROTOCOL": "grpc"}) as triton_service, \
                run_service(exported_repository, workdir / "svc_embedded") as mfd_service:
            relabel = {name: prometheus_relabel_configs(monitor["spec"]["endpoints"][0].get("metricRelabelings", []))
                       for name, monitor in by_kind(render_overlay("prod"), "ServiceMonitor").items()}
            targets = [
                ScrapeTarget("mfd-service", triton_service.http_url.removeprefix("http://"),
                             operator_labels("mfd-service", "http", "mfd-service-triton", "mfd-service"),
                             metric_relabel_configs=relabel["mfd-service"]),
                ScrapeTarget("mfd-service", mfd_service.http_url.removeprefix("http://"),
                             operator_labels("mfd-service", "http", "mfd-service-embedded", "mfd-service")),
                ScrapeTarget("mfd-triton", f"{triton.host}:{triton.metrics_port}",
                             operator_labels("mfd-triton", "metrics", "mfd-triton-0", "tritonserver"),
                             metric_relabel_configs=relabel["mfd-triton"]),
            ]
            rules = fast_rules_copy(RULES_FILE, workdir / "rules.yaml")
            with run_prometheus(workdir / "prometheus", targets, [rules]) as prometheus:
                # Two waves of traffic with a scrape between them and two after, so counters really increase
                # between samples (rate() > 0) and every series has several samples.
                prometheus.wait_for("count(up == 1)", lambda r: r and float(r[0]["value"][1]) == 3)
                before = {q: prometheus.result(q) for q in (
                    "sum by (pod) (mfd_inflight_requests)", BEFORE_TRAFFIC_ADAPTER_QUERY)}
                for _wave in range(2):
                    send_traffic(triton_service)
                    send_traffic(mfd_service)
                    end = time.time()
                    prometheus.wait_for(f"min(timestamp(up)) > {end + 2.5}")
                prometheus.wait_for("min(count_over_time(up[1m])) >= 4")

                def evaluated(_):
                    status, body = prometheus.api("rules")
                    return all(g["lastEvaluation"] > time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(end + 2))
                               for g in body["data"]["groups"])
                prometheus.wait_for("vector(1)", evaluated)
                yield Stack(prometheus, {"mfd-service": ["mfd-service-triton", "mfd-service-embedded"],
                                         "mfd-triton": ["mfd-triton-0"]}, end, before, exported_repository)
    finally:
        triton.stop()


#: What the service HPA asks prometheus-adapter for (its metricsQuery expanded for two pods).
BEFORE_TRAFFIC_ADAPTER_QUERY = ('sum by (pod) (mfd_inflight_requests{namespace="%s",'
                                'pod=~"mfd-service-triton|mfd-service-embedded"})' % NAMESPACE)

#: Queries that can only return data on a GPU (Triton runs on CPU here, --allow-gpu-metrics=false) or on a failure.
MAY_BE_EMPTY = re.compile(r'nv_gpu_|http_response_code=~"5\.\."')


def test_hpa_metric_exists_from_the_first_scrape_before_any_request(stack):
    for query in ("sum by (pod) (mfd_inflight_requests)", BEFORE_TRAFFIC_ADAPTER_QUERY):
        result = stack.before_traffic[query]
        assert sorted((r["metric"]["pod"], r["value"][1]) for r in result) == [
            ("mfd-service-embedded", "0"), ("mfd-service-triton", "0")], result


def test_series_keep_their_labels_under_operator_target_labels(stack):
    """With the Operator's endpoint=<port> target label, our per-route label arrives intact and nothing is
    renamed exported_*."""
    exported = stack.prometheus.result('count by (__name__) ({__name__=~"mfd_.+|nv_.+|bentoml_.+"})')
    assert len(exported) > 20
    for name in {r["metric"]["__name__"] for r in exported}:
        status, body = stack.prometheus.api("series", **{"match[]": name})
        for series in body["data"]:
            assert not [k for k in series if k.startswith("exported_")], series
    routes = stack.prometheus.result('sum by (route, endpoint, service) (mfd_request_latency_seconds_count)')
    assert {(r["metric"]["route"], r["metric"]["endpoint"], r["metric"]["service"]) for r in routes} >= {
        ("predict", "http", "mfd-service")}, routes
    assert stack.prometheus.result('mfd:request_rate:5m{route="predict", namespace="%s"}' % NAMESPACE)
    # BentoML's own series call the HTTP path `endpoint` too; the ServiceMonitor's metricRelabelings keep it as `path`.
    paths = stack.prometheus.result('sum by (path) (bentoml_service_request_total{endpoint="http"})')
    assert "/predict" in {r["metric"].get("path") for r in paths}, paths


def test_prometheus_scrapes_all_targets(stack):
    up = stack.prometheus.result("up")
    assert sorted((r["metric"]["job"], r["metric"]["pod"], r["value"][1]) for r in up) == [
        ("mfd-service", "mfd-service-embedded", "1"), ("mfd-service", "mfd-service-triton", "1"),
        ("mfd-triton", "mfd-triton-0", "1")]
    names = set(stack.prometheus.api("label/__name__/values")[1]["data"])
    for name in ("mfd_request_latency_seconds_bucket", "mfd_windows_scored_total", "mfd_trunk_latency_seconds_bucket",
                 "mfd_triton_roundtrip_seconds_bucket", "mfd_batch_size_bucket", "mfd_condition_cache_hits_total",
                 "mfd_condition_cache_misses_total", "mfd_errors_total", "mfd_inflight_requests",
                 "bentoml_service_request_duration_seconds_bucket", "bentoml_service_request_total",
                 "nv_inference_request_success", "nv_inference_request_failure", "nv_inference_count",
                 "nv_inference_exec_count", "nv_inference_request_duration_us", "nv_inference_queue_duration_us",
                 "nv_inference_compute_infer_duration_us", "nv_inference_pending_request_count",
                 "nv_inference_request_summary_us", "nv_inference_queue_summary_us",
                 "nv_inference_compute_infer_summary_us"):
        assert name in names, name


def test_rules_evaluate_cleanly_and_record_series(stack):
    status, body = stack.prometheus.api("rules")
    assert status == 200
    rules = [r for g in body["data"]["groups"] for r in g["rules"]]
    assert len(rules) == len(all_rules())
    bad = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert bad == []
    empty_ok = {"mfd:server_error_ratio:5m",     # only 4xx errors were sent; they are not server errors
                "mfd:overload_ratio:5m",         # nothing was shed
                "dcgm:gpu_util:percent", "dcgm:fb_used:mib", "dcgm:fb_free:mib",  # no GPU, no dcgm-exporter
                "mfd:gpu_utilization:ratio", "mfd:gpu_utilization:avg", "mfd:gpu_memory_used:ratio"}
    for rule in all_rules():
        if "record" in rule and rule["record"] not in empty_ok:
            result = stack.prometheus.result(rule["record"])
            assert result, f"recording rule {rule['record']} produced no series"
    # Values that follow from the traffic: 2 waves of 12 requests of 2 windows to each backend.
    scored = {r["metric"]["backend"]: float(r["value"][1])
              for r in stack.prometheus.result("sum by (backend) (mfd_windows_scored_total)")}
    assert scored == {"embedded": 48.0, "triton": 48.0}
    rates = stack.prometheus.result('mfd:windows_scored:rate5m')
    assert {r["metric"]["backend"] for r in rates} == {"embedded", "triton"}
    assert all(float(r["value"][1]) > 0 for r in rates)
    p99 = stack.prometheus.result('mfd:request_latency_seconds:p99_5m{route="predict"}')
    assert len(p99) == 2 and all(0 < float(r["value"][1]) < 60 for r in p99), p99
    # Triton's summary quantiles (production flags) are positive and ordered.
    quantiles = stack.prometheus.result('triton:request_latency_us:quantile{model="mfd_trunk"}')
    assert {r["metric"]["quantile"] for r in quantiles} == {"0.5", "0.95", "0.99"}
    q = {r["metric"]["quantile"]: float(r["value"][1]) for r in quantiles}
    assert 0 < q["0.5"] <= q["0.95"] <= q["0.99"], q
    # Dynamic batching happened or not, the batch size is at least one window per execution.
    [batch] = stack.prometheus.result('triton:batch_size:avg_5m{model="mfd_trunk"}')
    assert float(batch["value"][1]) >= 1
    errors = stack.prometheus.result("mfd:errors:rate5m")
    assert {r["metric"]["kind"] for r in errors} == {"invalid_argument"}
    firing = stack.prometheus.result('ALERTS{alertstate="firing"}')
    assert firing == [], firing


def test_every_dashboard_query_runs_and_returns_data(stack):
    empty = []
    for title, ref, expr in dashboard_targets():
        query = expand(expr)
        status, body = stack.prometheus.query(query)
        assert status == 200 and body["status"] == "success", (title, ref, query, body)
        if not body["data"]["result"] and not MAY_BE_EMPTY.search(expr):
            empty.append(f"{title}/{ref}: {query}")
    assert empty == []


def test_dashboard_variables_resolve(stack):
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"]["query"])
        selector, label = match.groups()
        status, body = stack.prometheus.api(f"label/{label}/values", **{"match[]": expand(selector)})
        if label == "model":
            # The MFD model names the services report: one model here, named as the service routes it
            # (mfd_common.model_store). The service creates mfd_windows_scored_total at 0 for every model at start-up
            # (docs/multi-model.md), so the list holds exactly that name, and never "" (requests of no known model).
            from mfd_common.model_store import single_model_name
            assert status == 200 and body["data"] == [single_model_name(stack.repository)], body
            assert variable["includeAll"] and variable["allValue"] == ".*"
            continue
        assert status == 200 and body["data"], (variable["name"], body)
        if label in ("namespace", "pod"):
            # `up` exists from the first scrape: the variables work on a fresh deployment that served nothing yet.
            assert selector.startswith("up{"), selector
        if label == "namespace":
            assert body["data"] == [NAMESPACE]
        if label == "pod":
            assert sorted(body["data"]) == sorted(p for pods in stack.pods.values() for p in pods)


def test_adapter_rules_serve_the_hpa_metrics(stack):
    hpas = by_kind(render_overlay("prod"), "HorizontalPodAutoscaler")
    wanted = {m["pods"]["metric"]["name"] for h in hpas.values() for m in h["spec"]["metrics"] if m["type"] == "Pods"}
    served = set()
    for rule in yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"]:
        status, body = stack.prometheus.api("series", **{"match[]": rule["seriesQuery"]})
        assert status == 200 and body["data"], rule["seriesQuery"]
        [series_name] = {s["__name__"] for s in body["data"]}
        assert re.search(rule["name"]["matches"], series_name)
        pods = sorted({s["pod"] for s in body["data"]})
        query = adapter_query(rule["metricsQuery"], series_name,
                              f'namespace="{NAMESPACE}",pod=~"{"|".join(pods)}"', "pod")
        result = stack.prometheus.result(query)
        assert sorted(r["metric"]["pod"] for r in result) == pods, (query, result)
        assert all(float(r["value"][1]) >= 0 for r in result)
        served.add(rule["name"]["as"])
    assert wanted <= served
