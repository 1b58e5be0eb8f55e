"""Service layer (backends): model backends: the same two calls (tokens → features, codes → weights) in-process or
through Triton."""
from __future__ import annotations

from ..repository import ModelRepository
from ..settings import Settings
from .base import Backend, BackendError, BackendRejected, BackendTimeout, BackendUnavailable, HeadWeights


def create_backend(settings: Settings, repository: ModelRepository) -> Backend:
    """Instantiate the configured backend (imports lazily so the embedded path never needs tritonclient)."""
    if settings.backend == "triton":
        from .triton import TritonBackend
        return TritonBackend(settings, repository)
    from .embedded import EmbeddedBackend
    return EmbeddedBackend(settings, repository)


__all__ = ["Backend", "BackendError", "BackendRejected", "BackendTimeout", "BackendUnavailable", "HeadWeights",
           "create_backend"]
