"""The aggregator registry: cyclad.aggregators.get / available."""

from __future__ import annotations

import numpy as np
import pytest

import cyclad.aggregators as agg
from tests import _reference as ref
from tests.conftest import TOL


@pytest.fixture
def X(rng) -> np.ndarray:
    return rng.standard_normal((11, 37))


def test_available_lists_registered_names() -> None:
    names = agg.available()
    assert set(names) == {"rules", "pre_aggregations"}
    for rule in (
        "mean", "krum", "multi_krum", "geometric_median", "centered_clipping", "closest", "bulyan",
    ):  # fmt: skip
        assert rule in names["rules"]
    assert names["pre_aggregations"] == ["nnm", "bucketing", "clip", "arc"]
    for name in names["rules"] + names["pre_aggregations"]:
        assert callable(getattr(agg, name))


def test_single_rules_match_direct_calls(X) -> None:
    np.testing.assert_array_equal(agg.get("mean")(X), agg.mean(X))
    np.testing.assert_array_equal(agg.get("krum", f=2)(X), agg.krum(X, 2))
    np.testing.assert_array_equal(agg.get("multi_krum", f=2, m=4)(X), agg.multi_krum(X, 2, 4))
    np.testing.assert_array_equal(
        agg.get("geometric_median", eps=1e-6, tol=1e-9)(X),
        agg.geometric_median(X, eps=1e-6, tol=1e-9),
    )
    np.testing.assert_array_equal(
        agg.get("centered_clipping", tau=0.5, iters=3)(X), agg.centered_clipping(X, 0.5, 3)
    )


def test_compositions_match_direct_calls(X) -> None:
    np.testing.assert_array_equal(agg.get("nnm+krum", f=2)(X), agg.krum(agg.nnm(X, 2), 2))
    np.testing.assert_array_equal(
        agg.get("bucketing+krum", s=2, f=1, seed=0)(X), agg.krum(agg.bucketing(X, 2, 0), 1)
    )
    np.testing.assert_array_equal(agg.get("clip+mean", tau=1.0)(X), agg.mean(agg.clip(X, 1.0)))
    np.testing.assert_array_equal(
        agg.get("arc+multi_krum", f=3)(X), agg.multi_krum(agg.arc(X, 3), 3)
    )
    # Several pre-aggregations, applied left to right.
    np.testing.assert_array_equal(
        agg.get("clip+nnm+geometric_median", tau=2.0, f=2)(X),
        agg.geometric_median(agg.nnm(agg.clip(X, 2.0), 2)),
    )
    np.testing.assert_allclose(
        agg.get("nnm+mean", f=3)(X), ref.nnm(X, 3).mean(axis=0), **TOL[np.dtype(np.float64)]
    )


def test_selection_rules_compose(X) -> None:
    z = np.zeros(X.shape[1])
    np.testing.assert_array_equal(agg.get("bulyan", f=2)(X), agg.bulyan(X, 2))
    np.testing.assert_array_equal(
        agg.get("nnm+bulyan", f=2, selection="multi_krum")(X),
        agg.bulyan(agg.nnm(X, 2), 2, selection="multi_krum"),
    )
    np.testing.assert_array_equal(
        agg.get("clip+closest", tau=1.0, reference=z, beta=4)(X),
        agg.closest(agg.clip(X, 1.0), z, 4),
    )
    np.testing.assert_array_equal(
        agg.get("bucketing+closest", s=2, seed=1, reference=z, beta=2, metric="coordinate")(X),
        agg.closest(agg.bucketing(X, 2, 1), z, 2, metric="coordinate"),
    )
    np.testing.assert_array_equal(
        agg.get("nnm+krum", f=2, neighbors="byzfl")(X), agg.krum(agg.nnm(X, 2), 1)
    )
    with pytest.raises(ValueError, match="needs the parameter") as info:
        agg.get("closest", beta=2)
    assert info.value.argument == "reference"


def test_names_are_normalised(X) -> None:
    a = agg.get(" NNM + Multi-Krum ", f=2)
    assert a.name == "nnm+multi_krum"
    np.testing.assert_array_equal(a(X), agg.multi_krum(agg.nnm(X, 2), 2))
    assert "nnm+multi_krum" in repr(a)
    assert a.params == {"f": 2}


def test_threads_reach_every_component(X) -> None:
    a1 = agg.get("nnm+geometric_median", f=2, threads=1)
    a2 = agg.get("nnm+geometric_median", f=2, threads=2)
    np.testing.assert_array_equal(a1(X), a2(X))


def test_f_is_checked_after_pre_aggregation(X) -> None:
    # 11 rows bucketed by 3 -> 4 rows: krum needs f <= 1 there, although f=2 fits 11 rows.
    with pytest.raises(ValueError, match=r"stage 2 'krum'.*n=4 rows.*must be in \[0, 1\]"):
        agg.get("bucketing+krum", s=3, f=2, seed=0)(X)
    out = agg.get("bucketing+krum", s=3, f=1, seed=0)(X)
    assert out.shape == (37,)


