"""A robust Flower run: FedAvg with cyclad's trimmed mean, one Byzantine client out of five.

Each client trains a small MLP on its own share of the digits data (one local gradient step
per round) and returns its model. Client 0 is Byzantine: it returns its model pushed far the
wrong way. The server aggregates the updates with a cyclad rule.

    python examples/flower_robust.py --rounds 10 --rule trimmed_mean
    python examples/flower_robust.py --rule mean      # the plain mean: the attack wins
"""

from __future__ import annotations

import argparse
import json
from collections import OrderedDict

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation

from cyclad import data, models
from cyclad.flower import RobustStrategy

NODES, BYZANTINE, LR, SEED = 5, 1, 0.5, 0
DS = data.load("digits", seed=SEED)
MODEL = models.get("mlp", DS.n_features, DS.n_classes, hidden=16)


def to_record(theta: np.ndarray) -> ArrayRecord:
    arrays = OrderedDict()
    for k, (W, b) in enumerate(MODEL.unpack(theta)):
        arrays[f"layer{k}.weight"], arrays[f"layer{k}.bias"] = Array(W.copy()), Array(b.copy())
    return ArrayRecord(arrays)


def from_record(record: ArrayRecord) -> np.ndarray:
    return np.concatenate([a.ravel() for a in record.to_numpy_ndarrays()])


client = ClientApp()


@client.train()
def train(msg: Message, context: Context) -> Message:
    i = int(context.node_config["partition-id"])
    part = data.partition(DS.y_train, int(context.node_config["num-partitions"]), "iid", seed=SEED)[
        i
    ]
    X, y = DS.X_train[part], DS.y_train[part]
    theta = from_record(msg.content["arrays"])
    new = theta - LR * MODEL.grad(theta, X, y)
    if i < BYZANTINE:  # the Byzantine client: a large step the wrong way
        new = theta + 50 * (theta - new)
    reply = RecordDict(
        {"arrays": to_record(new), "metrics": MetricRecord({"num-examples": len(part)})}
    )
    return Message(reply, reply_to=msg)


def server(rule: str, rounds: int, out: str | None) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = RobustStrategy(
            rule,
            f=BYZANTINE,
            fraction_evaluate=0.0,
            min_train_nodes=NODES,
            min_available_nodes=NODES,
        )

        def evaluate(t: int, arrays: ArrayRecord) -> MetricRecord:
            acc = MODEL.accuracy(from_record(arrays), DS.X_test, DS.y_test)
            return MetricRecord({"accuracy": acc})

        result = strategy.start(
            grid=grid,
            initial_arrays=to_record(MODEL.init(SEED)),
            num_rounds=rounds,
            evaluate_fn=evaluate,
        )
        acc = [
            float(result.evaluate_metrics_serverapp[t]["accuracy"])  # type: ignore[arg-type]
            for t in range(rounds + 1)
        ]
        print("accuracy per round:", " ".join(f"{a:.3f}" for a in acc))
        if out:
            with open(out, "w") as fh:
                json.dump({"accuracy": acc, "per_layer": strategy.per_layer}, fh)

    return app


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rule", default="trimmed_mean")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--out", help="write the accuracies to this JSON file")
    args = p.parse_args()
    run_simulation(
        server(args.rule, args.rounds, args.out),
        client,
        num_supernodes=NODES,
        backend_config={
            "client_resources": {"num_cpus": 1},
            "init_args": {
                "num_cpus": 2,
                "include_dashboard": False,
                "object_store_memory": 80 * 2**20,
            },
        },
    )
