"""Atheris target ``aggregators``: every rule, pre-aggregation and ``get("a+b")`` composition
with hostile shapes, layouts, dtypes, parameters and poisoned rows.

Contract (DESIGN.md section 4):

* the only outcomes are a result, or ValueError / TypeError with a message; no warning;
* a result is a NumPy array of the dtype policy's dtype: ``(D,)`` for a rule, ``(n', D)`` for a
  pre-aggregation; the input is never modified;
* with at most ``f`` poisoned rows (NaN, +-Inf, +-FLT_MAX, +-3e38, +-1e300; fewer than half for
  the median and the geometric median; ``n >= 2f + 3`` for Krum), every robust rule returns a
  finite result, and the coordinate-wise rules, Krum and Multi-Krum stay within the range of the
  honest rows (known-defect ids ``robust-finite/<rule>`` and ``robust-range/<rule>``).

Shapes are capped at n <= 1100, D <= 512 and n * D <= 2^16, so the run stays far below 1 GB.
"""

from __future__ import annotations

import warnings

import numpy as np

from tests._arrays import misaligned
from tests.fuzz._common import POISONS32, POISONS64, PropertyFailure, check, check_error, same_array

agg = None


def setup() -> None:
    global agg
    import cyclad.aggregators as a

    agg = a


RULES = [
    "mean",
    "median",
    "trimmed_mean",
    "meamed",
    "krum",
    "multi_krum",
    "geometric_median",
    "centered_clipping",
]
PRES = ["nnm", "bucketing", "clip", "arc"]
DTYPES = [
    np.float32,
    np.float64,
    np.float32,
    np.float64,
    np.float16,
    np.int64,
    np.uint8,
    np.bool_,
    np.complex64,
    object,
]
BAD_INTS = [-1, -(2**63), 2**63, 2**64, 1.5, True, None, "2", np.int64(1), np.float64(2.0)]
BAD_FLOATS = [0.0, -1.0, np.nan, np.inf, -np.inf, 1e-300, 1e300, True, None, "1", 1j]


