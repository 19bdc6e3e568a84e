"""Robust aggregation rules and pre-aggregations.

Every rule takes ``X``, an ``(n, D)`` array-like of float32 or float64 (a NumPy array, a CPU
torch tensor, or anything exposing ``__dlpack__`` or the buffer protocol), and returns a result of
the same dtype and kind. ``threads=None`` uses all cores; results are bit-identical for any
thread count. Inputs are never modified.

Non-finite values are inputs, not errors (Byzantine devices send them): coordinate-wise rules
order NaN above +Inf, distance-based rules give a row with any non-finite entry an infinite
distance, so whenever at most ``f`` rows are poisoned every robust rule returns a finite result
within the range of the honest rows. :func:`mean` is the plain, non-robust baseline.
"""

from __future__ import annotations

from typing import Any

from cyclad import _core
from cyclad._validation import as_matrix, check_threads

__all__ = ["mean"]


# --------------------------------------------------------------------------------------------
# coordinate-wise rules
# --------------------------------------------------------------------------------------------


def mean(X: Any, *, threads: int | None = None) -> Any:
    """Coordinate-wise arithmetic mean (the non-robust baseline).

    Parameters
    ----------
    X : array-like, shape (n, D)
        float32 or float64 vectors, one per row.
    threads : int, optional
        Worker threads; ``None`` uses all cores.

    Returns
    -------
    array, shape (D,)
        Same dtype and kind as ``X``. NaN and Inf propagate.

    Raises
    ------
    ValueError
        If ``X`` is not 2-D or is empty.
    TypeError
        If ``X`` does not hold real numbers.
    """
    x, wrap = as_matrix(X)
    return wrap(_core.mean(x, threads=check_threads(threads)))


# --------------------------------------------------------------------------------------------
# distance-based rules
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# pre-aggregations
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------
