"""Bench area ``round``: where the time of one in-process LAD / Com-LAD round goes.

A synthetic MLP (1000 inputs, ``H`` hidden units, 10 classes, float64, the default dtype of
``cyclad run``) sized to about ``P`` parameters, ``n = 20`` devices holding 32 samples each,
redundancy ``d = 3``, server rule trimmed mean with ``f = 3``, no Byzantine device. Two
variants: LAD (raw vectors) and Com-LAD (top-k 1 % with EF14 error feedback on every device).
P in {1e5, 1e6}, 10 timed rounds (``--quick``: the same sizes, one timed round).

The round is the in-process simulation's (``cyclad.train``), step by step, timed per phase:

1. **gradient**: the ``N = n`` subset gradients at the current model, one pass each
   (``Model.subset_grads``; the simulation computes every subset once, not once per device);
2. **encode**: every device's coded vector ``z_i = sum_j b_ij g_j`` (one
   ``cyclad.coding.encode`` call over the round's cyclic assignment);
3. **compress**: every device's payload bytes (Com-LAD: its own ``ErrorFeedback(TopK)``
   compressor, then ``Message.to_bytes``; LAD: the raw little-endian vector);
4. **decode**: the server parses and validates each payload (``Message.from_bytes`` with the
   expected dimension and dtype, then ``decompress``; LAD: the raw bytes back to a vector);
5. **aggregate**: the robust rule over the ``(n, P)`` received vectors and the model step.

:mod:`cyclad.protocol` is one layer above the bench suite (DESIGN.md section 2), so this module
calls the kernels that ``protocol.encode_payload`` and ``protocol.Server`` call, in the same
order; ``tests/test_bench.py`` checks that one round here gives ``protocol.Server``'s model and
``protocol.encode_payload``'s bytes exactly.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

import cyclad.aggregators as agg
import cyclad.compression as comp
from cyclad import coding, models
from cyclad.bench._harness import (
    Record,
    Report,
    Settings,
    Timing,
    all_threads,
    peak_extra_bytes,
)

AREA = "round"
PHASES = ("gradient", "encode", "compress", "decode", "aggregate")
#: model sizes P and timed rounds (after one warm-up round) per mode
SIZES: dict[str, tuple[tuple[int, ...], int]] = {
    "full": ((10**5, 10**6), 10),
    "quick": ((10**5, 10**6), 1),
    "tiny": ((2000,), 1),
}
VARIANTS = ("LAD", "Com-LAD top-k 1% + EF14")
N_DEVICES, D, F, SAMPLES, CLASSES, LR = 20, 3, 3, 32, 10, 0.05


class RoundBench:
    """One LAD (``compressed=False``) or Com-LAD run of ``n`` devices on a synthetic MLP of
    about ``P`` parameters; :meth:`round` runs and times one round."""

    def __init__(
        self,
        P: int,
        *,
        compressed: bool,
        n: int = N_DEVICES,
        d: int = D,
        f: int = F,
        samples: int = SAMPLES,
        seed: int = 0,
        threads: int | None = None,
    ) -> None:
        features = min(1000, max(10, P // 100))
        hidden = max(1, round((P - CLASSES) / (features + 1 + CLASSES)))
        self.model = models.MLP(features, CLASSES, hidden=hidden)
        self.P = self.model.n_params
        self.n, self.d, self.f, self.threads = n, d, f, threads
        rng = np.random.default_rng(seed)
        self.X = rng.standard_normal((n * samples, features))
        self.y = rng.integers(0, CLASSES, n * samples)
        self.slices = [slice(j * samples, (j + 1) * samples) for j in range(n)]
        self.code = coding.CyclicCode(n, d, seed=seed)
        self.theta = self.model.init(seed)
        self.base: comp.Compressor | None = comp.TopK(ratio=0.01) if compressed else None
        self.device_comp = [
            comp.ErrorFeedback(comp.TopK(ratio=0.01)) if compressed else None for _ in range(n)
        ]
        self.rule = agg.get("trimmed_mean", f=f, threads=threads)
        self.payloads: list[bytes] = []
        self.t = 0

    def round(self) -> dict[str, float]:
        """Run the next round; seconds per phase."""
        t, n, P, th = self.t, self.n, self.P, self.threads
        c0 = time.perf_counter()
        G = self.model.subset_grads(self.theta, self.X, self.y, self.slices)
        c1 = time.perf_counter()
        Z = np.asarray(coding.encode(G, self.code.assignment(t), threads=th))
        c2 = time.perf_counter()
        payloads = []
        for i in range(n):
            cmp = self.device_comp[i]
            if cmp is None:
                payloads.append(np.ascontiguousarray(Z[i], dtype="<f8").tobytes())
            else:
                payloads.append(bytes(cmp.compress(Z[i], seed=t * n + i, threads=th).to_bytes()))
        c3 = time.perf_counter()
        V = np.empty((n, P), dtype=self.theta.dtype)
        for i, p in enumerate(payloads):
            if self.base is None:
                V[i] = np.frombuffer(p, dtype="<f8")
            else:
                msg = comp.Message.from_bytes(p, dim=P, dtype=V.dtype, threads=th)
                V[i] = self.base.decompress(msg, threads=th)
        c4 = time.perf_counter()
        self.theta = np.asarray(self.theta - LR * np.asarray(self.rule(V)), dtype=V.dtype)
        c5 = time.perf_counter()
        times = dict(zip(PHASES, np.diff([c0, c1, c2, c3, c4, c5]).tolist(), strict=True))
        self.payloads = payloads
        self.t += 1
        return times


def bench_round(P: int, compressed: bool, rounds: int, settings: Settings) -> dict[str, Any]:
    """Median seconds per phase over ``rounds`` rounds after a warm-up round, with the range,
    the uplink bytes of a round and the peak extra memory of one round."""
    rb = RoundBench(P, compressed=compressed)
    rb.round()  # warm-up
    samples: list[dict[str, float]] = [rb.round() for _ in range(rounds - 1)]
    # the last timed round is also the memory probe
    peak = peak_extra_bytes(lambda: samples.append(rb.round()))
    phases = {}
    for ph in [*PHASES, "round"]:
        xs = [sum(s.values()) if ph == "round" else s[ph] for s in samples]
        phases[ph] = Timing.of(xs, peak if ph == "round" else None)
    return {
        "P": rb.P,
        "hidden": rb.model.layers[0][1],
        "uplink_bytes": sum(len(p) for p in rb.payloads),
        "phases": phases,
        "rounds": rounds,
    }


def _table(results: list[dict[str, Any]]) -> str:
    head = ["P", "variant", *PHASES, "round", "spread", "peak MB", "uplink / round"]
    lines = [
        "Phase cells: median ms per round (share of the round).\n",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in results:
        ph: dict[str, Timing] = r["phases"]
        total = math.fsum(ph[p].median for p in PHASES)
        cells = [f"{ph[p].median * 1e3:.1f} ({100 * ph[p].median / total:.0f}%)" for p in PHASES]
        rnd = ph["round"]
        peak = rnd.peak_bytes
        lines.append(
            "| "
            + " | ".join(
                [
                    f"{r['P']:,}",
                    r["variant"],
                    *cells,
                    f"{rnd.median * 1e3:.1f}",
                    f"{100 * rnd.spread:.0f}%" if rnd.runs > 1 else "1 run",
                    "-" if peak is None else f"{peak / 1e6:.1f}",
                    f"{r['uplink_bytes'] / 1e6:.2f} MB",
                ]
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def _blas_one_thread(notes: list[str]) -> Any:
    """BLAS limited to one thread, as ``cyclad run`` does by default (``blas_threads = 1``), or
    None (with a note) without threadpoolctl."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        notes.append("threadpoolctl is not installed: BLAS ran on its default threads")
        return None
    return threadpool_limits(limits=1, user_api="blas")


