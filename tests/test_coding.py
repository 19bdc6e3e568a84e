from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import cyclad.aggregators as agg
from cyclad import _core, coding
from tests import _reference as ref
from tests._arrays import assert_out_checked

MODES = ["permute", "shift", "fixed"]
EPS = {
    np.dtype(np.float32): float(np.finfo(np.float32).eps),
    np.dtype(np.float64): float(np.finfo(np.float64).eps),
}


def assert_encode_close(out: np.ndarray, G: np.ndarray, a: np.ndarray, w=None) -> None:
    """Compare with the float64 loop reference; the bound is the rounding error of a d-term
    weighted sum (weights rounded to G's dtype, products and sums rounded)."""
    d = a.shape[1]
    expect = ref.encode(G.astype(np.float64), a, w)
    wa = None if w is None else np.abs(np.asarray(w, dtype=np.float64))
    scale = ref.encode(np.abs(G.astype(np.float64)), a, wa)
    tiny = float(np.finfo(G.dtype).smallest_subnormal)  # products may underflow
    bound = (d + 3) * (EPS[np.dtype(G.dtype)] * scale + tiny)
    assert out.dtype == G.dtype
    assert out.shape == (a.shape[0], G.shape[1])
    err = np.abs(out.astype(np.float64) - expect)
    assert np.all(err <= bound), float(np.max(err - bound))


# --------------------------------------------------------------------------------------------
# assignment
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("n", "d"), [(1, 1), (2, 1), (2, 2), (5, 3), (7, 7), (20, 4)])
def test_assignment_shape_counts_windows(mode, n, d) -> None:
    code = coding.CyclicCode(n, d, mode=mode, seed=3)
    for t in (0, 1, 2, 17, 2**40):
        a = code.assignment(t)
        assert a.shape == (n, d)
        assert a.dtype == np.int64
        np.testing.assert_array_equal(np.bincount(a.ravel(), minlength=n), np.full(n, d))
        np.testing.assert_array_equal(code.counts(t), np.full(n, d))
        pi = code.permutation(t)
        np.testing.assert_array_equal(np.sort(pi), np.arange(n))
        np.testing.assert_array_equal(a, ref.cyclic_assignment(pi, d))
        # distinct subsets within a window
        assert all(len(set(row)) == d for row in a.tolist())


def test_shift_and_fixed_exact_form() -> None:
    n, d = 6, 3
    shift = coding.CyclicCode(n, d, mode="shift")
    fixed = coding.CyclicCode(n, d, mode="fixed")
    for t in (0, 1, 5, 6, 13):
        expect_shift = np.array([[(i + t + k) % n for k in range(d)] for i in range(n)])
        np.testing.assert_array_equal(shift.assignment(t), expect_shift)
        expect_fixed = np.array([[(i + k) % n for k in range(d)] for i in range(n)])
        np.testing.assert_array_equal(fixed.assignment(t), expect_fixed)


def test_permute_is_pure_function_of_seed_and_t() -> None:
    a = coding.CyclicCode(10, 3, seed=42)
    b = coding.CyclicCode(10, 3, seed=42)
    # same (seed, t) -> same, in any order of calls and from independent objects
    for t in (5, 0, 5, 3, 0):
        np.testing.assert_array_equal(a.assignment(t), b.assignment(t))
    perms = {tuple(a.permutation(t)) for t in range(30)}
    assert len(perms) == 30  # 10! permutations: collisions among 30 draws are very unlikely
    other = coding.CyclicCode(10, 3, seed=43)
    assert any(not np.array_equal(a.assignment(t), other.assignment(t)) for t in range(3))
    assert a == b
    assert a != other
    assert hash(a) == hash(b)


def test_permutation_documented_construction_is_pinned() -> None:
    # The construction must not depend on NumPy's Generator methods (server and devices may
    # run different NumPy versions): argsort of raw Philox-4x64 words with key (seed, t).
    assert coding.permutation(8, 0, 0).tolist() == [0, 2, 1, 5, 4, 3, 6, 7]
    assert coding.permutation(8, 0, 1).tolist() == [5, 3, 7, 2, 4, 1, 0, 6]
    assert coding.permutation(8, 12345, 7).tolist() == [0, 1, 4, 3, 2, 5, 7, 6]
    words = np.random.Philox(key=np.array([9, 4], dtype=np.uint64)).random_raw(11)
    np.testing.assert_array_equal(coding.permutation(11, 9, 4), np.argsort(words, kind="stable"))
    np.testing.assert_array_equal(
        coding.CyclicCode(11, 2, seed=9).permutation(4), coding.permutation(11, 9, 4)
    )


def test_permute_is_uniform() -> None:
    # Chi-square over all 4! permutations: 23 degrees of freedom (mean 23, sd ~6.8).
    T = 2400
    counts: dict[tuple[int, ...], int] = {}
    for t in range(T):
        key = tuple(coding.permutation(4, 7, t).tolist())
        counts[key] = counts.get(key, 0) + 1
    assert len(counts) == 24
    expected = T / 24
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    assert chi2 < 23 + 6 * math.sqrt(2 * 23)


