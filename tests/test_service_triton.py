"""The service with the Triton backend (a real tritonserver), and both Triton protocols in-process."""
from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from service.backends import BackendUnavailable
from service.backends.embedded import EmbeddedBackend
from service.backends.triton import TritonBackend
from service.repository import load_repository
from service.settings import Settings

from tests.fixtures.service import SEQ_LEN, matrix, random_sequences

pytestmark = pytest.mark.slow


def test_triton_backed_service_equals_embedded(mfd_service, mfd_triton_service):
    sequences = random_sequences(6, seed=31)
    payload = {"sequences": sequences, "conditions": ["ENCFF001", {"biosample": "HepG2", "lab": "lab-C"}, {}]}
    embedded = httpx.post(f"{mfd_service.http_url}/predict", json=payload, timeout=60).json()
    triton = httpx.post(f"{mfd_triton_service.http_url}/predict", json=payload, headers=mfd_triton_service.headers,
                        timeout=60)
    assert triton.status_code == 200, triton.text
    triton = triton.json()
    assert triton["backend"] == "triton" and embedded["backend"] == "embedded"
    for key in ("logit", "logit_bio", "logit_tech", "probability"):
        np.testing.assert_allclose(matrix(triton, key), matrix(embedded, key), atol=2e-5, err_msg=key)
    assert triton["conditions"] == embedded["conditions"]


def test_triton_backed_variants_and_grpc(mfd_service, mfd_triton_service, service_genome):
    chrom = service_genome.sequences["chr1"]
    payload = {"variants": [{"chrom": "chr1", "pos": 12000, "ref": chrom[11999], "alt": "N"}],
               "conditions": ["ENCFF004"], "biological_only": True}
    a = httpx.post(f"{mfd_service.http_url}/predict_variants", json=payload, timeout=60).json()
    b = httpx.post(f"{mfd_triton_service.http_url}/predict_variants", json=payload,
                   headers=mfd_triton_service.headers, timeout=60).json()
    assert abs(a["results"][0]["effects"][0]["delta_logit"] - b["results"][0]["effects"][0]["delta_logit"]) < 2e-5
    client = grpcclient.InferenceServerClient(mfd_triton_service.grpc_url)
    try:
        seqs = np.array([s.encode() for s in random_sequences(2, seed=32)], dtype=object)
        conds = np.array([b'"ENCFF003"'], dtype=object)
        inputs = [grpcclient.InferInput("SEQUENCES", [2], "BYTES"), grpcclient.InferInput("CONDITIONS", [1], "BYTES")]
        inputs[0].set_data_from_numpy(seqs)
        inputs[1].set_data_from_numpy(conds)
        with pytest.raises(InferenceServerException) as err:
            client.infer("mfd", inputs)
        assert err.value.status() == "StatusCode.UNAUTHENTICATED"
        result = client.infer("mfd", inputs, headers=mfd_triton_service.headers).as_numpy("LOGIT")
    finally:
        client.close()
    http = httpx.post(f"{mfd_service.http_url}/predict", json={
        "sequences": [s.decode() for s in seqs], "conditions": ["ENCFF003"]}, timeout=60).json()
    np.testing.assert_allclose(result, matrix(http, "logit"), atol=2e-5)


