"""Where the time of a distributed LAD / Com-LAD round goes (cyclad.distributed), measured.

    python bench/distributed_round.py            # P in {1e5, 1e6}, 5 and 9 processes
    python bench/distributed_round.py --quick    # P = 1e5 only

For each (P, processes, method) it runs ``cyclad launch`` on 127.0.0.1 (an MLP on synthetic
data sized to P parameters, float64, trimmed mean, one Byzantine device running ALIE) and
averages rounds.csv over the rounds after the first: compute (the slowest device's subset
gradients), encode + compress (the slowest device's), communication (the rest of the server's
wait: model broadcast, payload transfer through the store, scheduling) and aggregation
(decoding, validation and the rule). In the same run it times a plain ``all_reduce`` mean of a
P-vector over a gloo process group of the same number of processes: the round of ordinary
data-parallel training without robustness. Results: bench/results/distributed-<date>.{md,json}.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cyclad import distributed, models, train
from cyclad.bench._harness import machine_info, machine_line

HERE = Path(__file__).resolve().parent


def _mlp_for(P: int) -> dict[str, int]:
    """Synthetic MLP sizes with about P parameters (F inputs, H hidden, 10 classes)."""
    F = 1000
    H = max(1, round((P - 10) / (F + 11)))
    return {"n_features": F, "hidden": H}


def _config(P: int, ranks: int, compressed: bool, rounds: int) -> dict[str, object]:
    n = ranks - 1
    sizes = _mlp_for(P)
    values: dict[str, object] = {
        "dataset": "synthetic",
        "model": "mlp",
        "hidden": sizes["hidden"],
        "dataset_params": {"n_samples": 40 * n, "n_features": sizes["n_features"], "n_classes": 10},
        "n_devices": n,
        "n_byzantine": 1,
        "d": 2,
        "aggregator": "trimmed_mean",
        "attack": "alie",
        "rounds": rounds,
        "lr": 0.05,
        "eval_every": rounds,
        "partition": "iid",
        "threads": 1,
    }
    if compressed:
        values.update(compressor="topk:0.01", error_feedback="ef14")
    return values


def _launch(values: dict[str, object], out: Path) -> tuple[dict[str, float], int]:
    cfg = train.Config(**values)  # type: ignore[arg-type]
    config = out / "config.toml"
    out.mkdir(parents=True, exist_ok=True)
    config.write_text(cfg.to_toml())
    code = distributed.launch(
        [str(config), "--out", str(out / "run"), "--quiet", "--round-timeout", "300"]
    )
    if code != 0:
        msg = f"cyclad launch exited with {code}"
        raise RuntimeError(msg)
    with open(out / "run" / "rounds.csv") as fh:
        rows = list(csv.DictReader(fh))[1:]  # the first round warms up
    split = {
        k: statistics.fmean(float(r[k]) for r in rows)
        for k in ("seconds", "compute", "encode", "communication", "aggregation")
    }
    hist = json.loads((out / "run" / "history.json").read_text())
    return split, int(statistics.fmean(hist["bytes_up"][1:]))


def _allreduce_rank(rank: int, world: int, port: int, P: int, reps: int, q: object) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    x = torch.ones(P, dtype=torch.float64)
    dist.all_reduce(x)  # warm-up
    times = []
    for _ in range(reps):
        dist.barrier()
        t0 = time.perf_counter()
        dist.all_reduce(x)
        x /= world
        times.append(time.perf_counter() - t0)
    if rank == 0:
        q.put(statistics.median(times))  # type: ignore[attr-defined]
    dist.destroy_process_group()


def _allreduce(P: int, world: int, reps: int = 10) -> float:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = distributed._free_port()
    procs = [
        ctx.Process(target=_allreduce_rank, args=(r, world, port, P, reps, q)) for r in range(world)
    ]
    for p in procs:
        p.start()
    try:
        return float(q.get(timeout=300))
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="P = 1e5 only")
    ap.add_argument("--rounds", type=int, default=6)
    args = ap.parse_args()
    sizes = [10**5] if args.quick else [10**5, 10**6]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for P in sizes:
            for ranks in (5, 9):
                base = _allreduce(P, ranks)
                for compressed in (False, True):
                    values = _config(P, ranks, compressed, args.rounds)
                    P_real = models.get(
                        "mlp", int(_mlp_for(P)["n_features"]), 10, hidden=int(values["hidden"])
                    ).n_params  # type: ignore[arg-type]
                    split, up = _launch(values, Path(tmp) / f"{P}-{ranks}-{compressed}")
                    rows.append(
                        {
                            "P": P_real,
                            "processes": ranks,
                            "method": "Com-LAD top-k 1% + EF14" if compressed else "LAD",
                            **split,
                            "uplink_bytes": up,
                            "allreduce_seconds": base,
                        }
                    )
                    r = rows[-1]
                    print(
                        f"P={P_real} procs={ranks} {r['method']}: round {r['seconds']:.4f} s "
                        f"(compute {r['compute']:.4f}, encode {r['encode']:.4f}, comm "
                        f"{r['communication']:.4f}, agg {r['aggregation']:.4f}), uplink "
                        f"{up} B, all_reduce {base:.4f} s",
                        flush=True,
                    )
    info = machine_info()
    stamp = datetime.date.today().strftime("%Y%m%d")
    out = HERE / "results" / f"distributed-{stamp}"
    out.with_suffix(".json").write_text(json.dumps({"machine": info, "rows": rows}, indent=1))
    caption = (
        "Loopback (127.0.0.1), float64, one Byzantine device (ALIE), trimmed mean, "
        "d = 2; seconds per round, mean over rounds 2.., and a gloo all_reduce mean of "
        "the same P in the same run."
    )
    header = (
        "| P | processes | method | round s | compute | encode+compress | communication "
        "| aggregation | uplink B/round | all_reduce s |"
    )
    lines = [
        f"# Distributed round time split ({stamp})",
        "",
        machine_line(),
        "",
        caption,
        "",
        header,
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['P']:,} | {r['processes']} | {r['method']} | {r['seconds']:.4f} | "
            f"{r['compute']:.4f} | {r['encode']:.4f} | {r['communication']:.4f} | "
            f"{r['aggregation']:.4f} | {r['uplink_bytes']:,} | "
            f"{r['allreduce_seconds']:.4f} |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out}.md and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
