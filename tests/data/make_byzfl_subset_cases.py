"""Regenerate ``byzfl_0.0.11_subset_cases.npz``: ByzFL 0.0.11's MDA, SMEA and CAF outputs on
fixed inputs, for tests/test_aggregators_subset.py (the test extra does not install ByzFL).

Run once with ``pip install --no-deps byzfl==0.0.11``::

    python -m tests.data.make_byzfl_subset_cases

ByzFL's SMEA and CAF estimate each largest eigenvalue with one power step from a random vector
``v`` (``np.random.randn``): the estimate is ``|S v|`` for the scatter ``S``, which is random
even for a rank-1 ``S``. cyclad computes the eigenvalue exactly. The two agree exactly for
D = 1 (``v = +-1``), so the CAF cases and half of the SMEA cases are one-dimensional. The other
SMEA cases are general inputs whose selected subset ByzFL returns for each of 20 seeds.
"""

from __future__ import annotations

import pathlib

import numpy as np

from cyclad.bench._harness import load_byzfl

OUT = pathlib.Path(__file__).with_name("byzfl_0.0.11_subset_cases.npz")


def _general(rng: np.random.Generator, outliers: bool = False) -> tuple[np.ndarray, int]:
    n = int(rng.integers(4, 10))
    f = int(rng.integers(1, (n - 1) // 2 + 1))
    X = rng.standard_normal((n, int(rng.integers(2, 24))))
    b = f if outliers else int(rng.integers(0, f + 1))
    for i in rng.choice(n, size=b, replace=False):
        X[i] = X[i] * rng.uniform(3, 30) + rng.uniform(-5, 5)
    return X, f


def _one_dim(rng: np.random.Generator) -> tuple[np.ndarray, int]:
    n = int(rng.integers(3, 12))
    f = int(rng.integers(1, (n - 1) // 2 + 1))
    t = rng.standard_normal(n)
    t[rng.choice(n, size=int(rng.integers(0, f + 1)), replace=False)] *= 20
    return (t + rng.standard_normal())[:, None], f


def main() -> None:
    byz = load_byzfl()
    rng = np.random.default_rng(20261203)
    out: dict[str, np.ndarray] = {}
    cases = {"mda": 0, "smea": 0, "caf": 0}

    def put(rule: str, X: np.ndarray, f: int, y: np.ndarray) -> None:
        k = cases[rule]
        out[f"{rule}{k}_X"], out[f"{rule}{k}_f"], out[f"{rule}{k}_out"] = X, np.array(f), y
        cases[rule] = k + 1

    for _ in range(12):
        X, f = _general(rng)
        put("mda", X, f, np.asarray(byz.MDA(f)(X)))
    for _ in range(8):
        X, f = _one_dim(rng)
        np.random.seed(0)  # noqa: NPY002 - ByzFL draws from the global generator
        put("smea", X, f, np.asarray(byz.SMEA(f)(X)))
    for _ in range(200):
        if cases["smea"] == 16:
            break
        X, f = _general(rng, outliers=True)
        ys = []
        for seed in range(20):
            np.random.seed(seed)  # noqa: NPY002 - ByzFL draws from the global generator
            ys.append(np.asarray(byz.SMEA(f)(X)))
        if all(np.array_equal(y, ys[0]) for y in ys):
            put("smea", X, f, ys[0])
    for _ in range(10):
        X, f = _one_dim(rng)
        np.random.seed(0)  # noqa: NPY002 - ByzFL draws from the global generator
        put("caf", X, f, np.asarray(byz.CAF(f)(X)))
    for rule, k in cases.items():
        out[f"n_{rule}"] = np.array(k)
    np.savez_compressed(OUT, **out)


if __name__ == "__main__":
    main()
