"""Overload: with MFD_MAX_INFLIGHT=1, concurrent requests beyond the first are refused with 503, cleanly."""
from __future__ import annotations

import concurrent.futures
import json
import random
import threading
import time

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.slow
SEQ = "".join(random.Random(41).choice("ACGT") for _ in range(2177))
# A slow request: 128 windows, both strands → 256 trunk rows (≈0.3-1 s on a CPU core with the tiny model).
SLOW = {"sequences": [SEQ] * 128, "conditions": ["ENCFF001", "ENCFF002"], "reverse_complement": True}


def test_overload_gives_503_and_no_partial_results(mfd_busy_service):
    url = f"{mfd_busy_service.http_url}/predict"
    payload = SLOW
    barrier = threading.Barrier(6)

    def call(_: int) -> httpx.Response:
        barrier.wait()
        return httpx.post(url, json=payload, timeout=60)

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(call, range(6)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(503) >= 1 and statuses.count(200) >= 1, statuses
    assert set(statuses) <= {200, 503}
    for r in responses:
        body = r.json()
        if r.status_code == 503:
            assert set(body) == {"error"} and body["error"]["field"] == "request"
            assert r.headers.get("retry-after") == "1"
        else:
            assert len(body["results"]) == 128 and all(len(x["scores"]) == 2 for x in body["results"])
    # Once the burst is over the server admits requests again.
    assert httpx.post(url, json=payload, timeout=60).status_code == 200
    metrics = httpx.get(f"{mfd_busy_service.http_url}/metrics", timeout=30).text
    assert 'mfd_errors_total{kind="overloaded",model="",route="predict"}' in metrics


def test_grpc_is_unavailable_while_http_holds_the_only_slot(mfd_busy_service):
    started = threading.Event()

    def slow_http() -> int:
        started.set()
        return httpx.post(f"{mfd_busy_service.http_url}/predict", json=SLOW, timeout=60).status_code

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(slow_http)
        started.wait()
        deadline = time.monotonic() + 10
        while 'mfd_inflight_requests{model="tiny-test-model",route="predict"} 1.0' not in httpx.get(
                f"{mfd_busy_service.http_url}/metrics", timeout=30).text:  # the HTTP request holds the slot
            assert time.monotonic() < deadline, "the HTTP request never became in flight"
            time.sleep(0.02)
        client = grpcclient.InferenceServerClient(mfd_busy_service.grpc_url)
        try:
            seqs = grpcclient.InferInput("SEQUENCES", [1], "BYTES")
            seqs.set_data_from_numpy(np.array([SEQ.encode()], dtype=object))
            conds = grpcclient.InferInput("CONDITIONS", [1], "BYTES")
            conds.set_data_from_numpy(np.array([json.dumps("ENCFF001").encode()], dtype=object))
            with pytest.raises(InferenceServerException) as err:
                client.infer("mfd", [seqs, conds])
        finally:
            client.close()
        assert future.result() == 200
    assert err.value.status() == "StatusCode.UNAVAILABLE" and "busy" in err.value.message()
