"""The robustness guarantees of cyclad.aggregators (module docstring, "Guarantees"), tested as
stated: (a) the poisoned-row sweep over every rule and every composition the registry offers,
and (b) the per-rule bounds for finite adversarial rows, with hypothesis.

Compositions are enumerated from ``available()``, so a new rule or pre-aggregation is covered
without editing this file. Each composition is run stage by stage, tracking which rows derive
from honest rows only; the rule's bound is checked against those rows, each pre-aggregation's
own guarantee is checked on its output, and the registry's result must equal the staged one.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import zlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import cyclad.aggregators as agg
from tests import _arrays

RULES = agg.available()["rules"]
PRE = agg.available()["pre_aggregations"]
CHAINS = [(), *((p,) for p in PRE), *itertools.product(PRE, PRE)]
SPECS = ["+".join((*chain, rule)) for chain in CHAINS for rule in RULES]

F, TAU, S, SEED, ITERS, D = 2, 1.5, 2, 3, 2, 5
BETA = 3  # closest: rows averaged (<= n - f at every rule input)
PARAMS = {
    "f": F, "tau": TAU, "s": S, "seed": SEED, "iters": ITERS, "reference": np.zeros(D),
    "beta": BETA,
}  # fmt: skip
BIG = {np.dtype(np.float32): 3e38, np.dtype(np.float64): 1e300}
KINDS = [
    "nan", "+inf", "-inf", "+big", "-big", "mixed", "mixed_big", "one_nan", "one_inf", "one_big",
]  # fmt: skip
LAYOUTS = ["F", "negative", "misaligned"]


@functools.cache
def _accepted(name: str) -> frozenset[str]:
    return frozenset(inspect.signature(getattr(agg, name)).parameters) - {"X", "threads"}


def _kw(name: str, params: dict) -> dict:
    return {k: v for k, v in params.items() if k in _accepted(name)}


def _rows_for(spec: str) -> int:
    # Krum needs n >= 2f + 3 rows at the rule, Bulyan n >= 4f + 3; every bucketing stage with
    # s=2 halves n.
    rows = 4 * F + 3 if spec.split("+")[-1] == "bulyan" else 2 * F + 3
    return rows * S ** spec.split("+").count("bucketing")


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------


def poison_row(kind: str, honest_row: np.ndarray, j: int, dtype) -> np.ndarray:
    big = BIG[np.dtype(dtype)]
    row = np.empty(D, dtype=np.float64)
    cycle = {
        "mixed": [np.nan, np.inf, -np.inf, big, -big],
        "mixed_big": [big, -big],
    }
    if kind in cycle:
        vals = cycle[kind]
        row[:] = [vals[i % len(vals)] for i in range(D)]
    elif kind.startswith("one_"):
        # An honest-looking row with one poisoned coordinate.
        row[:] = honest_row
        row[j] = {"one_nan": np.nan, "one_inf": np.inf, "one_big": -big}[kind]
    else:
        row[:] = {"nan": np.nan, "+inf": np.inf, "-inf": -np.inf, "+big": big, "-big": -big}[kind]
    return row.astype(dtype)


def poisoned_input(rng, n: int, kind: str, dtype) -> tuple[np.ndarray, np.ndarray]:
    X = rng.standard_normal((n, D)).astype(dtype)
    bad = rng.choice(n, size=F, replace=False)
    for i in bad:
        X[i] = poison_row(kind, X[rng.integers(n)], int(rng.integers(D)), dtype)
    mask = np.zeros(n, dtype=bool)
    mask[bad] = True
    return X, mask


def layout(X: np.ndarray, kind: str) -> np.ndarray:
    if kind == "F":
        Y = np.asfortranarray(X)
    elif kind == "negative":
        Y = np.ascontiguousarray(X[::-1, ::-1])[::-1, ::-1]
        assert Y.strides[0] < 0
        assert Y.strides[1] < 0
    else:
        Y = _arrays.misaligned(X)
        assert not Y.flags.aligned
    assert same(Y, X)
    return Y


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-for-bit equal values (NaN equal to NaN), same shape and dtype."""
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)


