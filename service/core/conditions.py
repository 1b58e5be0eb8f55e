"""Service layer (core): requested conditions → output weights, with an LRU cache per distinct condition.

A condition is a trained track id (`"ENCFF001"` or `{"track": "ENCFF001"}`) or any mapping of metadata values
(`{"biosample": "K562", "lab": "lab-B"}`), including combinations never measured; a variable left out takes
the codec's fill (the training tracks' mean codes, or zeros for models trained with metadata dropout) and `null`
is the reference's missing-value category. Both forms are encoded by `mfd_common.codec`, and the weight cache is
keyed by the *codes*, so a track id and its equivalent metadata share one entry.

Bias: MFD learns a free bias per trained track. A condition naming a track gets exactly that track's bias (from
the card); any other condition gets the head's bias, computed by the card's documented `bias_rule`. Each resolved
condition says which (`bias_rule`: "track" or the rule's name). The head is tiny next to the trunk, but caching
still saves a backend round trip (Triton) per request on the hot path.

`ConditionResolver.parse` is the one condition parser: every front door (REST JSON, KServe tensors, typed gRPC,
the batch tool) hands it the decoded value (a string or a mapping) and gets a `ResolvedCondition` or a
RequestError naming `<prefix>[i].<variable>`; the wire formats only decode their own framing.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Mapping, Sequence, Union

import numpy as np

from mfd_common.card import ModelCard
from mfd_common.codec import NUMERIC_TYPES, MetadataCodec, MetadataError, is_missing, number_of

from mfd_common.numeric import MAX_STANDARD_SCORE, numeric_range, standard_score_in_range

from ..backends.base import Backend, HeadWeights
from ..errors import RequestError
from ..metrics import get_metrics

ConditionInput = Union[str, Mapping[str, Any]]
TRACK_KEY = "track"
@dataclass(frozen=True)
class ResolvedCondition:
    """A condition as the service understood it: the track it names (if any) and the metadata it encodes."""

    track: str | None
    metadata: dict[str, Any]
    codes: np.ndarray
    bias_rule: str = "track"
    unspecified: tuple[str, ...] = ()

    def to_json(self, index: int) -> dict[str, Any]:
        return {"index": index, "track": self.track, "metadata": self.metadata, "bias_rule": self.bias_rule,
                "unspecified": list(self.unspecified)}


class ConditionResolver:
    def __init__(self, card: ModelCard, codec: MetadataCodec, backend: Backend, cache_size: int = 4096, *,
                 model: str = ""):
        self.model = model  # the `model` label of the cache metrics
        self.codec = codec
        self.backend = backend
        self.tracks = {t.id: t.metadata for t in card.tracks}
        self.track_bias = {t.id: t.bias for t in card.tracks if t.bias is not None}
        self.bias_rule = card.bias_rule
        self.cache_size = cache_size
        self._cache: OrderedDict[bytes, tuple[np.ndarray, np.ndarray, np.float32]] = OrderedDict()
        self._lock = threading.Lock()
        self._by_track: dict[str, ResolvedCondition] = {}  # track ids are fixed: encode each once

    # ---- parsing -------------------------------------------------------------------------------------
    def _track(self, track_id: Any, field: str) -> ResolvedCondition:
        if not isinstance(track_id, str) or track_id not in self.tracks:
            raise RequestError(field, f"unknown track id {track_id!r}", sorted(self.tracks))
        metadata = dict(self.tracks[track_id])
        rule = "track" if track_id in self.track_bias else self.bias_rule
        return ResolvedCondition(track_id, metadata, self.codec.encode(metadata, strict=False), rule)

    def parse(self, condition: ConditionInput, index: int, prefix: str = "conditions") -> ResolvedCondition:
        field = f"{prefix}[{index}]"
        if isinstance(condition, str):  # track ids are fixed: resolve each once, share the (read-only) result
            resolved = self._by_track.get(condition)
            if resolved is None:
                resolved = self._by_track[condition] = self._track(condition, field)
                resolved.codes.flags.writeable = False
            return resolved
        if not isinstance(condition, Mapping):
            raise RequestError(field, "a condition is a track id (string) or a mapping of metadata values")
        self._check_values(condition, field)
        if TRACK_KEY in condition:
            if len(condition) != 1:
                extra = sorted(k for k in condition if k != TRACK_KEY)
                raise RequestError(f"{field}.{extra[0]}", "a condition names either a track or metadata values, "
                                   "not both")
            return self._track(condition[TRACK_KEY], f"{field}.{TRACK_KEY}")
        try:
            codes = self.codec.encode(condition, strict=True)
        except MetadataError as exc:
            message = str(exc)[len(exc.field) + 2:] if str(exc).startswith(f"{exc.field}: ") else str(exc)
            raise RequestError(f"{field}.{exc.field}", message, exc.allowed) from None
        self._check_ranges(condition, codes, field)
        unspecified = tuple(v.name for v in self.codec.variables if v.name not in condition)
        return ResolvedCondition(None, dict(condition), codes, self.bias_rule, unspecified)

    @staticmethod
    def _check_values(condition: Mapping[str, Any], field: str) -> None:
        """Each value is a string, a number, a list of strings or null (the JSON schema's `MetadataValue`): a
        boolean or a nested object is refused here for every front door, not only where pydantic validates."""
        for name, value in condition.items():
            if not isinstance(name, str):
                raise RequestError(field, "metadata variable names are strings")
            if isinstance(value, bool):
                raise RequestError(f"{field}.{name}", "booleans are not metadata values: give a number, a string "
                                   "or a list of strings")
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                continue
            if value is not None and not isinstance(value, (str, int, float)):
                raise RequestError(f"{field}.{name}", "a metadata value is a number, a string, a list of strings "
                                   "or null")

    def _check_ranges(self, condition: Mapping[str, Any], codes: np.ndarray, field: str) -> None:
        """Numbers the codec encoded must also be sane: `int` variables whole, every number within range."""
        for name, value in condition.items():
            variable = self.codec.by_name[name]
            if variable.type not in NUMERIC_TYPES or is_missing(value):
                continue
            # JSON Schema's "integer": a number with no fractional part, so 2 and 2.0 are both accepted (a typed
            # gRPC Struct or a JavaScript client cannot tell them apart) and 2.5 is refused, never rounded.
            if variable.type == "int" and not float(number_of(name, value)).is_integer():
                raise RequestError(f"{field}.{name}", f"{str(value)[:40]} is not a whole number ({name} is an "
                                   "integer variable)")
            standard_score = float(codes[self.codec.offsets[name][0]])
            if not standard_score_in_range(standard_score):  # also catches inf/NaN
                low, high = numeric_range(variable.mean, variable.std)
                raise RequestError(f"{field}.{name}", f"{str(value)[:40]} is outside the range this model was "
                                   f"trained for: {low:.6g} to {high:.6g} (training mean ± "
                                   f"{MAX_STANDARD_SCORE:g} standard deviations)")

    def parse_many(self, conditions: Sequence[ConditionInput], prefix: str = "conditions") -> list[ResolvedCondition]:
        return [self.parse(c, i, prefix) for i, c in enumerate(conditions)]

    # ---- weights -------------------------------------------------------------------------------------
    async def weights(self, resolved: Sequence[ResolvedCondition]) -> HeadWeights:
        """Stacked weights for `resolved`, in order; one head call for all distinct cache misses."""
        metrics = get_metrics()
        hits, misses = metrics.cache_hits.labels(self.model), metrics.cache_misses.labels(self.model)
        keys = [r.codes.tobytes() for r in resolved]
        found: dict[bytes, tuple[np.ndarray, np.ndarray, np.float32]] = {}
        missing: dict[bytes, np.ndarray] = {}
        with self._lock:
            for key, r in zip(keys, resolved):
                entry = self._cache.get(key)
                if entry is not None:
                    self._cache.move_to_end(key)
                    found[key] = entry
                    hits.inc()
                elif key not in missing:
                    missing[key] = r.codes
                    misses.inc()
                else:
                    hits.inc()  # duplicate within the request: computed once
        if missing:
            head = await self.backend.head(np.stack(list(missing.values())))
            with self._lock:
                for i, key in enumerate(missing):
                    entry = (head.w_tech[i].copy(), head.w_bio[i].copy(), np.float32(head.bias[i]))
                    found[key] = entry
                    self._cache[key] = entry
                    self._cache.move_to_end(key)
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        rows = [found[k] for k in keys]
        bias = [self.track_bias[r.track] if r.bias_rule == "track" and r.track is not None else row[2]
                for r, row in zip(resolved, rows)]
        return HeadWeights(np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows]),
                           np.array(bias, dtype=np.float32))
