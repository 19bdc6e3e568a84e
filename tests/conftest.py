from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    deadline=None,
    derandomize=True,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", deadline=None, max_examples=200)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

DTYPES = [np.float32, np.float64]
# Per-dtype tolerances when comparing with the NumPy references.
TOL = {
    np.dtype(np.float32): {"rtol": 2e-5, "atol": 2e-5},
    np.dtype(np.float64): {"rtol": 1e-12, "atol": 1e-12},
}


@pytest.fixture(scope="package")
def rng() -> np.random.Generator:
    return np.random.default_rng(np.random.PCG64DXSM(20260))


@pytest.fixture(params=DTYPES, ids=["f32", "f64"])
def dtype(request: pytest.FixtureRequest) -> type:
    return request.param


@pytest.fixture(params=[1, 2, None], ids=["t1", "t2", "tall"])
def threads(request: pytest.FixtureRequest) -> int | None:
    return request.param