# --------------------------------------------------------------------------------------------
# the guarantees, as checks
# --------------------------------------------------------------------------------------------


def is_poisoned(rows: np.ndarray) -> np.ndarray:
    """Rows with a non-finite entry or an entry of overflow size (the docstring's "poisoned")."""
    with np.errstate(invalid="ignore"):
        return ~np.isfinite(rows).all(axis=1) | (np.abs(rows) >= 1e30).any(axis=1)


def norms(rows: np.ndarray) -> np.ndarray:
    """Euclidean norms in float64 without overflow (+inf for a non-finite row)."""
    R = rows.astype(np.float64)
    out = np.full(R.shape[0], np.inf)
    ok = np.isfinite(R).all(axis=1)
    scale = np.abs(R[ok]).max(axis=1, initial=0.0)
    safe = np.where(scale > 0, scale, 1.0)
    out[ok] = scale * np.linalg.norm(R[ok] / safe[:, None], axis=1)
    return out


def slack(H: np.ndarray, dtype) -> float:
    """Rounding allowance: a few ulps of the data's scale."""
    return 8 * float(np.finfo(dtype).eps) * (1.0 + float(np.abs(H).max()))


def in_box(v: np.ndarray, P: np.ndarray, widen, tol: float) -> bool:
    v = np.asarray(v, dtype=np.float64)
    lo, hi = P.min(axis=0) - widen - tol, P.max(axis=0) + widen + tol
    return bool(np.isfinite(v).all() and (v >= lo).all() and (v <= hi).all())


def diameter(H: np.ndarray) -> float:
    return float(np.linalg.norm(H[:, None, :] - H[None, :, :], axis=-1).max())


def krum_radius(H: np.ndarray, n: int, f: int) -> float:
    return diameter(H) * np.sqrt((n - f - 2) / (n - 2 * f - 1))


