"""The scoring pipeline shared by the HTTP API and the gRPC server: validate → windows → trunk → weights → scores.

One Engine per worker process owns the backend, the micro-batcher, the condition cache and the genome. It
returns plain dicts/arrays; the transports (service.py, grpc_server.py) only translate them. Every result is
computed in full before anything is returned, so a failure never yields a half-written response.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from pydantic import ValidationError

from mfd_common import tokens as dna

from .backends import Backend, create_backend
from .batcher import MicroBatcher
from .conditions import ConditionResolver, ResolvedCondition, numeric_range
from .errors import RequestError, from_validation_error
from .genome import Genome
from .repository import ModelRepository, load_repository
from .schemas import PredictRequest, VariantRequest
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
        """Scores [N, K] for windows × conditions. Sequences must already be validated."""
        self.active_requests += 1
        try:
            token_rows = np.stack([dna.encode(s) for s in sequences])
            weights = await self.conditions.weights(conditions)  # usually cache hits; misses batch into one call
            # A trunk exported with strand averaging (card.reverse_complement_average) already averages both
            # strands inside; averaging again would only double the work.
            if reverse_complement and not self.card.reverse_complement_average:
                both = np.concatenate([token_rows, dna.reverse_complement(token_rows)])
                features = await self.batcher.submit(both)
                n = token_rows.shape[0]
                features = (features[:n] + features[n:]) * np.float32(0.5)  # scoring is linear in f
            else:
                features = await self.batcher.submit(token_rows)
        finally:
            self.active_requests -= 1
        return score(features, self.card.d_tech, weights, biological_only=biological_only)

    def resolve_conditions(self, conditions: Sequence[Any]) -> list[ResolvedCondition]:
        return self.conditions.parse_many(conditions)

    async def predict_arrays(self, request: PredictRequest) -> tuple[list[ResolvedCondition], list[dict], Scores]:
        resolved = self.resolve_conditions(request.conditions)
        windows: list[dict[str, Any]] = []
        if request.sequences is not None:
            ids = request.sequence_ids or [str(i) for i in range(len(request.sequences))]
            sequences = list(request.sequences)
            windows = [{"index": i, "id": ids[i], "interval": None} for i in range(len(sequences))]
        else:
            genome = self._require_genome("intervals")
            sequences = []
            for i, interval in enumerate(request.intervals or []):
                sequences.append(genome.fetch(interval.chrom, interval.start, interval.end, field=f"intervals[{i}]"))
                windows.append({"index": i, "id": interval.id or f"{interval.chrom}:{interval.start}-{interval.end}",
                                "interval": interval.model_dump()})
        scores = await self.score_windows(sequences, resolved, biological_only=request.biological_only,
                                          reverse_complement=request.reverse_complement)
        return resolved, windows, scores

    async def predict(self, request: PredictRequest) -> dict[str, Any]:
        resolved, windows, s = await self.predict_arrays(request)
        tracks = [c.track for c in resolved]
        prob, logit, bio, tech = (s.probability.tolist(), s.logit.tolist(), s.logit_bio.tolist(),
                                  s.logit_tech.tolist())
        bias = s.bias.tolist()
        results = []
        for n, window in enumerate(windows):
            window["scores"] = [
                {"condition": k, "track": tracks[k], "probability": prob[n][k], "logit": logit[n][k],
                 "logit_bio": bio[n][k], "logit_tech": tech[n][k], "bias": bias[k]}
                for k in range(len(resolved))
            ]
            results.append(window)
        return {"model": self.card.model_name, "backend": self.backend.name,
                "biological_only": request.biological_only, "reverse_complement": request.reverse_complement,
                "conditions": [c.to_json(k) for k, c in enumerate(resolved)], "results": results}

    async def predict_variants(self, request: VariantRequest) -> dict[str, Any]:
        resolved = self.resolve_conditions(request.conditions)
        genome = self._require_genome("variants")
        seq_len = self.card.seq_len
        windows = [variant_windows(genome, v.chrom, v.pos, v.ref, v.alt, seq_len, field=f"variants[{i}]")
                   for i, v in enumerate(request.variants)]
        sequences = [w.ref for w in windows] + [w.alt for w in windows]
        s = await self.score_windows(sequences, resolved, biological_only=request.biological_only,
                                     reverse_complement=request.reverse_complement)
        n = len(windows)
        ref_p, alt_p = s.probability[:n].tolist(), s.probability[n:].tolist()
        ref_l, alt_l = s.logit[:n].tolist(), s.logit[n:].tolist()
        d_prob = (s.probability[n:] - s.probability[:n]).tolist()
        d_logit = (s.logit[n:] - s.logit[:n]).tolist()
        d_bio = (s.logit_bio[n:] - s.logit_bio[:n]).tolist()
        d_tech = (s.logit_tech[n:] - s.logit_tech[:n]).tolist()
        tracks = [c.track for c in resolved]
        results = []
        for i, (variant, window) in enumerate(zip(request.variants, windows)):
            results.append({
                "index": i, "id": variant.id or f"{variant.chrom}:{variant.pos}:{variant.ref}>{variant.alt}",
                "chrom": variant.chrom, "pos": variant.pos, "ref": variant.ref, "alt": variant.alt,
                "window_start": window.window_start,
                "effects": [{"condition": k, "track": tracks[k],
                             "ref_probability": ref_p[i][k], "alt_probability": alt_p[i][k],
                             "ref_logit": ref_l[i][k], "alt_logit": alt_l[i][k],
                             "delta_probability": d_prob[i][k], "delta_logit": d_logit[i][k],
                             "delta_logit_bio": d_bio[i][k], "delta_logit_tech": d_tech[i][k]}
                            for k in range(len(resolved))],
            })
        return {"model": self.card.model_name, "backend": self.backend.name,
                "biological_only": request.biological_only, "reverse_complement": request.reverse_complement,
                "conditions": [c.to_json(k) for k, c in enumerate(resolved)], "results": results}

    def metadata(self) -> dict[str, Any]:
        variables = []
        for v in self.repository.codec.variables:
            entry: dict[str, Any] = {"name": v.name, "type": v.type, "group": v.group}
            if v.type in ("category", "multilabel"):
                entry["allowed"] = list(v.vocabulary)
            else:
                entry["mean"], entry["std"] = v.mean, v.std
                entry["min"], entry["max"] = numeric_range(v.mean, v.std)
            variables.append(entry)
        return {
            "model": self.card.model_name, "seq_len": self.card.seq_len, "d_tech": self.card.d_tech,
            "d_bio": self.card.d_bio, "reverse_complement_average": self.card.reverse_complement_average,
            "backend": self.backend.name,
            "genome": dict(self.genome.lengths) if self.genome is not None else None,
            "limits": {"max_sequences": self.settings.max_sequences, "max_conditions": self.settings.max_conditions,
                       "max_inflight": self.settings.max_inflight, "max_body_bytes": self.settings.max_body_bytes},
            "variables": variables,
            "tracks": [{"id": t.id, "metadata": t.metadata} for t in self.card.tracks],
        }
