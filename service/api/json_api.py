"""Service layer (api): the REST JSON front door: request bodies → domain inputs → Engine → JSON bodies.

A decoded body is validated by its pydantic model (service.api.schemas) with the engine's context (window length,
limits), turned into the engine's domain types (service.core.domain), scored, and serialised from the `Scores`
arrays: one `tolist()` per array, then comprehensions that zip rows with per-condition constants. The typed gRPC
`mfd.v1` door reuses `prediction` (same validation) and serialises the same arrays to protobuf.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from mfd_common.card import BIAS_RULE_DOCS
from mfd_common.numeric import numeric_range

from ..core.conditions import ResolvedCondition
from ..core.domain import GenomicInterval, Prediction, ScoreOptions, VariantEffects, Windows
from ..core.effects import EnsembleSpec
from ..core.engine import Engine
from ..core.scoring import QUANTITIES
from ..core.variants import VariantSpec
from ..errors import from_validation_error
from .schemas import PredictRequest, VariantRequest

Model = TypeVar("Model", bound=BaseModel)


def dumps(payload: Any) -> bytes:
    """Compact JSON through orjson, for payloads whose numbers were checked finite (`Scores.require_finite`):
    orjson would write NaN/Infinity as `null`, silently changing a result, where RFC 8259 has no such numbers."""
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)


def conditions_json(conditions: list[ResolvedCondition]) -> list[dict[str, Any]]:
    return [c.to_json(k) for k, c in enumerate(conditions)]


def predict_payload(prediction: Prediction, *, model: str, backend: str, return_features: bool = False) \
        -> dict[str, Any]:
    """The /predict body: one object per window and condition (schemas.PredictResponse)."""
    s = prediction.scores
    s.require_finite(with_features=return_features)
    resolved = prediction.conditions
    columns = [(k, c.track, b) for k, c, b in zip(range(len(resolved)), resolved, s.bias.tolist())]
    rows = zip(*(s.quantity(q).tolist() for q in QUANTITIES))
    windows = prediction.windows
    intervals = ([{"chrom": i.chrom, "start": i.start, "end": i.end, "id": i.id} for i in windows.intervals]
                 if windows.intervals is not None else [None] * len(windows.ids))
    results = [
        {"index": n, "id": window_id, "interval": interval,
         "scores": [{"condition": k, "track": track, "probability": p, "logit": lo, "logit_bio": bi,
                     "logit_tech": te, "bias": bias}
                    for (k, track, bias), p, lo, bi, te in zip(columns, prob, logit, bio, tech)]}
        for n, (window_id, interval, (prob, logit, bio, tech)) in enumerate(zip(windows.ids, intervals, rows))
    ]
    if return_features:
        for result, f_bio, f_tech in zip(results, s.f_bio.tolist(), s.f_tech.tolist()):
            result["f_bio"] = f_bio
            result["f_tech"] = f_tech
    return {"model": model, "backend": backend, "biological_only": prediction.options.biological_only,
            "reverse_complement": prediction.options.reverse_complement,
            "conditions": conditions_json(resolved), "results": results}


def effects_payload(result: VariantEffects, *, model: str, backend: str, return_features: bool = False) \
        -> dict[str, Any]:
    """The /predict_variants body: per variant, ref/alt and alt − ref per condition (schemas.VariantResponse)."""
    effects = result.effects
    ref_p, alt_p = effects.ref.probability.tolist(), effects.alt.probability.tolist()
    ref_l, alt_l = effects.ref.logit.tolist(), effects.alt.logit.tolist()
    deltas = [effects.delta(q).tolist() for q in QUANTITIES]
    tracks = [c.track for c in result.conditions]
    results = [{"index": i, "id": v.label, "chrom": v.chrom, "pos": v.pos, "ref": v.ref, "alt": v.alt,
                "window_start": start,
                "effects": [{"condition": k, "track": track,
                             "ref_probability": ref_p[i][k], "alt_probability": alt_p[i][k],
                             "ref_logit": ref_l[i][k], "alt_logit": alt_l[i][k],
                             **{f"delta_{q}": deltas[j][i][k] for j, q in enumerate(QUANTITIES)}}
                            for k, track in enumerate(tracks)]}
               for i, (v, start) in enumerate(zip(result.variants, result.window_starts))]
    if return_features:
        delta_bio, delta_tech = effects.delta_features()
        for i, entry in enumerate(results):
            entry["delta_f_bio"], entry["delta_f_tech"] = delta_bio[i].tolist(), delta_tech[i].tolist()
    return {"model": model, "backend": backend, "biological_only": result.biological_only,
            "reverse_complement": result.spec.strands == 2, "ensemble": result.spec.to_json(),
            "conditions": conditions_json(result.conditions), "results": results}


def metadata_payload(engine: Engine) -> dict[str, Any]:
    """GET /metadata: the model's variables (vocabularies, numeric ranges), tracks, window length and limits."""
    card, codec = engine.card, engine.repository.codec
    variables = []
    for v in codec.variables:
        entry: dict[str, Any] = {"name": v.name, "type": v.type, "group": v.group}
        if v.type in ("category", "date.year"):
            entry["allowed"] = list(v.vocabulary)
        else:
            entry["mean"], entry["std"] = v.mean, v.std
            entry["min"], entry["max"] = numeric_range(v.mean, v.std)
        variables.append(entry)
    return {
        "model": engine.name, "seq_len": card.seq_len, "d_tech": card.d_tech,
        "bias_rule": card.bias_rule, "bias_rule_description": BIAS_RULE_DOCS.get(card.bias_rule, ""),
        "unspecified": codec.unspecified,
        "d_bio": card.d_bio, "reverse_complement_average": card.reverse_complement_average,
        "backend": engine.backend.name,
        "genome": dict(engine.genome.lengths) if engine.genome is not None else None,
        "limits": engine.limits(),
        "variables": variables,
        "tracks": [{"id": t.id, "metadata": t.metadata} for t in card.tracks],
    }