def test_cyclic_code_misc() -> None:
    code = coding.CyclicCode(5, 2, mode="shift", seed=1)
    assert repr(code) == "CyclicCode(n=5, d=2, mode='shift', seed=1)"
    assert code.N == 5
    assert coding.CyclicCode(5, 1).variance_factor() == 1.0
    assert coding.CyclicCode(5, 5).variance_factor() == 0.0
    assert coding.CyclicCode(1, 1).variance_factor() == 0.0
    assert coding.CyclicCode(5, 3).variance_factor() == pytest.approx(2 / 12)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"n": 0, "d": 1}, ValueError, "n must be in"),
        ({"n": 3, "d": 0}, ValueError, r"d must be in \[1, 3\]"),
        ({"n": 3, "d": 4}, ValueError, r"d must be in \[1, 3\]"),
        ({"n": 3, "d": 2, "mode": "random"}, ValueError, "mode must be one of"),
        ({"n": 3, "d": 2, "seed": -1}, ValueError, "seed must be in"),
        ({"n": 3, "d": 2, "seed": 2**64}, ValueError, "seed must be in"),
        ({"n": 3, "d": 2, "seed": 1.5}, TypeError, "seed must be an integer"),
        ({"n": 3.0, "d": 2}, TypeError, "n must be an integer"),
        ({"n": 3, "d": True}, TypeError, "d must be an integer"),
    ],
)
def test_cyclic_code_errors(kwargs, exc, match) -> None:
    with pytest.raises(exc, match=match):
        coding.CyclicCode(**kwargs)


@pytest.mark.parametrize(
    ("t", "exc"), [(-1, ValueError), (2**64, ValueError), (1.0, TypeError), (None, TypeError)]
)
def test_assignment_bad_round(t, exc) -> None:
    with pytest.raises(exc, match="t must"):
        coding.CyclicCode(4, 2).assignment(t)


# --------------------------------------------------------------------------------------------
# encode
# --------------------------------------------------------------------------------------------


@st.composite
def encode_problems(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    N = draw(st.integers(1, 7))
    n = draw(st.integers(1, 7))
    d = draw(st.integers(1, 8))
    D = draw(st.sampled_from([1, 2, 7, 13, 97, 300]))
    G = draw(hnp.arrays(dtype, (N, D), elements=st.floats(-100, 100, width=32)))
    a = draw(hnp.arrays(np.int64, (n, d), elements=st.integers(0, N - 1)))
    kind = draw(st.sampled_from(["none", "row", "full"]))
    wel = st.floats(-3, 3, width=32)
    w = (
        None
        if kind == "none"
        else draw(hnp.arrays(np.float64, (d,) if kind == "row" else (n, d), elements=wel))
    )
    threads = draw(st.sampled_from([1, 2, None]))
    return G, a, w, threads


@given(encode_problems())
def test_encode_matches_reference_property(problem) -> None:
    G, a, w, threads = problem
    out = coding.encode(G, a, w, threads=threads)
    assert_encode_close(out, G, a, w)


@pytest.mark.parametrize(
    ("N", "D", "d"),
    [(1, 1, 1), (1, 7, 1), (5, 1, 5), (4, 97, 2), (6, 10007, 3), (20, 20011, 4), (3, 5, 3)],
)
def test_encode_awkward_shapes(rng, dtype, threads, N, D, d) -> None:
    G = rng.standard_normal((N, D)).astype(dtype)
    code = coding.CyclicCode(N, d, seed=5)
    a = code.assignment(2)
    out = coding.encode(G, a, threads=threads)
    assert_encode_close(out, G, a)
    w = rng.uniform(-2, 2, size=(N, d))
    assert_encode_close(coding.encode(G, a, w, threads=threads), G, a, w)
    w1 = rng.uniform(-2, 2, size=d)
    assert_encode_close(coding.encode(G, a, w1, threads=threads), G, a, w1)
    np.testing.assert_array_equal(code.encode(G, 2, threads=threads), out)


def test_encode_general_assignment(rng, dtype) -> None:
    # n != N, repeated indices inside a row, d > N: all allowed.
    G = rng.standard_normal((3, 50)).astype(dtype)
    a = np.array([[0, 0, 2, 1, 2], [2, 2, 2, 2, 2]], dtype=np.int32)
    out = coding.encode(G, a)
    assert_encode_close(out, G, a.astype(np.int64))
    w = np.array([1, -2, 3, 0, 5])  # integer weights are cast to G's dtype
    assert_encode_close(coding.encode(G, a, w), G, a.astype(np.int64), w)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_encode_bit_identical_across_threads(rng, dt) -> None:
    # 20 x 210_011 float32 is > 16 MiB of output: exercises the streaming-store path too.
    for D in (100_003, 210_011):
        G = rng.standard_normal((20, D)).astype(dt)
        a = coding.CyclicCode(20, 7, seed=1).assignment(3)
        w = rng.uniform(-1, 1, size=(20, 7))
        base = coding.encode(G, a, w, threads=1)
        for t in (2, 3, None):
            np.testing.assert_array_equal(coding.encode(G, a, w, threads=t), base)
    assert_encode_close(base, G, a, w)


@pytest.mark.parametrize("D", [97, 210_011])
def test_encode_into_out(rng, dtype, threads, D) -> None:
    # n != N and a (20, 210_011) float32 output (> 16 MiB): the streaming-store path writes
    # into the caller's buffer too.
    G = rng.standard_normal((23, D)).astype(dtype)
    a = coding.CyclicCode(23, 4, seed=2).assignment(1)[:20]
    w = rng.uniform(-1, 1, size=(20, 4))
    out = np.full((20, D), np.nan, dtype=dtype)
    res = coding.encode(G, a, w, out=out, threads=threads)
    assert res is out
    np.testing.assert_array_equal(out, coding.encode(G, a, w, threads=threads))
    full = coding.CyclicCode(23, 4, seed=2)
    buf = np.empty((23, D), dtype=dtype)
    assert full.encode(G, 1, out=buf, threads=threads) is buf
    np.testing.assert_array_equal(buf, full.encode(G, 1, threads=threads))


def test_encode_out_is_checked(rng) -> None:
    G = rng.standard_normal((5, 8))
    a = coding.CyclicCode(5, 2).assignment(0)
    assert_out_checked(lambda out: coding.encode(G, a, out=out), G, (5, 8))
    with pytest.raises(coding.ArgumentTypeError, match="G a NumPy array"):
        coding.encode(G.tolist(), a, out=np.zeros((5, 8)))
    # The C++ layer checks too, for direct calls; nothing is written on a rejected call.
    w = np.full(2, 0.5)
    with pytest.raises(ValueError, match="share memory"):
        _core.encode(G, a, w, out=G)
    with pytest.raises(ValueError, match="shape"):
        _core.encode(G, a, w, out=np.zeros((4, 8)))
    keep = np.full((5, 8), 7.0)
    with pytest.raises(ValueError, match=r"\[0, N\)"):
        _core.encode(G, np.array([[0, 9]] * 5, dtype=np.int64), w, out=keep)
    assert np.all(keep == 7.0)


def test_encode_does_not_modify_inputs(rng) -> None:
    G = rng.standard_normal((6, 1000))
    a = coding.CyclicCode(6, 3).assignment(0)
    w = rng.uniform(size=(6, 3))
    G0, a0, w0 = G.copy(), a.copy(), w.copy()
    coding.encode(G, a, w)
    np.testing.assert_array_equal(G, G0)
    np.testing.assert_array_equal(a, a0)
    np.testing.assert_array_equal(w, w0)


def test_encode_non_contiguous_input(rng, dtype) -> None:
    big = rng.standard_normal((8, 40)).astype(dtype)
    G = big[::2, ::3]
    a = coding.CyclicCode(4, 2, seed=0).assignment(1)
    assert_encode_close(coding.encode(G, a), np.ascontiguousarray(G), a)


def test_encode_non_finite_propagate(dtype) -> None:
    G = np.ones((5, 4), dtype=dtype)
    G[2, 1] = np.nan
    G[4, 3] = np.inf
    a = coding.CyclicCode(5, 2, mode="fixed").assignment(0)
    out = coding.encode(G, a)
    has_nan = np.array([2 in row for row in a.tolist()])
    has_inf = np.array([4 in row for row in a.tolist()])
    np.testing.assert_array_equal(np.isnan(out[:, 1]), has_nan)
    np.testing.assert_array_equal(np.isinf(out[:, 3]), has_inf)
    assert np.all(out[:, [0, 2]] == 1)


def test_encode_torch_in_torch_out() -> None:
    torch = pytest.importorskip("torch")
    G = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    a = torch.tensor([[0, 1], [1, 2], [2, 0]])
    out = coding.encode(G, a)
    assert isinstance(out, torch.Tensor)
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), ref.encode(G.numpy(), a.numpy()))


