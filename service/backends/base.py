"""Service layer (backends): the backend interface. Both backends run exactly the exported TorchScript, so results
agree to float noise."""
from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np


class BackendError(RuntimeError):
    """The model server failed the call for a reason of its own: a 500, logged with its cause."""


class BackendUnavailable(BackendError):
    """The model server could not be reached, or has no such model loaded: a 503, worth retrying later."""


class BackendTimeout(BackendError):
    """The model server did not answer within MFD_TRITON_TIMEOUT_S: a 504 (gRPC DEADLINE_EXCEEDED)."""


class BackendRejected(BackendError):
    """The model server refused the request's tensors (Triton INVALID_ARGUMENT / HTTP 400): a 422."""


@dataclass(frozen=True)
class HeadWeights:
    """Output weights for K conditions: w_tech [K, D_tech], w_bio [K, D_bio], bias [K] (float32)."""

    w_tech: np.ndarray
    w_bio: np.ndarray
    bias: np.ndarray


class Backend(abc.ABC):
    """tokens → features and condition codes → weights. Implementations must be safe to call concurrently."""

    name: str = "backend"

    async def start(self) -> None:
        """Load models / connect; called once from the service's start-up hook."""

    async def close(self) -> None:
        """Release resources."""

    async def ready(self) -> bool:
        return True

    @abc.abstractmethod
    async def features(self, tokens: np.ndarray) -> np.ndarray:
        """uint8 tokens [N, L] → float32 features [N, D_tech + D_bio] (technical first, batch-normalised)."""

    @abc.abstractmethod
    async def head(self, codes: np.ndarray) -> HeadWeights:
        """float32 condition codes [K, C] → output weights for those K conditions."""
