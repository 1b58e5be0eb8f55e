"""Several models served by one service (issue 20, docs/multi-model.md): the bundled demo model and a model imported
from a reference-format checkpoint (other channels, vocabularies and track ids), each with its own genome, in one
folder of models written by `training.import_reference --name`.

Each model's answers over REST, KServe v2 gRPC and the typed `mfd.v1` RPC equal those of a single-model service of
that model (≤ 1e-6); concurrent requests to both models interleaved get their own model's answers (no cross-talk);
an unknown model is a 404 / NOT_FOUND naming the served models; a variant that does not fit the chosen model's
genome is refused. Three real `bentoml serve` processes: the two-model service and one single-model service per
model.
"""
from __future__ import annotations

import concurrent.futures
import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from mfd_common.card import ModelCard
from tests.fixtures.reference_checkpoint import build_reference_checkpoint
from tests.fixtures.service import REPO_ROOT, GenomeFixture, ServiceProcess, matrix, write_genome

pytestmark = pytest.mark.slow

DEMO, THEIRS = "demo", "their-model"
PARITY = 1e-6
#: Under concurrent load a window shares its trunk call with others: the batch size changes float32 summation order
#: in the convolutions (measured up to 6e-6 in the logits). Cross-talk (another model's or window's features or
#: weights) would move the logits by O(0.1): the spread across this test's windows is checked to be far above this.
CONCURRENT_ATOL = 1e-4
QUANTITIES = ("probability", "logit", "logit_bio", "logit_tech")


@dataclass
class Deployment:
    multi: ServiceProcess
    single: dict[str, ServiceProcess]
    genomes: dict[str, GenomeFixture]
    cards: dict[str, ModelCard]
    models: Path


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    from training.import_reference import main as import_main

    root = tmp_path_factory.mktemp("multimodel")
    models = root / "models"
    shutil.copytree(REPO_ROOT / "model_repository", models / DEMO)
    reference = build_reference_checkpoint(root / "reference")
    assert import_main([str(reference.checkpoint), "--mapping", str(reference.mapping), "--out", str(models),
                        "--name", THEIRS]) == 0
    cards = {name: ModelCard.load(models / name / "model_card.json") for name in (DEMO, THEIRS)}
    # Two assemblies: the same contig name with other bases (REF checks differ), and a contig only one has.
    genomes = {DEMO: write_genome(root / "demo.fa", {"chr1": 12000}, seed=11),
               THEIRS: write_genome(root / "theirs.fa", {"chr1": 12000, "chr7": 8000}, seed=12)}
    fasta_env = {"MFD_FASTA_DEMO": str(genomes[DEMO].path), "MFD_FASTA_THEIR_MODEL": str(genomes[THEIRS].path)}
    common = {"MFD_BACKEND": "embedded", "MFD_FASTA": None, "MFD_DEFAULT_MODEL": None}
    multi = ServiceProcess(repository=models, workdir=root / "svc_multi",
                           env={**common, **fasta_env, "MFD_DEFAULT_MODEL": DEMO})
    single = {name: ServiceProcess(repository=models / name, workdir=root / f"svc_{name}",
                                   env={**common, "MFD_FASTA": str(genomes[name].path)}) for name in (DEMO, THEIRS)}
    services = [multi, *single.values()]
    try:
        with concurrent.futures.ThreadPoolExecutor(3) as pool:  # start the three servers side by side
            list(pool.map(lambda s: s.start(), services))
        yield Deployment(multi, single, genomes, cards, models)
    finally:
        for service in services:
            service.stop()


def metadata(service: ServiceProcess, model: str | None = None) -> dict:
    response = httpx.get(f"{service.http_url}/metadata", params={"model": model} if model else None, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def conditions_for(card: ModelCard) -> list:
    """A trained track, another given as {"track": …}, and a metadata combination from the model's vocabularies."""
    codec = card.metadata_codec()
    category = next(v for v in codec.variables if v.type == "category")
    return [card.tracks[0].id, {"track": card.tracks[-1].id}, {category.name: category.vocabulary[-1]}]


def random_windows(n: int, length: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice("ACGT") for _ in range(length)) for _ in range(n)]


