from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import cyclad.compression as comp
from cyclad import _core
from tests import _reference as ref

ALL = [
    comp.TopK(ratio=0.1),
    comp.RandK(ratio=0.1),
    comp.RandK(ratio=0.1, shared=True),
    comp.QSGD(levels=4, bucket=64),
    comp.QSGD(levels=16),
    comp.Sign(),
    comp.Identity(),
    comp.Natural(),
    comp.TernGrad(),
    comp.TernGrad(bucket=300, value_dtype="float16"),
]
IDS = [
    "topk",
    "randk",
    "randk-shared",
    "qsgd4",
    "qsgd16",
    "sign",
    "identity",
    "natural",
    "terngrad",
    "terngrad300-f16",
]


def sq(v: np.ndarray) -> float:
    v = v.astype(np.float64)
    return float(np.dot(v, v))


# --------------------------------------------------------------------------------------------
# top-k
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("D", [1, 2, 7, 97, 1000, 150_001])
def test_topk_matches_reference(rng, dtype, threads, D) -> None:
    x = rng.standard_normal(D).astype(dtype)
    if D > 10:
        x[::7] = np.round(x[::7], 1)  # ties
    for k in sorted({1, max(1, D // 100), max(1, D // 3), D}):
        got = _core.topk_indices(x, k, threads=0 if threads is None else threads)
        np.testing.assert_array_equal(got, ref.topk_indices(x, k))


def test_topk_tie_rule_lower_index_wins(dtype) -> None:
    x = np.array([1, -3, 3, 2, -3, 3, 0], dtype=dtype)
    np.testing.assert_array_equal(_core.topk_indices(x, 2), [1, 2])
    np.testing.assert_array_equal(_core.topk_indices(x, 3), [1, 2, 4])
    z = np.zeros(9, dtype=dtype)
    z[5] = -0.0
    np.testing.assert_array_equal(_core.topk_indices(z, 4), [0, 1, 2, 3])


def test_topk_nan_ranks_above_inf(dtype) -> None:
    x = np.array([1.0, np.inf, np.nan, -np.inf, 5.0, -np.nan], dtype=dtype)
    np.testing.assert_array_equal(_core.topk_indices(x, 2), [2, 5])
    np.testing.assert_array_equal(_core.topk_indices(x, 4), [1, 2, 3, 5])
    out = comp.TopK(k=3)(x)
    assert np.isnan(out[2])
    assert np.isnan(out[5])
    assert out[1] == np.inf


@pytest.mark.parametrize("case", ["sparse", "constant", "sorted", "spike", "few-nonzero"])
def test_topk_adversarial_large(dtype, case) -> None:
    D = 300_007
    rng = np.random.default_rng(1)
    if case == "sparse":
        x = np.zeros(D, dtype)
        x[rng.choice(D, 50, replace=False)] = rng.standard_normal(50)
    elif case == "constant":
        x = np.full(D, -2.5, dtype)
    elif case == "sorted":
        x = np.linspace(-1, 1, D).astype(dtype)
    elif case == "spike":
        x = rng.standard_normal(D).astype(dtype) * 1e-3
        x[-5000:] = 1e3 * rng.standard_normal(5000)  # all the mass where the sample looks late
    else:
        x = np.zeros(D, dtype)
        x[::1000] = 1.0
    for k in (1, 40, 3000, 30_000):
        for t in (1, 2):
            np.testing.assert_array_equal(
                _core.topk_indices(x, k, threads=t), ref.topk_indices(x, k)
            )


@given(
    arrays(
        np.float32,
        st.integers(1, 300),
        elements=st.sampled_from([0.0, -0.0, 1.0, -1.0, 2.5, -7.0, np.inf, np.nan, 1e-40]),
    ),
    st.data(),
)
def test_topk_property_exact_k_largest(x, data) -> None:
    k = data.draw(st.integers(1, x.size))
    got = _core.topk_indices(x, k)
    np.testing.assert_array_equal(got, ref.topk_indices(x, k))
    # The kept magnitudes dominate the dropped ones.
    keys = ref.magnitude_key(x)
    rest = np.setdiff1d(np.arange(x.size), got)
    if rest.size:
        assert keys[got].min() >= keys[rest].max()


@given(arrays(np.float64, st.integers(1, 200), elements=st.floats(-1e6, 1e6, width=64)), st.data())
def test_topk_compressor_keeps_values(x, data) -> None:
    k = data.draw(st.integers(1, x.size))
    out = comp.TopK(k=k)(x)
    idx = ref.topk_indices(x, k)
    expect = np.zeros_like(x)
    expect[idx] = x[idx]
    np.testing.assert_array_equal(out, expect)
    assert sq(out - x) <= (1 - k / x.size) * sq(x) * (1 + 1e-12) + 1e-300


def test_topk_contractive_bound(rng, dtype) -> None:
    x = rng.standard_normal(5000).astype(dtype)
    c = comp.TopK(ratio=0.05)
    assert c.contractive
    assert not c.unbiased
    assert sq(c(x) - x) <= (1 - c.delta(x.size)) * sq(x)


# --------------------------------------------------------------------------------------------
# rand-k
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("D", "k"), [(1, 1), (10, 3), (1000, 17), (1000, 999), (4099, 4099)])
def test_randk_mask_matches_reference(D, k) -> None:
    for seed in (0, 1, 2**63 + 5):
        np.testing.assert_array_equal(
            _core.randk_indices(D, k, seed), ref.randk_indices(D, k, seed)
        )


def test_randk_values_scaled(rng, dtype) -> None:
    D, k = 1000, 40
    x = rng.standard_normal(D).astype(dtype)
    c = comp.RandK(k=k)
    out = c(x, seed=9)
    idx = c.mask(D, 9)
    expect = np.zeros(D, dtype)
    expect[idx] = (x[idx].astype(np.float64) * (D / k)).astype(dtype)
    np.testing.assert_array_equal(out, expect)


def test_randk_shared_same_mask_across_devices(rng) -> None:
    D = 5000
    c = comp.RandK(ratio=0.02, shared=True)
    x1, x2 = rng.standard_normal((2, D))
    round_seed = comp.derive_seed(7, 3)
    m1, m2 = c.compress(x1, round_seed), c.compress(x2, round_seed)
    assert np.array_equal(np.flatnonzero(c.decompress(m1)), np.flatnonzero(c.decompress(m2)))
    other = c.decompress(c.compress(x1, comp.derive_seed(7, 4)))
    assert not np.array_equal(np.flatnonzero(other), np.flatnonzero(c.decompress(m1)))
    private = comp.RandK(ratio=0.02).compress(x1, round_seed)
    assert m1.nbytes < private.nbytes
    assert m1.seed == round_seed


@pytest.mark.parametrize(
    "c",
    [
        comp.RandK(k=5),
        comp.RandK(k=5, shared=True),
        comp.QSGD(levels=2, bucket=8),
        comp.QSGD(levels=7),
        comp.Natural(),
        comp.TernGrad(),
        comp.TernGrad(bucket=8),
    ],
    ids=["randk", "randk-shared", "qsgd2", "qsgd7", "natural", "terngrad", "terngrad8"],
)
def test_unbiased_and_variance_bound(c, dtype) -> None:
    rng = np.random.default_rng(5)
    D, n = 40, 4000
    x = rng.standard_normal(D).astype(dtype)
    x[3] = 0.0
    outs = np.stack([c(x, seed=s) for s in range(n)]).astype(np.float64)
    mean = outs.mean(axis=0)
    se = outs.std(axis=0, ddof=1) / np.sqrt(n)
    tol = 5 * se + (1e-5 if dtype == np.float32 else 1e-12) * np.abs(x)
    assert np.all(np.abs(mean - x) <= tol + 1e-12)
    err = ((outs - x) ** 2).sum(axis=1)
    # mean squared error within the declared omega (5 standard errors of the mean)
    bound = c.omega(D) * sq(x)
    assert err.mean() <= bound + 5 * err.std(ddof=1) / np.sqrt(n)
    assert c.unbiased
    assert not c.contractive


# --------------------------------------------------------------------------------------------
# QSGD
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("D", "s", "bucket"),
    [(1, 1, 1), (37, 3, 5), (1000, 16, 512), (4096, 255, 4096), (777, 300, 100)],
)
def test_qsgd_matches_reference_stream(rng, dtype, threads, D, s, bucket) -> None:
    x = rng.standard_normal(D).astype(dtype)
    x[: min(D, bucket)] *= 1e-3
    c = comp.QSGD(levels=s, bucket=bucket)
    msg = c.compress(x, seed=11, threads=threads)
    b = min(bucket, D)
    nb = -(-D // b)
    vb = np.dtype(dtype).itemsize
    norms = np.frombuffer(msg.payload[: nb * vb].tobytes(), dtype=dtype)
    true = np.array([np.linalg.norm(x[i : i + b].astype(np.float64)) for i in range(0, D, b)])
    np.testing.assert_allclose(norms, true, rtol=1e-6 if dtype == np.float32 else 1e-13)
    assert np.all(norms.astype(np.float64) >= true * (1 - 1e-15))  # rounded up, never down
    levels, signs = ref.qsgd_levels(x, norms, s, b, 11)
    assert levels.max() <= s
    off = nb * vb
    got_signs = ref.unpack_bits(msg.payload[off : off + -(-D // 8)].tobytes(), D, 1)
    got_levels = ref.unpack_bits(msg.payload[off + -(-D // 8) :].tobytes(), D, s.bit_length())
    np.testing.assert_array_equal(got_levels, levels)
    np.testing.assert_array_equal(got_signs, signs)
    np.testing.assert_array_equal(
        c.decompress(msg, threads=threads), ref.qsgd_decompress(levels, signs, norms, s, b, dtype)
    )


def test_qsgd_tiny_and_huge_norms() -> None:
    x = np.array([1e-310, -3e-310, 0.0, 2e-320], dtype=np.float64)
    out = comp.QSGD(levels=4)(x)
    m = np.abs(x).max()
    assert np.all(np.isfinite(out))
    assert np.all(np.abs(out) <= m * np.linalg.norm(x / m) * 1.0001)
    assert np.abs(out).max() > 0
    y = np.array([1e300, -1e300, 5e299], dtype=np.float64)
    out = comp.QSGD(levels=4)(y, seed=1)
    assert np.all(np.isfinite(out))
    f = np.array([1e-44, -1e-45, 3e-42], dtype=np.float32)
    assert np.all(np.isfinite(comp.QSGD(levels=65535)(f)))


def test_qsgd_zero_bucket() -> None:
    x = np.zeros(100, np.float32)
    x[70:] = 1.0
    out = comp.QSGD(levels=2, bucket=50)(x)
    np.testing.assert_array_equal(out[:50], 0.0)


# --------------------------------------------------------------------------------------------
# sign, identity
# --------------------------------------------------------------------------------------------


def test_sign_scaled(rng, dtype, threads) -> None:
    x = rng.standard_normal(1001).astype(dtype)
    x[5] = -0.0
    x[6] = 0.0
    c = comp.Sign()
    out = c(x, threads=threads)
    scale = np.abs(x.astype(np.float64)).sum() / x.size
    np.testing.assert_allclose(np.abs(out), scale, rtol=1e-6 if dtype == np.float32 else 1e-12)
    np.testing.assert_array_equal(np.signbit(out), np.signbit(x))
    exact = (1 - c.delta_of(x)) * sq(x)
    np.testing.assert_allclose(sq(out - x), exact, rtol=1e-4 if dtype == np.float32 else 1e-9)
    assert c.delta(x.size) <= c.delta_of(x)


def test_sign_unscaled() -> None:
    x = np.array([3.0, -2.0, 0.0])
    c = comp.Sign(scaled=False)
    np.testing.assert_array_equal(c(x), [1.0, -1.0, 1.0])
    assert not c.contractive
    with pytest.raises(NotImplementedError):
        c.delta(3)


@pytest.mark.parametrize("vdt", ["float16", "float32", "float64"])
def test_identity_value_dtypes(rng, dtype, vdt) -> None:
    x = rng.standard_normal(333).astype(dtype)
    x[:3] = [np.nan, np.inf, -np.inf]
    out = comp.Identity(value_dtype=vdt)(x)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, x.astype(vdt).astype(dtype))


def test_float16_rounding_matches_numpy(rng) -> None:
    x = np.concatenate(
        [
            rng.standard_normal(2000) * 10.0 ** rng.integers(-9, 4, 2000),
            [65504.0, -65504.0, 6.1e-5, 5.96e-8, 2.9e-8, 3.0e-8, -0.0],
        ]
    )
    out = comp.Identity(value_dtype="float16")(x)
    np.testing.assert_array_equal(out, x.astype(np.float16).astype(np.float64))


# --------------------------------------------------------------------------------------------
# natural compression
# --------------------------------------------------------------------------------------------


def _natural_fields(msg: comp.Message) -> tuple[int, np.ndarray, np.ndarray]:
    D = msg.dim
    p = msg.payload
    emin = int(np.frombuffer(p[:2].tobytes(), np.int16)[0])
    signs = ref.unpack_bits(p[2 : 2 + -(-D // 8)].tobytes(), D, 1)
    return emin, signs, p[2 + -(-D // 8) :].astype(np.int64)


def _wide(rng, D: int, dtype, lo: float, hi: float) -> np.ndarray:
    x = rng.standard_normal(D) * 10.0 ** rng.uniform(lo, hi, D)
    return x.astype(dtype)


@pytest.mark.parametrize("D", [1, 2, 7, 1000, 4097, 100_003])
@pytest.mark.parametrize("scale", ["unit", "wide", "tiny"])
def test_natural_matches_reference_stream(rng, dtype, threads, D, scale) -> None:
    f32 = dtype == np.float32
    lo, hi = {"unit": (0, 0), "wide": (-30, 30) if f32 else (-200, 200), "tiny": (-44, -38)}[scale]
    x = _wide(rng, D, dtype, lo, hi)
    if D > 10:
        x[:4] = [0.0, -0.0, 1.0, -0.5]
    msg = comp.Natural().compress(x, seed=21, threads=threads)
    emin, signs, codes = _natural_fields(msg)
    r_emin, r_signs, r_codes = ref.natural_compress(x, 21)
    assert emin == r_emin
    np.testing.assert_array_equal(signs, r_signs)
    np.testing.assert_array_equal(codes, r_codes)
    out = comp.decompress(msg, threads=threads)
    expect = ref.natural_decompress(r_emin, r_signs, r_codes, dtype)
    np.testing.assert_array_equal(out, expect)
    np.testing.assert_array_equal(np.signbit(out), np.signbit(expect))
    assert msg.nbytes == 16 + 2 + -(-D // 8) + D


@given(
    st.sampled_from([np.float32, np.float64]),
    st.data(),
)
def test_natural_property_rounds_to_an_adjacent_power(dt, data) -> None:
    width = 32 if dt == np.float32 else 64
    big = 2.0**127 if dt == np.float32 else 2.0**1023
    x = data.draw(
        arrays(
            dt,
            st.integers(1, 200),
            elements=st.floats(-big, big, width=width, allow_nan=False, allow_infinity=False),
        )
    )
    seed = data.draw(st.integers(0, 2**64 - 1))
    out = comp.Natural()(x, seed=seed)
    emin, signs, codes = ref.natural_compress(x, seed)
    np.testing.assert_array_equal(out, ref.natural_decompress(emin, signs, codes, dt))
    np.testing.assert_array_equal(np.signbit(out), np.signbit(x))
    a, o = np.abs(x.astype(np.float64)), np.abs(out.astype(np.float64))
    inside = a >= 2.0**emin
    # inside the window: one of the two powers of two around |x| (|x| itself if a power)
    _, ex = np.frexp(a[inside])
    low = np.ldexp(1.0, ex - 1)
    assert np.all((o[inside] == low) | (o[inside] / 2 == low))
    exact = a[inside] == low  # a power of two is sent as itself
    np.testing.assert_array_equal(o[inside][exact], a[inside][exact])
    # below it: 0 or 2^emin
    assert np.all((o[~inside] == 0) | (o[~inside] == 2.0**emin))


def _natural_exact_variance(x: np.ndarray) -> float:
    a = np.abs(x.astype(np.float64))
    a = a[a > 0]
    low = np.ldexp(1.0, np.frexp(a)[1] - 1)
    return float(((2 * low - a) * (a - low)).sum())


def test_natural_omega_is_tight_and_empirical_variance_matches(dtype) -> None:
    c = comp.Natural()
    assert c.unbiased
    assert not c.contractive
    assert c.omega(10) == 0.125
    rng = np.random.default_rng(8)
    # worst case: |x| = 4/3 2^e everywhere gives E||C(x) - x||^2 = ||x||^2 / 8 exactly
    worst = (4.0 / 3.0 * 2.0 ** rng.integers(-20, 20, 30) * rng.choice([-1, 1], 30)).astype(dtype)
    x = rng.standard_normal(30).astype(dtype)
    for v in (worst, x):
        exact = _natural_exact_variance(v)
        assert exact <= c.omega(v.size) * sq(v) * (1 + 1e-6)
        n = 4000
        outs = np.stack([c(v, seed=s) for s in range(n)]).astype(np.float64)
        err = ((outs - v) ** 2).sum(axis=1)
        # mean squared error: the exact expectation, within 5 standard errors
        assert abs(err.mean() - exact) <= 5 * err.std(ddof=1) / np.sqrt(n)
        mean = outs.mean(axis=0)
        se = outs.std(axis=0, ddof=1) / np.sqrt(n)
        assert np.all(np.abs(mean - v) <= 5 * se + 1e-12)
    assert _natural_exact_variance(worst) == pytest.approx(sq(worst) / 8, rel=1e-6)


def test_natural_window_and_errors() -> None:
    # the window is the 255 powers up to the largest one max|x| can reach
    m = comp.Natural().compress(np.array([3.0, 1e-300]), seed=0)
    assert _natural_fields(m)[0] == 2 - 254
    m = comp.Natural().compress(np.array([4.0, 1.0]), seed=0)  # 4 is a power: it stays
    assert _natural_fields(m)[0] == 2 - 254
    assert comp.decompress(m)[0] == 4.0
    # float32: 2^127 exactly is sendable, anything above may round to 2^128
    np.testing.assert_array_equal(comp.Natural()(np.array([2.0**127], np.float32)), [2.0**127])
    with pytest.raises(ValueError, match="overflows float32; use float64"):
        comp.Natural()(np.array([2.0**127 * 1.5], np.float32))
    assert comp.Natural()(np.array([2.0**127 * 1.5]), seed=1)[0] in (2.0**127, 2.0**128)
    with pytest.raises(ValueError, match="overflows float64"):
        comp.Natural()(np.array([1e308]))
    np.testing.assert_array_equal(comp.Natural()(np.array([2.0**1023])), [2.0**1023])
    for bad in (np.nan, np.inf, -np.inf):
        with pytest.raises(ValueError, match="non-finite values: x\\[1\\]"):
            comp.Natural()(np.array([1.0, bad, 2.0], np.float32))
    z = comp.Natural()(np.array([0.0, -0.0], np.float32))
    np.testing.assert_array_equal(np.signbit(z), [False, True])
    np.testing.assert_array_equal(z, 0.0)


def test_natural_subnormals_are_unbiased() -> None:
    # float32 subnormals (2^-149 .. 2^-127) stay in the window when max|x| is small
    x = np.array([1.5 * 2.0**-140, 2.0**-149, -3 * 2.0**-149, 2.0**-130], np.float32)
    n = 3000
    outs = np.stack([comp.Natural()(x, seed=s) for s in range(n)]).astype(np.float64)
    for j in range(x.size):
        _, ex = np.frexp(abs(float(x[j])))
        assert set(np.abs(outs[:, j])) <= {2.0 ** (ex - 1), 2.0**ex}
    se = outs.std(axis=0, ddof=1) / np.sqrt(n)
    assert np.all(np.abs(outs.mean(axis=0) - x) <= 5 * se + 1e-60)


# --------------------------------------------------------------------------------------------
# TernGrad
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("D", "bucket"), [(1, None), (37, 5), (1000, None), (4097, 512), (100_003, 1000), (9, 1)]
)
@pytest.mark.parametrize("vdt", [None, "float16"])
def test_terngrad_matches_reference_stream(rng, dtype, threads, D, bucket, vdt) -> None:
    x = rng.standard_normal(D).astype(dtype)
    if D > 10:
        x[:5] = 0.0  # a zero bucket with bucket=5
    c = comp.TernGrad(bucket=bucket, value_dtype=vdt)
    msg = c.compress(x, seed=13, threads=threads)
    b = D if bucket is None else min(bucket, D)
    nb = -(-D // b)
    vt = np.dtype(vdt or dtype)
    scales = np.frombuffer(msg.payload[: nb * vt.itemsize].tobytes(), vt).astype(np.float64)
    true = ref.terngrad_scales(x, b)
    assert np.all(scales >= true)  # rounded up, never down
    if vdt is None:
        np.testing.assert_array_equal(scales, true)
    codes = ref.unpack_bits(msg.payload[nb * vt.itemsize :].tobytes(), D, 2)
    np.testing.assert_array_equal(codes, ref.terngrad_codes(x, scales, b, 13))
    out = c.decompress(msg, threads=threads)
    np.testing.assert_array_equal(out, ref.terngrad_decompress(codes, scales, b, dtype))
    assert msg.nbytes == 24 + nb * vt.itemsize + -(-D // 4)


@given(
    arrays(
        np.float64,
        st.integers(1, 200),
        elements=st.floats(-1e300, 1e300, allow_nan=False, allow_infinity=False),
    ),
    st.integers(1, 64),
    st.integers(0, 2**64 - 1),
)
def test_terngrad_property_ternary_values(x, bucket, seed) -> None:
    out = comp.TernGrad(bucket=bucket)(x, seed=seed)
    b = min(bucket, x.size)
    scales = ref.terngrad_scales(x, b)
    codes = ref.terngrad_codes(x, scales, b, seed)
    np.testing.assert_array_equal(out, ref.terngrad_decompress(codes, scales, b, np.float64))
    s = scales[np.arange(x.size) // b]
    assert np.all((out == 0) | (np.abs(out) == s))
    assert np.all((out == 0) | (np.sign(out) == np.sign(x)))
    assert np.all(out[np.abs(x) == s] == x[np.abs(x) == s])  # the max is kept exactly


def test_terngrad_omega_is_tight_and_empirical_variance_matches(dtype) -> None:
    b = 16
    c = comp.TernGrad(bucket=b)
    assert c.omega(1000) == pytest.approx((4 - 1) / 2)
    assert comp.TernGrad().omega(100) == pytest.approx((10 - 1) / 2)
    assert comp.TernGrad(bucket=1).omega(50) == 0.0
    # worst case of s||x||_1 - ||x||^2 <= omega ||x||^2: one |x_i| = s, the rest s/(sqrt(b)+1)
    worst = np.full(b, 1.0 / (np.sqrt(b) + 1.0))
    worst[3] = -1.0
    worst = worst.astype(dtype)
    x = np.random.default_rng(4).standard_normal(40).astype(dtype)
    for v in (worst, x):
        a = np.abs(v.astype(np.float64))
        s = np.array([a[i : i + b].max() for i in range(0, v.size, b)])[np.arange(v.size) // b]
        exact = float((s * a - a * a).sum())
        assert exact <= c.omega(v.size) * sq(v) * (1 + 1e-6)
        n = 4000
        outs = np.stack([c(v, seed=t) for t in range(n)]).astype(np.float64)
        err = ((outs - v) ** 2).sum(axis=1)
        assert abs(err.mean() - exact) <= 5 * err.std(ddof=1) / np.sqrt(n)
        se = outs.std(axis=0, ddof=1) / np.sqrt(n)
        assert np.all(np.abs(outs.mean(axis=0) - v) <= 5 * se + 1e-6 * np.abs(v))
    a = np.abs(worst.astype(np.float64))
    assert float(a.max() * a.sum() - sq(worst)) == pytest.approx(c.omega(b) * sq(worst), rel=1e-6)


def test_terngrad_errors() -> None:
    for bad in (np.nan, np.inf):
        with pytest.raises(ValueError, match="non-finite values: bucket 1"):
            comp.TernGrad(bucket=2)(np.array([1.0, 2.0, bad, 0.5], np.float32))
    with pytest.raises(ValueError, match="float16"):
        comp.TernGrad(value_dtype="float16")(np.array([1e5, 1.0]))
    # float32 input near FLT_MAX: the scale stays finite, the decoded values too
    big = np.array([3.4e38, -3.4e38, 1.0], np.float32)
    out = comp.TernGrad()(big, seed=2)
    assert np.all(np.isfinite(out))
    np.testing.assert_array_equal(out[:2], big[:2])
    np.testing.assert_array_equal(comp.TernGrad()(np.zeros(9, np.float32)), 0.0)
    tiny = np.array([5e-324, -1e-323, 0.0])  # 1/s overflows: the kernel divides instead
    out = comp.TernGrad()(tiny, seed=1)
    np.testing.assert_array_equal(out[1], -1e-323)
    assert out[0] in (0.0, 1e-323)


# --------------------------------------------------------------------------------------------
# signSGD majority vote
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 31, 32, 33, 64, 65, 100])
@pytest.mark.parametrize("D", [1, 63, 64, 65, 511, 512, 513, 100_003])
def test_majority_vote_matches_reference(rng, dtype, n, D) -> None:
    X = rng.standard_normal((n, D)).astype(dtype)
    X[:, : min(D, 3)] = 0.0
    X[: n // 2, :1] = -0.0  # -0.0 votes negative (its sign bit)
    msgs = [comp.Sign(scaled=bool(i % 2)).compress(X[i]) for i in range(n)]
    expect = ref.majority_vote(X)
    for t in (1, 2, None):
        got = comp.majority_vote(msgs, threads=t)
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, expect)


@given(
    arrays(
        np.float64, st.tuples(st.integers(1, 12), st.integers(1, 150)), elements=st.floats(-3, 3)
    ),
    st.sampled_from(["float16", "float32", "float64"]),
)
def test_majority_vote_property(X, vdt) -> None:
    msgs = [comp.Sign(value_dtype=vdt).compress(r).to_bytes() for r in X]
    got = comp.majority_vote(msgs, dim=X.shape[1], dtype=np.float64)
    np.testing.assert_array_equal(got, ref.majority_vote(X))
    # permutation invariance over the voters
    np.testing.assert_array_equal(comp.majority_vote(msgs[::-1]), got)


def test_majority_vote_ties_and_byzantine_margin(rng) -> None:
    X = np.array([[1.0, -1.0, 1.0], [-1.0, -1.0, 1.0]])
    np.testing.assert_array_equal(
        comp.majority_vote([comp.Sign().compress(r) for r in X]), [0.0, -1.0, 1.0]
    )
    # f Byzantine voters flip no coordinate whose honest margin exceeds 2f
    n, f, D = 15, 3, 2000
    honest = rng.standard_normal((n - f, D)) + 0.3
    byz = -np.sign(honest.mean(axis=0)) * np.ones((f, D))
    X = np.vstack([honest, byz])
    got = comp.majority_vote([comp.Sign().compress(r) for r in X])
    margin = np.abs((honest > 0).sum(axis=0) - (honest < 0).sum(axis=0))
    safe = margin > f
    honest_vote = np.sign((honest > 0).sum(axis=0) - (honest < 0).sum(axis=0))
    np.testing.assert_array_equal(got[safe], honest_vote[safe])
    assert safe.sum() > D // 2


def test_majority_vote_errors() -> None:
    x = np.ones(10)
    s = comp.Sign().compress(x)
    with pytest.raises(ValueError, match="at least one"):
        comp.majority_vote([])
    with pytest.raises(TypeError, match="sequence"):
        comp.majority_vote(s)
    with pytest.raises(TypeError, match="sequence"):
        comp.majority_vote(5)
    with pytest.raises(ValueError, match="'topk' message"):
        comp.majority_vote([s, comp.TopK(k=2).compress(x)])
    with pytest.raises(ValueError, match="D=11"):
        comp.majority_vote([s, comp.Sign().compress(np.ones(11))])
    with pytest.raises(ValueError, match="dtype float32"):
        comp.majority_vote([s, comp.Sign().compress(np.ones(10, np.float32))])
    with pytest.raises(ValueError, match="expected D=9"):
        comp.majority_vote([s], dim=9)
    with pytest.raises(ValueError, match=r"message 1: .*truncated"):
        comp.majority_vote([s.to_bytes(), s.to_bytes()[:-1]])
    with pytest.raises(ValueError, match=r"message 0: .*dtype"):
        comp.majority_vote([s.to_bytes()], dtype=np.float32)
    with pytest.raises(TypeError, match="message 0 must be"):
        comp.majority_vote([object()])
    bad = bytearray(s.to_bytes())
    bad[-1] |= 0x80  # padding bit past D = 10
    with pytest.raises(ValueError, match="padding"):
        comp.majority_vote([bytes(bad)])
    # a hand-built message is validated before it votes
    payload = np.frombuffer(bytes(bad)[16:], np.uint8)
    hand = comp.Message("sign", np.dtype(np.float64), "float64", 10, 0, 0, 0, False, 0, payload)
    with pytest.raises(ValueError, match=r"message 0: .*padding"):
        comp.majority_vote([hand])
    with pytest.raises(ValueError, match="threads"):
        comp.majority_vote([s], threads=0)
    with pytest.raises(ValueError, match="must be 2 bytes"):
        _core.sign_majority([np.zeros(3, np.uint8)], 10, True)
    with pytest.raises(ValueError, match="at least one"):
        _core.sign_majority([], 10, True)


def test_majority_vote_does_not_copy_or_modify_messages() -> None:
    X = np.random.default_rng(2).standard_normal((5, 1000))
    msgs = [comp.Sign().compress(r) for r in X]
    before = [m.to_bytes() for m in msgs]
    comp.majority_vote(msgs)
    assert [m.to_bytes() for m in msgs] == before


# --------------------------------------------------------------------------------------------
# error feedback
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "c",
    [
        comp.TopK(k=3),
        comp.Sign(),
        comp.QSGD(levels=1, bucket=4),
        comp.TopK(k=5, value_dtype="float16"),
    ],
    ids=["topk", "sign", "qsgd", "topk-f16"],
)
def test_error_feedback_conserves_mass(rng, c) -> None:
    ef = comp.ErrorFeedback(c)
    D, T = 50, 30
    xs = rng.standard_normal((T, D))
    sent = np.zeros(D)
    for t in range(T):
        msg = ef.compress(xs[t], seed=t)
        sent += ef.decompress(msg)
    np.testing.assert_allclose(sent + ef.residual, xs.sum(axis=0), rtol=1e-9, atol=1e-9)
    ef.reset()
    assert ef.residual is None


def test_error_feedback_first_step_is_plain(rng) -> None:
    x = rng.standard_normal(20)
    ef = comp.ErrorFeedback(comp.TopK(k=4))
    np.testing.assert_array_equal(ef.decompress(ef.compress(x)), comp.TopK(k=4)(x))
    np.testing.assert_array_equal(ef.residual, x - comp.TopK(k=4)(x))
    with pytest.raises(ValueError, match="reset"):
        ef.compress(x[:5])


def test_ef21_tracks_state(rng) -> None:
    D = 60
    c = comp.TopK(k=6)
    dev, srv = comp.EF21(c), comp.EF21Receiver(c)
    x = rng.standard_normal(D)
    errs = []
    for t in range(12):
        msg = dev.compress(x, seed=t)
        g = srv.update(comp.Message.from_bytes(msg.to_bytes()))
        np.testing.assert_array_equal(g, dev.state)
        errs.append(sq(g - x))
    # a fixed target is reached in ceil(D/k) steps by top-k differences
    assert errs[-1] == 0.0
    assert all(a >= b for a, b in itertools.pairwise(errs))
    dev.reset()
    srv.reset()
    assert dev.state is None
    assert srv.state is None


def test_ef21_identity_state_equals_input(rng) -> None:
    dev = comp.EF21(comp.Identity())
    for _ in range(3):
        x = rng.standard_normal(10)
        dev.compress(x)
        np.testing.assert_allclose(dev.state, x, rtol=0, atol=1e-15)


# --------------------------------------------------------------------------------------------
# determinism, inputs, errors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("c", ALL, ids=IDS)
def test_thread_count_bit_identity(c, dtype) -> None:
    x = np.random.default_rng(3).standard_normal(100_003).astype(dtype)
    b1 = c.compress(x, seed=5, threads=1).to_bytes()
    for t in (2, 3, None):
        msg = c.compress(x, seed=5, threads=t)
        assert msg.to_bytes() == b1
        np.testing.assert_array_equal(c.decompress(msg, threads=t), c.decompress(msg, threads=1))


@pytest.mark.parametrize("c", ALL, ids=IDS)
def test_same_seed_same_output_and_no_mutation(c, rng, dtype) -> None:
    x = rng.standard_normal(2000).astype(dtype)
    before = x.copy()
    a, b = c.compress(x, seed=42), c.compress(x, seed=42)
    assert a == b
    np.testing.assert_array_equal(x, before)
    if c.kind in ("randk", "qsgd", "natural", "terngrad"):
        assert c.compress(x, seed=43) != a


def test_torch_input() -> None:
    torch = pytest.importorskip("torch")
    t = torch.linspace(-1, 1, 101)
    out = comp.TopK(k=3)(t)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(np.flatnonzero(out), [0, 1, 100])


@pytest.mark.parametrize(
    "c", [comp.Natural(), comp.TernGrad(bucket=7)], ids=["natural", "terngrad"]
)
def test_torch_input_natural_and_terngrad(c) -> None:
    torch = pytest.importorskip("torch")
    t = torch.linspace(-1, 1, 101, dtype=torch.float64)
    got = c.compress(t, seed=3)
    assert got.dtype == np.float64
    assert got == c.compress(t.numpy(), seed=3)


def test_non_finite_inputs() -> None:
    x = np.array([1.0, np.nan, -np.inf, 2.0, np.inf, 0.5])
    for c in (comp.RandK(k=6), comp.RandK(k=6, shared=True), comp.Identity()):
        out = c(x)
        np.testing.assert_array_equal(np.isnan(out), np.isnan(x))
        np.testing.assert_array_equal(out[~np.isnan(x)], x[~np.isnan(x)])
    with pytest.raises(ValueError, match="non-finite"):
        comp.QSGD(levels=4)(x)
    with pytest.raises(ValueError, match="finite"):
        comp.Sign()(x)
    with pytest.raises(ValueError, match="float16"):
        comp.TopK(k=1, value_dtype="float16")(np.array([1e5, 1.0]))
    with pytest.raises(ValueError, match="float32"):
        comp.Identity(value_dtype="float32")(np.array([1e300]))
    with pytest.raises(ValueError, match="float16"):
        comp.QSGD(value_dtype="float16")(np.array([1e5, 1.0]))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: comp.TopK(), "exactly one"),
        (lambda: comp.TopK(k=3, ratio=0.1), "exactly one"),
        (lambda: comp.TopK(k=0), "k must be"),
        (lambda: comp.RandK(ratio=0.0), "ratio must be"),
        (lambda: comp.RandK(ratio=1.5), "ratio must be"),
        (lambda: comp.RandK(ratio=float("nan")), "ratio must be finite"),
        (lambda: comp.QSGD(levels=0), "levels must be"),
        (lambda: comp.QSGD(levels=70000), "levels must be"),
        (lambda: comp.QSGD(bucket=0), "bucket must be"),
        (lambda: comp.TernGrad(bucket=0), "bucket must be"),
        (lambda: comp.TernGrad(bucket=1.5), "bucket must be"),
        (lambda: comp.TernGrad(value_dtype="int8"), "value_dtype"),
        (lambda: comp.Natural(value_dtype="float16"), "value_dtype"),
        (lambda: comp.Identity(value_dtype="int8"), "value_dtype"),
        (lambda: comp.ErrorFeedback(object()), "compressor"),
    ],
)
def test_constructor_errors(make, match) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_compress_errors() -> None:
    with pytest.raises(ValueError, match="k must be in"):
        comp.TopK(k=11).compress(np.ones(10))
    with pytest.raises(ValueError, match="1-D"):
        comp.TopK(k=1).compress(np.ones((2, 2)))
    with pytest.raises(ValueError, match="empty"):
        comp.Sign().compress(np.ones(0))
    with pytest.raises(TypeError, match="real"):
        comp.Sign().compress(np.ones(3, dtype=complex))
    with pytest.raises(ValueError, match="seed"):
        comp.RandK(k=1).compress(np.ones(3), seed=-1)
    with pytest.raises(ValueError, match="threads"):
        comp.Sign().compress(np.ones(3), threads=0)
    msg = comp.TopK(k=2).compress(np.ones(10))
    with pytest.raises(ValueError, match="does not match"):
        comp.TopK(k=3).decompress(msg)
    with pytest.raises(ValueError, match="does not match"):
        comp.RandK(k=2).decompress(msg)
    with pytest.raises(TypeError, match="Message"):
        comp.decompress(b"abc")


def test_ratio_rounding() -> None:
    assert comp.TopK(ratio=0.01).k_for(10**7) == 100_000
    assert comp.TopK(ratio=0.07).k_for(100) == 7
    assert comp.TopK(ratio=1e-9).k_for(10) == 1
    assert comp.RandK(ratio=1.0).k_for(5) == 5
    assert comp.QSGD(levels=4, bucket=512).omega(100) == pytest.approx(min(100 / 16, 10 / 4))


def test_derive_seed() -> None:
    a = comp.derive_seed(1, 2)
    assert a == comp.derive_seed(1, 2)
    assert a != comp.derive_seed(1, 3)
    assert comp.derive_seed(1, 2, 0) != comp.derive_seed(1, 2, 1)
    assert 0 <= comp.derive_seed(2**64 - 1, 2**64 - 1) < 2**64
    with pytest.raises(ValueError, match="t must be"):
        comp.derive_seed(1, -1)
    with pytest.raises(ValueError, match="device must be"):
        comp.derive_seed(1, 0, 2**64 - 1)
