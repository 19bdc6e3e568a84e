"""Subset search and filtering rules (MDA, SMEA, CAF) against the NumPy references in
tests/_reference.py and against ByzFL 0.0.11's outputs (tests/data/byzfl_0.0.11_subset_cases.npz,
made by tests/data/make_byzfl_subset_cases.py)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import cyclad.aggregators as agg
from cyclad import _core
from tests import _reference as ref
from tests.conftest import TOL

BYZFL = Path(__file__).parent / "data" / "byzfl_0.0.11_subset_cases.npz"
SHAPES = [(3, 1), (5, 4), (7, 97), (8, 501)]


def _data(rng: np.random.Generator, n: int, D: int, dtype: type) -> np.ndarray:
    # Distinct rows at distinct distances (no ties), one or two far out.
    X = rng.standard_normal((n, D)) * rng.uniform(0.5, 3.0, size=(n, 1))
    X[rng.integers(n)] *= 8
    return X.astype(dtype)


def _tol(dtype: type) -> dict[str, float]:
    return TOL[np.dtype(dtype)]


# --------------------------------------------------------------------------------------------
# ByzFL's own examples (its docstrings): the same inputs and expected values, all four kinds
# --------------------------------------------------------------------------------------------

_X3 = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]
_EXPECTED = {"mda": [2.5, 3.5, 4.5], "smea": [2.5, 3.5, 4.5], "caf": [4.0, 5.0, 6.0]}


@pytest.mark.parametrize("rule", sorted(_EXPECTED))
def test_byzfl_docstring_examples(rule) -> None:
    torch = pytest.importorskip("torch")
    fn = getattr(agg, rule)
    want = np.array(_EXPECTED[rule])
    out = fn(np.array(_X3), 1)
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, want)
    t = fn(torch.tensor(_X3), 1)
    assert isinstance(t, torch.Tensor)
    assert t.dtype == torch.float32
    np.testing.assert_allclose(t.numpy(), want, rtol=1e-6)
    np.testing.assert_array_equal(fn([np.array(r) for r in _X3], 1), want)
    tl = fn([torch.tensor(r) for r in _X3], 1)
    assert isinstance(tl, torch.Tensor)
    np.testing.assert_allclose(tl.numpy(), want, rtol=1e-6)


# --------------------------------------------------------------------------------------------
# ByzFL 0.0.11's outputs on stored inputs
# --------------------------------------------------------------------------------------------


def _cases(rule: str) -> list[tuple[np.ndarray, int, np.ndarray]]:
    d = np.load(BYZFL)
    return [
        (d[f"{rule}{k}_X"], int(d[f"{rule}{k}_f"]), d[f"{rule}{k}_out"])
        for k in range(int(d[f"n_{rule}"]))
    ]


@pytest.mark.parametrize("rule", ["mda", "smea", "caf"])
def test_matches_byzfl_outputs(rule) -> None:
    cases = _cases(rule)
    assert len(cases) >= 10
    for X, f, want in cases:
        out = getattr(agg, rule)(X, f)
        np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12, err_msg=f"{rule} f={f}")


def test_byzfl_cases_cover_long_caf_runs() -> None:
    # ByzFL's loop has no cap: some stored cases take thousands of steps (all under max_iter).
    steps = [_core.caf(X, f, 100_000)[1] for X, f, _ in _cases("caf")]
    assert max(steps) > 1000
    assert max(steps) < 100_000


# --------------------------------------------------------------------------------------------
# example tests against the references
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "D"), SHAPES)
def test_mda_and_smea_match_reference(rng, dtype, threads, n, D) -> None:
    X = _data(rng, n, D, dtype)
    for f in range((n - 1) // 2 + 1):
        out, rows = _core.mda(X, f, threads=threads or 0)
        np.testing.assert_array_equal(rows, ref.mda_subset(X, f))
        np.testing.assert_allclose(out, ref.mda(X, f), **_tol(dtype))
        np.testing.assert_array_equal(agg.mda(X, f, threads=threads), out)
        out, rows = _core.smea(X, f, threads=threads or 0)
        np.testing.assert_array_equal(rows, ref.smea_subset(X, f))
        np.testing.assert_allclose(out, ref.smea(X, f), **_tol(dtype))
        np.testing.assert_array_equal(agg.smea(X, f, threads=threads), out)


@pytest.mark.parametrize(("n", "D"), [(3, 1), (5, 4), (7, 97), (12, 30), (16, 40)])
def test_caf_matches_reference(dtype, threads, n, D) -> None:
    # Its own seed: the steps amplify rounding differences between the two eigen-solvers on
    # some inputs, so the inputs are fixed ones on which they stay together.
    X = _data(np.random.default_rng(1000 * n + D), n, D, np.float64)
    # n - 2f >= 3: short runs, where the two eigen-solvers stay together step by step (long
    # runs amplify rounding; the ByzFL cases above cover them in one dimension).
    for f in range(max(n - 3, 0) // 2 + 1):
        out, steps = _core.caf(X, f, 100_000, threads=threads or 0)
        want, want_steps = ref.caf(X, f)
        assert steps == want_steps
        np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-6)
    # float32 input: the same algorithm on the float32 values, the result rounded once.
    X32 = X.astype(dtype)
    f = max(n - 3, 0) // 2
    np.testing.assert_allclose(
        agg.caf(X32, f, threads=threads), ref.caf(X32, f)[0], rtol=1e-4, atol=1e-4
    )


def test_mda_ties_go_to_the_first_subset_in_lexicographic_order() -> None:
    # Four corners of a square: every 3-subset has the same diameter (the diagonal).
    X = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    np.testing.assert_array_equal(_core.mda(X, 1)[1], [0, 1, 2])
    # {0, 1, 4} and {2, 3, 4} both have diameter 3; the first wins, whichever of them the
    # search's initial bound came from.
    X = np.array([[5.0], [5.0], [-1.0], [-1.0], [2.0]])
    np.testing.assert_array_equal(_core.mda(X, 2)[1], [0, 1, 4])
    np.testing.assert_array_equal(_core.mda(X[::-1].copy(), 2)[1], [0, 1, 2])


def test_smea_ties_go_to_the_first_subset_in_lexicographic_order() -> None:
    X = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    np.testing.assert_array_equal(_core.smea(X, 1)[1], [0, 1, 2])


def test_smea_eigenvalue_is_exact_not_a_power_step() -> None:
    # Two candidate subsets whose covariances have the same trace but different largest
    # eigenvalues: {0, 1, 2} spreads along one axis, {1, 2, 3} along two.
    X = np.array([[-2.0, 0.0], [0.0, 0.0], [2.0, 0.0], [1.0, 1.7320508075688772]])
    rows = _core.smea(X, 1)[1]
    lam = {
        s: ref.top_eigenvalue(np.cov(X[list(s)].T, bias=True))
        for s in itertools.combinations(range(4), 3)
    }
    assert tuple(rows) == min(lam, key=lambda s: (lam[s], s))


def test_f_zero_is_the_mean(rng, dtype) -> None:
    X = _data(rng, 6, 33, dtype)
    for rule in ("mda", "smea", "caf"):
        np.testing.assert_allclose(getattr(agg, rule)(X, 0), ref.mean(X), **_tol(dtype))


def test_one_row() -> None:
    X = np.array([[1.5, -2.0]])
    for rule in ("mda", "smea", "caf"):
        np.testing.assert_array_equal(getattr(agg, rule)(X, 0), X[0])


def test_inputs_are_not_modified(rng) -> None:
    X = _data(rng, 7, 50, np.float64)
    X[2, 3] = np.nan
    before = X.copy()
    for rule in ("mda", "smea", "caf"):
        getattr(agg, rule)(X, 2)
    np.testing.assert_array_equal(X, before)


def test_caf_stops_at_max_iter_and_zero_covariance() -> None:
    X = np.array([[37.50357703], [-0.44114297], [0.85858221]])  # a long run
    assert _core.caf(X, 1, 7)[1] == 7
    assert _core.caf(X, 1, 100_000)[1] > 1000
    same = np.ones((5, 3))
    out, steps = _core.caf(same, 2, 100)
    assert steps == 1
    np.testing.assert_array_equal(out, np.ones(3))


# --------------------------------------------------------------------------------------------
# bounds and clear errors
# --------------------------------------------------------------------------------------------


def test_f_must_satisfy_n_greater_than_2f() -> None:
    X = np.zeros((6, 2))
    for rule in ("mda", "smea", "caf"):
        fn = getattr(agg, rule)
        for f in (-1, 3, 10):
            with pytest.raises(agg.ArgumentError, match=r"f must be in \[0, 2\] \(n > 2f\)") as e:
                fn(X, f)
            assert e.value.argument == "f"
        with pytest.raises(agg.ArgumentTypeError):
            fn(X, 1.0)
        with pytest.raises(agg.ArgumentTypeError):
            fn(X, True)
        with pytest.raises(agg.ArgumentError) as e:
            fn(np.zeros((0, 3)), 0)
        assert e.value.argument == "X"
        with pytest.raises(ValueError, match="f must be in"):  # the bindings check too
            getattr(_core, rule)(X, 3, *(() if rule != "caf" else (10,)))


def test_subset_count_is_bounded() -> None:
    assert agg.MAX_SUBSETS == _core.max_subsets == 1_000_000
    # C(24, 8) = 735,471 is allowed; C(25, 9) = 2,042,975 is not.
    assert math.comb(24, 8) <= agg.MAX_SUBSETS < math.comb(25, 9)
    X = np.zeros((25, 2))
    for rule in ("mda", "smea"):
        with pytest.raises(agg.ArgumentError, match=r"C\(25, 9\) = 2,042,975 exceeds") as e:
            getattr(agg, rule)(X, 9)
        assert e.value.argument == "f"
        with pytest.raises(ValueError, match="exceeds the limit of 1000000"):
            getattr(_core, rule)(X, 9)
    np.testing.assert_array_equal(agg.mda(np.zeros((24, 2)), 8), np.zeros(2))
    # caf is polynomial: no subset limit.
    np.testing.assert_array_equal(agg.caf(X, 12), np.zeros(2))


def test_caf_max_iter_is_checked() -> None:
    X = np.zeros((5, 2))
    with pytest.raises(agg.ArgumentError) as e:
        agg.caf(X, 1, max_iter=0)
    assert e.value.argument == "max_iter"
    with pytest.raises(agg.ArgumentTypeError):
        agg.caf(X, 1, max_iter=2.5)


# --------------------------------------------------------------------------------------------
# hypothesis properties against the references
# --------------------------------------------------------------------------------------------

# Dyadic grid values: every distance is exact in double in both implementations, so diameters
# tie exactly in both and MDA's selections (ties included) must agree exactly.
_grid = st.integers(-16, 16).map(lambda v: v / 4)
_threads = st.sampled_from([1, 2, None])


@st.composite
def _grid_matrices(draw: st.DrawFn) -> np.ndarray:
    n = draw(st.integers(1, 9))
    D = draw(st.sampled_from([1, 2, 3, 7]))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    return draw(hnp.arrays(dtype, (n, D), elements=_grid))


@given(X=_grid_matrices(), data=st.data(), threads=_threads)
def test_property_mda_selects_the_first_least_diameter_subset(X, data, threads) -> None:
    n = X.shape[0]
    f = data.draw(st.integers(0, (n - 1) // 2))
    out, rows = _core.mda(X, f, threads=threads or 0)
    np.testing.assert_array_equal(rows, ref.mda_subset(X, f))
    np.testing.assert_allclose(out, ref.mda(X, f), **_tol(X.dtype.type))


@given(X=_grid_matrices(), data=st.data(), threads=_threads)
def test_property_smea_selects_a_least_eigenvalue_subset(X, data, threads) -> None:
    # Grid data has many exact ties, which two eigenvalue computations may break differently:
    # the selected subset's eigenvalue must be the least one (to rounding).
    n = X.shape[0]
    f = data.draw(st.integers(0, (n - 1) // 2))
    out, rows = _core.smea(X, f, threads=threads or 0)
    X64 = X.astype(np.float64)

    def lam(s: tuple[int, ...] | np.ndarray) -> float:
        Y = X64[list(s)] - X64[list(s)].mean(axis=0)
        return ref.top_eigenvalue(Y.T @ Y / (n - f))

    best = min(lam(s) for s in itertools.combinations(range(n), n - f))
    assert len(rows) == n - f
    assert (np.diff(rows) > 0).all()
    assert lam(rows) <= best + 1e-9 * max(1.0, best)
    np.testing.assert_allclose(out, ref._subset_mean(X, rows), **_tol(X.dtype.type))


@given(
    n=st.integers(2, 10),
    D=st.sampled_from([1, 2, 5, 17]),
    seed=st.integers(0, 2**32 - 1),
    data=st.data(),
    threads=_threads,
)
def test_property_smea_and_caf_match_reference(n, D, seed, data, threads) -> None:
    X = _data(np.random.default_rng(seed), n, D, np.float64)
    f = data.draw(st.integers(0, (n - 1) // 2))
    out, rows = _core.smea(X, f, threads=threads or 0)
    np.testing.assert_array_equal(rows, ref.smea_subset(X, f))
    out, steps = _core.caf(X, f, 100_000, threads=threads or 0)
    want, want_steps = ref.caf(X, f)
    if n - 2 * f >= 3:  # short runs: the two eigen-solvers stay together step by step
        assert steps == want_steps
        np.testing.assert_allclose(out, want, rtol=1e-7, atol=1e-7)
    # Always a convex combination of the rows.
    assert (out >= X.min(axis=0) - 1e-9).all()
    assert (out <= X.max(axis=0) + 1e-9).all()