@pytest.mark.parametrize(
    ("G", "a", "w", "exc", "match"),
    [
        (np.ones((3, 4)), np.array([[0, 3]]), None, ValueError, r"\[0, N\) = \[0, 3\)"),
        (np.ones((3, 4)), np.array([[-1, 0]]), None, ValueError, r"\[0, N\) = \[0, 3\)"),
        (np.ones((3, 4)), np.array([[0.0, 1.0]]), None, TypeError, "assignment must hold int"),
        (np.ones((3, 4)), np.array([[True, False]]), None, TypeError, "assignment must hold"),
        (np.ones((3, 4)), np.array([0, 1]), None, ValueError, "assignment must be 2-D"),
        (np.ones((3, 4)), np.zeros((0, 2), dtype=int), None, ValueError, "must not be empty"),
        (np.ones(4), np.array([[0]]), None, ValueError, "G must be 2-D"),
        (np.ones((0, 4)), np.array([[0]]), None, ValueError, "G must not be empty"),
        (np.ones((3, 4), dtype=complex), np.array([[0]]), None, TypeError, "G must hold real"),
        (np.ones((3, 4)), np.array([[0, 1]]), np.ones(3), ValueError, "weights must have shape"),
        (np.ones((3, 4)), np.array([[0, 1]]), np.ones((2, 2)), ValueError, "weights must have"),
        (np.ones((3, 4)), np.array([[0, 1]]), [1.0, np.nan], ValueError, "weights must be finite"),
        (np.ones((3, 4)), np.array([[0, 1]]), [1.0, -np.inf], ValueError, "finite"),
        (np.ones((3, 4), np.float32), np.array([[0, 1]]), [1.0, 1e39], ValueError, "finite"),
        (np.ones((3, 4)), np.array([[0, 1]]), ["a", "b"], TypeError, "weights must hold real"),
    ],
)
def test_encode_errors(G, a, w, exc, match) -> None:
    with pytest.raises(exc, match=match):
        coding.encode(G, a, w)