def kserve_version(engine: Engine) -> str:
    """The version KServe v2 requests may name: the trunk's numeric version folder (Triton's), "1" when the
    weights are not here (Triton backend without a local copy)."""
    version = getattr(engine, "_kserve_version", None)
    if version is None:  # looked up once per engine: the folder does not change while serving
        try:
            version = engine.repository.trunk_path.parent.name
        except Exception:  # noqa: BLE001 - RepositoryError / OSError: no local version folder
            version = "1"
        engine._kserve_version = version
    return version


def models_payload(models: Any) -> dict[str, Any]:
    """GET /models: every served model with its window, version and genome (schemas.ModelsResponse)."""
    from .http_api import model_version  # the OpenAPI document's version id, computed one way

    entries = []
    for name, engine in models.engines.items():
        card = engine.card
        genome = None
        if engine.genome is not None:
            genome = {"fasta": Path(engine.settings.fasta).name, "sequences": len(engine.genome.lengths),
                      "variable": "MFD_FASTA" if engine.settings.fasta == models.settings.fasta
                      else engine.genome_variable}
        entries.append({"name": name, "default": name == models.store.default, "card_model_name": card.model_name,
                        "version": model_version(card.checksums), "kserve_version": kserve_version(engine),
                        "seq_len": card.seq_len, "d_tech": card.d_tech, "d_bio": card.d_bio,
                        "tracks": len(card.tracks), "backend": engine.backend.name, "genome": genome})
    return {"default": models.store.default, "models": entries}


class JsonApi:
    """The JSON front door of one Engine: `parse` a decoded body, then `predict` / `predict_variants` it."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.context = {"seq_len": engine.seq_len, "max_sequences": engine.settings.max_sequences,
                        "max_conditions": engine.settings.max_conditions}

    def parse(self, model: type[Model], data: Any) -> Model:
        """Validate a decoded JSON body against `model` with this model's context; RequestError on failure."""
        try:
            return model.model_validate(data, context=self.context)
        except ValidationError as exc:
            raise from_validation_error(exc) from None

    def windows_and_conditions(self, request: Any) -> tuple[Windows, list[ResolvedCondition]]:
        """A validated request's windows (its sequences, or its intervals read from the genome) and conditions."""
        engine = self.engine
        conditions = engine.resolve_conditions(request.conditions)
        if request.sequences is not None:
            return engine.sequence_windows(request.sequences, request.sequence_ids), conditions
        intervals = [GenomicInterval(i.chrom, i.start, i.end, i.id) for i in request.intervals or []]
        return engine.interval_windows(intervals), conditions

    async def prediction(self, request: PredictRequest) -> Prediction:
        """A validated PredictRequest scored: the domain result every predict front door serialises."""
        windows, conditions = self.windows_and_conditions(request)
        options = ScoreOptions(request.biological_only, request.reverse_complement)
        return await self.engine.predict(windows, conditions, options)

    async def predict(self, request: PredictRequest) -> dict[str, Any]:
        return predict_payload(await self.prediction(request), model=self.engine.name,
                               backend=self.engine.backend.name, return_features=request.return_features)

    async def predict_variants(self, request: VariantRequest) -> dict[str, Any]:
        engine = self.engine
        conditions = engine.resolve_conditions(request.conditions)
        engine.require_genome("variants")
        strands = request.ensemble.strands if request.reverse_complement is None else 1 + request.reverse_complement
        spec = EnsembleSpec(request.ensemble.shifts, strands, request.ensemble.geometry)
        variants = [VariantSpec(v.chrom, v.pos, v.ref, v.alt, v.id) for v in request.variants]
        result = await engine.variant_effects(variants, conditions, spec, biological_only=request.biological_only)
        return effects_payload(result, model=engine.name, backend=engine.backend.name,
                               return_features=request.return_features)

    def metadata(self) -> dict[str, Any]:
        return metadata_payload(self.engine)
