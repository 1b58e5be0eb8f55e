"""In-process checks of the request front line: strict JSON text, the condition weight LRU, the gRPC deadline.

Fast (no model, no `bentoml serve`): the LRU and the deadline run with hand-set inputs, the deadline over a real
loopback `grpc.aio` server, so the status a client sees is the one gRPC really sends.
"""
from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import grpc
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from service.api.admission import Admission
from service.backends.base import HeadWeights
from service.core.conditions import ConditionResolver, ResolvedCondition
from service.errors import RequestError
from service.api.grpc_server import guarded
from service.settings import Settings
from service.api import strict_json
from tests.fixtures.processes import free_port


# ---- strict JSON: text that is not Unicode ---------------------------------------------------------------
@pytest.mark.parametrize("body,field", [
    (rb'{"sequence_ids":["\ud800"]}', "sequence_ids[0]"),
    (rb'{"conditions":[{"lab":"x\uDFFFy"}]}', "conditions[0].lab"),
    (rb'{"conditions":[{"\udc00":1}]}', "conditions[0]"),
    (b'{"conditions":[{"lab":"a\xffb"}]}', "conditions[0].lab"),
    (b'{"variants":[{"id":"\xed\xa0\x80"}]}', "variants[0].id"),   # UTF-8-encoded surrogate (CESU)
    (b'{"a":1}\xc0', "body"),                                      # outside any string
])
def test_non_unicode_text_is_a_400_naming_the_field(body, field):
    with pytest.raises(RequestError) as err:
        strict_json.loads(body)
    assert (err.value.status, err.value.field) == (400, field), err.value.to_json()
    strict_json.dumps(err.value.to_json()).decode("utf-8")  # the error itself is valid UTF-8 JSON


def test_surrogate_pairs_and_escaped_backslashes_are_text():
    assert strict_json.loads(rb'{"a":"\ud83d\ude00"}') == {"a": "\U0001F600"}
    assert strict_json.loads(rb'{"a":"\\ud800"}') == {"a": "\\ud800"}  # a backslash, then the letters
    assert strict_json.loads("{\"a\":\"é\"}".encode()) == {"a": "é"}


@settings(max_examples=200, derandomize=True, deadline=None)
@given(prefix=st.text(max_size=5), surrogate=st.integers(0xD800, 0xDFFF), key=st.booleans())
def test_any_lone_surrogate_escape_is_refused(prefix, surrogate, key):
    escaped = strict_json.dumps(prefix).decode()[1:-1] + f"\\u{surrogate:04x}"
    body = (f'{{"x":[{{"{escaped}":1}}]}}' if key else f'{{"x":[{{"k":"{escaped}"}}]}}').encode()
    with pytest.raises(RequestError) as err:
        strict_json.loads(body)
    assert err.value.status == 400 and err.value.field == ("x[0]" if key else "x[0].k")


# ---- the condition weight LRU ----------------------------------------------------------------------------
class CountingHead:
    """A head whose weights are a function of the codes, recording every batch of codes it is asked for."""

    name = "counting"

    def __init__(self):
        self.calls: list[list[float]] = []

    async def head(self, codes: np.ndarray) -> HeadWeights:
        self.calls.append(codes[:, 0].tolist())
        return HeadWeights(codes * 2, codes * 3, codes[:, 0] + 0.5)


def condition(code: float) -> ResolvedCondition:
    return ResolvedCondition(None, {"v": code}, np.array([code, 0.0], dtype=np.float32), "mean")


