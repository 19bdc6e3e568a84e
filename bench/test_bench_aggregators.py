"""pytest-benchmark groups: NumPy reference and cyclad side by side, results asserted equal.

Small sizes so ``pytest bench --benchmark-disable`` is a quick smoke run; the full sweep is
``python -m cyclad.bench aggregators``.
"""

from __future__ import annotations

import numpy as np
import pytest

import cyclad.aggregators as agg

SIZES = [(10, 10_000), (20, 100_000), (50, 20_000)]
IDS = [f"n{n}-D{d}" for n, d in SIZES]
THREADS = [1, None]


def np_median(X: np.ndarray) -> np.ndarray:
    return np.median(X, axis=0)


def np_trimmed_mean(X: np.ndarray, f: int) -> np.ndarray:
    n = X.shape[0]
    if f == 0:
        return X.mean(axis=0)
    return np.partition(X, (f, n - f - 1), axis=0)[f : n - f].mean(axis=0)


def np_meamed(X: np.ndarray, f: int) -> np.ndarray:
    n = X.shape[0]
    med = np.median(X.astype(np.float64), axis=0)
    idx = np.argsort(np.abs(X - med), axis=0, kind="stable")[: n - f]
    return np.take_along_axis(X, idx, axis=0).mean(axis=0)


@pytest.fixture(scope="module", params=SIZES, ids=IDS)
def case(request: pytest.FixtureRequest) -> tuple[np.ndarray, int]:
    n, d = request.param
    X = np.random.default_rng(0).standard_normal((n, d), dtype=np.float32)
    return X, max(1, n // 4)


RULES = {
    "mean": (lambda X, f, t: agg.mean(X, threads=t), lambda X, f: X.mean(axis=0)),
    "median": (lambda X, f, t: agg.median(X, threads=t), lambda X, f: np_median(X)),
    "trimmed_mean": (lambda X, f, t: agg.trimmed_mean(X, f, threads=t), np_trimmed_mean),
    "meamed": (lambda X, f, t: agg.meamed(X, f, threads=t), np_meamed),
}


@pytest.mark.parametrize("rule", list(RULES))
def test_numpy(benchmark, case, rule) -> None:
    X, f = case
    benchmark.group = f"{rule}-{X.shape[0]}x{X.shape[1]}"
    out = benchmark(RULES[rule][1], X, f)
    np.testing.assert_allclose(agg_result(rule, X, f), out, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("threads", THREADS, ids=["t1", "tall"])
@pytest.mark.parametrize("rule", list(RULES))
def test_cyclad(benchmark, case, rule, threads) -> None:
    X, f = case
    benchmark.group = f"{rule}-{X.shape[0]}x{X.shape[1]}"
    out = benchmark(RULES[rule][0], X, f, threads)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, RULES[rule][1](X, f), rtol=1e-4, atol=1e-5)


def agg_result(rule: str, X: np.ndarray, f: int) -> np.ndarray:
    return RULES[rule][0](X, f, None)
