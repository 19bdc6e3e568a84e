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
