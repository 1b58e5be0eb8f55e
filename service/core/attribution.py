"""Service layer (core): attribution requests on one Engine: checks, limits, ISM through the micro-batcher,
gradient methods on a worker thread.

Every front door (REST `/attribute`, the in-process `mfd.Model`, the batch tool) hands an `Attributor` the
engine's own windows and resolved conditions plus `AttributeOptions`, and gets an `Attribution`
(service.core.attributions: maps [N, K, P, W, 4]). What happens here and why:

* **Checks first, nothing computed on a refused request.** `method`, `parts`, `window`, `steps` and `baseline`
  are checked by the attribution modules (`AttributionInputError`, re-raised as `RequestError` naming the
  field: HTTP 422); a gradient method on a forward-only backend (Triton) is refused naming `method`; then the
  request's cost is compared with two limits (settings): `max_attribution_passes` (ISM forward passes, or
  forward+backward trunk rows for the gradient methods) and `max_attribution_floats` (N × K × P × W × 4 map
  values in the answer). Both are 422s naming `sequences` / `conditions` and saying what to shrink.
* **ISM through `Engine.features`**, i.e. the micro-batcher: mutated windows share trunk calls with /predict
  traffic, and a cancelled request (client gone) stops its chunks. The weights are the engine's cached ones
  (track biases applied), so `score` equals /predict's scoring of the same sequence.
* **Gradient methods on one worker thread of their own** (never the event loop): `TrunkGradients` loads its
  own copy of the TorchScript trunk on first use (the demo trunk is 0.3 MB) and runs blocking torch autograd.
  One thread, so concurrent gradient requests queue instead of oversubscribing the CPU.
"""
from __future__ import annotations

import asyncio
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, Sequence

import numpy as np

from ..errors import RequestError
from .attributions import (GRADIENT_METHODS, Attribution, AttributionInputError, check_method, check_parts,
                           check_window, ism, ism_window_count)
from .conditions import ResolvedCondition
from .domain import Windows


@dataclass(frozen=True)
class AttributeOptions:
    """How to attribute: the method, the parts (None: all three), the window (None: the whole sequence),
    strand averaging as /predict's `reverse_complement`, and integrated gradients' `steps` and `baseline`."""

    method: str = "ism"
    parts: Sequence[str] | None = None
    window: Any = None
    reverse_complement: bool = False
    steps: int | None = None
    baseline: str = "zero"


@dataclass(frozen=True)
class AttributionPlan:
    """A checked request: what will be computed and what it costs."""

    method: str
    parts: tuple[str, ...]
    start: int
    end: int
    passes: int
    floats: int


def request_error(exc: AttributionInputError) -> RequestError:
    return RequestError(exc.field, exc.message, exc.allowed)


