"""Experiments over :mod:`cyclad.train`: sweeps over a grid of configurations, and plots.

- :func:`expand_grid` turns a mapping whose list-valued fields span a grid (plus an optional
  ``variants`` axis) into one value dict per grid point;
- :func:`run_sweep` runs every point (in parallel processes), writes each run's history and one
  table of final accuracy and loss (mean ± std over seeds) as CSV and markdown;
- :func:`plot_histories` draws accuracy and loss against the round and against the cumulative
  uplink bytes, one line per history; :func:`plot_summary` the final accuracy against one
  numeric field (``cyclad plot --x d``);
- :func:`demo_runs` runs the ``cyclad demo`` grid (LAD on digits, several ``d`` and attacks).

``cyclad sweep``, ``cyclad plot``, ``cyclad demo`` and ``experiments/run_all.py`` call these.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import multiprocessing as mp
import os
import signal
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cyclad import train

__all__ = [
    "DEMO",
    "DEMO_ATTACKS",
    "DEMO_D",
    "SweepInterrupted",
    "collect_histories",
    "demo_runs",
    "expand_grid",
    "history_figure",
    "label",
    "line_names",
    "markdown_table",
    "plot_histories",
    "plot_summary",
    "run_coordinates",
    "run_sweep",
    "summary_figure",
    "sweep_layout",
    "write_run",
]

#: The ``cyclad demo`` configuration; :func:`demo_runs` varies ``d`` and ``attack``.
DEMO: dict[str, Any] = {
    "dataset": "digits",
    "model": "softmax",
    "n_devices": 20,
    "n_byzantine": 4,
    "partition": "extreme",
    "aggregator": "trimmed_mean",
    "rounds": 150,
    "lr": 0.5,
}
DEMO_ATTACKS = ("none", "sign_flip", "foe", "alie")
DEMO_D = (1, 2, 4, 10, 20)

#: ``progress(done, total, label)``, called after each finished sweep run.
Progress = Callable[[int, int, str], None]


write_run = train.write_run


class SweepInterrupted(KeyboardInterrupt):
    """Raised by :func:`run_sweep` on Ctrl-C, after the finished runs' tables are written.

    ``summary`` holds their summary rows, ``done`` and ``total`` count the runs.
    """

    def __init__(self, summary: list[dict[str, Any]], done: int, total: int) -> None:
        super().__init__(f"sweep interrupted after {done} of {total} runs")
        self.summary = summary
        self.done = done
        self.total = total


# --------------------------------------------------------------------------------------------
# sweep
# --------------------------------------------------------------------------------------------


def expand_grid(values: Mapping[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """The grid keys and one value dict per combination.

    Every list-valued field spans one grid axis (in file order). An optional array of tables
    ``[[variants]]`` adds one more axis, ``variant``: each table overrides several fields at
    once (e.g. ``compressor`` and ``error_feedback``) and may carry a ``label``.

    Raises
    ------
    ValueError
        If ``variants`` is not an array of tables.
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
                name = over.pop("label", None) or ",".join(f"{a}={b}" for a, b in over.items())
                combo.update(over)
                combo["variant"] = name
            else:
                combo[k] = v
        combos.append(combo)
    return keys, combos


def _config_values(combo: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in combo.items() if k != "variant"}


def label(combo: Mapping[str, Any], keys: Sequence[str]) -> str:
    """``"d=4,seed=1"``: the grid coordinates of one combination (``"run"`` without any)."""
    return ",".join(f"{k}={combo[k]}" for k in keys) or "run"


def _sweep_worker(job: tuple[int, dict[str, Any], str]) -> dict[str, Any]:
    idx, values, run_dir = job
    try:
        cfg = train.Config.from_dict(_config_values(values))
        hist = train.run(cfg)
    except train.ConfigError as exc:
        # sent back as plain values: the exception itself does not survive pickling
        text = str(exc).removeprefix(f"config field '{exc.field}': ")
        return {"index": idx, "config_error": (exc.field, text)}
    out = Path(run_dir)
    write_run(hist, cfg, out)
    if "variant" in values:
        (out / "label.txt").write_text(f"{values['variant']}\n")
    return {
        "index": idx,
        "final_accuracy": hist.final_accuracy,
        "final_loss": hist.final_loss,
        "bytes_up": int(sum(hist.bytes_up)),
        "seconds": hist.seconds[-1],
        "dir": out.name,
    }


