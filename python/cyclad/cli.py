"""The ``cyclad`` command line: ``demo``, ``run``, ``sweep``, ``plot``, ``launch``, ``bench``.

``cyclad run [config.toml] [--field value ...]`` trains one configuration; flags override the
TOML file and are parsed as TOML literals (``--d 4 --attack alie --lr 0.5``,
``--aggregator_params.tau 1.0``; a value that is not a TOML literal is taken as a string). It
writes ``history.csv``, ``history.json`` and the resolved ``config.toml`` to ``--out`` (default
``runs/<timestamp>``); on Ctrl-C it writes the rounds completed so far and exits with 130.

``cyclad sweep grid.toml`` runs the grid of every list-valued field in parallel processes and
writes one table (final accuracy and loss, mean ± std over seeds) as CSV and markdown.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

try:
    import tomllib
except ImportError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

# The sweep engine, grid expansion, plotting and the demo grid live in cyclad.experiment; it
# (and cyclad.train) is imported inside each command so that `cyclad --help` stays fast.

EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130
OVERWRITE = "write into an existing non-empty --out (files of the same name are replaced)"


def _err(text: str) -> None:
    sys.stderr.write(f"cyclad: error: {text}\n")


def _silence_stdout() -> None:
    # the reader of a pipe went away (cyclad ... | head): send the rest of the output, and the
    # interpreter's final flush, to /dev/null instead of raising BrokenPipeError
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _out(text: str) -> None:
    """Write to stdout; after a broken pipe the command goes on and its output is dropped."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()


def _load_error(config: str | None, exc: Exception) -> str:
    if isinstance(exc, tomllib.TOMLDecodeError):
        return f"{config}: invalid TOML: {exc}"
    return str(exc)


def _out_error(out: Path, overwrite: bool) -> str | None:
    """Why ``--out`` cannot be written (an existing file or non-empty folder), or None."""
    if out.exists() and not out.is_dir():
        return f"--out {out} exists and is not a directory"
    if not overwrite and out.is_dir() and any(out.iterdir()):
        return f"--out {out} exists and is not empty; pass --overwrite to write into it"
    return None


