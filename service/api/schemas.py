"""Service layer (api): request and response schemas (pydantic v2) of the JSON API, the typed gRPC mirror and the
OpenAPI document.

Model-dependent checks (window length, request-size limits) read a validation context
`{"seq_len": …, "max_sequences": …, "max_conditions": …}`; without one (e.g. when a client builds a request)
only the shape is checked. Errors carry `mfd_*` types whose context holds the HTTP status and, where it helps,
the allowed values, which `service.errors.from_validation_error` turns into our error JSON.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from mfd_common import tokens

from ..core.effects import DEFAULT_GEOMETRY, MAX_SHIFTS, PAPER_SHIFTS, PAPER_STRANDS
from ..core.variants import allele_problem

ALPHABET = list(tokens.ALPHABET)


def _ctx(info: ValidationInfo) -> dict[str, Any]:
    return info.context if isinstance(info.context, dict) else {}


def _fail(reason: str, *, status: int = 422, kind: str = "invalid_argument", allowed: list | None = None):
    ctx: dict[str, Any] = {"reason": reason, "status": status, "kind": kind}
    if allowed is not None:
        ctx["allowed"] = allowed
    return PydanticCustomError("mfd_invalid", "{reason}", ctx)


#: The letters a window may hold (any case); everything else is refused by `tokens.encode` with its position.
_BASES = (tokens.ALPHABET + tokens.ALPHABET.lower()).encode()


def _letters_ok(value: str) -> bool:
    """True when `value` is only A/C/G/T/N (any case): one C-speed pass, no array (the windows are encoded once,
    by the engine, after validation)."""
    try:
        return not value.encode("ascii").translate(None, _BASES)
    except UnicodeError:
        return False


def _check_sequence(value: str, info: ValidationInfo) -> str:
    """Letters first (with the position of the first bad one), then the window length."""
    try:
        if not _letters_ok(value):
            tokens.encode(value)  # the exact error: the first bad letter and its position
    except tokens.InvalidSequenceError as exc:
        raise _fail(str(exc), allowed=ALPHABET) from None
    except UnicodeError:
        raise _fail("sequence must be ASCII letters A, C, G, T, N", allowed=ALPHABET) from None
    seq_len = _ctx(info).get("seq_len")
    if seq_len is not None and len(value) != seq_len:
        raise _fail(f"sequence length {len(value)} must equal the model's window length {seq_len}")
    return value


def _check_limit(value: Any, info: ValidationInfo, key: str) -> Any:
    limit = _ctx(info).get(key)
    if limit is not None and isinstance(value, list) and len(value) > limit:
        raise _fail(f"{len(value)} items exceed this server's limit of {limit} per request "
                    f"(split the request)", status=413, kind="too_large")
    return value


def _check_allele(value: str) -> str:
    problem = allele_problem(value)  # the engine's own check (service.core.variants), as the batch tool runs it
    if problem is not None:
        raise _fail(problem, allowed=ALPHABET if problem.startswith("invalid base") else None)
    return value.upper()


DnaSequence = Annotated[str, AfterValidator(_check_sequence)]
Allele = Annotated[str, AfterValidator(_check_allele)]


def _check_metadata_value(value: Any) -> Any:
    if isinstance(value, bool):
        raise _fail("booleans are not metadata values: give a number, a string or a list of strings")
    return value


MetadataValue = Annotated[Union[str, int, float, list[str], None], BeforeValidator(_check_metadata_value)]


def _check_condition(value: Any) -> Any:
    if not isinstance(value, (str, dict)):
        raise _fail("a condition is a track id (string) or a mapping of metadata values")
    return value


Condition = Annotated[Union[str, dict[str, MetadataValue]], BeforeValidator(_check_condition)]

CONDITIONS_DOC = ("Experimental conditions to score. Each is a trained track id (`\"ENCFF001\"` or "
                  "`{\"track\": \"ENCFF001\"}`) or a mapping of metadata values such as "
                  "`{\"biosample\": \"K562\", \"target\": \"CTCF\", \"lab\": \"lab-B\"}`: any subset of the "
                  "variables listed by GET /metadata, including combinations never measured; omitted "
                  "variables are averaged over. An `int` variable takes whole numbers (`2` or `2.0`, not `2.5`).")


class _Strict(BaseModel):
    """Requests: unknown fields refused; strict types (no "yes" for true, no "12" or true for a number)."""

    model_config = ConfigDict(extra="forbid", strict=True)


MODEL_DOC = ("The model to score with (GET /models lists them); without it the deployment's default model answers. "
             "An unknown name is a 404 listing the served names.")


class _Scoring(_Strict):
    """A scoring request: its windows (sequences, intervals or variants) and conditions count against this server's
    limits (the context's max_sequences / max_conditions), checked before the items themselves. `model` picks the
    engine (service.core.models) before the body is validated against that model."""

    model: Optional[str] = Field(None, description=MODEL_DOC, examples=["mfd-demo"])

    @field_validator("sequences", "intervals", "variants", mode="before", check_fields=False)
    @classmethod
    def _window_limit(cls, value: Any, info: ValidationInfo) -> Any:
        return _check_limit(value, info, "max_sequences")

    @field_validator("conditions", mode="before", check_fields=False)
    @classmethod
    def _condition_limit(cls, value: Any, info: ValidationInfo) -> Any:
        return _check_limit(value, info, "max_conditions")


class Interval(_Strict):
    """A genomic window, BED-style: 0-based start, exclusive end; `end - start` must equal the window length."""

    chrom: str = Field(min_length=1, examples=["chr1"])
    start: int = Field(ge=0, examples=[10000])
    end: int = Field(examples=[12176])
    id: Optional[str] = None

    @field_validator("end")
    @classmethod
    def _length(cls, end: int, info: ValidationInfo) -> int:
        start = info.data.get("start")
        seq_len = _ctx(info).get("seq_len")
        if start is not None and end <= start:
            raise _fail(f"end {end} must be greater than start {start}")
        if start is not None and seq_len is not None and end - start != seq_len:
            raise _fail(f"interval length {end - start} must equal the model's window length {seq_len}")
        return end


def one_window_source(request: Any) -> Any:
    """A request's windows come from exactly one of `sequences` / `intervals`, with one id per sequence if ids are
    given (/predict and /attribute alike)."""
    if (request.sequences is None) == (request.intervals is None):
        raise PydanticCustomError("mfd_invalid", "{reason}", {
            "reason": "give exactly one of `sequences` or `intervals`", "status": 422, "field": "sequences",
            "kind": "invalid_argument", "allowed": ["sequences", "intervals"]})
    ids = request.sequence_ids
    if ids is not None and (request.sequences is None or len(ids) != len(request.sequences)):
        raise PydanticCustomError("mfd_invalid", "{reason}", {
            "reason": "`sequence_ids` needs one id per sequence", "status": 422, "kind": "invalid_argument",
            "field": "sequence_ids"})
    return request


class PredictRequest(_Scoring):
    """Score windows (given as sequences or as intervals of the configured genome) under conditions."""

    sequences: Optional[Annotated[list[DnaSequence], Field(min_length=1)]] = Field(
        None, description="DNA windows of exactly the model's length (A/C/G/T/N, any case).")
    sequence_ids: Optional[list[str]] = Field(
        None, description="Optional ids echoed in the results, one per sequence.")
    intervals: Optional[Annotated[list[Interval], Field(min_length=1)]] = Field(
        None, description="Genomic windows read from the server's FASTA (instead of `sequences`).")
    conditions: Annotated[list[Condition], Field(min_length=1)] = Field(description=CONDITIONS_DOC)
    biological_only: bool = Field(
        False, description="Report the biological component alone: technical features held at their mean (0).")
    reverse_complement: bool = Field(
        False, description="Average each window with its reverse complement (both strands): each strand is scored "
                           "and the probabilities averaged (the mean of the two sigmoids, as the authors' "
                           "evaluation does; before issue 18 the features were averaged, which gave the sigmoid "
                           "of the mean logit); logits and features are the means over the strands. A trunk "
                           "exported with strand averaging averages the features inside.")
    return_features: bool = Field(
        False, description="Also return each window's feature vectors `f_bio` and `f_tech` (the embeddings).")

    @model_validator(mode="after")
    def _one_source(self) -> "PredictRequest":
        return one_window_source(self)


class Variant(_Strict):
    """A VCF-style variant: 1-based position of the first reference base, reference and alternative alleles."""

    chrom: str = Field(min_length=1, examples=["chr1"])
    pos: int = Field(ge=1, examples=[20001])
    ref: Allele = Field(examples=["A"])
    alt: Allele = Field(examples=["G"])
    id: Optional[str] = None

    @field_validator("alt")
    @classmethod
    def _differs(cls, alt: str, info: ValidationInfo) -> str:
        if info.data.get("ref") == alt:
            raise _fail("alt allele equals the ref allele")
        return alt


# ---- issue 11: shift × strand ensembling of variant effects (service/core/effects.py) ------------------------------
class Ensemble(_Strict):
    """Shifted crops × strands averaged per allele; the default is the paper's 7 × 2 in their gnomAD geometry,
    `{shifts: 1, strands: 1, geometry: centred}` scores the single centred window."""

    shifts: int = Field(PAPER_SHIFTS, ge=1, le=MAX_SHIFTS,
                        description="Forward crops at offsets 0 … shifts−1 of a longer window (see `geometry`).")
    strands: Literal[1, 2] = Field(PAPER_STRANDS, description="2 also scores reverse-complement crops.")
    geometry: Literal["reference", "centred"] = Field(
        DEFAULT_GEOMETRY, description="`reference`: the authors' gnomAD script (window read shifts+1 bases longer; "
        "reverse crops cut from the reverse complement of the whole window, one position off the forward ones); "
        "`centred`: window read shifts−1 bases longer, both strands of the same crops (docs/variant-effects.md).")


class VariantRequest(_Scoring):
    """Score variants (alt − ref) under conditions; windows are centred on each variant."""

    variants: Annotated[list[Variant], Field(min_length=1)]
    conditions: Annotated[list[Condition], Field(min_length=1)] = Field(description=CONDITIONS_DOC)
    biological_only: bool = False
    ensemble: Ensemble = Field(default_factory=Ensemble, description=Ensemble.__doc__)
    reverse_complement: Optional[bool] = Field(
        None, description="Older alias of `ensemble.strands` (true → 2, false → 1); overrides it when given.")
    return_features: bool = Field(
        False, description="Also return each variant's feature deltas `delta_f_bio` and `delta_f_tech` (alt − ref "
                           "of the ensembled features).")


# ---- responses ---------------------------------------------------------------------------------------------
class ResolvedConditionOut(BaseModel):
    index: int
    track: Optional[str] = Field(None, description="The trained track this condition names, if any.")
    metadata: dict[str, Any] = Field(description="Metadata values the condition was encoded from.")
    bias_rule: str = Field("track", description="Where the bias comes from: `track` (the trained track's own "
                                                "bias) or the model's documented rule for other conditions "
                                                "(e.g. `nearest_tracks_mean`, see GET /metadata).")
    unspecified: list[str] = Field(default_factory=list, description="Variables the condition left out; they take "
                                                                     "the model's fill codes (see GET /metadata).")


class Score(BaseModel):
    condition: int = Field(description="Index into `conditions` (the resolved conditions).")
    track: Optional[str] = None
    probability: float
    logit: float = Field(description="logit_bio + logit_tech + bias")
    logit_bio: float = Field(description="f_bio · w_bio (biological component)")
    logit_tech: float = Field(description="f_tech · w_tech (technical component; 0 when biological_only)")
    bias: float


class WindowResult(BaseModel):
    index: int = Field(description="Position of the window in the request.")
    id: str
    interval: Optional[Interval] = None
    scores: list[Score]
    f_bio: Optional[list[float]] = Field(None, description="Biological features (with `return_features`).")
    f_tech: Optional[list[float]] = Field(None, description="Technical features (with `return_features`).")


class _ResponseHead(BaseModel):
    """What every scoring response starts with: the model, the backend, the options and the conditions used."""

    model: str
    backend: str
    biological_only: bool
    reverse_complement: bool
    conditions: list[ResolvedConditionOut]


class PredictResponse(_ResponseHead):
    results: list[WindowResult]


class Effect(BaseModel):
    condition: int
    track: Optional[str] = None
    ref_probability: float
    alt_probability: float
    ref_logit: float
    alt_logit: float
    delta_probability: float = Field(description="alt − ref")
    delta_logit: float = Field(description="alt − ref")
    delta_logit_bio: float
    delta_logit_tech: float


class VariantResult(BaseModel):
    index: int
    id: str
    chrom: str
    pos: int
    ref: str
    alt: str
    window_start: int = Field(description="0-based genomic start of the ref window read (seq_len + shifts + 1 "
                                          "bases for the reference geometry, seq_len + shifts − 1 for centred)")
    effects: list[Effect]
    delta_f_bio: Optional[list[float]] = Field(None, description="alt − ref biological features (return_features).")
    delta_f_tech: Optional[list[float]] = Field(None, description="alt − ref technical features (return_features).")


class VariantResponse(_ResponseHead):
    ensemble: Ensemble
    results: list[VariantResult]


class VariableOut(BaseModel):
    name: str
    type: str
    group: str
    allowed: Optional[list[str]] = Field(None, description="Vocabulary of categorical variables.")
    mean: Optional[float] = Field(None, description="Training mean of a numeric variable.")
    std: Optional[float] = Field(None, description="Training standard deviation of a numeric variable.")
    min: Optional[float] = Field(None, description="Smallest accepted value (mean − 6 std); outside → 422.")
    max: Optional[float] = Field(None, description="Largest accepted value (mean + 6 std); outside → 422.")


class TrackOut(BaseModel):
    id: str
    metadata: dict[str, Any]


class MetadataResponse(BaseModel):
    model: str
    seq_len: int = Field(description="Request window length in bases (2177 for the reference's 2176 dinucleotide "
                                     "positions).")
    bias_rule: str = Field("track", description="How a condition that is not a trained track gets its bias.")
    bias_rule_description: str = ""
    unspecified: str = Field("mean", description="What a variable left out of a condition means: `mean` (the "
                                                 "training tracks' mean codes) or `zeros` (metadata dropout).")
    d_tech: int
    d_bio: int
    reverse_complement_average: bool
    backend: str
    genome: Optional[dict[str, int]] = Field(None, description="Chromosome lengths of the configured FASTA.")
    limits: dict[str, int]
    variables: list[VariableOut]
    tracks: list[TrackOut]


class ModelOut(BaseModel):
    name: str = Field(description="The name requests route by (`model`, `/v2/models/<name>`).")
    default: bool = Field(description="Whether requests that name no model get this one.")
    card_model_name: str = Field(description="The `model_name` in the model's card.")
    version: str = Field(description="First 12 hex digits of the trunk's sha256: which weights are served.")
    kserve_version: str = Field(description="The version KServe v2 requests may name (`/versions/<v>`).")
    seq_len: int
    d_tech: int
    d_bio: int
    tracks: int = Field(description="Number of trained tracks.")
    backend: str
    genome: Optional[dict[str, Any]] = Field(None, description="The model's reference genome: the FASTA file's "
                                             "name, its variable and its number of sequences (null: none).")


class ModelsResponse(BaseModel):
    default: Optional[str] = Field(None, description="The default model (null: requests must name one).")
    models: list[ModelOut]


class ErrorDetail(BaseModel):
    field: str
    message: str
    allowed: Optional[list[Any]] = None


class ErrorResponse(BaseModel):
    error: ErrorDetail