def test_encode_kernel_checks_ranges_itself() -> None:
    # The C++ layer is the last line of defence: no out-of-bounds read even if Python is bypassed.
    G = np.ones((3, 4))
    w = np.full(2, 0.5)
    for bad in (3, -1, 2**40):
        with pytest.raises(ValueError, match=r"\[0, N\)"):
            _core.encode(G, np.array([[0, bad]], dtype=np.int64), w)
    with pytest.raises(ValueError, match="weights must be finite"):
        _core.encode(G, np.array([[0, 1]], dtype=np.int64), np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="weights must have shape"):
        _core.encode(G, np.array([[0, 1]], dtype=np.int64), np.ones(3))
    with pytest.raises(TypeError):  # int32 assignment is not silently converted
        _core.encode(G, np.array([[0, 1]], dtype=np.int32), w)
    with pytest.raises(TypeError):  # mixed dtypes are not silently converted
        _core.encode(G, np.array([[0, 1]], dtype=np.int64), w.astype(np.float32))


def test_code_encode_checks_rows() -> None:
    with pytest.raises(ValueError, match="G must have N = 4 rows"):
        coding.CyclicCode(4, 2).encode(np.ones((3, 5)), 0)
    with pytest.raises(ValueError, match="G must have N = 4 rows"):
        coding.GradientCode(4, 1).encode(np.ones((3, 5)))


# --------------------------------------------------------------------------------------------
# DESIGN §1 invariants
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("N", "d"), [(1, 1), (5, 1), (5, 2), (8, 3), (8, 8), (13, 6)])
def test_mean_of_coded_vectors_is_mean_gradient(rng, dtype, mode, N, d) -> None:
    G = rng.standard_normal((N, 257)).astype(dtype)
    code = coding.CyclicCode(N, d, mode=mode, seed=11)
    g = G.astype(np.float64).mean(axis=0)
    for t in range(4):
        Z = code.encode(G, t)
        zbar = Z.astype(np.float64).mean(axis=0)
        np.testing.assert_allclose(zbar, g, rtol=0, atol=(d + 3) * EPS[np.dtype(dtype)] * 4)


@pytest.mark.parametrize("N", [1, 2, 7, 16])
def test_full_redundancy_gives_mean_gradient_everywhere(rng, dtype, N) -> None:
    G = rng.standard_normal((N, 101)).astype(dtype)
    g = G.astype(np.float64).mean(axis=0)
    Z = coding.CyclicCode(N, N, seed=2).encode(G, 9)
    for z in Z:
        np.testing.assert_allclose(z, g, rtol=0, atol=(N + 3) * EPS[np.dtype(dtype)] * 4)


def test_d1_fixed_is_plain_distributed_gd(rng, dtype) -> None:
    G = rng.standard_normal((9, 33)).astype(dtype)
    G[3, 5] = np.nan
    G[7, 0] = -np.inf
    code = coding.CyclicCode(9, 1, mode="fixed")
    for t in (0, 4):
        np.testing.assert_array_equal(code.encode(G, t), G)


def _rule(name: str):
    fn = getattr(agg, name, None)
    if fn is None:
        pytest.skip(f"cyclad.aggregators.{name} is not available on this branch yet")
    return fn


@pytest.mark.parametrize("rule", ["median", "trimmed_mean", "krum", "geometric_median"])
@pytest.mark.parametrize(("n", "f"), [(7, 2), (10, 3), (9, 3)])
def test_robust_rules_return_g_at_full_redundancy(rng, rule, n, f) -> None:
    fn = _rule(rule)
    if rule == "krum" and n <= 2 * f + 2:
        pytest.skip("Krum needs n > 2f + 2")
    G = rng.standard_normal((n, 64))
    g = G.mean(axis=0)
    Z = coding.CyclicCode(n, n, seed=4).encode(G, 1)
    # f Byzantine devices: far away, non-finite, and one sitting close to the honest vectors
    Z[:f] = 1e3
    Z[0, :3] = np.nan
    if f >= 2:
        Z[1] = g + 1e-3
    kw = {"f": f} if rule in ("trimmed_mean", "krum") else {}
    out = np.asarray(fn(Z, **kw))
    np.testing.assert_allclose(out, g, rtol=0, atol=1e-6)


