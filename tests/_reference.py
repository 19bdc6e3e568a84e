"""Obviously-correct NumPy reference implementations of every kernel (slow, readable)."""

from __future__ import annotations

import numpy as np

# --------------------------------------------------------------------------------------------
# aggregators
# --------------------------------------------------------------------------------------------


def mean(X: np.ndarray) -> np.ndarray:
    return X.mean(axis=0, dtype=np.float64).astype(X.dtype)