def counter(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def test_condition_lru_evicts_the_least_recently_used_and_counts_hits():
    head = CountingHead()
    resolver = ConditionResolver(SimpleNamespace(tracks=[], bias_rule="mean"), None, head, cache_size=2)
    run = lambda *codes: asyncio.run(resolver.weights([condition(c) for c in codes]))  # noqa: E731
    hits, misses = counter("mfd_condition_cache_hits_total"), counter("mfd_condition_cache_misses_total")

    weights = run(1, 2, 1)               # 1 twice in one request: one head row, one hit
    assert head.calls == [[1.0, 2.0]]
    np.testing.assert_array_equal(weights.w_tech[:, 0], [2, 4, 2])
    np.testing.assert_array_equal(weights.bias, np.float32([1.5, 2.5, 1.5]))
    assert (counter("mfd_condition_cache_hits_total") - hits, counter("mfd_condition_cache_misses_total") - misses) \
        == (1, 2)
    run(1)                               # hit: 1 becomes the most recent, 2 the least
    run(3)                               # miss: evicts 2, not 1
    assert head.calls == [[1.0, 2.0], [3.0]] and list(resolver._cache) == [condition(1).codes.tobytes(),
                                                                               condition(3).codes.tobytes()]
    run(1, 3)                            # both cached
    assert len(head.calls) == 2
    np.testing.assert_array_equal(run(2).w_bio[:, 0], [6])  # 2 was evicted: computed again
    assert head.calls[-1] == [2.0] and len(resolver._cache) == 2
    assert (counter("mfd_condition_cache_hits_total") - hits, counter("mfd_condition_cache_misses_total") - misses) \
        == (4, 4)


# ---- the gRPC server-side deadline -------------------------------------------------------------------------
def test_grpc_calls_past_the_request_timeout_are_deadline_exceeded():
    """`guarded` bounds every scoring RPC by MFD_REQUEST_TIMEOUT_S, whatever deadline the client set (none)."""
    admission = Admission(Settings.from_env({"MFD_REQUEST_TIMEOUT_S": "0.3"}), "test")
    port = free_port()

    async def serve_and_call() -> tuple[grpc.StatusCode, str, float, bytes]:
        async def slow(request: bytes, context) -> bytes:
            async def handle() -> bytes:
                await asyncio.sleep(30 if request == b"slow" else 0)
                return b"done"
            return await guarded(admission, context, "test_slow", handle)

        server = grpc.aio.server()
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
            "test.Slow", {"Call": grpc.unary_unary_rpc_method_handler(slow)})])
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                call = channel.unary_unary("/test.Slow/Call")
                fast = await call(b"fast")
                start = time.monotonic()
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await call(b"slow")  # no client deadline at all
                return err.value.code(), err.value.details(), time.monotonic() - start, fast
        finally:
            await server.stop(0)

    code, details, elapsed, fast = asyncio.run(serve_and_call())
    assert fast == b"done"
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED and "MFD_REQUEST_TIMEOUT_S" in details, details
    assert 0.3 <= elapsed < 10, elapsed  # the handler would sleep 30 s
    assert admission.inflight == 0
    assert REGISTRY.get_sample_value("mfd_errors_total", {"route": "test_slow", "kind": "deadline_exceeded"}) == 1


# ---- one condition parser, one variant check, whatever the front door (issue 16) -------------------------------
def bundled_resolver() -> ConditionResolver:
    from service.repository import load_repository

    repository = load_repository(Settings().model_repository)
    return ConditionResolver(repository.card, repository.codec, backend=None)


@pytest.mark.parametrize("value,field,fragment", [
    ({"lab": True}, "conditions[0].lab", "booleans"), ({"lab": {"x": 1}}, "conditions[0].lab", "a metadata value"),
    ({"lab": ["a", 2]}, "conditions[0].lab", "a metadata value"), (["x"], "conditions[0]", "track id")])
def test_every_front_door_shares_the_condition_shape_checks(value, field, fragment):
    """KServe, typed gRPC and the batch tool hand decoded values straight to the resolver, without pydantic: the
    resolver itself refuses what the JSON schema refuses, naming the same field."""
    with pytest.raises(RequestError) as error:
        bundled_resolver().parse(value, 0)
    assert error.value.field == field and fragment in error.value.message and error.value.status == 422


def test_conditions_given_as_text_are_strict_json_or_a_track_id():
    assert strict_json.condition_value(b"DEMO001", "CONDITIONS[0]") == "DEMO001"
    assert strict_json.condition_value('{"lab": null}', "--conditions[1]") == {"lab": None}
    for text, field in ((b'{"read_depth": NaN}', "CONDITIONS[2]"), ('{"lab": ', "--conditions[0]"),
                        (b"\xff", "CONDITIONS[1]")):
        with pytest.raises(RequestError) as error:
            strict_json.condition_value(text, field)
        assert error.value.field.startswith(field) and "request body" not in error.value.message


def test_typed_grpc_struct_numbers_come_back_as_json_values():
    from google.protobuf import struct_pb2

    from service.api.grpc_server import struct_value

    struct = struct_pb2.Struct()
    struct.update({"replicates": 2.0, "read_depth": 2.5, "organ": ["a", "b"], "lab": None})
    assert struct_value(struct, "conditions[0]") == {"replicates": 2, "read_depth": 2.5, "organ": ["a", "b"],
                                                     "lab": None}
    for bad in (float("nan"), float("inf")):
        struct.update({"read_depth": bad})
        with pytest.raises(RequestError, match="not a finite number") as error:
            struct_value(struct, "conditions[0]")
        assert error.value.field == "conditions[0].read_depth"


@pytest.mark.parametrize("pos,ref,alt,field,fragment", [
    (0, "A", "G", "v.pos", "at least 1"), (5, "", "G", "v.ref", "empty"), (5, "A", "a", "v.alt", "equals"),
    (5, "A", "GU", "v.alt", "invalid base 'U'"), (5, "A" * 101, "G", "v.ref", "longer than 100")])
def test_variant_checks_shared_by_json_and_vcf(pos, ref, alt, field, fragment):
    from service.core.variants import check_variant

    with pytest.raises(RequestError) as error:
        check_variant("chr1", pos, ref, alt, field="v")
    assert error.value.field == field and fragment in error.value.message
    assert check_variant("chr1", 5, "a", "gt", field="v").alt == "GT"
