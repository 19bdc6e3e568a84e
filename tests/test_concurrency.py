"""Every kernel called from 4 Python threads at once (the bindings release the GIL) gives exactly
the serial results, bit for bit, with threads=1 and threads=2 inside each call."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

import cyclad.aggregators as agg
import cyclad.compression as comp
from cyclad import coding

N_THREADS = 4
ROUNDS = 3  # calls per Python thread, each on its own input

AGGREGATORS: dict[str, Callable[..., Any]] = {
    "mean": lambda X, t: agg.mean(X, threads=t),
    "median": lambda X, t: agg.median(X, threads=t),
    "trimmed_mean": lambda X, t: agg.trimmed_mean(X, 3, threads=t),
    "meamed": lambda X, t: agg.meamed(X, 3, threads=t),
    "krum": lambda X, t: agg.krum(X, 3, threads=t),
    "multi_krum": lambda X, t: agg.multi_krum(X, 3, threads=t),
    "geometric_median": lambda X, t: agg.geometric_median(X, max_iter=20, threads=t),
    "centered_clipping": lambda X, t: agg.centered_clipping(X, 2.0, 3, threads=t),
    "nnm": lambda X, t: agg.nnm(X, 3, threads=t),
    "bucketing": lambda X, t: agg.bucketing(X, 2, 7, threads=t),
    "clip": lambda X, t: agg.clip(X, 2.0, threads=t),
    "arc": lambda X, t: agg.arc(X, 3, threads=t),
    "mda": lambda X, t: agg.mda(X, 3, threads=t),
    "smea": lambda X, t: agg.smea(X, 3, threads=t),
    "caf": lambda X, t: agg.caf(X, 3, threads=t),
    "nnm+trimmed_mean": lambda X, t: agg.get("nnm+trimmed_mean", f=3, threads=t)(X),
    "mean_weighted": lambda X, t: agg.mean(X, weights=np.arange(1.0, X.shape[0] + 1), threads=t),
    "multi_krum_weighted": lambda X, t: agg.multi_krum(
        X, 3, weights=np.arange(1.0, X.shape[0] + 1), threads=t
    ),
    "closest": lambda X, t: agg.closest(X, np.zeros(X.shape[1]), 5, threads=t),
    "closest_coordinate": lambda X, t: agg.closest(
        X, np.zeros(X.shape[1]), 5, metric="coordinate", threads=t
    ),
    "bulyan": lambda X, t: agg.bulyan(X, 2, threads=t),
    "bulyan_multi_krum": lambda X, t: agg.bulyan(X, 2, selection="multi_krum", threads=t),
}

COMPRESSORS: dict[str, Callable[[], Any]] = {
    "topk": lambda: comp.TopK(ratio=0.05),
    "randk": lambda: comp.RandK(ratio=0.05),
    "randk_shared": lambda: comp.RandK(ratio=0.05, shared=True),
    "qsgd": lambda: comp.QSGD(levels=16),
    "sign": lambda: comp.Sign(),
    "identity": lambda: comp.Identity(),
    "natural": lambda: comp.Natural(),
    "terngrad": lambda: comp.TernGrad(bucket=512),
}


def test_every_registered_component_is_exercised() -> None:
    names = agg.available()
    assert set(names["rules"]) | set(names["pre_aggregations"]) <= set(AGGREGATORS)


def run_concurrently(task: Callable[[int, int], Any]) -> dict[tuple[int, int], Any]:
    """``task(worker, round)`` for every worker and round, the workers in parallel threads that
    start together; returns the results keyed by ``(worker, round)``."""
    barrier = threading.Barrier(N_THREADS)

    def worker(w: int) -> dict[tuple[int, int], Any]:
        barrier.wait()
        return {(w, r): task(w, r) for r in range(ROUNDS)}

    out: dict[tuple[int, int], Any] = {}
    with ThreadPoolExecutor(N_THREADS) as pool:
        for part in pool.map(worker, range(N_THREADS)):
            out.update(part)
    return out


def same(a: Any, b: Any) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)


@pytest.fixture(scope="module")
def inputs() -> dict[tuple[int, int, type], np.ndarray]:
    """One (n, D) input per (worker, round, dtype), with a few NaN / Inf rows in some."""
    rng = np.random.default_rng(7)
    out = {}
    for w in range(N_THREADS):
        for r in range(ROUNDS):
            X = rng.standard_normal((15, 6007)) * rng.uniform(0.5, 2.0, (15, 1))
            if (w + r) % 2:
                X[w % 15, ::97] = np.nan
                X[(w + 5) % 15, 3] = np.inf
            for dt in (np.float32, np.float64):
                out[w, r, dt] = X.astype(dt)
    return out


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", list(AGGREGATORS))
def test_aggregators_concurrent_equal_serial(name, dtype, threads, inputs) -> None:
    fn = AGGREGATORS[name]
    serial = {
        (w, r): fn(inputs[w, r, dtype], threads) for w in range(N_THREADS) for r in range(ROUNDS)
    }
    got = run_concurrently(lambda w, r: fn(inputs[w, r, dtype], threads))
    for key, expected in serial.items():
        assert same(got[key], expected), f"worker/round {key}"
    # All threads on one shared input at once.
    shared = inputs[0, 0, dtype]
    got = run_concurrently(lambda w, r: fn(shared, threads))
    assert all(same(v, serial[0, 0]) for v in got.values())


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_encode_concurrent_equal_serial(dtype, threads, inputs) -> None:
    code = coding.CyclicCode(15, 4, seed=11)
    W = np.random.default_rng(3).standard_normal((15, 4)).astype(dtype)

    def task(w: int, r: int) -> np.ndarray:
        G = inputs[w, r, dtype]
        a = code.assignment(w * ROUNDS + r)
        return coding.encode(G, a, W if r % 2 else None, threads=threads)

    serial = {(w, r): task(w, r) for w in range(N_THREADS) for r in range(ROUNDS)}
    got = run_concurrently(task)
    for key, expected in serial.items():
        assert same(got[key], expected), f"worker/round {key}"


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", list(COMPRESSORS))
def test_compression_concurrent_equal_serial(name, dtype, threads, inputs) -> None:
    c = COMPRESSORS[name]()

    def task(w: int, r: int) -> tuple[bytes, np.ndarray]:
        x = inputs[w, r, dtype][w + r]
        x = np.where(np.isfinite(x), x, 0).astype(dtype)
        msg = c.compress(x, seed=1000 * w + r, threads=threads)
        wire = msg.to_bytes()
        back = c.decompress(comp.Message.from_bytes(wire), threads=threads)
        return wire, back

    serial = {(w, r): task(w, r) for w in range(N_THREADS) for r in range(ROUNDS)}
    got = run_concurrently(task)
    for key, (wire, back) in serial.items():
        assert got[key][0] == wire, f"message bytes differ for worker/round {key}"
        assert same(got[key][1], back), f"decompressed vector differs for worker/round {key}"


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_majority_vote_concurrent_equal_serial(dtype, threads, inputs) -> None:
    def task(w: int, r: int) -> np.ndarray:
        X = np.where(np.isfinite(inputs[w, r, dtype]), inputs[w, r, dtype], 0).astype(dtype)
        return comp.majority_vote([comp.Sign().compress(row) for row in X], threads=threads)

    serial = {(w, r): task(w, r) for w in range(N_THREADS) for r in range(ROUNDS)}
    got = run_concurrently(task)
    for key, expected in serial.items():
        assert same(got[key], expected), f"worker/round {key}"


@pytest.mark.parametrize("threads", [1, 2])
def test_error_feedback_instances_concurrent_equal_serial(threads, inputs) -> None:
    # Stateful wrappers: one instance per thread, each fed its own sequence of rounds.
    def sequence(w: int) -> list[bytes]:
        ef = comp.ErrorFeedback(comp.TopK(ratio=0.02))
        return [
            ef.compress(inputs[w, r, np.float32][w], seed=r, threads=threads).to_bytes()
            for r in range(ROUNDS)
        ]

    serial = {w: sequence(w) for w in range(N_THREADS)}
    barrier = threading.Barrier(N_THREADS)

    def worker(w: int) -> list[bytes]:
        barrier.wait()
        return sequence(w)

    with ThreadPoolExecutor(N_THREADS) as pool:
        got = dict(zip(range(N_THREADS), pool.map(worker, range(N_THREADS)), strict=True))
    assert got == serial
