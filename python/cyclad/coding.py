"""Cyclic gradient coding (LAD) and exact straggler-tolerant gradient codes (Tandon et al.).

LAD splits the training set into ``N = n`` subsets. In round ``t`` the server draws a permutation
``pi_t`` of the subsets and device ``i`` computes the gradients of the window
``{pi_t(i), pi_t(i+1), ..., pi_t(i+d-1)}`` (indices mod ``n``) and sends the coded vector
``z_i = sum_j w_ij g_{a_ij}`` (uniform weights ``1/d`` by default). :class:`CyclicCode` gives the
assignments, :func:`encode` computes the coded vectors for all devices at once (C++ kernel).

With uniform random permutations every honest ``z_i`` is an unbiased estimate of the mean
gradient ``g = (1/N) sum_j g_j`` with ``E||z_i - g||^2 = (N-d)/(d(N-1)) * het``, where
``het = (1/N) sum_j ||g_j - g||^2``; the mean of the ``n`` coded vectors equals ``g`` exactly
(every subset appears in exactly ``d`` windows).

:class:`GradientCode` (cyclic repetition code) and :class:`FractionalRepetitionCode` are the exact
gradient codes of Tandon et al. (2017): any ``n - s`` responders suffice to recover ``g``.

Arguments: integer arguments are checked against the range of the type they end up in (``n``
and ``d`` index int64 arrays: at most ``2**63 - 1``; seeds and round indices are 64-bit words:
``[0, 2**64)``; ``threads``: ``[1, 2**31 - 1]``), raising ``ValueError`` naming the argument and
the range. Arrays reach the kernel C-contiguous and aligned: a misaligned or strided ``G``,
``assignment`` or ``weights`` is copied once (see :mod:`cyclad._validation`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from cyclad import _core, _random
from cyclad._validation import (
    INT64_MAX,
    UINT64_MAX,
    ArgumentError,
    ArgumentTypeError,
    as_c_aligned,
    as_index_array,
    as_matrix,
    check_int,
    check_out,
    check_threads,
    to_numpy,
)

__all__ = [
    "CyclicCode",
    "DecodeInfo",
    "FractionalRepetitionCode",
    "GradientCode",
    "NoMajorityError",
    "encode",
    "permutation",
]

Mode = Literal["permute", "shift", "fixed"]
_MODES = ("permute", "shift", "fixed")
_U64_MAX = UINT64_MAX
Construction = Literal["random", "deterministic"]
_CONSTRUCTIONS = ("random", "deterministic")


# --------------------------------------------------------------------------------------------
# assignments
# --------------------------------------------------------------------------------------------


def permutation(n: int, seed: int, t: int) -> NDArray[np.int64]:
    """The uniform random permutation ``pi_t`` of ``range(n)`` used by ``mode="permute"``.

    ``pi_t = argsort(u)`` (stable) where ``u`` are the first ``n`` words of the run's stream
    ``(seed, t, 0, PERMUTATION)`` (:mod:`cyclad._random`: Philox-4x64-10 with key ``(seed, t)``
    and counter 0): a pure function of ``(seed, t)``, counter-based (no state to carry between
    rounds), uniform up to the ~``n^2 / 2^65`` chance of a tie among the words.

    Parameters
    ----------
    n : int
        Permutation length, ``1 <= n <= 2**63 - 1`` (indices are int64).
    seed : int
        Shared seed in ``[0, 2**64)``.
    t : int
        Round index in ``[0, 2**64)``.

    Returns
    -------
    ndarray of int64, shape (n,)

    Raises
    ------
    ValueError
        If an argument is out of range.
    TypeError
        If an argument is not an integer.
    """
    n = check_int(n, "n", lo=1, hi=INT64_MAX)
    seed = check_int(seed, "seed", lo=0, hi=_U64_MAX)
    t = check_int(t, "t", lo=0, hi=_U64_MAX)
    return _random.permutation(seed, t, 0, _random.PERMUTATION, n)


class CyclicCode:
    """Cyclic task assignment of LAD: ``n`` devices, ``N = n`` subsets, redundancy ``d``.

    In round ``t`` device ``i`` gets the window ``{pi_t(i), ..., pi_t(i+d-1)}`` (indices mod
    ``n``) of the round's permutation ``pi_t``, so every subset is computed by exactly ``d``
    devices.

    Parameters
    ----------
    n : int
        Number of devices (and of data subsets), ``1 <= n <= 2**63 - 1`` (indices are int64).
    d : int
        Redundancy, ``1 <= d <= n``: subsets per device and devices per subset.
    mode : {"permute", "shift", "fixed"}
        How ``pi_t`` is drawn. ``"permute"``: uniform random, see :func:`permutation` (a pure
        function of ``(seed, t)``, so the server and the devices derive the same assignment from
        the shared seed). ``"shift"``: ``pi_t(i) = (i + t) mod n``. ``"fixed"``: the identity
        every round (with ``d = 1`` this is plain robust distributed gradient descent).
    seed : int
        Shared seed in ``[0, 2**64)`` (used by ``"permute"`` only).

    Raises
    ------
    ValueError
        If ``n < 1``, ``d`` is outside ``[1, n]``, ``seed`` is outside ``[0, 2**64)`` or ``mode``
        is unknown.
    TypeError
        If ``n``, ``d`` or ``seed`` is not an integer.
    """

    def __init__(self, n: int, d: int, mode: Mode = "permute", seed: int = 0) -> None:
        self.n = check_int(n, "n", lo=1, hi=INT64_MAX)
        self.d = check_int(d, "d", lo=1, hi=self.n)
        if mode not in _MODES:
            msg = f"mode must be one of {_MODES}, got {mode!r}"
            raise ArgumentError(msg, argument="mode")
        self.mode: Mode = mode
        self.seed = check_int(seed, "seed", lo=0, hi=_U64_MAX)

    @property
    def N(self) -> int:
        """Number of data subsets (equal to ``n``)."""
        return self.n

    def permutation(self, t: int) -> NDArray[np.int64]:
        """The round's permutation ``pi_t`` of the subsets, shape ``(n,)``, int64.

        Raises
        ------
        ValueError, TypeError
            If ``t`` is not an integer in ``[0, 2**64)``.
        """
        t = check_int(t, "t", lo=0, hi=_U64_MAX)
        if self.mode == "permute":
            return permutation(self.n, self.seed, t)
        if self.mode == "shift":
            return (np.arange(self.n, dtype=np.int64) + t % self.n) % self.n
        return np.arange(self.n, dtype=np.int64)

    def assignment(self, t: int) -> NDArray[np.int64]:
        """Subset indices of round ``t``: row ``i`` is ``pi_t(i), ..., pi_t(i+d-1)`` (mod n).

        Parameters
        ----------
        t : int
            Round index, ``0 <= t < 2**64``.

        Returns
        -------
        ndarray of int64, shape (n, d)
            A pure function of ``(n, d, mode, seed, t)``.

        Raises
        ------
        ValueError, TypeError
            If ``t`` is not an integer in ``[0, 2**64)``.
        """
        pi = self.permutation(t)
        idx = (np.arange(self.n)[:, None] + np.arange(self.d)[None, :]) % self.n
        return np.asarray(pi[idx], dtype=np.int64)

    def counts(self, t: int) -> NDArray[np.int64]:
        """How many devices compute each subset in round ``t`` (always ``d`` for every subset).

        Returns
        -------
        ndarray of int64, shape (N,)
        """
        return np.bincount(self.assignment(t).ravel(), minlength=self.n).astype(np.int64)

    def variance_factor(self) -> float:
        """``(N-d) / (d(N-1))``: ``E||z_i - g||^2 / het`` under uniform random permutations
        with uniform weights (1 at ``d = 1``, 0 at ``d = N``; 0 when ``N = 1``)."""
        if self.n == 1:
            return 0.0
        return (self.n - self.d) / (self.d * (self.n - 1))

    def encode(
        self,
        G: Any,
        t: int,
        weights: ArrayLike | None = None,
        *,
        out: NDArray[Any] | None = None,
        threads: int | None = None,
    ) -> Any:
        """Coded vectors of round ``t``: ``encode(G, self.assignment(t), weights, out=out)``.

        ``G`` must have ``N = n`` rows; see :func:`encode` for the rest.
        """
        g, _ = to_numpy(G, "G")
        if g.ndim == 2 and g.shape[0] != self.n:
            msg = f"G must have N = {self.n} rows (one per subset), got shape {g.shape}"
            raise ArgumentError(msg, argument="G")
        return encode(G, self.assignment(t), weights, out=out, threads=threads)

    def __repr__(self) -> str:
        return f"CyclicCode(n={self.n}, d={self.d}, mode={self.mode!r}, seed={self.seed})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CyclicCode):
            return NotImplemented
        return (self.n, self.d, self.mode, self.seed) == (
            other.n,
            other.d,
            other.mode,
            other.seed,
        )

    def __hash__(self) -> int:
        return hash((self.n, self.d, self.mode, self.seed))


# --------------------------------------------------------------------------------------------
# encoding
# --------------------------------------------------------------------------------------------


def _as_assignment(assignment: Any, N: int) -> NDArray[np.int64]:
    a = as_index_array(assignment, "assignment", ndim=2, shape="(n, d)", bound=N, bound_name="N")
    if a.size == 0:
        msg = f"assignment must not be empty, got shape {a.shape}"
        raise ArgumentError(msg, argument="assignment")
    return a


def _as_weights(weights: Any, n: int, d: int, dtype: np.dtype[Any]) -> NDArray[Any]:
    if weights is None:
        return np.full(d, 1.0 / d, dtype=dtype)
    w, _ = to_numpy(weights, "weights")
    if w.dtype.kind not in "iuf":
        msg = f"weights must hold real numbers, got dtype {w.dtype}"
        raise ArgumentTypeError(msg, argument="weights")
    if w.shape not in ((n, d), (d,)):
        msg = f"weights must have shape (n, d) = ({n}, {d}) or (d,) = ({d},), got {w.shape}"
        raise ArgumentError(msg, argument="weights")
    with np.errstate(over="ignore"):  # overflow is reported below as a non-finite weight
        out = as_c_aligned(w, dtype)
    if not (np.all(np.isfinite(w)) and np.all(np.isfinite(out))):
        msg = f"weights must be finite (also after conversion to {dtype})"
        raise ArgumentError(msg, argument="weights")
    return out


def encode(
    G: Any,
    assignment: Any,
    weights: ArrayLike | None = None,
    *,
    out: NDArray[Any] | None = None,
    threads: int | None = None,
) -> Any:
    """Coded vectors ``z_i = sum_{j<d} w_ij G[a_ij]`` for every device ``i`` (C++ kernel).

    One pass over the data: ``G`` is processed in column blocks that stay in cache while all
    ``n`` outputs of the block are formed, so ``G`` is read once and ``z`` written once.

    Parameters
    ----------
    G : array-like, shape (N, D)
        Subset gradients (float32 or float64; other real dtypes become float64).
    assignment : array-like of int, shape (n, d)
        Subset indices, every entry in ``[0, N)`` (e.g. ``CyclicCode.assignment(t)``).
    weights : array-like, shape (n, d) or (d,), optional
        Coefficients ``w_ij``; a ``(d,)`` vector is shared by every device. Default: ``1/d``
        (so ``z_i`` is the mean of the window's gradients). Cast to ``G``'s dtype; must be
        finite.
    out : ndarray, shape (n, D), optional
        A C-contiguous, aligned, writable NumPy array of ``G``'s dtype (``G`` a NumPy array too)
        that does not overlap ``G``, to receive the result instead of a fresh array. A fresh
        ``(n, D)`` array costs the operating system's page faults and zeroing on first touch,
        about one more write of the output; a caller encoding every round passes one buffer.
    threads : int, optional
        Worker threads; ``None`` uses all cores.

    Returns
    -------
    array, shape (n, D)
        Same dtype and kind as ``G`` (``out`` when given). The terms are accumulated in ``G``'s
        dtype (float32 stays float32, as in NumPy and torch; the error is within
        ``(d + 3) * eps * sum_j |w_ij g_j|``, which the tests check against a float64
        reference) in the fixed order ``j = 0..d-1``:
        results are bit-identical for any thread count. NaN and Inf in ``G`` propagate to the
        devices whose windows contain them.

    Raises
    ------
    ValueError
        If ``G`` or ``assignment`` is not 2-D or is empty, an assignment entry is outside
        ``[0, N)``, ``weights`` has the wrong shape or a non-finite entry, or ``out`` has the
        wrong shape, is not C-contiguous, aligned and writable, or overlaps ``G``.
    TypeError
        If ``G`` or ``weights`` does not hold real numbers, ``assignment`` does not hold
        integers, or ``out`` is given but is not a NumPy array of ``G``'s dtype (or ``G`` is
        not a NumPy array).
    """
    g, wrap = as_matrix(G, "G")
    a = _as_assignment(assignment, g.shape[0])
    w = _as_weights(weights, a.shape[0], a.shape[1], g.dtype)
    th = check_threads(threads)
    if out is None:
        return wrap(_core.encode(g, a, w, threads=th))
    check_out(out, g, G, (a.shape[0], g.shape[1]), "G")
    _core.encode(g, a, w, out=out, threads=th)
    return out


# --------------------------------------------------------------------------------------------
# exact gradient codes (Tandon et al., 2017)
# --------------------------------------------------------------------------------------------


_MIN_TOLERANCE = 1e-9  # a residual this small is always accepted by strict decoding
_MAX_TOLERANCE = 1e-6  # and one above this never is, however ill-conditioned the responders


@dataclass(frozen=True)
class DecodeInfo:
    """The outcome of decoding one set of responders (:meth:`GradientCode.decode_info`).

    Attributes
    ----------
    weights : ndarray of float64, shape (r,)
        One weight per responder, in the order given.
    residual : float
        ``max_j |(weights @ B[responders])_j - 1|``: the decoded mean gradient is off by at
        most ``residual * max_j |g_j|`` per coordinate (plus the rounding of the sum).
    condition : float
        Condition number of ``B[responders]`` on its rank-``(n - s)`` part (largest over
        ``(n - s)``-th singular value; 1 for the fractional repetition code).
    tolerance : float
        What ``strict=True`` accepts: ``8 n eps condition`` (``eps`` of float64), the residual
        a backward-stable solve can reach at that conditioning, clamped to ``[1e-9, 1e-6]``.
    """

    weights: NDArray[np.float64]
    residual: float
    condition: float
    tolerance: float

    @property
    def ok(self) -> bool:
        """``residual <= tolerance``."""
        return self.residual <= self.tolerance


class _ExactCode:
    """Shared machinery of the exact gradient codes: ``B`` is ``(n, n)`` with ``s + 1``
    non-zeros per row; device ``i`` sends ``z_i = sum_j B[i, j] g_j``."""

    n: int
    s: int
    B: NDArray[np.float64]
    _support: NDArray[np.int64]

    def assignment(self) -> NDArray[np.int64]:
        """Subsets of each device: the support of row ``i`` of ``B``, shape ``(n, s+1)``."""
        return self._support.copy()

    def weights(self) -> NDArray[np.float64]:
        """The non-zeros of ``B`` in the order of :meth:`assignment`, shape ``(n, s+1)``."""
        return np.take_along_axis(self.B, self._support, axis=1)

    def encode(self, G: Any, *, threads: int | None = None) -> Any:
        """Coded vectors ``z = B @ G`` of all devices, shape ``(n, D)``; ``G`` is ``(n, D)``.

        See :func:`encode` (weights are cast to ``G``'s dtype)."""
        g, _ = to_numpy(G, "G")
        if g.ndim == 2 and g.shape[0] != self.n:
            msg = f"G must have N = {self.n} rows (one per subset), got shape {g.shape}"
            raise ArgumentError(msg, argument="G")
        return encode(G, self._support, self.weights(), threads=threads)

    def _responders(self, responders: Any) -> NDArray[np.int64]:
        r = as_index_array(
            responders, "responders", ndim=1, shape="(r,)", bound=self.n, bound_name="n"
        )
        need = self.n - self.s
        if r.size < need:
            msg = (
                f"need at least n - s = {need} responders to decode "
                f"(n={self.n}, s={self.s}), got {r.size}"
            )
            raise ArgumentError(msg, argument="responders")
        if np.unique(r).size != r.size:
            msg = f"responders must be distinct, got {r.tolist()}"
            raise ArgumentError(msg, argument="responders")
        return r

    def _solve(self, r: NDArray[np.int64]) -> tuple[NDArray[np.float64], float]:
        """Weights for the responders ``r`` and the condition number of the solve."""
        raise NotImplementedError

    def decode_info(self, responders: Any, *, strict: bool = False) -> DecodeInfo:
        """The decoding weights of ``responders`` with the residual and conditioning they
        achieve.

        ``B[responders]`` has rank ``n - s`` (its rows span the code, which contains the
        all-ones vector). The weights are its truncated-SVD least-squares solution at that
        rank (rank revealing: the singular values that are rounding noise are dropped, not
        inverted), ``a = argmin ||a @ B[responders] - ones(n)||``.

        Parameters
        ----------
        responders : array-like of int, shape (r,)
            Distinct device indices in ``[0, n)``, ``r >= n - s``, in any order.
        strict : bool
            Raise ``RuntimeError`` if the residual exceeds the tolerance (default: return the
            weights whatever the residual, which the result reports).

        Returns
        -------
        DecodeInfo
            ``weights`` (shape ``(r,)``, in the order given), ``residual``
            (``max |a @ B[responders] - 1|``), ``condition`` (of ``B[responders]`` on its
            rank-``(n - s)`` part) and ``tolerance`` (see :class:`DecodeInfo`).

        Raises
        ------
        ValueError
            If there are fewer than ``n - s`` responders, duplicates or out-of-range indices.
        TypeError
            If ``responders`` does not hold integers.
        RuntimeError
            With ``strict=True``, if the residual exceeds the tolerance.
        """
        r = self._responders(responders)
        a, cond = self._solve(r)
        resid = float(np.max(np.abs(a @ self.B[r] - 1.0)))
        eps = float(np.finfo(np.float64).eps)
        tol = min(_MAX_TOLERANCE, max(_MIN_TOLERANCE, 8.0 * self.n * eps * cond))
        if strict and not resid <= tol:
            msg = (
                f"decoding failed for responders {r.tolist()}: residual {resid:.3g} exceeds "
                f"the tolerance {tol:.3g} (condition number {cond:.3g})"
            )
            raise RuntimeError(msg)
        return DecodeInfo(weights=a, residual=resid, condition=cond, tolerance=tol)

    def decode_weights(self, responders: Any, *, strict: bool = False) -> NDArray[np.float64]:
        """Weights ``a`` with ``a @ B[responders] == ones(n)`` (to the residual of
        :meth:`decode_info`, which also reports it).

        Then ``sum_k a_k z_{responders[k]} = sum_j g_j``.

        Parameters
        ----------
        responders : array-like of int, shape (r,)
            Distinct device indices in ``[0, n)``, ``r >= n - s``, in any order.
        strict : bool
            Raise ``RuntimeError`` if the residual exceeds the tolerance of
            :class:`DecodeInfo`; by default the weights are returned whatever the residual.

        Returns
        -------
        ndarray of float64, shape (r,)
            One weight per responder, in the order given.

        Raises
        ------
        ValueError
            If there are fewer than ``n - s`` responders, duplicates or out-of-range indices.
        TypeError
            If ``responders`` does not hold integers.
        RuntimeError
            With ``strict=True``, if the residual exceeds the tolerance.
        """
        return self.decode_info(responders, strict=strict).weights

    def decode(
        self, coded: Any, responders: Any, *, strict: bool = False, threads: int | None = None
    ) -> Any:
        """Recover the mean gradient ``g = (1/N) sum_j g_j`` from the responders' coded vectors.

        Parameters
        ----------
        coded : array-like, shape (r, D)
            Row ``k`` is the coded vector ``z`` of device ``responders[k]``.
        responders : array-like of int, shape (r,)
            See :meth:`decode_weights`.
        strict : bool
            As :meth:`decode_weights`.
        threads : int, optional
            Worker threads; ``None`` uses all cores.

        Returns
        -------
        array, shape (D,)
            The *mean* (not the sum) of the subset gradients, ``coded``'s dtype and kind.

        Raises
        ------
        ValueError, TypeError, RuntimeError
            As :meth:`decode_weights`, or if ``coded`` is not ``(len(responders), D)``.
        """
        z, wrap = as_matrix(coded, "coded")
        a = self.decode_weights(responders, strict=strict)
        if z.shape[0] != a.size:
            msg = f"coded must have one row per responder ({a.size}), got shape {z.shape}"
            raise ArgumentError(msg, argument="coded")
        keep = np.flatnonzero(a)
        w = (a[keep] / self.n)[None, :]
        out = _core.encode(
            z, keep[None, :].astype(np.int64), w.astype(z.dtype), threads=check_threads(threads)
        )
        return wrap(out[0])


def _cyclic_mds_generator(n: int, s: int) -> NDArray[np.float64]:
    """Coefficients ``g_0..g_s`` (``g_0 = 1``) of the real generator polynomial
    ``g(x) = prod_{k in K} (x - w^k)``, ``w = exp(2 pi i / n)``, of the cyclic code whose zeros
    are the ``s`` consecutive frequencies ``K = {m, ..., m + s - 1}``, ``m = (n - s + 1) / 2``
    (needs ``n - s`` odd): ``K`` is closed under ``k -> n - k``, so ``g`` is a product of real
    quadratics ``x^2 - 2 cos(2 pi k / n) x + 1`` (and ``x + 1`` for ``k = n / 2``)."""
    m = (n - s + 1) // 2
    g = np.ones(1)
    for k in range(m, m + s):
        if 2 * k == n:
            g = np.convolve(g, [1.0, 1.0])
        elif 2 * k < n:
            g = np.convolve(g, [1.0, -2.0 * np.cos(2.0 * np.pi * k / n), 1.0])
    return g


class GradientCode(_ExactCode):
    """Cyclic repetition gradient code tolerating any ``s`` stragglers (Tandon et al., 2017).

    Row ``i`` of the encoding matrix ``B`` is supported on ``{i, ..., i+s} mod n`` with
    ``B[i, i] = 1``; any ``n - s`` rows span a space that contains the all-ones vector, so any
    ``n - s`` responders recover the mean gradient. Two constructions:

    ``construction="random"`` (default; the paper's Algorithm 2): draw ``H`` of shape
    ``(s, n)`` with ``H @ 1 = 0`` (first ``n - 1`` columns uniform in ``[-1/2, 1/2)`` from the
    stream ``(seed, SETUP, 0, CODE_MATRIX)`` of :mod:`cyclad._random`, last column minus their
    row sums) and pick each row of ``B`` in the null space of ``H``. For a generic ``H`` any
    ``n - s`` rows of ``B`` are independent, but the conditioning of ``B[responders]`` varies
    a lot between straggler patterns and grows with ``n`` (condition numbers up to ~1e10 at
    ``n = 20, s = 4``, residuals up to ~1e-7).

    ``construction="deterministic"``: the real cyclic MDS code of Raviv, Tamo, Tandon and
    Dimakis ("Gradient coding from cyclic MDS codes and expander graphs", 2018). Row ``i`` is
    the ``i``-th cyclic shift of the coefficients of the real generator polynomial
    ``g(x) = prod_{k in K} (x - w^k)`` (``w = exp(2 pi i / n)``) whose ``s`` zeros are the
    consecutive frequencies ``K = {(n-s+1)/2, ..., (n+s-1)/2}`` around ``n / 2``. The rows of
    ``B`` span the cyclic code ``{c : c_hat(k) = 0 for k in K}`` of dimension ``n - s``, which
    contains the all-ones vector (frequency 0 is not a zero) and is MDS (BCH bound: ``s``
    consecutive zeros give distance ``s + 1``), so any ``n - s`` rows are independent. ``K`` must be
    closed under ``k -> n - k`` for ``g`` to be real, which with consecutive zeros needs
    ``n - s`` odd. No random numbers: the matrix depends on ``(n, s)`` only. For small ``s``
    it is far better conditioned than the random one (worst condition number of
    ``B[responders]`` over 5000 random patterns at ``n = 20``: ~4e2 for ``s = 3`` and ~3e3 for
    ``s = 5``, against ~9e5 and ~5e6 for random ``H``); the advantage shrinks as ``s`` grows
    (``n = 40, s = 9``: ~6e6 against ~2e7).

    Parameters
    ----------
    n : int
        Number of devices and of data subsets, ``1 <= n <= 2**63 - 1``.
    s : int
        Stragglers tolerated, ``0 <= s < n`` (``n - s`` odd for the deterministic
        construction, unless ``s = 0``).
    seed : int
        Seed of ``H`` in ``[0, 2**64)``; server and devices must use the same one (random
        construction only).
    construction : {"random", "deterministic"}
        See above.

    Raises
    ------
    ValueError, TypeError
        If ``n``, ``s`` or ``seed`` is out of range or not an integer, ``construction`` is
        unknown, or ``construction="deterministic"`` with ``s > 0`` and ``n - s`` even.
    """

    def __init__(
        self, n: int, s: int, *, seed: int = 0, construction: Construction = "random"
    ) -> None:
        self.n = check_int(n, "n", lo=1, hi=INT64_MAX)
        self.s = check_int(s, "s", lo=0, hi=self.n - 1)
        self.seed = check_int(seed, "seed", lo=0, hi=_U64_MAX)
        if construction not in _CONSTRUCTIONS:
            msg = f"construction must be one of {_CONSTRUCTIONS}, got {construction!r}"
            raise ArgumentError(msg, argument="construction")
        self.construction: Construction = construction
        n, s = self.n, self.s
        if construction == "deterministic" and s > 0 and (n - s) % 2 == 0:
            msg = (
                f"the deterministic (real cyclic MDS) construction needs n - s odd, got "
                f"n={n}, s={s}; use s={s + 1} or construction='random'"
            )
            raise ArgumentError(msg, argument="s")
        self._support = (np.arange(n)[:, None] + np.arange(s + 1)[None, :]) % n
        B = np.zeros((n, n))
        if s == 0:
            np.fill_diagonal(B, 1.0)
        elif construction == "deterministic":
            g = _cyclic_mds_generator(n, s)
            rows = np.arange(n)[:, None]
            B[rows, self._support] = g[None, :]
        else:
            stream = _random.Stream(self.seed, _random.SETUP, 0, _random.CODE_MATRIX)
            H = np.empty((s, n))
            H[:, :-1] = stream.random((s, n - 1)) - 0.5
            H[:, -1] = -H[:, :-1].sum(axis=1)
            for i in range(n):
                supp = self._support[i]
                B[i, i] = 1.0
                B[i, supp[1:]] = np.linalg.solve(H[:, supp[1:]], -H[:, i])
        self.B = B

    def _solve(self, r: NDArray[np.int64]) -> tuple[NDArray[np.float64], float]:
        # Truncated SVD at the known rank n - s of B[r]: the other singular values are
        # rounding noise, and inverting them (lstsq's default cut-off eps * n) only adds error.
        k = self.n - self.s
        U, S, Vt = np.linalg.svd(self.B[r], full_matrices=False)
        if not S[k - 1] > 0:
            return np.zeros(r.size), float("inf")
        a = U[:, :k] @ ((Vt[:k] @ np.ones(self.n)) / S[:k])
        return np.asarray(a, dtype=np.float64), float(S[0] / S[k - 1])

    def __repr__(self) -> str:
        if self.construction == "deterministic":
            return f"GradientCode(n={self.n}, s={self.s}, construction='deterministic')"
        return f"GradientCode(n={self.n}, s={self.s}, seed={self.seed})"


class FractionalRepetitionCode(_ExactCode):
    """Fractional repetition gradient code of Tandon et al. (2017), tolerating ``s`` stragglers.

    Needs ``(s + 1) | n``. Devices form ``n / (s+1)`` groups of ``s + 1`` consecutive devices;
    every device of group ``k`` computes the same ``s + 1`` subsets
    ``{k(s+1), ..., k(s+1)+s}`` and sends their sum (``B`` holds 0/1 entries). Any ``n - s``
    responders include at least one device of every group; decoding gives weight 1 to the first
    responder of each group (in the order given) and 0 to the others.

    Parameters
    ----------
    n : int
        Number of devices and of data subsets, ``1 <= n <= 2**63 - 1``.
    s : int
        Stragglers tolerated, ``0 <= s < n`` with ``(s + 1)`` dividing ``n``.

    Raises
    ------
    ValueError, TypeError
        If ``n`` or ``s`` is out of range, not an integer, or ``s + 1`` does not divide ``n``.
    """

    def __init__(self, n: int, s: int) -> None:
        self.n = check_int(n, "n", lo=1, hi=INT64_MAX)
        self.s = check_int(s, "s", lo=0, hi=self.n - 1)
        if self.n % (self.s + 1) != 0:
            msg = f"s + 1 must divide n for a fractional repetition code, got n={n}, s={s}"
            raise ArgumentError(msg, argument="s")
        group = np.arange(self.n) // (self.s + 1)
        self._group = group
        self._support = group[:, None] * (self.s + 1) + np.arange(self.s + 1)[None, :]
        self.B = (group[:, None] == group[None, :]).astype(np.float64)

    def _solve(self, r: NDArray[np.int64]) -> tuple[NDArray[np.float64], float]:
        _, first = np.unique(self._group[r], return_index=True)
        a = np.zeros(r.size)
        a[first] = 1.0
        return a, 1.0

    @property
    def groups(self) -> int:
        """Number of groups, ``n / (s + 1)``."""
        return self.n // (self.s + 1)

    def _check_f(self, f: int | None) -> int:
        hi = self.s // 2
        if f is None:
            return hi
        return check_int(f, "f", lo=0, hi=hi)

    def majority_rows(
        self, coded: Any, *, f: int | None = None, absent: Any = None
    ) -> NDArray[np.int64]:
        """For each group, a row that at least ``s + 1 - f`` devices of the group sent bit for
        bit (DRACO's majority vote, Chen et al. 2018).

        Honest devices of a group compute the same subsets and send bit-identical vectors, so
        with at most ``f`` Byzantine (or absent) devices in a group the ``s + 1 - f`` honest
        ones win, whatever the others send. Equality is on bit patterns (the rows viewed as
        unsigned integers of the same width), not on values: ``NaN`` rows with the same
        payload are equal, ``0.0`` and ``-0.0`` are not. No value is ever compared as a float,
        so NaN, Inf or garbage rows cannot break the vote; they only fail to collect votes
        (unless enough devices send the same garbage, which then wins, as in any majority vote).

        Parameters
        ----------
        coded : array-like, shape (n, D)
            Row ``i`` is the vector device ``i`` sent (float32 or float64).
        f : int, optional
            Byzantine devices tolerated per group, ``0 <= f <= s // 2`` (so that the winner is
            unique); default ``s // 2`` (a plain majority). A smaller ``f`` asks for more
            agreement.
        absent : array-like of bool, shape (n,), optional
            Devices that sent nothing (their rows are placeholders, e.g. NaN): they neither
            win nor vote, so identical placeholders cannot outvote the honest devices. An
            absent device counts against its group like a Byzantine one.

        Returns
        -------
        ndarray of int64, shape (n / (s + 1),)
            Row ``k``: the first device of group ``k`` (in device order) whose vector at least
            ``s + 1 - f`` devices of the group sent.

        Raises
        ------
        NoMajorityError
            (a ``ValueError``) If some group has no vector sent by ``s + 1 - f`` of its devices;
            ``.groups`` lists them.
        ValueError, TypeError
            If ``coded`` is not an ``(n, D)`` real array or ``f`` is out of range.
        """
        z, _ = as_matrix(coded, "coded")
        return self._majority_rows(z, self._check_f(f), absent)

    def _absent(self, absent: Any) -> NDArray[np.bool_]:
        if absent is None:
            return np.zeros(self.n, dtype=bool)
        a = np.asarray(absent)
        if a.dtype != np.bool_ or a.shape != (self.n,):
            msg = f"absent must be a boolean array of shape ({self.n},), got {a.dtype} {a.shape}"
            raise ArgumentError(msg, argument="absent")
        return a

    def _majority_rows(self, z: NDArray[Any], f: int, absent: Any = None) -> NDArray[np.int64]:
        if z.shape[0] != self.n:
            msg = f"coded must have one row per device (n = {self.n}), got shape {z.shape}"
            raise ArgumentError(msg, argument="coded")
        gone = self._absent(absent)
        bits = z.view(np.uint32 if z.dtype == np.float32 else np.uint64)
        size, need = self.s + 1, self.s + 1 - f
        rows = np.full(self.groups, -1, dtype=np.int64)
        for k in range(self.groups):
            lo = k * size
            # The winner is the first device with its bit pattern, and needs need - 1 equal
            # rows after it: only the first f + 1 devices of the group can be it.
            for p in range(f + 1):
                c = lo + p
                if gone[c]:
                    continue
                votes = 1
                for j in range(c + 1, lo + size):
                    votes += bool(not gone[j] and np.array_equal(bits[c], bits[j]))
                    if votes >= need:
                        break
                if votes >= need:
                    rows[k] = c
                    break
        bad = np.flatnonzero(rows < 0)
        if bad.size:
            msg = (
                f"no majority in group(s) {bad.tolist()}: no vector was sent bit for bit by "
                f"{need} of the {size} devices of the group (more than {size - need} "
                "Byzantine or absent)"
            )
            raise NoMajorityError(msg, bad.tolist())
        return rows

    def majority_decode(
        self, coded: Any, *, f: int | None = None, absent: Any = None, threads: int | None = None
    ) -> Any:
        """DRACO decoding: the mean gradient ``g = (1/N) sum_j g_j`` from all ``n`` coded
        vectors (:meth:`encode`), up to ``f`` of them Byzantine in each group.

        Each group's sum of subset gradients is its majority vector (:meth:`majority_rows`);
        ``g`` is the sum of the ``n / (s + 1)`` winners divided by ``n``, summed in group
        order (C++ kernel, bit-identical for any thread count). With ``s + 1 = 2f + 1`` this
        is DRACO's repetition code: ``2f + 1`` subset gradients per device, and the exact
        gradient whatever ``f`` Byzantine devices send.

        Parameters
        ----------
        coded : array-like, shape (n, D)
            Row ``i``: device ``i``'s vector (NaN rows for devices that sent nothing).
        f, absent : optional
            See :meth:`majority_rows`.
        threads : int, optional
            Worker threads; ``None`` uses all cores.

        Returns
        -------
        array, shape (D,)
            ``coded``'s dtype and kind; bit for bit what the winners give (no Byzantine value
            enters the sum).

        Raises
        ------
        NoMajorityError, ValueError, TypeError
            As :meth:`majority_rows`.
        """
        z, wrap = as_matrix(coded, "coded")
        rows = self._majority_rows(z, self._check_f(f), absent)
        w = np.full((1, rows.size), 1.0 / self.n, dtype=z.dtype)
        out = _core.encode(z, rows[None, :], w, threads=check_threads(threads))
        return wrap(out[0])

    def __repr__(self) -> str:
        return f"FractionalRepetitionCode(n={self.n}, s={self.s})"


class NoMajorityError(ArgumentError):
    """A group of a repetition code has no majority vector (:meth:`~FractionalRepetitionCode.
    majority_rows`): more of its devices disagree with the honest vector than ``f`` allows.

    Attributes
    ----------
    groups : list of int
        The groups without a majority.
    """

    def __init__(self, message: str, groups: list[int]) -> None:
        super().__init__(message, argument="coded")
        self.groups = list(groups)

    def __reduce__(self) -> tuple[type[NoMajorityError], tuple[str, list[int]]]:  # type: ignore[override]
        return type(self), (str(self), self.groups)
