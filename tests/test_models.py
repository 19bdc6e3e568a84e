"""Models: analytic gradients vs finite differences, subset_grads vs per-subset grad."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from cyclad import models

CASES = [
    ("logistic", {}, 2),
    ("softmax", {}, 4),
    ("least_squares", {}, 3),
    ("mlp", {"hidden": 5, "activation": "tanh"}, 3),
    ("mlp", {"hidden": 4, "activation": "relu"}, 3),
]


def _problem(rng: np.random.Generator, n_classes: int, m: int = 23, F: int = 6):
    X = rng.standard_normal((m, F))
    y = rng.integers(0, n_classes, size=m)
    return X, y


@pytest.mark.parametrize(("name", "params", "C"), CASES, ids=lambda c: str(c))
def test_grad_matches_finite_differences(rng, name, params, C) -> None:
    X, y = _problem(rng, C)
    model = models.get(name, X.shape[1], C, **params)
    theta = rng.standard_normal(model.n_params) * 0.3
    g = model.grad(theta, X, y)
    assert g.shape == (model.n_params,)
    h = 1e-6
    fd = np.empty_like(theta)
    for k in range(theta.size):
        e = np.zeros_like(theta)
        e[k] = h
        fd[k] = (model.loss(theta + e, X, y) - model.loss(theta - e, X, y)) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-7)
    loss2, g2 = model.loss_and_grad(theta, X, y)
    assert loss2 == pytest.approx(model.loss(theta, X, y))
    np.testing.assert_allclose(g2, g, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(("name", "params", "C"), CASES, ids=lambda c: str(c))
@pytest.mark.parametrize("kind", ["slices", "arrays"])
def test_subset_grads_match_per_subset_grad(rng, name, params, C, kind) -> None:
    X, y = _problem(rng, C, m=40)
    model = models.get(name, X.shape[1], C, **params)
    theta = model.init(seed=3) + rng.standard_normal(model.n_params) * 0.1
    if kind == "slices":
        bounds = [0, 1, 9, 20, 40]
        subs = [slice(a, b) for a, b in itertools.pairwise(bounds)]
        sel = [np.arange(s.start, s.stop) for s in subs]
    else:
        perm = rng.permutation(40)
        sel = [np.sort(perm[:3]), np.sort(perm[3:17]), perm[17:18], perm[18:]]
        subs = sel
    G = model.subset_grads(theta, X, y, subs)
    assert G.shape == (len(subs), model.n_params)
    for j, idx in enumerate(sel):
        np.testing.assert_allclose(G[j], model.grad(theta, X[idx], y[idx]), rtol=1e-10, atol=1e-12)


def test_subset_grads_float32(rng) -> None:
    X, y = _problem(rng, 3, m=30)
    model = models.get("softmax", X.shape[1], 3)
    theta = rng.standard_normal(model.n_params).astype(np.float32)
    G = model.subset_grads(theta, X.astype(np.float32), y, [slice(0, 10), slice(10, 30)])
    assert G.dtype == np.float32
    ref = model.grad(theta.astype(np.float64), X[:10], y[:10])
    np.testing.assert_allclose(G[0], ref, rtol=1e-4, atol=1e-5)


def test_predict_accuracy_and_training_reduces_loss(rng) -> None:
    X, y = _problem(rng, 2, m=200, F=3)
    y = (X[:, 0] + 0.2 * X[:, 1] > 0).astype(np.int64)
    for name in ("logistic", "softmax", "least_squares", "mlp"):
        model = models.get(name, 3, 2)
        theta = model.init(seed=1)
        l0 = model.loss(theta, X, y)
        for _ in range(200):
            theta = theta - 0.5 * model.grad(theta, X, y)
        assert model.loss(theta, X, y) < l0
        assert model.accuracy(theta, X, y) > 0.9
        assert set(np.unique(model.predict(theta, X))) <= {0, 1}


def test_accuracy_of_nan_parameters_is_zero(rng) -> None:
    model = models.get("softmax", 4, 3)
    X, y = _problem(rng, 3, F=4)
    assert model.accuracy(np.full(model.n_params, np.nan), X, y) == 0.0


def test_init_is_seeded() -> None:
    m = models.get("mlp", 5, 3, hidden=7)
    np.testing.assert_array_equal(m.init(4), m.init(4))
    assert not np.array_equal(m.init(4), m.init(5))
    assert np.all(models.get("softmax", 5, 3).init(0) == 0)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: models.get("resnet", 3, 2), "model must be one of"),
        (lambda: models.get("logistic", 3, 5), "needs 2 classes"),
        (lambda: models.get("softmax", 3, 2, hidden=3), "takes no parameters"),
        (lambda: models.get("mlp", 3, 2, activation="gelu"), "activation"),
        (lambda: models.get("mlp", 3, 2, hidden=0), "hidden"),
        (
            lambda: models.get("softmax", 3, 2).loss(
                np.zeros(5), np.zeros((2, 3)), np.zeros(2, int)
            ),
            "theta must have shape",
        ),
        (
            lambda: models.get("softmax", 3, 2).subset_grads(
                np.zeros(8), np.zeros((4, 3)), np.zeros(4, int), [slice(0, 2), slice(2, 2)]
            ),
            r"subsets\[1\] is empty",
        ),
    ],
)
def test_model_errors(call, match) -> None:
    with pytest.raises(ValueError, match=match):
        call()
