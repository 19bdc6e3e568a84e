"""Every kernel gives the same result on every instruction set this CPU runs.

The kernels are compiled for x86-64-v4 (AVX-512), x86-64-v3 (AVX2 + FMA) and baseline x86-64
inside one build and dispatched at run time (``_core.set_isa`` / ``CYCLAD_ISA``). Each test runs
a kernel on every ISA up to the CPU's best and compares with the best one:

- bit-identical for every kernel but the pairwise distances: the wider vectors keep the same
  lanes and the same order of operations, and the build never fuses ``a * b + c`` on its own
  (``-ffp-contract=off``), so the bytes a device sends do not depend on its CPU;
- the pairwise distances (Krum, Multi-Krum, NNM, MDA, SMEA, CAF), which are compute-bound,
  use fused multiply-adds on x86-64-v3 and v4, so their distances differ from baseline's by
  rounding: the selections (and so the outputs of the selecting rules) agree unless two
  candidates tie to the last bits; CAF, whose weights are continuous in the distances, agrees
  to a tolerance (1e-9 relative in float64, 1e-4 in float32), and bit for bit between v3 and
  v4.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import numpy as np
import pytest

from cyclad import _core, aggregators, coding, compression

_ORDER = ["baseline", "x86-64-v3", "x86-64-v4"]


def _supported() -> list[str]:
    best = _core.best_isa()
    if best not in _ORDER:  # a build without dispatch has one ISA
        return [best]
    return _ORDER[: _ORDER.index(best) + 1]


ISAS = _supported()


@pytest.fixture(autouse=True)
def _restore_isa() -> Iterator[None]:
    before = _core.isa_path()
    yield
    if before in _ORDER:
        _core.set_isa(before)


def on_every_isa(fn: Callable[[], Any]) -> dict[str, Any]:
    out = {}
    for isa in ISAS:
        _core.set_isa(isa)
        assert _core.isa_path() == isa
        out[isa] = fn()
    return out


def _as_arrays(v: Any) -> list[np.ndarray]:
    if isinstance(v, tuple):
        return [np.asarray(a) for a in v]
    return [np.asarray(v)]


def assert_same(results: dict[str, Any]) -> None:
    best = ISAS[-1]
    for isa, r in results.items():
        for a, b in zip(_as_arrays(r), _as_arrays(results[best]), strict=True):
            np.testing.assert_array_equal(a, b, err_msg=f"{isa} vs {best}")
            if a.dtype.kind == "f":  # the same bits: -0 and +0, and NaN payloads, too
                u = np.dtype(f"u{a.dtype.itemsize}")
                np.testing.assert_array_equal(a.view(u), b.view(u), err_msg=f"{isa} vs {best}")


def test_the_active_isa_is_reported_and_settable() -> None:
    assert _core.isa_path() in (*_ORDER, f"native ({_core.best_isa()})")
    for isa in ISAS:
        _core.set_isa(isa)
        assert _core.isa_path() == isa


def test_an_isa_the_cpu_lacks_or_an_unknown_name_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown ISA 'avx9'"):
        _core.set_isa("avx9")
    if ISAS[-1] != "x86-64-v4" and ISAS[-1] in _ORDER:
        with pytest.raises(ValueError, match="cannot run x86-64-v4"):
            _core.set_isa("x86-64-v4")


def _import_with(value: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CYCLAD_ISA": value}
    code = "from cyclad import _core; print(_core.isa_path())"
    return subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cyclad_isa_environment_variable() -> None:
    r = _import_with(ISAS[0])
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == (ISAS[0] if ISAS[0] in _ORDER else _core.isa_path())
    bad = _import_with("sse9")
    assert bad.returncode != 0
    assert "CYCLAD_ISA: unknown ISA 'sse9'" in bad.stderr


# Sizes that exercise the vector bodies, the padded tails and more than one reduction block.
SHAPES = [(13, 5003), (4, 20000), (40, 777)]

RULES: dict[str, Callable[[np.ndarray], Any]] = {
    "mean": aggregators.mean,
    "median": aggregators.median,
    "trimmed_mean": lambda X: aggregators.trimmed_mean(X, 1),
    "meamed": lambda X: aggregators.meamed(X, 1),
    "krum": lambda X: aggregators.krum(X, 1),
    "multi_krum": lambda X: aggregators.multi_krum(X, 1),
    "nnm": lambda X: aggregators.nnm(X, 1),
    "bucketing": lambda X: aggregators.bucketing(X, 2, seed=3),
    "geometric_median": lambda X: aggregators.geometric_median(X, max_iter=20),
    "geometric_median_mean": lambda X: aggregators.geometric_median(X, max_iter=5, start="mean"),
    "centered_clipping": lambda X: aggregators.centered_clipping(X, tau=40.0, iters=3),
    "clip": lambda X: aggregators.clip(X, tau=40.0),
    "arc": lambda X: aggregators.arc(X, 1),
    "mean_weighted": lambda X: aggregators.mean(X, weights=np.arange(1.0, X.shape[0] + 1)),
    "multi_krum_weighted": lambda X: aggregators.multi_krum(
        X, 1, weights=np.arange(1.0, X.shape[0] + 1)
    ),
    "closest": lambda X: aggregators.closest(X, np.zeros(X.shape[1]), 2),
    "closest_coordinate": lambda X: aggregators.closest(
        X, np.zeros(X.shape[1]), 2, metric="coordinate"
    ),
    "bulyan": lambda X: aggregators.bulyan(X, 0 if X.shape[0] < 7 else 1),
    "bulyan_multi_krum": lambda X: aggregators.bulyan(
        X, 0 if X.shape[0] < 7 else 1, selection="multi_krum"
    ),
    "mda": lambda X: aggregators.mda(X, 1),
    "smea": lambda X: aggregators.smea(X, 1),
}


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("rule", RULES)
def test_aggregators_agree_across_isas(rule: str, shape: tuple[int, int], dtype: type) -> None:
    rng = np.random.default_rng(sum(shape))
    X = rng.standard_normal(shape).astype(dtype)
    X[1] *= 30.0  # one row far out, so clipping and selection have something to do
    assert_same(on_every_isa(lambda: RULES[rule](X)))


@pytest.mark.parametrize(
    "rule",
    [
        "krum",
        "multi_krum",
        "nnm",
        "geometric_median",
        "median",
        "bulyan",
        "closest",
        "closest_coordinate",
        "mda",
        "smea",
    ],
)
def test_hostile_rows_agree_across_isas(rule: str) -> None:
    rng = np.random.default_rng(7)
    X = rng.standard_normal((11, 3001))
    X[2, 17] = np.nan
    X[5] = 1e300
    X[6, 5] = -np.inf
    assert_same(on_every_isa(lambda: RULES[rule](X)))


@pytest.mark.parametrize("rule", ["median", "trimmed_mean", "meamed"])
def test_coordinatewise_agree_across_isas_at_every_group_size(rule: str, dtype: type) -> None:
    # The sorting network runs as register groups of 32 rows on x86-64-v4 and 16 on x86-64-v3
    # and the baseline, the merge levels above a group on the key block: row counts on both
    # sides of every group boundary, with poisoned values, give the same bits on every ISA.
    rng = np.random.default_rng(11)
    for n in (15, 16, 17, 31, 32, 33, 47, 48, 65, 100, 129):
        X = rng.standard_normal((n, 131)).astype(dtype)
        X[rng.random(X.shape) < 0.03] = np.nan
        X[rng.random(X.shape) < 0.02] = -np.inf
        X[0, :7] = 0.0
        X[1, :7] = -0.0
        for f in {0, 1, (n - 1) // 4, (n - 1) // 2}:
            if rule == "median":
                call = partial(aggregators.median, X)
            else:
                call = partial(getattr(aggregators, rule), X, f)
            assert_same(on_every_isa(call))


@pytest.mark.parametrize("rule", ["median", "trimmed_mean", "meamed"])
def test_coordinatewise_value_path_agrees_across_isas(rule: str, dtype: type) -> None:
    # The baseline sorts a register group on values (minps / maxps) when none of its loaded
    # lanes is NaN or -0, and on keys otherwise: columns of ties, zeros and infinities take the
    # value path; columns with one -0 or one NaN next to them take the key path. Both give the
    # bits of the other ISAs, -0 and +0 told apart.
    rng = np.random.default_rng(12)
    for n in (3, 5, 16, 17, 20, 33):
        X = rng.integers(-3, 4, size=(n, 263)).astype(dtype)  # many ties, many +0
        X[:, 40:48] = np.inf
        X[: n // 2, 48:56] = -np.inf
        X[n // 3, 100] = -0.0
        X[n // 2, 180] = np.nan
        X[:, 200:204] = -0.0
        X[0, 204:208] = 0.0
        for f in {0, 1, (n - 1) // 4}:
            if rule == "median":
                call = partial(aggregators.median, X)
            else:
                call = partial(getattr(aggregators, rule), X, f)
            results = on_every_isa(call)
            assert_same(results)
        if rule == "median" and n % 2 == 1:  # an odd median is a data value: compare exactly
            clean = np.ones(X.shape[1], bool)
            clean[[100, 180]] = False
            clean[200:208] = False
            got = results["baseline"][clean]
            np.testing.assert_array_equal(got, np.median(X[:, clean], axis=0).astype(dtype))
        if rule == "median":
            zeros = results["baseline"][200:208]
            assert np.all(np.signbit(zeros[:4])), "all -0 columns keep -0"


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_caf_agrees_across_isas_to_rounding(shape: tuple[int, int], dtype: type) -> None:
    # CAF's weights are a continuous function of the pairwise distances, which differ between
    # the fused (v3, v4) and baseline kernels by rounding: the results agree to a tolerance, and
    # exactly between ISAs that share the distance kernel's arithmetic.
    rng = np.random.default_rng(sum(shape))
    X = rng.standard_normal(shape).astype(dtype)
    X[1] *= 30.0
    X[3, 7] = np.nan
    results = on_every_isa(lambda: aggregators.caf(X, 1))
    best = results[ISAS[-1]]
    tol = 1e-4 if dtype == np.float32 else 1e-9
    for isa, r in results.items():
        assert np.isfinite(r).all(), isa
        np.testing.assert_allclose(r, best, rtol=tol, atol=tol, err_msg=f"{isa} vs {ISAS[-1]}")
    if "x86-64-v3" in results:
        assert_same({k: v for k, v in results.items() if k != "baseline"})


COMPRESSORS = {
    "topk": lambda: compression.TopK(ratio=0.01),
    "randk": lambda: compression.RandK(ratio=0.05),
    "qsgd": lambda: compression.QSGD(levels=16, bucket=512),
    "sign": lambda: compression.Sign(),
    "natural": lambda: compression.Natural(),
    "terngrad": lambda: compression.TernGrad(bucket=512),
}


@pytest.mark.parametrize("name", COMPRESSORS)
def test_compressors_agree_across_isas(name: str, dtype: type) -> None:
    x = np.random.default_rng(5).standard_normal(100_003).astype(dtype)
    comp = COMPRESSORS[name]()

    def run() -> tuple[np.ndarray, np.ndarray]:
        msg = comp.compress(x, seed=9)
        return np.frombuffer(msg.to_bytes(), dtype=np.uint8), compression.decompress(msg)

    assert_same(on_every_isa(run))


def test_natural_wide_range_agrees_across_isas(dtype: type) -> None:
    # subnormal and below-window values take the scalar path; the rest the vector path
    rng = np.random.default_rng(6)
    hi = 30 if dtype == np.float32 else 200
    x = (rng.standard_normal(20_011) * 10.0 ** rng.uniform(-hi, hi, 20_011)).astype(dtype)

    def run() -> np.ndarray:
        return np.frombuffer(compression.Natural().compress(x, seed=4).to_bytes(), np.uint8)

    assert_same(on_every_isa(run))


def test_majority_vote_agrees_across_isas(dtype: type) -> None:
    X = np.random.default_rng(8).standard_normal((20, 50_003)).astype(dtype)
    msgs = [compression.Sign().compress(r) for r in X]
    assert_same(on_every_isa(lambda: compression.majority_vote(msgs)))


def test_encode_agrees_across_isas(dtype: type) -> None:
    rng = np.random.default_rng(3)
    G = rng.standard_normal((10, 30011)).astype(dtype)
    a = coding.CyclicCode(10, 3).assignment(0)
    assert_same(on_every_isa(lambda: coding.encode(G, a)))


def test_fma_peak_is_a_positive_rate_on_every_isa() -> None:
    rates = on_every_isa(lambda: _core.fma_peak(threads=1, seconds=0.02))
    for isa, r in rates.items():
        assert np.isfinite(r), isa
        assert r > 1e8, (isa, r)  # any CPU does 0.1 GFLOP/s
