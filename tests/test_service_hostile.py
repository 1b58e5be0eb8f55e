"""Hostile input over real HTTP and gRPC: hundreds of generated requests, never a 5xx / INTERNAL, always our error.

The generator (hypothesis) starts from valid requests and breaks them the way abusive or careless clients do:
any JSON value in any field, booleans and strings where numbers go, numbers that are not sane (NaN, Infinity,
1e999, integers with hundreds of digits, values far outside the training range), deep nesting, huge strings.
Every answer must be a 2xx with a strict-JSON body or a 4xx with exactly our error shape, and an error must
not echo a large input back.
"""
from __future__ import annotations

import json
import math

import grpc
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.api.schemas import ErrorResponse, MetadataResponse, PredictResponse, VariantResponse
from tests.fixtures.service import SEQ_LEN, random_sequences

pytestmark = pytest.mark.slow
SEQ = random_sequences(1, seed=99)[0]
MAX_ERROR_BYTES = 4096  # an error with a 200-entry `allowed` list stays far below this; a 1 MB echo would not
HYPOTHESIS = settings(max_examples=150, deadline=None, derandomize=True,
                      suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def strict_loads(text: str):
    def refuse(name: str):
        raise AssertionError(f"non-standard JSON constant {name} in a response")
    return json.loads(text, parse_constant=refuse)


def check_answer(response: httpx.Response) -> dict:
    """No 5xx; a 4xx is exactly our error shape, small; every body is strict JSON."""
    assert response.status_code < 500, response.text[:2000]
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = strict_loads(response.text)
    if response.status_code >= 400:
        ErrorResponse.model_validate(body)
        assert set(body) == {"error"} and body["error"]["field"] and body["error"]["message"], body
        assert len(response.content) <= MAX_ERROR_BYTES, len(response.content)
        assert "Traceback" not in response.text
    return body


# ---- generators -----------------------------------------------------------------------------------------
JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
                         st.sampled_from(["yes", "no", "true", "1", "NaN", "K562", "ENCFF001", "", "ACGT", "chr1"]))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                                 st.dictionaries(st.text(max_size=12), inner, max_size=4)),
                           max_leaves=12)
# Raw number literals Python's json would accept but RFC 8259 / sane metadata do not.
BAD_NUMBERS = st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e400", "9" * 400, "-" + "7" * 300,
                               "1e308", "3.4e39", "123456789012345678901234567890", "true", "\"yes\""])
NUMERIC_VARIABLES = ("release_year", "read_depth", "replicates")


def valid_predict() -> dict:
    return {"sequences": [SEQ], "conditions": ["ENCFF001", {"biosample": "K562", "lab": "lab-B"}]}


@st.composite
def broken_predict(draw) -> bytes:
    """A /predict body with one or two fields replaced by arbitrary JSON, then serialised."""
    payload = valid_predict()
    keys = ["sequences", "conditions", "biological_only", "reverse_complement", "sequence_ids", "intervals",
            "extra_field"]
    for key in draw(st.lists(st.sampled_from(keys), min_size=1, max_size=2, unique=True)):
        payload[key] = draw(JSON_VALUES)
    if draw(st.booleans()):
        payload["conditions"] = [draw(st.dictionaries(st.sampled_from(["biosample", "lab", "target", "read_depth",
                                                                        "release_year", "replicates", "track"]),
                                                       JSON_VALUES, max_size=3))]
    return json.dumps(payload).encode()


@st.composite
def bad_number_body(draw) -> bytes:
    variable = draw(st.sampled_from(NUMERIC_VARIABLES + ("biological_only", "start")))
    literal = draw(BAD_NUMBERS)
    if variable == "biological_only":
        literal = "1" if literal == "true" else literal
        return (f'{{"sequences":["{SEQ}"],"conditions":["ENCFF001"],"biological_only":{literal}}}').encode()
    if variable == "start":
        return (f'{{"intervals":[{{"chrom":"chr1","start":{literal},"end":{SEQ_LEN}}}],'
                f'"conditions":["ENCFF001"]}}').encode()
    return f'{{"sequences":["{SEQ}"],"conditions":[{{"{variable}":{literal}}}]}}'.encode()


