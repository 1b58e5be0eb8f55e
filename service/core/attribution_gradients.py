"""Service layer (core): gradient × input and integrated gradients of each logit part, on the dinucleotide input.

    tokens [N, L] ─trunk.onehot─► x float [N, 16, L−1] ─stem─► tower ─► dilated ─► crop ─► pointwise ─► bn ─► f
    part score s = v·f (+ bias);  v = [w_tech | w_bio] (logit), [0 | w_bio] (logit_bio), [w_tech | 0] (logit_tech)

Where the gradient is taken. The exported trunk (training.export.ExportedTrunk) takes uint8 tokens, which have
no gradient, but it is a scripted module whose submodules (`onehot`, `stem`, `tower`, `dilated_residual_block`,
`pointwise`, `bn_features`) and `crop` attribute are public TorchScript attributes. `TrunkGradients` calls
`onehot` to build the float dinucleotide input (16 channels, first base major, a pair touching N all zero) and
runs the remaining submodules on it with autograd, repeating ExportedTrunk.features's composition (and its strand
averaging when the trunk was exported with it). Because that repeats the export's wiring, the constructor checks
it: the float path must reproduce `trunk(tokens)` on seeded probe windows, or GradientEntryError says why.

Methods (one code path: a Gauss–Legendre quadrature of the gradient along x' + α(x − x'), times x − x'):
* gradient_x_input: x' = 0, one node at α = 1: (x ⊙ ∇s)(x).
* integrated_gradients: x' = 0 (the default: the all-zero input is the model's own all-N window, a real input
  whose score the service can report, and captum's default baseline) or "uniform" (1/16 in every channel,
  the expectation of a random dinucleotide); `steps` Gauss–Legendre nodes on [0, 1] (captum's default rule;
  default 64, see DEFAULT_STEPS).
  Completeness: Σ IG = s(x) − s(x') up to the quadrature error, which falls with `steps`.

Projection onto bases. Channel c = 4a + b at dinucleotide position i covers bases i (a) and i + 1 (b); its
attribution goes half to (position i, base a) and half to (position i + 1, base b). Every dinucleotide
attribution lands, in two equal halves, on the two bases it covers, so the base map sums to exactly what the
dinucleotide map sums to (completeness survives), and the projection is linear, so maps of logit_bio and
logit_tech add up to the logit map (the bias has no gradient). With x' = 0 the input is one-hot, so entries are
non-zero only at the sequence's own bases, and an N (all-zero input) gets 0. The end bases get one half only.
An order-1 trunk (4 single-base channels) needs no projection: its input already is the base map.

Every score direction v is a row of the basis when there are at most D of them (K × P ≤ D); otherwise the
gradients of the D features are taken once and contracted with the directions, so the cost never exceeds D
backward rows per quadrature node, whatever K is. Runs in fp32 on the trunk's device; this is blocking torch
work: call it from the backend's inference thread (or any worker thread), not from the event loop.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from mfd_common import tokens as dna

from .attributions import (GRADIENT_METHODS, Attribution, AttributionInputError, check_parts, check_tokens,
                           check_window, part_scores)

BASELINES = ("zero", "uniform")
#: Gauss–Legendre nodes. captum's default is 50; on the demo model the completeness gap at 50 nodes reached 7.6%
#: of max |s(x) − s(x')| on one of four random windows, at 64 it stayed within 0.4–3.4% on thirteen.
DEFAULT_STEPS = 64
MAX_STEPS = 512
#: Trunk rows (quadrature node × score direction) per forward/backward call. 64 windows of the C=30 demo model
#: take ~0.35 s forward+backward on one CPU thread; a C=768 model wants fewer on a small GPU.
DEFAULT_CHUNK = 64
SUBMODULES = ("onehot", "stem", "tower", "dilated_residual_block", "pointwise", "bn_features")
PROBE_ATOL = 1e-4

# Dinucleotide channel 4a + b of the reverse complement at position i is channel 4·comp(b) + comp(a) of the
# forward strand at position L − 2 − i (comp(x) = 3 − x).
# An order-1 (single-base) trunk's channel c of the reverse complement is channel 3 − c.
RC_CHANNELS = [4 * (3 - c % 4) + (3 - c // 4) for c in range(16)]
RC_CHANNELS_ORDER1 = [3, 2, 1, 0]


class GradientEntryError(RuntimeError):
    """The TorchScript trunk offers no differentiable float entry this module can use (see the message)."""


def require_gradient_backend(method: str, backend_name: str, field: str = "method") -> None:
    """Refuse a gradient method on a backend that serves forward passes only (Triton)."""
    if method in GRADIENT_METHODS and backend_name != "embedded":
        raise AttributionInputError(field, f"{method!r} needs gradients of the trunk, which this server's "
                                    f"{backend_name!r} backend (forward passes only) cannot give; use 'ism', or "
                                    f"a server with MFD_BACKEND=embedded", ("ism",))


def check_steps(steps: Any, field: str = "steps") -> int:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 1 <= int(steps) <= MAX_STEPS:
        raise AttributionInputError(field, f"must be an integer from 1 to {MAX_STEPS}, got {steps!r}")
    return int(steps)


def check_baseline(baseline: Any, field: str = "baseline") -> str:
    if baseline not in BASELINES:
        raise AttributionInputError(field, f"unknown baseline {baseline!r}", BASELINES)
    return baseline


def project_to_bases(dinucleotide: np.ndarray) -> np.ndarray:
    """[..., 16, L − 1] dinucleotide attributions → [..., L, 4] base attributions (half to each covered base).

    An order-1 model's [..., 4, L] input is already per base: only the axes are swapped."""
    *lead, channels, positions = dinucleotide.shape
    if channels == 4:
        return np.swapaxes(dinucleotide, -1, -2).astype(np.float64)
    pairs = dinucleotide.reshape(*lead, 4, 4, positions)               # [..., first base a, second base b, i]
    first = pairs.sum(axis=-2)                                         # [..., a, i]: base i
    second = pairs.sum(axis=-3)                                        # [..., b, i]: base i + 1
    bases = np.zeros((*lead, 4, positions + 1), dtype=np.float64)
    bases[..., :, :-1] += 0.5 * first
    bases[..., :, 1:] += 0.5 * second
    return np.swapaxes(bases, -1, -2)                                  # [..., L, 4]


