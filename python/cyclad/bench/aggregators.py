"""Bench area ``aggregators``: every rule in :mod:`cyclad.aggregators` against the read pass
over the same bytes, and against NumPy, torch and ByzFL equivalents timed in the same process.

Sizes: n in {10, 20, 50, 100} x D in {1e5, 1e6, 1e7}, float32, threads in {1, all}
(``quick``: n in {10, 20}, D = 1e5). Rules are looked up with ``getattr`` so the bench runs with
whatever rules the installed package has. Honesty rules for the baselines:

* a baseline whose first (warm-up) call takes longer than ``SLOW_CALL`` seconds is timed once
  (``repeat=1``) and listed in the record's ``notes``;
* memory-hungry baselines (sort/argsort based NumPy and torch versions, ByzFL) are skipped
  above ``BASELINE_MAX_ELEMS`` elements (they allocate several int64 copies of the input);
  skipped baselines are listed in ``notes`` as well;
* NumPy and ByzFL are timed once per (n, D) and shown beside both thread settings (NumPy is
  single-threaded; ByzFL uses torch / NumPy internally); torch is timed with
  ``torch.set_num_threads`` matching the cyclad thread count.
"""

from __future__ import annotations

import functools
import gc
import importlib.util
import sys
import time
import types
from collections.abc import Callable
from typing import Any

import numpy as np

import cyclad.aggregators as agg
from cyclad import _core
from cyclad.bench._harness import Record, best_time, read_pass_time

AREA = "aggregators"
SLOW_CALL = 1.0
BASELINE_MAX_ELEMS = 200_000_000

Fn = Callable[[], Any]


# --------------------------------------------------------------------------------------------
# optional peers
# --------------------------------------------------------------------------------------------


def _load_torch() -> Any:
    try:
        import torch
    except ImportError:
        return None
    return torch


_BYZFL: list[Any] = []


def _load_byzfl() -> Any:
    """ByzFL's aggregator module, or None (looked up once)."""
    if not _BYZFL:
        _BYZFL.append(_import_byzfl())
    return _BYZFL[0]


def _import_byzfl() -> Any:
    """``import byzfl`` also imports its training framework (torchvision, ...); the aggregators
    need only NumPy, SciPy and torch, so when the full import fails the subpackage is loaded on
    its own under an empty parent package."""
    try:
        import byzfl

        return byzfl
    except ImportError:
        pass
    sys.modules.pop("byzfl", None)
    spec = importlib.util.find_spec("byzfl")
    if spec is None or spec.submodule_search_locations is None:
        return None
    pkg = types.ModuleType("byzfl")
    pkg.__path__ = list(spec.submodule_search_locations)
    sys.modules["byzfl"] = pkg
    try:
        import byzfl.aggregators as byz_agg
    except ImportError:
        del sys.modules["byzfl"]
        return None
    return byz_agg


# --------------------------------------------------------------------------------------------
# NumPy / torch baselines
# --------------------------------------------------------------------------------------------


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


