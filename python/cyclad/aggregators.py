"""Robust aggregation rules and pre-aggregations.

Every rule takes ``X``, an ``(n, D)`` array-like of float32 or float64 (a NumPy array, a CPU
torch tensor, or anything exposing ``__dlpack__`` or the buffer protocol), and returns a result of
the same dtype and kind. ``threads=None`` uses all cores; results are bit-identical for any
thread count (``threads`` in ``[1, 2**31 - 1]``). Inputs are never modified; arrays that are
not aligned C-contiguous float32/float64 are copied once (see :mod:`cyclad._validation`).

Errors are :class:`cyclad.ArgumentError` (a ``ValueError``) or :class:`cyclad.ArgumentTypeError`
(a ``TypeError``); ``exc.argument`` names the offending argument (``"X"``, ``"f"``, ``"m"``,
``"tau"``, ...; for :func:`get`, ``"name"`` or the parameter), so callers need not parse the
message. An aggregator built by :func:`get` keeps the ``argument`` of the component that failed.

Guarantees
----------
Notation: ``H`` is the set of honest rows (``h`` of them), ``b = n - h`` the number of other
rows; ``lo_j`` and ``hi_j`` are the smallest and largest honest value of coordinate ``j`` (the
*honest box*) and ``W_j = hi_j - lo_j``; ``Delta`` is the largest distance between two honest rows;
``r(y) = max_{x in H} |x - y|`` for a point ``y``. Distances are Euclidean.

(b) Finite adversarial rows. For any finite values of the ``b <= f`` other rows:

- :func:`median` (``b < n / 2``) and :func:`trimmed_mean` ``(f)``: every coordinate lies in
  ``[lo_j, hi_j]`` (a kept order statistic has at least ``f`` values on either side).
- :func:`meamed` ``(f)``: every coordinate lies in ``[lo_j - c W_j, hi_j + c W_j]`` with
  ``c = f / (n - f)``: a kept adversarial value is no farther from the median than the farthest
  honest value, so within ``W_j`` of the honest box, and at most ``f`` of the ``n - f`` kept
  values are adversarial.
- :func:`krum` and :func:`multi_krum` ``(f, m)`` with ``n >= 2f + 3`` and ``m <= n - f``: every
  selected row is within ``rho = Delta * sqrt((n - f - 2) / (n - 2f - 1))`` of some honest row
  (its score is at most an honest score, at most ``(n - f - 2) Delta^2``, and at least
  ``n - 2f - 1`` of its ``n - f - 2`` neighbours are honest), so the result is within ``rho`` of
  the convex hull of ``H``, hence in the honest box widened by ``rho``. The selected rows are
  honest -- and the result is in the honest box -- when every adversarial row is farther than
  ``rho`` from every honest row. With ``n < 2f + 3``, ``f`` colluding identical rows can win.
  With ``neighbors="byzfl"`` (``q = n - f - 1``) the same argument runs with ``q`` in place of
  ``n - f - 2``: ``rho = Delta * sqrt(q / (q - f + 1))`` when ``q >= f``.
- :func:`bulyan` ``(f)`` with ``n >= 4f + 3``: every coordinate lies in
  ``[lo_j - c W_j, hi_j + c W_j]`` with ``c = f / beta``, ``beta = n - 4f``, whatever rows the
  Krum selection keeps: the coordinate-wise median of the ``theta = n - 2f`` selected values
  lies in the honest range (fewer than half are adversarial), a kept value is no farther from it
  than some honest value left out (``2f`` values are left out, at least one honest), so within
  ``W_j`` of the honest box, and at most ``f`` of the ``beta`` kept values are adversarial.
- :func:`closest` ``(reference, beta)`` with ``beta <= h``: the result is within
  ``d_beta`` of ``reference``, the ``beta``-th smallest distance from an honest row to it
  (Euclidean; per coordinate for ``metric="coordinate"``): every averaged row (value) is at
  most that far. It is robust only as far as ``reference`` is.
- :func:`geometric_median` (``b < n / 2``): for every point ``y``,
  ``|GM - y| <= C * r(y)`` with ``C = (n - b) / sqrt(n (n - 2b))``, i.e.
  ``(1 - a) / sqrt(1 - 2a)`` for ``a = b / n`` (Minsker 2015, Lemma 2.1, in a Euclidean space;
  the triangle inequality alone gives ``2 (n - b) / (n - 2b)``). The solver returns an
  approximation, within its ``tol`` of this bound. The result need not lie in the honest box.
- :func:`centered_clipping` ``(tau, iters, center)``: the result is within distance
  ``iters * b * tau / n`` of the convex hull of ``H`` and the start point (``center``, or zero),
  hence in the box of those points widened by ``iters * b * tau / n``: each step is a convex
  combination of the iterate and honest rows plus at most ``tau / n`` per adversarial row.
- :func:`mda` ``(f)``: every selected row is within ``Delta`` of an honest row (the honest rows
  alone are a candidate of diameter at most ``Delta``, and at least ``n - 2f >= 1`` selected rows
  are honest), so the result is in the honest box widened by ``Delta``.
- :func:`smea` ``(f)``: the selected subset's squared diameter is at most ``2 (n - f)`` times its
  top eigenvalue, which is at most an honest subset's, at most ``Delta^2 / 2``: the result is in
  the honest box widened by ``sqrt(n - f) Delta``.
- :func:`caf` ``(f)``: a weighted mean, so in the box of the rows (no bound in terms of the
  honest rows alone is claimed).
- :func:`mean` (with or without ``weights``): no bound; one row moves it arbitrarily far.

Compositions ``get("p1+...+rule")``: a pre-aggregation maps at most ``b`` rows that depend on
adversarial rows to at most ``b`` such rows, and the rule satisfies its bound above with ``H``
replaced by the rows derived from honest rows only: row ``i`` (``i`` honest) of :func:`clip`,
:func:`arc` and :func:`nnm`, and the buckets of :func:`bucketing` with honest members only.
Those rows are: for ``clip``, ``x_i min(1, tau / |x_i|)``; for ``arc``, ``x_i min(1, t / |x_i|)``
with a threshold ``t`` at most the largest honest norm (so every finite output row is at most
that long); for ``nnm``, points within ``f / (n - f) * Delta`` of the convex hull of ``H``; for
``bucketing``, points of the convex hull of ``H``.

(a) Poisoned rows. Non-finite values are inputs, not errors (Byzantine devices send them). Say
a row is *poisoned* if it has a NaN or +-Inf entry, or finite entries of overflow size (up to the
dtype's maximum: e.g. +-3e38 in float32, +-1e300 in float64, in any mixture within the row). With
at most ``f`` poisoned rows (and honest rows of ordinary size), every rule but :func:`mean` and
every composition whose rule is not :func:`mean` returns a **finite** result that satisfies (b).
Poisoned rows are neutralised: coordinate-wise rules order NaN above +Inf and trim or discard
the extreme values; distance-based rules accumulate distances in double without overflow and give
a row with a non-finite entry an infinite distance (weight 0 in the geometric median, a zero
contribution in centered clipping), and an overflow-sized row a distance that dominates every
honest one. Applied directly, the rules then meet the bound for the honest rows alone:

- :func:`median`, :func:`trimmed_mean`, :func:`meamed`: in the honest box (no poisoned value is
  kept);
- :func:`krum`, :func:`multi_krum` (``n >= 2f + 3``, ``m <= n - f``): the selected rows are
  honest, so the result is in the honest box;
- :func:`bulyan` (``n >= 4f + 3``): every selected row is honest (each Krum step scores over
  at least one neighbour), so the result is in the honest box;
- :func:`closest` (``beta <= n - f``): the averaged rows are honest (the result is in the
  honest box);
- :func:`mda`, :func:`smea`: every subset with a poisoned row has an infinite (or dominating)
  value, so the selected rows are honest and the result is in the honest box;
- :func:`caf`: a non-finite row has weight 0 from the start; an overflow-sized row dominates
  the covariance (so its eigenvalue is not the least) until a step zeroes its weight, so the
  result is a weighted mean of honest rows, in the honest box;
- :func:`geometric_median`: with non-finite poisoned rows, in the convex hull of ``H``; an
  overflow-sized finite row is a far point and pulls by the ball bound of (b);
- :func:`centered_clipping`: with non-finite poisoned rows, in the convex hull of ``H`` and the
  start point; an overflow-sized finite row is clipped to ``tau`` and moves it by the widening
  of (b).

:func:`mean` is the plain, non-robust baseline: NaN and Inf propagate; float32 rows are summed
in double, so the mean of finite rows is finite whenever its value is representable.
"""

from __future__ import annotations

import inspect
import math
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

