# Hand-written stub of the C++ extension (keep in sync with csrc/bindings.cpp).
from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

_has_openmp: bool

def hardware_threads() -> int: ...
def mean(x: NDArray[np.floating], threads: int = 0) -> NDArray[np.floating]: ...
def encode(
    G: NDArray[np.floating],
    assignment: NDArray[np.int64],
    weights: NDArray[np.floating],
    threads: int = 0,
) -> NDArray[np.floating]: ...
def read_pass(buffer: object, threads: int = 0) -> int: ...
