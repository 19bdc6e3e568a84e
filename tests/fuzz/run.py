"""Run the atheris fuzz targets.

    python -m tests.fuzz.run --target wire --runs 100000
    python -m tests.fuzz.run --target all --seconds 30          # what CI runs (bounded)
    python -m tests.fuzz.run --target wire --runs 1000000 --jobs 2   # a long run
    python -m tests.fuzz.run --target wire --reproduce crash-0a1b2c   # replay one input

Each target runs in its own process (libFuzzer exits the process when it finishes). Seeds are
read from tests/fuzz/corpus/<target>/ (never written); new coverage-increasing inputs go to a
scratch corpus, build/fuzz/<target>/corpus by default, and crash inputs to build/fuzz/<target>/
(``crash-*``), printed at the end. Memory is capped through libFuzzer's -rss_limit_mb (default
2048; the targets' shape caps keep a run well below 1 GB) and each input through -timeout.

Known defects can be tolerated one by one with CYCLAD_FUZZ_KNOWN=id,id (see README.md).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

TARGETS = ("wire", "coding", "aggregators")
HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


def _instrument_cyclad(atheris) -> int:
    """Coverage instrumentation of every function and method defined in cyclad's Python modules.

    (``atheris.instrument_imports`` reports instrumenting the cyclad modules but yields no
    coverage for them, with atheris 3.0.0 on Python 3.11; instrumenting the function objects
    after import does, without instrumenting all of NumPy as ``instrument_all`` would.)
    """
    import inspect
    import types

    seen: set[int] = set()
    count = 0

    def visit(obj: object, modname: str) -> None:
        nonlocal count
        for value in list(vars(obj).values()):
            fn = value.__func__ if isinstance(value, staticmethod | classmethod) else value
            if isinstance(value, property):
                for acc in (value.fget, value.fset):
                    if acc is not None:
                        visit_fn(acc, modname)
                continue
            if isinstance(fn, types.FunctionType):
                visit_fn(fn, modname)
            elif inspect.isclass(fn) and fn.__module__ == modname and id(fn) not in seen:
                seen.add(id(fn))
                visit(fn, modname)

    def visit_fn(fn: types.FunctionType, modname: str) -> None:
        nonlocal count
        if fn.__module__ != modname or id(fn) in seen:
            return
        seen.add(id(fn))
        atheris.instrument_func(fn)
        count += 1

    for name, mod in list(sys.modules.items()):
        if (name == "cyclad" or name.startswith("cyclad.")) and mod is not None:
            visit(mod, name)
    return count


def _child(target: str, libfuzzer_args: list[str]) -> None:
    import atheris

    import cyclad.aggregators
    import cyclad.coding
    import cyclad.compression  # noqa: F401

    _instrument_cyclad(atheris)
    mod = __import__(f"tests.fuzz.fuzz_{target}", fromlist=["one_input", "setup"])
    mod.setup()
    import atexit

    from tests.fuzz import _common

    atexit.register(_common.print_known_hits)
    atheris.Setup([f"fuzz_{target}", *libfuzzer_args], mod.one_input)
    atheris.Fuzz()


def _run(target: str, args: argparse.Namespace) -> tuple[int, float, list[Path]]:
    work = Path(args.workdir) / target
    scratch = work / "corpus"
    scratch.mkdir(parents=True, exist_ok=True)
    lf = [
        f"-rss_limit_mb={args.rss_limit_mb}",
        f"-timeout={args.timeout}",
        "-print_final_stats=1",
        "-keep_seed=1",
        f"-artifact_prefix={work}/",
    ]
    if args.reproduce:
        lf.append(str(Path(args.reproduce).resolve()))
    else:
        if args.seconds is not None:
            lf.append(f"-max_total_time={args.seconds}")
        lf += [str(scratch), str(HERE / "corpus" / target)]
    before = set(work.glob("crash-*")) | set(work.glob("timeout-*")) | set(work.glob("oom-*"))
    t0 = time.monotonic()
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
    )
    # --jobs N: N child processes of their own (libFuzzer's -jobs re-executes argv[0], which
    # is no executable under atheris), each with its share of --runs and its own seed, all
    # adding to the same scratch corpus. The first failing child's exit status is returned.
    jobs = 1 if args.reproduce else max(1, args.jobs)
    procs = []
    for j in range(jobs):
        argv = [*lf, f"-seed={args.seed + j if args.seed else 0}"]
        if args.runs is not None and not args.reproduce:
            argv.append(f"-runs={args.runs // jobs + (j < args.runs % jobs)}")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "tests.fuzz.run", "--child", target, "--", *argv],
                cwd=REPO,
                env=env,
            )
        )
    codes = [p.wait() for p in procs]
    code = next((c for c in codes if c != 0), 0)
    after = set(work.glob("crash-*")) | set(work.glob("timeout-*")) | set(work.glob("oom-*"))
    return code, time.monotonic() - t0, sorted(after - before)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tests.fuzz.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--target", default="all", choices=[*TARGETS, "all"])
    ap.add_argument("--runs", type=int, default=None, help="executions per target")
    ap.add_argument("--seconds", type=int, default=None, help="time budget per target")
    ap.add_argument(
        "--jobs", type=int, default=1, help="parallel processes (--runs split, seeds seed + j)"
    )
    ap.add_argument("--seed", type=int, default=1, help="libFuzzer -seed (0: random)")
    ap.add_argument("--rss-limit-mb", type=int, default=2048)
    ap.add_argument("--timeout", type=int, default=60, help="seconds per input")
    ap.add_argument("--workdir", default=str(REPO / "build" / "fuzz"))
    ap.add_argument("--reproduce", default=None, help="run one input file and exit")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _child(args.child, args.rest)
        return 0
    if args.runs is None and args.seconds is None and not args.reproduce:
        ap.error("give --runs and/or --seconds")
    targets = TARGETS if args.target == "all" else (args.target,)
    failed = []
    for t in targets:
        print(f"== fuzz target {t} ==", flush=True)
        rc, secs, new = _run(t, args)
        print(f"== fuzz target {t}: exit {rc} after {secs:.1f} s", flush=True)
        for p in new:
            print(f"   reproducer: {p}  (python -m tests.fuzz.run --target {t} --reproduce {p})")
        if rc != 0:
            failed.append(t)
    if failed:
        print(f"fuzz targets failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
