"""API layer (in-process): `mfd.Model.load(repository)`, the embedded engine behind the same methods as `Client`.

NOT BUILT YET. The service's engine (service/engine.py and service/backends/) is being refactored into a
transport-neutral data plane; the in-process model will wrap that engine once it has settled, so that
`Model.load(repo).predict(...)` returns exactly the DataFrame `Client(url).predict(...)` returns (both go
through `mfd.frames`). Until then this class only states the intended surface and refuses to run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


class Model:
    """The embedded engine (planned): `predict`, `predict_variants`, `attribute`, `metadata` as in `mfd.Client`."""

    @classmethod
    def load(cls, repository: str | Path, **settings: Any) -> "Model":
        """Load an exported model repository (model_card.json + TorchScript) in this process. Not built yet."""
        raise NotImplementedError(
            "mfd.Model.load is not available yet (the embedded engine is being refactored); serve the repository "
            "(`mfd-serve`, MFD_MODEL_REPOSITORY=...) and use mfd.Client(url) meanwhile")
