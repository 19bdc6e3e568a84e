# Hand-written stub of the C++ extension (keep in sync with csrc/bindings.cpp).

from typing import Any

import numpy as np
from numpy.typing import NDArray

_has_openmp: bool

def hardware_threads() -> int: ...
def isa_path() -> str: ...
def best_isa() -> str: ...
def set_isa(name: str) -> str: ...
def stream_threshold(bytes: int | None = None) -> int: ...
def fma_peak(threads: int = 0, seconds: float = 0.2) -> float: ...
def mean(x: NDArray[np.floating], threads: int = 0) -> NDArray[np.floating]: ...
def median(x: NDArray[np.floating], threads: int = 0) -> NDArray[np.floating]: ...
def trimmed_mean(x: NDArray[np.floating], f: int, threads: int = 0) -> NDArray[np.floating]: ...
def meamed(x: NDArray[np.floating], f: int, threads: int = 0) -> NDArray[np.floating]: ...
def encode(
    G: NDArray[np.floating],
    assignment: NDArray[np.int64],
    weights: NDArray[np.floating],
    out: NDArray[np.floating] | None = None,
    threads: int = 0,
) -> NDArray[np.floating]: ...
def read_pass(buffer: object, threads: int = 0) -> int: ...
def copy_pass(src: object, dst: object, threads: int = 0) -> None: ...

# distance-based rules and pre-aggregations
def pairwise_sq_distances(
    x: NDArray[np.floating], threads: int = 0
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]: ...
def krum(x: NDArray[np.floating], q: int, threads: int = 0) -> NDArray[np.floating]: ...
def multi_krum(
    x: NDArray[np.floating],
    q: int,
    m: int,
    weights: NDArray[np.floating] | None = None,
    threads: int = 0,
) -> NDArray[np.floating]: ...
def geometric_median(
    x: NDArray[np.floating],
    eps: float,
    max_iter: int,
    tol: float,
    start: str = "medoid",
    threads: int = 0,
) -> tuple[NDArray[np.floating], int]: ...
def centered_clipping(
    x: NDArray[np.floating],
    tau: float,
    iters: int,
    center: NDArray[np.floating] | None,
    threads: int = 0,
) -> NDArray[np.floating]: ...
def nnm(
    x: NDArray[np.floating],
    f: int,
    out: NDArray[np.floating] | None = None,
    threads: int = 0,
) -> NDArray[np.floating]: ...
def bucketing(
    x: NDArray[np.floating], perm: NDArray[np.int64], s: int, threads: int = 0
) -> NDArray[np.floating]: ...
def clip(
    x: NDArray[np.floating],
    tau: float,
    out: NDArray[np.floating] | None = None,
    threads: int = 0,
) -> NDArray[np.floating]: ...
def arc(
    x: NDArray[np.floating],
    f: int,
    out: NDArray[np.floating] | None = None,
    threads: int = 0,
) -> NDArray[np.floating]: ...

# weighted mean, closest-to-reference averaging, Bulyan
def weighted_mean(
    x: NDArray[np.floating], weights: NDArray[np.floating], threads: int = 0
) -> NDArray[np.floating]: ...
def closest(
    x: NDArray[np.floating], reference: NDArray[np.floating], beta: int, threads: int = 0
) -> NDArray[np.floating]: ...
def closest_coordinates(
    x: NDArray[np.floating], reference: NDArray[np.floating], beta: int, threads: int = 0
) -> NDArray[np.floating]: ...
def bulyan(
    x: NDArray[np.floating],
    f: int,
    selection: str = "iterated",
    neighbors: str = "blanchard",
    threads: int = 0,
) -> NDArray[np.floating]: ...

# subset search and filtering: MDA and SMEA search at most max_subsets = C(n, f) subsets
max_subsets: int

def mda(
    x: NDArray[np.floating], f: int, threads: int = 0
) -> tuple[NDArray[np.floating], NDArray[np.int64]]: ...
def smea(
    x: NDArray[np.floating], f: int, threads: int = 0
) -> tuple[NDArray[np.floating], NDArray[np.int64]]: ...
def caf(
    x: NDArray[np.floating], f: int, max_iter: int, threads: int = 0
) -> tuple[NDArray[np.floating], int]: ...

# compression (the wire format: docs/wire-format.md)
wire_format: dict[str, Any]  # codes and limits: magic, version, kinds, dtypes, max_dim, ...

def wire_compress(
    x: NDArray[np.floating],
    kind: int,
    vcode: int,
    param: int,
    bucket: int,
    shared: bool,
    seed: int,
    scaled: bool,
    threads: int = 0,
) -> NDArray[np.uint8]: ...
def wire_header(
    kind: int,
    dense: int,
    vcode: int,
    dim: int,
    param: int,
    bucket: int,
    shared: bool,
    seed: int,
) -> bytes: ...
def wire_header_size(kind: int, shared: bool) -> int: ...
def wire_parse(
    data: bytes, dim: int = 0, max_dim: int = 0, dense: int = 0, threads: int = 0
) -> tuple[int, int, int, int, int, int, bool, int, int]: ...
def wire_decompress(
    payload: NDArray[np.uint8],
    kind: int,
    vcode: int,
    dim: int,
    param: int,
    bucket: int,
    shared: bool,
    seed: int,
    float64: bool,
    threads: int = 0,
) -> NDArray[np.floating]: ...
def wire_decode(
    payload: NDArray[np.uint8],
    kind: int,
    vcode: int,
    dim: int,
    param: int,
    bucket: int,
    shared: bool,
    seed: int,
    float64: bool,
    threads: int = 0,
) -> NDArray[np.floating]: ...
def wire_payload_size(
    kind: int, vcode: int, dim: int, param: int, bucket: int, shared: bool
) -> int: ...
def topk_indices(x: NDArray[np.floating], k: int, threads: int = 0) -> NDArray[np.int64]: ...
def randk_indices(dim: int, k: int, seed: int) -> NDArray[np.int64]: ...
def sign_majority(
    sections: list[NDArray[np.uint8]], dim: int, float64: bool, threads: int = 0
) -> NDArray[np.floating]: ...
