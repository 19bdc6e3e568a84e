"""``cyclad bench [AREA]`` (or ``python -m cyclad.bench [AREA]``): time the kernels against the
C++ read pass over the same bytes and against NumPy, torch and ByzFL (when importable), in one
run; write markdown, JSON and PNG plots per area.

The hidden option ``--tiny`` is for the test suite only: the smallest sizes and one timed call
per figure, so that every area runs end to end in a few seconds (its figures mean nothing).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path
from types import ModuleType

from cyclad.bench._harness import (
    COLD_METHOD,
    PEERS,
    Settings,
    machine_info,
    machine_table,
    read_bandwidth,
    write_report,
)

#: area name -> module of cyclad.bench
MODULES = {
    "aggregators": "aggregators",
    "coding": "coding",
    "compression": "compression",
    "round": "lad_round",
}
AREAS = tuple(MODULES)
DESCRIPTIONS = {
    "aggregators": "robust rules vs D (n=20) and vs n (D=1e5), NumPy / torch / ByzFL baselines",
    "coding": "cyclic encoding z = B G (n=20, d in {2,4,10}) vs a NumPy / torch GEMM",
    "compression": (
        "top-k, rand-k, QSGD, sign, natural, TernGrad: compress and decompress vs NumPy "
        "(torch.topk); the sign majority vote vs NumPy"
    ),
    "round": "one LAD / Com-LAD round (n=20, d=3, P in {1e5,1e6}) split into its phases",
    "all": "every area above, in this order (the default)",
}

DESCRIPTION = """\
Time cyclad's kernels in one run against the baselines that matter for them: a multi-threaded
C++ read pass over the same bytes (the memory-bandwidth floor), NumPy, torch and ByzFL (each when
importable; a missing one is skipped with a note). Each figure is the median of several calls
after a warm-up, with its spread ((slowest - fastest) / median) and the peak extra resident
memory of one call; thread counts 1 and all cores. The report starts with the machine: CPU, the
ISA clone the kernels run on, cores and the measured read bandwidth.

Writes AREA-MODE-STAMP.md, .json and .png plots (matplotlib, the plot extra) into --out.
On 2 busy cores the full run took 14 minutes and --quick about one (bench/README.md).

areas:
""" + "\n".join(f"  {name:<12} {text}" for name, text in DESCRIPTIONS.items())


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The bench options (shared by ``cyclad bench`` and ``python -m cyclad.bench``)."""
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.description = DESCRIPTION
    p.add_argument(
        "area",
        nargs="?",
        default="all",
        choices=(*AREAS, "all"),
        metavar="AREA",
        help="one of: " + ", ".join((*AREAS, "all")) + " (listed above; default all)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="fewer and smaller sizes, fewer calls per figure: the whole suite in about a "
        "minute on 2 cores, less when they are idle (plots still drawn)",
    )
    p.add_argument(
        "--out",
        default="bench/results",
        metavar="DIR",
        help="directory for the markdown, JSON and PNG files (default bench/results)",
    )
    p.add_argument(
        "--baselines",
        default=",".join(PEERS),
        metavar="LIST",
        help="comma-separated baselines to time, from numpy, torch, byzfl, or none (default "
        "all three; the read pass is always timed)",
    )
    p.add_argument("--no-plots", action="store_true", help="write no PNG files")
    p.add_argument(
        "--n", type=int, metavar="N", help="aggregators only: time one size, N rows (with --D)"
    )
    p.add_argument(
        "--D", type=float, metavar="D", help="aggregators only: one size, D columns (with --n)"
    )
    p.add_argument(
        "--hostile",
        action="store_true",
        help="aggregators only: just the hostile-row cases (f = n/4 rows of NaN or +-1e300, "
        "float64) against the same rules on the clean matrix, at --n/--D (default 20, 1e6)",
    )
    p.add_argument(
        "--cold",
        action="store_true",
        help="evict the caches before every timed call (a write over twice the last-level "
        "cache, untimed), kernels and read pass alike, so inputs come from memory even when "
        "they would fit in the cache",
    )
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)


def _baselines(text: str, p: argparse.ArgumentParser) -> frozenset[str]:
    names = {t.strip().lower() for t in text.split(",") if t.strip()}
    if names == {"none"}:
        return frozenset()
    bad = sorted(names - set(PEERS))
    if bad:
        p.error(f"--baselines: unknown {', '.join(bad)} (choose from {', '.join(PEERS)}, none)")
    return frozenset(names)


def _log(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def run(args: argparse.Namespace, p: argparse.ArgumentParser) -> int:
    """Run the areas that ``args`` name; returns the exit code."""
    from cyclad.bench._plots import plot_report

    if (args.n is None) != (args.D is None):
        p.error("--n and --D go together")
    if (args.n is not None or args.hostile) and args.area != "aggregators":
        p.error("--n/--D and --hostile are supported by the aggregators area only")
    if args.n is not None and (args.n < 1 or args.D < 1):
        p.error("--n and --D must be at least 1")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        p.error(f"--out {out} exists and is not a directory")
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    settings = Settings(mode, _baselines(args.baselines, p), _log, cold=args.cold)
    areas = AREAS if args.area == "all" else (args.area,)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    t0 = time.perf_counter()
    _log("measuring the read bandwidth")
    machine = machine_info(read_bandwidth(settings))
    sys.stdout.write(machine_table(machine))
    skipped: str | None = None
    for area in areas:
        mod: ModuleType = importlib.import_module(f"cyclad.bench.{MODULES[area]}")
        ta = time.perf_counter()
        if area == "aggregators":
            size = None if args.n is None else (args.n, int(args.D))
            report = mod.run(settings, size=size, hostile_only=args.hostile)
        else:
            report = mod.run(settings)
        report.seconds = time.perf_counter() - ta
        if args.cold:
            report.notes.insert(0, COLD_METHOD)
        stem = f"{area}-{mode}{'-cold' if args.cold else ''}-{stamp}"
        if not args.no_plots:
            out.mkdir(parents=True, exist_ok=True)
            report.files, skipped = plot_report(report, out, stem)
            if skipped is not None:
                report.notes.append(skipped)
        files = write_report(report, machine, out, stem)
        notes = "".join(f"- {n}\n" for n in report.notes)
        sys.stdout.write(
            f"\n## {area} ({mode}, {report.seconds:.1f} s)\n\n"
            + (notes + "\n" if notes else "")
            + report.body
        )
        written = ", ".join(str(f) for f in [*files, *report.files])
        sys.stdout.write(f"\nwrote {written}\n")
        sys.stdout.flush()
    if skipped is not None:
        _log(skipped)
    sys.stdout.write(f"\nbench {args.area} ({mode}): {time.perf_counter() - t0:.1f} s\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cyclad.bench", allow_abbrev=False)
    add_arguments(p)
    return run(p.parse_args(argv), p)


if __name__ == "__main__":
    raise SystemExit(main())
