"""Obviously-correct NumPy reference implementations of every kernel (slow, readable)."""

from __future__ import annotations

import numpy as np

# --------------------------------------------------------------------------------------------
# aggregators: coordinate-wise
# --------------------------------------------------------------------------------------------


def mean(X: np.ndarray) -> np.ndarray:
    return X.mean(axis=0, dtype=np.float64).astype(X.dtype)


_KEY = {
    np.dtype(np.float32): (np.uint32, np.uint32(0x7FC00000), np.uint32(0x80000000), 31),
    np.dtype(np.float64): (np.uint64, np.uint64(0x7FF8000000000000), np.uint64(1 << 63), 63),
}


def sorted_columns(X: np.ndarray) -> np.ndarray:
    """Each column sorted in the kernels' total order -Inf < ... < -0 < +0 < ... < +Inf < NaN
    (every NaN canonicalised to +qNaN): sort order-preserving integer keys, then map back."""
    X = np.ascontiguousarray(X)
    ut, qnan, sign, shift = _KEY[X.dtype]
    u = X.view(ut).copy()
    u[np.isnan(X)] = qnan
    neg = (u >> ut(shift)).astype(bool)
    flip = np.where(neg, ~ut(0), sign).astype(ut)
    keys = np.sort(u ^ flip, axis=0)
    back = np.where(keys >> ut(shift) == 1, sign, ~ut(0)).astype(ut)
    return (keys ^ back).view(X.dtype)


def _middle(S: np.ndarray) -> np.ndarray:
    n = S.shape[0]
    return (S[(n - 1) // 2].astype(np.float64) + S[n // 2].astype(np.float64)) / 2


def median(X: np.ndarray) -> np.ndarray:
    """Mean of the two middle values (one for odd n) of each sorted column."""
    return _middle(sorted_columns(X)).astype(X.dtype)


def trimmed_mean(X: np.ndarray, f: int) -> np.ndarray:
    """Sort each column, drop f values at each end, average the rest in float64."""
    S = sorted_columns(X)
    n = S.shape[0]
    return S[f : n - f].astype(np.float64).mean(axis=0).astype(X.dtype)


def meamed(X: np.ndarray, f: int) -> np.ndarray:
    """Mean of the n - f values closest to the median (float64), via a stable argsort of
    |x - median| over the sorted column: equidistant values keep the lower one first, and NaN
    distances sort last."""
    S = sorted_columns(X).astype(np.float64)
    n = S.shape[0]
    with np.errstate(invalid="ignore"):
        dist = np.abs(S - _middle(S))
    idx = np.argsort(dist, axis=0, kind="stable")[: n - f]
    return np.take_along_axis(S, idx, axis=0).mean(axis=0).astype(X.dtype)


# --------------------------------------------------------------------------------------------
# aggregators: distance-based and pre-aggregations
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# coding
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# compression
# --------------------------------------------------------------------------------------------
