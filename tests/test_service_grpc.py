"""The KServe v2 gRPC endpoint, called with an unmodified `tritonclient.grpc` client."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.fixtures.service import SEQ_LEN, random_sequences

pytestmark = pytest.mark.slow


def bytes_input(name: str, values: list) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, [len(values)], "BYTES")
    tensor.set_data_from_numpy(np.array([v.encode() if isinstance(v, str) else v for v in values], dtype=object))
    return tensor


def infer(service, sequences: list, conditions: list, *, headers=None, **parameters):
    client = grpcclient.InferenceServerClient(service.grpc_url)
    try:
        encoded = [c if isinstance(c, str) else json.dumps(c) for c in conditions]
        result = client.infer("mfd", [bytes_input("SEQUENCES", sequences), bytes_input("CONDITIONS", encoded)],
                              parameters=parameters or None, headers=headers if headers is not None else service.headers)
        return {name: result.as_numpy(name) for name in ("PROBABILITY", "LOGIT", "LOGIT_BIO", "LOGIT_TECH")}
    finally:
        client.close()


def grpc_error(service, sequences, conditions, **kwargs) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as err:
        infer(service, sequences, conditions, **kwargs)
    return err.value


def test_health_and_metadata_rpcs(mfd_service):
    client = grpcclient.InferenceServerClient(mfd_service.grpc_url)
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("mfd") and not client.is_model_ready("nope")
        metadata = client.get_model_metadata("mfd", as_json=True)
        assert [i["name"] for i in metadata["inputs"]] == ["SEQUENCES", "CONDITIONS", "TOKENS"]
        assert metadata["inputs"][2]["datatype"] == "UINT8" and metadata["inputs"][2]["shape"][1] == str(SEQ_LEN)
        assert [o["name"] for o in metadata["outputs"]] == ["PROBABILITY", "LOGIT", "LOGIT_BIO", "LOGIT_TECH",
                                                            "FEATURES_BIO", "FEATURES_TECH"]
        assert client.get_server_metadata(as_json=True)["name"] == "mfd-serve"
    finally:
        client.close()


def test_grpc_infer_matches_torchscript_and_http(mfd_service, torchscript_reference):
    import httpx

    sequences = random_sequences(4, seed=21)
    conditions = ["ENCFF002", {"track": "ENCFF001"}, {"biosample": "GM12878", "lab": "lab-A", "assay": "ChIP-seq"}]
    out = infer(mfd_service, sequences, conditions)
    assert out["LOGIT"].shape == (4, 3) and out["LOGIT"].dtype == np.float32
    expected = torchscript_reference.scores(sequences, conditions)
    for name, key in (("LOGIT", "logit"), ("LOGIT_BIO", "logit_bio"), ("LOGIT_TECH", "logit_tech"),
                      ("PROBABILITY", "probability")):
        np.testing.assert_allclose(out[name], expected[key], atol=2e-5, rtol=1e-4, err_msg=name)
    http = httpx.post(f"{mfd_service.http_url}/predict", json={"sequences": sequences, "conditions": conditions},
                      timeout=60).json()
    http_logit = np.array([[s["logit"] for s in r["scores"]] for r in http["results"]])
    np.testing.assert_allclose(out["LOGIT"], http_logit, atol=1e-6)
    bio = infer(mfd_service, sequences, conditions, biological_only=True)
    assert np.all(bio["LOGIT_TECH"] == 0)
    np.testing.assert_allclose(bio["LOGIT_BIO"], out["LOGIT_BIO"], atol=1e-6)
    assert not np.allclose(bio["LOGIT"], out["LOGIT"], atol=1e-5)


GOOD = random_sequences(1, seed=5)[0]  # window lengths follow the fixture model (SEQ_LEN), never a literal


@pytest.mark.parametrize("sequences,conditions,fragment", [
    ([GOOD, GOOD[:3] + "U" + GOOD[4:]], ["ENCFF001"], "SEQUENCES[1]"),
    ([GOOD[:-1]], ["ENCFF001"], "SEQUENCES[0]"),
    ([], ["ENCFF001"], "SEQUENCES"),
    ([GOOD], [], "CONDITIONS"),
    ([GOOD], [{"biosample": "Hela"}], "CONDITIONS[0].biosample"),
    ([GOOD], ["ENCFF404"], "CONDITIONS[0]"),
])
def test_grpc_bad_input_is_invalid_argument_naming_the_field(mfd_service, sequences, conditions, fragment):
    error = grpc_error(mfd_service, sequences, conditions)
    assert error.status() == "StatusCode.INVALID_ARGUMENT", error
    assert error.message().startswith(fragment + ":"), error.message()


def test_grpc_unknown_value_lists_allowed_values(mfd_service):
    error = grpc_error(mfd_service, [GOOD], [{"assay": "ATAC"}])
    assert "CONDITIONS[0].assay" in error.message() and "ChIP-seq" in error.message()


def test_typed_predict_rpc_mirrors_http(mfd_service):
    import grpc
    import httpx
    from google.protobuf import struct_pb2

    from service.api.proto import mfd_v1_pb2 as pb
    from service.api.proto import mfd_v1_pb2_grpc as pb_grpc

    sequences = random_sequences(3, seed=22)
    metadata = {"biosample": "K562", "target": "HNF4A", "lab": "lab-C", "release_year": 2016}
    request = pb.PredictRequest(sequences=sequences, sequence_ids=["a", "b", "c"], biological_only=False)
    request.conditions.add(track="ENCFF002")
    request.conditions.add(metadata=struct_pb2.Struct())
    request.conditions[1].metadata.update(metadata)
    with grpc.insecure_channel(mfd_service.grpc_url) as channel:
        stub = pb_grpc.PredictorStub(channel)
        response = stub.Predict(request, timeout=60)
        bad = pb.PredictRequest(sequences=sequences)
        bad.conditions.add(metadata=struct_pb2.Struct())
        bad.conditions[0].metadata.update({"lab": "lab-Z"})
        with pytest.raises(grpc.RpcError) as err:
            stub.Predict(bad, timeout=60)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("conditions[0].lab:") and "lab-A" in err.value.details()
    assert [r.id for r in response.results] == ["a", "b", "c"]
    assert response.conditions[0].track == "ENCFF002" and response.conditions[1].metadata["biosample"] == "K562"
    http = httpx.post(f"{mfd_service.http_url}/predict", json={
        "sequences": sequences, "conditions": ["ENCFF002", metadata]}, timeout=60).json()
    typed = np.array([[s.logit for s in r.scores] for r in response.results])
    expected = np.array([[s["logit"] for s in r["scores"]] for r in http["results"]])
    np.testing.assert_allclose(typed, expected, atol=1e-6)


def test_typed_predict_returns_features_when_asked_like_http(mfd_service):
    import grpc
    import httpx

    from service.api.proto import mfd_v1_pb2 as pb
    from service.api.proto import mfd_v1_pb2_grpc as pb_grpc

    sequences = random_sequences(2, seed=23)
    with grpc.insecure_channel(mfd_service.grpc_url) as channel:
        stub = pb_grpc.PredictorStub(channel)
        plain = pb.PredictRequest(sequences=sequences, conditions=[pb.Condition(track="ENCFF001")])
        without = stub.Predict(plain, timeout=60)
        plain.return_features = True
        with_features = stub.Predict(plain, timeout=60)
    assert all(len(r.f_bio) == 0 and len(r.f_tech) == 0 for r in without.results)
    http = httpx.post(f"{mfd_service.http_url}/predict", json={
        "sequences": sequences, "conditions": ["ENCFF001"], "return_features": True}, timeout=60).json()
    for typed, rest in zip(with_features.results, http["results"], strict=True):
        assert len(typed.f_bio) == len(rest["f_bio"]) > 0 and len(typed.f_tech) == len(rest["f_tech"]) > 0
        # float32 on the wire (the features' own precision); JSON carries the same float32 values as doubles
        np.testing.assert_allclose(typed.f_bio, rest["f_bio"], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(typed.f_tech, rest["f_tech"], rtol=1e-6, atol=1e-7)


def test_committed_stubs_are_what_grpcio_tools_generates(tmp_path):
    """service/api/proto/*_pb2*.py are generated, never edited: regenerate from the .proto and compare byte for byte."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I.", f"--python_out={tmp_path}",
                    f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}", "service/api/proto/mfd_v1.proto"],
                   cwd=root, check=True, capture_output=True, timeout=120)
    for name in ("mfd_v1_pb2.py", "mfd_v1_pb2.pyi", "mfd_v1_pb2_grpc.py"):
        generated = (tmp_path / "service" / "api" / "proto" / name).read_text()
        assert generated == (root / "service" / "api" / "proto" / name).read_text(), f"{name} is stale: regenerate it"


def test_typed_attribute_rpc_mirrors_http(mfd_service):
    """mfd.v1.Predictor/Attribute: the same maps as POST /attribute (packed float32 [K, P, W, 4]), same refusals."""
    import grpc
    import httpx
    from google.protobuf import struct_pb2

    from service.api.proto import mfd_v1_pb2 as pb
    from service.api.proto import mfd_v1_pb2_grpc as pb_grpc

    sequences = random_sequences(2, seed=25)
    metadata = {"biosample": "HepG2", "lab": "lab-A"}
    body = {"sequences": sequences, "conditions": ["ENCFF003", metadata], "parts": ["logit_bio", "logit"],
            "window": {"start": 1085, "end": 1090}}
    http = httpx.post(f"{mfd_service.http_url}/attribute", json=body, timeout=60).json()
    request = pb.AttributeRequest(sequences=sequences, parts=["logit_bio", "logit"],
                                  window=pb.AttributionWindow(start=1085, end=1090))
    request.conditions.add(track="ENCFF003")
    request.conditions.add(metadata=struct_pb2.Struct())
    request.conditions[1].metadata.update(metadata)
    with grpc.insecure_channel(mfd_service.grpc_url) as channel:
        stub = pb_grpc.PredictorStub(channel)
        response = stub.Attribute(request, timeout=60)
        gradient = stub.Attribute(pb.AttributeRequest(sequences=sequences[:1], conditions=[pb.Condition(
            track="ENCFF001")], method="integrated_gradients", steps=4), timeout=60)
        errors = {}
        for name, bad in (("method", pb.AttributeRequest(sequences=sequences[:1], method="lrp",
                                                          conditions=[pb.Condition(track="ENCFF001")])),
                          ("window.end", pb.AttributeRequest(sequences=sequences[:1],
                                                             window=pb.AttributionWindow(start=0, end=SEQ_LEN + 5),
                                                             conditions=[pb.Condition(track="ENCFF001")]))):
            with pytest.raises(grpc.RpcError) as err:
                stub.Attribute(bad, timeout=60)
            errors[name] = err.value
    assert response.method == "ism" and list(response.parts) == ["logit_bio", "logit"]
    assert (response.start, response.end) == (1085, 1090) and response.conditions[0].track == "ENCFF003"
    for n, result in enumerate(response.results):
        maps = np.array(result.maps, dtype=np.float32).reshape(2, 2, 5, 4)       # [K, P, W, 4]
        for j, part in enumerate(["logit_bio", "logit"]):
            np.testing.assert_allclose(maps[:, j], http["results"][n]["maps"][part], atol=1e-6)
            np.testing.assert_allclose(np.array(result.score).reshape(2, 2)[:, j], http["results"][n]["score"][part],
                                       atol=1e-6)
        assert result.sequence == sequences[n][1085:1090]
    assert np.abs(maps).max() > 1e-4
    ig = np.array(gradient.results[0].maps).reshape(1, 3, SEQ_LEN, 4)
    np.testing.assert_allclose(ig[:, 0], ig[:, 1] + ig[:, 2], atol=1e-4 * np.abs(ig).max())
    assert len(gradient.results[0].baseline_score) == 3
    for field, error in errors.items():
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error.details().startswith(f"{field}:"), \
            error.details()
