"""Atheris target ``coding``: ``coding.encode`` with hostile gradients, assignments and weights,
plus ``CyclicCode`` / ``GradientCode`` construction and decoding with hostile arguments.

Contract: a result, or ValueError / TypeError with a message; nothing else escapes, no warning.
A result has shape ``(n, D)`` and the dtype policy's dtype, and matches a float64 NumPy
reference where the inputs are finite and moderate. Inputs are never modified. Shapes are
capped (N, n <= 64, D <= 512, d <= 8), so a run stays far below 1 GB.
"""

from __future__ import annotations

import warnings

import numpy as np

from tests._arrays import misaligned
from tests.fuzz._common import POISONS64, PropertyFailure, check, check_error, same_array

coding = None


def setup() -> None:
    global coding
    import cyclad.coding as c

    coding = c


G_DTYPES = [np.float32, np.float64, np.float16, np.int32, np.int64, np.bool_, np.complex64, object]
A_DTYPES = [np.int64, np.int32, np.uint8, np.uint64, np.int8, np.float64, np.bool_, object]
W_DTYPES = [np.float64, np.float32, np.int64, np.float16, np.complex128, object]


def _layout(fdp, a: np.ndarray) -> np.ndarray:
    """The same values in another memory layout (strided, reversed, Fortran, misaligned)."""
    choice = fdp.ConsumeIntInRange(0, 5)
    if choice == 1 and a.ndim == 2:
        big = np.empty((a.shape[0], 2 * a.shape[1]), dtype=a.dtype)
        big[:, ::2] = a
        return big[:, ::2]
    if choice == 2 and a.ndim >= 1:
        return a[::-1].copy()[::-1]
    if choice == 3:
        return np.asfortranarray(a)
    if choice == 4 and a.dtype != object and a.size:
        return misaligned(a)
    if choice == 5:
        a = a.copy()
        a.flags.writeable = False
    return a