from cyclad import _core
from cyclad._validation import (
    INT64_MAX,
    ArgumentError,
    ArgumentTypeError,
    as_float_array,
    as_matrix,
    check_float,
    check_int,
    check_out,
    check_threads,
)

__all__ = ["meamed", "mean", "median", "trimmed_mean"]

if TYPE_CHECKING:
    from typing import TypeAlias

    import torch

    _Tensors: TypeAlias = torch.Tensor | Sequence[torch.Tensor]

# The result has the input's kind and dtype: a float32 / float64 array gives the same dtype, a
# torch tensor (or a list of 1-D tensors, one per row) gives a tensor, anything else array-like
# gives a NumPy array of the dtype policy's choice.
_F = TypeVar("_F", np.float32, np.float64)


# --------------------------------------------------------------------------------------------
# coordinate-wise rules
# --------------------------------------------------------------------------------------------


@overload
def mean(
    X: _Tensors, *, weights: ArrayLike | None = ..., threads: int | None = ...
) -> torch.Tensor: ...
@overload
def mean(
    X: NDArray[_F], *, weights: ArrayLike | None = ..., threads: int | None = ...
) -> NDArray[_F]: ...
@overload
def mean(
    X: ArrayLike, *, weights: ArrayLike | None = ..., threads: int | None = ...
) -> NDArray[Any]: ...


def mean(X: Any, *, weights: Any = None, threads: int | None = None) -> Any:
    """Coordinate-wise arithmetic mean (the non-robust baseline), optionally weighted.

    Parameters
    ----------
    X : array-like, shape (n, D)
        float32 or float64 vectors, one per row.
    weights : array-like, shape (n,), optional
        Per-row weights, finite and ``>= 0``, not all zero (e.g. sample counts, as Flower's
        FedAvg weights by ``num_examples``): the result is ``sum_i w_i x_i / sum_i w_i``. A row
        of weight 0 is not read. ``None`` (default) is the plain mean.
    threads : int, optional
        Worker threads; ``None`` uses all cores.

    Returns
    -------
    array, shape (D,)
        Same dtype and kind as ``X``. NaN and Inf of a row with a positive weight propagate.
        ``sum_i w_i x_i`` and ``sum_i w_i`` are accumulated in double in row order, the weights
        first scaled by a power of two (exact) so that neither sum can overflow.

    Raises
    ------
    ValueError
        If ``X`` is not 2-D or is empty, or ``weights`` has the wrong shape, a NaN, Inf or
        negative entry, or only zeros.
    TypeError
        If ``X`` or ``weights`` do not hold real numbers.
    """
    x, wrap = as_matrix(X)
    t = check_threads(threads)
    if weights is None:
        return wrap(_core.mean(x, threads=t))
    w = _check_weights(weights, x.shape[0])
    return wrap(_core.weighted_mean(x, w, threads=t))


def _check_weights(weights: Any, n: int) -> NDArray[Any]:
    """Per-row weights: a float64 vector of shape (n,), finite, >= 0 and not all zero."""
    w, _ = as_float_array(weights, "weights", ndim=1, dtype=np.float64)
    if w.shape[0] != n:
        msg = f"weights must have shape (n,) = ({n},), got {w.shape}"
        raise ArgumentError(msg, argument="weights")
    if not np.isfinite(w).all():
        msg = "weights must be finite (no NaN or Inf)"
        raise ArgumentError(msg, argument="weights")
    if (w < 0).any():
        msg = f"weights must be >= 0, got min {w.min()!r}"
        raise ArgumentError(msg, argument="weights")
    if not (w > 0).any():
        msg = "weights must not all be zero"
        raise ArgumentError(msg, argument="weights")
    return w


def _check_f_trim(f: Any, n: int) -> int:
    """``f`` for the trimming rules: an integer with ``0 <= f`` and ``n > 2f``."""
    v = check_int(f, "f")
    if not 0 <= v <= (n - 1) // 2:
        msg = f"f must be in [0, {(n - 1) // 2}] (n > 2f) for n={n} rows, got f={v}"
        raise ArgumentError(msg, argument="f")
    return v


@overload
def median(X: _Tensors, *, threads: int | None = ...) -> torch.Tensor: ...
@overload
def median(X: NDArray[_F], *, threads: int | None = ...) -> NDArray[_F]: ...
@overload
def median(X: ArrayLike, *, threads: int | None = ...) -> NDArray[Any]: ...


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
        Same dtype and kind as ``X``. With fewer than ``n / 2`` adversarial rows (finite, or
        poisoned with NaN, +-Inf or overflow-sized values; NaN is ordered above +Inf) every
        coordinate is finite and within the range of the honest rows.

    Raises
    ------
    ValueError
        If ``X`` is not 2-D or is empty, or ``threads`` is outside ``[1, 2**31 - 1]``.
    TypeError
        If ``X`` does not hold real numbers, or ``threads`` is not an integer.
    """
    x, wrap = as_matrix(X)
    return wrap(_core.median(x, threads=check_threads(threads)))


@overload
def trimmed_mean(X: _Tensors, f: int, *, threads: int | None = ...) -> torch.Tensor: ...
@overload
def trimmed_mean(X: NDArray[_F], f: int, *, threads: int | None = ...) -> NDArray[_F]: ...
@overload
def trimmed_mean(X: ArrayLike, f: int, *, threads: int | None = ...) -> NDArray[Any]: ...


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
        float32 inputs) and the result is clamped to their range. With at most ``f`` adversarial
        rows (finite, or poisoned; NaN is ordered above +Inf) the result is finite and every
        coordinate is within the range of the honest rows.
        Bit-identical for any thread count; reordering the rows can change only the rounding
        of the float64 sum.

    Raises
    ------
    ValueError
        If ``X`` is not 2-D or is empty, ``f`` is out of range, or ``threads`` is outside
        ``[1, 2**31 - 1]``.
    TypeError
        If ``X`` does not hold real numbers, or ``f`` / ``threads`` is not an integer.
    """
    x, wrap = as_matrix(X)
    k = _check_f_trim(f, x.shape[0])
    return wrap(_core.trimmed_mean(x, k, threads=check_threads(threads)))


