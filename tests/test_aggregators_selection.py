"""Krum neighbour conventions, weighted means, closest-to-reference averaging and Bulyan.

The NumPy references are in tests/_reference.py. The peer-library cases are rewritten from the
test suites and docstrings of ByzFL 0.0.11 (``byzfl.aggregators``) and Flower 1.42 (its Krum,
MultiKrum and Bulyan strategies and ``aggregate`` / ``aggregate_n_closest_weights``), each run
under the matching convention; ByzFL itself is also called directly where it defines the rule
(it defines no Bulyan).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import cyclad.aggregators as agg
from cyclad import _core
from tests import _reference as ref


def _tol(dtype) -> dict:
    return {"rtol": 2e-6, "atol": 2e-6} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-12}


# --------------------------------------------------------------------------------------------
# Krum neighbour conventions
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("neighbors", "n", "f", "q"),
    [
        ("blanchard", 7, 2, 3),
        ("byzfl", 7, 2, 4),
        ("flower", 7, 2, 3),
        ("flower", 3, 1, 1),  # n - f - 2 = 0, clamped to 1
        ("flower", 4, 3, 1),
        ("flower", 2, 1, 1),
        (2, 7, 0, 2),
    ],
)
def test_krum_neighbor_counts(rng, dtype, neighbors, n, f, q) -> None:
    X = rng.standard_normal((n, 6)).astype(dtype)
    np.testing.assert_array_equal(agg.krum(X, f, neighbors=neighbors), ref.krum(X, f, q))
    got = agg.multi_krum(X, f, 1 if n < 3 else 2, neighbors=neighbors)
    np.testing.assert_allclose(got, ref.multi_krum(X, f, 1 if n < 3 else 2, q), **_tol(dtype))


def test_byzfl_convention_is_f_minus_one(rng) -> None:
    X = rng.standard_normal((9, 11))
    for f in range(1, 7):
        np.testing.assert_array_equal(agg.krum(X, f, neighbors="byzfl"), agg.krum(X, f - 1))
        np.testing.assert_array_equal(
            agg.multi_krum(X, f, 4, neighbors="byzfl"), agg.multi_krum(X, f - 1, 4)
        )


def test_byzfl_docstring_cases() -> None:
    # byzfl.Krum(1) and byzfl.MultiKrum(1) on three rows (n - f - 1 = 1 neighbour).
    X = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    np.testing.assert_array_equal(agg.krum(X, 1, neighbors="byzfl"), [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(agg.multi_krum(X, 1, neighbors="byzfl"), [2.5, 3.5, 4.5])
    with pytest.raises(ValueError, match=r"f \(for krum with n=3 rows\) must be in \[0, 0\]"):
        agg.krum(X, 1)  # Blanchard et al.'s n - f - 2 = 0 neighbours


@pytest.mark.parametrize("case", range(10))
def test_matches_byzfl_krum(case) -> None:
    # ByzFL 0.0.11's Krum(f) / MultiKrum(f) outputs on the stored inputs, computed once by
    # tests/data/make_byzfl_krum_cases.py (the test extra does not install ByzFL).
    data = np.load(ref_cases())
    want = np.load(ref_cases().with_name("byzfl_0.0.11_krum_cases.npz"))
    X, f = data[f"c{case}_X"], int(data[f"c{case}_f"])
    krum, mk = want[f"c{case}_krum"], want[f"c{case}_multi_krum"]
    np.testing.assert_array_equal(agg.krum(X, f, neighbors="byzfl"), krum)
    np.testing.assert_allclose(agg.multi_krum(X, f, neighbors="byzfl"), mk, rtol=1e-12)
    if f >= 1:
        np.testing.assert_array_equal(agg.krum(X, f - 1), krum)


def ref_cases():
    from pathlib import Path

    return Path(__file__).parent / "data" / "byzfl_0.0.11_cases.npz"


def test_flower_krum_cases() -> None:
    # Flower's Krum / MultiKrum strategy tests: n = 3, f = 1 (one neighbour after clamping).
    X = np.array([[0.2] * 4, [0.7] * 4, [1.0] * 4])
    np.testing.assert_array_equal(agg.krum(X, 1, neighbors="flower"), [0.7] * 4)
    Y = np.array([[0.2] * 4, [0.5] * 4, [1.0] * 4])
    np.testing.assert_allclose(agg.multi_krum(Y, 1, 2, neighbors="flower"), [0.35] * 4)
    # num_examples are all 5 there: the weighted mean is the same.
    np.testing.assert_allclose(
        agg.multi_krum(Y, 1, 2, neighbors="flower", weights=[5, 5, 5]), [0.35] * 4
    )
    with pytest.raises(ValueError, match="for krum with n=3 rows"):
        agg.krum(X, 1, neighbors="blanchard")


@pytest.mark.parametrize(
    ("kw", "match", "exc"),
    [
        ({"neighbors": "nope"}, "neighbors must be one of", ValueError),
        ({"neighbors": 0}, r"neighbors \(for krum with n=5 rows\) must be in \[1, 4\]", ValueError),
        ({"neighbors": 5}, r"must be in \[1, 4\], got 5", ValueError),
        ({"neighbors": 1.5}, "neighbors must be one of", TypeError),
        ({"neighbors": True}, "neighbors must be one of", TypeError),
    ],
)
def test_neighbors_errors(kw, match, exc) -> None:
    X = np.ones((5, 3))
    with pytest.raises(exc, match=match) as info:
        agg.krum(X, 1, **kw)
    assert info.value.argument == "neighbors"


def test_core_krum_takes_the_neighbour_count() -> None:
    X = np.arange(12.0).reshape(4, 3)
    np.testing.assert_array_equal(_core.krum(X, 3), ref.krum(X, 0, 3))
    with pytest.raises(ValueError, match="krum needs 0 <= q <= n - 1 neighbours"):
        _core.krum(X, 4)
    with pytest.raises(ValueError, match="multi_krum needs 0 <= q <= n - 1 neighbours"):
        _core.multi_krum(X, 4, 2)


# --------------------------------------------------------------------------------------------
# weighted means
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "D"), [(1, 1), (3, 7), (8, 1031), (13, 40000)])
def test_weighted_mean_matches_reference(rng, dtype, threads, n, D) -> None:
    X = rng.standard_normal((n, D)).astype(dtype)
    w = rng.integers(0, 50, n).astype(np.float64)
    w[0] = 3.0
    got = agg.mean(X, weights=w, threads=threads)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, ref.weighted_mean(X, w), **_tol(dtype))
    np.testing.assert_array_equal(got, agg.mean(X, weights=w, threads=1))


def test_weighted_mean_flower_aggregate_case() -> None:
    # Flower's test_aggregate: identical updates with num_examples 1 and 2.
    X = np.array([[1.0, 2, 3, 4, 5, 6, 7, 8, 9, 10]] * 2)
    np.testing.assert_array_equal(agg.mean(X, weights=[1, 2]), X[0])
    Y = np.array([[0.0, 3.0], [3.0, 0.0]])
    np.testing.assert_allclose(agg.mean(Y, weights=[1, 2]), [2.0, 1.0])


def test_weighted_mean_zero_weight_rows_are_not_read() -> None:
    X = np.array([[1.0, 2.0], [np.nan, np.inf], [3.0, 4.0]])
    np.testing.assert_array_equal(agg.mean(X, weights=[1, 0, 1]), [2.0, 3.0])
    out = agg.mean(X, weights=[1, 1e-300, 1])  # a counted row's NaN / Inf propagate
    assert np.isnan(out[0])
    assert out[1] == np.inf


def test_weighted_mean_huge_weights_and_values() -> None:
    X = np.array([[1e308, -1e308], [1e308, -1e308]])
    np.testing.assert_array_equal(agg.mean(X, weights=[1e308, 1e308]), [1e308, -1e308])
    x32 = np.array([[3e38], [3e38]], dtype=np.float32)
    assert agg.mean(x32, weights=[1.0, 2.0])[0] == np.float32(3e38)


@pytest.mark.parametrize(
    ("w", "match"),
    [
        ([1.0, np.nan, 1.0], "weights must be finite"),
        ([1.0, np.inf, 1.0], "weights must be finite"),
        ([1.0, -1.0, 1.0], "weights must be >= 0"),
        ([0.0, 0.0, 0.0], "weights must not all be zero"),
        ([1.0, 1.0], r"weights must have shape \(n,\) = \(3,\)"),
        ([[1.0, 1.0, 1.0]], "weights must be 1-D"),
    ],
)
def test_weights_errors(w, match) -> None:
    X = np.ones((3, 4))
    for call in (lambda: agg.mean(X, weights=w), lambda: agg.multi_krum(X, 0, weights=w)):
        with pytest.raises(ValueError, match=match) as info:
            call()
        assert info.value.argument == "weights"
    with pytest.raises(TypeError, match="weights must hold real numbers"):
        agg.mean(X, weights=np.ones(3, dtype=complex))


def test_core_weighted_mean_checks_weights() -> None:
    X = np.ones((3, 4))
    with pytest.raises(ValueError, match="weights must be finite and >= 0"):
        _core.weighted_mean(X, np.array([1.0, np.nan, 1.0]))
    with pytest.raises(ValueError, match="weights must not all be zero"):
        _core.weighted_mean(X, np.zeros(3))


def test_multi_krum_weighted(rng, dtype, threads) -> None:
    X = rng.standard_normal((11, 301)).astype(dtype)
    X[3] += 50
    w = rng.uniform(0.5, 10, 11)
    got = agg.multi_krum(X, 2, 6, weights=w, threads=threads)
    np.testing.assert_allclose(got, ref.multi_krum(X, 2, 6, w=w), **_tol(dtype))
    np.testing.assert_array_equal(got, agg.multi_krum(X, 2, 6, weights=w, threads=1))
    # weights on the rows that are not selected do not matter
    rows = np.sort(ref._order(ref.krum_scores(X, 2), ~ref.finite_rows(X))[:6])
    w2 = w.copy()
    w2[np.setdiff1d(np.arange(11), rows)] = 0.0
    np.testing.assert_array_equal(agg.multi_krum(X, 2, 6, weights=w2), got)
    w3 = np.zeros(11)
    w3[np.setdiff1d(np.arange(11), rows)[0]] = 1.0
    with pytest.raises(ValueError, match="weights of the selected rows are all zero") as info:
        agg.multi_krum(X, 2, 6, weights=w3)
    assert info.value.argument == "weights"


def test_registry_weights(rng) -> None:
    X = rng.standard_normal((9, 17))
    w = rng.uniform(1, 5, 9)
    np.testing.assert_array_equal(agg.get("mean", weights=w)(X), agg.mean(X, weights=w))
    np.testing.assert_array_equal(agg.get("mean")(X, weights=w), agg.mean(X, weights=w))
    np.testing.assert_array_equal(
        agg.get("nnm+multi_krum", f=2)(X, weights=w),
        agg.multi_krum(agg.nnm(X, 2), 2, weights=w),
    )
    np.testing.assert_array_equal(
        agg.get("clip+mean", tau=1.0, weights=np.ones(9))(X, weights=w),
        agg.mean(agg.clip(X, 1.0), weights=w),
    )
    with pytest.raises(ValueError, match="takes no weights") as info:
        agg.get("krum", f=1)(X, weights=w)
    assert info.value.argument == "weights"
    with pytest.raises(ValueError, match=r"stage 2 'mean'.*weights must have shape") as info:
        agg.get("bucketing+mean", s=2, seed=0)(X, weights=w)  # 5 buckets, 9 weights
    assert info.value.argument == "weights"


@given(
    X=hnp.arrays(
        np.float64, st.tuples(st.integers(1, 9), st.integers(1, 12)), elements=st.floats(-1e6, 1e6)
    ),
    data=st.data(),
)
def test_weighted_mean_property(X, data) -> None:
    n = X.shape[0]
    w = np.array(data.draw(st.lists(st.integers(0, 100), min_size=n, max_size=n)), dtype=float)
    if not (w > 0).any():
        w[0] = 1.0
    got = agg.mean(X, weights=w)
    np.testing.assert_allclose(got, ref.weighted_mean(X, w), rtol=1e-9, atol=1e-9)
    keep = X[w > 0]
    assert (got >= keep.min(axis=0) - 1e-9).all()
    assert (got <= keep.max(axis=0) + 1e-9).all()
    np.testing.assert_array_equal(agg.mean(X, weights=w, threads=2), got)


# --------------------------------------------------------------------------------------------
# closest-to-reference averaging
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "D"), [(1, 1), (5, 7), (12, 3001), (7, 20000)])
def test_closest_matches_reference(rng, dtype, threads, n, D) -> None:
    X = rng.standard_normal((n, D)).astype(dtype)
    z = rng.standard_normal(D)
    for beta in sorted({1, (n + 1) // 2, n}):
        got = agg.closest(X, z, beta, threads=threads)
        np.testing.assert_allclose(got, ref.closest(X, z, beta), **_tol(dtype))
        got = agg.closest(X, z, beta, metric="coordinate", threads=threads)
        np.testing.assert_allclose(got, ref.closest_coordinates(X, z, beta), **_tol(dtype))
        np.testing.assert_array_equal(got, agg.closest(X, z, beta, metric="coordinate", threads=1))


def test_closest_ties_by_row_index() -> None:
    # Rows 0..3 all at distance 1 from the origin: the lowest indices win.
    X = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0], [5.0, 5.0]])
    np.testing.assert_array_equal(agg.closest(X, [0.0, 0.0], 2), [0.5, 0.5])
    np.testing.assert_array_equal(agg.closest(X[::-1].copy(), [0.0, 0.0], 2), [-0.5, -0.5])
    # equidistant values per coordinate: the lower one is kept
    Y = np.array([[-1.0], [1.0], [3.0]])
    np.testing.assert_array_equal(agg.closest(Y, [0.0], 1, metric="coordinate"), [-1.0])


def test_closest_poisoned_rows() -> None:
    X = np.array([[np.nan, 0.0], [1.0, 1.0], [np.inf, 1.0], [2.0, 2.0], [1e300, 0.0]])
    np.testing.assert_array_equal(agg.closest(X, [0.0, 0.0], 2), [1.5, 1.5])
    np.testing.assert_array_equal(agg.closest(X, [0.0, 0.0], 2, metric="coordinate"), [1.5, 0.0])


@pytest.mark.parametrize(
    ("X", "z", "beta", "expected"),
    [
        # Flower's aggregate_n_closest_weights tests (layers flattened into one row each).
        ([[1.0], [2.0], [0.5]], [1.0], 2, [0.75]),
        ([[1.1, 2.1, 0.2, 1.2], [0.9, 1.9, -0.1, 0.8], [5.0, 5.0, 10.0, 10.0]],
         [1.0, 2.0, 0.0, 1.0], 2, [1.0, 2.0, 0.05, 1.0]),
        ([[1.0], [-0.5], [10.0]], [0.0], 1, [-0.5]),
        ([[1.0, 2.0], [-1.0, 0.0], [3.0, 4.0]], [0.0, 0.0], 3, [1.0, 2.0]),
        ([[1.1, 2.1, 2.9, 3.9], [10.0, 10.0, 10.0, 10.0], [0.9, 1.9, 3.1, 4.1]],
         [1.0, 2.0, 3.0, 4.0], 2, [1.0, 2.0, 3.0, 4.0]),
        ([[5.0, 5.0]] * 3, [42.0, -1.0], 2, [5.0, 5.0]),
        # the older flwr.server.strategy test (two layers: (2,) and (2, 2))
        ([[1.0, 2.0, 1.0, 2.0, 3.0, 4.0], [1.1, 2.1, 1.1, 2.1, 3.1, 4.1],
          [1.2, 2.2, 1.2, 2.2, 3.2, 4.2], [1.3, 2.3, 0.9, 2.5, 3.4, 3.8]],
         [1.0, 2.0, 1.0, 2.0, 3.0, 4.0], 2, [1.05, 2.05, 0.95, 2.05, 3.05, 4.05]),
    ],
)  # fmt: skip
def test_flower_closest_weights_cases(X, z, beta, expected) -> None:
    got = agg.closest(np.array(X), z, beta, metric="coordinate")
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)


def test_closest_errors() -> None:
    X = np.ones((3, 2))
    with pytest.raises(ValueError, match=r"beta \(for closest with n=3 rows\) must be in \[1, 3\]"):
        agg.closest(X, [0.0, 0.0], 4)  # Flower: beta larger than the number of rows
    with pytest.raises(ValueError, match="beta"):
        agg.closest(X, [0.0, 0.0], 0)
    with pytest.raises(ValueError, match="reference must be finite") as info:
        agg.closest(X, [np.nan, 0.0], 1)
    assert info.value.argument == "reference"
    with pytest.raises(ValueError, match=r"reference must have shape \(D,\) = \(2,\)"):
        agg.closest(X, [0.0], 1)
    with pytest.raises(ValueError, match="metric must be") as info:
        agg.closest(X, [0.0, 0.0], 1, metric="manhattan")
    assert info.value.argument == "metric"
    with pytest.raises(ValueError, match="reference must be finite"):
        _core.closest(X, np.array([np.inf, 0.0]), 1)
    with pytest.raises(ValueError, match="closest needs 1 <= beta <= n"):
        _core.closest(X, np.zeros(2), 4)
    with pytest.raises(ValueError, match="closest_coordinates needs 1 <= beta <= rows"):
        _core.closest_coordinates(X, np.zeros(2), 0)


@given(
    X=hnp.arrays(
        np.float64, st.tuples(st.integers(1, 9), st.integers(1, 6)), elements=st.floats(-1e3, 1e3)
    ),
    data=st.data(),
)
def test_closest_property(X, data) -> None:
    n, D = X.shape
    beta = data.draw(st.integers(1, n))
    z = np.array(data.draw(st.lists(st.floats(-1e3, 1e3), min_size=D, max_size=D)))
    for metric, fn in (("euclidean", ref.closest), ("coordinate", ref.closest_coordinates)):
        got = agg.closest(X, z, beta, metric=metric)
        np.testing.assert_allclose(got, fn(X, z, beta), rtol=1e-12, atol=1e-9)
        assert (got >= X.min(axis=0) - 1e-9).all()
        assert (got <= X.max(axis=0) + 1e-9).all()
    # the ball bound: the result is no farther from z than the beta-th nearest row
    d = np.sort(np.linalg.norm(X - z, axis=1))[beta - 1]
    assert np.linalg.norm(agg.closest(X, z, beta) - z) <= d * (1 + 1e-12) + 1e-9


# --------------------------------------------------------------------------------------------
# Bulyan
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("selection", ["iterated", "multi_krum"])
@pytest.mark.parametrize(("n", "f", "D"), [(3, 0, 1), (7, 1, 9), (11, 2, 1003), (16, 3, 5000)])
def test_bulyan_matches_reference(rng, dtype, threads, selection, n, f, D) -> None:
    X = rng.standard_normal((n, D)).astype(dtype)
    X[:f] += 20.0  # f rows far out
    got = agg.bulyan(X, f, selection=selection, threads=threads)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, ref.bulyan(X, f, selection), **_tol(dtype))
    np.testing.assert_array_equal(got, agg.bulyan(X, f, selection=selection, threads=1))
    byz = agg.bulyan(X, f, selection=selection, neighbors="byzfl")
    np.testing.assert_allclose(byz, ref.bulyan(X, f, selection, drop=1), **_tol(dtype))
    # blanchard and flower agree (at least one neighbour in every Krum step)
    np.testing.assert_array_equal(agg.bulyan(X, f, selection=selection, neighbors="flower"), got)


def test_bulyan_selections_differ_and_are_documented(rng) -> None:
    # The iterated selection re-scores after each removal: on this input the two differ.
    X = rng.standard_normal((11, 4))
    X[0] += 3.0
    X[1] -= 3.0
    outs = {s: agg.bulyan(X, 2, selection=s) for s in ("iterated", "multi_krum")}
    for s, out in outs.items():
        np.testing.assert_allclose(out, ref.bulyan(X, 2, s), rtol=1e-12)
    assert "Flower's newer" in agg.bulyan.__doc__


def test_bulyan_equals_its_two_stages(rng) -> None:
    X = rng.standard_normal((11, 50))
    f, theta = 2, 7
    rows = np.sort(ref._order(ref.krum_scores(X, f), ~ref.finite_rows(X))[:theta])
    S = X[rows]
    expected = agg.closest(S, agg.median(S), theta - 2 * f, metric="coordinate")
    np.testing.assert_array_equal(agg.bulyan(X, f, selection="multi_krum"), expected)


def test_bulyan_poisoned_rows_are_never_selected(rng, dtype) -> None:
    X = rng.standard_normal((11, 20)).astype(dtype)
    H = np.delete(X, [2, 7], axis=0).astype(np.float64)
    X[2] = np.nan
    X[7, 3] = np.inf
    for selection in ("iterated", "multi_krum"):
        out = agg.bulyan(X, 2, selection=selection).astype(np.float64)
        assert np.isfinite(out).all()
        assert (out >= H.min(axis=0)).all()
        assert (out <= H.max(axis=0)).all()


def test_bulyan_errors() -> None:
    X = np.ones((10, 3))
    with pytest.raises(ValueError, match=r"f \(for bulyan with n=10 rows, n >= 4f \+ 3\)") as info:
        agg.bulyan(X, 2)
    assert info.value.argument == "f"
    with pytest.raises(ValueError, match="at least 3 rows") as info:
        agg.bulyan(X[:2], 0)
    assert info.value.argument == "X"
    with pytest.raises(ValueError, match="selection must be") as info:
        agg.bulyan(X, 1, selection="krum")
    assert info.value.argument == "selection"
    with pytest.raises(ValueError, match="neighbors must be one of") as info:
        agg.bulyan(X, 1, neighbors=3)
    assert info.value.argument == "neighbors"
    with pytest.raises(ValueError, match="bulyan needs n >= 4f \\+ 3, got n=10, f=2"):
        _core.bulyan(X, 2)
    with pytest.raises(ValueError, match="selection must be 'iterated' or 'multi_krum'"):
        _core.bulyan(X, 1, "other")
    with pytest.raises(ValueError, match="neighbors must be 'blanchard', 'byzfl' or 'flower'"):
        _core.bulyan(X, 1, "iterated", "other")


@given(
    X=hnp.arrays(
        np.float64, st.tuples(st.integers(3, 12), st.integers(1, 5)), elements=st.floats(-1e3, 1e3)
    ),
    selection=st.sampled_from(["iterated", "multi_krum"]),
    data=st.data(),
)
def test_bulyan_property(X, selection, data) -> None:
    n = X.shape[0]
    f = data.draw(st.integers(0, (n - 3) // 4))
    got = agg.bulyan(X, f, selection=selection)
    np.testing.assert_allclose(got, ref.bulyan(X, f, selection), rtol=1e-12, atol=1e-9)
    assert (got >= X.min(axis=0) - 1e-9).all()
    assert (got <= X.max(axis=0) + 1e-9).all()
    perm = np.asarray(data.draw(st.permutations(range(n))))
    # a permutation of the rows changes only ties (none with continuous draws, in general):
    # the result stays within the box of the rows and satisfies the reference
    np.testing.assert_allclose(
        agg.bulyan(X[perm], f, selection=selection), ref.bulyan(X[perm], f, selection),
        rtol=1e-12, atol=1e-9,
    )  # fmt: skip
    np.testing.assert_array_equal(agg.bulyan(X, f, selection=selection, threads=2), got)


def test_torch_inputs() -> None:
    import torch

    X = torch.randn(11, 6, dtype=torch.float32)
    for out, expected in (
        (agg.bulyan(X, 2), agg.bulyan(X.numpy(), 2)),
        (agg.closest(X, np.zeros(6), 3), agg.closest(X.numpy(), np.zeros(6), 3)),
        (
            agg.mean(X, weights=torch.arange(1.0, 12.0)),
            agg.mean(X.numpy(), weights=np.arange(1.0, 12.0)),
        ),
    ):
        assert isinstance(out, torch.Tensor)
        assert out.dtype == torch.float32
        np.testing.assert_array_equal(out.numpy(), expected)
