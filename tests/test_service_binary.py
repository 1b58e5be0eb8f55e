"""The binary KServe v2 path over real gRPC (tokens as UINT8 tensors, FP32 outputs) and `return_features`."""
from __future__ import annotations

import json

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from mfd_common import tokens as dna
from tests.fixtures.service import SEQ_LEN, matrix, random_sequences

pytestmark = pytest.mark.slow
ATOL = 2e-5
CONDITIONS = ["ENCFF002", {"track": "ENCFF001"}, {"biosample": "GM12878", "lab": "lab-A", "assay": "ChIP-seq"}]


def uint8_input(array: np.ndarray, name: str = "TOKENS") -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(array.shape), "UINT8")
    tensor.set_data_from_numpy(np.ascontiguousarray(array, dtype=np.uint8))
    return tensor


def bytes_input(name: str, values: list) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, [len(values)], "BYTES")
    tensor.set_data_from_numpy(np.array([v.encode() if isinstance(v, str) else v for v in values], dtype=object))
    return tensor


def infer(service, inputs, outputs: list[str] | None = None, **parameters) -> dict[str, np.ndarray]:
    client = grpcclient.InferenceServerClient(service.grpc_url)
    try:
        requested = [grpcclient.InferRequestedOutput(o) for o in outputs] if outputs else None
        result = client.infer("mfd", inputs, outputs=requested, parameters=parameters or None, headers=service.headers)
        return {o.name: result.as_numpy(o.name) for o in result.get_response().outputs}
    finally:
        client.close()


def grpc_error(service, inputs, **parameters) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as err:
        infer(service, inputs, **parameters)
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT", err.value
    return err.value


def test_tokens_with_conditions_parameter_match_torchscript_and_json(mfd_service, torchscript_reference):
    sequences = random_sequences(5, seed=31)
    sequences[1] = sequences[1][:50] + "N" * 40 + sequences[1][90:]
    tokens = np.stack([dna.encode(s) for s in sequences])
    out = infer(mfd_service, [uint8_input(tokens)], conditions=json.dumps(CONDITIONS), return_features=True)
    assert list(out) == ["PROBABILITY", "LOGIT", "LOGIT_BIO", "LOGIT_TECH", "FEATURES_BIO", "FEATURES_TECH"]
    expected = torchscript_reference.scores(sequences, CONDITIONS)
    for name in ("probability", "logit", "logit_bio", "logit_tech"):
        assert out[name.upper()].dtype == np.float32 and out[name.upper()].shape == (5, 3)
        np.testing.assert_allclose(out[name.upper()], expected[name], atol=ATOL, rtol=1e-4, err_msg=name)
    features = torchscript_reference.features(sequences)
    d_tech = torchscript_reference.card.d_tech
    np.testing.assert_allclose(out["FEATURES_TECH"], features[:, :d_tech], atol=ATOL, rtol=1e-4)
    np.testing.assert_allclose(out["FEATURES_BIO"], features[:, d_tech:], atol=ATOL, rtol=1e-4)
    assert np.std(out["FEATURES_BIO"], axis=0).max() > 1e-3  # windows really differ

    body = httpx.post(f"{mfd_service.http_url}/predict", json={"sequences": sequences, "conditions": CONDITIONS,
                      "return_features": True}, headers=mfd_service.headers, timeout=60).json()
    np.testing.assert_allclose(matrix(body, "logit"), out["LOGIT"], atol=1e-6)
    np.testing.assert_allclose(np.array([r["f_bio"] for r in body["results"]]), out["FEATURES_BIO"], atol=1e-6)
    np.testing.assert_allclose(np.array([r["f_tech"] for r in body["results"]]), out["FEATURES_TECH"], atol=1e-6)
    plain = httpx.post(f"{mfd_service.http_url}/predict", json={"sequences": sequences, "conditions": CONDITIONS},
                       headers=mfd_service.headers, timeout=60).json()
    assert "f_bio" not in plain["results"][0] and "f_tech" not in plain["results"][0]


def test_raw_sequences_tokens_and_uint_contents_agree(mfd_service):
    sequences = random_sequences(3, seed=32)
    sequences[2] = sequences[2].lower()  # soft-masked bases score like upper case
    tokens = np.stack([dna.encode(s) for s in sequences])
    conditions = [json.dumps(c) for c in CONDITIONS]
    by_tokens = infer(mfd_service, [uint8_input(tokens), bytes_input("CONDITIONS", conditions)],
                      biological_only=True, reverse_complement=True)
    by_sequences = infer(mfd_service, [bytes_input("SEQUENCES", sequences), bytes_input("CONDITIONS", conditions)],
                         biological_only=True, reverse_complement=True)
    for name in by_tokens:
        np.testing.assert_array_equal(by_tokens[name], by_sequences[name], err_msg=name)
    assert np.all(by_tokens["LOGIT_TECH"] == 0)

    # KServe without raw_input_contents: UINT8 travels in uint_contents.
    request = service_pb2.ModelInferRequest(model_name="mfd")
    tensor = request.inputs.add(name="TOKENS", datatype="UINT8", shape=list(tokens.shape))
    tensor.contents.uint_contents.extend(tokens.reshape(-1).tolist())
    request.parameters["conditions"].string_param = json.dumps(CONDITIONS)
    request.parameters["biological_only"].bool_param = True
    request.parameters["reverse_complement"].bool_param = True
    request.outputs.add(name="LOGIT")
    with grpc.insecure_channel(mfd_service.grpc_url) as channel:
        response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=60)
    assert [o.name for o in response.outputs] == ["LOGIT"] and list(response.outputs[0].shape) == [3, 3]
    logit = np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(3, 3)
    np.testing.assert_array_equal(logit, by_tokens["LOGIT"])


