"""Bench area ``coding``: the cyclic encoding kernel ``coding.encode``, n = 20 devices,
d in {2, 4, 10}, D in {1e6, 1e7} (``--quick``: D = 1e5), float32, threads in {1, all}.

For each size the record holds:

- ``seconds``: median wall time of ``cyclad.coding.encode``: for ``encode`` the output
  allocation included, as a first call sees it (a fresh ``(n, D)`` array costs the operating
  system's page faults and zeroing on first touch, about one more write of ``z``); for
  ``encode_out`` into one reused buffer (``out=``), as a caller encoding every round runs it;
- ``nbytes``: the memory traffic the kernel cannot avoid, ``(N + n) * D * itemsize`` (read ``G``
  once, write ``z`` once), so ``GB/s`` is traffic bandwidth;
- ``read_pass`` / ``x read pass``: ratio to the C++ read pass over ``G`` alone
  (``N * D * itemsize`` bytes, same thread count);
- ``extra["x traffic"]``: ratio to a read pass over the traffic bytes, estimated as the read
  pass over ``G`` scaled by ``(N + n) / N`` (i.e. writing ``z`` costed at read bandwidth). The
  target is ``<= 1.5``;
- baselines: ``numpy`` (the best NumPy way found: the dense ``(n, N)`` coefficient matrix times
  ``G``, one BLAS GEMM with ``k = N``, running on BLAS's own threads), ``numpy-loop``
  (``sum_j w[:, j, None] * G[a[:, j]]``, the direct fancy-indexing translation; only for
  ``D <= 1e6`` since it materialises ``(n, D)`` temporaries) and ``torch`` (the same GEMM with
  ``torch.set_num_threads`` matched to the record), when torch is installed. For
  ``encode_out`` the GEMMs write into a reused buffer too (``out=``), and ``GFLOP/s`` counts a
  multiplication and an addition per term (``2 n d D``): at d = 10 the kernel is bound by them,
  not by memory.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from cyclad import coding as cod
from cyclad.bench._harness import (
    Record,
    Report,
    Settings,
    Timing,
    grouped_tables,
    measure,
    peers,
    read_pass,
    set_efficiency,
    settle,
    thread_counts,
)

AREA = "coding"
#: n, the D values and the d values per mode
SIZES: dict[str, tuple[int, tuple[int, ...], tuple[int, ...]]] = {
    "full": (20, (10**6, 10**7), (2, 4, 10)),
    "quick": (20, (10**5,), (2, 4, 10)),
    "tiny": (6, (1000,), (2, 3)),
}


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


def run(settings: Settings) -> Report:
    """Time ``coding.encode`` and its baselines at every size of the mode."""
    n, sizes, ds = SIZES[settings.mode]
    budget = settings.budget
    notes: list[str] = []
    torch, _ = peers(settings, notes, ("torch",))
    rng = np.random.default_rng(0)
    records: list[Record] = []
    for D in sizes:
        G = rng.standard_normal((n, D), dtype=np.float32)
        item = G.itemsize
        for d in ds:
            settings.say(f"coding: n={n} d={d} D={D}")
            code = cod.CyclicCode(n, d, seed=0)
            a = code.assignment(0)
            w = np.full((n, d), 1.0 / d, dtype=np.float32)
            W = coefficient_matrix(a, w, n, np.float32)
            buf = np.empty((n, D), dtype=np.float32)
            base: dict[str, Timing] = {}
            base_out: dict[str, Timing] = {}
            if "numpy" in settings.baselines:
                base["numpy"] = measure(partial(np.matmul, W, G), budget)
                base_out["numpy"] = measure(partial(np.matmul, W, G, out=buf), budget)
                if D <= 10**6:
                    base["numpy-loop"] = measure(partial(numpy_loop, G, a, w), budget)
            for t in thread_counts():
                rp = read_pass(G, t, budget)
                tm = measure(partial(cod.encode, G, a, w, threads=t), budget)
                tm_out = measure(partial(cod.encode, G, a, w, out=buf, threads=t), budget)
                baselines, baselines_out = dict(base), dict(base_out)
                if torch is not None:
                    old = torch.get_num_threads()
                    torch.set_num_threads(t)
                    try:
                        Gt, Wt, Bt = torch.from_numpy(G), torch.from_numpy(W), torch.from_numpy(buf)
                        baselines["torch"] = measure(partial(torch.mm, Wt, Gt), budget)
                        baselines_out["torch"] = measure(partial(torch.mm, Wt, Gt, out=Bt), budget)
                    finally:
                        torch.set_num_threads(old)
                    settle(settings)
                traffic_rp = rp.median * (n + n) / n
                for name, timing, peer in (
                    ("encode", tm, baselines),
                    ("encode_out", tm_out, baselines_out),
                ):
                    extra: dict[str, Any] = {"x traffic": round(timing.median / traffic_rp, 2)}
                    if name == "encode_out":  # a multiplication and an addition per term
                        extra["GFLOP/s"] = round(2 * n * d * D / timing.median / 1e9, 1)
                    records.append(
                        Record(
                            area=AREA,
                            name=name,
                            params={"n": n, "d": d, "D": D, "dtype": "float32"},
                            threads=t,
                            timing=timing,
                            nbytes=(n + n) * D * item,
                            read_pass=rp,
                            baselines=peer,
                            extra=extra,
                        )
                    )
            del buf
        del G
    set_efficiency(records)
    return Report(AREA, settings.mode, records, grouped_tables(records), notes)