def test_variance_identity_exact_over_all_permutations(rng) -> None:
    # Averaging over every permutation is the exact expectation over uniform permutations.
    N, D = 5, 6
    G = rng.standard_normal((N, D))
    g = G.mean(axis=0)
    het = np.mean(np.sum((G - g) ** 2, axis=1))
    for d in range(1, N + 1):
        Zs = np.stack(
            [
                coding.encode(G, ref.cyclic_assignment(np.array(p), d))
                for p in itertools.permutations(range(N))
            ]
        )
        np.testing.assert_allclose(Zs.mean(axis=0), np.broadcast_to(g, (N, D)), atol=1e-12)
        dev = np.sum((Zs - g) ** 2, axis=2).mean(axis=0)  # per device i
        expect = (N - d) / (d * (N - 1)) * het
        np.testing.assert_allclose(dev, np.full(N, expect), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("d", [1, 3, 6, 10])
def test_variance_identity_monte_carlo(d) -> None:
    # One device per round (device t mod N), so the samples are independent across rounds; the
    # mean over devices would hide the randomness (at d = 1 it is exactly het every round).
    rng = np.random.default_rng(123)
    N, D, T = 10, 8, 3000
    G = rng.standard_normal((N, D)) * rng.uniform(0.2, 3.0, size=(N, 1)) + rng.standard_normal(D)
    g = G.mean(axis=0)
    het = float(np.mean(np.sum((G - g) ** 2, axis=1)))
    code = coding.CyclicCode(N, d, seed=99)
    z = np.stack([code.encode(G, t)[t % N] for t in range(T)])
    sq = np.sum((z - g) ** 2, axis=1)
    expect = code.variance_factor() * het
    if d == N:
        assert np.max(sq) < 1e-25
        return
    # 5 standard errors; a wrong factor such as (N-d)/(dN) sits more than 7 SE away here
    se = sq.std(ddof=1) / math.sqrt(T)
    assert abs(sq.mean() - expect) <= 5 * se
    se_z = z.std(axis=0, ddof=1) / math.sqrt(T)
    assert np.all(np.abs(z.mean(axis=0) - g) <= 5 * se_z)


# --------------------------------------------------------------------------------------------
# exact gradient codes
# --------------------------------------------------------------------------------------------


def _all_patterns(n: int, s: int):
    for r in itertools.combinations(range(n), n - s):
        yield np.array(r)


@pytest.mark.parametrize("n", range(1, 9))
def test_gradient_code_every_straggler_pattern(rng, n) -> None:
    G = rng.standard_normal((n, 17))
    g = G.mean(axis=0)
    for s in range(n):
        gc = coding.GradientCode(n, s)
        assert gc.B.shape == (n, n)
        for i in range(n):
            supp = {(i + k) % n for k in range(s + 1)}
            assert gc.B[i, i] == 1.0
            assert all(gc.B[i, j] == 0 for j in range(n) if j not in supp)
            assert all(gc.B[i, j] != 0 for j in supp)
        Z = gc.encode(G)
        np.testing.assert_allclose(Z, gc.B @ G, atol=1e-12)
        for r in _all_patterns(n, s):
            r = rng.permutation(r)
            a = gc.decode_weights(r)
            assert a.shape == r.shape
            assert np.max(np.abs(a @ gc.B[r] - 1)) <= 1e-9
            np.testing.assert_allclose(gc.decode(Z[r], r), g, atol=1e-9)


@pytest.mark.parametrize(("n", "s"), [(20, 3), (20, 10), (16, 15), (12, 5)])
def test_gradient_code_random_patterns_larger(rng, n, s) -> None:
    gc = coding.GradientCode(n, s)
    G = rng.standard_normal((n, 9))
    Z = gc.encode(G)
    for _ in range(10):
        k = rng.integers(n - s, n + 1)
        r = rng.choice(n, size=k, replace=False)
        np.testing.assert_allclose(gc.decode(Z[r], r), G.mean(axis=0), atol=1e-8)


def test_gradient_code_float32_and_torch(rng) -> None:
    gc = coding.GradientCode(6, 2)
    G = rng.standard_normal((6, 40)).astype(np.float32)
    Z = gc.encode(G)
    assert Z.dtype == np.float32
    r = [5, 0, 2, 3]
    out = gc.decode(Z[r], r)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, G.astype(np.float64).mean(axis=0), atol=1e-4)
    torch = pytest.importorskip("torch")
    out_t = gc.decode(torch.from_numpy(Z[r]), torch.tensor(r))
    assert isinstance(out_t, torch.Tensor)
    np.testing.assert_array_equal(out_t.numpy(), out)


def test_gradient_code_default_unchanged() -> None:
    # the random construction (the default) keeps its matrices: a fixed entry of seed 0
    gc = coding.GradientCode(5, 2)
    assert gc.construction == "random"
    np.testing.assert_array_equal(gc.B, coding.GradientCode(5, 2, construction="random").B)
    H = np.empty((2, 5))
    from cyclad import _random

    stream = _random.Stream(0, _random.SETUP, 0, _random.CODE_MATRIX)
    H[:, :-1] = stream.random((2, 4)) - 0.5
    H[:, -1] = -H[:, :-1].sum(axis=1)
    np.testing.assert_allclose(H @ gc.B.T, 0, atol=1e-12)


def test_gradient_code_is_deterministic() -> None:
    np.testing.assert_array_equal(coding.GradientCode(7, 3).B, coding.GradientCode(7, 3).B)
    assert not np.array_equal(coding.GradientCode(7, 3).B, coding.GradientCode(7, 3, seed=1).B)
    assert repr(coding.GradientCode(7, 3)) == "GradientCode(n=7, s=3, seed=0)"


@pytest.mark.parametrize("n", [1, 2, 3, 4, 6, 8])
def test_fractional_repetition_every_straggler_pattern(rng, n) -> None:
    G = rng.standard_normal((n, 11))
    g = G.mean(axis=0)
    for s in [s for s in range(n) if n % (s + 1) == 0]:
        fr = coding.FractionalRepetitionCode(n, s)
        grp = np.arange(n) // (s + 1)
        np.testing.assert_array_equal(fr.B, (grp[:, None] == grp[None, :]).astype(float))
        np.testing.assert_array_equal(fr.assignment().shape, (n, s + 1))
        Z = fr.encode(G)
        for r in _all_patterns(n, s):
            r = rng.permutation(r)
            a = fr.decode_weights(r)
            assert set(a.tolist()) <= {0.0, 1.0}
            assert a.sum() == n // (s + 1)
            np.testing.assert_array_equal(a @ fr.B[r], np.ones(n))
            np.testing.assert_allclose(fr.decode(Z[r], r), g, atol=1e-12)


