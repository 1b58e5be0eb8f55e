"""Service layer (backends): model backends: the same two calls (tokens → features, codes → weights) in-process or
through Triton."""
from __future__ import annotations

from ..repository import ModelRepository
from ..settings import Settings
from .base import Backend, BackendError, BackendRejected, BackendTimeout, BackendUnavailable, HeadWeights


def create_backend(settings: Settings, repository: ModelRepository,
                   triton_names: dict[str, str] | None = None) -> Backend:
    """Instantiate the configured backend (imports lazily so the embedded path never needs tritonclient).

    `triton_names` maps the parts (mfd_trunk, mfd_head) to the Triton models serving them
    (mfd_common.triton_repository.triton_names: `<name>__mfd_trunk` in a folder of models); default: the parts'
    own names (a single-model repository)."""
    if settings.backend == "triton":
        from .triton import TritonBackend
        return TritonBackend(settings, repository, triton_names)
    from .embedded import EmbeddedBackend
    return EmbeddedBackend(settings, repository)


__all__ = ["Backend", "BackendError", "BackendRejected", "BackendTimeout", "BackendUnavailable", "HeadWeights",
           "create_backend"]
