"""The scoring pipeline shared by the HTTP API and the gRPC server: validate → windows → trunk → weights → scores.

One Engine per worker process owns the backend, the micro-batcher, the condition cache and the genome. It
returns arrays (`Prediction`, `Scores`) that the transports serialise: JSON through `responses`, binary
KServe tensors through `tensors`. Every result is
computed in full before anything is returned, so a failure never yields a half-written response.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import orjson
from pydantic import ValidationError

from mfd_common.card import BIAS_RULE_DOCS
from mfd_common import tokens as dna

from .backends import Backend, create_backend
from .batcher import MicroBatcher
from .conditions import ConditionResolver, ResolvedCondition, numeric_range
from .effects import EnsembleSpec, crops, encode_windows, ensembled_scores, mean_groups, split_effects
from .errors import RequestError, from_validation_error
from .genome import Genome
from .repository import ModelRepository, load_repository
from .schemas import PredictRequest, VariantRequest
from . import responses
from .responses import Prediction
from .scoring import Scores, score
from .settings import Settings
from .variants import variant_windows


class Engine:
    def __init__(self, settings: Settings, repository: ModelRepository | None = None,
                 backend: Backend | None = None):
        self.settings = settings
        self.repository = repository or load_repository(settings.model_repository,
                                                        require_models=settings.backend == "embedded")
        self.card = self.repository.card
        self.backend = backend or create_backend(settings, self.repository)
        self.active_requests = 0  # requests between parse and response; tells the batcher whether to wait
        self.batcher = MicroBatcher(self.backend.features, backend=self.backend.name,
                                    max_batch=settings.max_batch, max_wait_s=settings.batch_wait_ms / 1000.0,
                                    active=lambda: self.active_requests)
        self.conditions = ConditionResolver(self.card, self.repository.codec, self.backend,
                                            settings.condition_cache_size)
        self.genome = Genome(settings.fasta) if settings.fasta else None
        self.context = {"seq_len": self.card.seq_len, "max_sequences": settings.max_sequences,
                        "max_conditions": settings.max_conditions}

    async def start(self) -> None:
        await self.backend.start()
        await self.warm_up()

    async def warm_up(self) -> None:
        """Run the trunk and head a few times before serving: TorchScript's profiling executor optimises the
        graph during the first calls (≈1 s on CPU), which would otherwise land on the first users."""
        tokens = np.full((2, self.card.seq_len), dna.N_CODE, dtype=np.uint8)
        codes = np.zeros((1, self.repository.codec.width), dtype=np.float32)
        for _ in range(3):
            await self.backend.features(tokens)
            await self.backend.head(codes)

    async def close(self) -> None:
        await self.batcher.close()
        await self.backend.close()
        if self.genome is not None:
            self.genome.close()

    # ---- parsing ---------------------------------------------------------------------------------------
    def parse(self, model: type[PredictRequest] | type[VariantRequest], data: Any):
        """Validate a decoded JSON body against `model` with this model's context; RequestError on failure."""
        try:
            return model.model_validate(data, context=self.context)
        except ValidationError as exc:
            raise from_validation_error(exc) from None

    def _require_genome(self, field: str) -> Genome:
        if self.genome is None:
            raise RequestError(field, "this server has no reference genome configured (MFD_FASTA)",
                               kind="no_genome")
        return self.genome

    # ---- core ------------------------------------------------------------------------------------------
    async def score_windows(self, sequences: Sequence[str], conditions: Sequence[ResolvedCondition], *,
                            biological_only: bool, reverse_complement: bool) -> Scores:
        """Scores [N, K] for windows × conditions. Sequences must already be validated (equal length)."""
        return await self.score_tokens(dna.encode_many(list(sequences)), conditions,
                                       biological_only=biological_only, reverse_complement=reverse_complement)

    async def score_tokens(self, token_rows: np.ndarray, conditions: Sequence[ResolvedCondition], *,
                           biological_only: bool, reverse_complement: bool) -> Scores:
        """Scores [N, K] (and the features) for uint8 tokens [N, seq_len] × conditions; tokens already valid.

        The one scoring path behind every transport: JSON sequences are encoded into tokens first, the binary
        gRPC path hands its UINT8 tensor straight in. Whole-array work only, no per-window Python.
        """
        self.active_requests += 1
        try:
            weights = await self.conditions.weights(conditions)  # usually cache hits; misses batch into one call
            # A trunk exported with strand averaging (card.reverse_complement_average) already averages both
            # strands' features inside; averaging again would only double the work.
            paired = reverse_complement and not self.card.reverse_complement_average
            if paired:
                # Each strand scored on its own, then every quantity averaged: probabilities are the mean of the
                # two sigmoids, as the authors' evaluation averages them (the logits and features are means too).
                n, length = token_rows.shape
                both = np.stack([token_rows, dna.reverse_complement(token_rows)], axis=1).reshape(2 * n, length)
                features = await self.batcher.submit(both)
            else:
                features = await self.batcher.submit(token_rows)
        finally:
            self.active_requests -= 1
        scores = score(features, self.card.d_tech, weights, biological_only=biological_only)
        return mean_groups(scores, 2) if paired else scores

    async def crop_features(self, long_tokens: np.ndarray, spec: EnsembleSpec) -> np.ndarray:
        """Trunk features [N × shifts × strands, D] of every shifted crop on each strand of windows read
        `spec.read_length(seq_len)` long, in `service.effects.crops` order, through the micro-batcher."""
        self.active_requests += 1
        try:
            return await self.batcher.submit(crops(long_tokens, self.card.seq_len, spec))
        finally:
            self.active_requests -= 1

    async def score_ensembled(self, long_tokens: np.ndarray, conditions: Sequence[ResolvedCondition],
                              spec: EnsembleSpec, *, biological_only: bool) -> Scores:
        """Ensembled scores [N, K] (service.effects): each quantity averaged over the crops of each window."""
        weights = await self.conditions.weights(conditions)
        features = await self.crop_features(long_tokens, spec)
        return ensembled_scores(features, self.card.d_tech, weights, spec, biological_only=biological_only)

    def resolve_conditions(self, conditions: Sequence[Any]) -> list[ResolvedCondition]:
        return self.conditions.parse_many(conditions)

    async def predict_arrays(self, request: PredictRequest) -> Prediction:
        resolved = self.resolve_conditions(request.conditions)
        if request.sequences is not None:
            sequences = list(request.sequences)
            ids = list(request.sequence_ids) if request.sequence_ids else [str(i) for i in range(len(sequences))]
            intervals: list[dict[str, Any]] | None = None
        else:
            genome = self._require_genome("intervals")
            sequences, ids, intervals = [], [], []
            for i, interval in enumerate(request.intervals or []):
                sequences.append(genome.fetch(interval.chrom, interval.start, interval.end, field=f"intervals[{i}]"))
                ids.append(interval.id or f"{interval.chrom}:{interval.start}-{interval.end}")
                intervals.append(interval.model_dump())
        scores = await self.score_windows(sequences, resolved, biological_only=request.biological_only,
                                          reverse_complement=request.reverse_complement)
        return Prediction(resolved, ids, intervals, scores)

    async def predict(self, request: PredictRequest) -> dict[str, Any]:
        prediction = await self.predict_arrays(request)
        return responses.predict_payload(
            prediction, model=self.card.model_name, backend=self.backend.name,
            biological_only=request.biological_only, reverse_complement=request.reverse_complement,
            return_features=getattr(request, "return_features", False))

    async def predict_variants(self, request: VariantRequest) -> dict[str, Any]:
        resolved = self.resolve_conditions(request.conditions)
        genome = self._require_genome("variants")
        strands = request.ensemble.strands if request.reverse_complement is None else 1 + request.reverse_complement
        spec = EnsembleSpec(request.ensemble.shifts, strands, request.ensemble.geometry)
        length = spec.read_length(self.card.seq_len)
        windows = [variant_windows(genome, v.chrom, v.pos, v.ref, v.alt, length, field=f"variants[{i}]")
                   for i, v in enumerate(request.variants)]
        tokens = encode_windows([w.ref for w in windows] + [w.alt for w in windows])
        effects = split_effects(await self.score_ensembled(tokens, resolved, spec,
                                                           biological_only=request.biological_only), len(windows))
        tracks = [c.track for c in resolved]
        results = [{"index": i, "id": v.id or f"{v.chrom}:{v.pos}:{v.ref}>{v.alt}", "chrom": v.chrom, "pos": v.pos,
                    "ref": v.ref, "alt": v.alt, "window_start": w.window_start, "effects": effects.row_json(i, tracks)}
                   for i, (v, w) in enumerate(zip(request.variants, windows))]
        if request.return_features:
            delta_bio, delta_tech = effects.delta_features()
            for i, result in enumerate(results):
                result["delta_f_bio"], result["delta_f_tech"] = delta_bio[i].tolist(), delta_tech[i].tolist()
        return {"model": self.card.model_name, "backend": self.backend.name,
                "biological_only": request.biological_only, "reverse_complement": spec.strands == 2,
                "ensemble": spec.to_json(),
                "conditions": [c.to_json(k) for k, c in enumerate(resolved)], "results": results}

    def metadata(self) -> dict[str, Any]:
        variables = []
        for v in self.repository.codec.variables:
            entry: dict[str, Any] = {"name": v.name, "type": v.type, "group": v.group}
            if v.type in ("category", "date.year"):
                entry["allowed"] = list(v.vocabulary)
            else:
                entry["mean"], entry["std"] = v.mean, v.std
                entry["min"], entry["max"] = numeric_range(v.mean, v.std)
            variables.append(entry)
        return {
            "model": self.card.model_name, "seq_len": self.card.seq_len, "d_tech": self.card.d_tech,
            "bias_rule": self.card.bias_rule, "bias_rule_description": BIAS_RULE_DOCS.get(self.card.bias_rule, ""),
            "unspecified": self.repository.codec.unspecified,
            "d_bio": self.card.d_bio, "reverse_complement_average": self.card.reverse_complement_average,
            "backend": self.backend.name,
            "genome": dict(self.genome.lengths) if self.genome is not None else None,
            "limits": {"max_sequences": self.settings.max_sequences, "max_conditions": self.settings.max_conditions,
                       "max_inflight": self.settings.max_inflight, "max_body_bytes": self.settings.max_body_bytes},
            "variables": variables,
            "tracks": [{"id": t.id, "metadata": t.metadata} for t in self.card.tracks],
        }
