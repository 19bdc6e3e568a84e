"""Reproduce every experiment of experiments/README.md and write its CSV / markdown / PNG.

    python experiments/run_all.py [--jobs J] [--only NAME ...]

Results go to experiments/results/<name>/ (the per-run histories are deleted after plotting so
the committed results stay small; pass --keep-runs to keep them).
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import tomllib

from cyclad import experiment, train

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _sweep(name: str, jobs: int | None) -> Path:
    with open(HERE / f"{name}.toml", "rb") as fh:
        values = tomllib.load(fh)
    out = RESULTS / name
    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    experiment.run_sweep(values, out, jobs)
    print(f"{name}: {time.perf_counter() - t0:.0f} s -> {out}/summary.md")
    return out


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def _acc(v: str) -> float:
    return float(v.split(" ")[0])


def plot_vs_d(out: Path, title: str) -> None:
    """One panel per attack: final accuracy vs d, one line per aggregator."""
    plt = _plt()
    rows = _rows(out / "summary.csv")
    attacks_ = list(dict.fromkeys(r["attack"] for r in rows))
    rule = "aggregator" if "aggregator" in rows[0] else "variant"  # baselines: one per rule
    rules = list(dict.fromkeys(r[rule] for r in rows))
    fig, axes = plt.subplots(1, len(attacks_), figsize=(3.4 * len(attacks_), 3.4), sharey=True)
    for ax, att in zip(np.atleast_1d(axes), attacks_, strict=True):
        for name in rules:
            sel = [r for r in rows if r["attack"] == att and r[rule] == name]
            ds = [int(r["d"]) for r in sel]
            ax.plot(ds, [_acc(r["final_accuracy"]) for r in sel], marker="o", label=name)
        ax.set(title=att, xlabel="d", xscale="log")
        ax.set_xticks(sorted({int(r["d"]) for r in rows}))
        ax.set_xticklabels([str(x) for x in sorted({int(r["d"]) for r in rows})])
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("final test accuracy")
    np.atleast_1d(axes)[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_d.png", dpi=80)
    plt.close(fig)


def plot_draco(out: Path) -> None:
    """(5) One panel per attack: final accuracy vs computation load, LAD over d, DRACO."""
    plt = _plt()
    rows = _rows(out / "summary.csv")
    attacks_ = list(dict.fromkeys(r["attack"] for r in rows))
    fig, axes = plt.subplots(1, len(attacks_), figsize=(3.4 * len(attacks_), 3.4), sharey=True)
    for ax, att in zip(np.atleast_1d(axes), attacks_, strict=True):
        for method, style in (("LAD", "o-"), ("DRACO", "s")):
            sel = [r for r in rows if r["attack"] == att and r["variant"].startswith(method)]
            load = [int(r["variant"].split("d=")[1]) for r in sel]
            ax.plot(load, [_acc(r["final_accuracy"]) for r in sel], style, label=method,
                    markersize=8 if method == "DRACO" else 5)
        ax.set(title=att, xlabel="subset gradients per device per round")
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("final test accuracy")
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.suptitle("LAD (trimmed mean) vs DRACO (groups of 2f + 1 = 5), n = 20, f = 2")
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_load.png", dpi=80)
    plt.close(fig)


def spread(jobs: int | None) -> None:
    """(4) Measured E||z_i - g||^2 / het vs (N - d) / (d (N - 1)), no attack, all devices."""
    out = RESULTS / "spread"
    out.mkdir(parents=True, exist_ok=True)
    N = 20
    rows = []
    for d in (1, 2, 4, 5, 10, 19, 20):
        h = train.run(train.Config(n_devices=N, n_byzantine=0, d=d, attack="none",
                                   aggregator="mean", partition="extreme", rounds=200,
                                   eval_every=200))
        ratio = np.asarray(h.spread) / np.asarray(h.heterogeneity)
        se = ratio.std(ddof=1) / np.sqrt(ratio.size)
        rows.append((d, float(ratio.mean()), float(se), (N - d) / (d * (N - 1))))
    with open(out / "spread.csv", "w") as fh:
        fh.write("d,measured_ratio,std_error,formula\n")
        fh.writelines(f"{d},{m:.6f},{se:.6f},{f:.6f}\n" for d, m, se, f in rows)
    md = ["| d | measured spread / het | formula (N-d)/(d(N-1)) |", "|---|---|---|"]
    md += [f"| {d} | {m:.4f} ± {se:.4f} | {f:.4f} |" for d, m, se, f in rows]
    (out / "summary.md").write_text("\n".join(md) + "\n")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ds = np.array([r[0] for r in rows])
    ax.errorbar(ds, [r[1] for r in rows], yerr=[2 * r[2] for r in rows], fmt="o",
                label="measured (200 rounds, 20 devices)")
    grid = np.linspace(1, N, 200)
    ax.plot(grid, (N - grid) / (grid * (N - 1)), label="(N-d)/(d(N-1))")
    ax.set(xlabel="d", ylabel="spread / heterogeneity", title="Honest coded vectors, N = 20")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "spread.png", dpi=80)
    plt.close(fig)
    print(f"spread -> {out}/summary.md")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=None)
    p.add_argument("--only", nargs="*", default=None,
                   choices=["d_sweep", "baselines", "comlad", "spread", "draco"])
    p.add_argument("--keep-runs", action="store_true")
    args = p.parse_args(argv)
    todo = args.only or ["d_sweep", "baselines", "comlad", "spread", "draco"]
    if "d_sweep" in todo:
        out = _sweep("d_sweep", args.jobs)
        plot_vs_d(out, "LAD on digits, n = 20, f = 4, extreme heterogeneity")
    if "baselines" in todo:
        out = _sweep("baselines", args.jobs)
        plot_vs_d(out, "LAD (d > 1) vs NNM / bucketing at d = 1")
    if "comlad" in todo:
        out = _sweep("comlad", args.jobs)
        for d in ("1", "4"):
            runs = [out / r["dir"] for r in _rows(out / "results.csv") if r["d"] == d]
            experiment.plot_histories([str(r) for r in runs], out / f"accuracy_vs_bytes_d{d}.png",
                               title=f"Com-LAD vs LAD, d = {d}, ALIE, trimmed mean")
    if "spread" in todo:
        spread(args.jobs)
    if "draco" in todo:
        out = _sweep("draco", args.jobs)
        plot_draco(out)
    if not args.keep_runs:
        for name in ("d_sweep", "baselines", "comlad", "draco"):
            shutil.rmtree(RESULTS / name / "runs", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
