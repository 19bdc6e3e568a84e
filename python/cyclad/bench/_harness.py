"""Timing helpers shared by the bench areas (no timed assertions: figures only)."""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cyclad import _core


def best_time(fn: Callable[[], Any], *, repeat: int = 5, min_total: float = 0.2) -> float:
    """Best wall time of ``fn()`` in seconds over at least ``repeat`` calls (one warm-up call
    first), continuing until ``min_total`` seconds have been spent so short calls are stable."""
    fn()
    best = float("inf")
    spent = 0.0
    calls = 0
    while calls < repeat or (spent < min_total and calls < 1000):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best = min(best, dt)
        spent += dt
        calls += 1
    return best


def read_pass_time(arr: np.ndarray, threads: int | None = None, **kw: Any) -> float:
    """Best time of the C++ multi-threaded read pass over ``arr``'s bytes."""
    t = 0 if threads is None else threads
    return best_time(lambda: _core.read_pass(arr, threads=t), **kw)


@dataclasses.dataclass
class Record:
    """One timed kernel: its time, bandwidth, read-pass ratio and speed-ups over baselines."""

    area: str
    name: str
    params: dict[str, Any]
    threads: int
    seconds: float
    nbytes: int
    read_pass_seconds: float
    baselines: dict[str, float] = dataclasses.field(default_factory=dict)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def gbps(self) -> float:
        return self.nbytes / self.seconds / 1e9

    @property
    def read_ratio(self) -> float:
        return self.seconds / self.read_pass_seconds

    def speedup(self, baseline: str) -> float | None:
        t = self.baselines.get(baseline)
        return None if t is None else t / self.seconds

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["gbps"] = self.gbps
        d["read_ratio"] = self.read_ratio
        d["speedups"] = {b: self.speedup(b) for b in self.baselines}
        return d


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


def machine_info() -> dict[str, Any]:
    isa = getattr(_core, "isa_path", None)
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu": cpu_model(),
        "isa_path": isa() if isa is not None else "unknown",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "hardware_threads": int(_core.hardware_threads()),
        "openmp": bool(_core._has_openmp),
    }


def machine_line() -> str:
    """One line naming the CPU, the ISA clone that ran and the thread count, for every table."""
    m = machine_info()
    return (
        f"Machine: {m['cpu']}, kernels on the {m['isa_path']} clone, "
        f"{m['hardware_threads']} hardware threads, OpenMP {'on' if m['openmp'] else 'off'}, "
        f"NumPy {m['numpy']}, Python {m['python']}"
    )


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def markdown_table(records: Sequence[Record], baselines: Sequence[str] | None = None) -> str:
    """A markdown table: kernel, params, threads, ms, GB/s, x read pass, speed-up per baseline."""
    if baselines is None:
        seen: dict[str, None] = {}
        for r in records:
            for b in r.baselines:
                seen.setdefault(b, None)
        baselines = list(seen)
    extra_keys: dict[str, None] = {}
    for r in records:
        for key in r.extra:
            extra_keys.setdefault(key, None)
    head = ["kernel", "params", "threads", "ms", "GB/s", "x read pass"]
    head += [f"vs {b}" for b in baselines] + list(extra_keys)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        params = ", ".join(f"{k}={v}" for k, v in r.params.items())
        row = [
            r.name,
            params,
            str(r.threads),
            f"{r.seconds * 1e3:.2f}",
            f"{r.gbps:.1f}",
            f"{r.read_ratio:.2f}",
        ]
        row += [
            _fmt(r.speedup(b), ".1f") + ("x" if r.speedup(b) is not None else "") for b in baselines
        ]
        row += [str(r.extra.get(key, "")) for key in extra_keys]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def write_results(records: Sequence[Record], out_dir: str | Path, stem: str) -> tuple[Path, Path]:
    """Write ``<stem>.json`` (machine info + every record) and ``<stem>.md`` to ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jpath, mpath = out / f"{stem}.json", out / f"{stem}.md"
    payload = {"machine": machine_info(), "records": [r.to_dict() for r in records]}
    jpath.write_text(json.dumps(payload, indent=2))
    mpath.write_text(machine_line() + "\n\n" + markdown_table(records))
    return jpath, mpath
