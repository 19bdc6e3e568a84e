"""Coordinate-wise rules: median, trimmed mean, meamed (examples, properties, poisoning, ByzFL)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import cyclad.aggregators as agg
from tests import _reference as ref
from tests.conftest import TOL

BYZFL_CASES = Path(__file__).parent / "data" / "byzfl_0.0.11_cases.npz"

RULES = ["median", "trimmed_mean", "meamed"]


def run(rule: str, X, f: int, **kw):
    """Call a rule by name; the median takes no f."""
    if rule == "median":
        return agg.median(X, **kw)
    return getattr(agg, rule)(X, f, **kw)


def reference(rule: str, X: np.ndarray, f: int) -> np.ndarray:
    if rule == "median":
        return ref.median(X)
    return getattr(ref, rule)(X, f)


def f_values(n: int) -> list[int]:
    return sorted({0, (n - 1) // 4, (n - 1) // 2})


def honest_bounds(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return X.min(axis=0), X.max(axis=0)


# --------------------------------------------------------------------------------------------
# examples
# --------------------------------------------------------------------------------------------

# Row counts across the register groups of the sorting network (16 and 32 rows) as well.
SHAPES = [
    (1, 1),
    (1, 7),
    (2, 5),
    (3, 1),
    (4, 97),
    (7, 129),
    (13, 10007),
    (17, 300),
    (20, 1031),
    (33, 129),
    (64, 300),
    (100, 70),
]


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize(("n", "D"), SHAPES, ids=[f"{n}x{d}" for n, d in SHAPES])
def test_matches_reference(rng, dtype, threads, rule, n, D) -> None:
    X = rng.standard_normal((n, D)).astype(dtype)
    for f in f_values(n) if rule != "median" else [0]:
        out = run(rule, X, f, threads=threads)
        assert isinstance(out, np.ndarray)
        assert out.dtype == dtype
        assert out.shape == (D,)
        np.testing.assert_allclose(out, reference(rule, X, f), **TOL[np.dtype(dtype)])


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("n", [1024, 1025, 1100])
def test_large_n_network_and_column_paths(rng, dtype, rule, n) -> None:
    # n <= 1024 runs the sorting network, n > 1024 the per-column selection path.
    X = rng.standard_normal((n, 37)).astype(dtype)
    for f in (0, 1, n // 3, (n - 1) // 2) if rule != "median" else (0,):
        out = run(rule, X, f, threads=2)
        np.testing.assert_allclose(out, reference(rule, X, f), **TOL[np.dtype(dtype)])


def test_median_small_cases() -> None:
    np.testing.assert_array_equal(agg.median(np.array([[1.0, -2.0]])), [1.0, -2.0])
    np.testing.assert_array_equal(agg.median(np.array([[1.0], [4.0]])), [2.5])
    X = np.array([[3.0, 1.0], [1.0, 5.0], [2.0, 9.0]])
    np.testing.assert_array_equal(agg.median(X), [2.0, 5.0])


def test_trimmed_mean_and_meamed_small_cases() -> None:
    X = np.array([[0.0], [1.0], [2.0], [10.0], [-50.0]])
    np.testing.assert_array_equal(agg.trimmed_mean(X, 1), [1.0])
    np.testing.assert_array_equal(agg.trimmed_mean(X, 0), [X.mean()])
    # median 1; the 3 closest to it are 0, 1, 2.
    np.testing.assert_array_equal(agg.meamed(X, 2), [1.0])
    # ties: median 4.5 of [0, 3, 6, 9]; 0 and 9 are equidistant, the lower one is kept.
    Y = np.array([[0.0], [3.0], [6.0], [9.0]])
    np.testing.assert_array_equal(agg.meamed(Y, 1), [3.0])


@pytest.mark.parametrize("rule", RULES)
def test_strided_and_fortran_inputs(rng, dtype, rule) -> None:
    base = rng.standard_normal((9, 2 * 301)).astype(dtype)
    for X in (base[:, ::2], np.asfortranarray(base), base[::2], base.T.copy().T):
        out = run(rule, X, 2)
        assert out.dtype == dtype
        np.testing.assert_allclose(
            out, reference(rule, np.ascontiguousarray(X), 2), **TOL[np.dtype(dtype)]
        )


@pytest.mark.parametrize("rule", RULES)
def test_int_input_gives_float64(rule) -> None:
    X = np.arange(5 * 6, dtype=np.int32).reshape(5, 6) % 7
    out = run(rule, X, 1)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, reference(rule, X.astype(np.float64), 1), rtol=1e-12)


@pytest.mark.parametrize("rule", RULES)
def test_bit_identical_across_threads(rng, dtype, rule) -> None:
    X = rng.standard_normal((11, 100_003)).astype(dtype)
    a = run(rule, X, 3, threads=1)
    for t in (2, 3, None):
        np.testing.assert_array_equal(run(rule, X, 3, threads=t), a)


@pytest.mark.parametrize("rule", RULES)
def test_input_not_modified(rng, rule) -> None:
    X = rng.standard_normal((8, 513))
    X[0, :5] = [np.nan, np.inf, -np.inf, -0.0, 1e300]
    before = X.copy()
    run(rule, X, 2)
    np.testing.assert_array_equal(X, before)


def test_float32_huge_values_do_not_overflow() -> None:
    big = np.float32(3.0e38)
    X = np.full((5, 3), big, dtype=np.float32)
    X[:, 1] = [3.3e38, 3.2e38, 3.1e38, 3.0e38, 3.4e38]
    for out in (agg.trimmed_mean(X, 1), agg.meamed(X, 1), agg.median(X)):
        assert np.all(np.isfinite(out))
        assert np.all(out >= X.min(axis=0))
        assert np.all(out <= X.max(axis=0))
    np.testing.assert_array_equal(agg.trimmed_mean(X, 1)[0], big)


def test_float64_huge_values_do_not_overflow() -> None:
    X = np.array([[1.7e308, -1.7e308], [1.6e308, -1.6e308], [1.75e308, -1.75e308]])
    for out in (agg.trimmed_mean(X, 0), agg.meamed(X, 0), agg.median(X[:2])):
        assert np.all(np.isfinite(out))
    np.testing.assert_allclose(agg.trimmed_mean(X, 0), X.mean(axis=0, dtype=np.longdouble))


# --------------------------------------------------------------------------------------------
# poisoned rows (DESIGN §4): at most f rows of NaN / +-Inf / +-3e38 -> finite, honest range
# --------------------------------------------------------------------------------------------

POISONS = {
    "nan": [np.nan],
    "-nan": [-np.nan],
    "+inf": [np.inf],
    "-inf": [-np.inf],
    "+big": [3e38],
    "-big": [-3e38],
    "mixed": [np.nan, -np.inf, np.inf, 3e38, -3e38, -np.nan],
}


@pytest.mark.parametrize("poison", list(POISONS), ids=list(POISONS))
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize(("n", "f"), [(3, 1), (7, 3), (10, 2), (20, 9), (21, 5)])
def test_poisoned_rows(rng, dtype, rule, poison, n, f) -> None:
    honest = rng.standard_normal((n - f, 257)).astype(dtype) * 100
    values = POISONS[poison]
    bad = np.empty((f, 257), dtype=dtype)
    for i in range(f):
        for j in range(257):  # vary the poison across rows and coordinates
            bad[i, j] = values[(i + j) % len(values)]
    X = np.concatenate([bad, honest])[rng.permutation(n)]
    lo, hi = honest_bounds(honest)
    out = run(rule, X, f)
    assert np.all(np.isfinite(out))
    assert np.all(out >= lo)
    assert np.all(out <= hi)


def test_nan_ordered_above_inf() -> None:
    X = np.array([[np.nan], [np.inf], [1.0]])
    np.testing.assert_array_equal(agg.median(X), [np.inf])
    Y = np.array([[np.nan], [np.nan], [1.0]])
    assert np.isnan(agg.median(Y)[0])
    Z = np.array([[-np.inf], [np.nan], [2.0], [3.0], [4.0]])
    np.testing.assert_array_equal(agg.trimmed_mean(Z, 1), [3.0])


# --------------------------------------------------------------------------------------------
# properties
# --------------------------------------------------------------------------------------------


@st.composite
def matrices(draw):
    dt = draw(st.sampled_from([np.float32, np.float64]))
    n = draw(st.integers(1, 12))
    d = draw(st.integers(1, 20))
    elems = st.floats(
        -1e6, 1e6, allow_nan=False, allow_infinity=False, width=32 if dt == np.float32 else 64
    )
    X = draw(arrays(dt, (n, d), elements=elems))
    f = draw(st.integers(0, (n - 1) // 2))
    rule = draw(st.sampled_from(RULES))
    return rule, X, f


def _tol(X: np.ndarray) -> dict[str, float]:
    scale = float(np.max(np.abs(X))) if X.size else 1.0
    t = TOL[X.dtype]
    return {"rtol": t["rtol"], "atol": t["atol"] * max(1.0, scale)}


@given(matrices())
def test_property_matches_reference(case) -> None:
    rule, X, f = case
    np.testing.assert_allclose(run(rule, X, f), reference(rule, X, f), **_tol(X))


@given(matrices(), st.randoms(use_true_random=False))
def test_property_row_order_invariance(case, rnd) -> None:
    rule, X, f = case
    perm = list(range(X.shape[0]))
    rnd.shuffle(perm)
    if rule == "median":
        np.testing.assert_array_equal(run(rule, X[perm], f), run(rule, X, f))
    else:
        # The kept middle is summed in network order, which follows row order: equal up to
        # the rounding of that float64 sum.
        np.testing.assert_allclose(run(rule, X[perm], f), run(rule, X, f), **_tol(X))


@given(matrices(), st.floats(-1e3, 1e3))
def test_property_translation_equivariance(case, c) -> None:
    rule, X, f = case
    shift = X.dtype.type(c)
    shifted = run(rule, X + shift, f)
    scale = max(1.0, float(np.max(np.abs(X))), abs(c))
    atol = (1e-5 if X.dtype == np.float32 else 1e-11) * scale
    np.testing.assert_allclose(shifted, run(rule, X, f) + shift, rtol=0, atol=atol)


@given(matrices())
def test_property_within_coordinate_range(case) -> None:
    rule, X, f = case
    out = run(rule, X, f)
    assert np.all(out >= X.min(axis=0))
    assert np.all(out <= X.max(axis=0))


@given(matrices())
def test_property_threads_bit_identical_and_input_untouched(case) -> None:
    rule, X, f = case
    before = X.copy()
    a = run(rule, X, f, threads=1)
    for t in (2, None):
        np.testing.assert_array_equal(run(rule, X, f, threads=t), a)
    np.testing.assert_array_equal(X, before)


# --------------------------------------------------------------------------------------------
# differential: ByzFL 0.0.11 outputs (tests/data, copied from the shared reference set)
# --------------------------------------------------------------------------------------------


def byzfl_cases() -> list[int]:
    with np.load(BYZFL_CASES) as z:
        return list(range(int(z["n_cases"])))


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("case", byzfl_cases())
def test_matches_byzfl(rule, case) -> None:
    with np.load(BYZFL_CASES) as z:
        X = z[f"c{case}_X"]
        f = int(z[f"c{case}_f"])
        expected = z[f"c{case}_{rule}"]
    np.testing.assert_allclose(run(rule, X, f), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(run(rule, X.astype(np.float32), f), expected, rtol=1e-5, atol=1e-5)