def one_input(data: bytes) -> None:
    import atheris

    assert coding is not None
    fdp = atheris.FuzzedDataProvider(data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        which = fdp.ConsumeIntInRange(0, 9)
        if which == 0:
            _codes(fdp)
            return
        N = fdp.ConsumeIntInRange(0, 64)
        D = fdp.ConsumeIntInRange(0, 512)
        n = fdp.ConsumeIntInRange(0, 64)
        d = fdp.ConsumeIntInRange(0, 8)
        rng = np.random.default_rng(fdp.ConsumeUInt(4))
        gdt = G_DTYPES[fdp.ConsumeIntInRange(0, len(G_DTYPES) - 1)]
        G = rng.standard_normal((N, D))
        for _ in range(fdp.ConsumeIntInRange(0, 3)):
            if G.size:
                k = fdp.ConsumeIntInRange(0, len(POISONS64) - 1)
                G.flat[rng.integers(G.size)] = POISONS64[k]
        with np.errstate(all="ignore"):
            G = G.astype(gdt) if gdt is not object else G.astype(object)
        if fdp.ConsumeBool() and G.ndim == 2:
            G = G.reshape(G.shape[0], G.shape[1], 1) if fdp.ConsumeBool() else G.ravel()
        A = rng.integers(0, max(N, 1), size=(n, d))
        for _ in range(fdp.ConsumeIntInRange(0, 2)):
            if A.size:
                A.flat[rng.integers(A.size)] = fdp.PickValueInList(
                    [-1, N, N + 1, 2**31, -(2**63), 2**63 - 1]
                )
        adt = A_DTYPES[fdp.ConsumeIntInRange(0, len(A_DTYPES) - 1)]
        with np.errstate(all="ignore"):
            A = A.astype(adt)
        wkind = fdp.ConsumeIntInRange(0, 4)
        W = None
        if wkind == 1:
            W = rng.standard_normal(d)
        elif wkind == 2:
            W = rng.standard_normal((n, d))
        elif wkind == 3:
            W = rng.standard_normal((fdp.ConsumeIntInRange(0, 3), fdp.ConsumeIntInRange(0, 3)))
        elif wkind == 4:
            W = rng.standard_normal(d) * fdp.PickValueInList([1e39, 1e300, np.inf, np.nan, -0.0])
        if W is not None:
            wdt = W_DTYPES[fdp.ConsumeIntInRange(0, len(W_DTYPES) - 1)]
            with np.errstate(all="ignore"):
                W = W.astype(wdt)
            W = _layout(fdp, W)
        G = _layout(fdp, G) if isinstance(G, np.ndarray) and G.dtype != object else G
        A = _layout(fdp, A) if isinstance(A, np.ndarray) and A.dtype != object else A
        if fdp.ConsumeIntInRange(0, 7) == 0:
            A = A.tolist()
        snapshot = [np.array(v, copy=True) for v in (G, A, W) if isinstance(v, np.ndarray)]
        threads = fdp.PickValueInList([None, 1, 2])
        try:
            z = coding.encode(G, A, W, threads=threads)
        except (ValueError, TypeError) as exc:
            check_error(exc, "encode")
            return
        finally:
            arrays = [v for v in (G, A, W) if isinstance(v, np.ndarray)]
            for before, v in zip(snapshot, arrays, strict=True):
                if not same_array(before, v):
                    msg = "encode modified an input in place"
                    raise PropertyFailure(msg)
        g = np.asarray(G)
        want = g.dtype if g.dtype in (np.float32, np.float64) else np.dtype(np.float64)
        g = g.astype(want)
        a = np.asarray(A)
        if z.shape != (a.shape[0], g.shape[1]) or z.dtype != want:
            msg = (
                f"encode returned {z.shape} {z.dtype}, expected ({a.shape[0]}, {g.shape[1]}) {want}"
            )
            raise PropertyFailure(msg)
        w = np.full(a.shape[1], 1.0 / a.shape[1]) if W is None else np.asarray(W, dtype=np.float64)
        w = np.broadcast_to(w, a.shape)
        with np.errstate(all="ignore"):  # the reference itself may overflow: masked by ok
            g64 = g.astype(np.float64)
            terms = w[:, :, None] * g64[a]
            mag = np.abs(terms).sum(axis=1)
            ok = np.isfinite(mag) & (mag < 1e30)
            ref = terms.sum(axis=1)
            eps = np.finfo(want).eps
            err = np.abs(z.astype(np.float64) - ref)
            # Relative rounding of every term and of the sum, plus the output grid's spacing
            # near zero (a float32 result below the smallest subnormal rounds to 0).
            tiny = float(np.finfo(want).smallest_subnormal)
            tol = (a.shape[1] + 3) * (eps * mag + tiny)
        if np.any(ok & ~(err <= tol)):
            i = np.argwhere(ok & ~(err <= tol))[0]
            msg = f"encode z{tuple(i)}={z[tuple(i)]}, reference {ref[tuple(i)]}"
            raise PropertyFailure(msg)


def _codes(fdp) -> None:
    vals = [0, 1, 2, 3, 5, 8, 64, -1, 2**63, 1.5, True, None, "3", np.int64(4)]
    n, d, s, t = (fdp.PickValueInList(vals) for _ in range(4))
    mode = fdp.PickValueInList(["permute", "shift", "fixed", "bogus", 3])
    seed = fdp.PickValueInList([0, 1, 2**64 - 1, 2**64, -1, 0.5])
    try:
        code = coding.CyclicCode(n, d, mode=mode, seed=seed)
        a = code.assignment(t)
        if a.shape != (code.n, code.d) or a.dtype != np.int64:
            msg = f"assignment {a.shape} {a.dtype}"
            raise PropertyFailure(msg)
    except (ValueError, TypeError) as exc:
        check_error(exc, "CyclicCode")
    except (OverflowError, IndexError) as exc:
        # Known defect 'coding-huge-n': CyclicCode accepts n >= 2^63 (n has no upper bound)
        # and assignment() then fails in NumPy (OverflowError in np.arange, or IndexError when
        # the indices become floats).
        if not (isinstance(n, int) and n >= 2**63):
            raise
        check(
            False,
            "coding-huge-n",
            f"CyclicCode({n!r}, {d!r}, mode={mode!r}).assignment"
            f"({t!r}) raised {type(exc).__name__}: {exc}",
        )
    try:
        gc = coding.GradientCode(n, s)
    except (ValueError, TypeError) as exc:
        check_error(exc, "GradientCode")
        return
    resp = [
        fdp.PickValueInList([0, 1, 2, 3, 4, -1, 64, 2.0, True])
        for _ in range(fdp.ConsumeIntInRange(0, 8))
    ]
    try:
        wts = gc.decode_weights(resp)
    except (ValueError, TypeError) as exc:
        check_error(exc, "decode_weights")
        return
    r = np.asarray(resp, dtype=np.int64)
    if not np.allclose(wts @ gc.B[r], 1.0, atol=1e-6):
        msg = f"decode_weights({resp}) does not decode: {wts @ gc.B[r]}"
        raise PropertyFailure(msg)
