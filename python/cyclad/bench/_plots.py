"""PNG plots of a bench report (matplotlib, the ``plot`` extra; skipped when it is missing).

- aggregators: time vs D and time vs n, one line per rule (log axes, the read pass as a dashed
  black line, the legend outside the axes), one panel per thread count;
- every area with one- and multi-thread figures: parallel efficiency per kernel,
  ``t(1 thread) / (threads x t(threads))``, one bar per size.
- round: the phases of a round as stacked bars.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cyclad.bench._harness import Record, Report

MISSING = "plots skipped: matplotlib is not installed (pip install 'cyclad[plot]')"


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend, or None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _size(v: Any) -> str:
    """10000 -> 1e4, 30000 -> 3e4, 200 -> 200."""
    if isinstance(v, int | float) and v >= 10_000 and float(v) == float(f"{v:.0e}"):
        return f"{v:.0e}".replace("e+0", "e").replace("e+", "e")
    return f"{v:g}" if isinstance(v, float) else str(v)


def _ms(ms: float) -> str:
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.3g}"


def _style(i: int) -> dict[str, Any]:
    """Distinct colour, marker and line style for line ``i`` (up to 20 without a repeat)."""
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    markers = "osD^vP*Xh<>p"
    return {
        "color": cmap((2 * i) % 20 + (i // 10) % 2),
        "marker": markers[i % len(markers)],
        "linestyle": "-" if i % 2 == 0 else "--",
    }


# The memory passes every figure is set against (drawn as reference lines, not as kernels).
REFERENCES = frozenset({"read_pass", "copy_pass"})


def time_vs(
    plt: Any, records: Sequence[Record], key: str, fixed: str, out: Path, title: str
) -> Path:
    """Median time against ``records[].params[key]`` (log-log), one line per kernel, one panel
    per thread count; the read pass over the same bytes is the dotted black line, the copy pass
    (one read and one write of them) the dotted grey one."""
    threads = sorted({r.threads for r in records})
    names = list(dict.fromkeys(r.name for r in records if r.name not in REFERENCES))
    fig, axes = plt.subplots(
        1, len(threads), figsize=(6.5 * len(threads) + 3, 5.5), sharey=True, squeeze=False
    )
    for ax, t in zip(axes[0], threads, strict=True):
        recs = [r for r in records if r.threads == t]
        for i, name in enumerate(names):
            pts = sorted((r.params[key], r.seconds * 1e3) for r in recs if r.name == name)
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, label=name, markersize=5, linewidth=1.4, **_style(i))
        for ref, color, label in (
            ("read_pass", "black", "read pass (floor)"),
            ("copy_pass", "grey", "copy pass (write floor)"),
        ):
            rp = sorted((r.params[key], r.seconds * 1e3) for r in recs if r.name == ref)
            if rp:
                xs, ys = zip(*rp, strict=True)
                ax.plot(xs, ys, color=color, linestyle=":", linewidth=2.2, label=label)
        ax.set(xscale="log", yscale="log", xlabel=key, title=f"{t} thread{'s' * (t > 1)}")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("median time per call (ms)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(0.86, 0.5), fontsize=9)
    fig.suptitle(f"{title} ({fixed}, float32)")
    fig.tight_layout(rect=(0, 0, 0.85, 1))
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def efficiency(plt: Any, records: Sequence[Record], out: Path, title: str) -> Path | None:
    """Parallel efficiency per kernel, one bar per size (the parameters that differ)."""
    recs = [r for r in records if r.efficiency is not None and r.name not in REFERENCES]
    if not recs:
        return None
    all_keys = list(dict.fromkeys(k for r in recs for k in r.params))
    varying = [k for k in all_keys if len({str(r.params.get(k)) for r in recs}) > 1]
    size_keys = [k for k in varying if k in ("n", "D", "P")]

    def kernel(r: Record) -> str:
        own = [f"{k}={r.params[k]}" for k in varying if k not in size_keys and k in r.params]
        return " ".join([r.name, *own])

    def size(r: Record) -> str:
        return ", ".join(f"{k}={_size(r.params[k])}" for k in size_keys if k in r.params) or "-"

    kernels = list(dict.fromkeys(kernel(r) for r in recs))
    sizes = list(dict.fromkeys(size(r) for r in recs))
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    width = 0.8 / len(sizes)
    fig, ax = plt.subplots(
        figsize=(max(7.0, 0.75 * len(kernels) * max(1, len(sizes) / 2) + 2), 5.5)
    )
    table = {(kernel(r), size(r)): r.efficiency for r in recs}
    for j, sz in enumerate(sizes):
        xs = [i + (j - (len(sizes) - 1) / 2) * width for i in range(len(kernels))]
        ys = [table.get((k, sz), 0.0) or 0.0 for k in kernels]
        ax.bar(xs, ys, width, label=sz, color=cmap(j / max(1, len(sizes) - 1) * 0.9))
    ax.axhline(1.0, color="black", linestyle="--", linewidth=1)
    ax.set_xticks(range(len(kernels)), kernels, rotation=40, ha="right")
    t = recs[0].threads
    ax.set_ylabel(f"t(1 thread) / ({t} x t({t} threads))")
    ax.set_ylim(0, max(1.15, max(r.efficiency or 0 for r in recs) * 1.1))
    ax.grid(alpha=0.3, axis="y")
    ax.legend(title="size", loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=9)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def round_phases(plt: Any, rounds: Sequence[dict[str, Any]], out: Path) -> Path:
    """Stacked bars: each phase's share of the round (median ms in the segment), one bar per
    (P, variant), the round's median ms above it."""
    import matplotlib

    phases = [p for p in rounds[0]["phases"] if p != "round"]
    labels = [f"P={r['P']:,}\n{r['variant']}" for r in rounds]
    cmap = matplotlib.colormaps["tab10"]
    fig, ax = plt.subplots(figsize=(max(7.0, 1.9 * len(rounds) + 3), 5.2))
    totals = [sum(r["phases"][ph]["median"] for ph in phases) for r in rounds]
    bottom = [0.0] * len(rounds)
    for i, ph in enumerate(phases):
        ms = [r["phases"][ph]["median"] * 1e3 for r in rounds]
        share = [100 * m / (1e3 * t) for m, t in zip(ms, totals, strict=True)]
        ax.bar(range(len(rounds)), share, 0.6, bottom=bottom, label=ph, color=cmap(i))
        for x, (b, sh, m) in enumerate(zip(bottom, share, ms, strict=True)):
            if sh >= 6:
                ax.text(x, b + sh / 2, f"{_ms(m)} ms", ha="center", va="center", fontsize=8)
        bottom = [b + y for b, y in zip(bottom, share, strict=True)]
    for x, t in enumerate(totals):
        ax.text(x, 101, f"round {_ms(t * 1e3)} ms", ha="center", va="bottom", fontsize=9)
    ax.set_xticks(range(len(rounds)), labels, fontsize=8)
    ax.set_ylabel("share of the round (%)")
    ax.set_ylim(0, 110)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.set_title("one in-process round, by phase (median per phase)", pad=12)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def plot_report(report: Report, out_dir: Path, stem: str) -> tuple[list[Path], str | None]:
    """The report's PNG files, and a one-line message when plots were skipped."""
    plt = pyplot()
    if plt is None:
        return [], MISSING
    files: list[Path | None] = []
    recs = report.records
    if report.area == "aggregators":
        for group, key, other in (("vs_D", "D", "n"), ("vs_n", "n", "D")):
            g = [r for r in recs if r.group == group]
            if g:
                fixed = f"{other} = {_size(g[0].params[other])}"
                files.append(
                    time_vs(plt, g, key, fixed, out_dir / f"{stem}-vs-{key}.png", f"time vs {key}")
                )
        eff = [r for r in recs if r.group == "vs_D"] or [r for r in recs if r.group != "hostile"]
        files.append(
            efficiency(
                plt, eff, out_dir / f"{stem}-efficiency.png", "aggregators: parallel efficiency"
            )
        )
    elif report.area == "round":
        files.append(round_phases(plt, report.data["rounds"], out_dir / f"{stem}-phases.png"))
    else:
        files.append(
            efficiency(
                plt,
                recs,
                out_dir / f"{stem}-efficiency.png",
                f"{report.area}: parallel efficiency",
            )
        )
    return [f for f in files if f is not None], None
