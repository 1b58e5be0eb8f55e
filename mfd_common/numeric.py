"""Contract (mfd_common): numerics training and serving must agree on.

`sigmoid` turns logits into probabilities identically on both sides. `numeric_range` is the rule for which values
of a numeric metadata variable a model can be asked about: within `MAX_STANDARD_SCORE` training standard
deviations of the training mean (the codec's standard score). Far outside, the metadata network extrapolates
blindly and float32 codes overflow into NaN probabilities; the service refuses such a value and documents the range
per variable (docs/contract.md).
"""
from __future__ import annotations

import numpy as np

#: A numeric metadata value must lie within this many training standard deviations of the training mean.
MAX_STANDARD_SCORE = 6.0


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Overflow-free logistic: exp only ever sees -|x|, so no warnings and no boolean-mask copies."""
    x = np.asarray(x)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(np.result_type(x, np.float32), copy=False)


def numeric_range(mean: float, std: float) -> tuple[float, float]:
    """Accepted [min, max] of a numeric variable with training `mean` and `std`."""
    return mean - MAX_STANDARD_SCORE * std, mean + MAX_STANDARD_SCORE * std


def standard_score_in_range(standard_score: float) -> bool:
    """Whether an encoded (standardised) numeric value is inside the range; False for inf and NaN too."""
    return bool(abs(standard_score) <= MAX_STANDARD_SCORE)
