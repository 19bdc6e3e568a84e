"""pytest-benchmark for the cyclic encoding kernel (tiny sizes; the full bench is
``python -m cyclad.bench coding``). Every benchmark checks its result against a dense NumPy
reference, ``W @ G`` with ``W`` the (n, N) coefficient matrix."""

from __future__ import annotations

import numpy as np
import pytest

from cyclad import coding
from cyclad.bench.coding import coefficient_matrix, numpy_loop

N = 20
D = 50_000


@pytest.fixture(scope="module")
def G() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((N, D), dtype=np.float32)


@pytest.mark.parametrize("d", [2, 4, 10])
@pytest.mark.parametrize("threads", [1, None], ids=["t1", "tall"])
@pytest.mark.benchmark(group="encode")
def test_encode_cyclad(benchmark, G, d, threads) -> None:
    a = coding.CyclicCode(N, d, seed=0).assignment(0)
    out = benchmark(coding.encode, G, a, threads=threads)
    expect = coefficient_matrix(a, np.full(d, 1.0 / d), N, np.float64) @ G.astype(np.float64)
    np.testing.assert_allclose(out, expect, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("d", [2, 4, 10])
@pytest.mark.benchmark(group="encode")
def test_encode_numpy_gemm(benchmark, G, d) -> None:
    a = coding.CyclicCode(N, d, seed=0).assignment(0)
    W = coefficient_matrix(a, np.full(d, 1.0 / d), N, np.float32)
    out = benchmark(lambda: W @ G)
    np.testing.assert_allclose(out, coding.encode(G, a), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("d", [2, 4, 10])
@pytest.mark.benchmark(group="encode")
def test_encode_numpy_loop(benchmark, G, d) -> None:
    a = coding.CyclicCode(N, d, seed=0).assignment(0)
    w = np.full((N, d), 1.0 / d, dtype=np.float32)
    out = benchmark(numpy_loop, G, a, w)
    np.testing.assert_allclose(out, coding.encode(G, a), rtol=1e-5, atol=1e-5)