@pytest.mark.parametrize("cls", [coding.GradientCode, coding.FractionalRepetitionCode])
def test_exact_code_decode_errors(cls) -> None:
    code = cls(6, 2)
    with pytest.raises(ValueError, match="need at least n - s = 4 responders"):
        code.decode_weights([0, 1, 2])
    with pytest.raises(ValueError, match="distinct"):
        code.decode_weights([0, 1, 2, 2])
    with pytest.raises(ValueError, match=r"responders must be in \[0, n\) = \[0, 6\)"):
        code.decode_weights([0, 1, 2, 6])
    with pytest.raises(ValueError, match=r"\[0, 6\)"):
        code.decode_weights([0, 1, 2, -1])
    with pytest.raises(TypeError, match="integer"):
        code.decode_weights([0.0, 1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="1-D"):
        code.decode_weights([[0, 1, 2, 3]])
    with pytest.raises(ValueError, match="one row per responder"):
        code.decode(np.ones((3, 5)), [0, 1, 2, 3])


def test_exact_code_constructor_errors() -> None:
    with pytest.raises(ValueError, match=r"s must be in \[0, 3\]"):
        coding.GradientCode(4, 4)
    with pytest.raises(ValueError, match="s must be in"):
        coding.GradientCode(4, -1)
    with pytest.raises(ValueError, match="n must be in"):
        coding.GradientCode(0, 0)
    with pytest.raises(ValueError, match="s \\+ 1 must divide n"):
        coding.FractionalRepetitionCode(6, 3)
    with pytest.raises(TypeError, match="s must be an integer"):
        coding.FractionalRepetitionCode(6, 1.0)


# --------------------------------------------------------------------------------------------
# decoding residuals, the deterministic construction
# --------------------------------------------------------------------------------------------


def test_decode_info_reports_residual_and_never_refuses_by_default(rng) -> None:
    # n = 20, s = 4: the random construction's worst patterns have residuals above 1e-9
    gc = coding.GradientCode(20, 4)
    G = rng.standard_normal((20, 5))
    Z = gc.encode(G)
    worst = 0.0
    for _ in range(400):
        r = rng.choice(20, size=16, replace=False)
        info = gc.decode_info(r)
        assert isinstance(info, coding.DecodeInfo)
        np.testing.assert_array_equal(info.weights, gc.decode_weights(r))
        assert info.residual == float(np.max(np.abs(info.weights @ gc.B[r] - 1)))
        assert 1e-9 <= info.tolerance <= 1e-6
        assert info.condition >= 1.0
        assert info.ok
        worst = max(worst, info.residual)
        np.testing.assert_allclose(gc.decode(Z[r], r, strict=True), G.mean(axis=0), atol=1e-6)
    assert worst < 1e-6


def test_decode_strict_raises_when_residual_exceeds_tolerance(rng) -> None:
    gc = coding.GradientCode(6, 2)
    r = np.array([0, 2, 3, 5])
    # a B whose responders' rows cannot give the all-ones vector: the residual is O(1)
    gc.B = gc.B.copy()
    gc.B[r] = 0.0
    gc.B[r, 0] = 1.0
    info = gc.decode_info(r)
    assert info.residual > 0.5
    assert not info.ok
    assert gc.decode_weights(r).shape == (4,)  # not strict: returned anyway
    with pytest.raises(RuntimeError, match=r"residual .* exceeds the tolerance"):
        gc.decode_weights(r, strict=True)
    with pytest.raises(RuntimeError, match="exceeds the tolerance"):
        gc.decode(np.ones((4, 3)), r, strict=True)


def test_fractional_repetition_decode_info() -> None:
    fr = coding.FractionalRepetitionCode(6, 2)
    info = fr.decode_info([5, 0, 1, 2], strict=True)
    assert (info.residual, info.condition) == (0.0, 1.0)
    np.testing.assert_array_equal(info.weights, [1.0, 1.0, 0.0, 0.0])


def _deterministic_cases(nmax: int):
    for n in range(1, nmax + 1):
        for s in range(n):
            if s == 0 or (n - s) % 2 == 1:
                yield n, s


@pytest.mark.parametrize("n", range(1, 11))
def test_deterministic_code_every_straggler_pattern(rng, n) -> None:
    G = rng.standard_normal((n, 7))
    g = G.mean(axis=0)
    for nn, s in _deterministic_cases(n):
        if nn != n:
            continue
        gc = coding.GradientCode(n, s, construction="deterministic")
        assert gc.B.shape == (n, n)
        for i in range(n):
            supp = {(i + k) % n for k in range(s + 1)}
            assert gc.B[i, i] == 1.0
            assert all(gc.B[i, j] == 0 for j in range(n) if j not in supp)
            assert all(gc.B[i, j] != 0 for j in supp)
        # a real cyclic code: every row is a cyclic shift of the first
        for i in range(n):
            np.testing.assert_array_equal(gc.B[i], np.roll(gc.B[0], i))
        Z = gc.encode(G)
        for r in _all_patterns(n, s):
            r = rng.permutation(r)
            info = gc.decode_info(r, strict=True)
            assert info.residual <= 1e-12
            assert info.condition < 1e3
            np.testing.assert_allclose(gc.decode(Z[r], r), g, atol=1e-11)


def test_deterministic_generator_is_the_cyclic_mds_code() -> None:
    # the rows span {c : c_hat(k) = 0 for the s consecutive frequencies around n/2}
    for n, s in [(7, 2), (8, 3), (20, 3), (21, 4), (40, 9)]:
        B = coding.GradientCode(n, s, construction="deterministic").B
        F = np.fft.fft(B, axis=1)
        m = (n - s + 1) // 2
        np.testing.assert_allclose(np.abs(F[:, m : m + s]), 0, atol=1e-9)
        assert np.linalg.matrix_rank(B) == n - s
        np.testing.assert_allclose(np.abs(F[:, 0]), np.abs(F[0, 0]))  # ones is in the code


@pytest.mark.parametrize(("n", "s"), [(20, 3), (20, 5), (21, 4), (31, 4), (40, 5), (40, 9)])
def test_deterministic_code_random_patterns_larger(rng, n, s) -> None:
    det = coding.GradientCode(n, s, construction="deterministic")
    rnd = coding.GradientCode(n, s)
    G = rng.standard_normal((n, 9))
    Z = det.encode(G)
    worst_det = worst_rnd = 0.0
    for _ in range(60):
        k = rng.integers(n - s, n + 1)
        r = rng.choice(n, size=k, replace=False)
        info = det.decode_info(r, strict=True)
        worst_det = max(worst_det, info.condition)
        worst_rnd = max(worst_rnd, rnd.decode_info(r).condition)
        np.testing.assert_allclose(det.decode(Z[r], r), G.mean(axis=0), atol=1e-8)
    if n <= 31:  # better conditioned than the random construction (at n = 40, s = 9: alike)
        assert worst_det < worst_rnd


@given(
    n=st.integers(1, 14),
    s_seed=st.integers(0, 1000),
    pat=st.integers(0, 2**32 - 1),
    data=hnp.arrays(np.float64, (14, 3), elements=st.floats(-1e3, 1e3)),
)
def test_deterministic_code_decodes_property(n, s_seed, pat, data) -> None:
    ss = [s for s in range(n) if s == 0 or (n - s) % 2]
    s = ss[s_seed % len(ss)]
    gc = coding.GradientCode(n, s, construction="deterministic")
    r = np.random.default_rng(pat).choice(n, size=n - s, replace=False)
    G = data[:n]
    got = gc.decode(gc.encode(G)[r], r, strict=True)
    np.testing.assert_allclose(got, G.mean(axis=0), atol=1e-9 * (1 + np.abs(G).max()))


def test_deterministic_code_errors_and_repr() -> None:
    with pytest.raises(ValueError, match="needs n - s odd, got n=20, s=4"):
        coding.GradientCode(20, 4, construction="deterministic")
    with pytest.raises(ValueError, match="construction must be one of"):
        coding.GradientCode(20, 3, construction="vandermonde")  # type: ignore[arg-type]
    gc = coding.GradientCode(7, 2, construction="deterministic")
    assert repr(gc) == "GradientCode(n=7, s=2, construction='deterministic')"
    np.testing.assert_array_equal(
        gc.B, coding.GradientCode(7, 2, construction="deterministic", seed=5).B
    )
    np.testing.assert_array_equal(
        coding.GradientCode(5, 0, construction="deterministic").B, np.eye(5)
    )


# --------------------------------------------------------------------------------------------
# DRACO majority decoding
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("n", "f"), [(3, 1), (6, 1), (10, 2), (7, 3), (4, 0)])
def test_majority_decode_exact_under_f_byzantine(rng, dtype, n, f) -> None:
    size = 2 * f + 1 if n % (2 * f + 1) == 0 else n
    fr = coding.FractionalRepetitionCode(n, size - 1)
    G = rng.standard_normal((n, 13)).astype(dtype)
    Z = fr.encode(G)
    want = fr.decode(Z, np.arange(n))
    hostile = [
        np.full(13, np.nan, dtype=dtype),
        np.full(13, np.inf, dtype=dtype),
        -np.full(13, np.inf, dtype=dtype),
        np.full(13, np.finfo(dtype).max, dtype=dtype),
        rng.standard_normal(13).astype(dtype) * 1e30,
    ]
    for trial in range(20):
        X = Z.copy()
        for k in range(fr.groups):
            bad = rng.choice(size, size=f, replace=False) + k * size
            for b in bad:
                X[b] = hostile[rng.integers(len(hostile))] if trial % 2 else X[b] * -1.0
        X_before = X.copy()
        rows = fr.majority_rows(X)
        assert rows.tolist() == ref.majority_rows(X, size, size - f)
        out = fr.majority_decode(X, threads=1)
        np.testing.assert_array_equal(X, X_before)  # not modified
        assert out.dtype == dtype
        np.testing.assert_array_equal(out, want)
        np.testing.assert_array_equal(fr.majority_decode(X, threads=2), out)
    np.testing.assert_allclose(want, G.astype(np.float64).mean(axis=0), rtol=1e-4, atol=1e-5)


