"""A real tritonserver (from nvidia-pytriton) serving the exported model.pt files over HTTP and gRPC."""
from __future__ import annotations

import asyncio

import functools
import re
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import InferenceServerException

from mfd_common.card import (CARD_FILENAME, HEAD_INPUT, HEAD_MODEL, HEAD_OUTPUTS, TRUNK_INPUT, TRUNK_MODEL,
                             TRUNK_OUTPUT, ModelCard, verify_checksums)
from training.repository import triton_config

TOL = dict(rtol=1e-5, atol=1e-5)
REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def card(exported_repository) -> ModelCard:
    return ModelCard.load(exported_repository / CARD_FILENAME)


@pytest.fixture(scope="module")
def embedded(exported_repository):
    """The same TorchScript files, loaded in-process: what the service's embedded backend runs."""
    trunk = torch.jit.load(str(exported_repository / TRUNK_MODEL / "1" / "model.pt")).eval()
    head = torch.jit.load(str(exported_repository / HEAD_MODEL / "1" / "model.pt")).eval()
    return trunk, head


def _tokens(n: int, seq_len: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 5, size=(n, seq_len), dtype=np.uint8)


def _local_trunk(embedded, tokens: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return embedded[0](torch.from_numpy(tokens)).numpy()


def _http_infer(client, model, name, array, datatype, outputs):
    tensor = httpclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    result = client.infer(model, [tensor], outputs=[httpclient.InferRequestedOutput(o) for o in outputs])
    return [result.as_numpy(o) for o in outputs]


def _grpc_infer(client, model, name, array, datatype, outputs):
    tensor = grpcclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    result = client.infer(model, [tensor], outputs=[grpcclient.InferRequestedOutput(o) for o in outputs])
    return [result.as_numpy(o) for o in outputs]


def test_test_repository_mirrors_production(triton_server, exported_repository):
    """Same names, dtypes, dims, batch size and dynamic batching as production; same model.pt bytes."""
    triton_config.validate_repository(triton_server.repository, backend="python")
    card = ModelCard.load(triton_server.repository / CARD_FILENAME)
    verify_checksums(card, triton_server.repository)
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    try:
        for name in (TRUNK_MODEL, HEAD_MODEL):
            served = client.get_model_config(name).config
            production = mc.ModelConfig()
            text_format.Parse((exported_repository / name / "config.pbtxt").read_text(), production)
            assert served.backend == "python"
            assert served.max_batch_size == production.max_batch_size
            assert list(served.input) == list(production.input)
            assert [(o.name, o.data_type, list(o.dims)) for o in served.output] == \
                [(o.name, o.data_type, list(o.dims)) for o in production.output]
            assert list(served.dynamic_batching.preferred_batch_size) == \
                list(production.dynamic_batching.preferred_batch_size)
            assert served.dynamic_batching.max_queue_delay_microseconds == \
                production.dynamic_batching.max_queue_delay_microseconds
    finally:
        client.close()


def test_http_and_grpc_trunk_equal_embedded_torchscript(triton_server, card, embedded):
    tokens = _tokens(6, card.seq_len, seed=1)
    expected = _local_trunk(embedded, tokens)
    assert expected.std(axis=0).mean() > 0.05  # windows differ, so a mix-up would show
    http = httpclient.InferenceServerClient(triton_server.http_url)
    grpc = grpcclient.InferenceServerClient(triton_server.grpc_url)
    try:
        assert http.is_server_live() and grpc.is_model_ready(TRUNK_MODEL)
        (via_http,) = _http_infer(http, TRUNK_MODEL, TRUNK_INPUT, tokens, "UINT8", [TRUNK_OUTPUT])
        (via_grpc,) = _grpc_infer(grpc, TRUNK_MODEL, TRUNK_INPUT, tokens, "UINT8", [TRUNK_OUTPUT])
    finally:
        http.close()
        grpc.close()
    assert via_http.dtype == np.float32 and via_http.shape == (6, card.d_features)
    np.testing.assert_allclose(via_http, expected, **TOL)
    np.testing.assert_allclose(via_grpc, expected, **TOL)


def test_http_and_grpc_head_equal_embedded_torchscript(triton_server, card, embedded):
    codec = card.metadata_codec()
    codes = codec.encode_many([t.metadata for t in card.tracks] + [{}, {"target": "CTCF", "assay": "CUT&RUN"}])
    with torch.no_grad():
        expected = [t.numpy() for t in embedded[1](torch.from_numpy(codes))]
    http = httpclient.InferenceServerClient(triton_server.http_url)
    grpc = grpcclient.InferenceServerClient(triton_server.grpc_url)
    try:
        via_http = _http_infer(http, HEAD_MODEL, HEAD_INPUT, codes, "FP32", list(HEAD_OUTPUTS))
        via_grpc = _grpc_infer(grpc, HEAD_MODEL, HEAD_INPUT, codes, "FP32", list(HEAD_OUTPUTS))
    finally:
        http.close()
        grpc.close()
    k = len(codes)
    assert [a.shape for a in via_http] == [(k, card.d_tech), (k, card.d_bio), (k, 1)]
    for got_http, got_grpc, want in zip(via_http, via_grpc, expected):
        np.testing.assert_allclose(got_http, want, **TOL)
        np.testing.assert_allclose(got_grpc, want, **TOL)


def _trunk_stats(client) -> tuple[int, int]:
    stats = client.get_inference_statistics(TRUNK_MODEL).model_stats[0]
    return int(stats.inference_count), int(stats.execution_count)


def test_dynamic_batching_merges_concurrent_requests(triton_server, card, embedded):
    n = 32
    tokens = _tokens(n, card.seq_len, seed=2)
    expected = _local_trunk(embedded, tokens)
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    done = threading.Semaphore(0)
    results: dict[int, object] = {}

    def callback(index, result, error):
        results[index] = error if error is not None else result.as_numpy(TRUNK_OUTPUT)
        done.release()

    try:
        before = _trunk_stats(client)
        for i in range(n):  # async_infer returns at once: all requests are in flight together
            tensor = grpcclient.InferInput(TRUNK_INPUT, [1, card.seq_len], "UINT8")
            tensor.set_data_from_numpy(tokens[i:i + 1])
            client.async_infer(TRUNK_MODEL, [tensor], callback=functools.partial(callback, i))
        for _ in range(n):
            assert done.acquire(timeout=60), "a request did not come back"
        # Statistics are recorded just after the responses go out: wait for them to settle.
        deadline = time.monotonic() + 20
        after = _trunk_stats(client)
        while after[0] - before[0] < n and time.monotonic() < deadline:
            time.sleep(0.05)
            after = _trunk_stats(client)
    finally:
        client.close()
    errors = [r for r in results.values() if isinstance(r, Exception)]
    assert not errors, errors[0]
    # Every response holds its own window's features, although requests were run in shared batches.
    np.testing.assert_allclose(np.concatenate([results[i] for i in range(n)]), expected, **TOL)
    inferences, executions = after[0] - before[0], after[1] - before[1]
    assert inferences == n
    assert executions < n, f"{n} concurrent requests ran in {executions} executions: no dynamic batching"


def test_wrong_dtype_and_shape_are_rejected(triton_server, card):
    http = httpclient.InferenceServerClient(triton_server.http_url)
    grpc = grpcclient.InferenceServerClient(triton_server.grpc_url)
    try:
        as_float = np.zeros((2, card.seq_len), np.float32)
        with pytest.raises(InferenceServerException, match="(?i)data.?type|datatype|FP32"):
            _http_infer(http, TRUNK_MODEL, TRUNK_INPUT, as_float, "FP32", [TRUNK_OUTPUT])
        with pytest.raises(InferenceServerException, match="(?i)data.?type|datatype|FP32"):
            _grpc_infer(grpc, TRUNK_MODEL, TRUNK_INPUT, as_float, "FP32", [TRUNK_OUTPUT])
        short = np.zeros((2, card.seq_len - 1), np.uint8)
        with pytest.raises(InferenceServerException, match="(?i)shape"):
            _http_infer(http, TRUNK_MODEL, TRUNK_INPUT, short, "UINT8", [TRUNK_OUTPUT])
        with pytest.raises(InferenceServerException, match="(?i)shape"):
            _grpc_infer(grpc, TRUNK_MODEL, TRUNK_INPUT, short, "UINT8", [TRUNK_OUTPUT])
        too_big = np.zeros((257, card.seq_len), np.uint8)  # max_batch_size is 256
        with pytest.raises(InferenceServerException, match="(?i)batch"):
            _grpc_infer(grpc, TRUNK_MODEL, TRUNK_INPUT, too_big, "UINT8", [TRUNK_OUTPUT])
        bad_codes = np.zeros((1, card.seq_len), np.uint8)
        bad_codes[0, 3] = 7  # the exported model validates token codes itself
        with pytest.raises(InferenceServerException, match="codes > 4"):
            _http_infer(http, TRUNK_MODEL, TRUNK_INPUT, bad_codes, "UINT8", [TRUNK_OUTPUT])
        with pytest.raises(InferenceServerException, match="(?i)unknown|not found|unavailable"):
            _http_infer(http, "no_such_model", TRUNK_INPUT, short, "UINT8", [TRUNK_OUTPUT])
        # The server is still healthy after the errors.
        (ok,) = _grpc_infer(grpc, TRUNK_MODEL, TRUNK_INPUT, np.zeros((1, card.seq_len), np.uint8), "UINT8",
                            [TRUNK_OUTPUT])
        assert ok.shape == (1, card.d_features) and np.isfinite(ok).all()
    finally:
        http.close()
        grpc.close()


def _metric(text: str, name: str, model: str) -> float:
    pattern = re.compile(rf'^{name}\{{[^}}]*model="{model}"[^}}]*\}} ([0-9.e+]+)$', re.M)
    values = [float(v) for v in pattern.findall(text)]
    assert values, f"{name} for {model} not in metrics"
    return sum(values)


def test_metrics_port_reports_inference_counts(triton_server, card):
    client = httpclient.InferenceServerClient(triton_server.http_url)
    try:
        _http_infer(client, TRUNK_MODEL, TRUNK_INPUT, _tokens(3, card.seq_len, seed=5), "UINT8", [TRUNK_OUTPUT])
        bad = np.full((1, card.seq_len), 9, np.uint8)  # fails inside the model: counted as a failed request
        with pytest.raises(InferenceServerException, match="codes > 4"):
            _http_infer(client, TRUNK_MODEL, TRUNK_INPUT, bad, "UINT8", [TRUNK_OUTPUT])
    finally:
        client.close()
    with urllib.request.urlopen(triton_server.metrics_url, timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    assert _metric(text, "nv_inference_request_success", TRUNK_MODEL) >= 1
    assert _metric(text, "nv_inference_count", TRUNK_MODEL) >= 3
    assert _metric(text, "nv_inference_exec_count", TRUNK_MODEL) >= 1
    assert _metric(text, "nv_inference_request_failure", TRUNK_MODEL) >= 1
    assert _metric(text, "nv_inference_queue_duration_us", TRUNK_MODEL) > 0
    assert "nv_inference_compute_infer_duration_us" in text


def test_one_tritonserver_serves_two_models_under_prefixed_names(exported_repository, tmp_path):
    """Two different MFD models (the test export and the bundled demo) in one multi-model repository; the Triton
    repository generated by mfd_common.triton_repository (symlinked model.pt) loads in the real tritonserver
    under `<name>__mfd_trunk` / `<name>__mfd_head`, and each name answers with its own model's numbers."""
    import shutil

    from mfd_common.model_store import open_store
    from mfd_common.serving import PARAM_MODEL_NAME
    from mfd_common.triton_repository import generate_triton_repository
    from tests.fixtures.triton import TritonServer, convert_to_python_backend

    models = tmp_path / "models"
    shutil.copytree(exported_repository, models / "tiny")
    shutil.copytree(REPO_ROOT / "model_repository", models / "demo")
    store = open_store(models)
    names = generate_triton_repository(store, tmp_path / "triton_repository", link="symlink")
    served = [t for parts in names.values() for t in parts.values()]
    for triton in served:
        assert (tmp_path / "triton_repository" / triton / "1" / "model.pt").is_symlink()
        convert_to_python_backend(tmp_path / "triton_repository" / triton)
    class LoadAll(TritonServer):
        """As k8s/components/multi-model runs Triton: explicit control, `--load-model=*` loads every model."""

        def command(self) -> list[str]:
            return [a for a in super().command() if not a.startswith("--load-model=")] + ["--load-model=*"]

    server = LoadAll(repository=tmp_path / "triton_repository", workdir=tmp_path / "triton", models=served)
    server.start()
    http = httpclient.InferenceServerClient(server.http_url)
    grpc = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        features = {}
        for model, parts in names.items():
            card = ModelCard.load(store.path(model) / CARD_FILENAME)
            trunk = torch.jit.load(str(store.path(model) / TRUNK_MODEL / "1" / "model.pt")).eval()
            head = torch.jit.load(str(store.path(model) / HEAD_MODEL / "1" / "model.pt")).eval()
            config = grpc.get_model_config(parts[TRUNK_MODEL]).config
            assert config.parameters[PARAM_MODEL_NAME].string_value == card.model_name
            tokens = _tokens(4, card.seq_len, seed=7)
            (got,) = _grpc_infer(grpc, parts[TRUNK_MODEL], TRUNK_INPUT, tokens, "UINT8", [TRUNK_OUTPUT])
            (got_http,) = _http_infer(http, parts[TRUNK_MODEL], TRUNK_INPUT, tokens, "UINT8", [TRUNK_OUTPUT])
            with torch.no_grad():
                want = trunk(torch.from_numpy(tokens)).numpy()
                codes = card.metadata_codec().encode_many([t.metadata for t in card.tracks[:3]])
                want_head = [t.numpy() for t in head(torch.from_numpy(codes))]
            np.testing.assert_allclose(got, want, **TOL)
            np.testing.assert_allclose(got_http, want, **TOL)
            got_head = _grpc_infer(grpc, parts[HEAD_MODEL], HEAD_INPUT, codes, "FP32", list(HEAD_OUTPUTS))
            for g, w in zip(got_head, want_head):
                np.testing.assert_allclose(g, w, **TOL)
            features[model] = (card.seq_len, card.d_features, got)
        # The two models really differ (else a mix-up of names would go unnoticed).
        assert features["tiny"][:2] != features["demo"][:2] or \
            not np.allclose(features["tiny"][2], features["demo"][2], atol=1e-3)
        with pytest.raises(InferenceServerException, match="(?i)unknown|not found|unavailable"):
            _grpc_infer(grpc, TRUNK_MODEL, TRUNK_INPUT, _tokens(1, 8, seed=1), "UINT8", [TRUNK_OUTPUT])
        # The service's engines (service.core.models) on this one Triton agree with the embedded backend, model by
        # model: each engine calls its own `<name>__mfd_*` and checks them against its own card at start-up.
        triton_scores = asyncio.run(_registry_scores(models, "triton", server.grpc_url))
        embedded_scores = asyncio.run(_registry_scores(models, "embedded", server.grpc_url))
        assert sorted(triton_scores) == sorted(embedded_scores) == ["demo", "tiny"]
        for model in names:
            np.testing.assert_allclose(triton_scores[model], embedded_scores[model], **TOL, err_msg=model)
    finally:
        http.close()
        grpc.close()
        server.stop()


async def _registry_scores(models: Path, backend: str, triton_url: str) -> dict[str, np.ndarray]:
    """Logits [3 windows, 2 tracks] of every model of `models`, through the service's ModelRegistry."""
    from service.core.models import ModelRegistry
    from service.settings import Settings

    settings = Settings(model_repository=models, backend=backend, triton_url=triton_url, triton_protocol="grpc",
                        triton_startup_timeout_s=60, torch_threads=1, fasta=None, default_model=None)
    registry = ModelRegistry(settings, environ={})
    await registry.start()
    try:
        out = {}
        for name, engine in registry.engines.items():
            conditions = engine.resolve_conditions([t.id for t in engine.card.tracks[:2]])
            out[name] = (await engine.score(_tokens(3, engine.seq_len, seed=11), conditions)).logit
        return out
    finally:
        await registry.close()