def _run_sizes(sizes: tuple[int, ...], rounds: int, settings: Settings) -> list[dict[str, Any]]:
    results = []
    for P in sizes:
        for variant, compressed in zip(VARIANTS, (False, True), strict=True):
            settings.say(f"round: P={P} {variant}")
            res = bench_round(P, compressed, rounds, settings)
            res["variant"] = variant
            results.append(res)
    return results


def run(settings: Settings) -> Report:
    """LAD and Com-LAD rounds at every model size of the mode."""
    sizes, rounds = SIZES[settings.mode]
    notes: list[str] = []
    limiter = _blas_one_thread(notes)
    try:
        results = _run_sizes(sizes, rounds, settings)
    finally:
        if limiter is not None:
            limiter.restore_original_limits()
    records = []
    for res in results:
        params = {"P": res["P"], "n": N_DEVICES, "d": D, "f": F, "variant": res["variant"]}
        for ph, tm in res["phases"].items():
            records.append(
                Record(
                    AREA,
                    ph,
                    dict(params),
                    all_threads(),
                    tm,
                    res["uplink_bytes"],
                    group=res["variant"],
                    extra={"share": tm.median / res["phases"]["round"].median},
                )
            )
    notes += [f"MLP {r['hidden']} hidden units for P = {r['P']:,}" for r in results[::2]]
    notes.append(
        f"n = {N_DEVICES} devices, d = {D}, trimmed mean f = {F}, float64; kernels on all "
        f"threads, BLAS on one (as cyclad run by default); {rounds} timed round(s) after a "
        "warm-up round (median per phase; the last timed round is the memory probe)"
    )
    data = {
        "rounds": [
            {
                "P": r["P"],
                "variant": r["variant"],
                "uplink_bytes": r["uplink_bytes"],
                "phases": {k: v.to_dict() for k, v in r["phases"].items()},
            }
            for r in results
        ]
    }
    return Report(AREA, settings.mode, records, _table(results), notes, data=data)
