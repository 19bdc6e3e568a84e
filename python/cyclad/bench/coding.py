"""Bench area ``coding``: the cyclic encoding kernel ``coding.encode``.

For each size the record holds:

- ``seconds``: best wall time of ``cyclad.coding.encode`` (output allocation included, as a
  user sees it);
- ``nbytes``: the memory traffic the kernel cannot avoid, ``(N + n) * D * itemsize`` (read ``G``
  once, write ``z`` once), so ``GB/s`` is traffic bandwidth;
- ``read_pass_seconds`` / ``x read pass``: ratio to the C++ read pass over ``G`` alone
  (``N * D * itemsize`` bytes, same thread count);
- ``extra["x traffic"]``: ratio to a read pass over the traffic bytes, estimated as the read
  pass over ``G`` scaled by ``(N + n) / N`` (i.e. writing ``z`` costed at read bandwidth). The
  target is ``<= 1.5``;
- baselines: ``numpy`` (the best NumPy way found: the dense ``(n, N)`` coefficient matrix times
  ``G``, one BLAS GEMM with ``k = N``, running on BLAS's own threads), ``numpy-loop``
  (``sum_j w[:, j, None] * G[a[:, j]]``, the direct fancy-indexing translation; only for
  ``D <= 1e6`` since it materialises ``(n, D)`` temporaries) and ``torch`` (the same GEMM with
  ``torch.set_num_threads`` matched to the record), when torch is installed.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from cyclad import _core
from cyclad import coding as cod
from cyclad.bench._harness import Record, best_time, read_pass_time


def coefficient_matrix(a: np.ndarray, w: np.ndarray, N: int, dtype: Any) -> np.ndarray:
    """Dense ``(n, N)`` matrix ``W`` with ``W @ G == encode(G, a, w)`` (repeats add up)."""
    n, d = a.shape
    W = np.zeros((n, N))
    np.add.at(W, (np.repeat(np.arange(n), d), a.ravel()), np.broadcast_to(w, (n, d)).ravel())
    return np.asarray(W.astype(dtype))


def numpy_loop(G: np.ndarray, a: np.ndarray, w: np.ndarray) -> np.ndarray:
    out: np.ndarray = w[:, 0, None] * G[a[:, 0]]
    for j in range(1, a.shape[1]):
        out += w[:, j, None] * G[a[:, j]]
    return out


def run(quick: bool = False) -> list[Record]:
    n = 20
    sizes = [10**5] if quick else [10**6, 10**7]
    repeat = 3 if quick else 5
    all_threads = int(_core.hardware_threads())
    thread_counts = sorted({1, all_threads})
    torch: Any
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is optional
        torch = None
    rng = np.random.default_rng(0)
    records: list[Record] = []
    for D in sizes:
        G = rng.standard_normal((n, D), dtype=np.float32)
        item = G.itemsize
        for d in (2, 4, 10):
            code = cod.CyclicCode(n, d, seed=0)
            a = code.assignment(0)
            w = np.full((n, d), 1.0 / d, dtype=np.float32)
            W = coefficient_matrix(a, w, n, np.float32)
            base: dict[str, float] = {}
            base["numpy"] = best_time(partial(np.matmul, W, G), repeat=repeat)
            if D <= 10**6:
                base["numpy-loop"] = best_time(partial(numpy_loop, G, a, w), repeat=repeat)
            for t in thread_counts:
                rp = read_pass_time(G, threads=t, repeat=repeat)
                sec = best_time(partial(cod.encode, G, a, w, threads=t), repeat=repeat)
                baselines = dict(base)
                if torch is not None:
                    old = torch.get_num_threads()
                    torch.set_num_threads(t)
                    try:
                        Gt, Wt = torch.from_numpy(G), torch.from_numpy(W)
                        baselines["torch"] = best_time(partial(torch.mm, Wt, Gt), repeat=repeat)
                    finally:
                        torch.set_num_threads(old)
                traffic_rp = rp * (n + n) / n
                records.append(
                    Record(
                        area="coding",
                        name="encode",
                        params={"n": n, "d": d, "D": D, "dtype": "float32"},
                        threads=t,
                        seconds=sec,
                        nbytes=(n + n) * D * item,
                        read_pass_seconds=rp,
                        baselines=baselines,
                        extra={"x traffic": round(sec / traffic_rp, 2)},
                    )
                )
    return records
