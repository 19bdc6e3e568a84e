"""Huge finite values are as hostile as NaN: distance-based rules and the means must stay exact
when squared distances, norms or sums of finite rows would overflow double (DESIGN §4).

The kernels then take distances on the values times a power of two; these tests check the
results against scale equivariance (``rule(c X) == c rule(X)`` for a power of two ``c`` large
enough to overflow every squared distance), against long-double references, and against the
defects this guards (one 1e200 row turning the geometric median into NaN).
"""

from __future__ import annotations

import numpy as np
import pytest

import cyclad.aggregators as agg
from cyclad import _core, train

BIG = 2.0**600  # (2^600)^2 = 2^1200 overflows double
DMAX = np.finfo(np.float64).max


def _rows(rng: np.random.Generator, n: int, D: int) -> np.ndarray:
    return rng.standard_normal((n, D)) * rng.uniform(0.5, 3.0, size=(n, 1))


# --------------------------------------------------------------------------------------------
# the defects
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rows", [[[1e200], [0.0], [1.0]], [[0.0], [1.0], [1e200]]])
def test_geometric_median_one_huge_row(rows) -> None:
    # In one dimension the geometric median of three points is their median, 1.0, whatever
    # the order of the rows.
    out = agg.geometric_median(np.array(rows), max_iter=2000, tol=0.0)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, [1.0], rtol=1e-6)


def test_nnm_geometric_median_one_huge_row() -> None:
    out = agg.get("nnm+geometric_median", f=1)(np.array([[1e200], [0.0], [1.0]]))
    np.testing.assert_allclose(out, [0.5], rtol=1e-7)  # NNM gives {5e199, 0.5, 0.5}


def test_clip_keeps_a_huge_row_within_tau() -> None:
    np.testing.assert_array_equal(agg.clip(np.array([[1e300]]), tau=1e300), [[1e300]])
    out = agg.clip(np.array([[1e300, -1e300], [1.0, 0.0]]), tau=2.0)
    np.testing.assert_allclose(out[0], [np.sqrt(2.0), -np.sqrt(2.0)], rtol=1e-15)
    np.testing.assert_array_equal(out[1], [1.0, 0.0])
    out = agg.clip(np.array([[DMAX, DMAX]]), tau=1e300)  # the norm itself exceeds DBL_MAX
    np.testing.assert_allclose(out, [[1e300 / np.sqrt(2.0)] * 2], rtol=1e-15)


def test_arc_clips_huge_rows_to_the_threshold() -> None:
    X = np.array([[1e300, 1e300], [3.0, 4.0], [0.0, 1.0], [1.0, 0.0], [0.5, 0.5]])
    out = agg.arc(X, f=1)  # k = floor(2 * 1 * 4 / 5) = 1 row clipped, to the 2nd norm (5)
    np.testing.assert_allclose(out[0], [5.0 / np.sqrt(2.0)] * 2, rtol=1e-15)
    np.testing.assert_array_equal(out[1:], X[1:])


def test_float32_mean_does_not_overflow(threads) -> None:
    X = np.array([[3e38, -3e38], [3e38, -3e38], [3e38, -3e38]], dtype=np.float32)
    out = agg.mean(X, threads=threads)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, X[0])


def test_float64_mean_of_rows_near_the_maximum(threads) -> None:
    X = np.array([[DMAX, 1.0], [DMAX, 2.0], [-DMAX, 3.0], [-DMAX, 5.0], [DMAX, 4.0]])
    out = agg.mean(X, threads=threads)
    np.testing.assert_allclose(out, [DMAX / 5, 3.0], rtol=1e-15)
    # Infinite and NaN inputs keep their plain-mean semantics.
    X = np.array([[np.inf, np.nan, np.inf], [1.0, 1.0, -np.inf]])
    out = agg.mean(X, threads=threads)
    assert out[0] == np.inf
    assert np.isnan(out[1:]).all()


def test_set_means_of_rows_near_the_maximum() -> None:
    X = np.array([[DMAX], [DMAX], [1.0], [2.0], [3.0]])
    np.testing.assert_array_equal(agg.multi_krum(X, f=0, m=2), [1.5])
    out = agg.nnm(np.array([[DMAX], [DMAX], [np.nan], [2.0], [3.0]]), f=1)
    np.testing.assert_allclose(out[[0, 1, 3, 4], 0], DMAX / 2 + 5 / 4, rtol=1e-15)
    assert np.isnan(out[2, 0])
    # A bucket whose double sum overflows on the way (+M + M - M - M) still has mean 0.
    Y = np.array([[DMAX], [DMAX], [-DMAX], [-DMAX]])
    np.testing.assert_array_equal(agg.bucketing(Y, s=4, seed=0), [[0.0]])


# --------------------------------------------------------------------------------------------
# scale equivariance across the overflow threshold
# --------------------------------------------------------------------------------------------


