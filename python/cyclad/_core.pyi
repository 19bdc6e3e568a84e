# Hand-written stub of the C++ extension (keep in sync with csrc/bindings.cpp).
from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

_has_openmp: bool

def hardware_threads() -> int: ...
def mean(x: NDArray[np.floating], threads: int = 0) -> NDArray[np.floating]: ...
def read_pass(buffer: object, threads: int = 0) -> int: ...

# compression
def wire_compress(
    x: NDArray[np.floating], kind: int, vcode: int, param: int, bucket: int, shared: bool,
    seed: int, scaled: bool, threads: int = 0,
) -> NDArray[np.uint8]: ...
def wire_decompress(
    payload: NDArray[np.uint8], kind: int, vcode: int, dim: int, param: int, bucket: int,
    shared: bool, seed: int, float64: bool, threads: int = 0,
) -> NDArray[np.floating]: ...
def wire_validate(
    payload: NDArray[np.uint8], kind: int, vcode: int, dim: int, param: int, bucket: int,
    shared: bool, threads: int = 0,
) -> None: ...
def wire_payload_size(
    kind: int, vcode: int, dim: int, param: int, bucket: int, shared: bool
) -> int: ...
def topk_indices(x: NDArray[np.floating], k: int, threads: int = 0) -> NDArray[np.int64]: ...
def randk_indices(dim: int, k: int, seed: int) -> NDArray[np.int64]: ...
