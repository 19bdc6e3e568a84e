"""Timing, memory and report helpers shared by the bench areas (no timed assertions: figures
only).

Every figure is the **median** wall time of several calls after one warm-up call, with its
**spread**, ``(slowest - fastest) / median`` of the timed calls, and the **peak extra memory** of
one more call: the rise of the process's resident-set high-water mark (``VmHWM``) over its
resident set just before the call, after resetting the mark by writing ``5`` to
``/proc/self/clear_refs`` (Linux 4.0+). That sees C++ and BLAS allocations, which
``tracemalloc`` does not; freed heap memory is handed back first (``malloc_trim``) so that a reused
page still counts. Where the reset is refused (not Linux), memory is not reported.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import importlib.util
import json
import os
import platform
import re
import statistics
import sys
import time
import types
from collections.abc import Callable, Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from cyclad import _core

Fn = Callable[[], Any]
PEERS = ("numpy", "torch", "byzfl")
SPREAD_DOC = "spread = (slowest - fastest) / median of the timed calls"


# --------------------------------------------------------------------------------------------
# budgets and settings
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Budget:
    """How long one figure is timed: at least ``repeat`` calls after a warm-up, more until
    ``min_total`` seconds are spent (at most ``max_calls``); a call whose warm-up takes over
    ``slow`` seconds is timed once (its record says ``1 run``), one over ``long`` seconds
    ``long_repeat`` times."""

    repeat: int = 5
    min_total: float = 0.1
    max_calls: int = 100
    slow: float = 1.0
    #: a call whose warm-up takes over ``long`` seconds is timed ``long_repeat`` times
    long: float = 0.1
    long_repeat: int = 3
    #: called before every timed call, untimed (``--cold``: :func:`evict_caches`)
    before: Callable[[], None] | None = None


BUDGETS = {
    "full": Budget(),
    "quick": Budget(repeat=3, min_total=0.01, max_calls=20, slow=0.5),
    # test-only (the hidden --tiny option): one call per figure
    "tiny": Budget(repeat=1, min_total=0.0, max_calls=1, slow=0.5, long_repeat=1),
}


@dataclasses.dataclass(frozen=True)
class Settings:
    """What one bench run times: its mode (``full``, ``quick`` or the test-only ``tiny``),
    the timing budget, the baselines asked for and where progress lines go."""

    mode: str = "full"
    baselines: frozenset[str] = frozenset(PEERS)
    log: Callable[[str], None] | None = None
    #: evict the caches before every timed call (``--cold``): inputs come from memory
    cold: bool = False

    @property
    def budget(self) -> Budget:
        b = BUDGETS[self.mode]
        return dataclasses.replace(b, before=evict_caches) if self.cold else b

    def say(self, text: str) -> None:
        if self.log is not None:
            self.log(text)


# --------------------------------------------------------------------------------------------
# timing and memory
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Timing:
    """Median and range of the timed calls (seconds) and the peak extra memory (bytes) of one
    call, or None where it was not measured."""

    median: float
    low: float
    high: float
    runs: int
    peak_bytes: int | None = None

    @classmethod
    def of(cls, samples: Sequence[float], peak_bytes: int | None = None) -> Timing:
        return cls(statistics.median(samples), min(samples), max(samples), len(samples), peak_bytes)

    @property
    def spread(self) -> float:
        if self.runs < 2 or self.median <= 0:
            return 0.0
        return (self.high - self.low) / self.median

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["spread"] = self.spread
        return d


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        m = re.search(rf"^{field}:\s+(\d+) kB", fh.read(), re.MULTILINE)
    if m is None:
        msg = f"no {field} in /proc/self/status"
        raise OSError(msg)
    return int(m.group(1))


def _reset_high_water() -> None:
    with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
        fh.write("5")


_LIBC: list[Any] = []


def _trim() -> None:
    """Give freed heap memory back to the kernel (glibc ``malloc_trim``), so that a call which
    reuses freed pages still raises the resident set."""
    if not _LIBC:
        try:
            _LIBC.append(ctypes.CDLL("libc.so.6").malloc_trim)
        except (OSError, AttributeError):
            _LIBC.append(None)
    if _LIBC[0] is not None:
        _LIBC[0](0)


@dataclasses.dataclass
class _MemoryProbe:
    works: bool | None = None

    def available(self) -> bool:
        if self.works is None:
            try:
                _reset_high_water()
                _status_kib("VmHWM")
                _status_kib("VmRSS")
                self.works = True
            except OSError:
                self.works = False
        return self.works


_PROBE = _MemoryProbe()

MEMORY_METHOD = (
    "peak extra memory = rise of VmHWM over VmRSS during one call, after malloc_trim and a "
    "VmHWM reset (/proc/self/clear_refs = 5); it includes the call's output"
)


def memory_method() -> str | None:
    """How peak memory is measured here, or None if it cannot be (not Linux)."""
    return MEMORY_METHOD if _PROBE.available() else None


def peak_extra_bytes(fn: Fn) -> int | None:
    """Resident memory that one ``fn()`` call adds at its peak (its output included), or None
    where the high-water mark cannot be reset."""
    if not _PROBE.available():
        return None
    _trim()  # no gc.collect(): with torch imported it takes ~0.1 s, and arrays free on del
    _reset_high_water()
    base = _status_kib("VmRSS")
    out = fn()
    peak = _status_kib("VmHWM")
    del out
    return max(0, peak - base) * 1024


def _evict_bytes() -> int:
    """Bytes written by :func:`evict_caches`: twice the last-level cache (256 MiB if unknown)."""
    try:
        text = Path("/sys/devices/system/cpu/cpu0/cache/index3/size").read_text().strip()
        units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
        llc = int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)
    except (OSError, ValueError, IndexError):
        llc = 128 << 20
    return 2 * llc


_EVICT: list[np.ndarray] = []

#: What ``--cold`` does, for the report.
COLD_METHOD = (
    "cold caches: before every timed call a buffer of twice the last-level cache is "
    "written (untimed), so the input is read from memory, as it is when it has just arrived"
)


def evict_caches() -> None:
    """Push every input out of the caches: write one byte per 64-byte line of a buffer twice
    the size of the last-level cache."""
    if not _EVICT:
        _EVICT.append(np.zeros(_evict_bytes(), dtype=np.uint8))
    _EVICT[0][::64] += 1


def measure(fn: Fn, budget: Budget, *, memory: bool = True) -> Timing:
    """Median of timed ``fn()`` calls after one warm-up call (see :class:`Budget`), then the
    peak extra memory of one more call (``memory``)."""
    before = budget.before or (lambda: None)
    before()
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    samples: list[float] = []
    if first > budget.slow:
        peak: list[int | None] = [None]

        def once() -> Any:
            before()
            t = time.perf_counter()
            out = fn()
            samples.append(time.perf_counter() - t)
            return out

        if memory:
            peak[0] = peak_extra_bytes(once)
        else:
            once()
        return Timing.of(samples, peak[0])
    spent = 0.0
    repeat = budget.long_repeat if first > budget.long else budget.repeat
    while len(samples) < repeat or (spent < budget.min_total and len(samples) < budget.max_calls):
        before()
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        samples.append(dt)
        spent += dt
    return Timing.of(samples, peak_extra_bytes(fn) if memory else None)


def read_pass(arr: np.ndarray, threads: int, budget: Budget) -> Timing:
    """The C++ read pass over ``arr``'s bytes (``threads`` threads), timed like a kernel."""
    return measure(lambda: _core.read_pass(arr, threads=threads), budget, memory=False)