def test_torch_flows_through_compositions(X) -> None:
    torch = pytest.importorskip("torch")
    T = torch.from_numpy(X.astype(np.float32))
    out = agg.get("nnm+krum", f=2)(T)
    assert isinstance(out, torch.Tensor)
    np.testing.assert_array_equal(out.numpy(), agg.get("nnm+krum", f=2)(X.astype(np.float32)))


@pytest.mark.parametrize(
    ("name", "params", "pattern"),
    [
        ("bogus", {}, r"unknown aggregator 'bogus'.*valid names: rules \[.*'krum'"),
        ("nnm+bogus", {"f": 1}, r"unknown aggregator 'bogus'.*pre-aggregations \['nnm'"),
        ("nnm", {"f": 1}, r"ends with the pre-aggregation 'nnm'"),
        ("krum+nnm", {"f": 1}, r"'krum' .* is a rule and must come last"),
        ("mean+krum", {"f": 1}, r"'mean' .* is a rule and must come last"),
        (
            "krum",
            {"f": 1, "tau": 1.0},
            r"\['tau'\] are accepted by no component.*\['f', 'neighbors'\]",
        ),
        ("mean", {"f": 1}, r"\['f'\] are accepted by no component"),
        ("krum", {}, r"'krum' in 'krum' needs the parameter\(s\) \['f'\]"),
        ("bucketing+mean", {"s": 2}, r"needs the parameter\(s\) \['seed'\]"),
        ("", {}, r"name must be a non-empty string"),
        ("nnm++krum", {"f": 1}, r"unknown aggregator ''"),
    ],
)
def test_get_errors(name, params, pattern) -> None:
    with pytest.raises(ValueError, match=pattern):
        agg.get(name, **params)


def test_parameter_values_are_checked_on_call(X) -> None:
    a = agg.get("clip+mean", tau=-1.0)
    with pytest.raises(ValueError, match=r"stage 1 'clip'.*tau must be > 0"):
        a(X)


def test_registered_but_missing_rule_is_reported(monkeypatch) -> None:
    # A registered rule that is not (yet) defined in this build is refused with a clear message,
    # and picked up as soon as the module defines it: the lookup happens at call time.
    monkeypatch.delattr(agg, "median", raising=False)
    with pytest.raises(ValueError, match="'median' is registered but not available"):
        agg.get("nnm+median", f=1)
    assert "median" not in agg.available()["rules"]

    def fake_median(X, *, threads=None):
        return np.median(np.asarray(X), axis=0)

    monkeypatch.setattr(agg, "median", fake_median, raising=False)
    assert "median" in agg.available()["rules"]
    Y = np.arange(12.0).reshape(4, 3)
    np.testing.assert_array_equal(agg.get("median")(Y), np.median(Y, axis=0))
    np.testing.assert_array_equal(agg.get("nnm+median", f=1)(Y), np.median(agg.nnm(Y, 1), axis=0))


def test_params_are_routed_by_signature(monkeypatch) -> None:
    # trimmed_mean(X, f) receives f but not tau; clip receives tau but not f.
    seen = {}

    def fake_trimmed_mean(X, f, *, threads=None):
        seen["f"], seen["threads"] = f, threads
        return np.asarray(X).mean(axis=0)

    monkeypatch.setattr(agg, "trimmed_mean", fake_trimmed_mean, raising=False)
    Y = np.arange(12.0).reshape(4, 3)
    agg.get("clip+trimmed_mean", f=1, tau=5.0, threads=2)(Y)
    assert seen == {"f": 1, "threads": 2}


def test_subset_rules_compose_with_pre_aggregations(X) -> None:
    for rule in ("mda", "smea", "caf"):
        assert rule in agg.available()["rules"]
        np.testing.assert_array_equal(agg.get(rule, f=2)(X), getattr(agg, rule)(X, 2))
        np.testing.assert_array_equal(
            agg.get(f"nnm+{rule}", f=2)(X), getattr(agg, rule)(agg.nnm(X, 2), 2)
        )
        np.testing.assert_array_equal(
            agg.get(f"bucketing+{rule}", s=2, f=1, seed=0)(X),
            getattr(agg, rule)(agg.bucketing(X, 2, 0), 1),
        )
    np.testing.assert_array_equal(
        agg.get("arc+caf", f=3, max_iter=5)(X), agg.caf(agg.arc(X, 3), 3, max_iter=5)
    )
    # The subset limit is reported with the failing stage.
    with pytest.raises(ValueError, match=r"stage 1 'mda'.*C\(30, 14\)") as e:
        agg.get("mda", f=14)(np.zeros((30, 2)))
    assert e.value.argument == "f"
