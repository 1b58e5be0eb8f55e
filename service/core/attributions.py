"""Service layer (core): in-silico mutagenesis (ISM) maps of the logit and of its biological and technical parts.

    tokens [N, L] ─► mutated windows (3 per position, 4 at an N) ─► Backend.features, chunked and async
                 ─► scores of every part × condition from the same features ─► maps [N, K, P, W, 4]

MFD's logit is `f_bio·w_bio + f_tech·w_tech + bias` (service.core.scoring), so one forward pass per mutated window
gives every part and every condition: the features are computed once and the K × P scores are two matmuls.
Only `Backend.features` and the head's `HeadWeights` are used, so ISM runs on any backend (embedded or Triton).

Definition, per sequence n, condition k, part j, position p (in the window) and base b (A, C, G, T):

    map[n, k, j, p, b] = score_j,k(sequence with base b at p) − score_j,k(sequence)

* At the sequence's own base the entry is exactly 0.0 (the unmutated score minus itself; no forward pass).
* At an N the sequence has no own base: all four bases are substitutions, each scored (4 passes, not 3), so the
  map says what each base would do where the reference is unknown. The window's tokens come back in
  `Attribution.tokens` so a caller can tell these positions apart.
* The bias has no effect on any difference, so the `logit` map is the `logit_bio` map plus the `logit_tech`
  map up to float rounding (unlike the gradient maps' additivity, not a property worth a promise).
* `window=(start, end)` (0-based, end exclusive) mutates only those positions: 3 × (end − start) windows, so a
  5% window costs about 5% of a full map. The returned maps cover the window only (axis W = end − start);
  positions outside it are absent, not zero.

Axis order of `Attribution.maps` is [sequence, condition, part, position, base]: maps[n, k, j] is the issue's
`[L][4]` map for one sequence, condition and part, and a JSON response nests the same way.

Gradient methods (gradient × input, integrated gradients) need the TorchScript trunk in-process:
service.core.attribution_gradients. Input checks raise `AttributionInputError` naming the request field.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Sequence

import numpy as np

from mfd_common import tokens as dna

PARTS = ("logit", "logit_bio", "logit_tech")
METHODS = ("ism", "gradient_x_input", "integrated_gradients")
GRADIENT_METHODS = ("gradient_x_input", "integrated_gradients")
BASES = "ACGT"
#: Mutated windows per `features` call: the exported trunk's Triton max_batch_size. Through the engine's
#: micro-batcher each chunk is split further into MFD_MAX_BATCH windows (16 on CPU, 64 on an accelerator).
DEFAULT_CHUNK = 256
#: Chunks in flight at once: 2 lets the next chunk be built (and, on Triton, sent) while one runs.
DEFAULT_IN_FLIGHT = 2

FeaturesFn = Callable[[np.ndarray], Awaitable[np.ndarray]]


class AttributionInputError(ValueError):
    """A request value the attribution code refuses; `field` names it (map to service.errors.RequestError)."""

    def __init__(self, field: str, message: str, allowed: Sequence[Any] | None = None):
        self.field, self.message, self.allowed = field, message, allowed
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True)
class Attribution:
    """Maps float32 [N, K, P, W, 4] over bases A, C, G, T for window [start, end) of each sequence.

    `score` [N, K, P] is each part's score of the unmutated sequence (for IG: of the input x); `baseline_score`
    is the IG baseline's score (None otherwise); `tokens` [N, W] are the window's bases (4 = N).
    """

    method: str
    parts: tuple[str, ...]
    start: int
    end: int
    maps: np.ndarray
    score: np.ndarray
    tokens: np.ndarray
    baseline_score: np.ndarray | None = None
    details: dict[str, Any] | None = None


    def for_sequence(self, n: int) -> dict[str, Any]:
        """One sequence's arrays keyed by part, ready for a transport: {"score": {part: [K]}, "maps": {part:
        [K, W, 4]}} (+ "baseline_score" and "completeness_gap" for IG). numpy arrays; the caller serialises."""
        def by_part(array: np.ndarray) -> dict[str, np.ndarray]:
            return {part: array[:, j] for j, part in enumerate(self.parts)}
        out: dict[str, Any] = {"score": by_part(self.score[n]), "maps": by_part(self.maps[n])}
        if self.baseline_score is not None:
            out["baseline_score"] = by_part(self.baseline_score[n])
        if self.details and "completeness_gap" in self.details:
            out["completeness_gap"] = by_part(self.details["completeness_gap"][n])
        return out

    def per_base(self) -> np.ndarray:
        """float32 [N, K, P, W]: one contribution per base, for bigWig tracks.

        ISM: minus the mean effect of the three substitutions (what the reference base adds over the average
        alternative; NaN at an N, which has no reference base: a bigWig writer leaves it out). Gradient methods:
        the sum over the four bases (with the zero baseline, the own base's entry)."""
        if self.method != "ism":
            return self.maps.sum(axis=-1, dtype=np.float32)
        own = (self.tokens < 4)[:, None, None, :]                              # [N, 1, 1, W]
        with np.errstate(invalid="ignore"):
            value = -self.maps.sum(axis=-1, dtype=np.float64) / 3.0            # own entry is exactly 0
        return np.where(own, value, np.nan).astype(np.float32)


# ---- request checks ------------------------------------------------------------------------------------

def check_method(method: Any, field: str = "method") -> str:
    if not isinstance(method, str) or method not in METHODS:
        raise AttributionInputError(field, f"unknown attribution method {method!r}", METHODS)
    return method


def check_parts(parts: Sequence[str] | None, field: str = "parts") -> tuple[str, ...]:
    """The requested parts in the caller's order; None means all three."""
    if parts is None:
        return PARTS
    if isinstance(parts, str) or not isinstance(parts, Sequence):
        raise AttributionInputError(field, "must be a list of part names", PARTS)
    if len(parts) == 0:
        raise AttributionInputError(field, "must name at least one part (or be left out for all)", PARTS)
    for i, part in enumerate(parts):
        if part not in PARTS:
            raise AttributionInputError(f"{field}[{i}]", f"unknown part {part!r}", PARTS)
    if len(set(parts)) != len(parts):
        raise AttributionInputError(field, "names a part twice")
    return tuple(parts)


def check_window(window: Any, length: int, field: str = "window") -> tuple[int, int]:
    """(start, end) with 0 <= start < end <= length from None (the whole sequence), {start, end}, an object with
    .start/.end (the request's model) or a pair."""
    if length <= 0:
        raise AttributionInputError("sequences", "is empty: there is nothing to attribute")
    if window is None:
        return 0, length
    if isinstance(window, dict):
        start, end = window.get("start"), window.get("end")
    elif hasattr(window, "start") and hasattr(window, "end"):                # a pydantic model of the request
        start, end = window.start, window.end
    elif isinstance(window, Sequence) and not isinstance(window, str) and len(window) == 2:
        start, end = window
    else:
        raise AttributionInputError(field, "must be {start, end} (0-based, end exclusive)")
    for name, value in (("start", start), ("end", end)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise AttributionInputError(f"{field}.{name}", f"must be an integer, got {value!r}")
    start, end = int(start), int(end)
    if start < 0:
        raise AttributionInputError(f"{field}.start", f"must be >= 0, got {start}")
    if end > length:
        raise AttributionInputError(f"{field}.end", f"must be <= the sequence length {length}, got {end}")
    if start >= end:
        raise AttributionInputError(field, f"start ({start}) must be below end ({end}): the window is empty")
    return start, end


def check_tokens(tokens: np.ndarray, seq_len: int | None = None, field: str = "sequences") -> np.ndarray:
    """uint8 codes [N, L] (A,C,G,T,N = 0..4), N >= 1, L == seq_len when given."""
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or tokens.shape[0] == 0:
        raise AttributionInputError(field, f"must be a non-empty [N, L] block of windows, got shape {tokens.shape}")
    if tokens.shape[1] == 0:
        raise AttributionInputError(field, "is empty: there is nothing to attribute")
    if seq_len is not None and tokens.shape[1] != seq_len:
        raise AttributionInputError(field, f"windows must be {seq_len} bases long, got {tokens.shape[1]}")
    if not np.issubdtype(tokens.dtype, np.integer) or int(tokens.min()) < 0 or int(tokens.max()) > dna.N_CODE:
        raise AttributionInputError(field, "holds codes outside A,C,G,T,N = 0..4")
    return np.ascontiguousarray(tokens, dtype=np.uint8)


# ---- scoring -------------------------------------------------------------------------------------------

def part_scores(features: np.ndarray, d_tech: int, weights: Any, parts: Sequence[str]) -> np.ndarray:
    """float32 [n, K, P]: each part's score for every window × condition, in service.core.scoring's arithmetic."""
    features = np.asarray(features, dtype=np.float32)
    logit_bio = features[:, d_tech:] @ weights.w_bio.T
    logit_tech = features[:, :d_tech] @ weights.w_tech.T
    logit = logit_bio + logit_tech
    logit += np.asarray(weights.bias, dtype=np.float32).reshape(-1)[None, :]
    table = {"logit": logit, "logit_bio": logit_bio, "logit_tech": logit_tech}
    return np.stack([table[p] for p in parts], axis=2)


# ---- ISM -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Mutations:
    """Every (sequence, position, base) to score, references first (position −1), in chunk order."""

    row: np.ndarray   # [M] sequence index
    pos: np.ndarray   # [M] absolute position, −1 for the unmutated sequence
    base: np.ndarray  # [M] base code 0..3 (unused where pos == −1)


def plan_mutations(tokens: np.ndarray, start: int, end: int) -> Mutations:
    """N unmutated rows, then for each sequence and position in [start, end) every base but its own (all 4 at N)."""
    n = tokens.shape[0]
    window = tokens[:, start:end]                                      # [N, W]
    rows, positions, bases = np.meshgrid(np.arange(n), np.arange(start, end), np.arange(4), indexing="ij")
    keep = bases != window[:, :, None]                                 # [N, W, 4]: own base skipped; N keeps 4
    return Mutations(np.concatenate([np.arange(n), rows[keep]]),
                     np.concatenate([np.full(n, -1), positions[keep]]),
                     np.concatenate([np.zeros(n, dtype=np.int64), bases[keep]]))


def ism_window_count(tokens: np.ndarray, window: tuple[int, int] | None = None, *, reverse_complement: bool = False
                     ) -> int:
    """Forward passes an ISM request costs (for request limits, before computing anything)."""
    start, end = window if window is not None else (0, tokens.shape[1])
    own = int((tokens[:, start:end] < 4).sum())
    count = tokens.shape[0] * (1 + 4 * (end - start)) - own
    return count * (2 if reverse_complement else 1)


def mutated_windows(tokens: np.ndarray, mutations: Mutations, chunk: slice) -> np.ndarray:
    """uint8 [n, L]: the windows of one chunk of the plan."""
    rows = tokens[mutations.row[chunk]]                                # fancy indexing copies
    pos, base = mutations.pos[chunk], mutations.base[chunk]
    mutated = np.flatnonzero(pos >= 0)
    rows[mutated, pos[mutated]] = base[mutated]
    return rows


async def ism(tokens: np.ndarray, features: FeaturesFn, weights: Any, d_tech: int, *,
              parts: Sequence[str] | None = None, window: Any = None, reverse_complement: bool = False,
              chunk_size: int = DEFAULT_CHUNK, max_in_flight: int = DEFAULT_IN_FLIGHT) -> Attribution:
    """ISM maps [N, K, P, W, 4] for uint8 tokens [N, L] under HeadWeights `weights` (K conditions).

    `features` is any async tokens → features callable: `Backend.features`, or the engine's micro-batcher
    (`engine.batcher.submit`) so ISM shares batches with /predict traffic. With `reverse_complement`, every
    score is the mean over both strands, as /predict's `reverse_complement` (pass False when the trunk was
    exported with strand averaging: it already averages inside).
    """
    parts = check_parts(parts)
    tokens = check_tokens(tokens)
    start, end = check_window(window, tokens.shape[1])
    if chunk_size < 1 or max_in_flight < 1:
        raise ValueError("chunk_size and max_in_flight must be >= 1")
    plan = plan_mutations(tokens, start, end)
    total = plan.row.shape[0]
    scores = np.empty((total, np.asarray(weights.bias).size, len(parts)), dtype=np.float32)
    gate = asyncio.Semaphore(max_in_flight)

    async def run(begin: int) -> None:
        chunk = slice(begin, min(begin + chunk_size, total))
        async with gate:
            rows = mutated_windows(tokens, plan, chunk)
            if reverse_complement:
                n = rows.shape[0]
                both = np.concatenate([rows, dna.reverse_complement(rows)])
                paired = part_scores(await features(both), d_tech, weights, parts)
                scores[chunk] = 0.5 * (paired[:n] + paired[n:])
            else:
                scores[chunk] = part_scores(await features(rows), d_tech, weights, parts)

    tasks = [asyncio.ensure_future(run(b)) for b in range(0, total, chunk_size)]
    try:
        await asyncio.gather(*tasks)
    except BaseException:  # a failed chunk or a cancelled request (deadline): stop the chunks not yet run
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    n = tokens.shape[0]
    reference = scores[:n]                                             # [N, K, P]
    full = np.broadcast_to(reference[:, None, None, :, :], (n, end - start, 4) + reference.shape[1:]).copy()
    mutated = slice(n, total)                                          # [N, W, 4, K, P] filled where mutated
    full[plan.row[mutated], plan.pos[mutated] - start, plan.base[mutated]] = scores[mutated]
    full -= reference[:, None, None]
    maps = full.transpose(0, 3, 4, 1, 2)                               # → [N, K, P, W, 4]
    return Attribution("ism", parts, start, end, np.ascontiguousarray(maps, dtype=np.float32),
                       reference.copy(), tokens[:, start:end].copy(),
                       details={"forward_passes": total * (2 if reverse_complement else 1),
                                "reverse_complement": reverse_complement})
