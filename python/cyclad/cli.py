"""The ``cyclad`` command line: ``demo``, ``run``, ``sweep``, ``plot``, ``bench``.

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
import concurrent.futures as cf
import itertools
import json
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

try:
    import tomllib
except ImportError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

import numpy as np

EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["--d", "4", "--attack=alie", "--aggregator_params.tau", "1"]`` -> dict."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(items):
        item = items[i]
        if not item.startswith("--") or len(item) <= 2:
            msg = f"expected --field value, got {item!r}"
            raise ValueError(msg)
        key = item[2:]
        if "=" in key:
            key, _, raw = key.partition("=")
            i += 1
        else:
            if i + 1 >= len(items):
                msg = f"missing value for --{key}"
                raise ValueError(msg)
            raw = items[i + 1]
            i += 2
        key = key.replace("-", "_")
        value = _parse_value(raw)
        if "." in key:
            table, _, sub = key.partition(".")
            out.setdefault(table, {})[sub] = value
        else:
            out[key] = value
    return out


def _load_values(path: str | None, overrides: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if path is not None:
        with open(path, "rb") as fh:
            values = tomllib.load(fh)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            values[key] = {**values[key], **value}
        else:
            values[key] = value
    return values


def _err(text: str) -> None:
    sys.stderr.write(f"cyclad: error: {text}\n")


def _fmt_bytes(b: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(b) < 1000 or unit == "GB":
            return f"{b:.1f} {unit}" if unit != "B" else f"{int(b)} B"
        b /= 1000
    return f"{b:.1f} GB"  # pragma: no cover


def _write_history(hist: Any, cfg: Any, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    hist.to_csv(out / "history.csv")
    hist.to_json(out / "history.json")
    (out / "config.toml").write_text(cfg.to_toml())


# --------------------------------------------------------------------------------------------
# run
# --------------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace, extra: list[str]) -> int:
    from cyclad import train

    try:
        values = _load_values(args.config, _parse_overrides(extra))
        cfg = train.Config.from_dict(values)
        cfg.validate()
    except (ValueError, TypeError, OSError) as exc:
        _err(str(exc))
        return EXIT_CONFIG
    out = Path(args.out or f"runs/{time.strftime('%Y%m%d-%H%M%S')}")
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
            _write_history(hist, cfg, out)
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
    sys.stdout.write("\n".join(f"{k:<{width}}  {v}" for k, v in rows) + "\n")
    sys.stdout.write(f"wrote {out}/history.csv, history.json, config.toml\n")
    return code


# --------------------------------------------------------------------------------------------
# sweep
# --------------------------------------------------------------------------------------------


def expand_grid(values: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """The grid keys and one value dict per combination.

    Every list-valued field spans one grid axis (in file order). An optional array of tables
    ``[[variants]]`` adds one more axis, ``variant``: each table overrides several fields at
    once (e.g. ``compressor`` and ``error_feedback``) and may carry a ``label``.
    """
    values = dict(values)
    variants = values.pop("variants", None)
    keys = [k for k, v in values.items() if isinstance(v, list)]
    axes: list[list[Any]] = [values[k] for k in keys]
    if variants is not None:
        if not isinstance(variants, list) or not all(isinstance(v, dict) for v in variants):
            msg = "variants must be an array of tables ([[variants]])"
            raise ValueError(msg)
        keys = ["variant", *keys]
        axes = [variants, *axes]
    combos = []
    for prod in itertools.product(*axes):
        combo = dict(values)
        for k, v in zip(keys, prod, strict=True):
            if k == "variant":
                over = dict(v)
                label = over.pop("label", None) or ",".join(f"{a}={b}" for a, b in over.items())
                combo.update(over)
                combo["variant"] = label
            else:
                combo[k] = v
        combos.append(combo)
    return keys, combos


def _config_values(combo: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in combo.items() if k != "variant"}


def _label(combo: dict[str, Any], keys: Sequence[str]) -> str:
    return ",".join(f"{k}={combo[k]}" for k in keys) or "run"


def _sweep_worker(job: tuple[int, dict[str, Any], str]) -> dict[str, Any]:
    idx, values, run_dir = job
    from cyclad import train

    cfg = train.Config.from_dict(_config_values(values))
    hist = train.run(cfg)
    out = Path(run_dir)
    _write_history(hist, cfg, out)
    return {
        "index": idx,
        "final_accuracy": hist.final_accuracy,
        "final_loss": hist.final_loss,
        "bytes_up": int(sum(hist.bytes_up)),
        "seconds": hist.seconds[-1],
        "dir": out.name,
    }


def _mean_std(xs: Sequence[float]) -> str:
    a = np.asarray(xs, dtype=float)
    if a.size == 1:
        return f"{a[0]:.4f}"
    return f"{np.mean(a):.4f} ± {np.std(a, ddof=1):.4f}"


def run_sweep(
    values: dict[str, Any], out: Path, jobs: int | None = None, echo: bool = True
) -> list[dict[str, Any]]:
    """Run the grid of ``values`` and write ``results.csv``, ``summary.csv``, ``summary.md``.

    Returns the summary rows (one per grid point, seeds pooled).
    """
    from cyclad import train

    keys, combos = expand_grid(values)
    jobs = jobs or os.cpu_count() or 1
    cfgs = []
    for combo in combos:
        if jobs > 1 and combo.get("threads") is None:
            combo["threads"] = 1
        cfg = train.Config.from_dict(_config_values(combo))
        cfg.validate()
        cfgs.append(cfg)
    out.mkdir(parents=True, exist_ok=True)
    work = [(i, c, str(out / "runs" / f"{i:03d}")) for i, c in enumerate(combos)]
    results: list[dict[str, Any]] = []
    if jobs == 1 or len(work) == 1:
        for w in work:
            results.append(_sweep_worker(w))
            if echo:
                sys.stdout.write(f"  [{len(results)}/{len(work)}] {_label(combos[w[0]], keys)}\n")
    else:
        with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as ex:
            for res in ex.map(_sweep_worker, work):
                results.append(res)
                if echo:
                    sys.stdout.write(
                        f"  [{len(results)}/{len(work)}] {_label(combos[res['index']], keys)}\n"
                    )
    results.sort(key=lambda r: r["index"])
    # per-run table
    for r in results:
        r["dir"] = f"runs/{r['dir']}"
    cols = [*keys, "final_accuracy", "final_loss", "bytes_up", "seconds", "dir"]
    lines = [",".join(cols)]
    for r in results:
        combo = combos[r["index"]]
        lines.append(",".join([*(str(combo[k]) for k in keys),
                               *(str(r[c]) for c in cols[len(keys):])]))
    (out / "results.csv").write_text("\n".join(lines) + "\n")
    # summary: seeds pooled
    gkeys = [k for k in keys if k != "seed"]
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in results:
        combo = combos[r["index"]]
        groups.setdefault(tuple(str(combo[k]) for k in gkeys), []).append(r)
    summary = []
    for gk, rs in groups.items():
        row: dict[str, Any] = dict(zip(gkeys, gk, strict=True))
        row["runs"] = len(rs)
        row["final_accuracy"] = _mean_std([r["final_accuracy"] for r in rs])
        row["final_loss"] = _mean_std([r["final_loss"] for r in rs])
        row["uplink_MB"] = f"{np.mean([r['bytes_up'] for r in rs]) / 1e6:.2f}"
        summary.append(row)
    heads = [*gkeys, "runs", "final_accuracy", "final_loss", "uplink_MB"]
    (out / "summary.csv").write_text(
        "\n".join([",".join(heads)] + [",".join(str(r[h]) for h in heads) for r in summary]) + "\n"
    )
    md = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    md += ["| " + " | ".join(str(r[h]) for h in heads) + " |" for r in summary]
    (out / "summary.md").write_text("\n".join(md) + "\n")
    if echo:
        sys.stdout.write("\n" + "\n".join(md) + "\n")
        sys.stdout.write(f"\nwrote {out}/results.csv, summary.csv, summary.md, runs/\n")
    return summary


def cmd_sweep(args: argparse.Namespace, extra: list[str]) -> int:
    try:
        values = _load_values(args.config, _parse_overrides(extra))
    except (ValueError, TypeError, OSError) as exc:
        _err(str(exc))
        return EXIT_CONFIG
    out = Path(args.out or f"runs/sweep-{time.strftime('%Y%m%d-%H%M%S')}")
    from cyclad import train

    try:
        run_sweep(values, out, args.jobs)
    except train.ConfigError as exc:
        _err(str(exc))
        return EXIT_CONFIG
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted; finished runs are under runs/ in the output folder\n")
        return EXIT_INTERRUPTED
    return 0


# --------------------------------------------------------------------------------------------
# plot
# --------------------------------------------------------------------------------------------


def _collect_histories(paths: Sequence[str]) -> list[Path]:
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            found.append(p)
        elif (p / "history.json").is_file():
            found.append(p / "history.json")
        elif p.is_dir():
            found.extend(sorted(p.glob("runs/*/history.json")) or sorted(p.glob("*/history.json")))
        else:
            msg = f"{p}: no such file or directory"
            raise FileNotFoundError(msg)
    if not found:
        msg = f"no history.json found under {', '.join(paths)}"
        raise FileNotFoundError(msg)
    return found


def plot_histories(paths: Sequence[str], out: Path, title: str | None = None) -> Path:
    """Accuracy and loss vs round and vs cumulative uplink bytes, one line per history."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        msg = "cyclad plot needs matplotlib: pip install 'cyclad[plot]'"
        raise ImportError(msg) from exc
    from cyclad.train import History

    files = _collect_histories(paths)
    hists = [History.from_json(f) for f in files]
    keys = sorted({k for h in hists for k in h.config})
    differing = [k for k in keys
                 if len({json.dumps(h.config.get(k), sort_keys=True) for h in hists}) > 1]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    for h, f in zip(hists, files, strict=True):
        label = ", ".join(f"{k}={h.config.get(k)}" for k in differing) or f.parent.name
        rounds = np.arange(1, len(h) + 1)
        acc = np.asarray(h.accuracy, dtype=float)
        loss = np.asarray(h.loss, dtype=float)
        cum = np.asarray(h.cum_bytes_up, dtype=float)
        ok = ~np.isnan(acc)
        axes[0, 0].plot(rounds[ok], acc[ok], label=label)
        axes[0, 1].plot(rounds[ok], loss[ok], label=label)
        axes[1, 0].plot(cum[ok], acc[ok], label=label)
        axes[1, 1].plot(cum[ok], loss[ok], label=label)
    axes[0, 0].set(xlabel="round", ylabel="test accuracy")
    axes[0, 1].set(xlabel="round", ylabel="training loss", yscale="log")
    axes[1, 0].set(xlabel="uplink bytes (cumulative)", ylabel="test accuracy", xscale="log")
    axes[1, 1].set(xlabel="uplink bytes (cumulative)", ylabel="training loss",
                   xscale="log", yscale="log")
    for ax in axes.ravel():
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def cmd_plot(args: argparse.Namespace, extra: list[str]) -> int:
    if extra:
        _err(f"unexpected arguments {extra}")
        return EXIT_CONFIG
    try:
        out = plot_histories(args.results, Path(args.out), args.title)
    except (ImportError, FileNotFoundError, ValueError) as exc:
        _err(str(exc))
        return 1
    sys.stdout.write(f"wrote {out}\n")
    return 0


