"""Array layouts the tests and fuzz targets feed to the API."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from cyclad import ArgumentError, ArgumentTypeError


def misaligned(a: np.ndarray, offset: int = 1) -> np.ndarray:
    """A writable, C-contiguous copy of ``a`` whose data starts ``offset`` bytes into a fresh
    buffer (for elements wider than ``offset`` bytes, an address that is not a multiple of the
    element size)."""
    buf = bytearray(a.nbytes + offset)
    out = np.frombuffer(buf, dtype=a.dtype, count=a.size, offset=offset).reshape(a.shape)
    out[...] = a
    return out


def assert_out_checked(call: Callable[[Any], Any], x: np.ndarray, shape: tuple[int, ...]) -> None:
    """``call(out)`` must reject every unusable ``out`` for an input ``x`` and a result of
    ``shape`` (the checks of ``_validation.check_out``) with an error naming ``out``."""
    import pytest  # here: the fuzz targets import this module without pytest

    readonly = np.zeros(shape, x.dtype)
    readonly.flags.writeable = False
    other = np.float32 if x.dtype == np.float64 else np.float64
    bad = {
        "dtype": np.zeros(shape, other),
        "shape": np.zeros((shape[0], shape[1] + 1), x.dtype),
        "C-contiguous": np.zeros(shape[::-1], x.dtype).T,
        "writable": readonly,
        "share memory": x,
    }
    for what, out in bad.items():
        with pytest.raises((ArgumentError, ArgumentTypeError), match=what) as e:
            call(out)
        assert e.value.argument == "out"