@st.composite
def deep_body(draw) -> bytes:
    depth = draw(st.sampled_from([40, 1000, 5000, 100_000]))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    nested = opener * depth + "1" + closer * depth
    where = draw(st.sampled_from(["top", "condition", "sequences"]))
    if where == "top":
        return nested.encode()
    if where == "condition":
        return f'{{"sequences":["{SEQ}"],"conditions":[{{"lab":{nested}}}]}}'.encode()
    return f'{{"sequences":{nested},"conditions":["ENCFF001"]}}'.encode()


def post_raw(service, path: str, body: bytes) -> httpx.Response:
    return httpx.post(f"{service.http_url}{path}", content=body, timeout=60,
                      headers={"content-type": "application/json", **service.headers})


# ---- HTTP -------------------------------------------------------------------------------------------------
@HYPOTHESIS
@given(body=broken_predict())
def test_generated_predict_bodies_never_5xx(mfd_service, body):
    response = post_raw(mfd_service, "/predict", body)
    answer = check_answer(response)
    if response.status_code == 200:
        PredictResponse.model_validate(answer)
        assert all(math.isfinite(s["probability"]) for r in answer["results"] for s in r["scores"])


@settings(max_examples=80, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(bad_number_body(), deep_body()))
def test_insane_numbers_and_deep_nesting_are_4xx(mfd_service, body):
    response = post_raw(mfd_service, "/predict", body)
    check_answer(response)
    assert 400 <= response.status_code < 500, response.text[:500]


@settings(max_examples=50, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(variant=st.fixed_dictionaries({"chrom": JSON_VALUES, "pos": JSON_VALUES, "ref": JSON_VALUES,
                                      "alt": JSON_VALUES}))
def test_generated_variant_bodies_never_5xx(mfd_service, variant):
    body = json.dumps({"variants": [variant], "conditions": ["ENCFF001"]}).encode()
    check_answer(post_raw(mfd_service, "/predict_variants", body))


@pytest.mark.parametrize("value,fragment", [
    ("NaN", "NaN"), ("Infinity", "Infinity"), ("1e999", "overflows"), ("9" * 300, "outside"),
    ("1e300", "range"), ("-1e30", "range"), ("true", "boolean"), ('"yes"', None)])
def test_numeric_metadata_must_be_a_sane_number_in_range(mfd_service, value, fragment):
    body = f'{{"sequences":["{SEQ}"],"conditions":[{{"read_depth":{value}}}]}}'.encode()
    response = post_raw(mfd_service, "/predict", body)
    error = check_answer(response)["error"]
    assert response.status_code in (400, 422)
    if fragment:
        assert fragment in error["message"], error
    if fragment == "range":
        assert error["field"] == "conditions[0].read_depth"


def test_metadata_documents_numeric_ranges_and_values_inside_are_scored(mfd_service):
    body = httpx.get(f"{mfd_service.http_url}/metadata", timeout=30).json()
    MetadataResponse.model_validate(body)
    depth = next(v for v in body["variables"] if v["name"] == "read_depth")
    assert depth["min"] < depth["mean"] < depth["max"]
    inside = {"sequences": [SEQ], "conditions": [{"read_depth": depth["max"] - 1}]}
    assert post_raw(mfd_service, "/predict", json.dumps(inside).encode()).status_code == 200
    outside = {"sequences": [SEQ], "conditions": [{"read_depth": depth["max"] + 100}]}
    assert post_raw(mfd_service, "/predict", json.dumps(outside).encode()).status_code == 422


@pytest.mark.parametrize("field,value", [("biological_only", '"yes"'), ("biological_only", "1"),
                                         ("reverse_complement", '"true"'), ("biological_only", "null")])
def test_booleans_are_strict(mfd_service, field, value):
    body = f'{{"sequences":["{SEQ}"],"conditions":["ENCFF001"],"{field}":{value}}}'.encode()
    response = post_raw(mfd_service, "/predict", body)
    assert response.status_code == 422 and check_answer(response)["error"]["field"] == field


def test_long_inputs_are_not_echoed(mfd_service):
    huge = "Q" * 1_000_000
    for payload in ({"sequences": [SEQ], "conditions": [huge]},
                    {"sequences": [SEQ], "conditions": [{huge: "x"}]},
                    {"sequences": [SEQ], "conditions": [{"biosample": huge}]},
                    {"intervals": [{"chrom": huge, "start": 0, "end": SEQ_LEN}], "conditions": ["ENCFF001"]}):
        response = post_raw(mfd_service, "/predict", json.dumps(payload).encode())
        assert response.status_code in (413, 422)
        assert len(check_answer(response)["error"]["message"]) < 1000


@pytest.mark.parametrize("method,path,headers,status,field", [
    ("GET", "/predict", {}, 405, "method"), ("PUT", "/metadata", {}, 405, "method"),
    ("GET", "/no/such/path", {}, 404, "path"), ("POST", "/predict", {"content-type": "text/plain"}, 415,
                                                 "content-type"),
    ("POST", "/predict", {"content-type": "application/x-www-form-urlencoded"}, 415, "content-type"),
    ("POST", "/readyz", {}, 405, "method"), ("DELETE", "/docs.json", {}, 405, "method")])
def test_framework_errors_use_our_error_json(mfd_service, method, path, headers, status, field):
    response = httpx.request(method, f"{mfd_service.http_url}{path}", content=b"{}", headers=headers, timeout=30)
    assert response.status_code == status, response.text
    assert check_answer(response)["error"]["field"] == field


def test_responses_match_their_models(mfd_service, service_genome):
    predict = post_raw(mfd_service, "/predict", json.dumps({**valid_predict(), "biological_only": True}).encode())
    PredictResponse.model_validate(check_answer(predict))
    chrom = service_genome.sequences["chr1"]
    variants = {"variants": [{"chrom": "chr1", "pos": 15000, "ref": chrom[14999], "alt": "A" if chrom[14999] != "A"
                              else "C"}], "conditions": ["ENCFF001"]}
    VariantResponse.model_validate(check_answer(post_raw(mfd_service, "/predict_variants",
                                                         json.dumps(variants).encode())))


# ---- gRPC -------------------------------------------------------------------------------------------------
ALLOWED_GRPC = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}


