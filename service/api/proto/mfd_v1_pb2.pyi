from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Interval(_message.Message):
    __slots__ = ("chrom", "start", "end", "id")
    CHROM_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    chrom: str
    start: int
    end: int
    id: str
    def __init__(self, chrom: _Optional[str] = ..., start: _Optional[int] = ..., end: _Optional[int] = ..., id: _Optional[str] = ...) -> None: ...

class Condition(_message.Message):
    __slots__ = ("track", "metadata")
    TRACK_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    track: str
    metadata: _struct_pb2.Struct
    def __init__(self, track: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class PredictRequest(_message.Message):
    __slots__ = ("sequences", "sequence_ids", "intervals", "conditions", "biological_only", "reverse_complement", "return_features", "model")
    SEQUENCES_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_IDS_FIELD_NUMBER: _ClassVar[int]
    INTERVALS_FIELD_NUMBER: _ClassVar[int]
    CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    BIOLOGICAL_ONLY_FIELD_NUMBER: _ClassVar[int]
    REVERSE_COMPLEMENT_FIELD_NUMBER: _ClassVar[int]
    RETURN_FEATURES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    sequences: _containers.RepeatedScalarFieldContainer[str]
    sequence_ids: _containers.RepeatedScalarFieldContainer[str]
    intervals: _containers.RepeatedCompositeFieldContainer[Interval]
    conditions: _containers.RepeatedCompositeFieldContainer[Condition]
    biological_only: bool
    reverse_complement: bool
    return_features: bool
    model: str
    def __init__(self, sequences: _Optional[_Iterable[str]] = ..., sequence_ids: _Optional[_Iterable[str]] = ..., intervals: _Optional[_Iterable[_Union[Interval, _Mapping]]] = ..., conditions: _Optional[_Iterable[_Union[Condition, _Mapping]]] = ..., biological_only: bool = ..., reverse_complement: bool = ..., return_features: bool = ..., model: _Optional[str] = ...) -> None: ...

class ResolvedCondition(_message.Message):
    __slots__ = ("index", "track", "metadata")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TRACK_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    index: int
    track: str
    metadata: _struct_pb2.Struct
    def __init__(self, index: _Optional[int] = ..., track: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class Score(_message.Message):
    __slots__ = ("condition", "probability", "logit", "logit_bio", "logit_tech", "bias")
    CONDITION_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    LOGIT_FIELD_NUMBER: _ClassVar[int]
    LOGIT_BIO_FIELD_NUMBER: _ClassVar[int]
    LOGIT_TECH_FIELD_NUMBER: _ClassVar[int]
    BIAS_FIELD_NUMBER: _ClassVar[int]
    condition: int
    probability: float
    logit: float
    logit_bio: float
    logit_tech: float
    bias: float
    def __init__(self, condition: _Optional[int] = ..., probability: _Optional[float] = ..., logit: _Optional[float] = ..., logit_bio: _Optional[float] = ..., logit_tech: _Optional[float] = ..., bias: _Optional[float] = ...) -> None: ...

class WindowResult(_message.Message):
    __slots__ = ("index", "id", "scores", "f_bio", "f_tech")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    F_BIO_FIELD_NUMBER: _ClassVar[int]
    F_TECH_FIELD_NUMBER: _ClassVar[int]
    index: int
    id: str
    scores: _containers.RepeatedCompositeFieldContainer[Score]
    f_bio: _containers.RepeatedScalarFieldContainer[float]
    f_tech: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, index: _Optional[int] = ..., id: _Optional[str] = ..., scores: _Optional[_Iterable[_Union[Score, _Mapping]]] = ..., f_bio: _Optional[_Iterable[float]] = ..., f_tech: _Optional[_Iterable[float]] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("model", "backend", "biological_only", "reverse_complement", "conditions", "results")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    BIOLOGICAL_ONLY_FIELD_NUMBER: _ClassVar[int]
    REVERSE_COMPLEMENT_FIELD_NUMBER: _ClassVar[int]
    CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    model: str
    backend: str
    biological_only: bool
    reverse_complement: bool
    conditions: _containers.RepeatedCompositeFieldContainer[ResolvedCondition]
    results: _containers.RepeatedCompositeFieldContainer[WindowResult]
    def __init__(self, model: _Optional[str] = ..., backend: _Optional[str] = ..., biological_only: bool = ..., reverse_complement: bool = ..., conditions: _Optional[_Iterable[_Union[ResolvedCondition, _Mapping]]] = ..., results: _Optional[_Iterable[_Union[WindowResult, _Mapping]]] = ...) -> None: ...

class AttributionWindow(_message.Message):
    __slots__ = ("start", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: int
    end: int
    def __init__(self, start: _Optional[int] = ..., end: _Optional[int] = ...) -> None: ...

class AttributeRequest(_message.Message):
    __slots__ = ("sequences", "sequence_ids", "intervals", "conditions", "method", "parts", "window", "reverse_complement", "steps", "baseline", "model")
    SEQUENCES_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_IDS_FIELD_NUMBER: _ClassVar[int]
    INTERVALS_FIELD_NUMBER: _ClassVar[int]
    CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    PARTS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    REVERSE_COMPLEMENT_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    sequences: _containers.RepeatedScalarFieldContainer[str]
    sequence_ids: _containers.RepeatedScalarFieldContainer[str]
    intervals: _containers.RepeatedCompositeFieldContainer[Interval]
    conditions: _containers.RepeatedCompositeFieldContainer[Condition]
    method: str
    parts: _containers.RepeatedScalarFieldContainer[str]
    window: AttributionWindow
    reverse_complement: bool
    steps: int
    baseline: str
    model: str
    def __init__(self, sequences: _Optional[_Iterable[str]] = ..., sequence_ids: _Optional[_Iterable[str]] = ..., intervals: _Optional[_Iterable[_Union[Interval, _Mapping]]] = ..., conditions: _Optional[_Iterable[_Union[Condition, _Mapping]]] = ..., method: _Optional[str] = ..., parts: _Optional[_Iterable[str]] = ..., window: _Optional[_Union[AttributionWindow, _Mapping]] = ..., reverse_complement: bool = ..., steps: _Optional[int] = ..., baseline: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

class AttributionResult(_message.Message):
    __slots__ = ("index", "id", "sequence", "maps", "score", "baseline_score")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    MAPS_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    BASELINE_SCORE_FIELD_NUMBER: _ClassVar[int]
    index: int
    id: str
    sequence: str
    maps: _containers.RepeatedScalarFieldContainer[float]
    score: _containers.RepeatedScalarFieldContainer[float]
    baseline_score: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, index: _Optional[int] = ..., id: _Optional[str] = ..., sequence: _Optional[str] = ..., maps: _Optional[_Iterable[float]] = ..., score: _Optional[_Iterable[float]] = ..., baseline_score: _Optional[_Iterable[float]] = ...) -> None: ...

class AttributeResponse(_message.Message):
    __slots__ = ("model", "backend", "method", "parts", "start", "end", "reverse_complement", "conditions", "results")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    PARTS_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    REVERSE_COMPLEMENT_FIELD_NUMBER: _ClassVar[int]
    CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    model: str
    backend: str
    method: str
    parts: _containers.RepeatedScalarFieldContainer[str]
    start: int
    end: int
    reverse_complement: bool
    conditions: _containers.RepeatedCompositeFieldContainer[ResolvedCondition]
    results: _containers.RepeatedCompositeFieldContainer[AttributionResult]
    def __init__(self, model: _Optional[str] = ..., backend: _Optional[str] = ..., method: _Optional[str] = ..., parts: _Optional[_Iterable[str]] = ..., start: _Optional[int] = ..., end: _Optional[int] = ..., reverse_complement: bool = ..., conditions: _Optional[_Iterable[_Union[ResolvedCondition, _Mapping]]] = ..., results: _Optional[_Iterable[_Union[AttributionResult, _Mapping]]] = ...) -> None: ...