class Attributor:
    """Attribution maps for one Engine (its backend, batcher, condition cache and card)."""

    def __init__(self, engine: Any):
        self.engine = engine
        self._gradients: Any = None
        self._executor: ThreadPoolExecutor | None = None

    # ---- checks ----------------------------------------------------------------------------------------
    def plan(self, tokens: np.ndarray, n_conditions: int, options: AttributeOptions) -> AttributionPlan:
        """Check every option and the request's cost against the limits; RequestError (422) naming the field."""
        from .attribution_gradients import (DEFAULT_STEPS, check_baseline, check_steps,
                                            require_gradient_backend)

        engine, settings = self.engine, self.engine.settings
        try:
            method = check_method(options.method)
            parts = check_parts(options.parts)
            start, end = check_window(options.window, tokens.shape[1])
            if method in GRADIENT_METHODS:
                require_gradient_backend(method, engine.backend.name)
                steps = check_steps(DEFAULT_STEPS if options.steps is None else options.steps)
                check_baseline(options.baseline)
            elif options.steps is not None:
                raise AttributionInputError("steps", "applies to integrated_gradients only")
        except AttributionInputError as exc:
            raise request_error(exc) from None
        n, width = tokens.shape[0], end - start
        if method == "ism":
            passes = ism_window_count(tokens, (start, end), reverse_complement=self._ism_paired(options))
        else:
            nodes = steps if method == "integrated_gradients" else 1
            d = engine.card.d_tech + engine.card.d_bio
            strands = 2 if options.reverse_complement or engine.card.reverse_complement_average else 1
            passes = n * nodes * min(n_conditions * len(parts), d) * strands
        if passes > settings.max_attribution_passes:
            what = "forward passes" if method == "ism" else "forward+backward trunk rows"
            raise RequestError("sequences", f"{n} sequence(s) × a {width}-base window need {passes} {what} with "
                               f"{method}, over this server's limit of {settings.max_attribution_passes} per "
                               "request (MFD_MAX_ATTRIBUTION_PASSES): send fewer sequences or a smaller window")
        floats = n * n_conditions * len(parts) * width * 4
        if floats > settings.max_attribution_floats:
            raise RequestError("conditions", f"{n} sequence(s) × {n_conditions} condition(s) × {len(parts)} "
                               f"part(s) × {width} positions × 4 bases = {floats} map values, over this server's "
                               f"limit of {settings.max_attribution_floats} per response "
                               "(MFD_MAX_ATTRIBUTION_FLOATS): ask for fewer conditions, parts or a smaller window")
        return AttributionPlan(method, parts, start, end, passes, floats)

    def _ism_paired(self, options: AttributeOptions) -> bool:
        # A trunk exported with strand averaging already averages inside (as Engine.score reasons).
        return options.reverse_complement and not self.engine.card.reverse_complement_average

    # ---- work ------------------------------------------------------------------------------------------
    async def attribute(self, windows: Windows, conditions: Sequence[ResolvedCondition],
                        options: AttributeOptions = AttributeOptions()) -> Attribution:
        """Maps [N, K, P, W, 4] of `windows` under `conditions`; computed in full or not at all."""
        engine = self.engine
        plan = self.plan(windows.tokens, len(conditions), options)
        weights = await engine.conditions.weights(conditions)
        if plan.method == "ism":  # Engine.features: the micro-batcher, shared with /predict traffic
            result = await ism(windows.tokens, engine.features, weights, engine.card.d_tech, parts=plan.parts,
                               window=(plan.start, plan.end), reverse_complement=self._ism_paired(options))
        else:
            result = await self._gradient(plan, windows.tokens, weights, options)
        if not (np.isfinite(result.maps).all() and np.isfinite(result.score).all()):
            raise ArithmeticError("the model produced non-finite attributions")
        return result

    async def _gradient(self, plan: AttributionPlan, tokens: np.ndarray, weights: Any,
                        options: AttributeOptions) -> Attribution:
        loop = asyncio.get_running_loop()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mfd-gradients")
        grads = await loop.run_in_executor(self._executor, self._load_gradients)
        common = {"parts": plan.parts, "window": (plan.start, plan.end),
                  "reverse_complement": options.reverse_complement}
        if plan.method == "gradient_x_input":
            run = partial(grads.gradient_x_input, tokens, weights, **common)
        else:
            from .attribution_gradients import DEFAULT_STEPS

            run = partial(grads.integrated_gradients, tokens, weights, **common, baseline=options.baseline,
                          steps=DEFAULT_STEPS if options.steps is None else options.steps)
        return await loop.run_in_executor(self._executor, run)

    def _load_gradients(self) -> Any:
        if self._gradients is None:
            from .attribution_gradients import TrunkGradients

            engine = self.engine
            self._gradients = TrunkGradients.from_file(engine.repository.trunk_path, engine.card.d_tech,
                                                       device=engine.settings.device)
        return self._gradients

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


_ATTRIBUTORS: "weakref.WeakKeyDictionary[Any, Attributor]" = weakref.WeakKeyDictionary()


def attributor_for(engine: Any) -> Attributor:
    """The one Attributor of `engine` (HTTP and gRPC share it: one gradient thread, one trunk copy per engine)."""
    attributor = _ATTRIBUTORS.get(engine)
    if attributor is None:
        attributor = _ATTRIBUTORS[engine] = Attributor(engine)
    return attributor
