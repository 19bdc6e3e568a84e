"""cyclad.flower: the robust strategy on hand-built Messages, LAD on an in-process grid, and
real runs of both on Flower's simulation engine (Ray), through the examples."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

# flwr 1.42 imports typer, which uses an API that click 8.3 deprecates: a warning at import
# time that is no concern of these tests (the suite turns warnings into errors)
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "'click.utils", DeprecationWarning)
    from flwr.app import (
        Array,
        ArrayRecord,
        ConfigRecord,
        Context,
        Error,
        Message,
        MessageType,
        MetricRecord,
        RecordDict,
    )
    from flwr.supercore.task_identity import TaskIdentity

    from cyclad import flower

from cyclad import aggregators as agg
from cyclad import protocol, train

ROOT = Path(__file__).resolve().parent.parent
SHAPES = [(3, 4), (4,), (2, 5)]


@pytest.fixture(autouse=True)
def identity(monkeypatch):
    """Messages are built as a ServerApp builds them (a run and a task identity)."""
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


class InlineGrid:
    """A Grid that hands each message to a ClientApp in this process (one Context per node)."""

    def __init__(self, app, nodes, apps=None):
        self.apps = {nd: (apps or {}).get(nd, app) for nd in nodes}
        self.ctx = {
            nd: Context(run_id=1, node_id=nd, node_config={}, state=RecordDict(), run_config={})
            for nd in nodes
        }

    def get_node_ids(self):
        return list(self.ctx)

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):
        return Message(content, dst_node_id, message_type, group_id=group_id)

    def send_and_receive(self, messages, *, timeout=None):
        return [
            self.apps[m.metadata.dst_node_id](m, self.ctx[m.metadata.dst_node_id]) for m in messages
        ]

    def push_messages(self, messages):  # FedAvg's sampling only needs get_node_ids
        raise NotImplementedError


def _record(flat):
    out, off = {}, 0
    for k, s in enumerate(SHAPES):
        size = int(np.prod(s))
        out[f"a{k}"] = Array(np.ascontiguousarray(flat[off : off + size].reshape(s)))
        off += size
    return ArrayRecord(out)


def _flat(record):
    return np.concatenate([a.ravel() for a in record.to_numpy_ndarrays()])


def _reply(node, record=None, weight=10, error=None):
    ins = Message(RecordDict(), node, MessageType.TRAIN)
    if error is not None:
        return Message(Error(2, error), reply_to=ins)
    content = RecordDict({"arrays": record, "metrics": MetricRecord({"num-examples": weight})})
    return Message(content, reply_to=ins)


D = sum(int(np.prod(s)) for s in SHAPES)


def _setup(strategy, rng, n=7):
    g = rng.normal(size=D)
    grid = InlineGrid(None, list(range(1, n + 1)))
    list(strategy.configure_train(1, _record(g), ConfigRecord(), grid))
    U = rng.normal(size=(n, D))
    return g, U, [_reply(i + 1, _record(g + U[i]), weight=i + 1) for i in range(n)]


@pytest.mark.parametrize("rule", ["median", "trimmed_mean", "meamed"])
def test_coordinate_wise_rules_go_per_layer_and_equal_the_rule(rule, rng) -> None:
    s = flower.RobustStrategy(rule, f=2, min_available_nodes=7)
    assert s.per_layer
    g, U, replies = _setup(s, rng)
    arrays, metrics = s.aggregate_train(1, replies)
    want = g + protocol.make_rule(rule, 2)(U)
    np.testing.assert_allclose(_flat(arrays), want, rtol=1e-12, atol=1e-12)
    assert list(arrays.keys()) == ["a0", "a1", "a2"]
    assert metrics is not None
    assert s.faults == []


@pytest.mark.parametrize(
    "rule", ["krum", "geometric_median", "nnm+trimmed_mean", "centered_clipping"]
)
def test_distance_rules_see_whole_flattened_updates(rule, rng) -> None:
    params = {"tau": 1.0} if rule == "centered_clipping" else {}
    s = flower.RobustStrategy(rule, f=2, rule_params=params, min_available_nodes=7)
    assert not s.per_layer
    g, U, replies = _setup(s, rng)
    arrays, _ = s.aggregate_train(1, replies)
    whole = protocol.make_rule(rule, 2, params)
    np.testing.assert_allclose(_flat(arrays), g + whole(U), rtol=1e-10, atol=1e-12)


def test_krum_on_whole_vectors_differs_from_krum_per_layer() -> None:
    # client 0 is closest to the others in layer 0 only, client 1 in the rest: per layer,
    # Krum would mix two clients; on whole vectors it returns exactly one client's update
    n = 6
    U = np.tile(np.arange(n, dtype=float)[:, None] * 10, (1, D))
    U[0, :12], U[1, 12:] = 25.0, 25.0
    s = flower.RobustStrategy("krum", f=1)
    arrays, _ = s.aggregate_train(1, [_reply(i + 1, _record(U[i])) for i in range(n)])
    got = _flat(arrays)  # no global model sent: updates from zero
    assert any(np.array_equal(got, U[i]) for i in range(n))
    per_layer = np.concatenate([agg.krum(U[:, :12], 1), agg.krum(U[:, 12:], 1)])
    assert not np.array_equal(got, per_layer)


def test_weighted_mean_honours_num_examples(rng) -> None:
    s = flower.RobustStrategy("mean", weighted=True, min_available_nodes=7)
    g, U, replies = _setup(s, rng)
    arrays, _ = s.aggregate_train(1, replies)
    np.testing.assert_allclose(
        _flat(arrays), g + np.average(U, axis=0, weights=np.arange(1, 8)), rtol=1e-12
    )
    unweighted = flower.RobustStrategy("mean", min_available_nodes=7)
    g, U, replies = _setup(unweighted, rng)
    np.testing.assert_allclose(
        _flat(unweighted.aggregate_train(1, replies)[0]), g + U.mean(axis=0), rtol=1e-12
    )


@pytest.mark.parametrize("rule", ["krum", "trimmed_mean", "multi_krum", "nnm+mean"])
def test_weighting_a_rule_without_weights_is_refused(rule) -> None:
    with pytest.raises(ValueError, match="only the rule 'mean' takes weights"):
        flower.RobustStrategy(rule, f=1, weighted=True)


def test_per_layer_distance_rule_and_bad_names_are_refused() -> None:
    with pytest.raises(ValueError, match="must see whole vectors"):
        flower.RobustStrategy("krum", f=1, per_layer=True)
    with pytest.raises(ValueError, match="rule"):
        flower.RobustStrategy("no_such_rule")


def test_unusable_replies_are_absent_rows_and_faults(rng) -> None:
    s = flower.RobustStrategy("trimmed_mean", f=2, weighted=False, min_available_nodes=7)
    g, U, replies = _setup(s, rng)
    bad = ArrayRecord(
        {"a0": Array(np.zeros((3, 4))), "a1": Array(np.zeros(5)), "a2": Array(np.zeros((2, 5)))}
    )
    replies[2] = _reply(3, bad)
    replies[5] = _reply(6, error="client crashed")
    arrays, _ = s.aggregate_train(1, replies)
    V = U.copy()
    V[[2, 5]] = np.nan
    np.testing.assert_allclose(_flat(arrays), g + agg.trimmed_mean(V, 2), rtol=1e-12)
    assert [(e.round, e.node) for e in s.faults] == [(1, 3), (1, 6)]
    assert "a1" in s.faults[0].reason
    assert "client crashed" in s.faults[1].reason


def test_a_round_the_rule_cannot_aggregate_keeps_the_model(rng) -> None:
    s = flower.RobustStrategy("trimmed_mean", f=2, min_available_nodes=7)
    _, _, replies = _setup(s, rng)
    assert s.aggregate_train(1, replies[:4]) == (None, None)  # n=4 <= 2f
    assert "not aggregated" in s.faults[-1].reason


def test_float32_and_integer_arrays_keep_their_dtypes(rng) -> None:
    s = flower.RobustStrategy("median")
    recs = [
        ArrayRecord(
            {
                "w": Array(rng.normal(size=4).astype(np.float32)),
                "count": Array(np.array([i, 2 * i], dtype=np.int64)),
            }
        )
        for i in range(5)
    ]
    arrays, _ = s.aggregate_train(1, [_reply(i + 1, r) for i, r in enumerate(recs)])
    assert arrays["w"].numpy().dtype == np.float32
    np.testing.assert_array_equal(arrays["count"].numpy(), [2, 4])


# --------------------------------------------------------------------------------------------
# LAD on Flower
# --------------------------------------------------------------------------------------------

SMALL = {"n_devices": 5, "n_byzantine": 1, "d": 2, "rounds": 5, "attack": "alie"}
NODES = [907, 13, 55, 4000, 22]


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"compressor": "topk:0.1", "error_feedback": "ef21", "pre_aggregation": "nnm"},
        {
            "compressor": "randk:0.2,shared",
            "error_feedback": True,
            "dtype": "float32",
            "batch_size": 16,
            "attack": "label_flip",
            "byzantine": "random",
        },
    ],
    ids=["lad", "comlad-ef21", "comlad-ef14-f32"],
)
def test_lad_on_an_inline_grid_equals_the_simulation(extra) -> None:
    cfg = train.Config(**{**SMALL, **extra})
    hist, faults = flower.run_lad(InlineGrid(flower.client_app(cfg), NODES), cfg)
    ref = train.run(train.Config(**{**SMALL, **extra}))
    assert faults == []
    assert np.array_equal(hist.theta, ref.theta)
    assert hist.bytes_up == ref.bytes_up
    assert hist.bytes_down == ref.bytes_down
    np.testing.assert_array_equal(hist.accuracy, ref.accuracy)


def test_a_client_with_another_configuration_is_a_fault_and_the_run_goes_on() -> None:
    cfg = train.Config(**{**SMALL, "n_byzantine": 0, "f": 1, "attack": "none"})
    other = flower.client_app(
        train.Config(**{**SMALL, "n_byzantine": 0, "f": 1, "attack": "none", "lr": 0.1})
    )
    grid = InlineGrid(flower.client_app(cfg), NODES, apps={55: other})  # node 55 = device 2
    hist, faults = flower.run_lad(grid, cfg)
    assert {e.device for e in faults} == {2}
    assert len(faults) == SMALL["rounds"]
    assert all("fingerprint" in e.reason for e in faults)
    assert np.isfinite(hist.theta).all()
    assert hist.accuracy[-1] > hist.accuracy[0]


def test_too_few_nodes_is_a_clear_error() -> None:
    cfg = train.Config(**SMALL)
    with pytest.raises(RuntimeError, match="2 Flower nodes connected"):
        flower.run_lad(InlineGrid(flower.client_app(cfg), [1, 2]), cfg, node_wait=0.3)


# --------------------------------------------------------------------------------------------
# Flower's simulation engine (Ray), through the README's examples
# --------------------------------------------------------------------------------------------


def _example(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(ROOT / "examples" / name), *args]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def test_robust_strategy_on_the_simulation_engine(tmp_path) -> None:
    res = _example("flower_robust.py", "--rounds", "4", "--out", str(tmp_path / "r.json"))
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads((tmp_path / "r.json").read_text())
    acc = got["accuracy"]
    assert got["per_layer"] is True
    assert len(acc) == 5
    assert acc[-1] > acc[0] + 0.2
    assert all(b > a for a, b in itertools.pairwise(acc))


def test_lad_on_the_simulation_engine_equals_the_simulation(tmp_path) -> None:
    res = _example("flower_lad.py", "--rounds", "4", "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "same model as the simulation: True" in res.stdout
    cfg = train.Config(n_devices=5, n_byzantine=1, d=2, attack="alie", rounds=4, seed=0)
    np.testing.assert_array_equal(np.load(tmp_path / "theta.npy"), train.run(cfg).theta)
    hist = json.loads((tmp_path / "history.json").read_text())
    assert hist["accuracy"][-1] > hist["accuracy"][0]
