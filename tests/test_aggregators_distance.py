"""Distance-based rules (Krum, Multi-Krum, geometric median, centered clipping) and
pre-aggregations (NNM, bucketing, clip, ARC) against the NumPy references in tests/_reference.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import cyclad.aggregators as agg
from cyclad import _core
from tests import _reference as ref
from tests._arrays import assert_out_checked
from tests.conftest import TOL

SHAPES = [(3, 1), (4, 7), (7, 97), (12, 10007)]
BYZFL = Path(__file__).parent / "data" / "byzfl_0.0.11_cases.npz"


def _data(rng: np.random.Generator, n: int, D: int, dtype: type) -> np.ndarray:
    # Distinct rows at distinct distances (no ties), spread so that neighbour sets vary.
    X = rng.standard_normal((n, D)) * rng.uniform(0.5, 3.0, size=(n, 1))
    return X.astype(dtype)


def _tol(dtype: type) -> dict[str, float]:
    return TOL[np.dtype(dtype)]


# --------------------------------------------------------------------------------------------
# example tests against the references
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "D"), SHAPES)
def test_pairwise_distances_match_reference(rng, dtype, threads, n, D) -> None:
    X = _data(rng, n, D, dtype)
    d, bad = _core.pairwise_sq_distances(X, threads=0 if threads is None else threads)
    assert d.dtype == np.float64
    assert d.shape == (n, n)
    assert not bad.any()
    np.testing.assert_allclose(d, ref.pairwise_sq_distances(X), rtol=1e-12, atol=0)
    np.testing.assert_array_equal(d, d.T)


@pytest.mark.parametrize(("n", "D"), SHAPES)
def test_krum_and_multi_krum_match_reference(rng, dtype, threads, n, D) -> None:
    X = _data(rng, n, D, dtype)
    for f in range(n - 2):
        out = agg.krum(X, f, threads=threads)
        assert out.dtype == dtype
        assert out.shape == (D,)
        np.testing.assert_array_equal(out, ref.krum(X, f))
        for m in sorted({1, n - f, n}):
            got = agg.multi_krum(X, f, m, threads=threads)
            np.testing.assert_allclose(got, ref.multi_krum(X, f, m), **_tol(dtype))
        np.testing.assert_array_equal(
            agg.multi_krum(X, f, threads=threads), agg.multi_krum(X, f, n - f, threads=threads)
        )


@pytest.mark.parametrize(("n", "D"), [(1, 5), *SHAPES])
def test_nnm_matches_reference(rng, dtype, threads, n, D) -> None:
    X = _data(rng, n, D, dtype)
    for f in range(n):
        out = agg.nnm(X, f, threads=threads)
        assert out.dtype == dtype
        assert out.shape == (n, D)
        np.testing.assert_allclose(out, ref.nnm(X, f), **_tol(dtype))
    np.testing.assert_allclose(agg.nnm(X, n - 1, threads=threads), X, **_tol(dtype))


@pytest.mark.parametrize(("n", "D"), [(1, 5), *SHAPES])
def test_bucketing_matches_reference(rng, dtype, threads, n, D) -> None:
    X = _data(rng, n, D, dtype)
    for s in (1, 2, 3, n, n + 2):
        out = agg.bucketing(X, s, seed=7, threads=threads)
        assert out.dtype == dtype
        assert out.shape == (-(-n // s), D)
        perm = agg.bucket_permutation(n, 7)
        np.testing.assert_allclose(out, ref.bucketing(X, s, perm), **_tol(dtype))


def test_bucket_permutation_is_a_pure_function_of_seed() -> None:
    p = agg.bucket_permutation(20, 12345)
    assert sorted(p.tolist()) == list(range(20))
    np.testing.assert_array_equal(p, agg.bucket_permutation(20, 12345))
    assert not np.array_equal(p, agg.bucket_permutation(20, 12346))
    # Pinned values: the permutation must not change across platforms or releases.
    assert agg.bucket_permutation(8, 0).tolist() == [2, 5, 0, 3, 4, 6, 1, 7]
    assert agg.bucket_permutation(1, 3).tolist() == [0]


@pytest.mark.parametrize(("n", "D"), [(1, 5), *SHAPES])
def test_clip_and_arc_match_reference(rng, dtype, threads, n, D) -> None:
    X = _data(rng, n, D, dtype)
    norms = np.linalg.norm(X.astype(np.float64), axis=1)
    for tau in (0.5 * norms.min(), float(np.median(norms)), 2 * norms.max()):
        out = agg.clip(X, tau, threads=threads)
        assert out.dtype == dtype
        assert out.shape == (n, D)
        np.testing.assert_allclose(out, ref.clip(X, tau), **_tol(dtype))
        assert (np.linalg.norm(out.astype(np.float64), axis=1) <= tau * (1 + 1e-6)).all()
    for f in range((n - 1) // 2 + 1):
        np.testing.assert_allclose(agg.arc(X, f, threads=threads), ref.arc(X, f), **_tol(dtype))


@pytest.mark.parametrize(("n", "D"), SHAPES)
def test_centered_clipping_matches_reference(rng, dtype, threads, n, D) -> None:
    X = _data(rng, n, D, dtype)
    center = rng.standard_normal(D)
    norms = np.linalg.norm(X.astype(np.float64), axis=1)
    for tau in (0.3 * norms.min(), 2 * norms.max()):
        for iters, c in ((1, None), (3, None), (2, center)):
            out = agg.centered_clipping(X, tau, iters, c, threads=threads)
            assert out.dtype == dtype
            assert out.shape == (D,)
            np.testing.assert_allclose(
                out, ref.centered_clipping(X, tau, iters, c), rtol=1e-5, atol=1e-5
            )


@pytest.mark.parametrize(("n", "D"), [(1, 4), (3, 1), (5, 3), (9, 97)])
def test_geometric_median_is_optimal(rng, threads, n, D) -> None:
    X = _data(rng, n, D, np.float64)
    z = agg.geometric_median(X, tol=1e-12, max_iter=5000, threads=threads)
    assert z.shape == (D,)
    slow = ref.geometric_median(X)
    scale = np.abs(X).max()
    np.testing.assert_allclose(z, slow, rtol=0, atol=1e-6 * scale)
    if n >= 3:
        # Smoothed optimality: the (sub)gradient sum of unit vectors vanishes.
        assert np.linalg.norm(ref.weiszfeld_gradient(X, z)) < 1e-5 * n
    # The default tolerance stays close to the optimum too.
    z_default = agg.geometric_median(X, threads=threads)
    np.testing.assert_allclose(z_default, slow, rtol=0, atol=1e-3 * scale)


@pytest.mark.parametrize(("n", "D"), [(1, 4), (5, 3), (9, 97), (20, 9001)])
def test_geometric_median_from_the_mean(rng, dtype, threads, n, D) -> None:
    X = _data(rng, n, D, dtype)
    X[0] *= 50.0  # an outlier pulls the mean start, not the limit
    z = agg.geometric_median(X, tol=1e-12, max_iter=5000, start="mean", threads=threads)
    assert z.dtype == dtype
    scale = float(np.abs(X).max())
    atol = (1e-6 if dtype == np.float64 else 1e-4) * scale
    np.testing.assert_allclose(z, ref.geometric_median(X), rtol=0, atol=atol)
    # One step from the mean is exactly one smoothed Weiszfeld step of the reference.
    X64 = X.astype(np.float64)
    z0 = X64.mean(axis=0)
    w = 1.0 / np.maximum(1e-8, np.linalg.norm(X64 - z0, axis=1))
    step = (w[:, None] * X64).sum(axis=0) / w.sum()
    one = agg.geometric_median(X, max_iter=1, start="mean", threads=threads)
    np.testing.assert_allclose(one, step.astype(dtype), **_tol(dtype))


def test_geometric_median_mean_start_skips_poisoned_rows(rng) -> None:
    X = _data(rng, 9, 50, np.float64)
    X[2, 3] = np.nan
    X[4] = 1e300
    z = agg.geometric_median(X, tol=1e-12, max_iter=5000, start="mean")
    assert np.isfinite(z).all()
    # The huge row pulls the start to ~1e299, but the limit is the medoid start's limit.
    medoid = agg.geometric_median(X, tol=1e-12, max_iter=5000)
    np.testing.assert_allclose(z, medoid, rtol=0, atol=1e-6)
    X[:] = np.nan
    assert np.isnan(agg.geometric_median(X, start="mean")).all()


def test_geometric_median_start_must_be_known(rng) -> None:
    X = _data(rng, 5, 3, np.float64)
    with pytest.raises(agg.ArgumentError, match="start must be 'medoid' or 'mean'") as e:
        agg.geometric_median(X, start="median")
    assert e.value.argument == "start"
    assert agg.get("geometric_median", start="mean")(X).shape == (3,)


@pytest.mark.parametrize(
    "rule",
    [
        lambda X, **kw: agg.nnm(X, 2, **kw),
        lambda X, **kw: agg.clip(X, 3.0, **kw),
        lambda X, **kw: agg.arc(X, 2, **kw),
    ],
    ids=["nnm", "clip", "arc"],
)
def test_pre_aggregations_into_out(rng, dtype, threads, rule) -> None:
    X = _data(rng, 7, 1001, dtype)
    out = np.full_like(X, np.nan)
    res = rule(X, out=out, threads=threads)
    assert res is out
    np.testing.assert_array_equal(out, rule(X, threads=threads))


def test_nnm_out_is_checked(rng) -> None:
    X = _data(rng, 5, 8, np.float64)
    assert_out_checked(lambda out: agg.nnm(X, 1, out=out), X, (5, 8))
    with pytest.raises(agg.ArgumentTypeError, match="NumPy array"):
        agg.nnm(X.tolist(), 1, out=np.zeros((5, 8)))
    # The C++ layer checks too, for direct calls.
    with pytest.raises(ValueError, match="share memory"):
        _core.nnm(X, 1, out=X)
    with pytest.raises(ValueError, match="share memory"):
        _core.clip(X, 1.0, out=X)
    with pytest.raises(agg.ArgumentError, match="shape"):
        agg.arc(X, 1, out=np.zeros((4, 8)))


def test_geometric_median_float32_and_reported_iterations(rng) -> None:
    X = _data(rng, 11, 301, np.float32)
    z = agg.geometric_median(X)
    assert z.dtype == np.float32
    np.testing.assert_allclose(z, ref.geometric_median(X), rtol=0, atol=1e-3)
    _, iters = _core.geometric_median(X, 1e-8, 200, 1e-7)
    assert 1 <= iters < 200  # converged before max_iter
    _, one = _core.geometric_median(X, 1e-8, 1, 0.0)
    assert one == 1


def test_geometric_median_of_identical_rows_and_collinear_points() -> None:
    X = np.tile(np.array([1.5, -2.0, 3.0]), (6, 1))
    np.testing.assert_allclose(agg.geometric_median(X), X[0], rtol=1e-15)
    # Two points: every point of the segment is a geometric median.
    z = agg.geometric_median(np.array([[0.0, 0.0], [2.0, 4.0]]))
    np.testing.assert_allclose(z[1], 2 * z[0], rtol=1e-12)
    assert 0 <= z[0] <= 2
    # Odd number of collinear points: the geometric median is the middle one.
    Y = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [10.0, 10.0], [50.0, 50.0]])
    np.testing.assert_allclose(
        agg.geometric_median(Y, tol=1e-12, max_iter=10000), [2.0, 2.0], atol=1e-5
    )


def test_krum_ties_go_to_lowest_index() -> None:
    X = np.array([[3.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    scores = ref.krum_scores(X, 1)
    # Rows 1..4 tie for the lowest score; the lowest index wins.
    assert scores[1] == scores[2] == scores[3] == scores[4] == scores.min() < scores[0]
    np.testing.assert_array_equal(agg.krum(X, 1), X[1])
    np.testing.assert_array_equal(agg.krum(X[::-1], 1), X[4])


def test_torch_in_torch_out(rng) -> None:
    torch = pytest.importorskip("torch")
    X = _data(rng, 7, 33, np.float32)
    T = torch.from_numpy(X.copy())
    for fn in (
        lambda a: agg.krum(a, 2),
        lambda a: agg.multi_krum(a, 2),
        lambda a: agg.geometric_median(a),
        lambda a: agg.centered_clipping(a, 1.0),
        lambda a: agg.nnm(a, 2),
        lambda a: agg.bucketing(a, 2, 0),
        lambda a: agg.clip(a, 1.0),
        lambda a: agg.arc(a, 2),
    ):
        out = fn(T)
        assert isinstance(out, torch.Tensor)
        assert out.dtype == torch.float32
        np.testing.assert_array_equal(out.numpy(), fn(X))


# --------------------------------------------------------------------------------------------
# hypothesis properties against the references
# --------------------------------------------------------------------------------------------

# Dyadic grid values: every distance is exact in double in both implementations, so ties are
# ties in both and selections must agree exactly.
_grid = st.integers(-64, 64).map(lambda v: v / 4)


@st.composite
def _matrices(draw: st.DrawFn, min_n: int = 1) -> np.ndarray:
    n = draw(st.integers(min_n, 9))
    D = draw(st.sampled_from([1, 2, 3, 7, 13]))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    return draw(hnp.arrays(dtype, (n, D), elements=_grid))


_threads = st.sampled_from([1, 2, None])


@given(X=_matrices(min_n=3), data=st.data(), threads=_threads)
def test_property_krum_family(X, data, threads) -> None:
    n = X.shape[0]
    f = data.draw(st.integers(0, n - 3))
    m = data.draw(st.integers(1, n))
    np.testing.assert_array_equal(agg.krum(X, f, threads=threads), ref.krum(X, f))
    np.testing.assert_allclose(
        agg.multi_krum(X, f, m, threads=threads), ref.multi_krum(X, f, m), **_tol(X.dtype.type)
    )
    d, _ = _core.pairwise_sq_distances(X)
    np.testing.assert_array_equal(d, ref.pairwise_sq_distances(X))


@given(X=_matrices(), data=st.data(), threads=_threads)
def test_property_pre_aggregations(X, data, threads) -> None:
    n = X.shape[0]
    f = data.draw(st.integers(0, n - 1))
    np.testing.assert_allclose(agg.nnm(X, f, threads=threads), ref.nnm(X, f), **_tol(X.dtype.type))
    s = data.draw(st.integers(1, n + 1))
    seed = data.draw(st.integers(0, 2**64 - 1))
    np.testing.assert_allclose(
        agg.bucketing(X, s, seed, threads=threads),
        ref.bucketing(X, s, agg.bucket_permutation(n, seed)),
        **_tol(X.dtype.type),
    )
    tau = data.draw(st.floats(0.01, 100.0))
    np.testing.assert_allclose(
        agg.clip(X, tau, threads=threads), ref.clip(X, tau), **_tol(X.dtype.type)
    )
    fa = data.draw(st.integers(0, (n - 1) // 2))
    np.testing.assert_allclose(
        agg.arc(X, fa, threads=threads), ref.arc(X, fa), **_tol(X.dtype.type)
    )


@given(X=_matrices(), tau=st.floats(0.05, 50.0), iters=st.integers(1, 4), threads=_threads)
def test_property_centered_clipping(X, tau, iters, threads) -> None:
    out = agg.centered_clipping(X, tau, iters, threads=threads)
    np.testing.assert_allclose(out, ref.centered_clipping(X, tau, iters), rtol=1e-5, atol=1e-5)
    # Convex combination of the start (0) and the rows: inside their bounding box.
    lo = np.minimum(X.min(axis=0), 0) - 1e-5
    hi = np.maximum(X.max(axis=0), 0) + 1e-5
    assert ((out >= lo) & (out <= hi)).all()


@given(X=_matrices(), threads=_threads)
def test_property_geometric_median_in_hull_box(X, threads) -> None:
    z = agg.geometric_median(X, threads=threads).astype(np.float64)
    assert np.isfinite(z).all()
    span = np.abs(X).max() + 1
    assert (z >= X.min(axis=0) - 1e-5 * span).all()
    assert (z <= X.max(axis=0) + 1e-5 * span).all()


# --------------------------------------------------------------------------------------------
# symmetries, determinism, no mutation
# --------------------------------------------------------------------------------------------


def _all_rules(f: int):
    return {
        "krum": lambda a, **k: agg.krum(a, f, **k),
        "multi_krum": lambda a, **k: agg.multi_krum(a, f, **k),
        "geometric_median": lambda a, **k: agg.geometric_median(a, **k),
        "centered_clipping": lambda a, **k: agg.centered_clipping(a, 2.0, 3, **k),
        "nnm": lambda a, **k: agg.nnm(a, f, **k),
        "bucketing": lambda a, **k: agg.bucketing(a, 2, 5, **k),
        "clip": lambda a, **k: agg.clip(a, 2.0, **k),
        "arc": lambda a, **k: agg.arc(a, f, **k),
    }


def test_permutation_invariance(rng, dtype) -> None:
    X = _data(rng, 9, 257, dtype)
    perm = rng.permutation(9)
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == np.float32 else {"rtol": 1e-9, "atol": 1e-9}
    np.testing.assert_array_equal(agg.krum(X[perm], 2), agg.krum(X, 2))
    np.testing.assert_allclose(agg.multi_krum(X[perm], 2), agg.multi_krum(X, 2), **tol)
    np.testing.assert_allclose(
        agg.geometric_median(X[perm], tol=1e-10, max_iter=1000),
        agg.geometric_median(X, tol=1e-10, max_iter=1000),
        **tol,
    )
    np.testing.assert_allclose(
        agg.centered_clipping(X[perm], 1.0, 3), agg.centered_clipping(X, 1.0, 3), **tol
    )
    # Row-wise pre-aggregations: output rows permute with the input rows.
    np.testing.assert_allclose(agg.nnm(X[perm], 3), agg.nnm(X, 3)[perm], **tol)
    np.testing.assert_array_equal(agg.clip(X[perm], 1.0), agg.clip(X, 1.0)[perm])
    np.testing.assert_array_equal(agg.arc(X[perm], 3), agg.arc(X, 3)[perm])


def test_translation_equivariance(rng) -> None:
    X = _data(rng, 9, 129, np.float64)
    t = rng.standard_normal(129) * 5
    tol = {"rtol": 1e-9, "atol": 1e-9}
    np.testing.assert_allclose(agg.krum(X + t, 2), agg.krum(X, 2) + t, **tol)
    np.testing.assert_allclose(agg.multi_krum(X + t, 2), agg.multi_krum(X, 2) + t, **tol)
    np.testing.assert_allclose(agg.nnm(X + t, 2), agg.nnm(X, 2) + t, **tol)
    np.testing.assert_allclose(agg.bucketing(X + t, 2, 1), agg.bucketing(X, 2, 1) + t, **tol)
    np.testing.assert_allclose(
        agg.geometric_median(X + t, tol=1e-12, max_iter=2000),
        agg.geometric_median(X, tol=1e-12, max_iter=2000) + t,
        rtol=1e-7,
        atol=1e-7,
    )
    c = rng.standard_normal(129)
    np.testing.assert_allclose(
        agg.centered_clipping(X + t, 1.5, 3, center=c + t),
        agg.centered_clipping(X, 1.5, 3, center=c) + t,
        **tol,
    )


def test_bit_identical_across_threads(rng, dtype) -> None:
    X = _data(rng, 7, 100_003, dtype)
    X[3, 5000] = np.nan
    for name, fn in _all_rules(2).items():
        a = fn(X, threads=1)
        for t in (2, 3, None):
            np.testing.assert_array_equal(fn(X, threads=t), a, err_msg=name)
    d1, _ = _core.pairwise_sq_distances(X, threads=1)
    for t in (2, 3, 0):
        np.testing.assert_array_equal(_core.pairwise_sq_distances(X, threads=t)[0], d1)


def test_inputs_are_not_modified(rng) -> None:
    X = _data(rng, 8, 50, np.float32)
    X[2, 0] = np.inf
    before = X.copy()
    center = rng.standard_normal(50)
    c_before = center.copy()
    for fn in _all_rules(2).values():
        fn(X)
    agg.centered_clipping(X, 1.0, 2, center=center)
    np.testing.assert_array_equal(X, before)
    np.testing.assert_array_equal(center, c_before)


def test_strided_and_fortran_inputs(rng) -> None:
    X = _data(rng, 8, 40, np.float64)
    F = np.asfortranarray(X)
    S = np.repeat(X, 2, axis=1)[:, ::2]
    for A in (F, S):
        np.testing.assert_array_equal(agg.krum(A, 2), agg.krum(X, 2))
        np.testing.assert_array_equal(agg.nnm(A, 2), agg.nnm(X, 2))
        np.testing.assert_array_equal(agg.geometric_median(A), agg.geometric_median(X))


# --------------------------------------------------------------------------------------------
# poisoned rows and extreme values
# --------------------------------------------------------------------------------------------

POISON = ["nan", "inf", "-inf", "big", "-big", "mixed"]


def _poison(X: np.ndarray, rows: np.ndarray, kind: str, rng: np.random.Generator) -> None:
    D = X.shape[1]
    for r in rows:
        cols = rng.choice(D, size=int(rng.integers(1, D + 1)), replace=False)
        value = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf, "big": 3e38, "-big": -3e38}
        if kind == "mixed":
            X[r, cols] = rng.choice([np.nan, np.inf, -np.inf, 3e38, -3e38], size=len(cols))
        else:
            X[r, cols] = value[kind]


def _poisoned(rng, dtype, n: int, f: int, D: int, kind: str):
    X = rng.standard_normal((n, D)).astype(dtype)
    bad = rng.choice(n, size=f, replace=False)
    _poison(X, bad, kind, rng)
    honest = np.setdiff1d(np.arange(n), bad)
    return X, X[honest].astype(np.float64), bad


def _in_box(out, H, slack=0.0) -> bool:
    out = np.asarray(out, dtype=np.float64)
    lo, hi = H.min(axis=0), H.max(axis=0)
    return bool(np.isfinite(out).all() and (out >= lo - slack).all() and (out <= hi + slack).all())


@pytest.mark.parametrize("kind", POISON)
@pytest.mark.parametrize(("n", "f"), [(5, 1), (9, 3), (12, 4)])
def test_poisoned_rows_robust_rules(rng, dtype, kind, n, f) -> None:
    D = 23
    X, H, _ = _poisoned(rng, dtype, n, f, D, kind)
    eps = 1e-5 if dtype == np.float32 else 1e-10
    assert _in_box(agg.krum(X, f), H)
    assert _in_box(agg.multi_krum(X, f), H, eps)
    assert _in_box(agg.multi_krum(X, f, 1), H)
    z = agg.geometric_median(X).astype(np.float64)
    assert np.isfinite(z).all()
    if kind in ("nan", "inf", "-inf"):
        # Non-finite rows get weight 0: z is the geometric median of the honest rows.
        assert _in_box(z, H, eps)
        np.testing.assert_allclose(z, ref.geometric_median(H), rtol=0, atol=1e-3)
    else:
        # Finite outliers pull by at most f / (n - f) times the largest honest distance.
        reach = np.linalg.norm(H - z, axis=1).max() * f / (n - f)
        assert _in_box(z, H, reach + eps)
    tau = 1.0
    c = agg.centered_clipping(X, tau, 3).astype(np.float64)
    box = np.vstack([H, np.zeros((1, D))])
    slack = 0.0 if kind in ("nan", "inf", "-inf") else 3 * f * tau / n
    assert _in_box(c, box, slack + eps)


@pytest.mark.parametrize("kind", POISON)
def test_poisoned_rows_pre_aggregations(rng, dtype, kind) -> None:
    n, f, D = 13, 3, 17
    X, H, bad = _poisoned(rng, dtype, n, f, D, kind)
    eps = 1e-5 if dtype == np.float32 else 1e-10
    honest = np.setdiff1d(np.arange(n), bad)
    # NNM: every honest row's output is finite (and, outliers being far, within the box).
    Y = agg.nnm(X, f)
    assert np.isfinite(Y[honest]).all()
    assert _in_box(Y[honest], H, eps)
    assert _in_box(agg.get("nnm+krum", f=f)(X), H, eps)
    assert _in_box(agg.get("nnm+multi_krum", f=f)(X), H, eps)
    assert _in_box(agg.get("nnm+geometric_median", f=f)(X), H, 1.0)
    # Bucketing with s=2 leaves n'=7 buckets, at most f=3 of them poisoned... krum needs
    # n' >= 2f + 3 for finite outliers, so use f=1 poisoned row here.
    X1, _, _ = _poisoned(rng, dtype, n, 1, D, kind)
    out = agg.get("bucketing+krum", s=2, f=1, seed=3)(X1)
    B = agg.bucketing(X1, 2, 3).astype(np.float64)
    assert _in_box(out, B[np.isfinite(B).all(axis=1) & (np.abs(B) < 1e30).all(axis=1)])
    # clip with tau well above the honest norms: outliers become far, honest rows unchanged.
    tau = 10 * np.linalg.norm(H, axis=1).max()
    Xc = agg.clip(X, tau)
    np.testing.assert_array_equal(Xc[honest], X[honest])
    assert _in_box(agg.get("clip+krum", tau=tau, f=f)(X), H, eps)
    assert _in_box(agg.get("clip+multi_krum", tau=tau, f=f)(X), H, eps)
    # ARC clips the k >= f largest rows to an honest norm: every output is finite and no
    # longer than the longest honest row.
    Xa = agg.arc(X, f)
    finite = np.isfinite(Xa).all(axis=1)
    hmax = np.linalg.norm(H, axis=1).max() * (1 + 1e-6)
    assert (np.linalg.norm(Xa[finite].astype(np.float64), axis=1) <= hmax).all()
    for rule in ("krum", "multi_krum", "geometric_median"):
        out = agg.get(f"arc+{rule}", f=f)(X).astype(np.float64)
        assert np.isfinite(out).all()
        assert np.linalg.norm(out) <= hmax
        if kind in ("nan", "inf", "-inf"):
            assert _in_box(out, H, 1.0 if rule == "geometric_median" else eps)


def test_float32_near_max_gives_finite_correct_distances(rng) -> None:
    # Honest rows with entries ~1e38: squares overflow float32 but not double.
    n, D = 7, 64
    X = (1e38 * (1 + 0.5 * rng.standard_normal((n, D)))).astype(np.float32)
    X = np.clip(X, -3.3e38, 3.3e38).astype(np.float32)
    d, bad = _core.pairwise_sq_distances(X)
    assert not bad.any()
    assert np.isfinite(d).all()
    np.testing.assert_allclose(d, ref.pairwise_sq_distances(X), rtol=1e-12)
    # Differences of opposite-sign values near the float32 maximum.
    Y = np.array([[3e38, -3e38], [-3e38, 3e38], [3e38, 3e38]], dtype=np.float32)
    dY, _ = _core.pairwise_sq_distances(Y)
    assert dY[0, 1] == pytest.approx(2 * (6e38) ** 2, rel=1e-6)
    np.testing.assert_array_equal(agg.krum(X, 2), ref.krum(X, 2))
    for out in (
        agg.multi_krum(X, 2),
        agg.geometric_median(X),
        agg.nnm(X, 2),
        agg.bucketing(X, 3, 0),
        agg.clip(X, 1e39),
        agg.arc(X, 2),
    ):
        assert np.isfinite(out).all()
    np.testing.assert_allclose(agg.multi_krum(X, 2), ref.multi_krum(X, 2), rtol=1e-6)
    np.testing.assert_allclose(agg.nnm(X, 2), ref.nnm(X, 2), rtol=1e-6)
    np.testing.assert_allclose(agg.geometric_median(X), ref.geometric_median(X), rtol=1e-4)
    np.testing.assert_allclose(agg.clip(X, 1e39), ref.clip(X, 1e39), rtol=1e-6)


def test_all_rows_non_finite() -> None:
    X = np.full((4, 3), np.nan)
    assert np.isnan(agg.geometric_median(X)).all()
    assert np.isnan(agg.krum(X, 1)).all()  # every score is +inf: the lowest index is returned
    np.testing.assert_array_equal(np.isnan(agg.clip(X, 1.0)), np.ones((4, 3), bool))


# --------------------------------------------------------------------------------------------
# differential tests against ByzFL 0.0.11
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", range(10))
def test_matches_byzfl(case) -> None:
    data = np.load(BYZFL)
    assert int(data["n_cases"]) == 10
    X, f, tau = data[f"c{case}_X"], int(data[f"c{case}_f"]), float(data[f"c{case}_tau"])
    np.testing.assert_allclose(agg.nnm(X, f), data[f"c{case}_nnm"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(agg.clip(X, tau), data[f"c{case}_clip"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        agg.centered_clipping(X, tau, iters=1, center=np.zeros(X.shape[1])),
        data[f"c{case}_centered_clipping_zero_1"],
        rtol=1e-12,
        atol=1e-12,
    )
    np.testing.assert_array_equal(
        agg.centered_clipping(X, tau), agg.centered_clipping(X, tau, center=np.zeros(X.shape[1]))
    )


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------


def test_errors_name_the_argument_and_range() -> None:
    X = np.ones((5, 3))
    cases = [
        (lambda: agg.krum(X, 3), r"f \(for krum with n=5 rows\) must be in \[0, 2\], got 3"),
        (lambda: agg.krum(X, -1), r"f .* must be in \[0, 2\]"),
        (lambda: agg.krum(np.ones((2, 3)), 0), r"krum needs X with at least 3 rows"),
        (lambda: agg.multi_krum(X, 3), r"f .* must be in \[0, 2\]"),
        (lambda: agg.multi_krum(X, 1, 0), r"m .* must be in \[1, 5\], got 0"),
        (lambda: agg.multi_krum(X, 1, 6), r"m .* must be in \[1, 5\], got 6"),
        (lambda: agg.nnm(X, 5), r"f \(for nnm with n=5 rows\) must be in \[0, 4\]"),
        (lambda: agg.arc(X, 3), r"f \(for arc with n=5 rows\) must be in \[0, 2\]"),
        (lambda: agg.bucketing(X, 0, 1), r"s must be in \[1, inf\], got 0"),
        (lambda: agg.bucketing(X, 2, -1), r"seed must be in \[0, 18446744073709551615\]"),
        (lambda: agg.clip(X, 0.0), r"tau must be > 0"),
        (lambda: agg.clip(X, -1.0), r"tau must be > 0"),
        (lambda: agg.clip(X, np.inf), r"tau must be finite"),
        (lambda: agg.clip(X, np.nan), r"tau must be finite"),
        (lambda: agg.centered_clipping(X, 0.0), r"tau must be > 0"),
        (
            lambda: agg.centered_clipping(X, 1.0, 0),
            r"iters must be in \[1, 9223372036854775807\], got 0",
        ),
        (lambda: agg.centered_clipping(X, 1.0, 1, np.zeros(4)), r"center must have shape"),
        (lambda: agg.centered_clipping(X, 1.0, 1, np.zeros((1, 3))), r"center must be 1-D"),
        (lambda: agg.centered_clipping(X, 1.0, 1, [np.nan, 0, 0]), r"center must be finite"),
        (lambda: agg.geometric_median(X, eps=0.0), r"eps must be > 0"),
        (lambda: agg.geometric_median(X, max_iter=0), r"max_iter must be in \[1, inf\]"),
        (lambda: agg.geometric_median(X, tol=-1.0), r"tol must be >= 0"),
        (lambda: agg.krum(np.ones(5), 0), r"X must be 2-D"),
        (lambda: agg.nnm(np.ones((0, 3)), 0), r"X must not be empty"),
    ]
    for fn, pattern in cases:
        with pytest.raises(ValueError, match=pattern):
            fn()


def test_type_errors() -> None:
    X = np.ones((5, 3))
    with pytest.raises(TypeError, match=r"f \(for krum with n=5 rows\) must be an integer"):
        agg.krum(X, 1.5)
    with pytest.raises(TypeError, match="X must hold real numbers"):
        agg.nnm(X.astype(complex), 1)
    with pytest.raises(TypeError, match="s must be an integer"):
        agg.bucketing(X, True, 0)


def test_kernel_checks_are_a_last_line_of_defence() -> None:
    X = np.ones((5, 3))
    with pytest.raises(ValueError, match=r"krum needs 0 <= q <= n - 1 neighbours"):
        _core.krum(X, 5)  # _core.krum takes the neighbour count q, not f
    with pytest.raises(ValueError, match="perm must be a permutation"):
        _core.bucketing(X, np.array([0, 0, 1, 2, 3]), 2)
    with pytest.raises(ValueError, match="tau must be finite and > 0"):
        _core.clip(X, -1.0)
    with pytest.raises(ValueError, match="f must be >= 0"):
        _core.nnm(X, -1)
