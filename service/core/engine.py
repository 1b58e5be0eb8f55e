"""Service layer (core): the scoring engine of one model: windows × conditions → `Scores` arrays.

One Engine per model and worker process owns the backend, the micro-batcher, the condition cache and the genome.
It takes typed domain inputs (service.core.domain: token windows, intervals, VariantSpecs, resolved conditions,
options) and returns arrays (`Scores`, `Prediction`, `VariantEffects`); it imports no wire format. The front doors
in service.api (REST JSON, KServe v2 tensors, typed gRPC) and service.batch parse into these types and serialise
from the arrays (docs/architecture.md). Every result is computed in full before anything is returned, so a failure
never yields a half-written response.

Several models in one process (issue 20) means one Engine each, keyed by `Engine.name` by whoever routes: nothing
here is global. Attribution (issue 21) belongs beside it in service.core: in-silico mutagenesis is batches of
mutated token windows through `features` (the micro-batcher) and `score`; gradient methods need the embedded
backend's TorchScript trunk.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from mfd_common import tokens as dna

from ..backends import Backend, create_backend
from ..errors import RequestError
from ..repository import ModelRepository, load_repository
from ..settings import Settings
from .batcher import MicroBatcher
from .conditions import ConditionInput, ConditionResolver, ResolvedCondition
from .domain import GenomicInterval, Prediction, ScoreOptions, VariantEffects, Windows
from .effects import Effects, EnsembleSpec, crops, encode_windows, ensembled_scores, split_effects
from .genome import Genome
from .scoring import Scores, score
from .variants import VariantSpec, VariantWindows, variant_windows


class Engine:
    def __init__(self, settings: Settings, repository: ModelRepository | None = None,
                 backend: Backend | None = None, *, name: str | None = None):
        self.settings = settings
        self.repository = repository or load_repository(settings.model_repository,
                                                        require_models=settings.backend == "embedded")
        self.card = self.repository.card
        # The name requests route by (service.core.models): the repository's name for the model, which in a
        # folder of models is the subdirectory's, not necessarily the card's `model_name`.
        self._name = name or self.card.model_name
        self.backend = backend or create_backend(settings, self.repository)
        self.active_requests = 0  # requests between parse and response; tells the batcher whether to wait
        self.batcher = MicroBatcher(self.backend.features, backend=self.backend.name,
                                    max_batch=settings.max_batch, max_wait_s=settings.batch_wait_ms / 1000.0,
                                    active=lambda: self.active_requests, model=self._name)
        self.conditions = ConditionResolver(self.card, self.repository.codec, self.backend,
                                            settings.condition_cache_size, model=self._name)
        self.genome = Genome(settings.fasta) if settings.fasta else None

    @property
    def name(self) -> str:
        """The served model's name: the key the model registry (service.core.models) routes by."""
        return self._name

    @property
    def genome_variable(self) -> str:
        """The per-model FASTA variable of this model (docs/multi-model.md)."""
        from mfd_common.model_store import model_env_var

        try:
            return model_env_var("MFD_FASTA", self._name)
        except ValueError:
            return "MFD_FASTA_<NAME>"

    @property
    def seq_len(self) -> int:
        """Window length in bases."""
        return self.card.seq_len

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

    # ---- inputs -------------------------------------------------------------------------------------------
    def resolve_conditions(self, values: Sequence[ConditionInput], prefix: str = "conditions") \
            -> list[ResolvedCondition]:
        """Decoded condition values (track ids or metadata mappings) → resolved conditions; RequestError names
        `<prefix>[i]…` on the first bad one."""
        return self.conditions.parse_many(values, prefix)

    def require_genome(self, field: str) -> Genome:
        if self.genome is None:
            raise RequestError(field, f"this server has no reference genome configured for model {self.name!r} "
                               f"(MFD_FASTA, or {self.genome_variable} for this model)", kind="no_genome")
        return self.genome

    def sequence_windows(self, sequences: Sequence[str], ids: Sequence[str] | None = None) -> Windows:
        """Windows from validated sequences (A/C/G/T/N, each seq_len long); ids default to their positions."""
        return Windows(dna.encode_many(list(sequences)),
                       list(ids) if ids else [str(i) for i in range(len(sequences))])

    def interval_windows(self, intervals: Sequence[GenomicInterval], field: str = "intervals") -> Windows:
        """Windows read from the configured genome (RequestError naming `field[i]` for a bad interval)."""
        genome = self.require_genome(field)
        sequences = [genome.fetch(i.chrom, i.start, i.end, field=f"{field}[{n}]") for n, i in enumerate(intervals)]
        ids = [i.id or f"{i.chrom}:{i.start}-{i.end}" for i in intervals]
        return Windows(dna.encode_many(sequences), ids, list(intervals))

    # ---- scoring ------------------------------------------------------------------------------------------
    async def features(self, token_rows: np.ndarray) -> np.ndarray:
        """Trunk features [N, D_tech + D_bio] of uint8 tokens [N, seq_len], through the micro-batcher."""
        self.active_requests += 1
        try:
            return await self.batcher.submit(token_rows)
        finally:
            self.active_requests -= 1

    async def score(self, token_rows: np.ndarray, conditions: Sequence[ResolvedCondition],
                    options: ScoreOptions = ScoreOptions()) -> Scores:
        """Scores [N, K] (and the features) for uint8 tokens [N, seq_len] × conditions; tokens already valid.

        The one scoring path behind every front door: JSON sequences are encoded into tokens first, the binary
        gRPC path hands its UINT8 tensor straight in. Whole-array work only, no per-window Python.
        """
        self.active_requests += 1
        try:
            weights = await self.conditions.weights(conditions)  # usually cache hits; misses batch into one call
            # A trunk exported with strand averaging (card.reverse_complement_average) already averages both
            # strands' features inside; averaging again would only double the work.
            paired = options.reverse_complement and not self.card.reverse_complement_average
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
        scores = score(features, self.card.d_tech, weights, biological_only=options.biological_only)
        return scores.mean_groups(2) if paired else scores

    async def predict(self, windows: Windows, conditions: Sequence[ResolvedCondition],
                      options: ScoreOptions = ScoreOptions()) -> Prediction:
        return Prediction(list(conditions), windows, await self.score(windows.tokens, conditions, options), options)

    async def crop_features(self, long_tokens: np.ndarray, spec: EnsembleSpec) -> np.ndarray:
        """Trunk features [N × shifts × strands, D] of every shifted crop on each strand of windows read
        `spec.read_length(seq_len)` long, in `service.core.effects.crops` order, through the micro-batcher."""
        return await self.features(crops(long_tokens, self.card.seq_len, spec))

    async def score_ensembled(self, long_tokens: np.ndarray, conditions: Sequence[ResolvedCondition],
                              spec: EnsembleSpec, *, biological_only: bool) -> Scores:
        """Ensembled scores [N, K] (service.core.effects): each quantity averaged over the crops of each window."""
        weights = await self.conditions.weights(conditions)
        features = await self.crop_features(long_tokens, spec)
        return ensembled_scores(features, self.card.d_tech, weights, spec, biological_only=biological_only)

    # ---- variants -----------------------------------------------------------------------------------------
    def variant_window(self, variant: VariantSpec, spec: EnsembleSpec, *, field: str) -> VariantWindows:
        """Ref and alt windows `spec.read_length(seq_len)` long centred on `variant`, REF checked against the
        genome (RequestError naming `field` otherwise)."""
        genome = self.require_genome(field)
        return variant_windows(genome, variant.chrom, variant.pos, variant.ref, variant.alt,
                               spec.read_length(self.card.seq_len), field=field)

    async def effects(self, windows: Sequence[VariantWindows], conditions: Sequence[ResolvedCondition],
                      spec: EnsembleSpec, *, biological_only: bool) -> Effects:
        """Ensembled ref and alt scores of each variant's windows (alt − ref via `Effects.delta`)."""
        tokens = encode_windows([w.ref for w in windows] + [w.alt for w in windows])
        return split_effects(await self.score_ensembled(tokens, conditions, spec, biological_only=biological_only),
                             len(windows))

    async def variant_effects(self, variants: Sequence[VariantSpec], conditions: Sequence[ResolvedCondition],
                              spec: EnsembleSpec, *, biological_only: bool, field: str = "variants") -> VariantEffects:
        windows = [self.variant_window(v, spec, field=f"{field}[{i}]") for i, v in enumerate(variants)]
        effects = await self.effects(windows, conditions, spec, biological_only=biological_only)
        return VariantEffects(list(conditions), list(variants), [w.window_start for w in windows], effects, spec,
                              biological_only)

    def limits(self) -> dict[str, Any]:
        """The request limits this engine's front doors enforce."""
        return {"max_sequences": self.settings.max_sequences, "max_conditions": self.settings.max_conditions,
                "max_inflight": self.settings.max_inflight, "max_body_bytes": self.settings.max_body_bytes,
                "max_attribution_passes": self.settings.max_attribution_passes,
                "max_attribution_floats": self.settings.max_attribution_floats}