# --------------------------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------------------------

DEMO = {
    "dataset": "digits", "model": "softmax", "n_devices": 20, "n_byzantine": 4,
    "partition": "extreme", "aggregator": "trimmed_mean", "rounds": 150, "lr": 0.5,
}
DEMO_ATTACKS = ("none", "sign_flip", "foe", "alie")
DEMO_D = (1, 2, 4, 10, 20)


def cmd_demo(args: argparse.Namespace, extra: list[str]) -> int:
    """Final test accuracy of LAD for d in DEMO_D under a few attacks (a table)."""
    from cyclad import train

    base = {**DEMO, "rounds": args.rounds}
    n, f = base["n_devices"], base["n_byzantine"]
    t0 = time.perf_counter()
    sys.stdout.write(
        f"LAD on digits (softmax regression, {base['rounds']} rounds): n = {n} devices, "
        f"{f} of them Byzantine;\nextreme heterogeneity (data sorted by label: each subset "
        f"holds one digit);\nserver rule: trimmed mean (f = {f}).\n"
        "Final test accuracy (attack 'none': the Byzantine devices behave honestly):\n\n"
    )
    sys.stdout.write(f"  {'d':>3}" + "".join(f"{a:>11}" for a in DEMO_ATTACKS) + "\n")
    table: dict[tuple[int, str], float] = {}
    for d in DEMO_D:
        sys.stdout.write(f"  {d:>3}")
        for attack in DEMO_ATTACKS:
            h = train.run(train.Config.from_dict({**base, "d": d, "attack": attack}))
            table[d, attack] = h.final_accuracy
            sys.stdout.write(f"{h.final_accuracy:>11.3f}")
            sys.stdout.flush()
        sys.stdout.write("\n")
    worst1 = min(table[1, a] for a in DEMO_ATTACKS)
    worstn = min(table[n, a] for a in DEMO_ATTACKS)
    sys.stdout.write(
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
    p = argparse.ArgumentParser(prog="cyclad", description=__doc__.splitlines()[0], allow_abbrev=False)
    sub = p.add_subparsers(dest="command", required=True)

    pd = sub.add_parser("demo", allow_abbrev=False, help="a one-minute LAD experiment on digits")
    pd.add_argument("--rounds", type=int, default=DEMO["rounds"])

    pr = sub.add_parser("run", allow_abbrev=False, help="train one configuration (TOML file and/or --field value)")
    pr.add_argument("config", nargs="?", help="TOML file of Config fields")
    pr.add_argument("--out", help="output directory (default runs/<timestamp>)")
    pr.add_argument("--quiet", action="store_true", help="no progress bar")

    ps = sub.add_parser("sweep", allow_abbrev=False, help="run the grid of every list-valued field")
    ps.add_argument("config", help="TOML file; list-valued fields span the grid")
    ps.add_argument("--out", help="output directory (default runs/sweep-<timestamp>)")
    ps.add_argument("--jobs", type=int, default=None, help="parallel processes (default: cores)")

    pp = sub.add_parser("plot", allow_abbrev=False, help="accuracy / loss vs round and vs uplink bytes (PNG)")
    pp.add_argument("results", nargs="+", help="history.json files, run or sweep folders")
    pp.add_argument("--out", default="plot.png")
    pp.add_argument("--title", default=None)

    pb = sub.add_parser("bench", allow_abbrev=False, help="python -m cyclad.bench AREA ...")
    pb.add_argument("area")

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("run", "sweep") and not ({"-h", "--help"} & set(argv)):
        # Field flags (--d 4 --lr -0.5) are not argparse options: split them off by hand so a
        # negative number or a value is never taken for the positional config file.
        takes_value = {"--out": True, "--quiet": False, "--jobs": True}
        own: list[str] = [argv[0]]
        extra: list[str] = []
        positional: list[str] = []
        i = 1
        while i < len(argv):
            tok = argv[i]
            key = tok.split("=", 1)[0]
            if key in takes_value:
                own.append(tok)
                if takes_value[key] and "=" not in tok and i + 1 < len(argv):
                    own.append(argv[i + 1])
                    i += 1
            elif tok.startswith("--"):
                extra.append(tok)
                if "=" not in tok and i + 1 < len(argv):
                    extra.append(argv[i + 1])
                    i += 1
            else:
                positional.append(tok)
            i += 1
        args = p.parse_args(own[:1] + positional + own[1:])
    else:
        args, extra = p.parse_known_args(argv)
    if args.command == "bench":
        from cyclad.bench.__main__ import main as bench_main

        return int(bench_main([args.area, *extra]))
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