def _matrix(fdp, rng):
    n = fdp.PickValueInList(
        [1, 2, 3, 4, 5, 7, 8, 16, 31, 32, 33, 64, 129, 1025, 1100, fdp.ConsumeIntInRange(1, 40)]
    )
    D = fdp.PickValueInList([1, 2, 3, 7, 8, 31, 64, 97, 512, fdp.ConsumeIntInRange(1, 100)])
    D = max(1, min(D, (1 << 16) // n))
    scale = fdp.PickValueInList([1.0, 1e-3, 1e20, 1e-30, 1e30, 3e37, 1e150, 1e300])
    dt = DTYPES[fdp.ConsumeIntInRange(0, len(DTYPES) - 1)]
    X = rng.standard_normal((n, D)) * scale
    p = fdp.ConsumeIntInRange(0, n)
    rows = rng.permutation(n)[:p]
    poisons = POISONS64 if dt == np.float64 else POISONS32
    whole = fdp.ConsumeBool()
    fixed = fdp.ConsumeIntInRange(0, len(poisons))  # == len: a random poison per entry
    for i in rows:
        cols = np.arange(D) if whole else rng.choice(D, size=max(1, D // 3), replace=False)
        for j in cols:
            k = fixed if fixed < len(poisons) else rng.integers(len(poisons))
            X[i, j] = poisons[k]
    with np.errstate(all="ignore"):
        X = X.astype(dt) if dt is not object else X.astype(object)
    if dt in (np.float32, np.float64):
        honest = np.ones(n, dtype=bool)
        honest[rows] = False
        # After the cast to float32, huge honest values may have become +-inf: count such
        # rows as poisoned too.
        honest &= np.isfinite(X).all(axis=1)
    else:
        honest = None
    return X, honest


def _layout(fdp, X):
    choice = fdp.ConsumeIntInRange(0, 7)
    if X.dtype == object or choice == 0:
        return X
    if choice == 1:
        return np.asfortranarray(X)
    if choice == 2:  # column-strided view
        big = np.zeros((X.shape[0], 2 * X.shape[1]), dtype=X.dtype)
        big[:, 1::2] = X
        return big[:, 1::2]
    if choice == 3:  # reversed rows (negative stride)
        return X[::-1].copy()[::-1]
    if choice == 4:  # misaligned: the element pointer at an odd byte offset
        return misaligned(X)
    if choice == 5:
        X = X.copy()
        X.flags.writeable = False
        return X
    if choice == 6:
        return X.tolist() if X.size <= 4096 else X
    return X.reshape((*X.shape, 1)) if fdp.ConsumeBool() else X.ravel()


def _params(fdp, n):
    """Parameters: valid most of the time, hostile otherwise."""

    def pint(lo, hi):
        return (
            fdp.ConsumeIntInRange(lo, max(lo, hi))
            if fdp.ConsumeIntInRange(0, 9)
            else fdp.PickValueInList([*BAD_INTS, hi + 1, n, 2 * n])
        )

    def pfloat(good):
        return good if fdp.ConsumeIntInRange(0, 9) else fdp.PickValueInList(BAD_FLOATS)

    return {
        "f": pint(0, n // 2),
        "m": pint(1, n) if fdp.ConsumeBool() else None,
        "tau": pfloat(fdp.PickValueInList([1.0, 1e-6, 10.0, 1e30])),
        "iters": pint(1, 5),
        "s": pint(1, n + 1),
        "seed": pint(0, 2**64 - 1),
        "eps": pfloat(1e-8),
        "max_iter": pint(1, 60),
        "tol": pfloat(1e-7),
    }


def _bounds(name, n, f):
    """(robust, in_range): whether the property applies for `name` with p <= f poisoned rows."""
    if name == "mean":
        return False, False
    if name in ("median", "geometric_median"):
        return True, name == "median"
    if name in ("trimmed_mean", "meamed"):
        return n > 2 * f, True
    if name in ("krum", "multi_krum"):
        return n >= 2 * f + 3, True
    return True, False  # centered_clipping: finite


def one_input(data: bytes) -> None:
    import atheris

    assert agg is not None
    fdp = atheris.FuzzedDataProvider(data)
    rng = np.random.default_rng(fdp.ConsumeUInt(4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        X, honest = _matrix(fdp, rng)
        n = X.shape[0]
        prm = _params(fdp, n)
        npre = fdp.ConsumeIntInRange(0, 2)
        pres = [PRES[fdp.ConsumeIntInRange(0, len(PRES) - 1)] for _ in range(npre)]
        as_pre = npre == 0 and fdp.ConsumeIntInRange(0, 3) == 0
        rule = PRES[fdp.ConsumeIntInRange(0, 3)] if as_pre else RULES[fdp.ConsumeIntInRange(0, 7)]
        Xin = _layout(fdp, X)
        threads = fdp.PickValueInList([None, 1, 2, 0, -1])
        snapshot = np.array(Xin, copy=True) if isinstance(Xin, np.ndarray) else None
        name = "+".join([*pres, rule])
        try:
            if as_pre or (not pres and fdp.ConsumeBool()):
                fn = getattr(agg, rule)
                kw = {k: v for k, v in prm.items() if k in agg._params_of(fn)[0]}
                if rule == "multi_krum" and kw.get("m") is None:
                    kw.pop("m", None)
                out = fn(Xin, **kw, threads=threads)
            else:
                kw = {
                    k: v
                    for k, v in prm.items()
                    if any(k in agg._params_of(getattr(agg, part))[0] for part in [*pres, rule])
                }
                if kw.get("m") is None:
                    kw.pop("m", None)
                out = agg.get(name, threads=threads, **kw)(Xin)
        except (ValueError, TypeError) as exc:
            check_error(exc, name)
            return
        finally:
            if snapshot is not None and not same_array(snapshot, Xin):
                msg = f"{name} modified its input in place"
                raise PropertyFailure(msg)
        # A result: its type, shape and dtype.
        x = np.asarray(X)
        xin = np.asarray(Xin)  # a list input holds Python floats: float64
        want = xin.dtype if xin.dtype in (np.float32, np.float64) else np.dtype(np.float64)
        if not isinstance(out, np.ndarray) or out.dtype != want:
            msg = (
                f"{name} returned {type(out).__name__} {getattr(out, 'dtype', '')}, expected {want}"
            )
            raise PropertyFailure(msg)
        if as_pre:
            rows = -(-n // prm["s"]) if rule == "bucketing" else n
            if out.shape != (rows, x.shape[1]):
                msg = f"{name} returned shape {out.shape}"
                raise PropertyFailure(msg)
            return
        if out.shape != (x.shape[1],):
            msg = f"{name} returned shape {out.shape}, expected ({x.shape[1]},)"
            raise PropertyFailure(msg)
        if honest is None or not isinstance(Xin, np.ndarray | list):
            return
        _robustness(name, pres, rule, prm, x, honest, out)


def _robustness(name, pres, rule, prm, x, honest, out):
    n = x.shape[0]
    p = int((~honest).sum())
    f = prm["f"] if isinstance(prm["f"], int) and not isinstance(prm["f"], bool) else None
    fr = (n - 1) // 2 if rule in ("median", "geometric_median") else f
    if fr is None or p > fr or p == n:
        return
    if any(pre in ("nnm", "arc") for pre in pres) and (f is None or p > f):
        return  # the composition's guarantee needs p <= f for its pre-aggregations too
    n_rule = n
    if "bucketing" in pres:
        if rule in ("median", "geometric_median"):
            return  # fewer than half of the buckets is not implied by fewer than half of the rows
        s = prm["s"]
        n_rule = -(-n // s) if isinstance(s, int) else n
    if rule in ("median", "geometric_median") and pres and 2 * p >= n:
        return
    robust, in_range = _bounds(rule, n_rule, fr)
    if not robust:
        return
    m = prm.get("m")
    if rule == "multi_krum" and isinstance(m, int) and m > n_rule - fr:
        return  # the guarantee needs m <= n - f (m = n averages every row, poisoned ones too)
    bad = ~np.isfinite(out)
    if bad.any():
        check(
            False,
            f"robust-finite/{rule}",
            f"{name} (n={n}, D={x.shape[1]}, {x.dtype}, {p} poisoned rows, f={f}) returned "
            f"{out[bad][0]} at coordinate {int(np.argmax(bad))}",
        )
    if in_range and not pres:
        lo = x[honest].min(axis=0).astype(np.float64)
        hi = x[honest].max(axis=0).astype(np.float64)
        slack = 4e-7 if x.dtype == np.float32 else 1e-15
        if rule == "meamed":
            # A kept adversarial value is within W of the honest box and at most f of the n - f
            # kept values are adversarial: the box widens by f / (n - f) * W (aggregators.py).
            with np.errstate(over="ignore"):
                widen = fr / (n - fr) * (hi - lo)
            lo, hi = lo - widen, hi + widen
        elif rule in ("krum", "multi_krum"):
            widen = _krum_widening(x, honest, n_rule, fr)
            lo, hi = lo - widen, hi + widen
        o = out.astype(np.float64)
        outside = ~((o >= lo - slack * np.abs(lo)) & (o <= hi + slack * np.abs(hi)))
        if outside.any():
            j = int(np.argmax(outside))
            check(
                False,
                f"robust-range/{rule}",
                f"{name} (n={n}, D={x.shape[1]}, {x.dtype}, {p} poisoned rows, f={f}) returned "
                f"{o[j]} at coordinate {j}, outside the honest range [{lo[j]}, {hi[j]}]",
            )


def _krum_widening(x, honest, n, f):
    """How far Krum's / Multi-Krum's result may leave the honest box (aggregators.py): 0 when
    every adversarial row with finite entries is farther than R = Delta * sqrt((n - f - 2) /
    (n - 2f - 1)) from every honest row (Delta: the largest distance between honest rows; rows
    with a non-finite entry are never selected), else R (a selected row is within R of an
    honest row, so each coordinate is within R of the honest box). Distances are taken on
    values divided by the largest magnitude, so they cannot overflow."""
    xf = x.astype(np.float64)
    adv = xf[~honest]
    adv = adv[np.isfinite(adv).all(axis=1)]
    if adv.shape[0] == 0:
        return 0.0
    h = xf[honest]
    scale = max(float(np.abs(h).max(initial=0.0)), float(np.abs(adv).max(initial=0.0)))
    scale = scale if scale > 0 else 1.0
    hs, As = h / scale, adv / scale

    def dist(a, b):  # Gram form: n x n doubles, not n x n x D
        sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
        return np.sqrt(np.maximum(sq, 0.0))

    delta = float(dist(hs, hs).max(initial=0.0))
    radius = delta * np.sqrt((n - f - 2) / (n - 2 * f - 1))
    # "Far" only with a margin for the Gram form's rounding; otherwise the widened box applies.
    if (dist(As, hs).min(axis=1) > radius * (1 + 1e-6) + 1e-6).all():
        return 0.0
    with np.errstate(over="ignore"):
        return radius * (1 + 1e-6) * scale