def _ignore_sigint() -> None:
    # Ctrl-C reaches the whole process group; the parent alone decides what stops
    signal.signal(signal.SIGINT, signal.SIG_IGN)


#: How often a parallel sweep checks for Ctrl-C while it waits for its runs (seconds).
_POLL_SECONDS = 0.05


@contextlib.contextmanager
def _on_sigint(handler: Any) -> Iterator[None]:
    """Handle SIGINT with ``handler`` inside the block (only in the main thread, the one
    that receives signals; elsewhere the block runs as it is)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _mean_std(xs: Sequence[float]) -> str:
    a = np.asarray(xs, dtype=float)
    if a.size == 1:
        return f"{a[0]:.4f}"
    return f"{np.mean(a):.4f} ± {np.std(a, ddof=1):.4f}"


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows (dicts with the same keys, in column order) as a markdown table."""
    heads = list(rows[0]) if rows else []
    md = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    md += ["| " + " | ".join(str(r[h]) for h in heads) + " |" for r in rows]
    return "\n".join(md) + "\n"


def run_sweep(
    values: Mapping[str, Any],
    out: Path,
    jobs: int | None = None,
    *,
    progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """Run the grid of ``values`` and write ``results.csv``, ``summary.csv``, ``summary.md``.

    Every grid point is validated before the first run starts. Each run's history goes to
    ``out/runs/<index>/``.

    Parameters
    ----------
    values : mapping
        :class:`cyclad.train.Config` fields; list-valued ones span the grid (see
        :func:`expand_grid`).
    out : Path
        Output directory.
    jobs : int, optional
        Parallel processes (default: the number of cores). With more than one, every run whose
        ``threads`` is unset runs single-threaded.
    progress : callable, optional
        ``progress(done, total, label)`` after each finished run, in completion order.

    Returns
    -------
    list of dict
        The summary rows (one per grid point, seeds pooled), with the columns of
        ``summary.csv`` in order.

    Raises
    ------
    cyclad.train.ConfigError
        If any grid point is not a valid configuration (nothing has run then).
    SweepInterrupted
        On Ctrl-C: queued runs are dropped, running ones stopped and every worker process
        reaped; the tables of the runs that finished are written first.
    """
    keys, combos = expand_grid(values)
    jobs = jobs or os.cpu_count() or 1
    for combo in combos:
        if jobs > 1 and combo.get("threads") is None:
            combo["threads"] = 1
        train.Config.from_dict(_config_values(combo)).validate()
    out.mkdir(parents=True, exist_ok=True)
    work = [(i, c, str(out / "runs" / f"{i:03d}")) for i, c in enumerate(combos)]
    results: list[dict[str, Any]] = []

    def done(res: dict[str, Any]) -> None:
        if "config_error" in res:
            field_name, text = res["config_error"]
            raise train.ConfigError(field_name, text)
        results.append(res)
        if progress is not None:
            progress(len(results), len(work), label(combos[res["index"]], keys))

    interrupted = False
    try:
        if jobs == 1 or len(work) == 1:
            for w in work:
                try:
                    done(_sweep_worker(w))
                except train.Interrupted:  # the run in progress is not finished: not reported
                    raise KeyboardInterrupt from None
        else:
            # Ctrl-C only sets a flag that the loop polls: a KeyboardInterrupt raised inside
            # the pool's locks and conditions (a second Ctrl-C while the first is handled)
            # would leave them broken and end in a traceback instead of the tables
            stop = threading.Event()
            with _on_sigint(lambda signum, frame: stop.set()):
                pool = mp.get_context("spawn").Pool(
                    min(jobs, len(work)), initializer=_ignore_sigint
                )
                try:
                    results_of = pool.imap_unordered(_sweep_worker, work)
                    while not stop.is_set():
                        try:
                            res = results_of.next(timeout=_POLL_SECONDS)
                        except mp.TimeoutError:
                            continue
                        except StopIteration:
                            break
                        done(res)
                    pool.close()
                finally:
                    # on Ctrl-C (or an error): drop the queued runs, stop the running ones,
                    # reap every worker
                    pool.terminate()
                    pool.join()
            if stop.is_set():
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        interrupted = True
    results = [r for r in results if "config_error" not in r]
    with _on_sigint(signal.SIG_IGN):  # a second Ctrl-C must not leave half-written tables
        summary = _write_tables(out, keys, combos, results)
    if interrupted:
        raise SweepInterrupted(summary, len(results), len(work))
    return summary


def _write_tables(
    out: Path, keys: Sequence[str], combos: Sequence[Mapping[str, Any]], results: list[Any]
) -> list[dict[str, Any]]:
    results.sort(key=lambda r: r["index"])
    # per-run table
    for r in results:
        r["dir"] = f"runs/{r['dir']}"
    cols = [*keys, "final_accuracy", "final_loss", "bytes_up", "seconds", "dir"]
    lines = [",".join(cols)]
    for r in results:
        combo = combos[r["index"]]
        lines.append(
            ",".join([*(str(combo[k]) for k in keys), *(str(r[c]) for c in cols[len(keys) :])])
        )
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
    (out / "summary.md").write_text(markdown_table(summary))
    return summary


# --------------------------------------------------------------------------------------------
# plot
# --------------------------------------------------------------------------------------------


def collect_histories(paths: Sequence[str | Path]) -> list[Path]:
    """The ``history.json`` files named by ``paths``: files, run folders or sweep folders.

    Raises
    ------
    FileNotFoundError
        If a path does not exist, or no history is found at all.
    """
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
        msg = f"no history.json found under {', '.join(map(str, paths))}"
        raise FileNotFoundError(msg)
    return found


def _pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (files only, no display)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        msg = "cyclad plot needs matplotlib: pip install 'cyclad[plot]'"
        raise ImportError(msg) from exc
    return plt


def _label_of(f: Path) -> str | None:
    p = f.parent / "label.txt"
    return p.read_text().strip() if p.is_file() else None


def _label_own(
    hists: Sequence[train.History], labels: Sequence[str | None], differing: Sequence[str]
) -> list[str]:
    """The fields of ``differing`` that the variant labels explain: constant within the
    histories of every label."""
    if not any(lb is not None for lb in labels):
        return []
    own = []
    for k in differing:
        groups: dict[str | None, set[str]] = {}
        for h, lb in zip(hists, labels, strict=True):
            groups.setdefault(lb, set()).add(_val(h, k))
        if all(len(v) == 1 for v in groups.values()):
            own.append(k)
    return own


def _val(h: train.History, k: str) -> str:
    return json.dumps(h.config.get(k), sort_keys=True)


def line_names(
    hists: Sequence[train.History], files: Sequence[Path], *, skip: Sequence[str] = ()
) -> list[str]:
    """One legend name per history: its sweep variant's label (``label.txt`` beside it), then
    the config fields that differ between the histories and that the label does not explain
    (a field constant within every label's histories is the label's own)."""
    labels = [_label_of(f) for f in files]
    keys = sorted({k for h in hists for k in h.config} - set(skip))
    differing = [k for k in keys if len({_val(h, k) for h in hists}) > 1]
    own = _label_own(hists, labels, differing)
    differing = [k for k in differing if k not in own]
    out = []
    for h, f, lb in zip(hists, files, labels, strict=True):
        parts = ([lb] if lb is not None else []) + [f"{k}={h.config.get(k)}" for k in differing]
        out.append(", ".join(parts) or f.parent.name)
    return out


def run_coordinates(
    hists: Sequence[train.History], files: Sequence[Path]
) -> tuple[list[str], list[dict[str, Any]]]:
    """The fields that tell the runs apart, in config order (``variant`` first, from the sweep's
    ``label.txt`` files, and without the fields the labels explain; ``seed`` left out: seeds
    are pooled), and each run's values of them."""
    labels = [_label_of(f) for f in files]
    keys = list(dict.fromkeys(k for h in hists for k in h.config if k != "seed"))
    differing = [k for k in keys if len({_val(h, k) for h in hists}) > 1]
    own = _label_own(hists, labels, differing)
    fields = [k for k in differing if k not in own]
    if len({lb for lb in labels}) > 1:
        fields = ["variant", *fields]
    coords = [
        {k: (lb if k == "variant" else h.config.get(k)) for k in fields}
        for h, lb in zip(hists, labels, strict=True)
    ]
    return fields, coords


def _numeric(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


MAX_PANELS = 25


def sweep_layout(
    fields: Sequence[str], coords: Sequence[Mapping[str, Any]]
) -> tuple[str, list[str]] | None:
    """``(colour field, panel fields)`` when the runs form a grid over at most three fields (every
    combination present, seeds aside) with at most :data:`MAX_PANELS` panels, else None.

    The colour field is the numeric field with the most values (drawn on an ordered colour map),
    or without one, the last field; the others span the panels.
    """
    if not fields or len(fields) > 3:
        return None

    def values(k: str) -> list[str]:
        return list(dict.fromkeys(json.dumps(c[k], sort_keys=True) for c in coords))

    numeric = [k for k in fields if all(_numeric(c[k]) for c in coords)]
    colour = max(numeric, key=lambda k: len(values(k))) if numeric else fields[-1]
    panels = [k for k in fields if k != colour]
    points = {tuple(json.dumps(c[k], sort_keys=True) for k in fields) for c in coords}
    size = 1
    for k in fields:
        size *= len(values(k))
    n_panels = len({tuple(json.dumps(c[k], sort_keys=True) for k in panels) for c in coords})
    if len(points) != size or n_panels > MAX_PANELS:
        return None
    return colour, panels


def _distinct_style(i: int, total: int) -> dict[str, Any]:
    """Colour and line style of line ``i`` of ``total``: tab10 up to 10 lines, tab20 up to 20,
    then tab20 again with another line style."""
    import matplotlib

    if total <= 10:
        return {"color": matplotlib.colormaps["tab10"](i), "linestyle": "-"}
    styles = ("-", "--", ":", "-.")
    # the ten dark shades of tab20 first, then the ten light ones, so that neighbours differ
    return {
        "color": matplotlib.colormaps["tab20"]((2 * i) % 20 + (i // 10) % 2),
        "linestyle": styles[(i // 20) % len(styles)],
    }


def _pooled(
    runs: Sequence[train.History], x: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x, mean, low, high)`` of the test accuracy over ``runs`` (seeds), on the rounds where
    it was evaluated; x is the round or the mean cumulative uplink bytes."""
    m = min(len(h) for h in runs)
    acc = np.array([np.asarray(h.accuracy[:m], dtype=float) for h in runs])
    ok = ~np.isnan(acc).any(axis=0)
    if x == "round":
        xs = np.arange(1, m + 1, dtype=float)
    else:
        xs = np.mean([np.asarray(h.cum_bytes_up[:m], dtype=float) for h in runs], axis=0)
    a = acc[:, ok]
    return xs[ok], a.mean(axis=0), a.min(axis=0), a.max(axis=0)


def _bytes_axis(ax: Any) -> None:
    """A log x axis of byte counts labelled 1-2-5 per decade in kB / MB / GB (no minor labels:
    they overlap on a span of one or two decades)."""
    from matplotlib.ticker import EngFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(EngFormatter(unit="B", places=0))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _fmt_value(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _grid_figure(
    plt: Any,
    hists: Sequence[train.History],
    coords: Sequence[Mapping[str, Any]],
    colour: str,
    panels: Sequence[str],
    title: str | None,
) -> Any:
    """One panel per combination of the panel fields, in two blocks of rows (accuracy vs
    round, accuracy vs cumulative uplink bytes); lines coloured by ``colour``."""
    import matplotlib
    from matplotlib.colors import BoundaryNorm, ListedColormap

    def key(c: Mapping[str, Any]) -> tuple[str, ...]:
        return tuple(json.dumps(c[k], sort_keys=True) for k in panels)

    panel_keys = list(dict.fromkeys(key(c) for c in coords))
    panel_names = {key(c): ", ".join(f"{k}={_fmt_value(c[k])}" for k in panels) for c in coords}
    cvals = list(dict.fromkeys(json.dumps(c[colour], sort_keys=True) for c in coords))
    raw = {json.dumps(c[colour], sort_keys=True): c[colour] for c in coords}
    numeric = all(_numeric(raw[v]) for v in cvals)
    if numeric:
        cvals.sort(key=lambda v: float(raw[v]))
        cmap = matplotlib.colormaps["viridis"]
        colours = [cmap(x) for x in np.linspace(0.0, 0.9, len(cvals))]
    else:
        colours = [_distinct_style(i, len(cvals))["color"] for i in range(len(cvals))]
    n = len(panel_keys)
    cols = n if n <= 4 else (4 if n <= 8 else 5)
    rows = -(-n // cols)
    fig, axes = plt.subplots(
        2 * rows,
        cols,
        figsize=(3.9 * cols + 1.6, 3.0 * 2 * rows + 0.9),
        sharey=True,
        squeeze=False,
        layout="constrained",
    )
    for block, (x, xlabel) in enumerate(
        (("round", "round"), ("bytes", "uplink bytes (cumulative)"))
    ):
        for p in range(rows * cols):
            ax = axes[block * rows + p // cols][p % cols]
            if p >= n:
                ax.set_visible(False)
                continue
            pk = panel_keys[p]
            for cv, col in zip(cvals, colours, strict=True):
                runs = [
                    h
                    for h, c in zip(hists, coords, strict=True)
                    if key(c) == pk and json.dumps(c[colour], sort_keys=True) == cv
                ]
                if not runs:
                    continue
                xs, mean, lo, hi = _pooled(runs, x)
                ax.plot(xs, mean, color=col, linewidth=1.6, label=f"{colour}={_fmt_value(raw[cv])}")
                if len(runs) > 1:
                    ax.fill_between(xs, lo, hi, color=col, alpha=0.15, linewidth=0)
            name = panel_names[pk] or "all runs"
            ax.set_title(f"{name}: accuracy vs {'round' if x == 'round' else 'uplink'}", fontsize=9)
            ax.set_xlabel(xlabel, fontsize=9)
            if x == "bytes":
                _bytes_axis(ax)
            if p % cols == 0:
                ax.set_ylabel("test accuracy")
            ax.grid(alpha=0.3)
    visible = [ax for ax in axes.ravel() if ax.get_visible()]
    if numeric:
        k = len(cvals)
        sm = matplotlib.cm.ScalarMappable(
            norm=BoundaryNorm(np.arange(k + 1) - 0.5, k), cmap=ListedColormap(colours)
        )
        cb = fig.colorbar(sm, ax=visible, ticks=range(k), shrink=0.6, aspect=30)
        cb.set_ticklabels([_fmt_value(raw[v]) for v in cvals])
        cb.set_label(colour)
    else:
        handles, labels = visible[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside right center", fontsize=8)
    fig.suptitle(
        title
        or f"test accuracy by {colour}, one panel per "
        + (", ".join(panels) if panels else "run set")
    )
    return fig


def _lines_figure(
    plt: Any, hists: Sequence[train.History], names: Sequence[str], title: str | None
) -> Any:
    """Accuracy and loss vs round and vs cumulative uplink bytes, one distinct line per history,
    the legend outside the axes."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), layout="constrained")
    for i, (h, name) in enumerate(zip(hists, names, strict=True)):
        style = _distinct_style(i, len(hists))
        rounds = np.arange(1, len(h) + 1)
        acc = np.asarray(h.accuracy, dtype=float)
        loss = np.asarray(h.loss, dtype=float)
        cum = np.asarray(h.cum_bytes_up, dtype=float)
        ok = ~np.isnan(acc)
        axes[0, 0].plot(rounds[ok], acc[ok], label=name, **style)
        axes[0, 1].plot(rounds[ok], loss[ok], label=name, **style)
        axes[1, 0].plot(cum[ok], acc[ok], label=name, **style)
        axes[1, 1].plot(cum[ok], loss[ok], label=name, **style)
    axes[0, 0].set(xlabel="round", ylabel="test accuracy")
    axes[0, 1].set(xlabel="round", ylabel="training loss", yscale="log")
    axes[1, 0].set(xlabel="uplink bytes (cumulative)", ylabel="test accuracy", xscale="log")
    axes[1, 1].set(
        xlabel="uplink bytes (cumulative)", ylabel="training loss", xscale="log", yscale="log"
    )
    for ax in axes.ravel():
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        _bytes_axis(ax)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="outside right center",
        fontsize=7 if len(hists) > 12 else 8,
        ncols=1 if len(hists) <= 30 else 2,
    )
    if title:
        fig.suptitle(title)
    return fig


def history_figure(paths: Sequence[str | Path], title: str | None = None) -> Any:
    """The figure :func:`plot_histories` saves (a matplotlib ``Figure``; close it after use).

    When the runs form a grid (:func:`sweep_layout`, e.g. a sweep over 3 attacks x 5 values of
    ``d``): one panel per value of the panel field(s) (per attack), the lines coloured by the
    numeric field (``d``) on viridis with a colour bar, seeds pooled (mean, range as a band),
    accuracy vs round in the top rows and accuracy vs cumulative uplink bytes below. Otherwise:
    accuracy and loss vs round and vs uplink bytes in four panels, one distinct line per
    history (tab10, or tab20 and line styles past 10 and 20), the legend outside the axes.
    """
    plt = _pyplot()
    files = collect_histories(paths)
    hists = [train.History.from_json(f) for f in files]
    fields, coords = run_coordinates(hists, files)
    layout = sweep_layout(fields, coords)
    if layout is not None:
        return _grid_figure(plt, hists, coords, layout[0], layout[1], title)
    return _lines_figure(plt, hists, line_names(hists, files), title)


def summary_figure(paths: Sequence[str | Path], x: str, title: str | None = None) -> Any:
    """The figure of :func:`plot_summary`: final test accuracy against the config field ``x``,
    one line per combination of the other fields, named as in :func:`line_names` (a sweep
    variant by its label), seeds pooled (mean, with the range as a band).

    Raises
    ------
    ImportError
        Without matplotlib (the ``plot`` extra).
    ValueError
        If no history has the field ``x``.
    TypeError
        If ``x`` is not numeric.
    """
    plt = _pyplot()
    files = collect_histories(paths)
    hists = [train.History.from_json(f) for f in files]
    if not any(x in h.config for h in hists):
        fields = ", ".join(sorted({k for h in hists for k in h.config}))
        msg = f"--x {x}: not a config field of these runs (fields: {fields})"
        raise ValueError(msg)
    names = line_names(hists, files, skip=[x, "seed"])
    series: dict[str, dict[float, list[float]]] = {}
    for h, name in zip(hists, names, strict=True):
        v = h.config.get(x)
        if isinstance(v, bool) or not isinstance(v, int | float):
            msg = f"--x {x}: needs a numeric field, got {v!r}"
            raise TypeError(msg)
        series.setdefault(name, {}).setdefault(float(v), []).append(h.final_accuracy)
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, pts in series.items():
        xs = sorted(pts)
        mean = [float(np.mean(pts[v])) for v in xs]
        ax.plot(xs, mean, marker="o", label=name)
        lo = [float(np.min(pts[v])) for v in xs]
        hi = [float(np.max(pts[v])) for v in xs]
        ax.fill_between(xs, lo, hi, alpha=0.15)
    ax.set(xlabel=x, ylabel="final test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_summary(paths: Sequence[str | Path], out: Path, x: str, title: str | None = None) -> Path:
    """:func:`summary_figure` (final test accuracy against the config field ``x``, e.g.
    ``"d"``) written as a PNG to ``out``; returns ``out``. Raises as :func:`summary_figure`."""
    plt = _pyplot()
    fig = summary_figure(paths, x, title)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def plot_histories(paths: Sequence[str | Path], out: Path, title: str | None = None) -> Path:
    """Accuracy (and loss) vs round and vs cumulative uplink bytes (:func:`history_figure`).

    A sweep that forms a grid gets one panel per value of its outer field(s) with its lines
    coloured by the numeric field; any other set of runs one line per history, named by
    :func:`line_names`. Writes a PNG to ``out`` and returns ``out``.

    Raises
    ------
    ImportError
        Without matplotlib (the ``plot`` extra).
    FileNotFoundError
        See :func:`collect_histories`.
    """
    plt = _pyplot()
    fig = history_figure(paths, title)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


# --------------------------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------------------------


def demo_runs(rounds: int = DEMO["rounds"]) -> Iterator[tuple[int, str, float]]:
    """Train :data:`DEMO` for every ``d`` in :data:`DEMO_D` and attack in :data:`DEMO_ATTACKS`.

    Yields ``(d, attack, final test accuracy)`` as each run finishes, ``d``-major.
    """
    base = {**DEMO, "rounds": rounds}
    for d in DEMO_D:
        for attack in DEMO_ATTACKS:
            hist = train.run(train.Config.from_dict({**base, "d": d, "attack": attack}))
            yield d, attack, hist.final_accuracy
