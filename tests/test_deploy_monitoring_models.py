"""The dashboard and the adapter with several models (docs/multi-model.md), against a real Prometheus.

Two exporters built with prometheus_client (the library the service uses) publish the series of a deployment
serving two models, `grch38` and `mm10`, with different traffic: the service's `mfd_*` series with the `model`
label the service puts on them, and Triton's `nv_*` series under its model names `<name>__mfd_trunk` /
`<name>__mfd_head`. Prometheus scrapes them with the labels the Prometheus Operator sets. Then:

- the Grafana `model` variable resolves to the two names;
- every panel query that uses `$model`, with grch38 selected, returns data, never an mm10 series, and, where it
  does not split by model, a different value than with All selected (so mm10 really is filtered out);
- the Triton HPA's adapter query is the pod's total over both trunks, between the two models' own queue times.
"""
from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Iterator

import prometheus_client as prom
import pytest
import yaml

from tests.fixtures.infra import (ADAPTER_VALUES, DASHBOARD_FILE, ScrapeTarget, adapter_query, grafana_expr_to_promql,
                                  run_prometheus)
from tests.fixtures.processes import free_ports

MODELS = {"grch38": 3, "mm10": 1}           # requests per tick: grch38 gets three times mm10's traffic
QUEUE_US = {"grch38": 10_000, "mm10": 1_000}  # Triton queue time per request
NAMESPACE = "mfd-models"
GPU_OR_5XX = re.compile(r'nv_gpu_|http_response_code=~"5\.\."')


def expand(expr: str, model: str) -> str:
    return grafana_expr_to_promql(expr, {"namespace": ".*", "model": model, "pod": ".*"})