def _fmt_bytes(b: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(b) < 1000 or unit == "GB":
            return f"{b:.1f} {unit}" if unit != "B" else f"{int(b)} B"
        b /= 1000
    return f"{b:.1f} GB"  # pragma: no cover


# --------------------------------------------------------------------------------------------
# run
# --------------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace, extra: list[str]) -> int:
    from cyclad import experiment, train

    try:
        values = train.load_values(args.config, train.parse_overrides(extra))
        cfg = train.Config.from_dict(values)
        cfg.validate()
    except (ValueError, TypeError, OSError) as exc:
        _err(_load_error(args.config, exc))
        return EXIT_CONFIG
    out = Path(args.out or f"runs/{time.strftime('%Y%m%d-%H%M%S')}")
    problem = _out_error(out, args.overwrite)
    if problem is not None:
        _err(problem)
        return EXIT_CONFIG
    hist = None
    code = 0
    try:
        hist = train.run(cfg, progress=not args.quiet)
    except train.Interrupted as exc:
        hist = exc.history
        code = EXIT_INTERRUPTED
        sys.stderr.write(f"\ninterrupted after {len(hist)} rounds; writing what was done\n")
    except train.ConfigError as exc:
        _err(str(exc))
        return EXIT_CONFIG
    finally:
        if hist is not None:
            experiment.write_run(hist, cfg, out)
    assert hist is not None
    rows = [
        ("rounds", f"{len(hist)}"),
        ("final test accuracy", f"{hist.final_accuracy:.4f}"),
        ("final training loss", f"{hist.final_loss:.4f}"),
        ("uplink", _fmt_bytes(float(sum(hist.bytes_up)))),
        ("downlink", _fmt_bytes(float(sum(hist.bytes_down)))),
        ("wall time", f"{hist.seconds[-1]:.2f} s" if hist.seconds else "-"),
    ]
    width = max(len(k) for k, _ in rows)
    _out("\n".join(f"{k:<{width}}  {v}" for k, v in rows) + "\n")
    _out(f"wrote {out}/history.csv, history.json, config.toml\n")
    return code


# --------------------------------------------------------------------------------------------
# sweep
# --------------------------------------------------------------------------------------------


def cmd_sweep(args: argparse.Namespace, extra: list[str]) -> int:
    from cyclad import train

    try:
        values = train.load_values(args.config, train.parse_overrides(extra))
    except (ValueError, TypeError, OSError) as exc:
        _err(_load_error(args.config, exc))
        return EXIT_CONFIG
    out = Path(args.out or f"runs/sweep-{time.strftime('%Y%m%d-%H%M%S')}")
    problem = _out_error(out, args.overwrite)
    if problem is not None:
        _err(problem)
        return EXIT_CONFIG
    from cyclad import experiment, train

    def progress(done: int, total: int, label: str) -> None:
        _out(f"  [{done}/{total}] {label}\n")

    try:
        summary = experiment.run_sweep(values, out, args.jobs, progress=progress)
    except train.ConfigError as exc:
        _err(str(exc))
        return EXIT_CONFIG
    except experiment.SweepInterrupted as exc:
        if exc.summary:
            _out("\n" + experiment.markdown_table(exc.summary))
        sys.stderr.write(
            f"\ninterrupted after {exc.done} of {exc.total} runs; wrote {out}/results.csv, "
            "summary.csv, summary.md of the finished ones\n"
        )
        return EXIT_INTERRUPTED
    _out("\n" + experiment.markdown_table(summary))
    _out(f"\nwrote {out}/results.csv, summary.csv, summary.md, runs/\n")
    return 0


# --------------------------------------------------------------------------------------------
# plot
# --------------------------------------------------------------------------------------------


def cmd_plot(args: argparse.Namespace, extra: list[str]) -> int:
    if extra:
        _err(f"unexpected arguments {extra}")
        return EXIT_CONFIG
    from cyclad import experiment

    try:
        if args.x is None:
            out = experiment.plot_histories(args.results, Path(args.out), args.title)
        else:
            out = experiment.plot_summary(args.results, Path(args.out), args.x, args.title)
    except (ImportError, FileNotFoundError, ValueError, TypeError) as exc:
        _err(str(exc))
        return 1
    _out(f"wrote {out}\n")
    return 0


# --------------------------------------------------------------------------------------------
# fields
# --------------------------------------------------------------------------------------------


def _attribute_docs(doc: str) -> dict[str, tuple[str, str]]:
    """``name -> (type, first line of meaning)`` from a numpydoc ``Attributes`` section."""
    lines = doc.expandtabs().splitlines()
    try:
        start = next(i for i, ln in enumerate(lines) if ln.strip() == "Attributes") + 2
    except StopIteration:
        return {}
    out: dict[str, tuple[str, str]] = {}
    entries: list[tuple[list[str], str, list[str]]] = []
    for ln in lines[start:]:
        if not ln.strip():
            continue
        if len(ln) - len(ln.lstrip()) <= 4:  # an entry: "name, name : type"
            head, _, kind = ln.strip().partition(" : ")
            entries.append(([n.strip() for n in head.split(",")], kind.strip(), []))
        elif entries:
            entries[-1][2].append(ln.strip())
    for names, typ, body in entries:
        text = " ".join(body).replace("``", "").replace(":class:", "").replace(":func:", "")
        text = text.replace("`", "")
        text = text.replace("e.g. ", "e.g.\0").replace(".. ", "..\0")
        # the first sentence, whole: its clauses after a ";" often say what None means
        first = text.split(". ")[0].replace("\0", " ")
        if first.endswith(".") and not first.endswith("..."):
            first = first[:-1]
        for n in names:
            out[n] = (typ, first)
    return out


def field_table() -> list[tuple[str, str, str, str]]:
    """``(name, type, default, meaning)`` of every :class:`cyclad.train.Config` field."""
    import dataclasses

    from cyclad import train

    docs = _attribute_docs(train.Config.__doc__ or "")
    rows = []
    for fd in dataclasses.fields(train.Config):
        if fd.default is not dataclasses.MISSING:
            default = repr(fd.default)
        elif fd.default_factory is not dataclasses.MISSING:
            default = repr(fd.default_factory())
        else:  # pragma: no cover - every field has a default
            default = "-"
        typ, meaning = docs.get(fd.name, (str(fd.type), ""))
        if not meaning:  # documented with another field: point to it
            host = next((k for k, (_, m) in docs.items() if f"{fd.name}" in m.split()), None)
            mentioned = [k for k in docs if fd.name in (train.Config.__doc__ or "")]
            meaning = f"see {host}" if host else ("see the Config docstring" if mentioned else "")
        rows.append((fd.name, typ or str(fd.type), default, meaning))
    return rows


def fields_text() -> str:
    """The field table as text, one field a line."""
    rows = field_table()
    wn = max(len(r[0]) for r in rows)
    wt = min(max(len(r[1]) for r in rows), 24)
    wd = min(max(len(r[2]) for r in rows), 18)
    return "\n".join(f"  {n:<{wn}}  {t:<{wt}}  {d:<{wd}}  {m}".rstrip() for n, t, d, m in rows)


def cmd_fields(args: argparse.Namespace, extra: list[str]) -> int:
    _out(
        "Config fields (name, type, default, meaning); set them in a TOML file or with "
        "--FIELD VALUE:\n\n" + fields_text() + "\n"
    )
    return 0


# --------------------------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace, extra: list[str]) -> int:
    """Final test accuracy of LAD for d in DEMO_D under a few attacks (a table)."""
    from cyclad import experiment

    rounds = experiment.DEMO["rounds"] if args.rounds is None else args.rounds
    n, f = experiment.DEMO["n_devices"], experiment.DEMO["n_byzantine"]
    attacks = experiment.DEMO_ATTACKS
    t0 = time.perf_counter()
    _out(
        f"LAD on digits (softmax regression, {rounds} rounds): n = {n} devices, "
        f"{f} of them Byzantine;\nextreme heterogeneity (data sorted by label: each subset "
        f"holds one digit);\nserver rule: trimmed mean (f = {f}).\n"
        "Final test accuracy (attack 'none': the Byzantine devices behave honestly):\n\n"
    )
    _out(f"  {'d':>3}" + "".join(f"{a:>11}" for a in attacks) + "\n")
    table: dict[tuple[int, str], float] = {}
    for d, attack, accuracy in experiment.demo_runs(rounds):
        if attack == attacks[0]:
            _out(f"  {d:>3}")
        table[d, attack] = accuracy
        _out(f"{accuracy:>11.3f}")
        if attack == attacks[-1]:
            _out("\n")
    worst1 = min(table[1, a] for a in attacks)
    worstn = min(table[n, a] for a in attacks)
    _out(
        f"\nEach device encodes d of the {n} data subsets (cyclic gradient code); d = 1 is "
        "plain robust\ngradient descent. The honest coded vectors' spread shrinks as "
        "(N-d)/(d(N-1)), so the\nrobust rule has less room to be fooled: worst-case accuracy "
        f"{worst1:.3f} at d = 1, {worstn:.3f} at d = {n}.\n"
        "Uplink per round is the same for every d (one vector per device); the price of d "
        "is\nd subset gradients of computation per device.\n"
        f"({len(table)} runs in {time.perf_counter() - t0:.1f} s)\n"
    )
    return 0


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """The ``cyclad`` command; returns the exit code."""
    try:
        return _main(argv)
    except BrokenPipeError:  # e.g. cyclad run --help | head -1
        _silence_stdout()
        return 0


def _main(argv: list[str] | None) -> int:
    doc = (__doc__ or "cyclad").splitlines()[0].replace("``", "")
    p = argparse.ArgumentParser(prog="cyclad", description=doc, allow_abbrev=False)
    sub = p.add_subparsers(dest="command", required=True)

    pd = sub.add_parser("demo", allow_abbrev=False, help="a one-minute LAD experiment on digits")
    pd.add_argument("--rounds", type=int, default=None, help="rounds per run (default 150)")

    fields = (
        "Any other --FIELD VALUE (or --FIELD=VALUE) sets a Config field, overriding the TOML\n"
        "file; VALUE is a TOML literal (--d 4 --lr 0.5 --aggregator_params.tau 1.0), else a\n"
        "string (--attack alie). cyclad fields lists the fields."
    )
    sub.add_parser(
        "fields",
        allow_abbrev=False,
        help="list every config field with its type, default and meaning",
        description="List every Config field (name, type, default, meaning).",
    )
    run_fields = fields + "\n\nConfig fields (name, type, default, meaning):\n" + fields_text()
    pr = sub.add_parser(
        "run",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
        help="train one configuration (TOML file and/or --field value)",
        description="Train one configuration; write history.csv, history.json and config.toml "
        "to --out (on Ctrl-C: the rounds done so far, exit 130).",
        epilog=run_fields,
    )
    pr.add_argument("config", nargs="?", help="TOML file of Config fields")
    pr.add_argument("--out", help="output directory (default runs/<timestamp>)")
    pr.add_argument("--quiet", action="store_true", help="no progress bar")
    pr.add_argument("--overwrite", action="store_true", help=OVERWRITE)

    ps = sub.add_parser(
        "sweep",
        allow_abbrev=False,
        help="run the grid of every list-valued field",
        description="Run every combination of the list-valued fields (and [[variants]]); write "
        "results.csv, summary.csv and summary.md (seeds pooled) and runs/ to --out.",
        epilog=fields,
    )
    ps.add_argument("config", help="TOML file; list-valued fields span the grid")
    ps.add_argument("--out", help="output directory (default runs/sweep-<timestamp>)")
    ps.add_argument("--jobs", type=int, default=None, help="parallel processes (default: cores)")
    ps.add_argument("--overwrite", action="store_true", help=OVERWRITE)

    pp = sub.add_parser(
        "plot",
        allow_abbrev=False,
        help="accuracy / loss vs round and vs uplink bytes (PNG)",
        description="Plot test accuracy against the round and the cumulative uplink bytes. A "
        "sweep whose runs form a grid (e.g. 3 attacks x 5 values of d) gets one panel per value "
        "of its outer field(s) (per attack), its lines coloured by the numeric field (d) on "
        "viridis with a colour bar, seeds pooled; any other set of runs gets accuracy and loss "
        "panels with one distinct line per history (named by its sweep variant and the fields "
        "that differ) and the legend outside. With --x FIELD: the final accuracy against a "
        "config field.",
    )
    pp.add_argument("results", nargs="+", help="history.json files, run or sweep folders")
    pp.add_argument("--out", default="plot.png", help="PNG file to write (default plot.png)")
    pp.add_argument("--title", default=None, help="figure title")
    pp.add_argument(
        "--x",
        default=None,
        metavar="FIELD",
        help="plot the final test accuracy against this numeric config field instead (e.g. "
        "--x d for a d sweep; seeds pooled, one line per combination of the other fields)",
    )

    sub.add_parser(
        "launch",
        add_help=False,
        help="run LAD / Com-LAD in n_devices + 1 processes on this machine (torch.distributed; "
        "see cyclad launch --help)",
    )

    from cyclad.bench.__main__ import add_arguments as bench_arguments

    pb = sub.add_parser(
        "bench",
        allow_abbrev=False,
        help="time the kernels and a LAD round against the read pass, NumPy, torch, ByzFL",
    )
    bench_arguments(pb)

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "launch":
        # its own parser (cyclad.distributed), so that `cyclad launch --help` lists its options
        try:
            from cyclad import distributed
        except ImportError as exc:
            _err(f"cyclad launch needs torch: pip install 'cyclad[torch]' ({exc})")
            return EXIT_CONFIG
        return distributed.launch(argv[1:])
    if argv and argv[0] in ("run", "sweep") and not ({"-h", "--help"} & set(argv)):
        # Field flags (--d 4 --lr -0.5) are not argparse options: split them off by hand so a
        # negative number or a value is never taken for the positional config file.
        from cyclad.train import split_field_flags

        takes_value = {"--out": True, "--quiet": False, "--jobs": True, "--overwrite": False}
        own, positional, extra = split_field_flags(argv[1:], takes_value)
        args = p.parse_args(argv[:1] + positional + own)
    else:
        args, extra = p.parse_known_args(argv)
    if args.command == "bench":
        from cyclad.bench.__main__ import run as bench_run

        if extra:
            pb.error(f"unrecognized arguments: {' '.join(extra)}")
        return bench_run(args, pb)
    if args.command == "fields":
        if extra:
            p.error(f"unrecognized arguments: {' '.join(extra)}")
        return cmd_fields(args, extra)
    if args.command == "demo":
        if extra:
            p.error(f"unrecognized arguments: {' '.join(extra)}")
        return cmd_demo(args, extra)
    handler = {"run": cmd_run, "sweep": cmd_sweep, "plot": cmd_plot}[args.command]
    try:
        return handler(args, extra)
    except KeyboardInterrupt:  # pragma: no cover - interrupted outside a run
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