def score_directions(weights: Any, d_tech: int, parts: Sequence[str]) -> np.ndarray:
    """float32 [K, P, D]: the vector v with part score = v·f (+ bias) for each condition and part."""
    w_tech, w_bio = np.asarray(weights.w_tech, np.float32), np.asarray(weights.w_bio, np.float32)
    zeros_t, zeros_b = np.zeros_like(w_tech), np.zeros_like(w_bio)
    table = {"logit": np.concatenate([w_tech, w_bio], 1), "logit_bio": np.concatenate([zeros_t, w_bio], 1),
             "logit_tech": np.concatenate([w_tech, zeros_b], 1)}
    return np.stack([table[p] for p in parts], axis=1)


class TrunkGradients:
    """Gradient attributions through an exported TorchScript trunk (tokens [N, L] → features [N, D])."""

    def __init__(self, trunk: torch.jit.ScriptModule, d_tech: int, *, chunk_size: int = DEFAULT_CHUNK,
                 check: bool = True):
        missing = [name for name in (*SUBMODULES, "crop") if not hasattr(trunk, name)]
        if missing:
            raise GradientEntryError(
                f"the trunk has no {', '.join(missing)}: gradients need the float dinucleotide input, which "
                "this TorchScript only builds internally; re-export it with training.export (ExportedTrunk keeps "
                "these submodules) or add a `@torch.jit.export def features_from_onehot(x)` method")
        self.trunk = trunk.eval()
        self.d_tech = int(d_tech)
        self.chunk_size = int(chunk_size)
        self.crop = int(trunk.crop)
        self.strand_average = bool(getattr(trunk, "reverse_complement_average", False))
        self.device = next(iter(trunk.parameters())).device
        with torch.no_grad():
            self.channels = int(trunk.onehot(torch.zeros((1, 2), dtype=torch.uint8, device=self.device)).shape[1])
        if self.channels not in (4, 16):
            raise GradientEntryError(f"the trunk's onehot gives {self.channels} channels; this module knows single "
                                     "bases (4) and dinucleotides (16)")
        self.rc_channels = RC_CHANNELS if self.channels == 16 else RC_CHANNELS_ORDER1
        if check:
            self._check_entry()

    @classmethod
    def from_file(cls, path: str | Path, d_tech: int, *, device: str = "cpu", **kwargs: Any) -> "TrunkGradients":
        return cls(torch.jit.load(str(path), map_location=device), d_tech, **kwargs)

    # ---- the differentiable entry --------------------------------------------------------------------
    def dinucleotides(self, tokens: np.ndarray) -> torch.Tensor:
        """uint8 tokens [N, L] → the trunk's own float input [N, 16, L − 1] (no gradient)."""
        with torch.no_grad():
            return self.trunk.onehot(torch.from_numpy(np.ascontiguousarray(tokens)).to(self.device)).float()

    def _core(self, x: torch.Tensor) -> torch.Tensor:
        t = self.trunk
        h = t.dilated_residual_block(t.tower(t.stem(x)))                  # [N, C, bins]
        h = h[:, :, self.crop:h.shape[2] - self.crop]                      # [N, C, 1]
        return t.bn_features(t.pointwise(h).flatten(1))                    # [N, D]

    def features(self, x: torch.Tensor, *, reverse_complement: bool = False) -> torch.Tensor:
        """Features [N, D] of float dinucleotide input [N, 16, L − 1], differentiable in x.

        Strand-averaged when the trunk was exported so (as trunk(tokens) is) or when the request asks for it."""
        if self.strand_average or reverse_complement:
            return 0.5 * (self._core(x) + self._core(x[:, self.rc_channels].flip(2)))
        return self._core(x)

    def _check_entry(self) -> None:
        rng = np.random.default_rng(0)
        tokens = rng.integers(0, 4, size=(2, int(getattr(self.trunk, "seq_len", 2177))), dtype=np.uint8)
        tokens[:, 100:103] = dna.N_CODE
        x = self.dinucleotides(tokens)
        if not torch.equal(self.dinucleotides(dna.reverse_complement(tokens)), x[:, self.rc_channels].flip(2)):
            raise GradientEntryError("the trunk's onehot is not the A,C,G,T-ordered (first base major) encoding "
                                     "this module's strand averaging and projection assume")
        with torch.no_grad():
            want = self.trunk(torch.from_numpy(tokens).to(self.device)).float()
            got = self.features(x)
        gap = float((got - want).abs().max())
        if not gap <= PROBE_ATOL:
            raise GradientEntryError(f"running the trunk's submodules on its float input gives features that differ "
                                     f"from trunk(tokens) by {gap:.3g} (> {PROBE_ATOL}): the export wires them "
                                     "differently from ExportedTrunk.features; gradients would be of another model")

    # ---- methods -------------------------------------------------------------------------------------
    def gradient_x_input(self, tokens: np.ndarray, weights: Any, *, parts: Sequence[str] | None = None,
                         window: Any = None, reverse_complement: bool = False) -> Attribution:
        """x ⊙ ∇s(x) per part and condition, projected onto bases: [N, K, P, W, 4]."""
        return self._attribute("gradient_x_input", tokens, weights, parts, window, reverse_complement,
                               nodes=np.ones(1), node_weights=np.ones(1), baseline="zero")

    def integrated_gradients(self, tokens: np.ndarray, weights: Any, *, parts: Sequence[str] | None = None,
                             window: Any = None, steps: int = DEFAULT_STEPS, baseline: str = "zero",
                             reverse_complement: bool = False) -> Attribution:
        """(x − x') ⊙ ∫₀¹ ∇s(x' + α(x − x')) dα with `steps` Gauss–Legendre nodes, projected onto bases."""
        steps, baseline = check_steps(steps), check_baseline(baseline)
        u, w = np.polynomial.legendre.leggauss(steps)
        return self._attribute("integrated_gradients", tokens, weights, parts, window, reverse_complement,
                               nodes=(u + 1) / 2, node_weights=w / 2, baseline=baseline)

    def _attribute(self, method: str, tokens: np.ndarray, weights: Any, parts: Sequence[str] | None, window: Any,
                   reverse_complement: bool, *, nodes: np.ndarray, node_weights: np.ndarray,
                   baseline: str) -> Attribution:
        parts = check_parts(parts)
        tokens = check_tokens(tokens)
        start, end = check_window(window, tokens.shape[1])
        n, (k, p) = tokens.shape[0], (np.asarray(weights.bias).size, len(parts))
        directions = score_directions(weights, self.d_tech, parts).reshape(k * p, -1)     # [M, D]
        dim = directions.shape[1]
        # Few directions: one backward row each. Many: the D feature gradients once, contracted afterwards.
        basis, mix = (directions, None) if k * p <= dim else (np.eye(dim, dtype=np.float32), directions)
        x = self.dinucleotides(tokens)                                                    # [N, 16, L − 1]
        x0 = torch.zeros_like(x) if baseline == "zero" else torch.full_like(x, 1.0 / self.channels)
        torch_basis = torch.from_numpy(basis).to(self.device)
        # Sequences in groups of about chunk_size trunk rows: the float64 gradient accumulator is
        # [group, R, 16, L − 1] (17 MB per sequence at R = 60), so memory stays flat however many are sent.
        group = max(1, -(-self.chunk_size // (basis.shape[0] * nodes.size)))
        maps = np.empty((n, k * p, end - start, 4), dtype=np.float32)
        sums = np.empty((n, k * p), dtype=np.float64)
        for g in range(0, n, group):
            sl = slice(g, g + group)
            grads = self._path_gradients(x[sl], x0[sl], torch_basis, nodes, node_weights,
                                         reverse_complement)                              # [g, R, 16, L − 1]
            dinuc = grads * (x[sl] - x0[sl]).cpu().numpy().astype(np.float64)[:, None]    # (x − x') ⊙ ∫∇
            rows = project_to_bases(dinuc)[:, :, start:end]                               # [g, R, W, 4]
            row_sums = dinuc.sum(axis=(2, 3))                                             # [g, R]
            if mix is not None:  # contract last: linear in the row, and [R, W, 4] ≪ [M, 16, L − 1]
                rows, row_sums = np.einsum("mr,nrwb->nmwb", mix, rows), row_sums @ mix.T.astype(np.float64)
            maps[sl], sums[sl] = rows, row_sums
        maps = maps.reshape(n, k, p, end - start, 4)                                      # [N, K, P, W, 4]
        with torch.no_grad():
            f = self.features(x, reverse_complement=reverse_complement).cpu().numpy()
            f0 = self.features(x0[:1], reverse_complement=reverse_complement).cpu().numpy()
        score = part_scores(f, self.d_tech, weights, parts)
        details = {"reverse_complement": reverse_complement, "baseline": baseline, "steps": int(nodes.size),
                   "dinucleotide_sum": sums.reshape(n, k, p).astype(np.float32)}         # [N, K, P]
        baseline_score = None
        if method == "integrated_gradients":
            baseline_score = np.broadcast_to(part_scores(f0, self.d_tech, weights, parts), score.shape).copy()
            # captum's "convergence delta": how far Σ IG is from s(x) − s(x'); shrinks as `steps` grows
            details["completeness_gap"] = (details["dinucleotide_sum"] - (score - baseline_score)).astype(np.float32)
        return Attribution(method, parts, start, end, maps, score, tokens[:, start:end].copy(), baseline_score,
                           details)

    def _path_gradients(self, x: torch.Tensor, x0: torch.Tensor, basis: torch.Tensor, nodes: np.ndarray,
                        node_weights: np.ndarray, reverse_complement: bool) -> np.ndarray:
        """float64 [N, R, 16, L − 1]: Σ_s w_s ∇(basis[r]·f)(x0 + α_s (x − x0)) for every sequence and basis row."""
        n, r, s = x.shape[0], basis.shape[0], nodes.size
        seq, node, row = (a.reshape(-1) for a in np.meshgrid(np.arange(n), np.arange(s), np.arange(r),
                                                              indexing="ij"))
        out = torch.zeros((n * r, *x.shape[1:]), dtype=torch.float64, device=self.device)
        alphas = torch.as_tensor(nodes, dtype=torch.float32, device=self.device)
        quad = torch.as_tensor(node_weights, dtype=torch.float32, device=self.device)
        with torch.inference_mode(False), torch.enable_grad():
            for begin in range(0, seq.size, self.chunk_size):
                sl = slice(begin, begin + self.chunk_size)
                i = torch.as_tensor(seq[sl], device=self.device)
                a = torch.as_tensor(node[sl], device=self.device)
                j = torch.as_tensor(row[sl], device=self.device)
                point = (x0[i] + alphas[a, None, None] * (x[i] - x0[i])).requires_grad_(True)
                f = self.features(point, reverse_complement=reverse_complement)          # [c, D]
                objective = (f * basis[j]).sum(dim=1) * quad[a]
                (grad,) = torch.autograd.grad(objective.sum(), point)
                out.index_add_(0, i * r + j, grad.double())
        return out.reshape(n, r, *x.shape[1:]).cpu().numpy()