RULES = {
    "krum": lambda X, c, t: agg.krum(X, 2, threads=t),
    "multi_krum": lambda X, c, t: agg.multi_krum(X, 2, threads=t),
    "nnm": lambda X, c, t: agg.nnm(X, 2, threads=t),
    "geometric_median": lambda X, c, t: agg.geometric_median(X, max_iter=50, tol=0.0, threads=t),
    "centered_clipping": lambda X, c, t: agg.centered_clipping(X, 1.5 * c, iters=3, threads=t),
    "clip": lambda X, c, t: agg.clip(X, 2.0 * c, threads=t),
    "arc": lambda X, c, t: agg.arc(X, 2, threads=t),
}


@pytest.mark.parametrize("name", sorted(RULES))
@pytest.mark.parametrize("D", [1, 33, 20011])
def test_rules_are_scale_equivariant_past_overflow(rng, name, D) -> None:
    X = _rows(rng, 9, D)
    small = RULES[name](X, 1.0, None)
    big = RULES[name](X * BIG, BIG, None)
    assert np.isfinite(big).all()
    rtol = 1e-9 if name == "geometric_median" else 1e-14
    np.testing.assert_allclose(big, small * BIG, rtol=rtol, atol=0)


@pytest.mark.parametrize("name", sorted(RULES))
def test_scaled_path_is_bit_identical_across_threads(rng, name) -> None:
    X = _rows(rng, 7, 3 * 8192 + 5) * BIG
    ref = RULES[name](X, BIG, 1)
    for t in (2, 3, None):
        np.testing.assert_array_equal(RULES[name](X, BIG, t), ref)


def test_pairwise_distances_past_overflow() -> None:
    X = np.array([[1e153, 1e153, 1e153, 1e153], [0.0] * 4, [1e200, 0, 0, 0], [np.nan, 0, 0, 0]])
    d, bad = _core.pairwise_sq_distances(X)
    assert bad.tolist() == [False, False, False, True]
    np.testing.assert_allclose(d[0, 1], 4e306, rtol=1e-15)  # finite: exact on the scaled path
    assert d[0, 2] == np.inf  # the true value, 1e400, exceeds the double maximum
    assert d[1, 2] == np.inf
    assert (d[3, :3] == np.inf).all()
    np.testing.assert_array_equal(np.diag(d), 0.0)


# --------------------------------------------------------------------------------------------
# huge Byzantine rows among honest ones
# --------------------------------------------------------------------------------------------


def _weiszfeld_residual(H: np.ndarray, z: np.ndarray) -> float:
    """|sum_i (z - x_i) / |z - x_i|| / n in long double: 0 at the geometric median."""
    Hl = H.astype(np.longdouble)
    diff = z.astype(np.longdouble) - Hl
    norms = np.sqrt((diff * diff).sum(axis=1))
    g = (diff / norms[:, None]).sum(axis=0)
    return float(np.sqrt((g * g).sum())) / len(H)


@pytest.mark.parametrize("value", [1e200, -1e300, 1e154, DMAX])
def test_geometric_median_with_a_huge_row_is_the_true_one(rng, value) -> None:
    X = _rows(rng, 7, 5)
    X[3] = value
    X[3, ::2] = -value
    z = agg.geometric_median(X, max_iter=5000, tol=0.0, eps=1e-12)
    assert np.isfinite(z).all()
    # The huge row pulls with a unit force, like every other row: z is stationary for all 7.
    assert _weiszfeld_residual(X, z) < 1e-6


def test_krum_and_nnm_ignore_huge_rows(rng) -> None:
    H = _rows(rng, 6, 11)
    X = np.vstack([H, np.full((2, 11), 1e300), -np.full((1, 11), 1e250)])
    k = agg.krum(X, 3)
    assert any(np.array_equal(k, h) for h in H)
    # Each honest output row is the mean of the honest rows only (its 6 nearest).
    out = agg.nnm(X, 3)
    np.testing.assert_allclose(
        out[:6], np.repeat(H.mean(axis=0, keepdims=True), 6, axis=0), rtol=1e-12
    )


def test_training_survives_gaussian_noise_of_1e200() -> None:
    cfg = train.Config(
        dataset="digits",
        model="softmax",
        n_devices=7,
        n_byzantine=1,
        d=1,
        assignment="fixed",
        partition="iid",
        aggregator="geometric_median",
        attack="gaussian",
        attack_params={"sigma": 1e200},
        rounds=3,
        lr=0.5,
        seed=0,
        dtype="float64",
    )
    hist = train.run(cfg)
    assert np.isfinite(hist.loss).all()
    assert hist.final_accuracy > 0.5


@pytest.mark.parametrize("eps", [1e-300, 1e-8, 1.0, 1e300])
def test_geometric_median_any_eps_on_the_scaled_path(eps) -> None:
    # A tiny eps on the scaled path must not underflow to 0 (weights 1/0 gave NaN).
    X = np.array([[-1.26542147e302], [-6.23274463e301]])
    out = agg.geometric_median(X, eps=eps, max_iter=5)
    assert np.isfinite(out).all()
    assert X.min() <= out[0] <= X.max()
    Y = np.array([[1e-300], [0.0], [3e-300]])  # tiny rows, eps far above their distances
    np.testing.assert_allclose(agg.geometric_median(Y, eps=1.0), [Y.mean()], rtol=1e-12)