def check_rule(rule, out, x, honest, params, *, tight: bool) -> None:
    """The bound of ``rule`` on its input ``x`` with honest rows ``x[honest]`` (module docstring
    (b)); with ``tight`` (adversarial rows poisoned, rule applied directly) the bound of (a)."""
    dtype = x.dtype
    n, b = x.shape[0], int((~honest).sum())
    H = x[honest].astype(np.float64)
    out64 = np.asarray(out, dtype=np.float64)
    tol = slack(H, dtype)
    f = params.get("f", F)
    assert b <= f
    if rule == "mean":
        if np.isfinite(x).all():
            exact = x.astype(np.float64).mean(axis=0)
            if (np.abs(exact) <= np.finfo(dtype).max).all():
                assert np.isfinite(out64).all(), "mean of finite rows overflowed"
                eps = float(np.finfo(dtype).eps)
                scale = np.abs(x.astype(np.float64)).mean(axis=0)
                assert (np.abs(out64 - exact) <= (n + 2) * eps * scale).all(), "mean"
        return
    assert np.isfinite(out64).all(), f"{rule} returned a non-finite result"
    if rule in ("median", "trimmed_mean"):
        assert in_box(out64, H, 0.0, 0.0), f"{rule} left the honest box"
    elif rule == "meamed":
        W = H.max(axis=0) - H.min(axis=0)
        widen = 0.0 if tight else f / (n - f) * W
        assert in_box(out64, H, widen, tol), "meamed bound"
    elif rule in ("krum", "multi_krum"):
        m = params.get("m") or n - f
        assert n >= 2 * f + 3
        assert m <= n - f
        rho = krum_radius(H, n, f)
        if rule == "krum":
            dist = np.linalg.norm(H - out64, axis=1).min()
            assert dist <= rho * (1 + 1e-9) + tol, f"krum: {dist} from the honest rows > {rho}"
            adv = x[~honest].astype(np.float64)
            with np.errstate(invalid="ignore", over="ignore"):
                far = b == 0 or bool(
                    (np.linalg.norm(adv[:, None, :] - H[None], axis=-1) > rho).all()
                )
            if tight or far:
                assert (x[honest] == out).all(axis=1).any(), "krum selected a non-honest row"
        else:
            assert in_box(out64, H, 0.0 if tight else rho, tol), "multi_krum bound"
    elif rule == "geometric_median":
        assert 2 * b < n
        nonfinite_only = b == 0 or not np.isfinite(x[~honest]).all(axis=1).any()
        if tight and nonfinite_only:
            assert in_box(out64, H, 0.0, tol), "geometric median left the honest hull"
        C = (n - b) / np.sqrt(n * (n - 2 * b))
        for y in (H.mean(axis=0), *H):
            r = np.linalg.norm(H - y, axis=1).max()
            dist = np.linalg.norm(out64 - y)
            assert dist <= C * r * (1 + 1e-4) + 1e-6 * (1 + r) + tol, (
                f"geometric median: |z - y| = {dist} > C r = {C * r}"
            )
    elif rule == "centered_clipping":
        center = np.zeros((1, x.shape[1]))
        finite_adv = int(np.isfinite(x[~honest]).all(axis=1).sum())
        widen = params["iters"] * finite_adv * params["tau"] / n
        assert in_box(out64, np.vstack([H, center]), widen, tol * params["iters"]), (
            "centered clipping bound"
        )
    elif rule == "closest":
        beta = params["beta"]
        assert beta <= n - f
        if tight:
            assert in_box(out64, H, 0.0, tol), "closest: a poisoned row was averaged"
        z = np.asarray(params["reference"], dtype=np.float64)
        d_beta = np.sort(np.linalg.norm(H - z, axis=1))[beta - 1]
        dist = np.linalg.norm(out64 - z)
        assert dist <= d_beta * (1 + 1e-6) + tol * np.sqrt(x.shape[1]), (
            f"closest: |out - reference| = {dist} > the beta-th honest distance {d_beta}"
        )
    elif rule == "bulyan":
        assert n >= 4 * f + 3
        beta = n - 4 * f
        W = H.max(axis=0) - H.min(axis=0)
        widen = 0.0 if tight else f / beta * W
        assert in_box(out64, H, widen, tol), "bulyan bound"
    elif rule in ("mda", "smea"):
        # The selected n - f rows hold at least n - 2f >= 1 honest rows; their diameter is at
        # most Delta (mda: the honest rows alone are a candidate) or sqrt(n - f) Delta (smea:
        # diam^2 <= 2 (n - f) lambda_max <= 2 (n - f) lambda_max(honest) <= (n - f) Delta^2),
        # so the mean is in the honest box widened by that. Poisoned rows are never selected.
        widen = diameter(H) * (1.0 if rule == "mda" else np.sqrt(n - f))
        assert in_box(out64, H, 0.0 if tight else widen * (1 + 1e-9), tol), f"{rule} bound"
    elif rule == "caf":
        # A weighted mean: in the box of the finite rows (overflow-sized ones included: a tiny
        # weight left on one still moves the mean); non-finite rows have weight 0. Poisoned
        # rows alone (tight): in the honest box.
        P = x[np.isfinite(x).all(axis=1)].astype(np.float64)
        assert in_box(out64, H if tight else P, 0.0, tol), "caf bound"
    else:  # a rule added to the registry needs its guarantee written here
        pytest.fail(f"no guarantee known for rule {rule!r}")


