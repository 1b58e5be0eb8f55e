"""API layer: `import mfd`, the one import name of the Python API for notebooks and scripts.

- `mfd.Client("http://host:3000")`: the remote half, over the service's REST API (needs the `client` extra:
  httpx, pandas). `predict`, `predict_variants`, `metadata` return pandas DataFrames / dicts; requests are split
  to fit the server's limits and sent one after the other, with an optional progress bar.
- `mfd.Model.load(repository)`: the in-process half (the embedded engine, no server), with the same methods
  and the same results (mfd/model.py).
- `attribute(...)` on both: per-base maps as `mfd.attributions.Attributions` (numpy arrays with named axes).
- `mfd.plots`: attribution logos and variant-effect plots (the `plots` extra: matplotlib, logomaker).

Console scripts (mfd-serve, mfd-train, …) are wrappers in `mfd.cli`. Names are imported lazily, so
`import mfd` needs none of the optional dependencies.
"""
from __future__ import annotations

from typing import Any

__all__ = ["Client", "Model", "ServiceError"]


def __getattr__(name: str) -> Any:
    if name in ("Client", "ServiceError"):
        from . import client

        return getattr(client, name)
    if name == "Model":
        from .model import Model

        return Model
    raise AttributeError(f"module 'mfd' has no attribute {name!r}")
