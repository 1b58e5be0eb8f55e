"""The service over real HTTP: a `bentoml serve` subprocess with the embedded TorchScript backend."""
from __future__ import annotations

import concurrent.futures

import httpx
import numpy as np
import pytest


from tests.fixtures.service import SEQ_LEN, matrix, random_sequences

pytestmark = pytest.mark.slow
ATOL = 2e-5


def post(service, path: str, payload, **kwargs) -> httpx.Response:
    return httpx.post(f"{service.http_url}{path}", json=payload, headers=service.headers, timeout=60, **kwargs)


def expect_error(response: httpx.Response, status: int, field: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["field"] == field, body
    assert "Traceback" not in response.text
    return body["error"]


# Never measured together: HepG2 was profiled by lab-B with ChIP-seq only.
NEVER_MEASURED = {"biosample": "HepG2", "target": "CTCF", "assay": "CUT&RUN", "lab": "lab-A"}
CONDITIONS = ["ENCFF001", {"track": "ENCFF002"}, NEVER_MEASURED, {"lab": "lab-C"}, {}]


def test_predict_matches_torchscript_in_order(mfd_service, torchscript_reference):
    sequences = random_sequences(5, seed=1)
    sequences[2] = sequences[2][:100].lower() + sequences[2][100:200].replace("A", "N") + sequences[2][200:]
    ids = [f"win{i}" for i in range(5)]
    r = post(mfd_service, "/predict", {"sequences": sequences, "sequence_ids": ids, "conditions": CONDITIONS})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [x["index"] for x in body["results"]] == list(range(5))
    assert [x["id"] for x in body["results"]] == ids
    assert [c["track"] for c in body["conditions"]] == ["ENCFF001", "ENCFF002", None, None, None]
    assert body["conditions"][2]["metadata"] == NEVER_MEASURED
    assert body["conditions"][0]["metadata"]["biosample"] == "K562"
    for result in body["results"]:
        assert [s["condition"] for s in result["scores"]] == list(range(len(CONDITIONS)))
    expected = torchscript_reference.scores(sequences, CONDITIONS)
    for key in ("logit", "logit_bio", "logit_tech", "probability"):
        np.testing.assert_allclose(matrix(body, key), expected[key], atol=ATOL, rtol=1e-4, err_msg=key)
    # Windows differ from each other, so a mix-up of rows would be caught.
    assert np.ptp(matrix(body, "logit_bio")[:, 0]) > 1e-3
    # Reordering the request reorders the answer and nothing else.
    r2 = post(mfd_service, "/predict", {"sequences": sequences[::-1], "conditions": CONDITIONS[::-1]})
    np.testing.assert_allclose(matrix(r2.json(), "logit")[::-1, ::-1], matrix(body, "logit"), atol=ATOL)


def test_track_id_and_equivalent_metadata_agree_exactly(mfd_service, torchscript_reference):
    sequences = random_sequences(3, seed=2)
    metadata = dict(torchscript_reference.tracks["ENCFF004"])
    r = post(mfd_service, "/predict", {"sequences": sequences,
                                       "conditions": ["ENCFF004", {"track": "ENCFF004"}, metadata]})
    assert r.status_code == 200, r.text
    logits = matrix(r.json(), "logit")
    assert np.array_equal(logits[:, 0], logits[:, 1]) and np.array_equal(logits[:, 0], logits[:, 2])
    assert not np.allclose(logits[:, 0], matrix(post(mfd_service, "/predict", {
        "sequences": sequences, "conditions": [{**metadata, "lab": "lab-A"}]}).json(), "logit")[:, 0])


def test_biological_only_drops_the_technical_component(mfd_service, torchscript_reference):
    sequences = random_sequences(3, seed=3)
    conditions = ["ENCFF001", NEVER_MEASURED]
    full = post(mfd_service, "/predict", {"sequences": sequences, "conditions": conditions}).json()
    bio = post(mfd_service, "/predict", {"sequences": sequences, "conditions": conditions,
                                         "biological_only": True}).json()
    assert bio["biological_only"] is True
    assert np.all(matrix(bio, "logit_tech") == 0)
    assert np.abs(matrix(full, "logit_tech")).max() > 1e-4
    np.testing.assert_allclose(matrix(bio, "logit_bio"), matrix(full, "logit_bio"), atol=1e-6)
    np.testing.assert_allclose(matrix(bio, "logit"), matrix(bio, "logit_bio") + matrix(bio, "bias"), atol=1e-6)
    expected = torchscript_reference.scores(sequences, conditions, biological_only=True)
    np.testing.assert_allclose(matrix(bio, "probability"), expected["probability"], atol=ATOL)
    # Changing only technical metadata cannot move the biological read-out.
    lab_b = post(mfd_service, "/predict", {"sequences": sequences, "biological_only": True,
                                           "conditions": [{**NEVER_MEASURED, "lab": "lab-B"}]}).json()
    np.testing.assert_allclose(matrix(lab_b, "logit_bio")[:, 0], matrix(bio, "logit_bio")[:, 1], atol=1e-6)


def test_reverse_complement_averaging(mfd_service, torchscript_reference):
    sequences = random_sequences(2, seed=4)
    r = post(mfd_service, "/predict", {"sequences": sequences, "conditions": ["ENCFF003"],
                                       "reverse_complement": True})
    expected = torchscript_reference.scores(sequences, ["ENCFF003"], reverse_complement=True)
    np.testing.assert_allclose(matrix(r.json(), "logit"), expected["logit"], atol=ATOL)
    plain = torchscript_reference.scores(sequences, ["ENCFF003"])
    assert not np.allclose(plain["logit"], expected["logit"], atol=1e-4)
    # Probabilities are the mean of the strands' sigmoids (the authors' evaluation), not the sigmoid of the mean.
    got = matrix(r.json(), "probability")
    np.testing.assert_allclose(got, expected["probability"], atol=1e-6)
    sigmoid_of_mean = 1 / (1 + np.exp(-expected["logit"]))
    assert np.abs(got - sigmoid_of_mean).max() > 1e-4


def test_intervals_read_through_the_fasta(mfd_service, service_genome, torchscript_reference):
    intervals = [{"chrom": "chr1", "start": 0, "end": SEQ_LEN},
                 {"chrom": "chr1", "start": 900, "end": 900 + SEQ_LEN, "id": "masked"},  # lower case + N run
                 {"chrom": "chr2", "start": 6000 - SEQ_LEN, "end": 6000}]
    r = post(mfd_service, "/predict", {"intervals": intervals, "conditions": ["ENCFF002", NEVER_MEASURED]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [x["id"] for x in body["results"]] == [f"chr1:0-{SEQ_LEN}", "masked", f"chr2:{6000 - SEQ_LEN}-6000"]
    assert body["results"][1]["interval"]["start"] == 900
    sequences = [service_genome.fetch(i["chrom"], i["start"], i["end"]) for i in intervals]
    expected = torchscript_reference.scores(sequences, ["ENCFF002", NEVER_MEASURED])
    np.testing.assert_allclose(matrix(body, "logit"), expected["logit"], atol=ATOL)
    same = post(mfd_service, "/predict", {"sequences": sequences, "conditions": ["ENCFF002", NEVER_MEASURED]})
    np.testing.assert_allclose(matrix(same.json(), "logit"), matrix(body, "logit"), atol=1e-6)


def variant_windows(genome, chrom: str, pos: int, ref: str, alt: str) -> tuple[str, str]:
    """Independent construction: both windows start seq_len//2 left of the variant; alt filled from the right."""
    chromosome = genome.sequences[chrom]
    start = pos - 1 - SEQ_LEN // 2
    ref_window = chromosome[start:start + SEQ_LEN]
    haplotype = chromosome[start:pos - 1] + alt + chromosome[pos - 1 + len(ref):]
    return ref_window, haplotype[:SEQ_LEN]


def test_variant_effects_snv_and_indels(mfd_service, service_genome, torchscript_reference):
    chrom = service_genome.sequences["chr1"]
    snv_pos = 15000
    snv_ref = chrom[snv_pos - 1]
    snv_alt = "A" if snv_ref != "A" else "C"
    del_pos, ins_pos = 16000, 17000
    variants = [
        {"chrom": "chr1", "pos": snv_pos, "ref": snv_ref, "alt": snv_alt, "id": "snv"},
        {"chrom": "chr1", "pos": del_pos, "ref": chrom[del_pos - 1:del_pos + 4], "alt": chrom[del_pos - 1]},
        {"chrom": "chr1", "pos": ins_pos, "ref": chrom[ins_pos - 1].lower(), "alt": chrom[ins_pos - 1] + "GATTACA"},
    ]
    conditions = ["ENCFF001", NEVER_MEASURED]
    r = post(mfd_service, "/predict_variants", {"variants": variants, "conditions": conditions,
                                                "ensemble": {"shifts": 1, "strands": 1, "geometry": "centred"}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [v["id"] for v in body["results"]] == ["snv", f"chr1:{del_pos}:{variants[1]['ref']}>{variants[1]['alt']}",
                                                   f"chr1:{ins_pos}:{chrom[ins_pos - 1]}>{variants[2]['alt']}"]
    windows = [variant_windows(service_genome, "chr1", v["pos"], v["ref"].upper(), v["alt"]) for v in variants]
    ref_scores = torchscript_reference.scores([w[0] for w in windows], conditions)
    alt_scores = torchscript_reference.scores([w[1] for w in windows], conditions)
    delta = np.array([[e["delta_logit"] for e in v["effects"]] for v in body["results"]])
    np.testing.assert_allclose(delta, alt_scores["logit"] - ref_scores["logit"], atol=5e-5)
    delta_bio = np.array([[e["delta_logit_bio"] for e in v["effects"]] for v in body["results"]])
    np.testing.assert_allclose(delta_bio, alt_scores["logit_bio"] - ref_scores["logit_bio"], atol=5e-5)
    assert np.abs(delta).max() > 0
    assert body["results"][0]["window_start"] == snv_pos - 1 - SEQ_LEN // 2


def test_variant_ref_mismatch_and_edges_are_rejected(mfd_service, service_genome):
    chrom = service_genome.sequences["chr1"]
    wrong = "A" if chrom[14999] != "A" else "C"
    error = expect_error(post(mfd_service, "/predict_variants", {
        "variants": [{"chrom": "chr1", "pos": 15000, "ref": wrong, "alt": "G"}], "conditions": ["ENCFF001"]}),
        422, "variants[0].ref")
    assert repr(chrom[14999]) in error["message"]
    expect_error(post(mfd_service, "/predict_variants", {
        "variants": [{"chrom": "chr1", "pos": 15000, "ref": chrom[14999], "alt": "T"},
                     {"chrom": "chr1", "pos": 10, "ref": chrom[9], "alt": "T"}], "conditions": ["ENCFF001"]}),
        422, "variants[1].pos")
    expect_error(post(mfd_service, "/predict_variants", {
        "variants": [{"chrom": "chrX", "pos": 15000, "ref": "A", "alt": "T"}], "conditions": ["ENCFF001"]}),
        422, "variants[0].chrom")
    expect_error(post(mfd_service, "/predict_variants", {
        "variants": [{"chrom": "chr1", "pos": 15000, "ref": chrom[14999], "alt": "X"}], "conditions": ["ENCFF001"]}),
        422, "variants[0].alt")


SEQ = random_sequences(1, seed=9)[0]
BAD_INPUTS = [
    ("letters", {"sequences": [SEQ, SEQ[:40] + "R" + SEQ[41:]], "conditions": ["ENCFF001"]}, 422, "sequences[1]",
     "position 40"),
    ("length", {"sequences": [SEQ[:-1]], "conditions": ["ENCFF001"]}, 422, "sequences[0]", str(SEQ_LEN - 1)),
    ("empty sequences", {"sequences": [], "conditions": ["ENCFF001"]}, 422, "sequences", None),
    ("empty conditions", {"sequences": [SEQ], "conditions": []}, 422, "conditions", None),
    ("unknown value", {"sequences": [SEQ], "conditions": ["ENCFF001", {"biosample": "K526"}]}, 422,
     "conditions[1].biosample", "K526"),
    ("unknown variable", {"sequences": [SEQ], "conditions": [{"tissue": "liver"}]}, 422, "conditions[0].tissue", None),
    ("unknown track", {"sequences": [SEQ], "conditions": ["ENCFF999"]}, 422, "conditions[0]", "ENCFF999"),
    ("bad year", {"sequences": [SEQ], "conditions": [{"release_year": "soon"}]}, 422,
     "conditions[0].release_year", None),
    ("condition type", {"sequences": [SEQ], "conditions": [5]}, 422, "conditions[0]", None),
    ("no windows", {"conditions": ["ENCFF001"]}, 422, "sequences", "exactly one"),
    ("ids mismatch", {"sequences": [SEQ], "sequence_ids": ["a", "b"], "conditions": ["ENCFF001"]}, 422,
     "sequence_ids", None),
    ("unknown field", {"sequences": [SEQ], "conditions": ["ENCFF001"], "biological": True}, 422, "biological", None),
    ("too many sequences", {"sequences": [SEQ] * 65, "conditions": ["ENCFF001"]}, 413, "sequences", "64"),
    ("too many conditions", {"sequences": [SEQ], "conditions": ["ENCFF001"] * 17}, 413, "conditions", "16"),
    ("interval off chromosome", {"intervals": [{"chrom": "chr2", "start": 5000, "end": 5000 + SEQ_LEN}],
                                 "conditions": ["ENCFF001"]}, 422, "intervals[0].end", "6000"),
    ("interval unknown chrom", {"intervals": [{"chrom": "chr9", "start": 0, "end": SEQ_LEN}],
                                "conditions": ["ENCFF001"]}, 422, "intervals[0].chrom", None),
    ("interval length", {"intervals": [{"chrom": "chr1", "start": 0, "end": 100}], "conditions": ["ENCFF001"]},
     422, "intervals[0].end", str(SEQ_LEN)),
    ("negative start", {"intervals": [{"chrom": "chr1", "start": -5, "end": SEQ_LEN - 5}],
                        "conditions": ["ENCFF001"]}, 422, "intervals[0].start", None),
]


@pytest.mark.parametrize("name,payload,status,field,fragment", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_a_4xx_naming_the_field(mfd_service, name, payload, status, field, fragment):
    error = expect_error(post(mfd_service, "/predict", payload), status, field)
    if fragment:
        assert fragment in error["message"], error
    if name == "unknown value":
        assert error["allowed"] == ["GM12878", "HepG2", "K562"]
    if name == "letters":
        assert error["allowed"] == list("ACGTN")
    if name == "interval unknown chrom":
        assert error["allowed"] == ["chr1", "chr2"]


def test_malformed_and_oversized_bodies(mfd_service):
    r = httpx.post(f"{mfd_service.http_url}/predict", content=b"{not json", timeout=30,
                   headers={"content-type": "application/json"})
    expect_error(r, 400, "body")
    r = httpx.post(f"{mfd_service.http_url}/predict", json=["ACGT"], timeout=30)
    expect_error(r, 422, "body")
    huge = {"sequences": [SEQ], "conditions": ["ENCFF001"], "padding": "x" * 2_100_000}  # MFD_MAX_BODY_BYTES=2e6
    error = expect_error(httpx.post(f"{mfd_service.http_url}/predict", json=huge, timeout=30), 413, "body")
    assert "2000000" in error["message"]


def test_concurrent_requests_share_batches_and_get_their_own_rows(mfd_service, torchscript_reference):
    sequences = random_sequences(12, seed=11)
    before = metric_value(mfd_service, 'mfd_windows_scored_total{backend="embedded",model="tiny-test-model"}')

    def one(i: int) -> np.ndarray:
        r = post(mfd_service, "/predict", {"sequences": sequences[i:i + 2], "conditions": ["ENCFF003"]})
        assert r.status_code == 200, r.text
        return matrix(r.json(), "logit")[:, 0]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(0, 12, 2)))
    expected = torchscript_reference.scores(sequences, ["ENCFF003"])["logit"][:, 0]
    np.testing.assert_allclose(np.concatenate(results), expected, atol=ATOL)
    assert metric_value(mfd_service, 'mfd_windows_scored_total{backend="embedded",model="tiny-test-model"}') - before == 12


def test_metadata_lists_vocabularies_and_tracks(mfd_service, torchscript_reference):
    r = httpx.get(f"{mfd_service.http_url}/metadata", timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["seq_len"] == SEQ_LEN and body["backend"] == "embedded"
    variables = {v["name"]: v for v in body["variables"]}
    assert variables["biosample"]["allowed"] == ["GM12878", "HepG2", "K562"]
    assert variables["lab"]["group"] == "technical" and variables["release_year"]["type"] == "date.year"
    assert body["bias_rule"] == "nearest_tracks_mean" and body["unspecified"] == "mean"
    assert [t["id"] for t in body["tracks"]] == list(torchscript_reference.tracks)
    assert body["genome"] == {"chr1": 30000, "chr2": 6000}
    assert body["limits"]["max_sequences"] == 64
    assert httpx.post(f"{mfd_service.http_url}/metadata", timeout=30).json() == body


def metric_value(service, series: str) -> float:
    text = httpx.get(f"{service.http_url}/metrics", timeout=30).text
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_expose_our_series_beside_bentoml(mfd_service):
    post(mfd_service, "/predict", {"sequences": [SEQ], "conditions": ["ENCFF001", "ENCFF001"]})
    post(mfd_service, "/predict", {"sequences": [SEQ], "conditions": [{"biosample": "nope"}]})
    text = httpx.get(f"{mfd_service.http_url}/metrics", timeout=30).text
    for name in ("mfd_request_latency_seconds_count{backend=\"embedded\",model=\"tiny-test-model\",route=\"predict\"}",
                 "mfd_windows_scored_total{backend=\"embedded\",model=\"tiny-test-model\"}", "mfd_trunk_latency_seconds_count",
                 "mfd_batch_size_bucket", "mfd_condition_cache_hits_total", "mfd_condition_cache_misses_total",
                 "mfd_errors_total{kind=\"invalid_argument\",model=\"tiny-test-model\",route=\"predict\"}", "mfd_inflight_requests",
                 "bentoml_service_request_duration_seconds", "bentoml_service_request_total"):
        assert name in text, name
    assert metric_value(mfd_service, 'mfd_condition_cache_hits_total{model="tiny-test-model"}') >= 1


def test_openapi_documents_the_endpoints(mfd_service):
    spec = httpx.get(f"{mfd_service.http_url}/docs.json", timeout=30).json()
    paths = spec["paths"]
    assert {"/predict", "/predict_variants", "/metadata"} <= set(paths)
    assert "get" in paths["/metadata"]
    assert {"401", "413", "422", "503"} <= set(paths["/predict"]["post"]["responses"])
    schemas = spec["components"]["schemas"]
    request_schema = next(v for k, v in schemas.items() if "PredictBody" in k or "PredictRequest" in k)
    assert {"sequences", "intervals", "conditions", "biological_only"} <= set(request_schema["properties"])


def test_no_auth_needed_when_no_token_is_configured(mfd_service):
    r = httpx.post(f"{mfd_service.http_url}/predict", json={"sequences": [SEQ], "conditions": ["ENCFF001"]},
                   headers={"authorization": "Bearer whatever"}, timeout=30)
    assert r.status_code == 200