def check_pre(pre, x, y, honest, params) -> np.ndarray:
    """The guarantee of pre-aggregation ``pre`` (input ``x``, output ``y``); returns the mask of
    output rows derived from honest rows only."""
    dtype = x.dtype
    n = x.shape[0]
    H = x[honest].astype(np.float64)
    tol = slack(H, dtype)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    if pre in ("clip", "arc"):
        nx = norms(x)
        if pre == "clip":
            thr = params["tau"]
        else:
            k = 2 * params["f"] * (n - params["f"]) // n
            thr = np.sort(nx)[::-1][k]
            assert thr <= norms(H).max() * (1 + 1e-12), "arc threshold above the honest norms"
        ok = np.isfinite(nx)
        np.testing.assert_array_equal(y[~ok], x[~ok])  # non-finite rows copied unchanged
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.where(nx > thr, thr / nx, 1.0)[ok]
        expect = x[ok].astype(np.float64) * scale[:, None]
        got = y[ok].astype(np.float64)
        err = np.abs(got - expect) > rtol * np.abs(expect) + tol * scale[:, None]
        for i in np.flatnonzero(err.any(axis=1)):
            row = np.flatnonzero(ok)[i]
            pytest.fail(
                f"{pre} row {row} (input norm {nx[row]:.3g}, threshold {thr:.3g}): "
                f"got {got[i]}, expected {expect[i]}"
            )
        assert (norms(got) <= np.maximum(thr, nx[ok] * scale) * (1 + rtol) + tol).all()
        return honest
    if pre == "nnm":
        Y = y[honest].astype(np.float64)
        assert np.isfinite(Y).all(), "nnm: an honest row's output is not finite"
        f = params["f"]
        adv_poisoned = is_poisoned(x[~honest]).all()
        widen = 0.0 if adv_poisoned else f / (n - f) * diameter(H)
        assert in_box(Y, H, widen, tol), "nnm: honest output rows outside their bound"
        return honest
    if pre == "bucketing":
        perm = agg.bucket_permutation(n, params["seed"])
        s = min(params["s"], n)
        groups = [perm[i : i + s] for i in range(0, n, s)]
        out_honest = np.array([honest[g].all() for g in groups])
        assert (~out_honest).sum() <= (~honest).sum()
        assert in_box(y[out_honest].astype(np.float64), H, 0.0, tol), "bucketing: honest buckets"
        return out_honest
    pytest.fail(f"no guarantee known for pre-aggregation {pre!r}")
    return honest  # unreachable


def run_checked(spec: str, X: np.ndarray, adversarial: np.ndarray, *, tight_ok: bool) -> np.ndarray:
    """Run ``spec`` stage by stage with every guarantee checked; returns the staged result."""
    parts = spec.split("+")
    x, honest = X, ~adversarial
    for pre in parts[:-1]:
        kw = _kw(pre, PARAMS)
        y = getattr(agg, pre)(x, **kw, threads=1)
        honest = check_pre(pre, x, y, honest, kw)
        x = y
    rule = parts[-1]
    kw = _kw(rule, PARAMS)
    out = getattr(agg, rule)(x, **kw, threads=1)
    tight = tight_ok and len(parts) == 1 and bool(is_poisoned(x[~honest]).all())
    check_rule(rule, out, x, honest, kw, tight=tight)
    return out


# --------------------------------------------------------------------------------------------
# (a) the poisoned-row sweep
# --------------------------------------------------------------------------------------------


def test_sweep_covers_the_registry() -> None:
    assert len(SPECS) == len(RULES) * (1 + len(PRE) + len(PRE) ** 2)
    for spec in SPECS:
        agg.get(spec, **{k: v for k, v in PARAMS.items() if k in _spec_params(spec)})


def _spec_params(spec: str) -> set[str]:
    return set().union(*(_accepted(p) for p in spec.split("+")))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("spec", SPECS)
def test_poisoned_rows(spec, kind) -> None:
    rng = np.random.default_rng(zlib.crc32(f"{spec}/{kind}".encode()))
    n = _rows_for(spec)
    a = agg.get(spec, **{k: v for k, v in PARAMS.items() if k in _spec_params(spec)}, threads=1)
    for dtype in (np.float32, np.float64):
        X, adversarial = poisoned_input(rng, n, kind, dtype)
        before = X.copy()
        staged = run_checked(spec, X, adversarial, tight_ok=True)
        out = a(X)
        assert out.dtype == dtype
        assert same(out, staged), "registry result differs from the staged one"
        for lay in LAYOUTS:
            assert same(a(layout(X, lay)), out), f"layout {lay} changes the result"
        assert same(X, before), "input modified"