def test_requested_feature_outputs_only(mfd_service, torchscript_reference):
    sequences = random_sequences(2, seed=33)
    out = infer(mfd_service, [bytes_input("SEQUENCES", sequences)], outputs=["FEATURES_BIO"],
                conditions=json.dumps(["ENCFF001"]))
    assert list(out) == ["FEATURES_BIO"]
    assert out["FEATURES_BIO"].shape == (2, torchscript_reference.card.d_bio)


def good_tokens(n: int = 2) -> np.ndarray:
    return np.stack([dna.encode(s) for s in random_sequences(n, seed=34)])


@pytest.mark.parametrize("make_inputs,parameters,fragment", [
    (lambda: [uint8_input(np.where(np.arange(SEQ_LEN) == 9, 7, good_tokens()).astype(np.uint8))],
     {"conditions": '["ENCFF001"]'}, "TOKENS[0]: invalid token 7 at position 9"),
    (lambda: [uint8_input(good_tokens()[:, :-1])], {"conditions": '["ENCFF001"]'}, "TOKENS: shape must be"),
    (lambda: [uint8_input(good_tokens()[:0])], {"conditions": '["ENCFF001"]'}, "TOKENS:"),
    (lambda: [uint8_input(np.zeros((65, SEQ_LEN), np.uint8))], {"conditions": '["ENCFF001"]'}, "TOKENS: 65 items"),
    (lambda: [uint8_input(good_tokens()), bytes_input("SEQUENCES", random_sequences(2, 1))],
     {"conditions": '["ENCFF001"]'}, "SEQUENCES: give exactly one"),
    (lambda: [uint8_input(good_tokens())], {"conditions": "ENCFF001"}, "parameters.conditions: not valid JSON"),
    (lambda: [uint8_input(good_tokens())], {"conditions": '[{"biosample": "Hela"}]'}, "CONDITIONS[0].biosample:"),
    (lambda: [uint8_input(good_tokens())], {}, "CONDITIONS: input is required"),
    (lambda: [uint8_input(good_tokens()), bytes_input("CONDITIONS", ["ENCFF001"])], {"conditions": '["ENCFF001"]'},
     "CONDITIONS: give the conditions"),
    (lambda: [bytes_input("SEQUENCES", [random_sequences(1, 2)[0], "ACG" + "U" + random_sequences(1, 3)[0][4:]])],
     {"conditions": '["ENCFF001"]'}, "SEQUENCES[1]: invalid base 'U' at position 3"),
    (lambda: [bytes_input("SEQUENCES", [random_sequences(1, 2)[0], "ACGT"])],
     {"conditions": '["ENCFF001"]'}, "SEQUENCES[1]: sequence length 4"),
])
def test_binary_bad_input_names_the_tensor(mfd_service, make_inputs, parameters, fragment):
    error = grpc_error(mfd_service, make_inputs(), **parameters)
    assert error.message().startswith(fragment), error.message()
    assert "Traceback" not in error.message()


def test_wrong_datatype_and_unknown_output(mfd_service):
    tokens = grpcclient.InferInput("TOKENS", [1, SEQ_LEN], "INT32")
    tokens.set_data_from_numpy(np.zeros((1, SEQ_LEN), np.int32))
    assert grpc_error(mfd_service, [tokens], conditions='["ENCFF001"]').message().startswith(
        "TOKENS: datatype must be UINT8")
    with pytest.raises(InferenceServerException) as err:
        infer(mfd_service, [uint8_input(good_tokens(1))], outputs=["EMBEDDING"], conditions='["ENCFF001"]')
    assert err.value.message().startswith("outputs: unknown output 'EMBEDDING'")


def test_null_trunk_bench_runs_bounded(exported_repository, capsys):
    """A tiny run of `bench/bench_service.py --null-trunk` (the real one takes minutes): both transports answer
    and the per-core figure is computed from the server's CPU time."""
    from bench import bench_service

    assert bench_service.main(["--null-trunk", "--repository", str(exported_repository), "--requests", "8",
                               "--rounds", "1", "--windows-per-request", "4", "--concurrency", "2"]) == 0
    out = capsys.readouterr().out
    rows = {line[:22].strip(): line[22:].split() for line in out.splitlines() if line.startswith(("JSON", "binary"))}
    assert set(rows) == {"JSON/HTTP c=2", "JSON/HTTP c=1", "binary gRPC c=2", "binary gRPC c=1"}, out
    for name, (windows_per_s, per_cpu_s, p50, p95, fastest) in rows.items():
        assert float(windows_per_s) > 0 and float(per_cpu_s) > 0, (name, out)
        assert 0 < float(fastest) <= float(p50) <= float(p95), (name, out)
