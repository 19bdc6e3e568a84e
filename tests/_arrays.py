"""Array layouts the tests and fuzz targets feed to the API."""

from __future__ import annotations

import numpy as np


def misaligned(a: np.ndarray, offset: int = 1) -> np.ndarray:
    """A writable, C-contiguous copy of ``a`` whose data starts ``offset`` bytes into a fresh
    buffer (for elements wider than ``offset`` bytes, an address that is not a multiple of the
    element size)."""
    buf = bytearray(a.nbytes + offset)
    out = np.frombuffer(buf, dtype=a.dtype, count=a.size, offset=offset).reshape(a.shape)
    out[...] = a
    return out