def copy_pass(arr: np.ndarray, out: np.ndarray, threads: int, budget: Budget) -> Timing:
    """The C++ copy pass of ``arr``'s bytes into ``out`` (same size), timed like a kernel: one
    read and one write of the bytes, the write with the kernels' streaming-store policy."""
    return measure(lambda: _core.copy_pass(arr, out, threads=threads), budget, memory=False)


def all_threads() -> int:
    return int(_core.hardware_threads())


def thread_counts() -> list[int]:
    """1 and all hardware threads (just 1 on a one-thread machine)."""
    return sorted({1, all_threads()})


# --------------------------------------------------------------------------------------------
# optional peers
# --------------------------------------------------------------------------------------------

_PEERS: dict[str, Any] = {}
PEER_HINTS = {
    "torch": "pip install torch==2.13.0, or the cyclad[torch] extra",
    "byzfl": "pip install --no-deps byzfl==0.0.11",
}


def load_torch() -> Any:
    """The torch module, or None (looked up once)."""
    if "torch" not in _PEERS:
        mod: Any = None
        with contextlib.suppress(ImportError):
            import torch as mod
        _PEERS["torch"] = mod
    return _PEERS["torch"]


def load_byzfl() -> Any:
    """ByzFL's aggregator module, or None (looked up once).

    ``import byzfl`` also imports its training framework (torchvision, ...); the aggregators need
    only NumPy, SciPy and torch, so when the full import fails the subpackage is loaded on its
    own under an empty parent package."""
    if "byzfl" not in _PEERS:
        _PEERS["byzfl"] = _import_byzfl()
    return _PEERS["byzfl"]


