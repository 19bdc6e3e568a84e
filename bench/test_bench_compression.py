"""pytest-benchmark smoke benches for cyclad.compression (tiny sizes; results asserted)."""

from __future__ import annotations

import numpy as np
import pytest

import cyclad.compression as comp
from cyclad import _core

D = 50_000
X = np.random.default_rng(0).standard_normal(D).astype(np.float32)
K = D // 100


@pytest.mark.benchmark(group="topk")
def test_topk_cyclad(benchmark) -> None:
    idx = benchmark(_core.topk_indices, X, K)
    np.testing.assert_array_equal(idx, np.sort(np.argpartition(np.abs(X), -K)[-K:]))


@pytest.mark.benchmark(group="topk")
def test_topk_numpy(benchmark) -> None:
    idx = benchmark(lambda: np.argpartition(np.abs(X), -K)[-K:])
    assert np.abs(X[idx]).min() >= np.sort(np.abs(X))[-K]


@pytest.mark.benchmark(group="qsgd")
@pytest.mark.parametrize("s", [4, 16])
def test_qsgd_cyclad(benchmark, s) -> None:
    c = comp.QSGD(levels=s)
    msg = benchmark(c.compress, X, 1)
    assert msg.nbytes == 32 + (-(-D // 512)) * 4 + -(-D // 8) + -(-D * s.bit_length() // 8)
    out = c.decompress(msg)
    assert np.all(np.sign(out[out != 0]) == np.sign(X[out != 0]))


@pytest.mark.benchmark(group="qsgd")
def test_qsgd_numpy(benchmark) -> None:
    from cyclad.bench.compression import np_qsgd

    rng = np.random.default_rng(1)
    b = benchmark(np_qsgd, X, 16, 512, rng)
    assert len(b) > 0


@pytest.mark.benchmark(group="sign")
def test_sign_cyclad(benchmark) -> None:
    c = comp.Sign()
    msg = benchmark(c.compress, X)
    np.testing.assert_array_equal(np.signbit(c.decompress(msg)), np.signbit(X))


@pytest.mark.benchmark(group="sign")
def test_sign_numpy(benchmark) -> None:
    from cyclad.bench.compression import np_sign, np_sign_decompress

    b = benchmark(np_sign, X)
    np.testing.assert_array_equal(np.signbit(np_sign_decompress(b, D)), np.signbit(X))


@pytest.mark.benchmark(group="randk")
def test_randk_cyclad(benchmark) -> None:
    c = comp.RandK(ratio=0.01, shared=True)
    msg = benchmark(c.compress, X, 3)
    assert np.count_nonzero(c.decompress(msg)) == K


@pytest.mark.benchmark(group="natural")
def test_natural_cyclad(benchmark) -> None:
    c = comp.Natural()
    msg = benchmark(c.compress, X, 5)
    assert msg.nbytes == 16 + 2 + -(-D // 8) + D
    out = c.decompress(msg)
    np.testing.assert_array_equal(np.signbit(out), np.signbit(X))
    assert np.all(np.frexp(np.abs(out[out != 0]))[0] == 0.5)  # powers of two


@pytest.mark.benchmark(group="natural")
def test_natural_numpy(benchmark) -> None:
    from cyclad.bench.compression import np_natural, np_natural_decompress

    rng = np.random.default_rng(2)
    b = benchmark(np_natural, X, rng)
    out = np_natural_decompress(b, D)
    np.testing.assert_array_equal(np.signbit(out), np.signbit(X))
    assert np.all(np.abs(out) <= 2 * np.abs(X))
    assert np.all(np.abs(out) >= np.abs(X) / 2)


@pytest.mark.benchmark(group="terngrad")
def test_terngrad_cyclad(benchmark) -> None:
    c = comp.TernGrad()
    msg = benchmark(c.compress, X, 6)
    assert msg.nbytes == 24 + 4 + -(-D // 4)
    out = c.decompress(msg)
    assert set(np.unique(np.abs(out))) <= {0.0, float(np.abs(X).max())}


@pytest.mark.benchmark(group="terngrad")
def test_terngrad_numpy(benchmark) -> None:
    from cyclad.bench.compression import np_terngrad

    rng = np.random.default_rng(3)
    b = benchmark(np_terngrad, X, rng)
    assert len(b) == 4 + -(-D // 4)


V = np.random.default_rng(4).standard_normal((20, D)).astype(np.float32)
VOTES = [comp.Sign().compress(v) for v in V]


@pytest.mark.benchmark(group="majority")
def test_majority_vote_cyclad(benchmark) -> None:
    out = benchmark(comp.majority_vote, VOTES)
    neg = np.signbit(V).sum(axis=0)
    np.testing.assert_array_equal(out, np.sign(20 - 2 * neg).astype(np.float32))


@pytest.mark.benchmark(group="majority")
def test_majority_vote_numpy(benchmark) -> None:
    from cyclad.bench.compression import np_majority

    out = benchmark(np_majority, [m.payload[4:] for m in VOTES], D)
    np.testing.assert_array_equal(out, comp.majority_vote(VOTES))