@pytest.fixture(scope="module")
def grpc_stubs(mfd_service):
    from tritonclient.grpc import service_pb2_grpc

    from service.api.proto import mfd_v1_pb2_grpc

    channel = grpc.insecure_channel(mfd_service.grpc_url)
    yield service_pb2_grpc.GRPCInferenceServiceStub(channel), mfd_v1_pb2_grpc.PredictorStub(channel)
    channel.close()


def grpc_code(call) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as exc:
        assert exc.code() in ALLOWED_GRPC, (exc.code(), exc.details())
        assert len(exc.details() or "") < MAX_ERROR_BYTES
        return exc.code()
    return grpc.StatusCode.OK


@settings(max_examples=100, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(conditions=st.lists(st.one_of(st.binary(max_size=40), JSON_VALUES.map(lambda v: json.dumps(v).encode()),
                                     BAD_NUMBERS.map(lambda n: f'{{"read_depth":{n}}}'.encode()),
                                     deep_body()), min_size=1, max_size=3),
       sequence=st.one_of(st.just(SEQ.encode()), st.binary(max_size=50)))
def test_generated_kserve_requests_never_internal(grpc_stubs, conditions, sequence):
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name="mfd")
    request.inputs.add(name="SEQUENCES", datatype="BYTES", shape=[1]).contents.bytes_contents.append(sequence)
    tensor = request.inputs.add(name="CONDITIONS", datatype="BYTES", shape=[len(conditions)])
    tensor.contents.bytes_contents.extend(conditions)
    grpc_code(lambda: grpc_stubs[0].ModelInfer(request, timeout=60))