def test_majority_is_on_bit_patterns() -> None:
    fr = coding.FractionalRepetitionCode(3, 2)
    nan2 = np.frombuffer(np.uint64(0x7FF8000000000001).tobytes(), dtype=np.float64)[0]
    X = np.array([[np.nan, 1.0], [np.nan, 1.0], [0.0, 1.0]])
    assert fr.majority_rows(X).tolist() == [0]  # equal NaN payloads are equal votes
    X[1, 0] = nan2  # another NaN payload: no longer the same vector
    with pytest.raises(coding.NoMajorityError, match=r"no majority in group\(s\) \[0\]"):
        fr.majority_rows(X)
    Y = np.array([[0.0, 2.0], [-0.0, 2.0], [-0.0, 2.0]])
    assert fr.majority_rows(Y).tolist() == [1]  # -0.0 and 0.0 differ


def test_majority_no_majority_and_argument_errors(rng) -> None:
    fr = coding.FractionalRepetitionCode(6, 2)
    X = rng.standard_normal((6, 4))
    X[3] = X[4] = X[5]
    with pytest.raises(coding.NoMajorityError) as info:
        fr.majority_decode(X)
    assert info.value.groups == [0]
    assert isinstance(info.value, ValueError)
    import pickle

    again = pickle.loads(pickle.dumps(info.value))
    assert again.groups == [0]
    assert str(again) == str(info.value)
    X[1] = X[0]
    assert fr.majority_rows(X).tolist() == [0, 3]
    with pytest.raises(coding.NoMajorityError):  # f = 0: the whole group must agree
        fr.majority_rows(X, f=0)
    with pytest.raises(ValueError, match=r"f must be in \[0, 1\]"):
        fr.majority_rows(X, f=2)
    with pytest.raises(ValueError, match="one row per device"):
        fr.majority_decode(X[:5])
    with pytest.raises(TypeError):
        fr.majority_decode(X.astype(complex))
    with pytest.raises(ValueError, match="2-D"):
        fr.majority_decode(X[0])


