"""Attacks: shapes and the property that defines each one."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pytest

from cyclad import attacks


def _ctx(rng, h=7, f=3, P=11, **kw) -> attacks.AttackContext:
    honest = rng.standard_normal((h, P)) + 2.0
    base = {
        "honest": honest,
        "n": h + f,
        "f": f,
        "byzantine_honest": rng.standard_normal((f, P)),
        "rng": np.random.default_rng(5),
    }
    base.update(kw)
    return attacks.AttackContext(**base)


@pytest.mark.parametrize("name", attacks.ATTACKS)
def test_every_attack_has_shape_and_dtype(rng, name) -> None:
    n, f, d = 10, 3, 2
    A = (np.arange(n)[:, None] + np.arange(d)[None, :]) % n
    ctx = _ctx(
        rng,
        h=n - f,
        f=f,
        assignment=A,
        byzantine_idx=np.arange(f),
        honest_idx=np.arange(f, n),
        aggregate=lambda X: np.median(X, axis=0),
    )
    out = attacks.get(name)(ctx)
    assert out.shape == (f, 11)
    assert out.dtype == np.float64


def test_sign_flip_ipm_foe(rng) -> None:
    ctx = _ctx(rng)
    mu = ctx.honest.mean(axis=0)
    np.testing.assert_allclose(attacks.get("sign_flip")(ctx), np.tile(-mu, (3, 1)))
    np.testing.assert_allclose(attacks.get("ipm:0.5")(ctx), np.tile(-0.5 * mu, (3, 1)))
    np.testing.assert_allclose(attacks.get("ipm")(ctx)[0], -0.1 * mu)
    np.testing.assert_allclose(attacks.get("foe", tau=3.0)(ctx)[1], -2.0 * mu)


def test_alie_formula_and_default_z(rng) -> None:
    ctx = _ctx(rng)
    mu, sd = ctx.honest.mean(axis=0), ctx.honest.std(axis=0)
    np.testing.assert_allclose(attacks.get("alie:1.5")(ctx)[2], mu - 1.5 * sd)
    # Baruch et al.: n = 10, f = 3 -> s = floor(6) - 3 = 3, z = Phi^-1(7/10)
    z = NormalDist().inv_cdf(0.7)
    assert attacks.alie_z(10, 3) == pytest.approx(z)
    np.testing.assert_allclose(attacks.get("alie")(ctx)[0], mu - z * sd)
    assert attacks.alie_z(20, 3) == pytest.approx(NormalDist().inv_cdf(12 / 20))


def test_gaussian_is_seeded_noise(rng) -> None:
    P = 4000
    ctx = _ctx(rng, P=P)
    out = attacks.get("gaussian:2.0")(ctx)
    assert abs(out.std() - 2.0) < 0.05
    assert abs(out.mean()) < 0.05
    again = attacks.get("gaussian", sigma=2.0)(_ctx(np.random.default_rng(1), P=P))
    np.testing.assert_array_equal(out, again)  # same ctx.rng seed -> same noise


def test_mimic_copies_an_honest_vector(rng) -> None:
    ctx = _ctx(rng)
    out = attacks.get("mimic")(ctx)
    far = np.argmax(np.sum((ctx.honest - ctx.honest.mean(axis=0)) ** 2, axis=1))
    for row in out:
        np.testing.assert_array_equal(row, ctx.honest[far])


def test_inf_nan_poison(rng) -> None:
    ctx = _ctx(rng)
    assert np.all(np.isposinf(attacks.get("inf")(ctx)))
    assert np.all(np.isnan(attacks.get("nan")(ctx)))


def test_none_and_label_flip_send_their_honest_coding(rng) -> None:
    ctx = _ctx(rng)
    np.testing.assert_array_equal(attacks.get("none")(ctx), ctx.byzantine_honest)
    lf = attacks.get("label_flip")
    assert lf.data_level
    assert not attacks.get("none").data_level
    np.testing.assert_array_equal(attacks.LabelFlip.flip(np.array([0, 3, 9]), 10), [9, 6, 0])


def _median(X):
    return np.median(X, axis=0)


@pytest.mark.parametrize("name", ["optimal_alie", "optimal_ipm"])
def test_optimal_attacks_pick_the_worst_scale(rng, name) -> None:
    ctx = _ctx(rng, h=7, f=3, aggregate=_median)
    att = attacks.get(name, search="grid", max_scale=4.0, steps=9)
    out = att(ctx)
    mu = ctx.honest.mean(axis=0)
    best = np.linalg.norm(_median(np.concatenate([ctx.honest, out])) - mu)
    # every grid point does at most as much damage as the chosen one
    base = "alie" if name == "optimal_alie" else "ipm"
    for s in np.linspace(0, 4.0, 9):
        other = attacks.get(f"{base}:{s}")(ctx)
        dist = np.linalg.norm(_median(np.concatenate([ctx.honest, other])) - mu)
        assert dist <= best + 1e-12
    assert att.last_scale in np.linspace(0, 4.0, 9)
    # and it beats the default-scale attack against the median
    plain = attacks.get(base)(ctx)
    assert best >= np.linalg.norm(_median(np.concatenate([ctx.honest, plain])) - mu) - 1e-12


def test_line_maximize_expands_then_contracts() -> None:
    seen: list[float] = []

    def f(x: float) -> float:
        seen.append(x)
        return -((x - 5.3) ** 2)

    x, y = attacks.line_maximize(f, evals=16, start=0.0, delta=1.0, ratio=0.8)
    assert len(seen) == 16
    # expansion: steps of 1, 2, 4, 8 while they improve; 15 overshoots
    assert seen[:5] == [0.0, 1.0, 3.0, 7.0, 15.0]
    # contraction: 15 - 8 * 0.8, then steps shrinking by 0.8 towards the best point
    np.testing.assert_allclose(seen[5:8], [8.6, 8.6 - 5.12, 8.6 - 5.12 + 4.096])
    assert min(seen) >= 0.0
    assert y == max(f(s) for s in seen[:16])
    assert x == seen[int(np.argmax([-((s - 5.3) ** 2) for s in seen[:16]]))]
    assert abs(x - 5.3) < 0.2
    # a monotone objective keeps expanding: the best point is the last doubling
    x, _ = attacks.line_maximize(lambda t: t, evals=5)
    assert x == 15.0
    # NaN never wins
    x, y = attacks.line_maximize(lambda t: float("nan") if t > 0 else 1.0, evals=6)
    assert (x, y) == (0.0, 1.0)
    for bad in ({"evals": 0}, {"start": -1.0}, {"delta": 0.0}, {"ratio": 0.5}, {"ratio": 1.0}):
        with pytest.raises(ValueError, match="line search"):
            attacks.line_maximize(lambda t: t, **bad)


@pytest.mark.parametrize("name", ["optimal_alie", "optimal_ipm"])
def test_optimal_attacks_line_search_keeps_the_worst_scale_it_tried(rng, name) -> None:
    tried: list[float] = []

    def median(X):
        tried.append(float(np.linalg.norm(np.median(X, axis=0) - mu)))
        return np.median(X, axis=0)

    ctx = _ctx(rng, h=7, f=3, aggregate=median)
    mu = ctx.honest.mean(axis=0)
    att = attacks.get(name)  # the line search is the default
    assert att.search == "line"
    out = att(ctx)
    assert len(tried) == 16
    got = float(np.linalg.norm(np.median(np.concatenate([ctx.honest, out]), axis=0) - mu))
    assert got == pytest.approx(max(tried))
    base = "alie" if name == "optimal_alie" else "ipm"
    np.testing.assert_allclose(out, attacks.get(f"{base}:{att.last_scale}")(ctx))
    assert got >= tried[0]  # at least as damaging as the start (scale 0)


def test_alie_conventions_match_byzfl(rng) -> None:
    # ByzFL 0.0.11's ALittleIsEnough(1.5) docstring example: mean + 1.5 * sample sd
    X = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    ctx = attacks.AttackContext(honest=X, n=4, f=1)
    got = attacks.get("alie:z=1.5,sign=1,ddof=1")(ctx)
    np.testing.assert_allclose(got, [[8.5, 9.5, 10.5]])
    # cyclad's default: mean - z * population sd
    sd = np.sqrt(6.0)
    np.testing.assert_allclose(
        attacks.get("alie:1.5")(ctx), [[4 - 1.5 * sd, 5 - 1.5 * sd, 6 - 1.5 * sd]]
    )
    opt = attacks.get("optimal_alie", sign=1, ddof=1, search="grid", max_scale=2.0, steps=3)
    ctx.aggregate = lambda V: V.mean(axis=0)
    np.testing.assert_allclose(opt(ctx), [[4 + 2 * 3.0, 5 + 2 * 3.0, 6 + 2 * 3.0]])
    for bad in ("alie:sign=2", "alie:ddof=2", "optimal_alie:sign=0", "optimal_ipm:search=random"):
        with pytest.raises(ValueError, match=r"sign|ddof|search"):
            attacks.get(bad)


def test_mimic_takes_the_honest_index(rng) -> None:
    ctx = _ctx(rng, h=7, f=3)
    np.testing.assert_array_equal(attacks.get("mimic:4")(ctx), np.tile(ctx.honest[4], (3, 1)))
    np.testing.assert_array_equal(attacks.get("mimic", index=0)(ctx)[2], ctx.honest[0])
    with pytest.raises(ValueError, match="not an honest vector"):
        attacks.get("mimic:7")(ctx)
    for bad in ("mimic:-1", "mimic:1.5"):
        with pytest.raises(ValueError, match="index"):
            attacks.get(bad)


def test_optimal_attack_needs_aggregate(rng) -> None:
    with pytest.raises(ValueError, match=r"needs ctx\.aggregate"):
        attacks.get("optimal_alie")(_ctx(rng))


def test_coding_aware_targets_neighbours(rng) -> None:
    n, f, _d, P = 8, 2, 2, 5
    A = np.array([[0, 1], [4, 5], [1, 2], [2, 3], [3, 4], [5, 6], [6, 7], [7, 0]])
    honest = rng.standard_normal((n - f, P))
    ctx = attacks.AttackContext(
        honest=honest,
        n=n,
        f=f,
        assignment=A,
        byzantine_idx=np.array([0, 1]),
        honest_idx=np.arange(2, n),
    )
    out = attacks.get("coding_aware:2.0")(ctx)
    # device 0 holds {0, 1}: honest devices 2 ({1,2}) and 7 ({7,0}) share a subset
    np.testing.assert_allclose(out[0], -2.0 * honest[[0, 5]].mean(axis=0))
    # device 1 holds {4, 5}: honest devices 4 ({3,4}) and 5 ({5,6})
    np.testing.assert_allclose(out[1], -2.0 * honest[[2, 3]].mean(axis=0))


def test_registry_errors() -> None:
    with pytest.raises(ValueError, match="attack must be one of"):
        attacks.get("teleport")
    with pytest.raises(ValueError, match="takes parameters"):
        attacks.get("sign_flip:3")
    with pytest.raises(ValueError, match="takes parameters"):
        attacks.get("ipm", sigma=1)
    with pytest.raises(ValueError, match="sigma must be >= 0"):
        attacks.get("gaussian:-1")
