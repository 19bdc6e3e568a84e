"""LAD / Com-LAD round logic, byte accounting, Config validation, History, Ctrl-C."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from cyclad import coding, compression, data, models, protocol, train

FAST = {"rounds": 12, "n_devices": 10, "n_byzantine": 2, "blas_threads": 1}


def _equal_split_dataset(N: int = 10, per: int = 20, F: int = 5, C: int = 3) -> data.Dataset:
    rng = np.random.default_rng(7)
    m = N * per
    y = rng.integers(0, C, size=m)
    X = rng.standard_normal((m, F)) + y[:, None] * 0.7
    return data.Dataset(X, y, X[:30], y[:30])


def _plain_gd(cfg: train.Config, ds: data.Dataset, subsets, rounds: int):
    """Honest full-gradient descent in plain NumPy: g = (1/N) sum_j grad on subset j."""
    model = models.get(cfg.model, ds.n_features, ds.n_classes)
    theta = model.init(cfg.seed)
    losses = []
    for _ in range(rounds):
        g = np.mean([model.grad(theta, ds.X_train[s], ds.y_train[s]) for s in subsets], axis=0)
        theta = theta - cfg.lr * (g + cfg.weight_decay * theta)
        losses.append(
            model.loss(theta, ds.X_train, ds.y_train) + 0.5 * cfg.weight_decay * theta @ theta
        )
    return theta, np.array(losses)


@pytest.mark.parametrize("attack", ["sign_flip", "alie", "foe", "nan", "coding_aware"])
@pytest.mark.parametrize("aggregator", ["trimmed_mean", "median"])
def test_lad_with_d_equal_n_follows_honest_gradient_descent(attack, aggregator) -> None:
    """At d = N every honest coded vector equals g, so a robust rule with f < n/2 returns g."""
    cfg = train.Config(
        **{**FAST, "n_byzantine": 4},
        d=10,
        attack=attack,
        aggregator=aggregator,
        partition="extreme",
        weight_decay=1e-3,
    )
    hist = train.run(cfg)
    ds = data.load("digits")
    subsets = data.partition(ds.y_train, 10, "extreme", seed=cfg.seed)
    theta, losses = _plain_gd(cfg, ds, subsets, cfg.rounds)
    np.testing.assert_allclose(hist.theta, theta, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(hist.loss, losses, rtol=1e-9)


@pytest.mark.parametrize("d", [1, 3, 10])
@pytest.mark.parametrize("assignment", ["permute", "shift"])
def test_lad_with_mean_and_no_attack_is_centralised_gd(d, assignment) -> None:
    ds = _equal_split_dataset()
    cfg = train.Config(
        dataset=ds,
        standardize=False,
        n_devices=10,
        n_byzantine=0,
        d=d,
        attack="none",
        aggregator="mean",
        assignment=assignment,
        partition="dirichlet",
        alpha=0.5,
        rounds=15,
        lr=0.3,
        momentum=0.5,
    )
    hist = train.run(cfg)
    model = models.get("softmax", ds.n_features, ds.n_classes)
    theta = model.init(0)
    v = np.zeros_like(theta)
    # dirichlet subsets have unequal sizes: g is the mean of the subset gradients
    subsets = data.partition(ds.y_train, 10, "dirichlet", alpha=0.5, seed=0)
    for _ in range(cfg.rounds):
        g = np.mean([model.grad(theta, ds.X_train[s], ds.y_train[s]) for s in subsets], axis=0)
        v = 0.5 * v + g
        theta = theta - 0.3 * v
    np.testing.assert_allclose(hist.theta, theta, rtol=1e-9, atol=1e-11)


def test_lad_iid_equal_subsets_matches_full_data_gradient() -> None:
    ds = _equal_split_dataset()
    cfg = train.Config(
        dataset=ds,
        standardize=False,
        n_devices=10,
        n_byzantine=0,
        d=2,
        attack="none",
        aggregator="mean",
        partition="iid",
        rounds=10,
        lr=0.2,
    )
    hist = train.run(cfg)
    model = models.get("softmax", ds.n_features, ds.n_classes)
    theta = model.init(0)
    for _ in range(cfg.rounds):
        theta = theta - 0.2 * model.grad(theta, ds.X_train, ds.y_train)
    np.testing.assert_allclose(hist.theta, theta, rtol=1e-9, atol=1e-11)


def test_lad_redundancy_helps_under_attack() -> None:
    """The paper's claim in miniature: with extreme heterogeneity and a sign-flip attack,
    trimmed mean at d = N reaches a lower loss than at d = 1."""
    base = {**FAST, "rounds": 40, "attack": "sign_flip", "partition": "extreme"}
    h1 = train.run(train.Config(**base, d=1))
    hN = train.run(train.Config(**base, d=10))
    assert hN.final_loss < h1.final_loss
    assert hN.final_accuracy > 0.85


def test_spread_matches_coding_formula_on_average() -> None:
    cfg = train.Config(
        **{**FAST, "rounds": 30, "n_byzantine": 0}, d=3, attack="none", aggregator="mean"
    )
    h = train.run(cfg)
    ratio = np.mean(np.array(h.spread) / np.array(h.heterogeneity))
    N, d = 10, 3
    assert ratio == pytest.approx((N - d) / (d * (N - 1)), rel=0.35)
    hN = train.run(train.Config(**{**cfg.to_dict(), "d": 10}))
    assert max(hN.spread) < 1e-20


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_lad_byte_accounting(dtype) -> None:
    cfg = train.Config(**FAST, d=2, attack="alie", dtype=dtype, model="mlp", hidden=4)
    h = train.run(cfg)
    P = models.get("mlp", 64, 10, hidden=4).n_params
    item = 8 if dtype == "float64" else 4
    assert h.bytes_up == [10 * item * P] * cfg.rounds
    assert h.bytes_down == [10 * item * P] * cfg.rounds
    assert np.isfinite(h.final_loss)


def test_comlad_bytes_are_message_lengths(monkeypatch) -> None:
    sent: list[int] = []
    real = protocol.encode_payload

    def spy(z, comp, seed, **kw):
        out = real(z, comp, seed, **kw)
        sent.append(len(out))
        return out

    monkeypatch.setattr(protocol, "encode_payload", spy)
    cfg = train.Config(
        **FAST, d=2, attack="sign_flip", compressor="topk:k=20", error_feedback="ef14"
    )
    h = train.run(cfg)
    assert sum(h.bytes_up) == sum(sent)
    assert len(sent) == 10 * cfg.rounds
    msg = compression.TopK(k=20).compress(np.random.default_rng(0).standard_normal(650))
    assert h.bytes_up[0] == 10 * len(msg.to_bytes())
    assert h.bytes_up[0] < 10 * 8 * 650 / 5


COMPRESSORS = [
    ("topk:0.05", False),
    ("topk:0.05", "ef14"),
    ("topk:0.05", "ef21"),
    ("randk:0.2", False),
    ("randk:0.2,shared", False),
    ("qsgd:16", False),
    ("sign", True),
    ("natural", False),
    ("terngrad:64", False),
    ("identity", False),
]


def test_build_compressor_natural_and_terngrad() -> None:
    assert isinstance(train.build_compressor("natural"), compression.Natural)
    t = train.build_compressor("terngrad:512")
    assert isinstance(t, compression.TernGrad)
    assert t.bucket == 512
    assert train.build_compressor("terngrad:bucket=8,value_dtype=float16").value_dtype == "float16"
    assert train.build_compressor("terngrad").bucket is None
    with pytest.raises(ValueError, match="no positional argument"):
        train.build_compressor("natural:3")
    with pytest.raises(ValueError, match="valid parameters"):
        train.build_compressor("terngrad:levels=3")
    with pytest.raises(ValueError, match="bucket must be"):
        train.build_compressor("terngrad:0")


@pytest.mark.parametrize(("spec", "ef"), COMPRESSORS, ids=[f"{s}-{e}" for s, e in COMPRESSORS])
def test_comlad_runs_with_each_compressor(spec, ef) -> None:
    cfg = train.Config(
        **{**FAST, "rounds": 25}, d=5, attack="alie", compressor=spec, error_feedback=ef, lr=0.3
    )
    h = train.run(cfg)
    assert len(h) == 25
    assert np.isfinite(h.final_loss)
    assert h.final_loss < h.loss[0] or h.final_loss < math.log(10)
    assert h.final_accuracy > 0.3
    assert all(b > 0 for b in h.bytes_up)


def test_identity_compressor_reproduces_lad() -> None:
    base = {**FAST, "d": 3, "attack": "sign_flip"}
    lad = train.run(train.Config(**base))
    com = train.run(train.Config(**base, compressor="identity"))
    np.testing.assert_allclose(com.loss, lad.loss, rtol=1e-6)


def test_shared_randk_needs_one_seed_per_round(monkeypatch) -> None:
    seeds: list[tuple[int, int]] = []
    real = protocol.encode_payload

    def spy(z, comp, seed, **kw):
        seeds.append(seed)
        return real(z, comp, seed, **kw)

    monkeypatch.setattr(protocol, "encode_payload", spy)
    train.run(train.Config(**{**FAST, "rounds": 2}, compressor="randk:0.1,shared"))
    assert len(set(seeds[:10])) == 1
    assert len(set(seeds[10:])) == 1
    assert seeds[0] != seeds[10]
    seeds.clear()
    train.run(train.Config(**{**FAST, "rounds": 1}, compressor="randk:0.1"))
    assert len(set(seeds)) == 10


def test_device_step_equals_simulated_coding() -> None:
    ds = data.load("digits")
    model = models.get("softmax", ds.n_features, ds.n_classes)
    theta = np.random.default_rng(1).standard_normal(model.n_params) * 0.01
    subsets = data.partition(ds.y_train, 6, "extreme")
    plan = protocol.plan_round(protocol.RoundSpec(n=6, d=3, mode="fixed"), 0)
    assert plan.assignment[4].tolist() == [4, 5, 0]
    payload = protocol.device_step(model, theta, ds.X_train, ds.y_train, subsets, plan, 4)
    z = np.frombuffer(payload, dtype="<f8")
    window = [subsets[4], subsets[5], subsets[0]]
    G = model.subset_grads(theta, ds.X_train, ds.y_train, window)
    np.testing.assert_allclose(z, G.mean(axis=0), rtol=1e-12, atol=1e-15)


def test_label_flip_random_placement_batches_and_determinism() -> None:
    cfg = train.Config(
        **FAST, d=2, attack="label_flip", byzantine="random", batch_size=16, device_seed=3
    )
    a, b = train.run(cfg), train.run(cfg)
    assert a.loss == b.loss
    c = train.run(train.Config(**{**cfg.to_dict(), "device_seed": 4}))
    assert c.loss != a.loss
    assert np.isfinite(a.final_loss)


def test_full_batch_size_equals_full_gradient() -> None:
    base = {**FAST, "d": 2}
    full = train.run(train.Config(**base))
    big = train.run(train.Config(**base, batch_size=10_000))
    assert full.loss == big.loss


def test_eval_every_records_nan_between_evaluations() -> None:
    h = train.run(train.Config(**{**FAST, "rounds": 7}, eval_every=3))
    assert [math.isnan(v) for v in h.accuracy] == [True, True, False, True, True, False, False]
    assert not math.isnan(h.final_accuracy)


@pytest.mark.parametrize("name", ["logistic", "least_squares", "mlp"])
def test_other_models_train(name) -> None:
    ds = "breast_cancer" if name == "logistic" else "digits"
    h = train.run(
        train.Config(
            **{**FAST, "rounds": 20}, dataset=ds, model=name, d=3, aggregator="median", lr=0.1
        )
    )
    assert h.final_loss < h.loss[0]


def test_pre_aggregation_composes() -> None:
    h = train.run(train.Config(**FAST, d=2, pre_aggregation="nnm", aggregator="trimmed_mean"))
    assert np.isfinite(h.final_loss)


# ------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"d": 11}, "d"),
        ({"d": 0}, "d"),
        ({"f": 5}, "f"),
        ({"n_byzantine": 5}, "n_byzantine"),
        ({"lr": -0.1}, "lr"),
        ({"momentum": 1.0}, "momentum"),
        ({"rounds": 0}, "rounds"),
        ({"dataset": "imagenet"}, "dataset"),
        ({"model": "resnet"}, "model"),
        ({"attack": "teleport"}, "attack"),
        ({"attack": "ipm", "attack_params": {"sigma": 1}}, "attack"),
        ({"aggregator": "majority_vote"}, "aggregator"),
        ({"compressor": "zip"}, "compressor"),
        ({"compressor": "topk:2.5"}, "compressor"),
        ({"error_feedback": "ef21"}, "error_feedback"),
        ({"partition": "zipf"}, "partition"),
        ({"assignment": "random"}, "assignment"),
        ({"dtype": "float16"}, "dtype"),
        ({"batch_size": 0}, "batch_size"),
        ({"d": 2.5}, "d"),
    ],
)
def test_config_errors_name_the_field(kwargs, field) -> None:
    cfg = train.Config(**{**FAST, **kwargs})
    with pytest.raises(train.ConfigError, match=f"'{field}'") as info:
        train.run(cfg)
    assert info.value.field == field


def test_compressor_k_larger_than_model_is_rejected_before_training() -> None:
    calls = []
    cfg = train.Config(**FAST, compressor="topk:k=100000")
    with pytest.raises(train.ConfigError, match=r"'compressor'.*exceeds") as info:
        train.run(cfg, callback=lambda t, h: calls.append(t))
    assert info.value.field == "compressor"
    assert calls == []


def test_unknown_field_and_toml(tmp_path) -> None:
    with pytest.raises(train.ConfigError, match="'learning_rate': unknown field"):
        train.Config.from_dict({"learning_rate": 0.1})
    p = tmp_path / "c.toml"
    p.write_text('d = 3\nattack = "ipm:0.5"\ncompressor = "none"\n[aggregator_params]\n')
    cfg = train.Config.from_toml(p, overrides={"lr": 0.25})
    assert (cfg.d, cfg.attack, cfg.compressor, cfg.lr) == (3, "ipm:0.5", None, 0.25)
    # to_toml round trip
    q = tmp_path / "r.toml"
    q.write_text(cfg.to_toml())
    assert train.Config.from_toml(q) == cfg


def test_mismatched_dataset_arrays_are_rejected() -> None:
    with pytest.raises(ValueError, match="y_train has 3 labels but X_train has 4"):
        train.Config(dataset=data.Dataset(np.zeros((4, 2)), [0, 1, 0], np.zeros((2, 2)), [0, 1]))


def test_too_few_samples_for_subsets() -> None:
    ds = data.Dataset(np.eye(5), [0, 1, 0, 1, 0], np.eye(5)[:2], [0, 1])
    with pytest.raises(train.ConfigError, match="'partition'"):
        train.run(train.Config(dataset=ds, n_devices=6, n_byzantine=0, d=1, attack="none"))


# --------------------------------------------------------------------------- history and Ctrl-C


def test_history_roundtrip(tmp_path) -> None:
    h = train.run(train.Config(**{**FAST, "rounds": 4}, eval_every=2))
    h.to_json(tmp_path / "h.json")
    back = train.History.from_json(tmp_path / "h.json")
    assert back.bytes_up == h.bytes_up
    np.testing.assert_array_equal(back.loss, h.loss)  # NaN entries survive
    assert back.config["d"] == h.config["d"]
    assert back.final_accuracy == h.final_accuracy
    h.to_csv(tmp_path / "h.csv")
    lines = (tmp_path / "h.csv").read_text().splitlines()
    assert lines[0].startswith("round,loss,accuracy,bytes_up")
    assert len(lines) == 5
    assert json.loads((tmp_path / "h.json").read_text())["interrupted"] is False


def test_ctrl_c_keeps_history() -> None:
    def stop(t, hist):
        if t == 2:
            raise KeyboardInterrupt

    with pytest.raises(train.Interrupted) as info:
        train.run(train.Config(**FAST), callback=stop)
    assert isinstance(info.value, KeyboardInterrupt)
    h = info.value.history
    assert len(h) == 3
    assert h.interrupted
    assert len(h.bytes_up) == 3
    assert np.isfinite(h.final_loss)


# --------------------------------------------------------------------------------------------
# DRACO
# --------------------------------------------------------------------------------------------


def test_draco_recovers_the_exact_gradient_under_attack() -> None:
    # groups of 2f + 1 = 5: every round's update is the attack-free full-gradient step
    clean = train.run(train.Config(n_devices=20, n_byzantine=0, d=20, attack="none", rounds=5))
    for attack in ("sign_flip", "alie", "gaussian"):
        cfg = train.Config(
            n_devices=20, n_byzantine=2, d=5, method="draco", attack=attack, rounds=5
        )
        hist = train.run(cfg)
        np.testing.assert_allclose(hist.theta, clean.theta, rtol=0, atol=1e-12)
        assert hist.config["method"] == "draco"


def test_draco_plan_groups_share_windows() -> None:
    spec = protocol.RoundSpec(n=12, d=3, method="draco", seed=4)
    for t in (0, 1, 7):
        A = protocol.plan_round(spec, t).assignment
        pi = coding.CyclicCode(12, 3, seed=4).permutation(t)
        for k in range(4):
            for i in range(3 * k, 3 * k + 3):
                np.testing.assert_array_equal(A[i], pi[3 * k : 3 * k + 3])
        np.testing.assert_array_equal(np.bincount(A.ravel(), minlength=12), np.full(12, 3))
    with pytest.raises(ValueError, match="draco needs d to divide n"):
        protocol.RoundSpec(n=12, d=5, method="draco")
    with pytest.raises(ValueError, match="method must be one of"):
        protocol.RoundSpec(n=12, d=3, method="vote")


def test_draco_rule_absent_rows_and_no_majority(rng) -> None:
    rule = protocol.draco_rule(6, 3)
    G = rng.standard_normal((2, 4))
    X = np.repeat(G, 3, axis=0)
    X[1] = np.nan  # absent
    np.testing.assert_array_equal(rule(X), coding.encode(G, np.array([[0, 1]]), [0.5, 0.5])[0])
    X[0] = rng.standard_normal(4)  # two of three devices wrong, and not alike
    with pytest.raises(coding.NoMajorityError):
        rule(X)
    X[0] = np.nan  # two absent devices: their identical all-NaN rows do not vote
    with pytest.raises(coding.NoMajorityError):
        rule(X)
    with pytest.raises(ValueError, match=r"f must be in \[0, 1\]"):
        protocol.draco_rule(6, 3, 2)


@pytest.mark.parametrize(
    ("values", "field", "match"),
    [
        ({"d": 3}, "d", "needs d to divide n_devices"),
        ({"d": 4, "n_byzantine": 2}, "n_byzantine", "f = 2 needs d >= 5"),
        ({"d": 4, "n_byzantine": 1, "f": 2}, "f", "f = 2 needs d >= 5"),
        ({"compressor": "topk:0.1"}, "compressor", "not used by method 'draco'"),
        ({"pre_aggregation": "nnm"}, "pre_aggregation", "not used by method 'draco'"),
        ({"aggregator_params": {"tau": 1.0}}, "aggregator_params", "not used"),
    ],
)
def test_draco_config_validation(values, field, match) -> None:
    base = {"n_devices": 20, "n_byzantine": 2, "d": 5, "method": "draco"}
    with pytest.raises(train.ConfigError, match=match) as info:
        train.Config.from_dict({**base, **values}).validate()
    assert info.value.field == field


def test_method_field_choices_and_toml(tmp_path) -> None:
    with pytest.raises(train.ConfigError, match="must be one of lad, draco") as info:
        train.Config(method="majority").validate()
    assert info.value.field == "method"
    path = tmp_path / "c.toml"
    path.write_text('method = "draco"\nn_devices = 9\nn_byzantine = 1\nd = 3\n')
    cfg = train.Config.from_toml(path)
    cfg.validate()
    assert train.Config.from_toml(path).method == "draco"
    assert 'method = "draco"' in cfg.to_toml()


# --------------------------------------------------------------------------------------------
# signSGD with majority vote: the 1-bit Byzantine-robust baseline
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("attack", ["none", "sign_flip", "alie"])
def test_sign_majority_run_learns_under_attack(attack) -> None:
    cfg = train.Config(
        **{**FAST, "rounds": 40},
        d=3,
        attack=attack,
        compressor="sign",
        aggregator="sign_majority",
        lr=0.05,
    )
    h = train.run(cfg)
    assert h.final_accuracy > 0.6
    D = 65 * 10  # digits softmax: 64 features + bias, 10 classes
    assert h.bytes_up[0] == 10 * (16 + 8 + -(-D // 8))  # one sign message per device


def test_server_votes_on_the_packed_bits_like_the_dense_rule() -> None:
    rng = np.random.default_rng(3)
    n, P = 7, 1000
    X = rng.standard_normal((n, P))
    sign = compression.Sign()
    payloads = [sign.compress(x).to_bytes() for x in X]
    payloads[2] = b"garbage"  # malformed: device 2 does not vote
    payloads[5] = None  # absent: no vote either
    theta = np.zeros(P)
    server = protocol.Server(n, P, np.float64, "sign_majority", compressor=sign, lr=1.0)
    new = server.step(0, theta, payloads)
    keep = [0, 1, 3, 4, 6]
    expect = np.where(2 * np.signbit(X[keep]).sum(axis=0) > len(keep), -1.0, 1.0)
    np.testing.assert_array_equal(new, -expect)
    assert sorted(server.faulty) == [2, 5]
    # the dense form of the rule on the decoded rows (absent rows are NaN) agrees
    dense = protocol.make_rule("sign_majority", 0)(server.received(range(n)))
    np.testing.assert_array_equal(dense, expect)


def test_sign_majority_config_errors() -> None:
    with pytest.raises(train.ConfigError, match="needs compressor 'sign'"):
        train.Config(aggregator="sign_majority", compressor="topk:0.1").validate()
    with pytest.raises(train.ConfigError, match="needs compressor 'sign'"):
        train.Config(aggregator="sign_majority").validate()
    with pytest.raises(train.ConfigError, match="needs compressor 'sign'"):
        train.Config(
            aggregator="sign_majority", compressor="sign", error_feedback="ef21"
        ).validate()
    with pytest.raises(train.ConfigError, match="pre_aggregation"):
        train.Config(
            aggregator="sign_majority", compressor="sign", pre_aggregation="nnm"
        ).validate()
    with pytest.raises(ValueError, match="needs the sign compressor"):
        protocol.Server(3, 10, np.float64, "sign_majority", compressor=compression.TopK(k=2))
    with pytest.raises(ValueError, match="taken by no component"):
        protocol.make_rule("sign_majority", 0, {"tau": 1.0})