def test_majority_decode_torch(rng) -> None:
    torch = pytest.importorskip("torch")
    fr = coding.FractionalRepetitionCode(6, 2)
    Z = fr.encode(rng.standard_normal((6, 8)))
    Z[0] = np.nan
    out = fr.majority_decode(torch.from_numpy(Z))
    assert isinstance(out, torch.Tensor)
    np.testing.assert_array_equal(out.numpy(), fr.majority_decode(Z))


@given(
    groups=st.integers(1, 4),
    f=st.integers(0, 3),
    seed=st.integers(0, 2**32 - 1),
    data=st.data(),
)
def test_majority_decode_property(groups, f, seed, data) -> None:
    size = 2 * f + 1
    n = groups * size
    fr = coding.FractionalRepetitionCode(n, size - 1)
    r = np.random.default_rng(seed)
    G = r.standard_normal((n, 5))
    Z = fr.encode(G)
    X = Z.copy()
    nbad = data.draw(st.integers(0, f))
    junk = data.draw(
        hnp.arrays(
            np.float64, (max(nbad, 1), 5), elements=st.floats(allow_nan=True, allow_infinity=True)
        )
    )
    for k in range(groups):
        for j, b in enumerate(r.choice(size, size=nbad, replace=False)):
            X[k * size + b] = junk[j]
    assert fr.majority_rows(X).tolist() == ref.majority_rows(X, size, size - f)
    np.testing.assert_array_equal(fr.majority_decode(X), fr.decode(Z, np.arange(n)))


def test_majority_absent_devices_neither_win_nor_vote(rng) -> None:
    # Absent devices arrive as identical placeholder rows (NaN): without `absent` two of them
    # would outvote a group's one honest device; flagged, they count against the group instead.
    fr = coding.FractionalRepetitionCode(6, 2)
    X = rng.standard_normal((6, 5))
    X[1] = X[2] = X[0]
    X[3] = X[4] = np.nan
    X[5] = rng.standard_normal(5)
    assert fr.majority_rows(X).tolist() == [0, 3]  # the placeholders "win" group 1
    absent = np.array([False, False, False, True, True, False])
    with pytest.raises(coding.NoMajorityError) as info:
        fr.majority_rows(X, absent=absent)
    assert info.value.groups == [1]
    X[4] = X[5]  # one absent device: the two present, agreeing ones win
    absent[4] = False
    assert fr.majority_rows(X, absent=absent).tolist() == [0, 4]
    np.testing.assert_allclose(
        fr.majority_decode(X, absent=absent), (X[0] + X[4]) / 6.0, rtol=1e-15, atol=1e-16
    )
    absent[0] = True  # the first device of group 0 is absent: the next one is the winner
    assert fr.majority_rows(X, absent=absent).tolist() == [1, 4]
    for bad in (np.zeros(5, dtype=bool), np.zeros(6), [0, 1, 0, 0, 0, 0]):
        with pytest.raises(ValueError, match="absent must be a boolean array"):
            fr.majority_rows(X, absent=bad)


def test_draco_rule_ignores_all_nan_rows(rng) -> None:
    from cyclad import protocol

    rule = protocol.draco_rule(6, 3)
    X = rng.standard_normal((6, 4))
    X[1] = X[2] = X[0]
    X[3] = X[5]
    X[4] = np.nan  # absent: no vote, and the group's two present devices agree
    np.testing.assert_array_equal(rule(X), (X[0] + X[3]) / 2.0)
    X[3] = np.nan  # two absent of three: no majority, a clear error instead of a NaN model
    with pytest.raises(coding.NoMajorityError):
        rule(X)
