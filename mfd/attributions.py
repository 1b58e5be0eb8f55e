"""API layer (arrays): /attribute responses as numpy arrays with named axes, and how a call is cut into requests.

`Attributions.maps` is float32 [window, condition, part, position, base] (`axes` names them; `positions` are the
window's coordinates in the sequence, `bases` "ACGT"), `score` [window, condition, part] the sequences' scores.
The remote `mfd.Client` and the in-process `mfd.Model` both build it here from the same /attribute bodies (JSON
lists remotely, numpy arrays in-process), so the two return identical arrays. xarray is not a dependency; the
axis names travel as a tuple and `map(...)` / `logos(...)` pick by name.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from . import frames

AXES = ("window", "condition", "part", "position", "base")
ALL_PARTS = ("logit", "logit_bio", "logit_tech")


@dataclass
class Attributions:
    """Per-base attribution maps of windows × conditions × parts (see docs/attributions.md for each method)."""

    method: str
    parts: tuple[str, ...]
    start: int
    end: int
    maps: np.ndarray                                   # [window, condition, part, position, base]
    score: np.ndarray                                  # [window, condition, part]
    ids: list[str]
    sequences: list[str]                               # each window's bases, positions start … end − 1
    conditions: list[Any]
    condition_names: list[str]
    baseline_score: np.ndarray | None = None           # integrated_gradients only
    model: str | None = None
    axes: tuple[str, ...] = AXES
    bases: str = "ACGT"
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def positions(self) -> np.ndarray:
        """Coordinates of axis `position` in the sequence (0-based)."""
        return np.arange(self.start, self.end)

    def _index(self, axis: str, value: Any, labels: Sequence[Any]) -> int:
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            return int(value)
        if value in labels:
            return list(labels).index(value)
        raise KeyError(f"{axis}: {value!r} is not one of {list(labels)[:10]}")

    def map(self, part: str = "logit", window: int | str = 0, condition: int | str = 0) -> np.ndarray:
        """One [position, base] map; `window` by index or id, `condition` by index or name."""
        return self.maps[self._index("window", window, self.ids), self._index("condition", condition,
                                                                                self.condition_names),
                         self._index("part", part, self.parts)]

    def logos(self, window: int | str = 0, condition: int | str = 0, **kwargs: Any) -> Any:
        """Stacked logos full / biological / technical (mfd.plots.attribution_logos) of one window and condition.

        ISM maps are centred per position by default (the mean effect of a change drawn at 0); gradient maps
        are drawn at each position's own base."""
        from . import plots

        missing = [p for p in ALL_PARTS if p not in self.parts]
        if missing:
            raise ValueError(f"parts: logos need all three parts; this result lacks {', '.join(missing)}")
        w = self._index("window", window, self.ids)
        k = self._index("condition", condition, self.condition_names)
        kwargs.setdefault("center", self.method == "ism")
        if self.method != "ism":
            kwargs.setdefault("sequence", self.sequences[w])
        kwargs.setdefault("start", self.start)
        kwargs.setdefault("title", f"{self.ids[w]} · {self.condition_names[k]} · {self.method}")
        return plots.attribution_logos(*(self.map(p, w, k) for p in ALL_PARTS), **kwargs)


def request_plan(*, n: int, k: int, width: int, parts: int, method: str, steps: int | None, strands: int,
                 limits: dict[str, int], batch_size: int | None = None) -> tuple[int, int]:
    """(windows, conditions) per /attribute request so that each fits the server's limits.

    Costs as the server counts them (service.core.attribution), taken at their upper bounds: ISM (1 + 4W) forward
    passes per window, gradient methods nodes × K × P rows per window; map values N × K × P × W × 4."""
    max_sequences = limits.get("max_sequences", 256)
    max_conditions = limits.get("max_conditions", 512)
    passes_limit = limits.get("max_attribution_passes", 16384)
    floats_limit = limits.get("max_attribution_floats", 4 * 1024 * 1024)
    per_condition = parts * width * 4
    k_per = max(1, min(k, max_conditions, floats_limit // per_condition))
    if method == "ism":
        per_window = (1 + 4 * width) * strands
    else:
        nodes = (steps or 64) if method == "integrated_gradients" else 1
        per_window = nodes * k_per * parts * strands
    n_per = max(1, min(n, max_sequences, passes_limit // per_window, floats_limit // (k_per * per_condition)))
    if batch_size is not None:
        n_per = max(1, min(n_per, batch_size))
    return n_per, k_per


def combine(blocks: list[list[dict[str, Any]]], conditions: Sequence[Any]) -> Attributions:
    """One Attributions from /attribute bodies: `blocks[i][j]` answers window chunk i × condition chunk j."""
    first = blocks[0][0]
    parts = tuple(first["parts"])
    ig = first["results"][0].get("baseline_score") is not None

    def stack(key: str, body: dict[str, Any]) -> np.ndarray:
        # [n, K, P, ...] from results[n][key][part] = [K, ...]
        return np.stack([np.stack([np.asarray(r[key][p], dtype=np.float32) for p in parts], axis=1)
                         for r in body["results"]])

    maps, score, baseline, ids, sequences = [], [], [], [], []
    for row in blocks:
        maps.append(np.concatenate([stack("maps", body) for body in row], axis=1))
        score.append(np.concatenate([stack("score", body) for body in row], axis=1))
        if ig:
            baseline.append(np.concatenate([stack("baseline_score", body) for body in row], axis=1))
        ids += [r["id"] for r in row[0]["results"]]
        sequences += [r["sequence"] for r in row[0]["results"]]
    return Attributions(first["method"], parts, first["window"]["start"], first["window"]["end"],
                        np.concatenate(maps), np.concatenate(score), ids, sequences, list(conditions),
                        [frames.condition_name(c) for c in conditions],
                        np.concatenate(baseline) if ig else None, first.get("model"),
                        details={"reverse_complement": first.get("reverse_complement"),
                                 "conditions": [c for body in blocks[0] for c in body["conditions"]]})
