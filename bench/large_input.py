"""Inputs past 2**31 elements: check that the kernels index them with 64-bit offsets.

Not part of the test suite (it needs ~9-18 GB of memory). Run it with
``python bench/large_input.py [--threads T] [--only A,B]``.

Cases (float32, the smallest inputs that cross the limit):

A. ``n = 16`` rows of ``D = 2**27 + 1``: ``n * D = 2**31 + 16`` elements (8.6 GB) -- the total
   crosses 2**31, no single row does. Rules: mean, median, trimmed_mean, krum,
   geometric_median(max_iter=1), nnm.
B. ``n = 1`` row of ``D = 2**31 + 1`` elements (8.6 GB): a single row past 2**31. Rules: mean,
   median (the others need n >= 3 rows, i.e. >= 25.8 GB).

Rows are constant, with values ``i mod 4``, so every expected result is known in closed form and
checked with reductions over the output (no copy of the input): mean = median =
trimmed_mean(f=2) = 1.5 everywhere; krum(f=2) = row 1 (all ones); nnm(f=2) rows = 18/14 for
rows of value 0 or 1 and 24/14 for rows of value 2 or 3; geometric_median(max_iter=1) is a
constant vector in [0, 3]. A case is skipped, with the reason printed, when MemAvailable is
below its peak (input plus the largest output) plus 1 GB.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable

import numpy as np

import cyclad.aggregators as agg
from cyclad import _core

GB = 1e9


def mem_available() -> float:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return float("inf")


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def constant_rows(n: int, D: int) -> np.ndarray:
    X = np.empty((n, D), dtype=np.float32)
    for i in range(n):
        X[i].fill(i % 4)
    return X


def constant(v: np.ndarray, value: float) -> bool:
    """Every entry of ``v`` equals ``value`` (reductions only; no copy of ``v``)."""
    return bool(v.min() == value and v.max() == value)


def run(name: str, fn: Callable[[], np.ndarray], check: Callable[[np.ndarray], str | None]):
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    problem = check(out)
    status = "ok" if problem is None else f"WRONG: {problem}"
    print(f"  {name:<28} {dt:8.2f} s   shape {out.shape!s:<22} {status}", flush=True)
    del out
    return problem is None


def case_a(threads: int | None) -> bool:
    n, D = 16, 2**27 + 1
    print(f"A. n={n}, D={D}: n*D = {n * D} = 2**31 + {n * D - 2**31} elements, float32")
    X = constant_rows(n, D)
    ok = True
    ok &= run("mean", lambda: agg.mean(X, threads=threads), _const(1.5))
    ok &= run("median", lambda: agg.median(X, threads=threads), _const(1.5))
    ok &= run("trimmed_mean(f=2)", lambda: agg.trimmed_mean(X, 2, threads=threads), _const(1.5))
    ok &= run("krum(f=2)", lambda: agg.krum(X, 2, threads=threads), _const(1.0))

    def gm_check(z: np.ndarray) -> str | None:
        lo, hi = float(z.min()), float(z.max())
        if not (lo == hi and 0.0 <= lo <= 3.0):
            return f"not a constant vector in [0, 3]: min {lo}, max {hi}"
        return None

    ok &= run(
        "geometric_median(max_iter=1)",
        lambda: agg.geometric_median(X, max_iter=1, threads=threads),
        gm_check,
    )
    if mem_available() < X.nbytes + GB:  # the (n, D) output is as large as the input
        print(f"  nnm(f=2) skipped: needs {(2 * X.nbytes + GB) / GB:.1f} GB with the input")
    else:

        def nnm_check(Y: np.ndarray) -> str | None:
            for i in range(n):
                want = np.float32(18 / 14) if i % 4 < 2 else np.float32(24 / 14)
                if not constant(Y[i], want):
                    return f"row {i}: min {Y[i].min()}, max {Y[i].max()}, expected {want}"
            return None

        ok &= run("nnm(f=2)", lambda: agg.nnm(X, 2, threads=threads), nnm_check)
    return ok


def case_b(threads: int | None) -> bool:
    n, D = 1, 2**31 + 1
    print(f"B. n={n}, D={D}: one row of 2**31 + 1 elements, float32")
    X = np.empty((n, D), dtype=np.float32)
    X.fill(3.0)
    ok = True
    ok &= run("mean", lambda: agg.mean(X, threads=threads), _const(3.0))
    ok &= run("median", lambda: agg.median(X, threads=threads), _const(3.0))
    return ok


def _const(value: float) -> Callable[[np.ndarray], str | None]:
    def check(v: np.ndarray) -> str | None:
        if constant(v, value):
            return None
        return f"expected all {value}, got min {v.min()}, max {v.max()}"

    return check


CASES = {"A": (case_a, 16 * (2**27 + 1) * 4 + (2**27 + 1) * 8), "B": (case_b, 2 * (2**31 + 1) * 4)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=None, help="worker threads (default: all)")
    p.add_argument("--only", default="A,B", help="comma-separated cases to run (default: A,B)")
    args = p.parse_args()
    print(
        f"CPU: {cpu_name()} ({os.cpu_count()} logical CPUs, kernels use "
        f"{_core.hardware_threads() if args.threads is None else args.threads} threads, "
        f"OpenMP {'on' if _core._has_openmp else 'off'})"
    )
    print(
        f"NumPy {np.__version__}, Python {platform.python_version()}, "
        f"MemAvailable {mem_available() / GB:.1f} GB"
    )
    failed = []
    for name in args.only.split(","):
        fn, peak = CASES[name.strip().upper()]
        if mem_available() < peak + GB:
            print(
                f"{name}. skipped: needs {(peak + GB) / GB:.1f} GB, "
                f"{mem_available() / GB:.1f} GB available"
            )
            continue
        t0 = time.perf_counter()
        if not fn(args.threads):
            failed.append(name)
        print(f"  ({time.perf_counter() - t0:.1f} s including allocation and fill)")
    print("all results as expected" if not failed else f"WRONG results in case(s) {failed}")
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
