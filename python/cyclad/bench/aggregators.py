"""Bench area ``aggregators``: every rule in :mod:`cyclad.aggregators` against the C++ read pass
over the same bytes, and against NumPy, torch and ByzFL equivalents timed in the same process.

Two sweeps, float32, threads in {1, all}, ``f = max(1, n // 4)``:

* **time vs D** at n = 20, D in {1e4, 1e5, 1e6, 1e7} (``--quick``: D in {1e4, 3e4, 1e5});
* **time vs n** at D = 1e5, n in {10, 20, 50, 100, 200} (``--quick``: D = 1e4, n in
  {10, 20, 50});

then the hostile-row cases (:func:`bench_hostile`) at n = 20, D = 1e6 (``--quick``: 1e4).
Rules are looked up with ``getattr`` so the bench runs with whatever rules the installed package
has. Honesty rules for the baselines:

* a call (kernel or baseline) whose warm-up takes longer than the budget's ``slow`` seconds is
  timed once (``1 run`` in the table);
* the sort/argsort based NumPy and torch baselines and ByzFL are skipped above ``baseline_cap``
  elements: ``SWEEP_BASELINE_MAX_ELEMS`` (2e7) in the sweeps, where at n = 20, D = 1e7 they took
  most of a full run's time (torch's sorts alone about 280 s), and ``BASELINE_MAX_ELEMS`` (2e8) for
  one size (``--n/--D``), where they also allocate several int64 copies of the input; ByzFL is
  skipped above n = ``SWEEP_BYZFL_MAX_N`` (100) in the sweeps (about 134 s at n = 200,
  D = 1e5); every skip is noted;
* NumPy and ByzFL are timed once per (n, D) and shown beside both thread settings (NumPy is
  single-threaded; ByzFL uses torch / NumPy internally); torch is timed with
  ``torch.set_num_threads`` matching the cyclad thread count;
* ByzFL gets its own copy of the matrix: its ``Clipping`` and ``ARC`` scale the caller's array in
  place (so from its second call on they have little left to do, as the notes say).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np

import cyclad.aggregators as agg
from cyclad import _core
from cyclad.bench._harness import (
    Record,
    Report,
    Settings,
    Timing,
    copy_pass,
    grouped_tables,
    measure,
    peers,
    read_pass,
    set_efficiency,
    settle,
    thread_counts,
)

AREA = "aggregators"
BASELINE_MAX_ELEMS = 200_000_000
SWEEP_BASELINE_MAX_ELEMS = 20_000_000
SWEEP_BYZFL_MAX_N = 100

#: (n, D values) of the time-vs-D sweep, (D, n values) of the time-vs-n sweep, hostile (n, D)
SIZES: dict[str, dict[str, Any]] = {
    "full": {
        "vs_D": (20, (10**4, 10**5, 10**6, 10**7)),
        "vs_n": (10**5, (10, 20, 50, 100, 200)),
        "hostile": (20, 10**6),
    },
    "quick": {
        "vs_D": (20, (10**4, 3 * 10**4, 10**5)),
        "vs_n": (10**4, (10, 20, 50)),
        "hostile": (20, 10**4),
    },
    "tiny": {"vs_D": (6, (1000, 2000)), "vs_n": (1000, (5, 8)), "hostile": (6, 1000)},
}

Fn = Callable[[], Any]


# --------------------------------------------------------------------------------------------
# NumPy / torch / ByzFL baselines
# --------------------------------------------------------------------------------------------


# Rules whose cost is the pairwise distance pass: the whole call's time counts, so the rate is
# a lower bound on the pass's own.
PAIRWISE = frozenset(
    {
        "krum",
        "multi_krum",
        "multi_krum_weighted",
        "bulyan",
        "bulyan_multi_krum",
        "mda",
        "smea",
        "caf",
    }
)
# Kernels that read X twice and write an (n, D) output: their floor is a read pass plus a copy
# pass (column "x read + copy").
WRITE_FLOOR = frozenset({"clip", "arc", "clip_out", "arc_out"})


def np_trimmed_mean(X: np.ndarray, f: int) -> Any:
    n = X.shape[0]
    if f == 0:
        return X.mean(axis=0)
    part = np.partition(X, (f, n - f - 1), axis=0)
    return part[f : n - f].mean(axis=0)


def np_meamed(X: np.ndarray, f: int) -> Any:
    n = X.shape[0]
    med = np.median(X, axis=0)
    idx = np.argpartition(np.abs(X - med), n - f - 1, axis=0)[: n - f]
    return np.take_along_axis(X, idx, axis=0).mean(axis=0)


def np_closest(X: np.ndarray, ref: np.ndarray, beta: int) -> Any:
    d2 = ((X - ref) ** 2).sum(axis=1)
    return X[np.sort(np.argsort(d2, kind="stable")[:beta])].mean(axis=0)


def np_closest_coordinate(X: np.ndarray, ref: np.ndarray, beta: int) -> Any:
    # Flower's aggregate_n_closest_weights: argpartition of |X - ref| per coordinate.
    idx = np.argpartition(np.abs(X - ref), beta - 1, axis=0)[:beta]
    return np.take_along_axis(X, idx, axis=0).mean(axis=0)


def torch_median(torch: Any, t: Any) -> Any:
    # torch.median returns the lower middle value for even n; sort and average the two.
    n = t.shape[0]
    s = torch.sort(t, dim=0).values
    return (s[(n - 1) // 2] + s[n // 2]) / 2


def torch_trimmed_mean(torch: Any, t: Any, f: int) -> Any:
    n = t.shape[0]
    return torch.sort(t, dim=0).values[f : n - f].mean(dim=0)


# MDA and SMEA search all C(n, f) subsets: the bench gives them the largest f' <= f with
# C(n, f') <= SUBSET_BENCH_MAX, and ByzFL's versions (a Python loop over the subsets; SMEA copies
# the n - f' rows of each) run only while that stays small.
SUBSET_BENCH_MAX = 20_000
BYZFL_SMEA_MAX_COPY = 200_000_000  # C(n, f') (n - f') D elements copied


def subset_f(n: int, f: int) -> int:
    """The f the bench uses for MDA and SMEA at n rows (see SUBSET_BENCH_MAX)."""
    g = min(f, (n - 1) // 2)
    while g > 0 and math.comb(n, g) > SUBSET_BENCH_MAX:
        g -= 1
    return g


def _cases(
    X: np.ndarray, f: int, tau: float, s: int
) -> list[tuple[str, str, Callable[[Any], Any]]]:
    """(rule name, call description, call(threads)) for every rule present in cyclad (looked up
    with getattr, so the bench runs before every rule has landed)."""
    n_rows = X.shape[0]
    table: list[tuple[str, str, tuple[Any, ...], dict[str, Any]]] = [
        ("mean", "mean(X)", (), {}),
        ("median", "median(X)", (), {}),
        ("trimmed_mean", f"trimmed_mean(X, {f})", (f,), {}),
        ("meamed", f"meamed(X, {f})", (f,), {}),
        ("krum", f"krum(X, {f})", (f,), {}),
        ("multi_krum", f"multi_krum(X, {f})", (f,), {}),
        ("geometric_median", "geometric_median(X, max_iter=1)", (), {"max_iter": 1}),
        ("centered_clipping", "centered_clipping(X, tau, iters=1)", (tau,), {"iters": 1}),
        ("nnm", f"nnm(X, {f})", (f,), {}),
        ("clip", "clip(X, tau)", (tau,), {}),
        ("arc", f"arc(X, {f})", (f,), {}),
        ("bucketing", f"bucketing(X, {s}, 0)", (s, 0), {}),
        ("mda", f"mda(X, {subset_f(n_rows, f)})", (subset_f(n_rows, f),), {}),
        ("smea", f"smea(X, {subset_f(n_rows, f)})", (subset_f(n_rows, f),), {}),
        ("caf", f"caf(X, {f})", (f,), {}),
    ]
    n, d = X.shape
    w = np.arange(1.0, n + 1.0)  # e.g. sample counts
    ref = np.zeros(d)
    fb = min(f, max(n - 3, 0) // 4)  # Bulyan needs n >= 4f + 3
    table += [
        ("closest", f"closest(X, 0, {n - f})", (ref, n - f), {}),
        ("bulyan", f"bulyan(X, {fb})", (fb,), {}),
    ]
    # Variants of a rule: (record name, rule, call description, args, keywords).
    variants: list[tuple[str, str, str, tuple[Any, ...], dict[str, Any]]] = [
        ("mean_weighted", "mean", "mean(X, weights=w)", (), {"weights": w}),
        (
            "multi_krum_weighted",
            "multi_krum",
            f"multi_krum(X, {f}, weights=w)",
            (f,),
            {"weights": w},
        ),
        (
            "closest_coordinate",
            "closest",
            f"closest(X, 0, {n - f}, metric='coordinate')",
            (ref, n - f),
            {"metric": "coordinate"},
        ),
        (
            "bulyan_multi_krum",
            "bulyan",
            f"bulyan(X, {fb}, selection='multi_krum')",
            (fb,),
            {"selection": "multi_krum"},
        ),
    ]
    calls: list[tuple[str, str, Callable[[Any], Any]]] = []
    for name, desc, args, kw in table:
        rule = getattr(agg, name, None)
        if rule is not None:
            calls.append((name, desc, _bind(rule, X, args, kw)))
    for name, base, desc, args, kw in variants:
        rule = getattr(agg, base, None)
        if rule is not None:
            calls.append((name, desc, _bind(rule, X, args, kw)))
    # NNM, clip and ARC return a fresh (n, D) array, whose first-touch page faults can cost more
    # than the kernel; a caller that runs them every round passes one buffer as out=.
    buf = np.empty_like(X)
    for name, desc, args in (
        ("nnm", f"nnm(X, {f}, out=buf)", (f,)),
        ("clip", "clip(X, tau, out=buf)", (tau,)),
        ("arc", f"arc(X, {f}, out=buf)", (f,)),
    ):
        rule = getattr(agg, name, None)
        if rule is not None:
            calls.append((f"{name}_out", desc, _bind(rule, X, args, {"out": buf})))
    return calls


def _bind(
    rule: Callable[..., Any], X: np.ndarray, args: tuple[Any, ...], kw: dict[str, Any]
) -> Callable[[Any], Any]:
    def call(threads: Any) -> Any:
        return rule(X, *args, threads=threads, **kw)

    return call


def _numpy_baselines(X: np.ndarray, f: int, cap: int) -> dict[str, Fn]:
    n, d = X.shape
    out: dict[str, Fn] = {
        "mean": lambda: np.mean(X, axis=0),
        "median": lambda: np.median(X, axis=0),
        "trimmed_mean": lambda: np_trimmed_mean(X, f),
    }
    w = np.arange(1.0, n + 1.0)
    out["mean_weighted"] = lambda: np.average(X, axis=0, weights=w)
    out["closest"] = lambda: np_closest(X, np.zeros(d), n - f)
    if n * d <= cap:
        out["meamed"] = lambda: np_meamed(X, f)
        out["closest_coordinate"] = lambda: np_closest_coordinate(X, np.zeros(d), n - f)
    return out


def _torch_baselines(torch: Any, X: np.ndarray, f: int, cap: int) -> dict[str, Fn]:
    n, d = X.shape
    t = torch.from_numpy(X)
    out: dict[str, Fn] = {"mean": lambda: torch.mean(t, dim=0)}
    if n * d <= cap:
        out["median"] = lambda: torch_median(torch, t)
        out["trimmed_mean"] = lambda: torch_trimmed_mean(torch, t, f)
    return out


def _byzfl_baselines(byz: Any, X: np.ndarray, f: int, tau: float, s: int) -> dict[str, Fn]:
    ctors: dict[str, Callable[[], Any]] = {
        "mean": lambda: byz.Average(),
        "median": lambda: byz.Median(),
        "trimmed_mean": lambda: byz.TrMean(f),
        "meamed": lambda: byz.Meamed(f),
        "krum": lambda: byz.Krum(f),
        "multi_krum": lambda: byz.MultiKrum(f),
        "geometric_median": lambda: byz.GeometricMedian(T=1),
        "centered_clipping": lambda: byz.CenteredClipping(L=1, tau=tau),
        "nnm": lambda: byz.NNM(f),
        "clip": lambda: byz.Clipping(c=tau),
        "arc": lambda: byz.ARC(f),
        "bucketing": lambda: byz.Bucketing(s),
        "caf": lambda: byz.CAF(f),
    }
    n, d = X.shape
    fs = subset_f(n, f)
    if math.comb(n, fs) <= SUBSET_BENCH_MAX:
        ctors["mda"] = lambda: byz.MDA(fs)
    if math.comb(n, fs) * (n - fs) * d <= BYZFL_SMEA_MAX_COPY:
        ctors["smea"] = lambda: byz.SMEA(fs)
    out: dict[str, Fn] = {}
    for name, ctor in ctors.items():
        try:
            rule = ctor()
        except (AttributeError, TypeError, ValueError):
            continue
        out[name] = functools.partial(rule, X)
    return out


# --------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------


def _marginal(t1: Timing, t5: Timing) -> Timing | None:
    """One iteration as (t[5 iterations] - t[1 iteration]) / 4, with the range that the two
    ranges allow; None when the difference is not resolved (t5 <= t1: noise)."""
    if t5.median <= t1.median:
        return None
    return Timing(
        median=max(t5.median - t1.median, 1e-9) / 4,
        low=max(t5.low - t1.high, 0.0) / 4,
        high=max(t5.high - t1.low, 1e-9) / 4,
        runs=min(t1.runs, t5.runs),
        peak_bytes=t5.peak_bytes,
    )


def bench_size(
    n: int,
    d: int,
    settings: Settings | None = None,
    notes: list[str] | None = None,
    *,
    baseline_cap: int = BASELINE_MAX_ELEMS,
    byzfl_max_n: int | None = None,
) -> list[Record]:
    """Time every rule and baseline on one (n, D) float32 matrix, threads in {1, all}; the
    memory-hungry baselines only up to ``baseline_cap`` elements, ByzFL up to ``byzfl_max_n``
    rows."""
    settings = settings or Settings()
    notes = [] if notes is None else notes
    budget = settings.budget
    torch, byz = peers(settings, notes)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d), dtype=np.float32)
    f = max(1, n // 4)
    s = 2
    tau = float(np.median(np.linalg.norm(X[:, : min(d, 100_000)], axis=1))) * np.sqrt(
        d / min(d, 100_000)
    )
    params = {"n": n, "D": d, "f": f, "dtype": "float32"}
    cases = _cases(X, f, tau, s)
    present = {name for name, _, _ in cases}
    rule_notes: dict[str, list[str]] = {name: [] for name in present}
    big = n * d > baseline_cap
    if big:
        for name in present:
            rule_notes[name].append(
                f"n*D above {baseline_cap:.0e}: sort-based and byzfl baselines skipped"
            )
    if byz is not None and byzfl_max_n is not None and n > byzfl_max_n:
        byz = None
        for name in present:
            rule_notes[name].append(f"n above {byzfl_max_n}: byzfl skipped")

    # Single-threaded baselines once per size, only for rules cyclad has.
    np_times: dict[str, Timing] = {}
    if "numpy" in settings.baselines:
        np_times = {
            name: measure(fn, budget)
            for name, fn in _numpy_baselines(X, f, baseline_cap).items()
            if name in present
        }
    byz_times: dict[str, Timing] = {}
    if byz is not None and not big:
        Xb = X.copy()  # ByzFL's Clipping and ARC scale their input in place
        for name, fn in _byzfl_baselines(byz, Xb, f, tau, s).items():
            if name not in present:
                continue
            try:
                byz_times[name] = measure(fn, budget)
            except Exception as exc:  # noqa: BLE001 - a peer library failing is reported, not fatal
                rule_notes[name].append(f"byzfl failed: {type(exc).__name__}")
        for name in ("clip", "arc"):
            if name in byz_times:
                rule_notes[name].append("byzfl scales its input in place (later calls: no-ops)")
        del Xb
    settle(settings)

    records: list[Record] = []
    for threads in thread_counts():
        rp_before = read_pass(X, threads, budget)
        # The pairwise distance pass is compute-bound: its rate is set against the machine's
        # peak multiply-add rate on the same ISA and threads, measured here.
        peak = _core.fma_peak(threads=threads, seconds=0.2 if settings.mode == "full" else 0.02)
        pending: list[Record] = []
        for name, desc, call in cases:
            try:
                tm = measure(functools.partial(call, threads), budget)
            except (TypeError, ValueError) as exc:  # another signature: report, keep going
                settings.say(f"skipped {name}: {type(exc).__name__}: {exc}")
                continue
            extra: dict[str, Any] = {"call": desc}
            if name in PAIRWISE:
                # 3 flops (subtract, multiply, add) per pair and coordinate.
                rate = 3.0 * n * (n - 1) / 2 * d / tm.median
                extra["pairwise GFLOP/s"] = f"{rate / 1e9:.1f} ({rate / peak:.0%} of peak)"
            pending.append(Record(AREA, name, dict(params), threads, tm, X.nbytes, extra=extra))
            settings.say(f"  n={n} D={d} t={threads} {name}: {tm.median * 1e3:.2f} ms")
        # One Weiszfeld iteration and one centered-clipping iteration, as the marginal cost of
        # four more iterations over the one-iteration cases timed above (tol=0 keeps them all),
        # so the start's distance pass is not counted as an iteration.
        one = {r.name: r.timing for r in pending}
        marginal = []
        if "geometric_median" in one:
            marginal.append(
                (
                    "weiszfeld_iteration",
                    "(t[max_iter=5] - t[max_iter=1]) / 4, tol=0",
                    one["geometric_median"],
                    functools.partial(
                        agg.geometric_median, X, max_iter=5, tol=0.0, threads=threads
                    ),
                )
            )
        if "centered_clipping" in one:
            marginal.append(
                (
                    "centered_clipping_iteration",
                    "(t[iters=5] - t[iters=1]) / 4",
                    one["centered_clipping"],
                    functools.partial(agg.centered_clipping, X, tau, iters=5, threads=threads),
                )
            )
        for name, desc, t1, five in marginal:
            iteration = _marginal(t1, measure(five, budget))
            if iteration is None:
                notes.append(
                    f"{name} at n={n}, D={d}, {threads} thread(s) not resolved: "
                    "t[5 iterations] <= t[1 iteration]"
                )
            else:
                pending.append(
                    Record(
                        AREA, name, dict(params), threads, iteration, X.nbytes, extra={"call": desc}
                    )
                )
        # The read pass is timed before and after the kernels; the faster one is the reference
        # (on a shared machine a burst of other work can slow either).
        rp_after = read_pass(X, threads, budget)
        rp = rp_before if rp_before.median <= rp_after.median else rp_after
        records.append(Record(AREA, "read_pass", dict(params), threads, rp, X.nbytes, rp))
        # The write floor: a copy of X into a buffer of its size (one read, one write). clip
        # and ARC read X twice (norms, then scaling) and write it once, so their floor is one
        # read pass plus one copy pass.
        dst = np.empty_like(X)
        dst[...] = X  # touched first: a warm-up that pays the page faults would be timed once
        cp = copy_pass(X, dst, threads, budget)
        del dst
        records.append(
            Record(
                AREA,
                "copy_pass",
                dict(params),
                threads,
                cp,
                X.nbytes,
                rp,
                extra={"call": "X into a buffer of its size"},
            )
        )
        floor = rp.median + cp.median
        for rec in pending:
            rec.read_pass = rp
            if rec.name in WRITE_FLOOR and floor > 0:
                rec.extra["x read + copy"] = f"{rec.seconds / floor:.3g}"
        # torch after cyclad: its OpenMP pool keeps spinning for a while after each call and
        # would steal the cores from the kernels timed next.
        torch_times: dict[str, Timing] = {}
        if torch is not None:
            prev = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                torch_times = {
                    name: measure(fn, budget)
                    for name, fn in _torch_baselines(torch, X, f, baseline_cap).items()
                    if name in present
                }
            finally:
                torch.set_num_threads(prev)
            settle(settings)
        for rec in pending:
            for label, table in (("numpy", np_times), ("torch", torch_times), ("byzfl", byz_times)):
                if rec.name in table:
                    rec.baselines[label] = table[rec.name]
            rec.notes += rule_notes.get(rec.name, [])
        records += pending
    del X
    return records


HOSTILE_RULES = (
    "krum",
    "nnm",
    "geometric_median",
    "centered_clipping",
    "clip",
    "arc",
    "trimmed_mean",
    "mean",
)


def bench_hostile(n: int, d: int, settings: Settings | None = None) -> list[Record]:
    """The price of hostile rows: float64, f = n // 4 rows poisoned with NaN or with +-1e300
    (finite, but their squared distances overflow double, so the distance rules take their
    overflow-safe second pass), each timed against the same rule on the clean matrix
    (baseline ``clean``: a speed-up below 1 is the slowdown an attacker can cause)."""
    settings = settings or Settings()
    budget = settings.budget
    rng = np.random.default_rng(0)
    clean = rng.standard_normal((n, d))
    f = max(1, n // 4)
    tau = float(np.sqrt(d))
    poisons = {"nan": np.full((f, d), np.nan), "1e300": np.full((f, d), 1e300)}
    poisons["1e300"][:, ::2] = -1e300
    records: list[Record] = []
    for kind, rows in poisons.items():
        X = clean.copy()
        X[:f] = rows
        cases = {name: (desc, call) for name, desc, call in _cases(X, f, tau, 2)}
        clean_cases = {name: call for name, _, call in _cases(clean, f, tau, 2)}
        for threads in thread_counts():
            rp = read_pass(X, threads, budget)
            for name in HOSTILE_RULES:
                if name not in cases:
                    continue
                desc, call = cases[name]
                tm = measure(functools.partial(call, threads), budget)
                base = measure(functools.partial(clean_cases[name], threads), budget)
                params = {"n": n, "D": d, "f": f, "dtype": "float64", "poison": kind}
                records.append(
                    Record(
                        AREA,
                        name,
                        params,
                        threads,
                        tm,
                        X.nbytes,
                        rp,
                        {"clean": base},
                        {"call": desc},
                        group="hostile",
                    )
                )
                settings.say(
                    f"  hostile {kind} n={n} D={d} t={threads} {name}: {tm.median * 1e3:.2f} ms "
                    f"({base.median / tm.median:.2f}x the clean call)"
                )
        del X
    return records


def _sweep(
    sizes: list[tuple[int, int]],
    group: str,
    settings: Settings,
    notes: list[str],
    cache: dict[tuple[int, int], list[Record]],
    *,
    sweep: bool = True,
) -> list[Record]:
    out = []
    for n, d in sizes:
        if (n, d) not in cache:
            settings.say(f"aggregators: n={n}, D={d}")
            kw: dict[str, Any] = {}
            if sweep:
                kw = {"baseline_cap": SWEEP_BASELINE_MAX_ELEMS, "byzfl_max_n": SWEEP_BYZFL_MAX_N}
            cache[n, d] = bench_size(n, d, settings, notes, **kw)
        out += [dataclasses.replace(r, group=group) for r in cache[n, d]]
    return out


TITLES = {
    "vs_D": "time vs D",
    "vs_n": "time vs n",
    "size": "one size",
    "hostile": "hostile rows (float64, f = n/4 rows poisoned; vs clean: the same rule on the "
    "clean matrix)",
}


def run(
    settings: Settings,
    *,
    size: tuple[int, int] | None = None,
    hostile_only: bool = False,
) -> Report:
    """The two sweeps and the hostile-row cases (or one size, or the hostile cases alone)."""
    notes: list[str] = []
    sizes = SIZES[settings.mode]
    records: list[Record] = []
    cache: dict[tuple[int, int], list[Record]] = {}
    if hostile_only:
        n, d = size or sizes["hostile"]
        records += bench_hostile(n, d, settings)
    elif size is not None:
        records += _sweep([size], "size", settings, notes, cache, sweep=False)
    else:
        n, ds = sizes["vs_D"]
        records += _sweep([(n, d) for d in ds], "vs_D", settings, notes, cache)
        d, ns = sizes["vs_n"]
        records += _sweep([(n, d) for n in ns], "vs_n", settings, notes, cache)
        n, d = sizes["hostile"]
        records += bench_hostile(n, d, settings)
    set_efficiency(records)
    titles = dict(TITLES)
    if not hostile_only and size is None:
        n, ds = sizes["vs_D"]
        titles["vs_D"] = f"time vs D (n = {n})"
        d, ns = sizes["vs_n"]
        titles["vs_n"] = f"time vs n (D = {d:g})"
    return Report(AREA, settings.mode, records, grouped_tables(records, titles), notes)
