"""Outputs larger than the cache are written with streaming (non-temporal) stores.

The threshold is lowered to 0 here so that the streaming paths run on small inputs: they must
write exactly the bits the ordinary stores write, for any alignment of the output, any length
(whole cache lines, a head before the first aligned line, a tail) and any thread count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from cyclad import _core, aggregators, coding


@pytest.fixture
def streaming() -> Iterator[None]:
    previous = _core.stream_threshold(0)
    try:
        yield
    finally:
        _core.stream_threshold(previous)


def _unaligned_out(shape: tuple[int, int], dtype: Any, shift: int) -> np.ndarray:
    """A C-contiguous output whose start is `shift` elements past a 64-byte boundary."""
    n = shape[0] * shape[1]
    raw = np.empty(n + 64, dtype=dtype)
    start = (-raw.ctypes.data // raw.itemsize) % (64 // raw.itemsize) + shift
    out = raw[start : start + n].reshape(shape)
    assert out.ctypes.data % 64 == (shift * raw.itemsize) % 64
    return out


def _rows(dtype: Any, n: int = 9, d: int = 1037) -> np.ndarray:
    rng = np.random.default_rng(d)
    X = rng.standard_normal((n, d)).astype(dtype)
    X[2] *= 50.0  # a far row: clipped by clip and ARC, avoided by NNM
    return X


RULES: dict[str, Callable[[np.ndarray, np.ndarray | None, int], np.ndarray]] = {
    "clip": lambda X, out, t: _core.clip(X, 20.0, out, t),
    "arc": lambda X, out, t: _core.arc(X, 2, out, t),
    "nnm": lambda X, out, t: _core.nnm(X, 2, out, t),
}


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("shift", [0, 1, 3])
@pytest.mark.parametrize("d", [1, 15, 16, 1037, 40_003])
def test_streaming_writes_the_same_bits(
    rule: str, shift: int, d: int, dtype: Any, streaming: None
) -> None:
    X = _rows(dtype, d=d)
    _core.stream_threshold(1 << 62)
    want = RULES[rule](X, None, 1)
    _core.stream_threshold(0)
    for threads in (1, 2, 3):
        out = _unaligned_out(X.shape, X.dtype, shift)
        got = RULES[rule](X, out, threads)
        assert got is out or np.shares_memory(got, out)
        np.testing.assert_array_equal(out.view(f"u{X.itemsize}"), want.view(f"u{X.itemsize}"))
    np.testing.assert_array_equal(RULES[rule](X, None, 2), want)


@pytest.mark.parametrize("d", [7, 1037, 50_001])
def test_streaming_bucketing_and_encode_write_the_same_bits(
    d: int, dtype: Any, streaming: None
) -> None:
    X = _rows(dtype, d=d)
    assignment = (np.arange(9)[:, None] + np.arange(3)[None, :]) % 9
    weights = np.random.default_rng(2).standard_normal((9, 3)).astype(dtype)
    _core.stream_threshold(1 << 62)
    want_b = aggregators.bucketing(X, 2, seed=4)
    want_e = coding.encode(X, assignment, weights)
    _core.stream_threshold(0)
    for threads in (1, 2):
        np.testing.assert_array_equal(aggregators.bucketing(X, 2, seed=4, threads=threads), want_b)
        got_e = coding.encode(X, assignment, weights, threads=threads)
        np.testing.assert_array_equal(got_e, want_e)


def test_the_threshold_is_reported_and_restored() -> None:
    default = _core.stream_threshold()
    assert default >= 1 << 24
    assert _core.stream_threshold(123) == default
    assert _core.stream_threshold() == 123
    assert _core.stream_threshold(default) == 123
