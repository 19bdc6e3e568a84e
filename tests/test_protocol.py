"""The round protocol (cyclad.protocol) and the run's randomness (cyclad._random)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cyclad import _random, compression, data, protocol, train

FAST = {"rounds": 3, "n_devices": 8, "n_byzantine": 2, "d": 3, "blas_threads": 1}
ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------------------------
# randomness: pinned draws (a change of stream fails here)
# --------------------------------------------------------------------------------------------


def test_pinned_words() -> None:
    assert _random.words(0, 0, 0, 0, 3).tolist() == [
        213000021201967259,
        4455796210202625458,
        2055444239878205049,
    ]
    assert _random.words(12345, 7, 3, _random.BATCH, 2).tolist() == [
        16834542283251895079,
        5257972045654582422,
    ]
    assert _random.seed_word(1, 2, _random.ALL, _random.COMPRESSION) == 14552251025255643680
    assert _random.seed_word(1, 2, 5, _random.COMPRESSION) == 9469729335214518399


def test_pinned_integer_draws() -> None:
    assert _random.sample(9, _random.SETUP, _random.ALL, _random.BYZANTINE, 10, 3).tolist() == [
        2,
        7,
        8,
    ]
    assert _random.permutation(0, 1, 0, _random.PERMUTATION, 6).tolist() == [5, 3, 2, 4, 1, 0]


def test_pinned_float_draws() -> None:
    s = _random.Stream(3, 4, _random.ALL, _random.ATTACK)
    np.testing.assert_allclose(
        s.standard_normal(3),
        [1.202675744711182, 0.06195971498375015, 0.4033772909907122],
        rtol=1e-14,
    )
    # uniforms are exact: 53 bits of a word times 2**-53
    assert s.random(2).tolist() == [0.06524210797951668, 0.43921181098353257]


def test_pinned_round_plan() -> None:
    spec = protocol.RoundSpec(
        n=5,
        d=2,
        seed=9,
        device_seed=4,
        n_byzantine=2,
        byzantine="random",
        subset_sizes=(8,) * 5,
        batch_size=3,
    )
    p = protocol.plan_round(spec, 6)
    assert p.assignment.tolist() == [[0, 4], [4, 3], [3, 2], [2, 1], [1, 0]]
    assert [b.tolist() for b in p.batches] == [
        [0, 6, 7],
        [3, 4, 7],
        [0, 2, 7],
        [0, 5, 6],
        [0, 1, 4],
    ]
    assert p.compression_seeds == (
        14445743061858751062,
        5228854505809054821,
        17667143787677405130,
        2121050166846604779,
        3429530420175539512,
    )
    assert p.byzantine.tolist() == [1, 2]
    assert p.honest.tolist() == [0, 3, 4]
    assert p.bucketing_seed == 15285420482419202499


def test_plan_compression_seeds_are_derive_seed() -> None:
    for shared in (False, True):
        spec = protocol.RoundSpec(n=4, d=2, seed=1, device_seed=8, shared_compression=shared)
        plan = protocol.plan_round(spec, 3)
        want = [compression.derive_seed(8, 3, None if shared else i) for i in range(4)]
        assert list(plan.compression_seeds) == want


def test_the_assignment_permutation_is_the_permute_stream() -> None:
    """coding.permutation is stream (seed, t, 0, PERMUTATION): the assignments of every run
    stayed what they were."""
    from cyclad import coding

    for seed, t in [(0, 0), (7, 3), (2**64 - 1, 2**64 - 1)]:
        words = np.random.Philox(key=np.array([seed, t], dtype=np.uint64)).random_raw(11)
        expect = np.argsort(np.asarray(words, dtype=np.uint64), kind="stable")
        np.testing.assert_array_equal(coding.permutation(11, seed, t), expect)


def test_streams_differ_by_every_key() -> None:
    base = _random.words(1, 2, 3, 4, 8)
    for keys in [(2, 2, 3, 4), (1, 3, 3, 4), (1, 2, 4, 4), (1, 2, 3, 5)]:
        assert not np.array_equal(_random.words(*keys, 8), base)
    assert np.array_equal(_random.words(1, 2, 3, 4, 8), base)


def test_stream_draws_continue_the_stream() -> None:
    s = _random.Stream(5, 6, 7, 8)
    a, b = s.words(3), s.words(2)
    np.testing.assert_array_equal(np.concatenate([a, b]), _random.words(5, 6, 7, 8, 5))


def test_stream_samples_and_normals_are_well_formed() -> None:
    s = _random.Stream(1, 1, 1, _random.ATTACK)
    k = s.sample(1000, 37)
    assert k.shape == (37,)
    assert np.all(np.diff(k) > 0)
    assert k[0] >= 0
    assert k[-1] < 1000
    z = s.standard_normal((200, 50))
    assert z.shape == (200, 50)
    assert np.isfinite(z).all()
    assert abs(z.mean()) < 0.05  # 10^4 draws: 5 sigma is 0.05
    assert abs(z.std() - 1) < 0.05
    assert sorted(s.permutation(9).tolist()) == list(range(9))
    with pytest.raises(ValueError, match="k must be in"):
        s.sample(3, 4)


@pytest.mark.parametrize("bad", [-1, 2**64])
def test_stream_keys_are_checked(bad) -> None:
    with pytest.raises(ValueError, match=r"seed must be in \[0, 2\*\*64 - 1\]"):
        _random.Stream(bad, 0, 0, 0)
    with pytest.raises(TypeError, match="device must be an integer"):
        _random.Stream(0, 0, 1.5, 0)  # type: ignore[arg-type]


def test_plan_is_a_pure_function_of_spec_and_round() -> None:
    spec = protocol.RoundSpec(
        n=6,
        d=2,
        seed=3,
        n_byzantine=1,
        byzantine="random",
        subset_sizes=(10,) * 6,
        batch_size=4,
        shared_compression=True,
    )
    a, b = protocol.plan_round(spec, 5), protocol.plan_round(spec, 5)
    np.testing.assert_array_equal(a.assignment, b.assignment)
    assert [x.tolist() for x in a.batches] == [x.tolist() for x in b.batches]
    assert a.compression_seeds == b.compression_seeds
    assert len(set(a.compression_seeds)) == 1  # shared masks: one seed per round
    c = protocol.plan_round(spec, 6)
    assert c.compression_seeds != a.compression_seeds
    assert c.bucketing_seed != a.bucketing_seed
    np.testing.assert_array_equal(a.byzantine, c.byzantine)  # fixed for the run


def test_spec_checks_its_fields() -> None:
    with pytest.raises(ValueError, match="n_byzantine"):
        protocol.RoundSpec(n=4, d=1, n_byzantine=4)
    with pytest.raises(ValueError, match="byzantine must be"):
        protocol.RoundSpec(n=4, d=1, byzantine="last")
    with pytest.raises(ValueError, match="subset_sizes"):
        protocol.RoundSpec(n=4, d=1, batch_size=2)
    with pytest.raises(ValueError, match="d"):
        protocol.RoundSpec(n=4, d=5)


# --------------------------------------------------------------------------------------------
# devices: the simulation's vectorised path sends device_step's bytes
# --------------------------------------------------------------------------------------------

VARIANTS = [
    (None, False),
    ("topk:0.05", False),
    ("topk:0.05", "ef14"),
    ("topk:0.05", "ef21"),
    ("randk:0.2", False),
    ("randk:0.2,shared", False),
    ("qsgd:16", False),
    ("sign", "ef14"),
    ("natural", False),
    ("terngrad:32", "ef21"),
    ("identity", False),
]


@pytest.mark.parametrize("batch_size", [None, 9])
@pytest.mark.parametrize(("spec", "ef"), VARIANTS, ids=[f"{s}-{e}" for s, e in VARIANTS])
def test_simulated_payloads_are_device_step_bytes(spec, ef, batch_size) -> None:
    dtype = "float32" if spec == "qsgd:16" else "float64"
    cfg = train.Config(
        **FAST,
        compressor=spec,
        error_feedback=ef,
        batch_size=batch_size,
        dtype=dtype,
        attack="sign_flip",
    )
    sim = train._Simulation(cfg)
    mine = {i: train.device_compressor(cfg, sim.P) for i in sim.honest.tolist()}
    for t in range(cfg.rounds):
        theta = sim.theta.copy()
        sim.round(t)
        plan = protocol.plan_round(sim.spec, t)
        for i in sim.honest.tolist():
            p = protocol.device_step(
                sim.model,
                theta,
                sim.X,
                sim.y,
                sim.slices,
                plan,
                i,
                compressor=mine[i],
                threads=cfg.threads,
            )
            assert p == sim.payloads[i], (t, i)


def test_batches_are_shared_by_the_devices_of_a_subset() -> None:
    spec = protocol.RoundSpec(n=5, d=3, seed=1, subset_sizes=(20,) * 5, batch_size=4)
    plan = protocol.plan_round(spec, 2)
    subsets = [slice(20 * j, 20 * j + 20) for j in range(5)]
    sel = {}
    for i in range(5):
        for j, s in zip(plan.assignment[i].tolist(), plan.selections(subsets, i), strict=True):
            assert s.shape == (4,)
            assert np.all((s >= 20 * j) & (s < 20 * j + 20))
            if j in sel:
                np.testing.assert_array_equal(sel[j], s)
            sel[j] = s
    assert len(sel) == 5


# --------------------------------------------------------------------------------------------
# a runtime written against the protocol alone reproduces train.run
# --------------------------------------------------------------------------------------------


def _protocol_only_run(cfg: train.Config) -> np.ndarray:
    """Every device and the server, each with its own state, exchanging bytes only."""
    ref = train._Simulation(cfg)  # data, model and attack set-up only
    spec, n, P = ref.spec, cfg.n_devices, ref.P
    base = None if cfg.compressor is None else train.build_compressor(cfg.compressor, P)
    srv = protocol.Server(
        n,
        P,
        ref.dtype,
        cfg.aggregator_name,
        f=cfg.f_rule,
        rule_params=cfg.aggregator_params,
        seed=cfg.seed,
        compressor=base,
        ef21=cfg.error_feedback == "ef21",
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
    )
    plan0 = protocol.plan_round(spec, 0)
    devices = {i: train.device_compressor(cfg, P) for i in plan0.honest.tolist()}
    senders = (
        {i: compression.EF21(base) for i in plan0.byzantine.tolist()}
        if cfg.error_feedback == "ef21"
        else {}
    )
    theta = ref.theta.copy()
    for t in range(cfg.rounds):
        plan = protocol.plan_round(spec, t)
        srv.begin(t)
        for i in plan.honest.tolist():
            srv.receive(
                i,
                protocol.device_step(
                    ref.model, theta, ref.X, ref.y, ref.slices, plan, i, compressor=devices[i]
                ),
            )
        # the coalition as a separate process works it out (train._Simulation.byzantine_payloads)
        sent = ref.byzantine_payloads(plan, theta, srv.received(plan.honest), senders=senders)
        for i, p in zip(plan.byzantine.tolist(), sent, strict=True):
            srv.receive(i, p)
        theta = srv.finish(theta)
    return theta


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"compressor": "topk:0.1", "error_feedback": "ef21"},
        {"compressor": "qsgd:8"},
        {
            "pre_aggregation": "bucketing",
            "aggregator_params": {"s": 2},
            "attack": "gaussian",
            "n_byzantine": 1,
            "batch_size": 12,
            "momentum": 0.5,
        },
    ],
    ids=["lad", "topk-ef21", "qsgd", "bucketing-gaussian-batches"],
)
def test_a_protocol_only_runtime_reproduces_the_simulation(extra) -> None:
    cfg = train.Config(**{**FAST, "rounds": 4, "attack": "alie", **extra})
    hist = train.run(cfg)
    np.testing.assert_array_equal(_protocol_only_run(cfg), hist.theta)


# --------------------------------------------------------------------------------------------
# the server
# --------------------------------------------------------------------------------------------


def _median(X):
    return np.nanmedian(X, axis=0)


def test_server_records_bad_and_missing_payloads_and_goes_on() -> None:
    srv = protocol.Server(4, 3, np.float64, _median, lr=1.0)
    good = protocol.encode_payload(np.arange(3.0), None, 0)
    theta = srv.step(5, np.zeros(3), [good, b"\x01\x02garbage", None, good[:-8]])
    np.testing.assert_array_equal(theta, -np.arange(3.0))
    assert srv.faulty == [1, 2, 3]
    assert [(e.round, e.device) for e in srv.faults] == [(5, 1), (5, 2), (5, 3)]
    assert srv.faults[1].reason == "missing"
    assert "malformed" in srv.faults[0].reason
    assert "expected 24" in srv.faults[2].reason
    srv.step(6, theta, [good] * 4)
    assert srv.faulty == []
    assert len(srv.faults) == 3  # the log keeps every round's faults


def test_server_absent_vectors_are_nan_rows() -> None:
    seen = []
    srv = protocol.Server(3, 2, np.float32, lambda X: seen.append(X.copy()) or X[0])
    srv.begin(0)
    srv.receive(0, protocol.encode_payload(np.ones(2, np.float32), None, 0))
    srv.receive(2, b"short")
    srv.finish(np.zeros(2, np.float32))
    np.testing.assert_array_equal(seen[0][0], [1.0, 1.0])
    assert np.isnan(seen[0][1:]).all()
    assert srv.faulty == [2, 1]  # device 1 never sent: recorded when the round finishes


def test_server_refuses_runtime_mistakes() -> None:
    srv = protocol.Server(2, 2, np.float64, _median)
    with pytest.raises(ValueError, match="one entry per device"):
        srv.step(0, np.zeros(2), [None])
    srv.begin(1)
    srv.receive(0, None)
    with pytest.raises(ValueError, match="already sent"):
        srv.receive(0, None)
    with pytest.raises(ValueError, match="device must be in"):
        srv.receive(2, None)


def test_server_ef21_state_skips_an_absent_round() -> None:
    c = compression.Identity()
    srv = protocol.Server(1, 3, np.float64, lambda X: X[0], compressor=c, ef21=True, lr=1.0)
    sender = compression.EF21(c)
    m1 = sender.compress(np.array([1.0, 2.0, 3.0])).to_bytes()
    srv.step(0, np.zeros(3), [m1])
    srv.begin(1)
    srv.receive(0, b"junk")
    np.testing.assert_array_equal(srv.receivers[0].state, [1.0, 2.0, 3.0])
    m2 = sender.compress(np.array([2.0, 2.0, 2.0])).to_bytes()
    srv.begin(2)
    srv.receive(0, m2)
    np.testing.assert_array_equal(srv.received([0])[0], [2.0, 2.0, 2.0])


def test_server_bucketing_seed_changes_every_round() -> None:
    srv = protocol.Server(6, 1, np.float64, "bucketing+mean", rule_params={"s": 2}, seed=4)
    X = np.arange(6.0)[:, None] ** 2
    out = set()
    for t in range(8):
        srv.begin(t)
        out.add(np.asarray(srv.aggregate(X)).tobytes())
    assert len(out) == 1  # a mean of all buckets does not depend on them ...
    seeds = {protocol.bucketing_seed(4, t) for t in range(8)}
    assert len(seeds) == 8  # ... but every round draws its own buckets


# --------------------------------------------------------------------------------------------
# layering and the standardisation fix
# --------------------------------------------------------------------------------------------


def test_protocol_imports_nothing_from_the_layers_above() -> None:
    tree = ast.parse((ROOT / "python/cyclad/protocol.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cyclad"):
            names |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    above = {"train", "cli", "experiment", "distributed", "flower"}
    assert not {n for n in names if n.split(".")[-1] in above}, names
    code = "import sys, cyclad.protocol; print(sorted(m for m in sys.modules if m.startswith('cyclad')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = {m.split(".")[-1] for m in eval(out.stdout)}
    assert not loaded & above, loaded


def test_user_dataset_is_standardised_like_a_bundled_one() -> None:
    raw = data.load("breast_cancer", standardize=False)
    kw = {**FAST, "rounds": 20, "model": "logistic", "n_byzantine": 1, "lr": 0.5}
    bundled = train.run(train.Config(dataset="breast_cancer", **kw))
    user = train.run(train.Config(dataset=raw, **kw))
    np.testing.assert_allclose(user.loss, bundled.loss, rtol=1e-12)
    as_given = train.run(train.Config(dataset=raw, standardize=False, **kw))
    assert not np.isfinite(as_given.final_loss) or as_given.final_loss > 10 * bundled.final_loss


@pytest.mark.parametrize(
    ("field", "value"),
    [("test_fraction", 0.5), ("data_path", "/x"), ("dataset_params", {"n_samples": 9})],
)
def test_loading_fields_with_a_user_dataset_are_errors(field, value) -> None:
    ds = data.load("digits")
    with pytest.raises(train.ConfigError, match=f"'{field}': applies to bundled datasets only"):
        train.Config(dataset=ds, **{field: value}).validate()
