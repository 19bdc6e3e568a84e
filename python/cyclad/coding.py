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
    check_threads,
    to_numpy,
)

__all__ = [
    "CyclicCode",
    "FractionalRepetitionCode",
    "GradientCode",
    "encode",
    "permutation",
]

Mode = Literal["permute", "shift", "fixed"]
_MODES = ("permute", "shift", "fixed")
_U64_MAX = UINT64_MAX


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
        self, G: Any, t: int, weights: ArrayLike | None = None, *, threads: int | None = None
    ) -> Any:
        """Coded vectors of round ``t``: ``encode(G, self.assignment(t), weights)``.

        ``G`` must have ``N = n`` rows; see :func:`encode` for the rest.
        """
        g, _ = to_numpy(G, "G")
        if g.ndim == 2 and g.shape[0] != self.n:
            msg = f"G must have N = {self.n} rows (one per subset), got shape {g.shape}"
            raise ArgumentError(msg, argument="G")
        return encode(G, self.assignment(t), weights, threads=threads)

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
    G: Any, assignment: Any, weights: ArrayLike | None = None, *, threads: int | None = None
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
    threads : int, optional
        Worker threads; ``None`` uses all cores.

    Returns
    -------
    array, shape (n, D)
        Same dtype and kind as ``G``. The terms are accumulated in ``G``'s dtype (float32 stays
        float32, as in NumPy and torch; the error is within ``(d + 3) * eps * sum_j |w_ij g_j|``,
        which the tests check against a float64 reference) in the fixed order ``j = 0..d-1``:
        results are bit-identical for any thread count. NaN and Inf in ``G`` propagate to the
        devices whose windows contain them.

    Raises
    ------
    ValueError
        If ``G`` or ``assignment`` is not 2-D or is empty, an assignment entry is outside
        ``[0, N)``, ``weights`` has the wrong shape or a non-finite entry.
    TypeError
        If ``G`` or ``weights`` does not hold real numbers or ``assignment`` does not hold
        integers.
    """
    g, wrap = as_matrix(G, "G")
    a = _as_assignment(assignment, g.shape[0])
    w = _as_weights(weights, a.shape[0], a.shape[1], g.dtype)
    return wrap(_core.encode(g, a, w, threads=check_threads(threads)))


# --------------------------------------------------------------------------------------------
# exact gradient codes (Tandon et al., 2017)
# --------------------------------------------------------------------------------------------


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

    def _solve(self, r: NDArray[np.int64]) -> NDArray[np.float64]:
        raise NotImplementedError

    def decode_weights(self, responders: Any) -> NDArray[np.float64]:
        """Weights ``a`` with ``a @ B[responders] == ones(n)`` (to 1e-9).

        Then ``sum_k a_k z_{responders[k]} = sum_j g_j``.

        Parameters
        ----------
        responders : array-like of int, shape (r,)
            Distinct device indices in ``[0, n)``, ``r >= n - s``, in any order.

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
            If the decoding residual exceeds 1e-9 (a numerical failure; not expected).
        """
        r = self._responders(responders)
        a = self._solve(r)
        resid = float(np.max(np.abs(a @ self.B[r] - 1.0)))
        if not resid <= 1e-9:
            msg = f"decoding failed for responders {r.tolist()}: residual {resid:.3g} > 1e-9"
            raise RuntimeError(msg)
        return a

    def decode(self, coded: Any, responders: Any, *, threads: int | None = None) -> Any:
        """Recover the mean gradient ``g = (1/N) sum_j g_j`` from the responders' coded vectors.

        Parameters
        ----------
        coded : array-like, shape (r, D)
            Row ``k`` is the coded vector ``z`` of device ``responders[k]``.
        responders : array-like of int, shape (r,)
            See :meth:`decode_weights`.
        threads : int, optional
            Worker threads; ``None`` uses all cores.

        Returns
        -------
        array, shape (D,)
            The *mean* (not the sum) of the subset gradients, ``coded``'s dtype and kind.

        Raises
        ------
        ValueError, TypeError
            As :meth:`decode_weights`, or if ``coded`` is not ``(len(responders), D)``.
        """
        z, wrap = as_matrix(coded, "coded")
        a = self.decode_weights(responders)
        if z.shape[0] != a.size:
            msg = f"coded must have one row per responder ({a.size}), got shape {z.shape}"
            raise ArgumentError(msg, argument="coded")
        keep = np.flatnonzero(a)
        w = (a[keep] / self.n)[None, :]
        out = _core.encode(
            z, keep[None, :].astype(np.int64), w.astype(z.dtype), threads=check_threads(threads)
        )
        return wrap(out[0])


class GradientCode(_ExactCode):
    """Cyclic repetition gradient code of Tandon et al. (2017), tolerating any ``s`` stragglers.

    Row ``i`` of the encoding matrix ``B`` is supported on ``{i, ..., i+s} mod n`` with
    ``B[i, i] = 1``. Construction (the paper's Algorithm 2): draw ``H`` of shape ``(s, n)`` with
    ``H @ 1 = 0`` (first ``n - 1`` columns uniform in ``[-1/2, 1/2)`` from the stream
    ``(seed, SETUP, 0, CODE_MATRIX)`` of :mod:`cyclad._random`, last column minus their row
    sums) and pick each row of
    ``B`` in the null space of ``H``. The null space has dimension ``n - s`` and contains the
    all-ones vector, and (for a generic ``H``) any ``n - s`` rows of ``B`` are independent, so they
    span it: decoding weights exist for every set of ``n - s`` responders. The random ``H`` can
    make a few straggler patterns ill-conditioned as ``n`` grows (tested exhaustively for
    ``n <= 8`` and on random patterns up to ``n = 40``; one failing pattern seen at ``n = 30``):
    :meth:`decode_weights` then raises ``RuntimeError`` instead of returning inexact weights.

    Parameters
    ----------
    n : int
        Number of devices and of data subsets, ``1 <= n <= 2**63 - 1``.
    s : int
        Stragglers tolerated, ``0 <= s < n``.
    seed : int
        Seed of ``H`` in ``[0, 2**64)``; server and devices must use the same one.

    Raises
    ------
    ValueError, TypeError
        If ``n``, ``s`` or ``seed`` is out of range or not an integer.
    """

    def __init__(self, n: int, s: int, *, seed: int = 0) -> None:
        self.n = check_int(n, "n", lo=1, hi=INT64_MAX)
        self.s = check_int(s, "s", lo=0, hi=self.n - 1)
        self.seed = check_int(seed, "seed", lo=0, hi=_U64_MAX)
        n, s = self.n, self.s
        self._support = (np.arange(n)[:, None] + np.arange(s + 1)[None, :]) % n
        B = np.zeros((n, n))
        if s == 0:
            np.fill_diagonal(B, 1.0)
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

    def _solve(self, r: NDArray[np.int64]) -> NDArray[np.float64]:
        a, *_ = np.linalg.lstsq(self.B[r].T, np.ones(self.n), rcond=None)
        return np.asarray(a, dtype=np.float64)

    def __repr__(self) -> str:
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

    def _solve(self, r: NDArray[np.int64]) -> NDArray[np.float64]:
        _, first = np.unique(self._group[r], return_index=True)
        a = np.zeros(r.size)
        a[first] = 1.0
        return a

    def __repr__(self) -> str:
        return f"FractionalRepetitionCode(n={self.n}, s={self.s})"
