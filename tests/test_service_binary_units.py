"""Unit checks of the binary codec, batch tokenising, vectorised scoring and the embedded backend's precision."""
from __future__ import annotations

import asyncio
import json
import warnings

import numpy as np
import pytest
from tritonclient.grpc import service_pb2
from tritonclient.utils import serialize_byte_tensor

from mfd_common import tokens as dna
from service.api import tensors
from service.backends.base import HeadWeights
from service.errors import RequestError
from service.core.scoring import score, sigmoid
from service.settings import Settings, SettingsError

L = 40  # these checks do not need a real model's window length


def request_with(inputs: dict[str, tuple[str, list[int], bytes]], **parameters) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="mfd")
    for name, (datatype, shape, raw) in inputs.items():
        request.inputs.add(name=name, datatype=datatype, shape=shape)
        request.raw_input_contents.append(raw)
    for name, value in parameters.items():
        if isinstance(value, bool):
            request.parameters[name].bool_param = value
        else:
            request.parameters[name].string_param = value
    return request


def decode(request, **limits):
    return tensors.decode_request(request, seq_len=L, max_sequences=limits.get("max_sequences", 8),
                                  max_conditions=limits.get("max_conditions", 4))


def sequences(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(list("ACGTNacgtn"), L)) for _ in range(n)]


def bytes_raw(values: list[str]) -> bytes:
    """A raw KServe BYTES tensor, as tritonclient writes it (checked against its serializer)."""
    raw = b"".join(len(v).to_bytes(4, "little") + v.encode() for v in values)
    assert serialize_byte_tensor(np.array([v.encode() for v in values], dtype=object)).item() == raw
    return raw


def test_sequences_fast_path_equals_per_window_encoding():
    seqs = sequences(5)
    inputs = decode(request_with({"SEQUENCES": ("BYTES", [5], bytes_raw(seqs))}, conditions='["T1", {"lab": "x"}]',
                                 return_features=True))
    np.testing.assert_array_equal(inputs.tokens, np.stack([dna.encode(s) for s in seqs]))
    assert inputs.conditions == ["T1", {"lab": "x"}] and inputs.outputs == tuple(tensors.OUTPUT_OF)
    assert not inputs.options.biological_only and not inputs.options.reverse_complement
    np.testing.assert_array_equal(dna.encode_many(seqs), inputs.tokens)


@pytest.mark.parametrize("values,field,fragment", [
    (["A" * L, "A" * (L - 1) + "U"], "SEQUENCES[1]", f"invalid base 'U' at position {L - 1}"),
    (["A" * L, "A" * (L + 1)], "SEQUENCES[1]", f"sequence length {L + 1}"),
    (["A" * L, "ACGT"], "SEQUENCES[1]", "sequence length 4"),  # same total size as a valid request would not be
])
def test_sequences_errors_name_the_window(values, field, fragment):
    with pytest.raises(RequestError) as err:
        decode(request_with({"SEQUENCES": ("BYTES", [len(values)], bytes_raw(values))}, conditions='["T1"]'))
    assert err.value.field == field and fragment in err.value.message


def test_malformed_bytes_tensor_is_a_client_error():
    raw = bytes_raw(["A" * L])[:-3] + (1000).to_bytes(4, "little")
    with pytest.raises(RequestError) as err:
        decode(request_with({"SEQUENCES": ("BYTES", [1], raw)}, conditions='["T1"]'))
    assert err.value.field == "SEQUENCES" and "malformed" in err.value.message


def test_tokens_limits_and_codes():
    tokens = np.zeros((3, L), np.uint8)
    tokens[2, 17] = 5
    with pytest.raises(RequestError) as err:
        decode(request_with({"TOKENS": ("UINT8", [3, L], tokens.tobytes())}, conditions='["T1"]'))
    assert err.value.field == "TOKENS[2]" and "position 17" in err.value.message
    with pytest.raises(RequestError) as err:
        decode(request_with({"TOKENS": ("UINT8", [3, L], tokens.tobytes()[:-1])}, conditions='["T1"]'))
    assert err.value.field == "TOKENS" and "needs" in err.value.message
    with pytest.raises(RequestError) as err:
        decode(request_with({"TOKENS": ("UINT8", [9, L], bytes(9 * L))}, conditions='["T1"]'))
    assert err.value.status == 413 and err.value.kind == "too_large"
    with pytest.raises(RequestError) as err:
        decode(request_with({"TOKENS": ("UINT8", [1, L], bytes(L))}, conditions=json.dumps(["T"] * 5)))
    assert err.value.field == "CONDITIONS" and err.value.status == 413
    with pytest.raises(RequestError) as err:
        decode(request_with({"TOKENS": ("UINT8", [1, L], bytes(L))}, conditions="[]"))
    assert err.value.field == "CONDITIONS"
    ok = decode(request_with({"TOKENS": ("UINT8", [1, L], bytes(L))}, conditions='["T1"]', biological_only=True))
    assert ok.options.biological_only and ok.outputs == tensors.SCORE_OUTPUTS and ok.tokens.shape == (1, L)


def test_encode_many_reports_row_and_position():
    seqs = sequences(3, seed=1)
    seqs[1] = seqs[1][:7] + "R" + seqs[1][8:]
    with pytest.raises(dna.InvalidSequenceError) as err:
        dna.encode_many(seqs)
    assert (err.value.row, err.value.position, err.value.letter) == (1, 7, "R")
    assert dna.encode("acgtn").flags.writeable  # callers may modify what they get


