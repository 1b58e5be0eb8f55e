"""Service layer (shared): our Prometheus series, served on BentoML's `/metrics` beside its `bentoml_service_*` series.

BentoML runs prometheus-client in multiprocess mode and sets PROMETHEUS_MULTIPROC_DIR in each worker *after*
importing the service module; prometheus-client picks its value store when it is first imported. So this
module imports prometheus_client lazily and builds the metrics on first use (from the service constructor),
never at import time — otherwise our series would live in a private registry that `/metrics` never reads.
The names are a contract with the dashboards and alert rules in monitoring/; do not rename them.

The per-route label is `route`, never `endpoint`: the Prometheus Operator sets `endpoint=<port name>` on every
scraped target, which would rename ours to `exported_endpoint` and break every by-route rule and panel.
The in-flight gauge is created at zero for the scoring routes when the metrics are built, so a pod that has not
served yet still reports `mfd_inflight_requests` and the HPA has data from its first minute.

Several models (docs/multi-model.md): every `mfd_*` series carries `model`, the MFD model name the request was
routed to; a request whose model is not known (unparsable, shed before parsing, naming an unknown model) carries
`model=""`, never the client's string, so clients cannot create series. `create_model_series` makes each served
model's series at start-up.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
#: Routes whose in-flight gauge exists from start-up (HTTP scoring APIs and the gRPC inference methods).
INITIAL_ROUTES = ("predict", "predict_variants", "grpc_model_infer", "grpc_predict")


@dataclass
class Metrics:
    request_latency: Any   # Histogram{route, backend, model}
    windows_scored: Any    # Counter{backend, model}
    trunk_latency: Any     # Histogram{backend, model}
    triton_roundtrip: Any  # Histogram{protocol, model}: model = the Triton model name (`<name>__mfd_trunk`)
    batch_size: Any        # Histogram{backend, model}
    cache_hits: Any        # Counter{model}
    cache_misses: Any      # Counter{model}
    errors: Any            # Counter{route, kind, model}
    inflight: Any          # Gauge{route, model}
    model_memory: Any      # Gauge{model}: parameter + buffer bytes of an embedded model


def create_model_series(metrics: "Metrics", model: str, backend: str) -> None:
    """Create `model`'s series at zero at start-up, so the dashboard's model list (values of
    mfd_windows_scored_total) and the per-model in-flight gauges exist before any request."""
    metrics.windows_scored.labels(backend, model)
    for route in INITIAL_ROUTES:
        metrics.inflight.labels(route, model)


_lock = threading.Lock()
_metrics: Metrics | None = None


def get_metrics() -> Metrics:
    """The process-wide metric objects (created on first call, after BentoML configured multiprocess mode)."""
    global _metrics
    with _lock:
        if _metrics is None:
            import prometheus_client as prom  # deferred on purpose, see module docstring

            _metrics = Metrics(
                request_latency=prom.Histogram(
                    "mfd_request_latency_seconds", "End-to-end request latency inside the service",
                    ["route", "backend", "model"], buckets=LATENCY_BUCKETS),
                windows_scored=prom.Counter(
                    "mfd_windows_scored_total", "Sequence windows run through the trunk", ["backend", "model"]),
                trunk_latency=prom.Histogram(
                    "mfd_trunk_latency_seconds", "Time of one batched trunk call (tokens → features)",
                    ["backend", "model"], buckets=LATENCY_BUCKETS),
                triton_roundtrip=prom.Histogram(
                    "mfd_triton_roundtrip_seconds", "Round trip of one Triton inference call",
                    ["protocol", "model"], buckets=LATENCY_BUCKETS),
                batch_size=prom.Histogram(
                    "mfd_batch_size", "Windows per trunk call after micro-batching", ["backend", "model"],
                    buckets=BATCH_BUCKETS),
                cache_hits=prom.Counter(
                    "mfd_condition_cache_hits", "Condition weight look-ups served from the cache", ["model"]),
                cache_misses=prom.Counter(
                    "mfd_condition_cache_misses", "Condition weight look-ups that ran the metadata head", ["model"]),
                errors=prom.Counter(
                    "mfd_errors", "Requests refused or failed, by route and kind", ["route", "kind", "model"]),
                inflight=prom.Gauge(
                    "mfd_inflight_requests", "Requests being processed", ["route", "model"],
                    multiprocess_mode="livesum"),
                model_memory=prom.Gauge(
                    "mfd_model_memory_bytes", "Parameter and buffer bytes of a model loaded in this worker "
                    "(embedded backend)", ["model"], multiprocess_mode="livesum"),
            )
            for route in INITIAL_ROUTES:
                _metrics.inflight.labels(route, "")  # creates the series at 0 (requests not routed yet)
        return _metrics