# --------------------------------------------------------------------------------------------
# (b) finite adversarial rows: the per-rule bounds, with hypothesis
# --------------------------------------------------------------------------------------------


@st.composite
def adversarial_input(draw, spec: str):
    """Honest rows of ordinary size and ``F`` finite adversarial rows placed to hurt: far away,
    near an honest row, colluding on one point, inside the honest cloud, or at random."""
    n = _rows_for(spec)
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    spread = draw(st.sampled_from([1e-3, 1.0, 100.0]))
    X = rng.standard_normal((n, D)) * spread + draw(st.sampled_from([0.0, 5.0]))
    bad = rng.choice(n, size=draw(st.integers(0, F)), replace=False)
    honest = np.setdiff1d(np.arange(n), bad)
    place = draw(st.sampled_from(["far", "near", "collude", "inside", "random", "line"]))
    H = X[honest]
    for k, i in enumerate(bad):
        if place == "far":
            X[i] = rng.standard_normal(D) * spread * 10 ** rng.uniform(1, 6)
        elif place == "near":
            X[i] = H[rng.integers(len(H))] + rng.standard_normal(D) * spread * 0.1
        elif place == "collude":
            X[i] = H.mean(axis=0) + spread * 3.0
        elif place == "inside":
            w = rng.dirichlet(np.ones(len(H)))
            X[i] = w @ H
        elif place == "line":  # all pulling the same way, at increasing distances
            X[i] = H.mean(axis=0) + spread * (2.0 + 3 * k) * np.ones(D)
        else:
            X[i] = rng.uniform(-1, 1, D) * spread * 50
    mask = np.zeros(n, dtype=bool)
    mask[bad] = True
    return X.astype(dtype), mask


@pytest.mark.parametrize("rule", RULES)
@given(data=st.data())
def test_finite_adversarial_rows_single_rules(rule, data) -> None:
    X, adversarial = data.draw(adversarial_input(rule))
    run_checked(rule, X, adversarial, tight_ok=False)


@given(spec=st.sampled_from([s for s in SPECS if "+" in s]), data=st.data())
def test_finite_adversarial_rows_compositions(spec, data) -> None:
    X, adversarial = data.draw(adversarial_input(spec))
    out = run_checked(spec, X, adversarial, tight_ok=False)
    a = agg.get(spec, **{k: v for k, v in PARAMS.items() if k in _spec_params(spec)}, threads=1)
    np.testing.assert_array_equal(a(X), out)


def test_geometric_median_leaves_the_honest_box_within_the_ball() -> None:
    # Honest rows +-e2, +-e3 (box: 0 in coordinate 1), f = 3 rows far along e1: the geometric
    # median moves to t e1 with 4 t / sqrt(1 + t^2) = 3, i.e. t = 1.134 -- outside the honest box,
    # inside the ball of radius C r = 4 / sqrt(7) = 1.512 around 0. No box guarantee holds.
    n, f = 7, 3
    H = np.array([[0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=np.float64)
    X = np.vstack([H, np.tile([1e6, 0.0, 0.0], (f, 1))])
    z = agg.geometric_median(X, max_iter=100_000, tol=1e-14)
    t = 0.75 / np.sqrt(1 - 0.75**2)
    np.testing.assert_allclose(z, [t, 0, 0], atol=1e-6)
    assert np.linalg.norm(z) <= (n - f) / np.sqrt(n * (n - 2 * f))
    assert z[0] > H[:, 0].max()


def test_krum_needs_n_at_least_2f_plus_3() -> None:
    # With n < 2f + 3, f identical finite rows win Krum: the documented condition is needed.
    n, f = 5, 2
    X = np.vstack([np.random.default_rng(0).standard_normal((n - f, 3)), np.full((f, 3), 1e6)])
    np.testing.assert_array_equal(agg.krum(X, f), np.full(3, 1e6))
    X7 = np.vstack([np.random.default_rng(0).standard_normal((5, 3)), np.full((f, 3), 1e6)])
    assert np.abs(agg.krum(X7, f)).max() < 1e3