@settings(max_examples=100, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(metadata=st.dictionaries(st.sampled_from(["biosample", "lab", "read_depth", "release_year", "replicates",
                                                 "x" * 300]),
                                st.one_of(JSON_VALUES, st.floats(), st.sampled_from([1e300, -1e300, 2.0**80])),
                                max_size=3))
def test_generated_typed_requests_never_internal(grpc_stubs, metadata):
    from service.api.proto import mfd_v1_pb2 as pb

    request = pb.PredictRequest(sequences=[SEQ])
    condition = request.conditions.add()
    try:
        condition.metadata.update(metadata)
    except (ValueError, TypeError):
        return  # not representable as a protobuf Struct: no client can send it
    grpc_code(lambda: grpc_stubs[1].Predict(request, timeout=60))


# ---- text that is not Unicode, in every string field of every request model --------------------------------
def string_slots(schema: dict, defs: dict, path: tuple = ()):
    """Every place a request model takes a string: ("conditions", 0, "<key>") is a metadata key, "<value>" a
    metadata value; read from the models' JSON Schema so a new string field is covered without editing this."""
    if "$ref" in schema:
        yield from string_slots(defs[schema["$ref"].split("/")[-1]], defs, path)
        return
    for sub in schema.get("anyOf", []) + schema.get("oneOf", []) + schema.get("allOf", []):
        yield from string_slots(sub, defs, path)
    kind = schema.get("type")
    if kind == "string":
        yield path
    elif kind == "array":
        yield from string_slots(schema.get("items", {}), defs, path + (0,))
    elif kind == "object":
        for name, sub in schema.get("properties", {}).items():
            yield from string_slots(sub, defs, path + (name,))
        if isinstance(schema.get("additionalProperties"), dict):
            yield path + ("<key>",)
            yield from string_slots(schema["additionalProperties"], defs, path + ("<value>",))


def _slots() -> list[tuple[str, tuple]]:
    from service.api.schemas import PredictRequest, VariantRequest

    found = set()
    for route, model in (("/predict", PredictRequest), ("/predict_variants", VariantRequest)):
        schema = model.model_json_schema()
        found |= {(route, slot) for slot in string_slots(schema, schema.get("$defs", {}))}
    return sorted(found, key=str)


STRING_SLOTS = _slots()
PLACEHOLDER = "@@NOT-UNICODE@@"
NOT_UNICODE = st.one_of(st.integers(0xD800, 0xDFFF).map(lambda c: f"\\u{c:04x}".encode()),  # lone escape
                        st.sampled_from([b"\xff", b"\x80", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf5\x80\x80\x80",
                                         b"\xe2\x82"]))                                   # invalid UTF-8


def body_with_text_at(route: str, slot: tuple) -> tuple[dict, str]:
    """A valid request for `route` with PLACEHOLDER at `slot`, and the field name an error must give."""
    if route == "/predict_variants":
        payload: dict = {"variants": [{"chrom": "chr1", "pos": 15000, "ref": "A", "alt": "G"}],
                         "conditions": ["ENCFF001"]}
    elif slot[0] == "intervals":
        payload = {"intervals": [{"chrom": "chr1", "start": 100, "end": 100 + SEQ_LEN}], "conditions": ["ENCFF001"]}
    else:
        payload = {"sequences": [SEQ], "sequence_ids": ["w0"], "conditions": ["ENCFF001"]}
    field = ""
    if slot[-1] == "<key>":
        payload[slot[0]][0] = {PLACEHOLDER: "K562"}
        return payload, f"{slot[0]}[0]"
    if "<value>" in slot:
        payload[slot[0]][0] = {"biosample": [PLACEHOLDER] if slot[-1] == 0 else PLACEHOLDER}
        return payload, f"{slot[0]}[0].biosample" + ("[0]" if slot[-1] == 0 else "")
    target = payload
    for part in slot[:-1]:
        target = target.setdefault(part, {}) if isinstance(part, str) else target[part]  # e.g. ensemble.geometry
    target[slot[-1]] = PLACEHOLDER
    for part in slot:
        field += f"[{part}]" if isinstance(part, int) else (f".{part}" if field else part)
    return payload, field


def test_every_string_field_is_found():
    fields = {body_with_text_at(route, slot)[1] for route, slot in STRING_SLOTS}
    assert {"sequences[0]", "sequence_ids[0]", "intervals[0].chrom", "intervals[0].id", "conditions[0]",
            "conditions[0].biosample", "conditions[0].biosample[0]", "variants[0].chrom", "variants[0].ref",
            "variants[0].alt", "variants[0].id"} <= fields, fields


@settings(max_examples=120, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(where=st.sampled_from(STRING_SLOTS), prefix=st.text(st.characters(codec="utf-8"), max_size=4),
       bad=NOT_UNICODE)
def test_text_that_is_not_unicode_is_a_400_naming_its_field(mfd_service, where, prefix, bad):
    route, slot = where
    payload, field = body_with_text_at(route, slot)
    escaped_prefix = json.dumps(prefix)[1:-1].encode()
    body = json.dumps(payload).encode().replace(PLACEHOLDER.encode(), escaped_prefix + bad)
    response = post_raw(mfd_service, route, body)
    error = check_answer(response)["error"]
    assert response.status_code == 400 and error["field"] == field, (body[:300], response.text[:500])
    assert "UTF-8" in error["message"] or "surrogate" in error["message"]


def test_kserve_conditions_with_lone_surrogates_are_invalid_argument(grpc_stubs):
    from tritonclient.grpc import service_pb2

    for raw, field in ((rb'{"lab":"\udbff"}', "CONDITIONS[0].lab"), (b'{"lab":"\xed\xa0\x80"}', "CONDITIONS[0]")):
        request = service_pb2.ModelInferRequest(model_name="mfd")
        request.inputs.add(name="SEQUENCES", datatype="BYTES", shape=[1]).contents.bytes_contents.append(SEQ.encode())
        request.inputs.add(name="CONDITIONS", datatype="BYTES", shape=[1]).contents.bytes_contents.append(raw)
        with pytest.raises(grpc.RpcError) as err:
            grpc_stubs[0].ModelInfer(request, timeout=60)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details().startswith(field + ":"), err.value.details()


def test_grpc_requests_with_invalid_utf8_on_the_wire_are_invalid_argument(mfd_service):
    """A proto3 string holding invalid UTF-8 (a client that is not protobuf, or a broken one) on both services."""
    from tritonclient.grpc import service_pb2

    from service.api.proto import mfd_v1_pb2 as pb

    typed = pb.PredictRequest(sequences=[SEQ], sequence_ids=["PLACE"]).SerializeToString()
    kserve = service_pb2.ModelInferRequest(model_name="PLACE").SerializeToString()
    with grpc.insecure_channel(mfd_service.grpc_url) as channel:
        for method, good in (("/mfd.v1.Predictor/Predict", typed),
                             ("/inference.GRPCInferenceService/ModelInfer", kserve)):
            with pytest.raises(grpc.RpcError) as err:
                channel.unary_unary(method)(good.replace(b"PLACE", b"\xed\xa0\x80\xff\xfe"), timeout=60)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (err.value.code(), err.value.details())
            assert err.value.details().startswith("request:") and "UTF-8" in err.value.details()


# ---- int variables take whole numbers only, on every transport ----------------------------------------------
@pytest.mark.parametrize("value,status", [(2, 200), (2.0, 200), (2.5, 422), (1e-9 + 2, 422)])
def test_int_variables_refuse_fractions_over_json(mfd_service, value, status):
    body = json.dumps({"sequences": [SEQ], "conditions": [{"replicates": value}]}).encode()
    response = post_raw(mfd_service, "/predict", body)
    answer = check_answer(response)
    assert response.status_code == status, response.text
    if status == 422:
        assert answer["error"]["field"] == "conditions[0].replicates" and "whole" in answer["error"]["message"]


def test_int_variables_refuse_fractions_over_grpc(grpc_stubs):
    from tritonclient.grpc import service_pb2

    from service.api.proto import mfd_v1_pb2 as pb

    for value, ok in ((2.0, True), (2.5, False)):
        request = pb.PredictRequest(sequences=[SEQ])
        request.conditions.add().metadata.update({"replicates": value})
        kserve = service_pb2.ModelInferRequest(model_name="mfd")
        kserve.inputs.add(name="SEQUENCES", datatype="BYTES", shape=[1]).contents.bytes_contents.append(SEQ.encode())
        kserve.inputs.add(name="CONDITIONS", datatype="BYTES", shape=[1]).contents.bytes_contents.append(
            json.dumps({"replicates": value}).encode())
        for call, field in ((lambda: grpc_stubs[1].Predict(request, timeout=60), "conditions[0].replicates"),
                            (lambda: grpc_stubs[0].ModelInfer(kserve, timeout=60), "CONDITIONS[0].replicates")):
            if ok:
                call()
                continue
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert err.value.details().startswith(field + ":") and "whole" in err.value.details()