class Exporters:
    """One registry per scrape target; a thread moves every counter on each tick so that rate() > 0."""

    def __init__(self) -> None:
        self.service, self.triton = prom.CollectorRegistry(), prom.CollectorRegistry()
        s = self.service
        self.latency = prom.Histogram("mfd_request_latency_seconds", "", ["route", "backend", "model"], registry=s)
        self.windows = prom.Counter("mfd_windows_scored", "", ["backend", "model"], registry=s)
        self.trunk = prom.Histogram("mfd_trunk_latency_seconds", "", ["backend", "model"], registry=s)
        self.roundtrip = prom.Histogram("mfd_triton_roundtrip_seconds", "", ["protocol", "model"], registry=s)
        self.batch = prom.Histogram("mfd_batch_size", "", ["backend", "model"], buckets=(1, 4, 16, 64), registry=s)
        self.hits = prom.Counter("mfd_condition_cache_hits", "", ["model"], registry=s)
        self.misses = prom.Counter("mfd_condition_cache_misses", "", ["model"], registry=s)
        self.errors = prom.Counter("mfd_errors", "", ["route", "kind", "model"], registry=s)
        self.inflight = prom.Gauge("mfd_inflight_requests", "", ["route", "model"], registry=s)
        t = self.triton
        names = ("nv_inference_count", "nv_inference_exec_count", "nv_inference_request_success",
                 "nv_inference_request_failure", "nv_inference_request_duration_us", "nv_inference_queue_duration_us",
                 "nv_inference_compute_infer_duration_us", "nv_inference_pending_request_count")
        # Triton's counters carry no _total suffix: gauges that only grow are what Prometheus sees either way.
        self.nv = {n: prom.Gauge(n, "", ["model", "version"], registry=t) for n in names}
        self.summaries = {n: prom.Gauge(n, "", ["model", "version", "quantile"], registry=t)
                          for n in ("nv_inference_request_summary_us", "nv_inference_queue_summary_us",
                                    "nv_inference_compute_infer_summary_us")}
        self.stop = threading.Event()

    def tick(self) -> None:
        for model, n in MODELS.items():
            for _ in range(n):
                self.latency.labels("predict", "triton", model).observe(0.02 * n)
                self.trunk.labels("triton", model).observe(0.01 * n)
                self.roundtrip.labels("grpc", f"{model}__mfd_trunk").observe(0.005 * n)
                self.roundtrip.labels("grpc", f"{model}__mfd_head").observe(0.001 * n)
                self.batch.labels("triton", model).observe(4 * n)
            self.windows.labels("triton", model).inc(8 * n)
            self.hits.labels(model).inc(n)
            self.misses.labels(model).inc(1)
            self.errors.labels("predict", "backend_unavailable", model).inc(n)
            self.inflight.labels("predict", model).set(2 * n)
            for part, k in (("mfd_trunk", 1), ("mfd_head", 2)):
                labels = (f"{model}__{part}", "1")
                self.nv["nv_inference_count"].labels(*labels).inc(4 * n * k)
                self.nv["nv_inference_exec_count"].labels(*labels).inc(n)
                self.nv["nv_inference_request_success"].labels(*labels).inc(n * k)
                self.nv["nv_inference_request_failure"].labels(*labels).inc(1)
                self.nv["nv_inference_request_duration_us"].labels(*labels).inc(n * k * 2 * QUEUE_US[model])
                self.nv["nv_inference_queue_duration_us"].labels(*labels).inc(n * k * QUEUE_US[model])
                self.nv["nv_inference_compute_infer_duration_us"].labels(*labels).inc(n * k * QUEUE_US[model] // 10)
                self.nv["nv_inference_pending_request_count"].labels(*labels).set(n)
                for q in ("0.5", "0.95", "0.99"):
                    for name, summary in self.summaries.items():
                        summary.labels(*labels, q).set(QUEUE_US[model] * float(q) * (2 if "request" in name else 1))

    def run(self) -> None:
        while not self.stop.wait(0.25):
            self.tick()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    exporters = Exporters()
    exporters.tick()
    service_port, triton_port = free_ports(2)
    servers = [prom.start_http_server(service_port, addr="127.0.0.1", registry=exporters.service),
               prom.start_http_server(triton_port, addr="127.0.0.1", registry=exporters.triton)]
    ticker = threading.Thread(target=exporters.run, daemon=True)
    ticker.start()

    def labels(service: str, port: str, pod: str, container: str) -> dict[str, str]:
        return {"namespace": NAMESPACE, "service": service, "endpoint": port, "pod": pod, "container": container}

    targets = [ScrapeTarget("mfd-service", f"127.0.0.1:{service_port}",
                            labels("mfd-service", "http", "mfd-service-0", "mfd-service")),
               ScrapeTarget("mfd-triton", f"127.0.0.1:{triton_port}",
                            labels("mfd-triton", "metrics", "mfd-triton-0", "tritonserver"))]
    try:
        with run_prometheus(tmp_path_factory.mktemp("prometheus_models"), targets) as server:
            server.wait_for("count(up == 1)", lambda r: r and float(r[0]["value"][1]) == 2)
            server.wait_for("min(count_over_time(up[1m])) >= 5")
            yield server
    finally:
        exporters.stop.set()
        for item in servers:
            if isinstance(item, tuple):  # prometheus_client >= 0.17 returns (server, thread)
                item[0].shutdown()


def panel_targets() -> list[tuple[str, str, str]]:
    dashboard = json.loads(DASHBOARD_FILE.read_text())
    return [(p["title"], t["refId"], t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]


def values(result: list[dict]) -> dict[tuple, float]:
    return {tuple(sorted(r["metric"].items())): float(r["value"][1]) for r in result}


def test_model_variable_lists_both_models(prometheus):
    dashboard = json.loads(DASHBOARD_FILE.read_text())
    [variable] = [v for v in dashboard["templating"]["list"] if v["name"] == "model"]
    selector, label = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"]["query"]).groups()
    status, body = prometheus.api(f"label/{label}/values", **{"match[]": expand(selector, ".*")})
    assert status == 200 and body["data"] == ["grch38", "mm10"]


def query_at(prometheus, expr: str, at: float) -> list[dict]:
    status, body = prometheus.api("query", query=expr, time=f"{at:.3f}")
    assert status == 200 and body["status"] == "success", (expr, body)
    return body["data"]["result"]


def test_every_model_panel_shows_only_the_selected_model(prometheus):
    own = {"grch38", "grch38__mfd_trunk", "grch38__mfd_head"}
    at = time.time() - 2  # one instant for both selections: the counters keep moving
    checked = 0
    for title, ref, expr in panel_targets():
        if "$model" not in expr and "${model}" not in expr:
            continue  # GPU, BentoML HTTP, targets up, the HPA signal: all models together (docs/multi-model.md)
        one = query_at(prometheus, expand(expr, "grch38"), at)
        every = query_at(prometheus, expand(expr, ".*"), at)
        if GPU_OR_5XX.search(expr):
            continue
        assert one, f"{title}/{ref}: no data for grch38"
        models = {r["metric"].get("model") for r in one}
        assert models <= own | {None}, f"{title}/{ref}: {models}"
        if None in models:  # not split by model: mm10's share must have been filtered out
            assert values(one) != values(every), f"{title}/{ref}: same value with and without mm10"
        else:
            assert {r["metric"]["model"] for r in every} - own, f"{title}/{ref}: mm10 missing under All"
        checked += 1
    assert checked >= 20, checked


def test_triton_hpa_metric_is_the_pods_total_over_both_trunks(prometheus):
    [rule] = [r for r in yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"]
              if r["name"]["as"] == "triton_trunk_queue_time_per_request_us"]
    matchers = f'namespace="{NAMESPACE}",pod=~"mfd-triton-0"'
    [total] = prometheus.result(adapter_query(rule["metricsQuery"], "nv_inference_queue_duration_us", matchers, "pod"))
    per_model = {}
    for model in MODELS:
        [r] = prometheus.result(
            f'sum(rate(nv_inference_queue_duration_us{{{matchers},model="{model}__mfd_trunk"}}[2m])) / '
            f'sum(rate(nv_inference_request_success{{{matchers},model="{model}__mfd_trunk"}}[2m]))')
        per_model[model] = float(r["value"][1])
    value = float(total["value"][1])
    # Weighted by requests (grch38 has 3x the traffic): (3 x 10000 + 1 x 1000) / 4 = 7750 us, strictly between.
    assert per_model["mm10"] * 1.5 < value < per_model["grch38"] * 0.9, (value, per_model)
