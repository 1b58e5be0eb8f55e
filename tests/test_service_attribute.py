"""POST /attribute over real HTTP (the session's `mfd_service`: embedded backend, ≤ 64 windows, ≤ 16 conditions).

ISM is checked against an independent computation done through /predict: mutate the sequence string by hand,
score every mutant with /predict, subtract. The gradient methods are checked for what they promise over the wire:
logit = logit_bio + logit_tech (the bias has no gradient), and IG's reported completeness gap.
"""
from __future__ import annotations

import httpx
import numpy as np
import pytest

from tests.fixtures.service import SEQ_LEN, matrix, random_sequences

pytestmark = pytest.mark.slow
CONDITIONS = ["ENCFF001", {"biosample": "HepG2", "target": "CTCF", "lab": "lab-A"}]
PARTS = ("logit", "logit_bio", "logit_tech")


def post(service, path: str, payload) -> httpx.Response:
    return httpx.post(f"{service.http_url}{path}", json=payload, headers=service.headers, timeout=120)


def ok(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def expect_error(response: httpx.Response, field: str, status: int = 422) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["field"] == field, body
    assert "Traceback" not in response.text
    return body["error"]


def maps(body: dict, n: int = 0) -> dict[str, np.ndarray]:
    return {part: np.array(m) for part, m in body["results"][n]["maps"].items()}


@pytest.mark.parametrize("reverse_complement", [False, True])
def test_ism_equals_mutating_the_sequence_and_calling_predict(mfd_service, reverse_complement):
    sequence = random_sequences(1, seed=71)[0]
    start, end = 1080, 1087
    sequence = sequence[:1083] + "N" + sequence[1084:]   # an N inside the window: all four bases are scored there
    body = ok(post(mfd_service, "/attribute", {"sequences": [sequence], "conditions": CONDITIONS,
                                                "window": {"start": start, "end": end},
                                                "reverse_complement": reverse_complement}))
    assert body["method"] == "ism" and body["parts"] == list(PARTS) and body["bases"] == "ACGT"
    assert body["window"] == {"start": start, "end": end} and body["results"][0]["sequence"] == sequence[start:end]
    assert body["forward_passes"] == (1 + 4 * 7 - 6) * (2 if reverse_complement else 1)
    got = maps(body)
    assert all(m.shape == (len(CONDITIONS), end - start, 4) for m in got.values())

    # independently: every single-base mutant of the window, scored by /predict
    mutants, where = [sequence], []
    for p in range(start, end):
        for b, base in enumerate("ACGT"):
            if sequence[p] != base:
                mutants.append(sequence[:p] + base + sequence[p + 1:])
                where.append((p - start, b))
    scored = ok(post(mfd_service, "/predict", {"sequences": mutants, "conditions": CONDITIONS,
                                               "reverse_complement": reverse_complement}))
    for part in PARTS:
        values = matrix(scored, part)                                    # [1 + mutants, K]
        want = np.zeros((len(CONDITIONS), end - start, 4))
        for (p, b), row in zip(where, values[1:]):
            want[:, p, b] = row - values[0]
        np.testing.assert_allclose(got[part], want, atol=1e-4, rtol=0, err_msg=part)
        np.testing.assert_allclose(body["results"][0]["score"][part], values[0], atol=1e-4, err_msg=part)
    assert np.abs(got["logit"]).max() > 1e-3          # a real signal, not zeros
    assert np.count_nonzero(got["logit"][:, 3]) == 4 * len(CONDITIONS)   # the N position: 4 real substitutions
    own = [(p, "ACGT".index(sequence[start + p])) for p in range(end - start) if sequence[start + p] != "N"]
    assert all((got["logit"][:, p, b] == 0).all() for p, b in own)


@pytest.mark.parametrize("method,extra", [("gradient_x_input", {}), ("integrated_gradients", {"steps": 8})])
def test_gradient_maps_are_additive_over_http(mfd_service, method, extra):
    sequences = random_sequences(2, seed=72)
    body = ok(post(mfd_service, "/attribute", {"sequences": sequences, "conditions": CONDITIONS, "method": method,
                                                "sequence_ids": ["a", "b"], **extra}))
    assert body["method"] == method and [r["id"] for r in body["results"]] == ["a", "b"]
    for n in range(2):
        m = maps(body, n)
        assert m["logit"].shape == (len(CONDITIONS), SEQ_LEN, 4)
        scale = np.abs(m["logit"]).max()
        assert scale > 1e-3
        np.testing.assert_allclose(m["logit"], m["logit_bio"] + m["logit_tech"], atol=1e-4 * scale, rtol=0)
        assert np.abs(m["logit_tech"]).max() > 1e-4 * scale        # the split is not trivial
    predicted = ok(post(mfd_service, "/predict", {"sequences": sequences, "conditions": CONDITIONS}))
    for part in PARTS:  # the scores the maps explain are /predict's
        np.testing.assert_allclose([r["score"][part] for r in body["results"]], matrix(predicted, part), atol=1e-4)
    if method == "integrated_gradients":
        result = body["results"][0]
        assert set(result["baseline_score"]) == set(PARTS) and set(result["completeness_gap"]) == set(PARTS)
        total = m["logit"].sum(axis=(1, 2))
        gap = total - (np.array(body["results"][1]["score"]["logit"]) - np.array(
            body["results"][1]["baseline_score"]["logit"]))
        np.testing.assert_allclose(body["results"][1]["completeness_gap"]["logit"], gap, atol=1e-3)


def test_parts_intervals_and_a_window_only(mfd_service, service_genome):
    start = 5000
    interval = {"chrom": "chr1", "start": start, "end": start + SEQ_LEN, "id": "mine"}
    body = ok(post(mfd_service, "/attribute", {"intervals": [interval], "conditions": ["ENCFF002"],
                                                "parts": ["logit_tech", "logit_bio"],
                                                "window": {"start": 100, "end": 104}}))
    result = body["results"][0]
    assert body["parts"] == ["logit_tech", "logit_bio"] and set(result["maps"]) == {"logit_tech", "logit_bio"}
    assert result["id"] == "mine" and result["interval"]["start"] == start
    assert result["sequence"] == service_genome.fetch("chr1", start + 100, start + 104)
    by_sequence = ok(post(mfd_service, "/attribute", {
        "sequences": [service_genome.fetch("chr1", start, start + SEQ_LEN)], "conditions": ["ENCFF002"],
        "parts": ["logit_bio"], "window": {"start": 100, "end": 104}}))
    np.testing.assert_allclose(by_sequence["results"][0]["maps"]["logit_bio"], result["maps"]["logit_bio"],
                               atol=1e-6)


@pytest.mark.parametrize("change,field", [
    ({"method": "deeplift"}, "method"),
    ({"method": 3}, "method"),
    ({"parts": ["logit", "logit_bias"]}, "parts[1]"),
    ({"parts": []}, "parts"),
    ({"parts": ["logit", "logit"]}, "parts"),
    ({"window": {"start": 0, "end": SEQ_LEN + 1}}, "window.end"),
    ({"window": {"start": -3, "end": 10}}, "window.start"),
    ({"window": {"start": 10, "end": 10}}, "window"),
    ({"window": {"start": 0}}, "window.end"),
    ({"steps": 8}, "steps"),                                                # not with ism
    ({"method": "integrated_gradients", "steps": 0}, "steps"),
    ({"method": "integrated_gradients", "baseline": "shuffled"}, "baseline"),
    ({"conditions": [{"biosample": "Mars"}]}, "conditions[0].biosample"),
    ({"sequences": ["ACGT"]}, "sequences[0]"),
    ({"wat": 1}, "wat"),
])
def test_hostile_requests_name_the_field(mfd_service, change, field):
    payload = {"sequences": random_sequences(1, seed=73), "conditions": ["ENCFF001"],
               "window": {"start": 0, "end": 2}, **change}
    expect_error(post(mfd_service, "/attribute", payload), field)


def test_request_limits_refuse_before_computing(mfd_service):
    limits = ok(httpx.get(f"{mfd_service.http_url}/metadata")).get("limits")
    assert limits["max_attribution_passes"] == 16384 and limits["max_attribution_floats"] == 4 * 1024 * 1024
    # three whole-window ISM maps: 3 × 6 532 forward passes > 16 384
    error = expect_error(post(mfd_service, "/attribute", {"sequences": random_sequences(3, seed=74),
                                                          "conditions": ["ENCFF001"]}), "sequences")
    assert "19596" in error["message"] and "MFD_MAX_ATTRIBUTION_PASSES" in error["message"]
    # 40 windows × 16 conditions × 3 parts × 2177 × 4 map values > 4 Mi floats (cheap in passes)
    error = expect_error(post(mfd_service, "/attribute", {"sequences": random_sequences(40, seed=75),
                                                          "conditions": ["ENCFF001"] * 16,
                                                          "method": "gradient_x_input"}), "conditions")
    assert "MFD_MAX_ATTRIBUTION_FLOATS" in error["message"]
    expect_error(post(mfd_service, "/attribute", {"sequences": random_sequences(1, seed=76),
                                                  "conditions": ["ENCFF001"] * 17}), "conditions", 413)


def test_docs_list_attribute(mfd_service):
    spec = ok(httpx.get(f"{mfd_service.http_url}/docs.json"))
    operation = spec["paths"]["/attribute"]["post"]
    assert "422" in operation["responses"] and "AttributeResponse" in str(operation["responses"]["200"])
    request = spec["components"]["schemas"]["AttributeRequest"]
    assert request["properties"]["method"]["enum"] == ["ism", "gradient_x_input", "integrated_gradients"]
    assert {"sequences", "intervals", "conditions", "parts", "window"} <= set(request["properties"])