def test_scoring_is_whole_array_and_stable():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(6, 10)).astype(np.float32)
    weights = HeadWeights(rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(3, 6)).astype(np.float32),
                          rng.normal(size=3).astype(np.float32))
    s = score(features, 4, weights)
    expected = features[:, 4:].astype(np.float64) @ weights.w_bio.T + features[:, :4] @ weights.w_tech.T + weights.bias
    np.testing.assert_allclose(s.logit, expected, atol=1e-5)
    np.testing.assert_array_equal(s.f_tech, features[:, :4])
    np.testing.assert_array_equal(s.f_bio, features[:, 4:])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        extreme = sigmoid(np.array([-1000.0, -30.0, 0.0, 30.0, 1000.0], dtype=np.float32))
    assert extreme.dtype == np.float32
    np.testing.assert_allclose(extreme, [0.0, 1 / (1 + np.exp(30.0)), 0.5, 1 / (1 + np.exp(-30.0)), 1.0], rtol=1e-6)


def test_precision_setting():
    assert Settings.from_env({}).precision == "fp32"
    assert Settings.from_env({"MFD_PRECISION": "BF16"}).precision == "bf16"
    with pytest.raises(SettingsError, match="MFD_PRECISION"):
        Settings.from_env({"MFD_PRECISION": "int4"})


def test_embedded_backend_reduced_precision_stays_close(exported_repository):
    """bf16 autocast runs on CPU too, so the precision plumbing used on GPUs is exercised here."""
    from service.backends.embedded import EmbeddedBackend
    from service.repository import load_repository

    repository = load_repository(exported_repository)
    tokens = np.stack([dna.encode(s) for s in
                       ["".join(np.random.default_rng(i).choice(list("ACGT"), repository.card.seq_len))
                        for i in range(3)]])
    read_only = np.frombuffer(tokens.tobytes(), np.uint8).reshape(tokens.shape)  # as a gRPC buffer arrives

    async def run(precision: str) -> np.ndarray:
        backend = EmbeddedBackend(Settings.from_env({"MFD_PRECISION": precision, "MFD_TORCH_THREADS": "1"}),
                                  repository)
        await backend.start()
        try:
            return await backend.features(read_only)
        finally:
            await backend.close()

    full, half = asyncio.run(run("fp32")), asyncio.run(run("bf16"))
    assert full.dtype == half.dtype == np.float32
    assert not np.array_equal(full, half)  # bf16 really ran
    # bf16 keeps ~3 significant digits; through a deep random trunk that is a few % of the features' spread.
    assert np.corrcoef(full.ravel(), half.ravel())[0, 1] > 0.98
    assert np.abs(full - half).mean() < 0.1 * full.std()


def test_json_payloads_are_built_from_the_arrays():
    from service.api.json_api import dumps, predict_payload
    from service.core.conditions import ResolvedCondition
    from service.core.domain import Prediction, ScoreOptions, Windows

    rng = np.random.default_rng(1)
    features = rng.normal(size=(4, 5)).astype(np.float32)
    weights = HeadWeights(rng.normal(size=(2, 2)).astype(np.float32), rng.normal(size=(2, 3)).astype(np.float32),
                          np.array([0.5, -1.0], np.float32))
    s = score(features, 2, weights)
    resolved = [ResolvedCondition("T1", {"lab": "a"}, np.zeros(1)), ResolvedCondition(None, {"lab": "b"}, np.ones(1))]
    windows = Windows(np.zeros((4, 1), np.uint8), ["w0", "w1", "w2", "w3"])
    body = json.loads(dumps(predict_payload(Prediction(resolved, windows, s, ScoreOptions()), model="m",
                                            backend="b", return_features=True)))
    window = body["results"][3]
    assert list(window) == ["index", "id", "interval", "scores", "f_bio", "f_tech"]
    assert window["scores"][1] == pytest.approx({
        "condition": 1, "track": None, "probability": float(s.probability[3, 1]), "logit": float(s.logit[3, 1]),
        "logit_bio": float(s.logit_bio[3, 1]), "logit_tech": float(s.logit_tech[3, 1]), "bias": -1.0})
    assert window["f_bio"] == pytest.approx(features[3, 2:].tolist())
    assert window["f_tech"] == pytest.approx(features[3, :2].tolist())



def test_cuda_device_without_a_gpu_fails_at_start_with_a_clear_message(exported_repository):
    """No GPU is lent to CI: MFD_DEVICE=cuda must then refuse to start, never fall back silently to CPU."""
    import torch

    from service.backends.embedded import EmbeddedBackend
    from service.repository import load_repository

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    backend = EmbeddedBackend(Settings.from_env({"MFD_DEVICE": "cuda", "MFD_PRECISION": "fp16"}),
                              load_repository(exported_repository))
    with pytest.raises(RuntimeError, match="MFD_DEVICE=cuda but torch sees no CUDA device"):
        asyncio.run(backend.start())
    asyncio.run(backend.close())


def test_predict_payload_refuses_non_finite_scores_instead_of_writing_null():
    """orjson writes NaN as null; the payload builder must refuse first, so a broken model is a 500, not data."""
    from service.api.json_api import predict_payload
    from service.core.domain import Prediction, ScoreOptions, Windows
    from service.core.scoring import Scores

    good = np.zeros((1, 1), np.float32)
    bad = np.array([[np.nan]], np.float32)
    for field in ("probability", "logit", "logit_bio", "logit_tech"):
        arrays = {name: good for name in ("probability", "logit", "logit_bio", "logit_tech")}
        arrays[field] = bad
        scores = Scores(**arrays, bias=np.zeros(1, np.float32))
        with pytest.raises(ArithmeticError, match="non-finite"):
            predict_payload(Prediction([], Windows(np.zeros((1, 1), np.uint8), ["w0"]), scores, ScoreOptions()),
                            model="m", backend="b")
