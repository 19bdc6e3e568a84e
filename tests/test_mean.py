from __future__ import annotations

import numpy as np
import pytest

import cyclad.aggregators as agg
from tests import _reference as ref
from tests.conftest import TOL


@pytest.mark.parametrize(("n", "D"), [(1, 1), (1, 7), (5, 1), (4, 97), (13, 10007)])
def test_mean_matches_reference(rng, dtype, threads, n, D) -> None:
    X = rng.standard_normal((n, D)).astype(dtype)
    out = agg.mean(X, threads=threads)
    assert out.dtype == dtype
    assert out.shape == (D,)
    np.testing.assert_allclose(out, ref.mean(X), **TOL[np.dtype(dtype)])


def test_mean_bit_identical_across_threads(rng, dtype) -> None:
    X = rng.standard_normal((9, 100_003)).astype(dtype)
    a = agg.mean(X, threads=1)
    for t in (2, 3, None):
        np.testing.assert_array_equal(agg.mean(X, threads=t), a)


def test_mean_does_not_modify_input(rng) -> None:
    X = rng.standard_normal((6, 50))
    before = X.copy()
    agg.mean(X)
    np.testing.assert_array_equal(X, before)