def test_auth_required_when_token_configured(mfd_triton_service):
    url = mfd_triton_service.http_url
    payload = {"sequences": random_sequences(1, seed=33), "conditions": ["ENCFF001"]}
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "s3cret-token"}):
        r = httpx.post(f"{url}/predict", json=payload, headers=headers, timeout=30)
        assert r.status_code == 401 and r.json()["error"]["field"] == "authorization", r.text
    assert httpx.get(f"{url}/metadata", timeout=30).status_code == 401
    assert httpx.get(f"{url}/metadata", headers=mfd_triton_service.headers, timeout=30).status_code == 200
    assert httpx.get(f"{url}/readyz", timeout=30).status_code == 200  # probes stay open
    assert "mfd_errors_total" in httpx.get(f"{url}/metrics", timeout=30).text
    metrics = httpx.get(f"{url}/metrics", timeout=30).text
    assert 'mfd_errors_total{kind="unauthorized",model="",route="predict"}' in metrics
    assert 'mfd_triton_roundtrip_seconds_count{model="mfd_trunk",protocol="grpc"}' in metrics


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_triton_backend_protocols_match_embedded(protocol, triton_server, exported_repository):
    """Both tritonclient protocols, driven by the service's backend class, agree with the embedded backend."""
    repository = load_repository(exported_repository)
    base = Settings(model_repository=exported_repository)
    url = triton_server.grpc_url if protocol == "grpc" else triton_server.http_url
    triton = TritonBackend(base.model_copy(update={"backend": "triton", "triton_url": url,
                                                   "triton_protocol": protocol}), repository)
    embedded = EmbeddedBackend(base, repository)
    rng = np.random.default_rng(5)
    tokens = rng.integers(0, 5, size=(300, SEQ_LEN), dtype=np.uint8)  # > max_batch_size 256: split client-side
    codes = repository.codec.encode_many([t.metadata for t in repository.card.tracks])

    async def run():
        await triton.start()
        await embedded.start()
        try:
            results = (await triton.features(tokens), await embedded.features(tokens),
                       await triton.head(codes), await embedded.head(codes))
        finally:
            await triton.close()
            await embedded.close()
        with pytest.raises(BackendUnavailable, match="mfd_trunk"):  # a dead connection is the server's 503
            await triton.features(tokens[:2])
        return results

    f_triton, f_embedded, h_triton, h_embedded = asyncio.run(run())
    assert f_triton.shape == (300, repository.card.d_features)
    np.testing.assert_allclose(f_triton, f_embedded, atol=1e-5)
    for a, b in zip((h_triton.w_tech, h_triton.w_bio, h_triton.bias), (h_embedded.w_tech, h_embedded.w_bio,
                                                                       h_embedded.bias)):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=1e-6)


def _card_only_repository(source: Path, destination: Path, edit) -> Path:
    """A service-side repository (the card only, as on the Triton backend) whose card `edit` changed."""
    import json

    from mfd_common.card import CARD_FILENAME

    destination.mkdir(parents=True, exist_ok=True)
    card = json.loads((source / CARD_FILENAME).read_text())
    edit(card)
    (destination / CARD_FILENAME).write_text(json.dumps(card))
    return destination


