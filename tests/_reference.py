"""Obviously-correct NumPy reference implementations of every kernel (slow, readable)."""

from __future__ import annotations

import numpy as np

# --------------------------------------------------------------------------------------------
# aggregators: coordinate-wise
# --------------------------------------------------------------------------------------------


def mean(X: np.ndarray) -> np.ndarray:
    return X.mean(axis=0, dtype=np.float64).astype(X.dtype)


# --------------------------------------------------------------------------------------------
# aggregators: distance-based and pre-aggregations
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# coding
# --------------------------------------------------------------------------------------------


def cyclic_assignment(pi: np.ndarray, d: int) -> np.ndarray:
    """Row i = (pi[i], pi[i+1], ..., pi[i+d-1]) with indices mod n, by explicit loops."""
    n = len(pi)
    out = np.empty((n, d), dtype=np.int64)
    for i in range(n):
        for k in range(d):
            out[i, k] = pi[(i + k) % n]
    return out


def encode(G: np.ndarray, assignment: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """z_i = sum_j w_ij G[a_ij], accumulated in float64 by loops, returned in G's dtype."""
    n, d = assignment.shape
    if weights is None:
        w = np.full((n, d), 1.0 / d)
    else:
        w = np.broadcast_to(np.asarray(weights, dtype=np.float64), (n, d))
    out = np.zeros((n, G.shape[1]), dtype=np.float64)
    for i in range(n):
        for j in range(d):
            out[i] += w[i, j] * G[assignment[i, j]].astype(np.float64)
    return out.astype(G.dtype)


# --------------------------------------------------------------------------------------------
# compression
# --------------------------------------------------------------------------------------------
