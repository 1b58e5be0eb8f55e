"""Service layer (core): the engine's typed inputs and results, free of any wire format.

Front doors (service.api: REST JSON, KServe v2 tensors, typed gRPC; service.batch) parse their wire format into
these plain dataclasses, call the Engine, and serialise what it returns. The arrays inside are the `Scores` of
service.core.scoring, defined once; nothing here knows JSON, protobuf or pydantic.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .conditions import ResolvedCondition
from .effects import EnsembleSpec, Effects
from .scoring import Scores
from .variants import VariantSpec


@dataclass(frozen=True)
class ScoreOptions:
    """How windows are scored: `biological_only` holds the technical features at their mean (0);
    `reverse_complement` averages each window with its reverse complement (each strand scored on its own)."""

    biological_only: bool = False
    reverse_complement: bool = False


@dataclass(frozen=True)
class GenomicInterval:
    """A window of the configured genome, BED-style (0-based start, exclusive end)."""

    chrom: str
    start: int
    end: int
    id: str | None = None  # echoed as the window's id; `chrom:start-end` when None


@dataclass(frozen=True)
class Windows:
    """Windows to score: uint8 tokens [N, seq_len], an id per window and, when read from the genome, its interval."""

    tokens: np.ndarray
    ids: list[str]
    intervals: list[GenomicInterval] | None = None


@dataclass(frozen=True)
class Prediction:
    """A scored predict call: the conditions as understood, the windows and their [N, K] scores (with features)."""

    conditions: list[ResolvedCondition]
    windows: Windows
    scores: Scores
    options: ScoreOptions


@dataclass(frozen=True)
class VariantEffects:
    """Scored variants: each one's ref-window start, and the ensembled ref/alt scores (`effects.delta(q)` [V, K])."""

    conditions: list[ResolvedCondition]
    variants: list[VariantSpec]
    window_starts: list[int]
    effects: Effects
    spec: EnsembleSpec
    biological_only: bool
