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
    request_latency: Any   # Histogram{route, backend}
    windows_scored: Any    # Counter{backend}
    trunk_latency: Any     # Histogram{backend}
    triton_roundtrip: Any  # Histogram{protocol, model}
    batch_size: Any        # Histogram{backend}
    cache_hits: Any        # Counter
    cache_misses: Any      # Counter
    errors: Any            # Counter{route, kind}
    inflight: Any          # Gauge{route}


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
                    ["route", "backend"], buckets=LATENCY_BUCKETS),
                windows_scored=prom.Counter(
                    "mfd_windows_scored_total", "Sequence windows run through the trunk", ["backend"]),
                trunk_latency=prom.Histogram(
                    "mfd_trunk_latency_seconds", "Time of one batched trunk call (tokens → features)",
                    ["backend"], buckets=LATENCY_BUCKETS),
                triton_roundtrip=prom.Histogram(
                    "mfd_triton_roundtrip_seconds", "Round trip of one Triton inference call",
                    ["protocol", "model"], buckets=LATENCY_BUCKETS),
                batch_size=prom.Histogram(
                    "mfd_batch_size", "Windows per trunk call after micro-batching", ["backend"],
                    buckets=BATCH_BUCKETS),
                cache_hits=prom.Counter(
                    "mfd_condition_cache_hits", "Condition weight look-ups served from the cache"),
                cache_misses=prom.Counter(
                    "mfd_condition_cache_misses", "Condition weight look-ups that ran the metadata head"),
                errors=prom.Counter(
                    "mfd_errors", "Requests refused or failed, by route and kind", ["route", "kind"]),
                inflight=prom.Gauge(
                    "mfd_inflight_requests", "Requests being processed", ["route"],
                    multiprocess_mode="livesum"),
            )
            for route in INITIAL_ROUTES:
                _metrics.inflight.labels(route)  # creates the series at 0
        return _metrics
