"""LAD / Com-LAD on Flower: one ClientApp node per device, the round from cyclad.protocol.

Every node holds the whole dataset (LAD's allocation). Each round the server sends every node
its window of subsets; the node returns its coded (and, with --compressor, compressed) vector
as bytes; the server aggregates robustly. Same configuration and seed: the same final model as
`cyclad run` (this script checks it).

    python examples/flower_lad.py --rounds 20
    python examples/flower_lad.py --rounds 20 --compressor topk:0.1 --out runs/flower
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from flwr.simulation import run_simulation

from cyclad import flower, train

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--compressor", default=None)
    p.add_argument("--out", default="runs/flower-lad")
    args = p.parse_args()
    cfg = train.Config(
        n_devices=5,
        n_byzantine=1,
        d=2,
        attack="alie",
        aggregator="trimmed_mean",
        compressor=args.compressor,
        rounds=args.rounds,
        seed=0,
    )
    run_simulation(
        flower.server_app(cfg, out=args.out),
        flower.client_app(cfg),
        num_supernodes=cfg.n_devices,
        backend_config={
            "client_resources": {"num_cpus": 1},
            "init_args": {
                "num_cpus": 2,
                "include_dashboard": False,
                "object_store_memory": 80 * 2**20,
            },
        },
    )
    hist = json.loads((Path(args.out) / "history.json").read_text())
    same = bool(np.array_equal(np.load(Path(args.out) / "theta.npy"), train.run(cfg).theta))
    print(
        f"accuracy {hist['accuracy'][0]:.3f} -> {hist['accuracy'][-1]:.3f}; "
        f"same model as the simulation: {same}"
    )