def predict(service: ServiceProcess, body: dict) -> dict:
    response = httpx.post(f"{service.http_url}/predict", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def assert_same_scores(got: dict, expected: dict, atol: float = PARITY) -> None:
    for key in QUANTITIES:
        np.testing.assert_allclose(matrix(got, key), matrix(expected, key), rtol=0, atol=atol, err_msg=key)


# ---- discovery ------------------------------------------------------------------------------------------------

def test_models_lists_both_models_and_the_two_models_differ(deployment: Deployment):
    listing = httpx.get(f"{deployment.multi.http_url}/models", timeout=30).json()
    assert listing["default"] == DEMO
    by_name = {m["name"]: m for m in listing["models"]}
    assert sorted(by_name) == [DEMO, THEIRS]
    assert by_name[DEMO]["default"] and not by_name[THEIRS]["default"]
    for name, card in deployment.cards.items():
        entry = by_name[name]
        assert (entry["seq_len"], entry["d_tech"], entry["tracks"]) == (card.seq_len, card.d_tech, len(card.tracks))
        assert entry["kserve_version"] == "1" and len(entry["version"]) == 12
        assert entry["genome"]["fasta"] == deployment.genomes[name].path.name
    assert by_name[DEMO]["genome"]["variable"] == "MFD_FASTA_DEMO"
    assert by_name[THEIRS]["genome"]["variable"] == "MFD_FASTA_THEIR_MODEL"
    assert by_name[DEMO]["version"] != by_name[THEIRS]["version"]
    # Really two different models: widths, vocabularies and track ids all differ.
    demo, theirs = deployment.cards[DEMO], deployment.cards[THEIRS]
    assert demo.d_tech != theirs.d_tech
    assert not {t.id for t in demo.tracks} & {t.id for t in theirs.tracks}
    assert {v.name for v in demo.metadata_codec().variables} != {v.name for v in theirs.metadata_codec().variables}


def test_metadata_per_model_equals_the_single_model_services(deployment: Deployment):
    for name in (DEMO, THEIRS):
        multi, single = metadata(deployment.multi, name), metadata(deployment.single[name])
        assert multi["model"] == name
        for key in ("seq_len", "d_tech", "d_bio", "variables", "tracks", "genome", "bias_rule"):
            assert multi[key] == single[key], (name, key)
    assert metadata(deployment.multi)["model"] == DEMO  # no ?model=: the default


def test_unknown_model_is_a_404_naming_the_served_models(deployment: Deployment):
    url = deployment.multi.http_url
    sequence = random_windows(1, deployment.cards[DEMO].seq_len, 1)[0]
    for response in (httpx.post(f"{url}/predict", json={"model": "hg19", "sequences": [sequence],
                                                         "conditions": ["DEMO001"]}, timeout=30),
                     httpx.post(f"{url}/predict_variants", json={"model": "hg19", "variants": [
                         {"chrom": "chr1", "pos": 5000, "ref": "A", "alt": "G"}], "conditions": ["DEMO001"]},
                         timeout=30),
                     httpx.get(f"{url}/metadata", params={"model": "hg19"}, timeout=30)):
        assert response.status_code == 404, response.text
        error = response.json()["error"]
        assert error["field"] == "model" and "hg19" in error["message"]
        assert error["allowed"] == [DEMO, THEIRS]
    bad = httpx.post(f"{url}/predict", json={"model": 3, "sequences": [sequence], "conditions": ["DEMO001"]},
                     timeout=30)
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "model"
    # A track of the other model is refused by this one, naming the field (vocabularies are per model).
    other = httpx.post(f"{url}/predict", json={"model": DEMO, "sequences": [sequence],
                                               "conditions": [deployment.cards[THEIRS].tracks[0].id]}, timeout=30)
    assert other.status_code == 422 and other.json()["error"]["field"] == "conditions[0]"


# ---- parity with single-model services ----------------------------------------------------------------------

def test_rest_predict_of_each_model_equals_its_single_model_service(deployment: Deployment):
    for seed, name in enumerate((DEMO, THEIRS)):
        card = deployment.cards[name]
        body = {"sequences": random_windows(3, card.seq_len, seed), "conditions": conditions_for(card)}
        for options in ({}, {"biological_only": True, "reverse_complement": True}):
            got = predict(deployment.multi, {**body, **options, "model": name})
            expected = predict(deployment.single[name], {**body, **options})
            assert got["model"] == name and expected["model"] == card.model_name
            assert_same_scores(got, expected)
    # Without "model": the default (demo) answers, as its single-model service does.
    card = deployment.cards[DEMO]
    body = {"sequences": random_windows(2, card.seq_len, 9), "conditions": conditions_for(card)}
    assert_same_scores(predict(deployment.multi, body), predict(deployment.single[DEMO], body))


def test_intervals_and_variants_read_each_models_own_genome(deployment: Deployment):
    for name in (DEMO, THEIRS):
        card, genome = deployment.cards[name], deployment.genomes[name]
        intervals = {"intervals": [{"chrom": "chr1", "start": 3000, "end": 3000 + card.seq_len}],
                     "conditions": conditions_for(card)}
        assert_same_scores(predict(deployment.multi, {**intervals, "model": name}),
                           predict(deployment.single[name], intervals))
        ref = genome.fetch("chr1", 6000, 6001)
        variants = {"variants": [{"chrom": "chr1", "pos": 6001, "ref": ref, "alt": "T" if ref != "T" else "C"}],
                    "conditions": conditions_for(card), "ensemble": {"shifts": 2, "strands": 2}}
        got = httpx.post(f"{deployment.multi.http_url}/predict_variants", json={**variants, "model": name},
                         timeout=60)
        expected = httpx.post(f"{deployment.single[name].http_url}/predict_variants", json=variants, timeout=60)
        assert got.status_code == expected.status_code == 200, (got.text, expected.text)
        g, e = got.json()["results"][0]["effects"], expected.json()["results"][0]["effects"]
        np.testing.assert_allclose([x["delta_logit"] for x in g], [x["delta_logit"] for x in e], atol=PARITY)


def test_a_variant_that_does_not_fit_the_chosen_models_genome_is_refused(deployment: Deployment):
    url = deployment.multi.http_url
    demo_genome, their_genome = deployment.genomes[DEMO], deployment.genomes[THEIRS]
    conditions = {DEMO: ["DEMO001"], THEIRS: [deployment.cards[THEIRS].tracks[0].id]}
    # chr7 exists only in their assembly.
    response = httpx.post(f"{url}/predict_variants", json={"model": DEMO, "conditions": conditions[DEMO],
                          "variants": [{"chrom": "chr7", "pos": 4000, "ref": their_genome.fetch("chr7", 3999, 4000),
                                        "alt": "N"}]}, timeout=30)
    assert response.status_code == 422 and response.json()["error"]["field"].startswith("variants[0]"), response.text
    # A REF taken from one assembly where the other has another base: refused by the model whose genome differs.
    pos = next(p for p in range(5000, 6000) if demo_genome.fetch("chr1", p - 1, p) != their_genome.fetch("chr1", p - 1, p))
    variant = {"chrom": "chr1", "pos": pos, "ref": their_genome.fetch("chr1", pos - 1, pos), "alt": "N"}
    ok = httpx.post(f"{url}/predict_variants", json={"model": THEIRS, "conditions": conditions[THEIRS],
                                                      "variants": [variant]}, timeout=30)
    refused = httpx.post(f"{url}/predict_variants", json={"model": DEMO, "conditions": conditions[DEMO],
                                                           "variants": [variant]}, timeout=30)
    assert ok.status_code == 200, ok.text
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["field"].startswith("variants[0]") and "ref" in refused.text.lower()


def kserve_infer(url: str, model: str, sequences: list[str], conditions: list, version: str = "") -> dict:
    client = grpcclient.InferenceServerClient(url)
    try:
        windows = grpcclient.InferInput("SEQUENCES", [len(sequences)], "BYTES")
        windows.set_data_from_numpy(np.array([s.encode() for s in sequences], dtype=object))
        encoded = [c if isinstance(c, str) else json.dumps(c) for c in conditions]
        conds = grpcclient.InferInput("CONDITIONS", [len(encoded)], "BYTES")
        conds.set_data_from_numpy(np.array([c.encode() for c in encoded], dtype=object))
        result = client.infer(model, [windows, conds], model_version=version)
        return {name: result.as_numpy(name) for name in ("PROBABILITY", "LOGIT", "LOGIT_BIO", "LOGIT_TECH")}
    finally:
        client.close()


def test_kserve_grpc_routes_by_model_name_and_version(deployment: Deployment):
    multi = deployment.multi.grpc_url
    for seed, name in enumerate((DEMO, THEIRS)):
        card = deployment.cards[name]
        sequences, conditions = random_windows(3, card.seq_len, 40 + seed), conditions_for(card)
        expected = kserve_infer(deployment.single[name].grpc_url, "mfd", sequences, conditions)
        for got in (kserve_infer(multi, name, sequences, conditions),
                    kserve_infer(multi, name, sequences, conditions, version="1")):
            for key, value in expected.items():
                np.testing.assert_allclose(got[key], value, rtol=0, atol=PARITY, err_msg=f"{name} {key}")
    # `mfd`, the historical name, is the default model.
    card = deployment.cards[DEMO]
    sequences, conditions = random_windows(2, card.seq_len, 50), conditions_for(card)
    np.testing.assert_allclose(kserve_infer(multi, "mfd", sequences, conditions)["LOGIT"],
                               kserve_infer(multi, DEMO, sequences, conditions)["LOGIT"], rtol=0, atol=0)
    client = grpcclient.InferenceServerClient(multi)
    try:
        assert client.is_model_ready(DEMO) and client.is_model_ready(THEIRS) and client.is_model_ready("mfd")
        assert not client.is_model_ready("hg19") and not client.is_model_ready(THEIRS, "7")
        meta = client.get_model_metadata(THEIRS, as_json=True)
        assert meta["name"] == THEIRS and meta["inputs"][2]["shape"][1] == str(deployment.cards[THEIRS].seq_len)
        with pytest.raises(InferenceServerException) as err:
            client.get_model_metadata("hg19")
        assert err.value.status() == "StatusCode.NOT_FOUND"
    finally:
        client.close()
    for model, version in (("hg19", ""), (THEIRS, "7")):
        with pytest.raises(InferenceServerException) as err:
            kserve_infer(multi, model, sequences, conditions, version=version)
        assert err.value.status() == "StatusCode.NOT_FOUND", err.value
        assert DEMO in err.value.message() if model == "hg19" else "7" in err.value.message()


def typed_predict(url: str, request) -> object:
    from service.api.proto import mfd_v1_pb2_grpc

    with grpc.insecure_channel(url) as channel:
        return mfd_v1_pb2_grpc.PredictorStub(channel).Predict(request, timeout=60)


def typed_logits(response) -> np.ndarray:
    return np.array([[s.logit for s in r.scores] for r in response.results])


def test_typed_rpc_model_field_routes_and_matches_single_model_services(deployment: Deployment):
    from google.protobuf import struct_pb2

    from service.api.proto import mfd_v1_pb2 as pb

    def request(card: ModelCard, seed: int, model: str = ""):
        conditions = []
        for c in conditions_for(card):
            if isinstance(c, str):
                conditions.append(pb.Condition(track=c))
            elif "track" in c:
                conditions.append(pb.Condition(track=c["track"]))
            else:
                struct = struct_pb2.Struct()
                struct.update(c)
                conditions.append(pb.Condition(metadata=struct))
        return pb.PredictRequest(sequences=random_windows(2, card.seq_len, seed), conditions=conditions,
                                 model=model)

    for seed, name in enumerate((DEMO, THEIRS)):
        card = deployment.cards[name]
        got = typed_predict(deployment.multi.grpc_url, request(card, 60 + seed, name))
        expected = typed_predict(deployment.single[name].grpc_url, request(card, 60 + seed))
        assert got.model == name
        np.testing.assert_allclose(typed_logits(got), typed_logits(expected), rtol=0, atol=PARITY)
    with pytest.raises(grpc.RpcError) as err:
        typed_predict(deployment.multi.grpc_url, request(deployment.cards[DEMO], 1, "hg19"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND and THEIRS in err.value.details()


# ---- concurrency and metrics --------------------------------------------------------------------------------

def test_concurrent_mixed_load_has_no_cross_talk(deployment: Deployment):
    """Both models interleaved from 8 threads: every answer is its own model's, as its single-model service gives
    it (the two models' windows have the same length, so a shared batch would go unnoticed by the shapes)."""
    jobs = []
    for i in range(24):
        name = (DEMO, THEIRS)[i % 2]
        card = deployment.cards[name]
        jobs.append((name, {"sequences": random_windows(1 + i % 3, card.seq_len, 100 + i),
                            "conditions": conditions_for(card)}))
    expected = [predict(deployment.single[name], body) for name, body in jobs]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda job: predict(deployment.multi, {**job[1], "model": job[0]}), jobs))
    for (name, _), g, e in zip(jobs, got, expected):
        assert g["model"] == name
        assert_same_scores(g, e, CONCURRENT_ATOL)
    for name in (DEMO, THEIRS):  # the tolerance tells windows (and models) apart by orders of magnitude
        first = np.concatenate([matrix(e, "logit")[:, 0] for (n, _), e in zip(jobs, expected) if n == name])
        assert np.ptp(first) > 100 * CONCURRENT_ATOL, (name, first)


def test_metrics_carry_the_model_label(deployment: Deployment):
    text = httpx.get(f"{deployment.multi.http_url}/metrics", timeout=30).text
    for name in (DEMO, THEIRS):
        assert f'mfd_windows_scored_total{{backend="embedded",model="{name}"}}' in text
        memory = [line for line in text.splitlines() if line.startswith(f'mfd_model_memory_bytes{{model="{name}"}}')]
        assert memory and float(memory[0].split()[-1]) > 0, memory
        assert f'mfd_condition_cache_misses_total{{model="{name}"}}' in text
    # Requests naming an unknown model are counted with model="", never under the client's string.
    assert 'kind="not_found",model="",route="predict"' in text
    assert "hg19" not in text


def test_docs_examples_name_their_model_and_run(deployment: Deployment):
    """With several models the docs page's worked examples carry `"model"` (the default model's here) and run."""
    spec = httpx.get(f"{deployment.multi.http_url}/docs.json", timeout=30).json()
    assert "model" in spec["components"]["schemas"]["PredictRequest"]["properties"]
    assert "/models" in spec["paths"]
    for path in ("/predict", "/predict_variants"):
        examples = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["examples"]
        assert examples, path
        for example in examples.values():
            assert example["value"]["model"] == DEMO
            response = httpx.post(f"{deployment.multi.http_url}{path}", json=example["value"], timeout=60)
            assert response.status_code == 200, (path, response.text)


def test_each_model_gets_its_own_fasta_and_mfd_fasta_only_the_default(tmp_path: Path):
    """MFD_FASTA_<NAME> names a model's genome; MFD_FASTA is the default model's only, so a model without its own
    variable never silently reads another assembly; two names sharing one variable are refused."""
    from mfd_common.model_store import open_store
    from service.core.models import model_fasta, open_models
    from service.settings import Settings

    for name in ("grch38", "mm10", "mm10-v2"):
        (tmp_path / "models" / name).mkdir(parents=True)
        (tmp_path / "models" / name / "model_card.json").write_text('{"model_name": "x"}')
    settings = Settings(model_repository=tmp_path / "models", fasta=tmp_path / "hg.fa", default_model="grch38")
    store = open_store(settings.model_repository, settings.default_model)
    env = {"MFD_FASTA_MM10": str(tmp_path / "mm10.fa")}
    assert model_fasta(settings, store, "grch38", env) == tmp_path / "hg.fa"
    assert model_fasta(settings, store, "mm10", env) == tmp_path / "mm10.fa"
    assert model_fasta(settings, store, "mm10-v2", env) is None
    assert model_fasta(settings, store, "grch38", {"MFD_FASTA_GRCH38": "/g.fa"}) == Path("/g.fa")
    (tmp_path / "models" / "mm10.v2").mkdir()
    (tmp_path / "models" / "mm10.v2" / "model_card.json").write_text('{"model_name": "x"}')
    with pytest.raises(ValueError, match="share the variable MFD_FASTA_MM10_V2"):
        open_models(settings)


def test_attribute_and_the_python_client_route_by_model(deployment: Deployment):
    """POST /attribute takes "model" like /predict (each model's own window and vocabulary), and
    `mfd.Client(url, model=…)` sends it on every call, answering as that model's single-model service."""
    import mfd

    for seed, name in enumerate((DEMO, THEIRS)):
        card = deployment.cards[name]
        sequences = random_windows(1, card.seq_len, 40 + seed)
        body = {"sequences": sequences, "conditions": conditions_for(card)[:1], "parts": ["logit_bio"],
                "window": {"start": 100, "end": 110}}
        got = httpx.post(f"{deployment.multi.http_url}/attribute", json={**body, "model": name}, timeout=120)
        expected = httpx.post(f"{deployment.single[name].http_url}/attribute", json=body, timeout=120)
        assert got.status_code == expected.status_code == 200, got.text[:300]
        np.testing.assert_allclose(np.array(got.json()["results"][0]["maps"]["logit_bio"]),
                                   np.array(expected.json()["results"][0]["maps"]["logit_bio"]), atol=PARITY)
        with mfd.Client(deployment.multi.http_url, model=name) as client:
            frame = client.predict(sequences, conditions=conditions_for(card))
            assert client.metadata()["model"] == name
        reference = predict(deployment.single[name], {"sequences": sequences, "conditions": conditions_for(card)})
        np.testing.assert_allclose(frame["logit"].to_numpy().reshape(matrix(reference, "logit").shape),
                                   matrix(reference, "logit"), rtol=0, atol=PARITY)
    with mfd.Client(deployment.multi.http_url) as client:
        assert set(client.models()["name"]) == {DEMO, THEIRS}