@overload
def meamed(X: _Tensors, f: int, *, threads: int | None = ...) -> torch.Tensor: ...
@overload
def meamed(X: NDArray[_F], f: int, *, threads: int | None = ...) -> NDArray[_F]: ...
@overload
def meamed(X: ArrayLike, f: int, *, threads: int | None = ...) -> NDArray[Any]: ...


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
        poisoned rows (NaN, +-Inf, overflow-sized values) the result is finite and within the
        honest range; with ``f`` finite adversarial rows each coordinate is within the honest
        range widened by ``f / (n - f)`` times its width on either side. Bit-identical for any
        thread count; reordering the rows can change only the rounding of the float64 sum.

    Raises
    ------
    ValueError
        If ``X`` is not 2-D or is empty, ``f`` is out of range, or ``threads`` is outside
        ``[1, 2**31 - 1]``.
    TypeError
        If ``X`` does not hold real numbers, or ``f`` / ``threads`` is not an integer.
    """
    x, wrap = as_matrix(X)
    k = _check_f_trim(f, x.shape[0])
    return wrap(_core.meamed(x, k, threads=check_threads(threads)))


# --------------------------------------------------------------------------------------------
# distance-based rules
# --------------------------------------------------------------------------------------------

# Shared by the distance-based rules: every squared distance is accumulated in double after
# converting each value (float32 inputs near the float32 maximum cannot overflow), and a row
# with any non-finite entry is at distance +inf from every other row.


def _check_f(f: Any, n: int, lo_rows: int, rule: str, hi: int | None = None) -> int:
    """``f`` for a rule that needs ``n >= f + lo_rows`` rows (or ``f <= hi`` when given)."""
    top = n - lo_rows if hi is None else hi
    if top < 0:
        msg = f"{rule} needs X with at least {lo_rows} rows (n >= f + {lo_rows}), got n={n}"
        raise ArgumentError(msg, argument="X")
    return check_int(f, "f", 0, top, label=f"f (for {rule} with n={n} rows)")


_NEIGHBORS = ("blanchard", "byzfl", "flower")


def _krum_q(neighbors: Any, f: Any, n: int, rule: str) -> tuple[int, int]:
    """(f, q): ``f`` checked for the convention and its neighbour count ``q``.

    blanchard: q = n - f - 2 (0 <= f <= n - 3); byzfl: q = n - f - 1 (0 <= f <= n - 2);
    flower: q = max(1, n - f - 2) capped at n - 1 (0 <= f <= n - 1); an integer: that q, in
    [1, n - 1] (0 <= f <= n - 1)."""
    if isinstance(neighbors, str):
        conv = neighbors.strip().lower()
        if conv == "blanchard":
            f = _check_f(f, n, 3, rule)
            return f, n - f - 2
        if conv == "byzfl":
            f = _check_f(f, n, 2, rule)
            return f, n - f - 1
        if conv == "flower":
            f = _check_f(f, n, 1, rule)
            return f, min(max(1, n - f - 2), n - 1)
        msg = f"neighbors must be one of {list(_NEIGHBORS)} or an integer count, got {neighbors!r}"
        raise ArgumentError(msg, argument="neighbors")
    if isinstance(neighbors, bool | np.bool_) or not hasattr(neighbors, "__index__"):
        msg = f"neighbors must be one of {list(_NEIGHBORS)} or an integer count, got {neighbors!r}"
        raise ArgumentTypeError(msg, argument="neighbors")
    if n < 2:
        msg = f"{rule} with an explicit neighbour count needs X with at least 2 rows, got n={n}"
        raise ArgumentError(msg, argument="X")
    q = check_int(neighbors, "neighbors", 1, n - 1, label=f"neighbors (for {rule} with n={n} rows)")
    f = _check_f(f, n, 1, rule)
    return f, q


@overload
def krum(
    X: _Tensors, f: int, *, neighbors: str | int = ..., threads: int | None = ...
) -> torch.Tensor: ...
@overload
def krum(
    X: NDArray[_F], f: int, *, neighbors: str | int = ..., threads: int | None = ...
) -> NDArray[_F]: ...
@overload
def krum(
    X: ArrayLike, f: int, *, neighbors: str | int = ..., threads: int | None = ...
) -> NDArray[Any]: ...


def krum(X: Any, f: int, *, neighbors: str | int = "blanchard", threads: int | None = None) -> Any:
    """Krum (Blanchard et al., 2017): the row with the lowest Krum score.

    The score of row ``i`` is the sum of the squared distances to its ``q`` nearest other rows,
    ``q = n - f - 2`` by default (Blanchard et al.). Ties go to a row without non-finite
    entries, then to the lowest index.

    Parameters
    ----------
    X : array-like, shape (n, D)
        float32 or float64 vectors, one per row.
    f : int
        Number of Byzantine rows tolerated: ``0 <= f <= n - 3`` for ``"blanchard"`` (at least
        one neighbour), ``n - 2`` for ``"byzfl"``, ``n - 1`` for ``"flower"`` or an explicit
        count. Blanchard et al.'s guarantee against arbitrary (finite) Byzantine rows needs
        ``n >= 2 f + 3``; against non-finite rows any allowed ``f`` works (with
        ``q <= n - f - 1``).
    neighbors : {"blanchard", "byzfl", "flower"} or int, default "blanchard"
        The neighbour count ``q`` of the score, as the peer libraries define it:
        ``"blanchard"``: ``n - f - 2`` (the paper); ``"byzfl"``: ``n - f - 1`` (ByzFL's
        ``Krum(f)``, so it equals ``krum(X, f - 1)`` here); ``"flower"``: ``max(1, n - f - 2)``
        (Flower's Krum / MultiKrum strategies clamp it, so ``n = 3, f = 1`` works), capped at
        ``n - 1``; an integer: that count, in ``[1, n - 1]``.
    threads : int, optional
        Worker threads; ``None`` uses all cores.

    Returns
    -------
    array, shape (D,)
        A copy of the selected row (same dtype and kind as ``X``). With at most ``f`` poisoned
        rows (NaN, +-Inf, overflow-sized) and ``q <= n - f - 1`` it is an honest row. With
        ``n >= 2f + 3``, the default ``q`` and at most ``f`` finite adversarial rows it is
        within ``Delta * sqrt((n - f - 2) / (n - 2f - 1))`` of an honest row (``Delta``: the
        largest distance between honest rows), and an honest row whenever every adversarial row
        is farther than that from every honest row.

    Raises
    ------
    ValueError
        If ``X`` is not a non-empty 2-D array, ``f`` is outside its range, ``neighbors`` is an
        unknown convention or a count outside ``[1, n - 1]``.
    TypeError
        If ``X`` does not hold real numbers or ``f`` / ``neighbors`` have the wrong type.
    """
    x, wrap = as_matrix(X)
    _, q = _krum_q(neighbors, f, x.shape[0], "krum")
    return wrap(_core.krum(x, q, threads=check_threads(threads)))


@overload
def multi_krum(
    X: _Tensors,
    f: int,
    m: int | None = ...,
    *,
    neighbors: str | int = ...,
    weights: ArrayLike | None = ...,
    threads: int | None = ...,
) -> torch.Tensor: ...
@overload
def multi_krum(
    X: NDArray[_F],
    f: int,
    m: int | None = ...,
    *,
    neighbors: str | int = ...,
    weights: ArrayLike | None = ...,
    threads: int | None = ...,
) -> NDArray[_F]: ...
@overload
def multi_krum(
    X: ArrayLike,
    f: int,
    m: int | None = ...,
    *,
    neighbors: str | int = ...,
    weights: ArrayLike | None = ...,
    threads: int | None = ...,
) -> NDArray[Any]: ...


def multi_krum(
    X: Any,
    f: int,
    m: int | None = None,
    *,
    neighbors: str | int = "blanchard",
    weights: Any = None,
    threads: int | None = None,
) -> Any:
    """Multi-Krum: the mean of the ``m`` rows with the lowest Krum scores.

    Scores, neighbour conventions and ties as in :func:`krum`; the selected rows are averaged in
    double, with equal weights or with ``weights``.

    Parameters
    ----------
    X : array-like, shape (n, D)
        float32 or float64 vectors, one per row.
    f : int
        Number of Byzantine rows tolerated (range as in :func:`krum` for ``neighbors``).
    m : int, optional
        Number of rows averaged, ``1 <= m <= n``; default ``n - f`` (ByzFL's ``MultiKrum(f)``
        always averages ``n - f``; Flower's ``num_nodes_to_select`` is ``m``). With
        ``m > n - f`` a Byzantine row may be averaged in.
    neighbors : {"blanchard", "byzfl", "flower"} or int, default "blanchard"
        Neighbour count of the score, see :func:`krum`.
    weights : array-like, shape (n,), optional
        Per-row weights (finite, ``>= 0``; those of the selected rows not all zero): the
        selected rows are averaged as in ``mean(X[selected], weights=weights[selected])``
        (Flower's MultiKrum weights by ``num_examples``). ``None``: equal weights.
    threads : int, optional
        Worker threads; ``None`` uses all cores.

    Returns
    -------
    array, shape (D,)
        Same dtype and kind as ``X``. With ``m <= n - f``: with at most ``f`` poisoned rows the
        (weighted) mean of honest rows (in the honest box); with ``n >= 2f + 3``, the default
        ``q`` and at most ``f`` finite adversarial rows, within
        ``Delta * sqrt((n - f - 2) / (n - 2f - 1))`` of the convex hull of the honest rows, as
        every selected row is (see :func:`krum`).

    Raises
    ------
    ValueError
        If ``X`` is not a non-empty 2-D array, ``f``, ``neighbors`` or ``m`` are out of range,
        or ``weights`` has the wrong shape, a NaN, Inf or negative entry, only zeros, or only
        zeros on the selected rows.
    TypeError
        If ``X`` / ``weights`` do not hold real numbers or ``f`` / ``m`` / ``neighbors`` have
        the wrong type.
    """
    x, wrap = as_matrix(X)
    n = x.shape[0]
    f, q = _krum_q(neighbors, f, n, "multi_krum")
    m = n - f if m is None else check_int(m, "m", 1, n, label=f"m (for multi_krum with n={n} rows)")
    w = None if weights is None else _check_weights(weights, n)
    t = check_threads(threads)
    if w is None:
        return wrap(_core.multi_krum(x, q, m, None, threads=t))
    try:
        return wrap(_core.multi_krum(x, q, m, w, threads=t))
    except ValueError as exc:  # the selected rows' weights are all zero
        raise ArgumentError(str(exc), argument="weights") from exc


@overload
def closest(
    X: _Tensors,
    reference: ArrayLike,
    beta: int,
    *,
    metric: str = ...,
    threads: int | None = ...,
) -> torch.Tensor: ...
@overload
def closest(
    X: NDArray[_F],
    reference: ArrayLike,
    beta: int,
    *,
    metric: str = ...,
    threads: int | None = ...,
) -> NDArray[_F]: ...
@overload
def closest(
    X: ArrayLike,
    reference: ArrayLike,
    beta: int,
    *,
    metric: str = ...,
    threads: int | None = ...,
) -> NDArray[Any]: ...


def closest(
    X: Any,
    reference: Any,
    beta: int,
    *,
    metric: str = "euclidean",
    threads: int | None = None,
) -> Any:
    """Closest-to-reference averaging: the mean of the ``beta`` rows nearest to ``reference``.

    ``metric="euclidean"`` (default): the ``beta`` rows with the smallest Euclidean distance to
    ``reference``, averaged in double in row-index order. Ties are broken deterministically: a
    row without non-finite entries first, then the lowest row index.

    ``metric="coordinate"``: per coordinate ``j``, the mean of the ``beta`` values ``X[:, j]``
    closest to ``reference[j]`` (Flower's ``aggregate_n_closest_weights``, the building block of
    its Bulyan, which is coordinate-wise). The chosen values form a window of the sorted values;
    among equidistant candidates the lower value is kept (Flower's ``np.argpartition`` leaves
    ties unspecified).

    Parameters
    ----------
    X : array-like, shape (n, D)
        float32 or float64 vectors, one per row.
    reference : array-like, shape (D,)
        The reference point (finite; converted to float64), e.g. the median of ``X``.
    beta : int
        Number of rows (or values per coordinate) averaged, ``1 <= beta <= n``.
    metric : {"euclidean", "coordinate"}, default "euclidean"
    threads : int, optional
        Worker threads; ``None`` uses all cores.

    Returns
    -------
    array, shape (D,)
        Same dtype and kind as ``X``. A row with a non-finite entry is at infinite distance
        (Euclidean), and a NaN or infinite value is never closer than a finite one
        (coordinate), so with at most ``n - beta`` poisoned rows the result is finite and lies
        in the box of the non-poisoned rows.

    Raises
    ------
    ValueError
        If ``X`` is not a non-empty 2-D array, ``reference`` does not have shape ``(D,)`` or is
        not finite, ``beta`` is outside ``[1, n]`` or ``metric`` is unknown.
    TypeError
        If ``X`` or ``reference`` do not hold real numbers or ``beta`` is not an integer.
    """
    x, wrap = as_matrix(X)
    n, d = x.shape
    beta = check_int(beta, "beta", 1, n, label=f"beta (for closest with n={n} rows)")
    z, _ = as_float_array(reference, "reference", ndim=1, dtype=np.float64)
    if z.shape[0] != d:
        msg = f"reference must have shape (D,) = ({d},), got {z.shape}"
        raise ArgumentError(msg, argument="reference")
    if not np.isfinite(z).all():
        msg = "reference must be finite"
        raise ArgumentError(msg, argument="reference")
    t = check_threads(threads)
    if metric == "euclidean":
        return wrap(_core.closest(x, z, beta, threads=t))
    if metric == "coordinate":
        return wrap(_core.closest_coordinates(x, z, beta, threads=t))
    msg = f"metric must be 'euclidean' or 'coordinate', got {metric!r}"
    raise ArgumentError(msg, argument="metric")


@overload
def bulyan(
    X: _Tensors,
    f: int,
    *,
    selection: str = ...,
    neighbors: str = ...,
    threads: int | None = ...,
) -> torch.Tensor: ...
@overload
def bulyan(
    X: NDArray[_F],
    f: int,
    *,
    selection: str = ...,
    neighbors: str = ...,
    threads: int | None = ...,
) -> NDArray[_F]: ...
@overload
def bulyan(
    X: ArrayLike,
    f: int,
    *,
    selection: str = ...,
    neighbors: str = ...,
    threads: int | None = ...,
) -> NDArray[Any]: ...


def bulyan(
    X: Any,
    f: int,
    *,
    selection: str = "iterated",
    neighbors: str = "blanchard",
    threads: int | None = None,
) -> Any:
    """Bulyan (El Mhamdi et al., 2018): Krum selection, then a coordinate-wise trimmed mean.

    1. Select ``theta = n - 2f`` rows by Krum. ``selection="iterated"`` (default): Krum is run
       ``theta`` times, each time on the rows not yet selected (``n'`` of them, scored over the
       convention's neighbour count for ``n'``, e.g. ``n' - f - 2``, but at least one: for
       ``f = 1`` the paper's count reaches 0 in the last step, where every row would tie), and
       its row is moved to the selection -- the paper's algorithm and that of Flower's older
       ``flwr.server.strategy.Bulyan`` (so ``"blanchard"`` and ``"flower"`` agree here).
       ``selection="multi_krum"``: the ``theta`` rows with the lowest Krum scores of one pass
       over all ``n`` rows -- Flower's newer ``flwr.serverapp.strategy.Bulyan``.
       Ties as in :func:`krum`. The pairwise distances are computed once.
    2. Per coordinate, average the ``beta = theta - 2f`` selected values closest to the selected
       rows' coordinate-wise median (``median`` of the ``theta`` values, the midpoint of the two
       middle ones for even ``theta``); among equidistant candidates the lower value is kept.
       This is ``closest(X[selected], median(X[selected]), beta, metric="coordinate")``.

    Parameters
    ----------
    X : array-like, shape (n, D)
        float32 or float64 vectors, one per row; ``n >= 4f + 3``.
    f : int
        Number of Byzantine rows tolerated, ``0 <= f <= (n - 3) // 4``.
    selection : {"iterated", "multi_krum"}, default "iterated"
    neighbors : {"blanchard", "byzfl", "flower"}, default "blanchard"
        Neighbour count of each Krum score as a function of the rows scored (see :func:`krum`).
    threads : int, optional
        Worker threads; ``None`` uses all cores.

    Returns
    -------
    array, shape (D,)
        Same dtype and kind as ``X``. With at most ``f`` poisoned rows every selected row is
        honest, so every coordinate lies in the honest box.

    Raises
    ------
    ValueError
        If ``X`` is not a non-empty 2-D array, ``n < 4f + 3``, or ``selection`` /
        ``neighbors`` are unknown.
    TypeError
        If ``X`` does not hold real numbers or ``f`` is not an integer.
    """
    x, wrap = as_matrix(X)
    n = x.shape[0]
    if n < 3:
        msg = f"bulyan needs X with at least 3 rows (n >= 4f + 3), got n={n}"
        raise ArgumentError(msg, argument="X")
    f = check_int(f, "f", 0, (n - 3) // 4, label=f"f (for bulyan with n={n} rows, n >= 4f + 3)")
    if selection not in ("iterated", "multi_krum"):
        msg = f"selection must be 'iterated' or 'multi_krum', got {selection!r}"
        raise ArgumentError(msg, argument="selection")
    if neighbors not in _NEIGHBORS:
        msg = f"neighbors must be one of {list(_NEIGHBORS)}, got {neighbors!r}"
        raise ArgumentError(msg, argument="neighbors")
    return wrap(_core.bulyan(x, f, selection, neighbors, threads=check_threads(threads)))


@overload
def geometric_median(
    X: _Tensors,
    eps: float = ...,
    max_iter: int = ...,
    tol: float = ...,
    *,
    start: str = ...,
    threads: int | None = ...,
) -> torch.Tensor: ...
@overload
def geometric_median(
    X: NDArray[_F],
    eps: float = ...,
    max_iter: int = ...,
    tol: float = ...,
    *,
    start: str = ...,
    threads: int | None = ...,
) -> NDArray[_F]: ...
@overload
def geometric_median(
    X: ArrayLike,
    eps: float = ...,
    max_iter: int = ...,
    tol: float = ...,
    *,
    start: str = ...,
    threads: int | None = ...,
) -> NDArray[Any]: ...


def geometric_median(
    X: Any,
    eps: float = 1e-8,
    max_iter: int = 200,
    tol: float = 1e-7,
    *,
    start: str = "medoid",
    threads: int | None = None,
) -> Any:
    """Geometric median by smoothed Weiszfeld iterations.

    Minimises ``sum_i |z - x_i|`` over the rows without non-finite entries. Start: the medoid of
    those rows (least sum of distances to the others, as in Krum's distance pass) and then the
    mean of the ``ceil(h / 2)`` of the ``h`` finite rows nearest to it -- a robust start that is
    not a data point. Step: ``w_i = 1 / max(eps, |z - x_i|)``,
    ``z <- sum_i w_i x_i / sum_i w_i``, until ``|z_new - z| <= tol * max(1, |z|)``, or 64 steps
    in a row were no shorter than the shortest one so far (the iterates cycle at double
    precision, so ``tol=0`` terminates too), or ``max_iter`` steps. Each step is one
    pass over ``X`` (the distances to the new ``z`` are accumulated while computing it), in
    double.

    Parameters
    ----------
    X : array-like, shape (n, D)
        float32 or float64 vectors, one per row.
    eps : float, optional
        Smoothing radius, finite and ``> 0``.
    max_iter : int, optional
        Maximum number of Weiszfeld steps, ``>= 1``. Values above ``2**63 - 1`` (the kernel's
        limit) are clamped to it: any such value means "until ``tol`` is met or the steps
        stop getting shorter".
    tol : float, optional
        Relative stopping tolerance, finite and ``>= 0``.
    start : {"medoid", "mean"}, optional
        ``"medoid"`` (default): the robust start above, which costs one pairwise pass
        (``O(n^2 D)``, as much as Krum). ``"mean"``: the mean of the finite rows, one ``O(n D)``
        pass, the start most implementations use; an outlier then moves the start but not the
        limit, and a few more steps may be needed. The guarantee below holds for both.
    threads : int, optional
        Worker threads; ``None`` uses all cores.

    Returns
    -------
    array, shape (D,)
        Same dtype and kind as ``X``. Rows with a non-finite entry get weight 0 (all NaN if every
        row has one). With ``b < n / 2`` adversarial rows (finite, overflow-sized or
        non-finite), the result is finite and, for every point ``y``, within
        ``(n - b) / sqrt(n (n - 2b)) * max_honest |x_i - y|`` of ``y`` (up to the solver's
        ``tol``); with only non-finite poisoned rows it is in the convex hull of the honest rows.

    Raises
    ------
    ValueError
        If ``X`` is not a non-empty 2-D array, ``eps <= 0``, ``max_iter < 1``, ``tol < 0`` or a
        parameter is not finite.
    TypeError
        If ``X`` does not hold real numbers or a parameter has the wrong type.
    """
    x, wrap = as_matrix(X)
    eps = check_float(eps, "eps", 0.0, strict_lo=True)
    max_iter = min(check_int(max_iter, "max_iter", 1), INT64_MAX)
    tol = check_float(tol, "tol", 0.0)
    if start not in ("medoid", "mean"):
        msg = f"start must be 'medoid' or 'mean', got {start!r}"
        raise ArgumentError(msg, argument="start")
    z, _ = _core.geometric_median(
        x, eps, max_iter, tol, start=start, threads=check_threads(threads)
    )
    return wrap(z)


@overload
def centered_clipping(
    X: _Tensors, tau: float, iters: int = ..., center: Any = ..., *, threads: int | None = ...
) -> torch.Tensor: ...
@overload
def centered_clipping(
    X: NDArray[_F], tau: float, iters: int = ..., center: Any = ..., *, threads: int | None = ...
) -> NDArray[_F]: ...
@overload
def centered_clipping(
    X: ArrayLike, tau: float, iters: int = ..., center: Any = ..., *, threads: int | None = ...
) -> NDArray[Any]: ...


def centered_clipping(
    X: Any,
    tau: float,
    iters: int = 1,
    center: Any = None,
    *,
    threads: int | None = None,
) -> Any:
    """Centered clipping (Karimireddy et al., 2021), stateless.

    ``v <- v + (1/n) sum_i clip_tau(x_i - v)``, ``iters`` times, where
    ``clip_tau(y) = y * min(1, tau / |y|)``. A row with a non-finite entry has no defined
    difference: it contributes the zero vector (and still counts in ``1/n``). With ``b`` finite
    adversarial rows (overflow-sized ones included) the result is within distance
    ``iters * b * tau / n`` of the convex hull of the honest rows and the start point (``center``
    or zero); rows with a non-finite entry do not move it at all.

    Parameters
    ----------
    X : array-like, shape (n, D)
        float32 or float64 vectors, one per row.
    tau : float
        Clipping radius, finite and ``> 0``.
    iters : int, optional
        Number of clipping iterations, ``1 <= iters <= 2**63 - 1``.
    center : array-like, shape (D,), optional
        Starting point (finite, any real dtype; used in double); ``None`` starts from zeros.
        Stateless: pass the previous result here to reproduce a stateful server.
    threads : int, optional
        Worker threads; ``None`` uses all cores.

    Returns
    -------
    array, shape (D,)
        Same dtype and kind as ``X``.

    Raises
    ------
    ValueError
        If ``X`` is not a non-empty 2-D array, ``tau`` is not finite and ``> 0``,
        ``iters`` is outside ``[1, 2**63 - 1]``, or ``center`` does not have shape ``(D,)`` or
        is not finite.
    TypeError
        If ``X`` or ``center`` do not hold real numbers or a parameter has the wrong type.
    """
    x, wrap = as_matrix(X)
    tau = check_float(tau, "tau", 0.0, strict_lo=True)
    iters = check_int(iters, "iters", 1, INT64_MAX)
    c = None
    if center is not None:
        c, _ = as_float_array(center, "center", ndim=1, dtype=np.float64)
        if c.shape[0] != x.shape[1]:
            msg = f"center must have shape (D,) = ({x.shape[1]},), got {c.shape}"
            raise ArgumentError(msg, argument="center")
        if not np.isfinite(c).all():
            msg = "center must be finite"
            raise ArgumentError(msg, argument="center")
    return wrap(_core.centered_clipping(x, tau, iters, c, threads=check_threads(threads)))


__all__ += ["bulyan", "centered_clipping", "closest", "geometric_median", "krum", "multi_krum"]


# --------------------------------------------------------------------------------------------
# pre-aggregations
# --------------------------------------------------------------------------------------------

# A pre-aggregation maps (n, D) -> (n', D) and is composed with a rule through :func:`get`.

_MASK64 = (1 << 64) - 1


def bucket_permutation(n: int, seed: int) -> np.ndarray:
    """The row permutation :func:`bucketing` uses: a pure function of ``(n, seed)``.

    A Fisher-Yates shuffle driven by SplitMix64 seeded with ``seed`` (integer arithmetic only, so
    it is the same on every platform and NumPy version): for ``i = n - 1, ..., 1`` swap ``i``
    with ``j = next() mod (i + 1)``.

    Parameters
    ----------
    n : int
        Number of rows, ``>= 0``.
    seed : int
        ``0 <= seed < 2**64``.

    Returns
    -------
    numpy.ndarray of int64, shape (n,)
    """
    n = check_int(n, "n", 0)
    state = check_int(seed, "seed", 0, _MASK64)
    perm = list(range(n))
    for i in range(n - 1, 0, -1):
        state = (state + 0x9E3779B97F4A7C15) & _MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        z ^= z >> 31
        j = z % (i + 1)
        perm[i], perm[j] = perm[j], perm[i]
    return np.asarray(perm, dtype=np.int64)


@overload
def nnm(X: _Tensors, f: int, *, out: None = ..., threads: int | None = ...) -> torch.Tensor: ...
@overload
def nnm(
    X: NDArray[_F], f: int, *, out: NDArray[_F] | None = ..., threads: int | None = ...
) -> NDArray[_F]: ...
@overload
def nnm(
    X: ArrayLike, f: int, *, out: NDArray[Any] | None = ..., threads: int | None = ...
) -> NDArray[Any]: ...


def nnm(X: Any, f: int, *, out: Any = None, threads: int | None = None) -> Any:
    """Nearest-neighbour mixing (Allouah et al., 2023), a pre-aggregation.

    Row ``i`` of the output is the mean of the ``n - f`` rows nearest to row ``i`` (itself
    included; ties: rows without non-finite entries first, then the lowest index), averaged in
    double. Output rows permute with the input rows. Rows with the same neighbour set are
    computed once and overlapping sets share partial sums, so the mixing pass costs about
    ``f log(n / f)`` rather than ``n - f`` additions per output coordinate.

    Parameters
    ----------
    X : array-like, shape (n, D)
        float32 or float64 vectors, one per row.
    f : int
        Number of Byzantine rows tolerated, ``0 <= f <= n - 1``.
    out : ndarray, shape (n, D), optional
        A C-contiguous, writable array of ``X``'s dtype (after conversion: float32 or float64)
        that does not overlap ``X``, to receive the result instead of a fresh array: the output
        is as large as the input, and a caller that mixes every round saves the allocation and
        its page faults. NumPy inputs only. Returned.
    threads : int, optional
        Worker threads; ``None`` uses all cores.

    Returns
    -------
    array, shape (n, D)
        Same dtype and kind as ``X`` (``out`` when given). With at most ``f`` rows holding
        non-finite entries, the
        output row of every finite row is finite; the output row of a non-finite row stays
        non-finite (it includes itself), for the rule that follows to discard. With at most
        ``f`` adversarial rows, the output row of an honest row is within
        ``f / (n - f) * Delta`` (``Delta``: the largest distance between honest rows) of the
        convex hull of the honest rows, and in that hull when the adversarial rows are poisoned
        (non-finite or overflow-sized: never among an honest row's ``n - f`` nearest).

    Raises
    ------
    ValueError
        If ``X`` is not a non-empty 2-D array or ``f`` is outside ``[0, n - 1]``.
    TypeError
        If ``X`` does not hold real numbers or ``f`` is not an integer.
    """
    x, wrap = as_matrix(X)
    f = _check_f(f, x.shape[0], 1, "nnm")
    if out is None:
        return wrap(_core.nnm(x, f, threads=check_threads(threads)))
    check_out(out, x, X, x.shape)
    _core.nnm(x, f, out=out, threads=check_threads(threads))
    return out


@overload
def bucketing(X: _Tensors, s: int, seed: int, *, threads: int | None = ...) -> torch.Tensor: ...
@overload
def bucketing(X: NDArray[_F], s: int, seed: int, *, threads: int | None = ...) -> NDArray[_F]: ...
@overload
def bucketing(X: ArrayLike, s: int, seed: int, *, threads: int | None = ...) -> NDArray[Any]: ...


def bucketing(X: Any, s: int, seed: int, *, threads: int | None = None) -> Any:
    """Bucketing (Karimireddy et al., 2022), a pre-aggregation.

    The rows are shuffled by :func:`bucket_permutation` ``(n, seed)`` and averaged (in double) in
    consecutive groups of ``s``; the last group may be smaller.

    Parameters
    ----------
    X : array-like, shape (n, D)
        float32 or float64 vectors, one per row.
    s : int
        Bucket size, ``>= 1``. Any ``s >= n`` gives one bucket (the mean of all rows): larger
        values, of any size, are clamped to ``n``.
    seed : int
        Permutation seed, ``0 <= seed < 2**64``; the output is a pure function of ``X``, ``s``
        and ``seed``.
    threads : int, optional
        Worker threads; ``None`` uses all cores.

    Returns
    -------
    array, shape (ceil(n / s), D)
        Same dtype and kind as ``X``. A bucket holding a non-finite row is non-finite, so at most
        ``f`` poisoned rows give at most ``f`` poisoned buckets; a bucket of honest rows only is
        in their convex hull.

    Raises
    ------
    ValueError
        If ``X`` is not a non-empty 2-D array, ``s < 1`` or ``seed`` is out of range.
    TypeError
        If ``X`` does not hold real numbers or ``s`` / ``seed`` are not integers.
    """
    x, wrap = as_matrix(X)
    s = min(check_int(s, "s", 1), x.shape[0])
    perm = bucket_permutation(x.shape[0], seed)
    return wrap(_core.bucketing(x, perm, s, threads=check_threads(threads)))


@overload
def clip(
    X: _Tensors, tau: float, *, out: None = ..., threads: int | None = ...
) -> torch.Tensor: ...
@overload
def clip(
    X: NDArray[_F], tau: float, *, out: NDArray[_F] | None = ..., threads: int | None = ...
) -> NDArray[_F]: ...
@overload
def clip(
    X: ArrayLike, tau: float, *, out: NDArray[Any] | None = ..., threads: int | None = ...
) -> NDArray[Any]: ...


def clip(X: Any, tau: float, *, out: Any = None, threads: int | None = None) -> Any:
    """Static norm clipping, a pre-aggregation: rows with norm ``> tau`` scaled to norm ``tau``.

    ``x_i * min(1, tau / |x_i|)`` with the norm and the scaling in double. ``X`` is never
    modified. A row with a non-finite entry has no defined norm or direction and is copied
    unchanged, so it stays poisoned for the rule that follows.

    Parameters
    ----------
    X : array-like, shape (n, D)
        float32 or float64 vectors, one per row.
    tau : float
        Clipping radius, finite and ``> 0``.
    out : ndarray, shape (n, D), optional
        Receives the result instead of a fresh array (see :func:`nnm`). Returned.
    threads : int, optional
        Worker threads; ``None`` uses all cores.

    Returns
    -------
    array, shape (n, D)
        Same dtype and kind as ``X``. Every finite row, overflow-sized ones included, has norm
        at most ``tau`` afterwards (its norm is computed without overflow).

    Raises
    ------
    ValueError
        If ``X`` is not a non-empty 2-D array or ``tau`` is not finite and ``> 0``.
    TypeError
        If ``X`` does not hold real numbers or ``tau`` is not a number.
    """
    x, wrap = as_matrix(X)
    tau = check_float(tau, "tau", 0.0, strict_lo=True)
    if out is None:
        return wrap(_core.clip(x, tau, threads=check_threads(threads)))
    check_out(out, x, X, x.shape)
    _core.clip(x, tau, out=out, threads=check_threads(threads))
    return out


@overload
def arc(X: _Tensors, f: int, *, out: None = ..., threads: int | None = ...) -> torch.Tensor: ...
@overload
def arc(
    X: NDArray[_F], f: int, *, out: NDArray[_F] | None = ..., threads: int | None = ...
) -> NDArray[_F]: ...
@overload
def arc(
    X: ArrayLike, f: int, *, out: NDArray[Any] | None = ..., threads: int | None = ...
) -> NDArray[Any]: ...


def arc(X: Any, f: int, *, out: Any = None, threads: int | None = None) -> Any:
    """Adaptive robust clipping (Allouah et al., 2024), a pre-aggregation.

    With ``k = floor(2 (f / n) (n - f))``, every row is clipped to the norm of the
    ``(k + 1)``-th largest-norm row, so exactly the ``k`` largest rows shrink -- ByzFL's ``ARC``
    (``nb_clipped = int((2 f / n) (n - f))``, threshold ``magnitudes[n - nb_clipped - 1]`` in
    increasing norm order). ``k`` is computed in exact integer arithmetic as
    ``(2 f (n - f)) // n``; ByzFL's floating-point product is one smaller in rare cases
    (e.g. ``n = 242, f = 33``). Rows with a non-finite entry rank above every finite norm and are
    copied unchanged; with more than ``k`` of them nothing is clipped.

    Parameters
    ----------
    X : array-like, shape (n, D)
        float32 or float64 vectors, one per row.
    f : int
        Number of Byzantine rows tolerated, ``0 <= f < n / 2`` (then ``k >= f``).
    out : ndarray, shape (n, D), optional
        Receives the result instead of a fresh array (see :func:`nnm`). Returned.
    threads : int, optional
        Worker threads; ``None`` uses all cores.

    Returns
    -------
    array, shape (n, D)
        Same dtype and kind as ``X``. With at most ``f`` adversarial rows (``k >= f``) the
        threshold is at most the largest honest norm, so every finite output row (overflow-sized
        ones included) is no longer than the longest honest row, and honest rows are only
        scaled towards zero.

    Raises
    ------
    ValueError
        If ``X`` is not a non-empty 2-D array or ``f`` is outside ``[0, (n - 1) // 2]``.
    TypeError
        If ``X`` does not hold real numbers or ``f`` is not an integer.
    """
    x, wrap = as_matrix(X)
    n = x.shape[0]
    f = _check_f(f, n, 0, "arc", hi=(n - 1) // 2)
    if out is None:
        return wrap(_core.arc(x, f, threads=check_threads(threads)))
    check_out(out, x, X, x.shape)
    _core.arc(x, f, out=out, threads=check_threads(threads))
    return out


__all__ += ["arc", "bucket_permutation", "bucketing", "clip", "nnm"]


# --------------------------------------------------------------------------------------------
# subset search and filtering: MDA, SMEA, CAF
# --------------------------------------------------------------------------------------------

MAX_SUBSETS: int = int(_core.max_subsets)
"""The largest ``C(n, f)`` (number of subsets of ``n - f`` rows) :func:`mda` and :func:`smea`
search; a larger one raises :class:`cyclad.ArgumentError` (``argument == "f"``)."""


def _check_f_subsets(f: Any, n: int, rule: str) -> int:
    """``f`` for an exact subset search: ``n > 2f`` and ``C(n, f) <= MAX_SUBSETS``."""
    v = _check_f_trim(f, n)
    count = math.comb(n, v)
    if count > MAX_SUBSETS:
        msg = (
            f"{rule} searches all C(n, f) subsets of n - f rows: C({n}, {v}) = {count:,} exceeds "
            f"the limit of {MAX_SUBSETS:,} (cyclad.aggregators.MAX_SUBSETS); use a smaller f "
            f"or fewer rows (e.g. after bucketing), or a polynomial rule such as caf"
        )
        raise ArgumentError(msg, argument="f")
    return v


@overload
def mda(X: _Tensors, f: int, *, threads: int | None = ...) -> torch.Tensor: ...
@overload
def mda(X: NDArray[_F], f: int, *, threads: int | None = ...) -> NDArray[_F]: ...
@overload
def mda(X: ArrayLike, f: int, *, threads: int | None = ...) -> NDArray[Any]: ...


def mda(X: Any, f: int, *, threads: int | None = None) -> Any:
    """Minimum-diameter averaging (El Mhamdi et al., 2020), as ByzFL 0.0.11's ``MDA``.

    The mean of the ``n - f`` rows whose largest pairwise distance (diameter) is the least, over
    all ``C(n, f)`` subsets of ``n - f`` rows. Ties go to the first subset in lexicographic order
    of row indices (ByzFL's enumeration, which keeps strict improvements only).

    The search is exact and **exponential in f**: at most :data:`MAX_SUBSETS` subsets are
    allowed. Cost: one pass over ``X`` for the pairwise distances (``O(n^2 D)``, parallel), a
    branch-and-bound search over the subsets on the ``(n, n)`` distance matrix (worst case
    ``C(n, f) (n - f)^2`` look-ups, no work per coordinate; a prefix is cut once its diameter
    reaches the best one found, so well-separated outliers leave few subsets to visit; serial),
    and one pass over the ``n - f`` selected rows (averaged in double).

    Parameters
    ----------
    X : array-like, shape (n, D)
        float32 or float64 vectors, one per row.
    f : int
        Number of Byzantine rows tolerated, ``0 <= f <= (n - 1) // 2`` (``n > 2f``, as ByzFL),
        with ``math.comb(n, f) <= MAX_SUBSETS``. ``f = 0`` is the mean.
    threads : int, optional
        Worker threads; ``None`` uses all cores.

    Returns
    -------
    array, shape (D,)
        Same dtype and kind as ``X``. A row with a non-finite entry is at infinite distance, so
        with at most ``f`` poisoned rows (NaN, +-Inf, overflow-sized) the selected rows are the
        finite ones of least diameter and the result is in the honest box. With more, every
        diameter is infinite and rows ``0 .. n - f - 1`` are averaged (ByzFL's default subset).
        With at most ``f`` finite adversarial rows the selected subset's diameter is at most
        ``Delta`` (the honest rows alone are a candidate), so every selected row is within
        ``Delta`` of an honest row.

    Raises
    ------
    ValueError
        If ``X`` is not a non-empty 2-D array, ``f`` is outside ``[0, (n - 1) // 2]`` or
        ``C(n, f)`` exceeds :data:`MAX_SUBSETS`.
    TypeError
        If ``X`` does not hold real numbers or ``f`` is not an integer.
    """
    x, wrap = as_matrix(X)
    f = _check_f_subsets(f, x.shape[0], "mda")
    return wrap(_core.mda(x, f, threads=check_threads(threads))[0])


@overload
def smea(X: _Tensors, f: int, *, threads: int | None = ...) -> torch.Tensor: ...
@overload
def smea(X: NDArray[_F], f: int, *, threads: int | None = ...) -> NDArray[_F]: ...
@overload
def smea(X: ArrayLike, f: int, *, threads: int | None = ...) -> NDArray[Any]: ...


def smea(X: Any, f: int, *, threads: int | None = None) -> Any:
    """Smallest maximum eigenvalue averaging (Allouah et al., 2023), as ByzFL 0.0.11's ``SMEA``.

    The mean of the ``n - f`` rows whose empirical covariance (``1 / (n - f)`` normalisation)
    has the least largest eigenvalue, over all ``C(n, f)`` subsets of ``n - f`` rows. Ties go to
    the first subset in lexicographic order. The eigenvalue is exact to rounding: it is the
    largest eigenvalue of the subset's ``(n - f, n - f)`` double-centred distance matrix (the
    Gram matrix of its centred rows), never of a ``(D, D)`` covariance. ByzFL estimates it with
    one power step from a random vector, so its choice is random where candidates are close;
    the two agree where ByzFL's estimate is reliable (e.g. ``D = 1``).

    The search is exact and **exponential in f**: at most :data:`MAX_SUBSETS` subsets are
    allowed. Cost: one pass over ``X`` for the pairwise distances (``O(n^2 D)``, parallel), then
    ``O((n - f)^3)`` per subset visited (Householder reduction and bisection), serial; a prefix
    is cut when a lower bound of every subset containing it (its squared diameter over
    ``2 (n - f)``, its scatter trace over ``(n - f - 1)(n - f)``) reaches the best eigenvalue
    found; one pass over the ``n - f`` selected rows (averaged in double). Little is cut when
    no rows stand out: one thread takes about 40 s for ``n = 24, f = 8`` on Gaussian rows, and
    under a millisecond when ``f`` rows lie far out.

    Parameters
    ----------
    X : array-like, shape (n, D)
        float32 or float64 vectors, one per row.
    f : int
        Number of Byzantine rows tolerated, ``0 <= f <= (n - 1) // 2`` (``n > 2f``), with
        ``math.comb(n, f) <= MAX_SUBSETS``. ``f = 0`` is the mean.
    threads : int, optional
        Worker threads; ``None`` uses all cores.

    Returns
    -------
    array, shape (D,)
        Same dtype and kind as ``X``. A subset with a non-finite row has an infinite
        eigenvalue, so with at most ``f`` poisoned rows the result is the mean of finite rows,
        in the honest box when the poisoned rows are the only adversarial ones. With more,
        rows ``0 .. n - f - 1`` are averaged.

    Raises
    ------
    ValueError
        If ``X`` is not a non-empty 2-D array, ``f`` is outside ``[0, (n - 1) // 2]`` or
        ``C(n, f)`` exceeds :data:`MAX_SUBSETS`.
    TypeError
        If ``X`` does not hold real numbers or ``f`` is not an integer.
    """
    x, wrap = as_matrix(X)
    f = _check_f_subsets(f, x.shape[0], "smea")
    return wrap(_core.smea(x, f, threads=check_threads(threads))[0])


@overload
def caf(X: _Tensors, f: int, *, max_iter: int = ..., threads: int | None = ...) -> torch.Tensor: ...
@overload
def caf(
    X: NDArray[_F], f: int, *, max_iter: int = ..., threads: int | None = ...
) -> NDArray[_F]: ...
@overload
def caf(
    X: ArrayLike, f: int, *, max_iter: int = ..., threads: int | None = ...
) -> NDArray[Any]: ...


def caf(X: Any, f: int, *, max_iter: int = 100_000, threads: int | None = None) -> Any:
    """Covariance-bound agnostic filter (Allouah, Guerraoui and Stephan, 2025), as ByzFL 0.0.11's
    ``CAF``.

    Weights ``c = 1``; while ``sum(c) > n - 2f``: ``mu`` is the ``c``-weighted mean,
    ``(lambda, v)`` the top eigenpair of the ``c``-weighted covariance, ``tau_i = ((x_i - mu) .
    v)^2`` for every row (weight 0 ones too, as ByzFL), and ``c_i *= 1 - tau_i / max tau``. The
    result is the ``mu`` with the least ``lambda`` met (the first on ties).

    ByzFL estimates ``(lambda, v)`` with one power step from a random vector, so its result is
    random; here the eigenpair is exact (Jacobi rotations on the ``(n, n)`` weighted double-
    centred distance matrix, in the row space: never a ``(D, D)`` matrix), so the result is
    deterministic, and equal to ByzFL's where its estimate is exact (``D = 1``). Where the top
    eigenvalue is repeated, the eigenvector is Jacobi's first. The loop also stops when a step
    removes no weight (a zero covariance: ``mu`` is then exact) and after ``max_iter`` steps,
    which ByzFL does not cap. With ``f = 0`` no step runs and the result is the mean.

    Cost: one pass over ``X`` for the pairwise distances (``O(n^2 D)``, parallel), ``O(n^3)``
    per step and no work per coordinate (usually a few steps; ``sum(c)`` can creep down over
    thousands when ``n - 2f`` is 1 to 3), one pass over the rows for the weighted mean.

    Parameters
    ----------
    X : array-like, shape (n, D)
        float32 or float64 vectors, one per row.
    f : int
        Number of Byzantine rows tolerated, ``0 <= f <= (n - 1) // 2`` (``n > 2f``).
    max_iter : int, optional
        Most filtering steps, ``>= 1``.
    threads : int, optional
        Worker threads; ``None`` uses all cores.

    Returns
    -------
    array, shape (D,)
        Same dtype and kind as ``X``: a weighted mean of the rows, accumulated in double. A row
        with a non-finite entry starts with weight 0 (it enters no mean, covariance or
        ``max tau``), so with at most ``f`` poisoned rows the result is finite, and in the
        convex hull of the finite rows; with every row non-finite it is the plain mean.

    Raises
    ------
    ValueError
        If ``X`` is not a non-empty 2-D array, ``f`` is outside ``[0, (n - 1) // 2]`` or
        ``max_iter < 1``.
    TypeError
        If ``X`` does not hold real numbers, or ``f`` or ``max_iter`` is not an integer.
    """
    x, wrap = as_matrix(X)
    f = _check_f_trim(f, x.shape[0])
    mi = check_int(max_iter, "max_iter", 1, INT64_MAX)
    return wrap(_core.caf(x, f, mi, threads=check_threads(threads))[0])


__all__ += ["MAX_SUBSETS", "caf", "mda", "smea"]


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------

# Components are looked up as attributes of this module when get() is called, so rules added to
# the module later (or by another section) are picked up without editing these tables.
_RULES = (
    "mean",
    "median",
    "trimmed_mean",
    "meamed",
    "krum",
    "multi_krum",
    "geometric_median",
    "centered_clipping",
    "closest",
    "bulyan",
    "mda",
    "smea",
    "caf",
)
_PRE_AGGREGATIONS = ("nnm", "bucketing", "clip", "arc")


def _lookup(name: str) -> Callable[..., Any] | None:
    fn = getattr(sys.modules[__name__], name, None)
    return fn if callable(fn) else None


def available() -> dict[str, list[str]]:
    """Names :func:`get` accepts in this build.

    Returns
    -------
    dict
        ``{"rules": [...], "pre_aggregations": [...]}``: the registered final rules (each
        ``(n, D) -> (D,)``) and pre-aggregations (``(n, D) -> (n', D)``) that are implemented.
    """
    return {
        "rules": [r for r in _RULES if _lookup(r) is not None],
        "pre_aggregations": [p for p in _PRE_AGGREGATIONS if _lookup(p) is not None],
    }


def _params_of(fn: Callable[..., Any]) -> tuple[set[str], set[str]]:
    """(accepted, required) keyword parameters of a component, besides ``X`` and ``threads``."""
    accepted: set[str] = set()
    required: set[str] = set()
    for i, p in enumerate(inspect.signature(fn).parameters.values()):
        if i == 0 or p.name == "threads":
            continue
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            accepted.add(p.name)
            if p.default is p.empty:
                required.add(p.name)
    return accepted, required


class Aggregator:
    """A composed aggregator ``X -> (D,)`` built by :func:`get`.

    Calling it runs the pre-aggregations in order, then the rule; each component receives the
    parameters its signature accepts. ``f`` and the other checks of a component apply to the
    rows it receives (e.g. after bucketing, ``n' = ceil(n / s)``).

    Attributes
    ----------
    name : str
        The normalised spec, e.g. ``"nnm+trimmed_mean"``.
    params : dict
        The parameters given to :func:`get`.
    """

    def __init__(
        self,
        name: str,
        stages: list[tuple[str, Callable[..., Any], dict[str, Any]]],
        params: dict[str, Any],
        threads: int | None,
    ) -> None:
        self.name = name
        self.params = dict(params)
        self._stages = stages
        self._threads = threads

    def __call__(self, X: Any, *, weights: Any = None) -> Any:
        """Aggregate ``X`` (n, D) into a vector (D,) of the same dtype and kind.

        ``weights`` (per-row, shape ``(n',)`` for the ``n'`` rows the rule receives) go to the
        rule and override any ``weights`` given to :func:`get`; only rules with a ``weights``
        parameter (:func:`mean`, :func:`multi_krum`) accept them.
        """
        x = X
        last = len(self._stages) - 1
        if weights is not None and "weights" not in _params_of(self._stages[last][1])[0]:
            msg = (
                f"the rule {self._stages[last][0]!r} of {self.name!r} takes no weights; "
                "rules with weights: mean, multi_krum"
            )
            raise ArgumentError(msg, argument="weights")
        for k, (stage, fn, kw) in enumerate(self._stages):
            if k == last and weights is not None:
                kw = {**kw, "weights": weights}
            try:
                x = fn(x, **kw, threads=self._threads)
            except ValueError as exc:
                n = getattr(x, "shape", (None,))[0] if hasattr(x, "shape") else None
                where = f"stage {k + 1} '{stage}' of '{self.name}'"
                where += f" (input with n={n} rows)" if n is not None else ""
                msg = f"{where}: {exc}"
                argument = getattr(exc, "argument", None)
                if argument is None:
                    raise ValueError(msg) from exc
                raise ArgumentError(msg, argument=argument) from exc
        return x

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"cyclad.aggregators.get({self.name!r}{', ' if args else ''}{args})"


def get(name: str, *, threads: int | None = None, **params: Any) -> Aggregator:
    """Build an aggregator from a name, composing pre-aggregations and a rule with ``"+"``.

    ``get("nnm+trimmed_mean", f=2)``, ``get("bucketing+krum", s=2, f=1, seed=0)``,
    ``get("clip+mean", tau=1.0)``. Every element but the last must be a pre-aggregation
    (:func:`nnm`, :func:`bucketing`, :func:`clip`, :func:`arc`); the last must be a rule returning
    ``(D,)``. Names are case-insensitive and ``-`` may stand for ``_``. Each component receives
    only the parameters its signature accepts (so ``f`` goes to both ``nnm`` and
    ``trimmed_mean``); ``threads`` goes to all.

    Parameters
    ----------
    name : str
        The spec, e.g. ``"krum"`` or ``"clip+nnm+geometric_median"``. See :func:`available`.
    threads : int, optional
        Worker threads for every component; ``None`` uses all cores.
    **params
        Parameters of the components (``f``, ``tau``, ``s``, ``seed``, ``m``, ``eps``,
        ``weights``, ``neighbors``, ``reference``, ``beta``, ``selection``, ...). Per-row
        ``weights`` can also be given per call: ``agg(X, weights=w)``.

    Returns
    -------
    Aggregator
        A callable ``X -> (D,)``.

    Raises
    ------
    cyclad.ArgumentError
        (a ``ValueError``) If a name is unknown or not available, a pre-aggregation is last or
        a rule is not last (``argument == "name"``), a parameter is accepted by no component or
        a required parameter is missing (``argument`` is that parameter, the first in sorted
        order). Parameter values are checked when the aggregator is called; its errors keep
        the failing component's ``argument``.
    """
    if not isinstance(name, str) or not name.strip():
        msg = f"name must be a non-empty string such as 'nnm+krum', got {name!r}"
        raise ArgumentError(msg, argument="name")
    parts = [p.strip().lower().replace("-", "_") for p in name.split("+")]
    valid = f"rules {list(_RULES)}, pre-aggregations {list(_PRE_AGGREGATIONS)}"
    for k, part in enumerate(parts):
        last = k == len(parts) - 1
        if part not in _RULES and part not in _PRE_AGGREGATIONS:
            msg = f"unknown aggregator {part!r} in {name!r}; valid names: {valid}"
            raise ArgumentError(msg, argument="name")
        if last and part in _PRE_AGGREGATIONS:
            msg = (
                f"{name!r} ends with the pre-aggregation {part!r}; the last element must be a "
                f"rule returning (D,): one of {list(_RULES)}"
            )
            raise ArgumentError(msg, argument="name")
        if not last and part in _RULES:
            msg = (
                f"{part!r} in {name!r} is a rule and must come last; only pre-aggregations "
                f"{list(_PRE_AGGREGATIONS)} may precede the rule"
            )
            raise ArgumentError(msg, argument="name")
        if _lookup(part) is None:
            msg = f"{part!r} is registered but not available in this build; available: "
            msg += f"{available()}"
            raise ArgumentError(msg, argument="name")
    stages: list[tuple[str, Callable[..., Any], dict[str, Any]]] = []
    used: set[str] = set()
    accepted_all: set[str] = set()
    for part in parts:
        fn = _lookup(part)
        assert fn is not None
        accepted, required = _params_of(fn)
        accepted_all |= accepted
        missing = sorted(required - params.keys())
        if missing:
            msg = f"{part!r} in {name!r} needs the parameter(s) {missing}"
            raise ArgumentError(msg, argument=missing[0])
        kw = {k: v for k, v in params.items() if k in accepted}
        used |= kw.keys()
        stages.append((part, fn, kw))
    unknown = sorted(params.keys() - used)
    if unknown:
        msg = (
            f"parameter(s) {unknown} are accepted by no component of {name!r}; "
            f"valid parameters: {sorted(accepted_all)}"
        )
        raise ArgumentError(msg, argument=unknown[0])
    if threads is not None:
        check_threads(threads)
    return Aggregator("+".join(parts), stages, params, threads)


__all__ += ["Aggregator", "available", "get"]