def _import_byzfl() -> Any:
    try:
        import byzfl

        return byzfl
    except ImportError:
        pass
    sys.modules.pop("byzfl", None)
    try:
        spec = importlib.util.find_spec("byzfl")
    except (ImportError, ValueError):
        return None
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


def peers(
    settings: Settings, notes: list[str], used: Sequence[str] = ("torch", "byzfl")
) -> tuple[Any, Any]:
    """``(torch, byzfl)``, each one None unless the area ``used`` it, ``settings`` asked for it
    and it imports; a note for each one used and asked for that cannot be imported."""
    out = []
    for name, loader in (("torch", load_torch), ("byzfl", load_byzfl)):
        wanted = name in settings.baselines and name in used
        mod = loader() if wanted else None
        if wanted and mod is None:
            note = f"{name} is not importable: its baselines are skipped ({PEER_HINTS[name]})"
            if note not in notes:
                notes.append(note)
        out.append(mod)
    return out[0], out[1]


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


# --------------------------------------------------------------------------------------------
# the machine
# --------------------------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU model name (``/proc/cpuinfo`` on Linux), else the platform's processor string."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


BANDWIDTH_BYTES = {"full": 512 << 20, "quick": 128 << 20, "tiny": 4 << 20}


def read_bandwidth(settings: Settings) -> dict[str, Any]:
    """Measured read bandwidth (GB/s) of the C++ read pass over one large float32 buffer, at one
    thread and at all threads."""
    nbytes = BANDWIDTH_BYTES[settings.mode]
    buf = np.ones(nbytes // 4, dtype=np.float32)
    out: dict[str, Any] = {"buffer_bytes": nbytes}
    for t in thread_counts():
        tm = read_pass(buf, t, settings.budget)
        out[f"gbps_t{t}"] = nbytes / tm.median / 1e9
        out[f"spread_t{t}"] = tm.spread
    del buf
    return out


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def machine_info(bandwidth: dict[str, Any] | None = None) -> dict[str, Any]:
    """The machine and software a run measured (with the read bandwidth when given)."""
    isa = getattr(_core, "isa_path", None)
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu": cpu_model(),
        "isa_path": isa() if isa is not None else "unknown",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": _version("torch"),
        "byzfl": _version("byzfl"),
        "hardware_threads": all_threads(),
        "openmp": bool(_core._has_openmp),
        "memory_method": memory_method(),
        "load_average": _load_average(),
    }
    if bandwidth is not None:
        info["read_bandwidth"] = bandwidth
    return info


def machine_line() -> str:
    """One line naming the CPU, the ISA clone that ran and the thread count."""
    m = machine_info()
    return (
        f"Machine: {m['cpu']}, kernels on the {m['isa_path']} clone, "
        f"{m['hardware_threads']} hardware threads, OpenMP {'on' if m['openmp'] else 'off'}, "
        f"NumPy {m['numpy']}, Python {m['python']}"
    )


def _load_text(load: list[float] | None) -> str:
    if load is None:
        return "unknown"
    text = (
        f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1 / 5 / 15 min) at the start"
    )
    if load[0] > 0.5:
        text += ": other work was running, so multi-thread figures may wait for a busy core"
    return text