def torch_median(torch: Any, t: Any) -> Any:
    # torch.median returns the lower middle value for even n; sort and average the two.
    n = t.shape[0]
    s = torch.sort(t, dim=0).values
    return (s[(n - 1) // 2] + s[n // 2]) / 2


def torch_trimmed_mean(torch: Any, t: Any, f: int) -> Any:
    n = t.shape[0]
    return torch.sort(t, dim=0).values[f : n - f].mean(dim=0)


# --------------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------------


def _time(fn: Fn, notes: list[str], label: str) -> float:
    """Best time of ``fn``; a call slower than SLOW_CALL is timed once and noted."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    if first > SLOW_CALL:
        t0 = time.perf_counter()
        fn()
        notes.append(f"{label} repeat=1")
        return time.perf_counter() - t0
    return best_time(fn, repeat=3, min_total=0.2)


def _cases(
    X: np.ndarray, f: int, tau: float, s: int
) -> list[tuple[str, str, Callable[[Any], Any]]]:
    """(rule name, call description, call(threads)) for every rule present in cyclad (looked up
    with getattr, so the bench runs before every rule has landed)."""
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
    ]
    calls: list[tuple[str, str, Callable[[Any], Any]]] = []
    for name, desc, args, kw in table:
        rule = getattr(agg, name, None)
        if rule is not None:
            calls.append((name, desc, _bind(rule, X, args, kw)))
    return calls


def _bind(
    rule: Callable[..., Any], X: np.ndarray, args: tuple[Any, ...], kw: dict[str, Any]
) -> Callable[[Any], Any]:
    def call(threads: Any) -> Any:
        return rule(X, *args, threads=threads, **kw)

    return call


def _numpy_baselines(X: np.ndarray, f: int) -> dict[str, Fn]:
    n, d = X.shape
    out: dict[str, Fn] = {
        "mean": lambda: np.mean(X, axis=0),
        "median": lambda: np.median(X, axis=0),
        "trimmed_mean": lambda: np_trimmed_mean(X, f),
    }
    if n * d <= BASELINE_MAX_ELEMS:
        out["meamed"] = lambda: np_meamed(X, f)
    return out


def _torch_baselines(torch: Any, X: np.ndarray, f: int) -> dict[str, Fn]:
    n, d = X.shape
    t = torch.from_numpy(X)
    out: dict[str, Fn] = {"mean": lambda: torch.mean(t, dim=0)}
    if n * d <= BASELINE_MAX_ELEMS:
        out["median"] = lambda: torch_median(torch, t)
        out["trimmed_mean"] = lambda: torch_trimmed_mean(torch, t, f)
    return out


def _byzfl_baselines(byz: Any, X: np.ndarray, f: int, tau: float, s: int) -> dict[str, Fn]:
    n, d = X.shape
    if n * d > BASELINE_MAX_ELEMS:
        return {}
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
    }
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


def bench_size(
    n: int, d: int, *, seed: int = 0, log: Callable[[str], None] | None = None
) -> list[Record]:
    """Time every rule and baseline on one (n, D) float32 matrix, threads in {1, all}."""
    torch = _load_torch()
    byz = _load_byzfl()
    all_threads = int(_core.hardware_threads())
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d), dtype=np.float32)
    f = max(1, n // 4)
    s = 2
    tau = float(np.median(np.linalg.norm(X[:, : min(d, 100_000)], axis=1))) * np.sqrt(
        d / min(d, 100_000)
    )
    params = {"n": n, "D": d, "f": f, "dtype": "float32"}
    nbytes = X.nbytes
    cases = _cases(X, f, tau, s)
    present = {name for name, _, _ in cases}
    notes: dict[str, list[str]] = {name: [] for name in present}
    if n * d > BASELINE_MAX_ELEMS:
        for name in present:
            notes[name].append(
                f"size cap {BASELINE_MAX_ELEMS:.0e} elements: some baselines skipped"
            )

    # Single-threaded baselines once per size, only for rules cyclad has.
    np_times = {
        name: _time(fn, notes[name], "numpy")
        for name, fn in _numpy_baselines(X, f).items()
        if name in present
    }
    byz_times: dict[str, float] = {}
    if byz is not None:
        for name, fn in _byzfl_baselines(byz, X, f, tau, s).items():
            if name not in present:
                continue
            try:
                byz_times[name] = _time(fn, notes[name], "byzfl")
            except Exception as exc:  # noqa: BLE001 - a peer library failing is reported, not fatal
                notes[name].append(f"byzfl failed: {type(exc).__name__}")
    gc.collect()
    time.sleep(0.2)  # let peer libraries' worker threads go idle

    records: list[Record] = []
    for threads in (1, all_threads):
        rp_before = read_pass_time(X, threads=threads)
        pending: list[Record] = []
        for name, desc, call in cases:
            try:
                secs = _time(functools.partial(call, threads), notes[name], f"cyclad t{threads}")
            except (TypeError, ValueError) as exc:  # another signature: report, keep going
                if log is not None:
                    log(f"skipped {name}: {type(exc).__name__}: {exc}")
                continue
            rec = Record(
                AREA, name, dict(params), threads, secs, nbytes, rp_before, {}, {"call": desc}
            )
            pending.append(rec)
            if log is not None:
                log(
                    f"n={n} D={d} t={threads} {name}: {secs * 1e3:.1f} ms "
                    f"({rec.read_ratio:.2f}x read pass)"
                )
        # One Weiszfeld iteration, as the marginal cost of four more iterations (tol=0 keeps
        # them all), so the start point's distance pass is not counted as an iteration.
        gm = getattr(agg, "geometric_median", None)
        if gm is not None:
            label = f"cyclad t{threads}"
            t1 = _time(
                functools.partial(gm, X, max_iter=1, tol=0.0, threads=threads),
                notes.setdefault("weiszfeld_iteration", []),
                label,
            )
            t5 = _time(
                functools.partial(gm, X, max_iter=5, tol=0.0, threads=threads),
                notes["weiszfeld_iteration"],
                label,
            )
            pending.append(
                Record(
                    AREA,
                    "weiszfeld_iteration",
                    dict(params),
                    threads,
                    max(t5 - t1, 1e-9) / 4,
                    nbytes,
                    rp_before,
                    {},
                    {"call": "(t[max_iter=5] - t[max_iter=1]) / 4, tol=0"},
                )
            )
        # The read pass is timed before and after the kernels; the faster one is the reference
        # (on a shared machine a burst of other work can slow either).
        rp = min(rp_before, read_pass_time(X, threads=threads))
        records.append(Record(AREA, "read_pass", dict(params), threads, rp, nbytes, rp))
        for rec in pending:
            rec.read_pass_seconds = rp
        # torch after cyclad: its OpenMP pool keeps spinning for a while after each call and
        # would steal the cores from the kernels timed next.
        torch_times: dict[str, float] = {}
        if torch is not None:
            prev = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                torch_times = {
                    name: _time(fn, notes[name], f"torch t{threads}")
                    for name, fn in _torch_baselines(torch, X, f).items()
                    if name in present
                }
            finally:
                torch.set_num_threads(prev)
            time.sleep(0.2)
        for rec in pending:
            for label, table in (("numpy", np_times), ("torch", torch_times), ("byzfl", byz_times)):
                if rec.name in table:
                    rec.baselines[label] = table[rec.name]
        records += pending
    for rec in records:
        if rec.name in notes:
            rec.extra["notes"] = "; ".join(dict.fromkeys(notes[rec.name]))
    del X
    gc.collect()
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


def bench_hostile(
    n: int, d: int, *, seed: int = 0, log: Callable[[str], None] | None = None
) -> list[Record]:
    """The price of hostile rows: float64, f = n // 4 rows poisoned with NaN or with +-1e300
    (finite, but their squared distances overflow double, so the distance rules take their
    overflow-safe second pass), each timed against the same rule on the clean matrix
    (baseline ``clean``: a speed-up below 1 is the slowdown an attacker can cause)."""
    all_threads = int(_core.hardware_threads())
    rng = np.random.default_rng(seed)
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
        for threads in (1, all_threads):
            rp = read_pass_time(X, threads=threads)
            for name in HOSTILE_RULES:
                if name not in cases:
                    continue
                desc, call = cases[name]
                notes: list[str] = []
                secs = _time(functools.partial(call, threads), notes, f"cyclad t{threads}")
                base = _time(functools.partial(clean_cases[name], threads), notes, "clean")
                params = {"n": n, "D": d, "f": f, "dtype": "float64", "poison": kind}
                rec = Record(
                    AREA,
                    name,
                    params,
                    threads,
                    secs,
                    X.nbytes,
                    rp,
                    {"clean": base},
                    {"call": desc, "notes": "; ".join(notes)},
                )
                records.append(rec)
                if log is not None:
                    log(
                        f"hostile {kind} n={n} D={d} t={threads} {name}: {secs * 1e3:.1f} ms "
                        f"({base / secs:.2f}x the clean call)"
                    )
        del X
        gc.collect()
    return records


def run(quick: bool) -> list[Record]:
    """All sizes (``quick``: n in {10, 20}, D = 1e5), then the hostile-row cases at n = 20
    (D = 1e5 quick, else 1e6); see the module docstring."""
    ns = (10, 20) if quick else (10, 20, 50, 100)
    ds = (100_000,) if quick else (100_000, 1_000_000, 10_000_000)

    def log(msg: str) -> None:
        sys.stderr.write(msg + "\n")

    records: list[Record] = []
    for n in ns:
        for d in ds:
            records += bench_size(n, d, log=log)
    records += bench_hostile(20, 100_000 if quick else 1_000_000, log=log)
    return records
