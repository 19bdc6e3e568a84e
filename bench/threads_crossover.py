"""When does a second thread pay? 1-thread / 2-thread time ratios per kernel family.

Run it against a build that wakes threads for any input size, so that the ratio shows the
crossover rather than the default threshold (1 MiB of input per thread):

    pip install --no-build-isolation -Cbuild-dir=build/cross \
        -Ccmake.define.CMAKE_CXX_FLAGS=-DCYCLAD_MIN_BYTES_PER_THREAD=1 -e .
    python bench/threads_crossover.py

Results: bench/results/threads-crossover-<date>.md.
"""

from __future__ import annotations

import time

import numpy as np

import cyclad.aggregators as agg
import cyclad.compression as comp
from cyclad import coding

rng = np.random.default_rng(0)


def t(f, reps: int) -> float:
    f()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


n = 20
fams = {
    "mean": lambda X, th: agg.mean(X, threads=th),
    "trimmed_mean": lambda X, th: agg.trimmed_mean(X, 4, threads=th),
    "krum": lambda X, th: agg.krum(X, 4, threads=th),
    "geometric_median(1 it)": lambda X, th: agg.geometric_median(X, max_iter=1, threads=th),
    "encode d=4": lambda X, th: coding.encode(X, A, threads=th),
    "topk 1% (row 0)": lambda X, th: comp.TopK(ratio=0.01).compress(X[0], threads=th),
    "qsgd (row 0)": lambda X, th: comp.QSGD(levels=16).compress(X[0], seed=1, threads=th),
}
A = coding.CyclicCode(n, 4, seed=0).assignment(0)
print("input bytes (n=20 rows, float32):", end="")
sizes = [2**k for k in range(13, 20)]  # D: 8K..512K -> 640 KiB .. 40 MiB
print(" ".join(f"{n * 4 * D // 1024}K" for D in sizes))
for name, f in fams.items():
    row = []
    for D in sizes:
        X = rng.standard_normal((n, D)).astype(np.float32)
        reps = max(5, int(2e6 // D))
        t1 = t(lambda f=f, X=X: f(X, 1), reps)
        t2 = t(lambda f=f, X=X: f(X, 2), reps)
        row.append(f"{t1 / t2:4.2f}")
    print(f"{name:24s} speed-up 2 threads:", " ".join(row))
