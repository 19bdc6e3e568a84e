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
from cyclad._validation import as_matrix, check_int, check_threads

__all__ = ["meamed", "mean", "median", "trimmed_mean"]


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


def _check_f(f: Any, n: int) -> int:
    """``f`` for the trimming rules: an integer with ``0 <= f`` and ``n > 2f``."""
    v = check_int(f, "f")
    if not 0 <= v <= (n - 1) // 2:
        msg = f"f must be in [0, {(n - 1) // 2}] (n > 2f) for n={n} rows, got f={v}"
        raise ValueError(msg)
    return v


def median(X: Any, *, threads: int | None = None) -> Any:
    """Coordinate-wise median (the mean of the two middle values when ``n`` is even).

    Parameters
    ----------
    X : array-like, shape (n, D)
        float32 or float64 vectors, one per row; other real dtypes become float64.
    threads : int, optional
        Worker threads; ``None`` uses all cores.

    Returns
    -------
    array, shape (D,)
        Same dtype and kind as ``X``. NaN is ordered above +Inf, so with fewer than ``n / 2``
        poisoned rows (NaN, +-Inf, huge values) every coordinate is finite and within the range
        of the honest rows.

    Raises
    ------
    ValueError
        If ``X`` is not 2-D or is empty, or ``threads < 1``.
    TypeError
        If ``X`` does not hold real numbers, or ``threads`` is not an integer.
    """
    x, wrap = as_matrix(X)
    return wrap(_core.median(x, threads=check_threads(threads)))


def trimmed_mean(X: Any, f: int, *, threads: int | None = None) -> Any:
    """Coordinate-wise trimmed mean: drop the ``f`` smallest and ``f`` largest values of each
    coordinate and average the remaining ``n - 2f``.

    Parameters
    ----------
    X : array-like, shape (n, D)
        float32 or float64 vectors, one per row; other real dtypes become float64.
    f : int
        Values trimmed at each end, ``0 <= f <= (n - 1) // 2`` (``n > 2f``).
    threads : int, optional
        Worker threads; ``None`` uses all cores.

    Returns
    -------
    array, shape (D,)
        Same dtype and kind as ``X``. The kept values are summed in float64 (no overflow for
        float32 inputs) and the result is clamped to their range. NaN is ordered above +Inf,
        so with at most ``f`` poisoned rows the result is finite and within the honest range.
        Bit-identical for any thread count; reordering the rows can change only the rounding
        of the float64 sum.

    Raises
    ------
    ValueError
        If ``X`` is not 2-D or is empty, ``f`` is out of range, or ``threads < 1``.
    TypeError
        If ``X`` does not hold real numbers, or ``f`` / ``threads`` is not an integer.
    """
    x, wrap = as_matrix(X)
    k = _check_f(f, x.shape[0])
    return wrap(_core.trimmed_mean(x, k, threads=check_threads(threads)))


def meamed(X: Any, f: int, *, threads: int | None = None) -> Any:
    """Coordinate-wise mean around the median (Xie et al., 2018): for each coordinate, the mean
    of the ``n - f`` values closest to the median.

    The kept values always form a window of the sorted values around the median. Ties in the
    distance to the median are broken towards the lower value; a NaN is never closer than a
    number. This matches ByzFL's ``Meamed(f)`` whenever its choice is unambiguous.

    Parameters
    ----------
    X : array-like, shape (n, D)
        float32 or float64 vectors, one per row; other real dtypes become float64.
    f : int
        Values discarded per coordinate, ``0 <= f <= (n - 1) // 2`` (``n > 2f``).
    threads : int, optional
        Worker threads; ``None`` uses all cores.

    Returns
    -------
    array, shape (D,)
        Same dtype and kind as ``X``. The median and the sum of the kept values are computed
        in float64; the result is clamped to the kept values' range. With at most ``f``
        poisoned rows (NaN, +-Inf, huge values) the result is finite and within the honest
        range. Bit-identical for any thread count; reordering the rows can change only the
        rounding of the float64 sum.

    Raises
    ------
    ValueError
        If ``X`` is not 2-D or is empty, ``f`` is out of range, or ``threads < 1``.
    TypeError
        If ``X`` does not hold real numbers, or ``f`` / ``threads`` is not an integer.
    """
    x, wrap = as_matrix(X)
    k = _check_f(f, x.shape[0])
    return wrap(_core.meamed(x, k, threads=check_threads(threads)))


# --------------------------------------------------------------------------------------------
# distance-based rules
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# pre-aggregations
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------