@pytest.mark.parametrize("edit, problem", [
    (lambda card: card["checksums"].update({"mfd_trunk/1/model.pt": "0" * 64}),
     "mfd_trunk: parameter MFD_MODEL_SHA256 is '"),
    (lambda card: card.update(model_name="another-model"), "parameter MFD_MODEL_NAME is "),
    (lambda card: card.update(d_bio=card["d_bio"] + 1), "mfd_head: outputs are [('W_TECH__0'"),
])
def test_startup_refuses_a_card_that_triton_does_not_serve(edit, problem, triton_server, exported_repository,
                                                           tmp_path, caplog):
    """The card's sha256 / name (config parameters written at export) and its tensor shapes must be what Triton
    reports for the loaded models; otherwise start() fails with one clear log line and the backend is never ready."""
    from service.backends.triton import ModelMismatch

    repository = load_repository(_card_only_repository(exported_repository, tmp_path / "repo", edit),
                                 require_models=False)
    settings = Settings(model_repository=repository.root, backend="triton", triton_url=triton_server.grpc_url,
                        triton_protocol="grpc")
    backend = TritonBackend(settings, repository)

    async def run():
        try:
            with pytest.raises(ModelMismatch, match="Triton serves other models than the model card") as err:
                await backend.start()
            return str(err.value)
        finally:
            await backend.close()

    with caplog.at_level("ERROR", logger="service.backends.triton"):
        message = asyncio.run(run())
    assert problem in message and triton_server.grpc_url in message, message
    assert any("refusing to start" in r.getMessage() and problem in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_triton_errors_keep_their_meaning(protocol, triton_server, exported_repository):
    """A tensor Triton refuses is a 422, a model it does not serve a 503, a timeout a 504; gRPC codes alike."""
    import grpc

    from service.backends import BackendRejected, BackendTimeout
    from service.errors import as_request_error
    from service.api.grpc_server import STATUS_CODES

    repository = load_repository(exported_repository)
    url = triton_server.grpc_url if protocol == "grpc" else triton_server.http_url
    backend = TritonBackend(Settings(model_repository=exported_repository, backend="triton", triton_url=url,
                                     triton_protocol=protocol), repository)
    tokens = np.random.default_rng(7).integers(0, 5, size=(2, SEQ_LEN), dtype=np.uint8)

    async def run():
        await backend.start()
        try:
            failures = {}
            for name, call in (
                    ("short window", lambda: backend.features(tokens[:, :-1])),                   # dims
                    ("missing model", lambda: backend._infer("mfd_nope", "TOKENS__0", "UINT8", tokens,
                                                             ("FEATURES__0",)))):
                with pytest.raises(Exception) as err:
                    await call()
                failures[name] = err.value
            return failures
        finally:
            await backend.close()

    failures = asyncio.run(run())
    assert isinstance(failures["short window"], BackendRejected), repr(failures["short window"])
    assert isinstance(failures["missing model"], BackendUnavailable), repr(failures["missing model"])
    rejected, missing = (as_request_error(failures[k]) for k in ("short window", "missing model"))
    assert (rejected.status, rejected.kind, rejected.field) == (422, "invalid_argument", "backend")
    assert (missing.status, missing.kind) == (503, "backend_unavailable")
    assert STATUS_CODES[504] == grpc.StatusCode.DEADLINE_EXCEEDED
    if protocol == "grpc":  # a deadline Triton cannot meet: 504 / DEADLINE_EXCEEDED, never retried elsewhere
        slow = TritonBackend(Settings(model_repository=exported_repository, backend="triton", triton_url=url,
                                      triton_protocol="grpc", triton_timeout_s=1e-4), repository)

        async def timed_out():
            await slow.start()
            try:
                with pytest.raises(BackendTimeout) as err:
                    await slow.features(np.repeat(tokens, 64, axis=0))
                return err.value
            finally:
                await slow.close()

        error = as_request_error(asyncio.run(timed_out()))
        assert (error.status, error.kind) == (504, "backend_timeout")


def test_attribute_on_triton_ism_equals_embedded_and_gradients_are_refused(mfd_service, mfd_triton_service):
    """ISM runs on any backend (forward passes only); gradient methods need the embedded trunk: 422 naming method."""
    payload = {"sequences": random_sequences(1, seed=77), "conditions": ["ENCFF001", {"lab": "lab-C"}],
               "window": {"start": 500, "end": 506}}
    embedded = httpx.post(f"{mfd_service.http_url}/attribute", json=payload, timeout=60)
    triton = httpx.post(f"{mfd_triton_service.http_url}/attribute", json=payload,
                        headers=mfd_triton_service.headers, timeout=60)
    assert embedded.status_code == 200 and triton.status_code == 200, triton.text
    for part in ("logit", "logit_bio", "logit_tech"):
        np.testing.assert_allclose(triton.json()["results"][0]["maps"][part],
                                   embedded.json()["results"][0]["maps"][part], atol=1e-4)
    for method in ("gradient_x_input", "integrated_gradients"):
        refused = httpx.post(f"{mfd_triton_service.http_url}/attribute", json={**payload, "method": method},
                             headers=mfd_triton_service.headers, timeout=60)
        assert refused.status_code == 422 and refused.json()["error"]["field"] == "method", refused.text
        assert refused.json()["error"]["allowed"] == ["ism"]
    unauthorized = httpx.post(f"{mfd_triton_service.http_url}/attribute", json=payload, timeout=60)
    assert unauthorized.status_code == 401 and unauthorized.json()["error"]["field"] == "authorization"