def machine_table(info: dict[str, Any]) -> str:
    """The machine as a two-column markdown table (the header of every report)."""
    bw = info.get("read_bandwidth") or {}
    threads = info["hardware_threads"]
    bw_text = "not measured"
    if bw:
        parts = [f"{bw['gbps_t1']:.1f} GB/s at 1 thread"]
        if f"gbps_t{threads}" in bw and threads > 1:
            parts.append(f"{bw[f'gbps_t{threads}']:.1f} GB/s at {threads} threads")
        bw_text = ", ".join(parts) + f" (C++ read pass over {bw['buffer_bytes'] >> 20} MiB, median)"
    soft = f"Python {info['python']}, NumPy {info['numpy']}"
    soft += f", torch {info['torch'] or 'not installed'}, ByzFL {info['byzfl'] or 'not installed'}"
    rows = [
        ("CPU", info["cpu"]),
        ("kernels", f"{info['isa_path']} clone (cyclad._core.isa_path())"),
        ("cores", f"{threads} hardware threads, OpenMP {'on' if info['openmp'] else 'off'}"),
        ("read bandwidth", bw_text),
        ("memory", info["memory_method"] or "not measured (needs Linux /proc/self/clear_refs)"),
        ("software", soft),
        ("load", _load_text(info.get("load_average"))),
        ("platform", info["platform"]),
    ]
    lines = ["| machine | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# records and reports
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Record:
    """One timed kernel: its timing, the read pass over the same bytes and the baselines."""

    area: str
    name: str
    params: dict[str, Any]
    threads: int
    timing: Timing
    nbytes: int
    read_pass: Timing | None = None
    baselines: dict[str, Timing] = dataclasses.field(default_factory=dict)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)
    group: str = ""
    efficiency: float | None = None

    @property
    def seconds(self) -> float:
        return self.timing.median

    @property
    def gbps(self) -> float:
        return self.nbytes / self.seconds / 1e9 if self.seconds > 0 else float("inf")

    @property
    def read_ratio(self) -> float | None:
        if self.read_pass is None or self.read_pass.median <= 0:
            return None
        return self.seconds / self.read_pass.median

    def speedup(self, baseline: str) -> float | None:
        t = self.baselines.get(baseline)
        return None if t is None or self.seconds <= 0 else t.median / self.seconds

    def to_dict(self) -> dict[str, Any]:
        return {
            "area": self.area,
            "group": self.group,
            "name": self.name,
            "params": self.params,
            "threads": self.threads,
            "seconds": self.seconds,
            "timing": self.timing.to_dict(),
            "nbytes": self.nbytes,
            "gbps": self.gbps,
            "read_pass": None if self.read_pass is None else self.read_pass.to_dict(),
            "read_ratio": self.read_ratio,
            "efficiency": self.efficiency,
            "peak_bytes": self.timing.peak_bytes,
            "baselines": {b: t.to_dict() for b, t in self.baselines.items()},
            "speedups": {b: self.speedup(b) for b in self.baselines},
            "extra": self.extra,
            "notes": self.notes,
        }


def set_efficiency(records: Iterable[Record]) -> None:
    """Parallel efficiency ``t(1 thread) / (threads * t(threads))`` on every multi-threaded
    record that has a one-thread twin (same group, name and parameters)."""
    recs = list(records)
    ones = {
        (r.group, r.name, json.dumps(r.params, sort_keys=True)): r for r in recs if r.threads == 1
    }
    for r in recs:
        if r.threads > 1:
            one = ones.get((r.group, r.name, json.dumps(r.params, sort_keys=True)))
            if one is not None and r.seconds > 0:
                r.efficiency = one.seconds / (r.threads * r.seconds)


def _ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.3g}"


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _mb(b: int | None) -> str:
    return "-" if b is None else f"{b / 1e6:.3g}"


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )


def markdown_table(records: Sequence[Record], baselines: Sequence[str] | None = None) -> str:
    """Kernel, params, threads, median ms, spread, GB/s, x read pass, parallel efficiency, peak
    extra MB, then the speed-up over each baseline (the baseline's own spread in brackets)."""
    if baselines is None:
        seen: dict[str, None] = {}
        for r in records:
            for b in r.baselines:
                seen.setdefault(b, None)
        baselines = list(seen)
    extra_keys: dict[str, None] = {}
    for r in records:
        for key in r.extra:
            if key != "call":
                extra_keys.setdefault(key, None)
    head = ["kernel", "params", "threads", "ms", "spread", "GB/s", "x read pass", "par. eff."]
    head += ["peak MB"] + [f"vs {b}" for b in baselines] + list(extra_keys) + ["notes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        row = [
            r.name,
            _params_text(r.params),
            str(r.threads),
            _ms(r.seconds),
            _pct(r.timing.spread) if r.timing.runs > 1 else "1 run",
            f"{r.gbps:.1f}",
            "-" if r.read_ratio is None else f"{r.read_ratio:.2f}",
            "-" if r.efficiency is None else f"{r.efficiency:.2f}",
            _mb(r.timing.peak_bytes),
        ]
        for b in baselines:
            s = r.speedup(b)
            t = r.baselines.get(b)
            if s is None or t is None:
                row.append("-")
            else:
                row.append(f"{s:.1f}x ({_pct(t.spread) if t.runs > 1 else '1 run'})")
        row += [str(r.extra.get(key, "")) for key in extra_keys]
        row.append("; ".join(dict.fromkeys(r.notes)))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


LEGEND = (
    "ms: median of the timed calls after a warm-up; " + SPREAD_DOC + " (one preempted call "
    "makes it large); GB/s: the figure's bytes over the median; x read pass: median over the "
    "C++ read pass of the same bytes and threads (1.0 is the memory-bandwidth floor); par. "
    "eff.: t(1 thread) / (threads x t(threads)); peak MB: peak extra resident memory of one "
    "call (output included); vs X: X's median over cyclad's (X's own spread in brackets)."
)


@dataclasses.dataclass
class Report:
    """One area's results: the records, the markdown body, notes and the files written."""

    area: str
    mode: str
    records: list[Record]
    body: str
    notes: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    files: list[Path] = dataclasses.field(default_factory=list)
    data: dict[str, Any] = dataclasses.field(default_factory=dict)


def grouped_tables(records: Sequence[Record], titles: dict[str, str] | None = None) -> str:
    """One markdown table per record group (in order of appearance), each under a heading."""
    groups: dict[str, list[Record]] = {}
    for r in records:
        groups.setdefault(r.group, []).append(r)
    parts = []
    for g, recs in groups.items():
        title = (titles or {}).get(g, g)
        parts.append((f"### {title}\n\n" if title else "") + markdown_table(recs))
    return "\n".join(parts)


def report_markdown(report: Report, machine: dict[str, Any]) -> str:
    head = f"# cyclad bench: {report.area} ({report.mode})\n\n" + machine_table(machine)
    if report.records and report.area != "round":
        head += "\n" + LEGEND + "\n"
    notes = "".join(f"- {n}\n" for n in report.notes)
    tail = f"\n{len(report.records)} figures in {report.seconds:.1f} s.\n"
    return head + "\n" + (notes + "\n" if notes else "") + report.body + tail


def write_report(report: Report, machine: dict[str, Any], out_dir: Path, stem: str) -> list[Path]:
    """Write ``<stem>.json`` (machine, notes, every record) and ``<stem>.md`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    jpath, mpath = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    payload = {
        "area": report.area,
        "mode": report.mode,
        "seconds": report.seconds,
        "machine": machine,
        "notes": report.notes,
        "plots": [p.name for p in report.files if p.suffix == ".png"],
        "records": [r.to_dict() for r in report.records],
        **report.data,
    }
    jpath.write_text(json.dumps(payload, indent=2) + "\n")
    mpath.write_text(report_markdown(report, machine))
    return [jpath, mpath]


def settle(settings: Settings) -> None:
    """Let peer libraries' worker threads (torch's OpenMP pool spins after a call) go idle."""
    time.sleep({"full": 0.2, "quick": 0.05}.get(settings.mode, 0.0))
