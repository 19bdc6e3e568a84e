"""Obviously-correct NumPy reference implementations of every kernel (slow, readable)."""

from __future__ import annotations

import numpy as np

# --------------------------------------------------------------------------------------------
# aggregators: coordinate-wise
# --------------------------------------------------------------------------------------------


def mean(X: np.ndarray) -> np.ndarray:
    return X.mean(axis=0, dtype=np.float64).astype(X.dtype)


# --------------------------------------------------------------------------------------------
# aggregators: distance-based and pre-aggregations
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# coding
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# compression
# --------------------------------------------------------------------------------------------

_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_STREAM_RANDK, _STREAM_QSGD = 1, 2


def _mix64_int(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def stream_key(seed: int, stream: int) -> int:
    return _mix64_int(seed ^ _mix64_int((stream * _GOLDEN) & _M64))


def random_at(key: int, counter: np.ndarray) -> np.ndarray:
    """splitmix64 output number `counter` of the stream `key` (vectorised, uint64 wrap-around)."""
    with np.errstate(over="ignore"):
        z = np.uint64(key) + (counter.astype(np.uint64) + np.uint64(1)) * np.uint64(_GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def magnitude_key(x: np.ndarray) -> np.ndarray:
    """|x| as an order-preserving int64 key; every NaN equal and above +Inf."""
    if x.dtype == np.float32:
        k = (x.view(np.uint32) & np.uint32(0x7FFFFFFF)).astype(np.int64)
        return np.minimum(k, 0x7F800001)
    k = (x.view(np.uint64) & np.uint64(0x7FFFFFFFFFFFFFFF)).astype(np.int64)
    return np.minimum(k, 0x7FF0000000000001)


def topk_indices(x: np.ndarray, k: int) -> np.ndarray:
    """Argsort top-k: larger magnitude first, NaN largest, ties -> lower index; ascending out."""
    order = np.lexsort((np.arange(x.size), -magnitude_key(x)))
    return np.sort(order[:k])


def randk_indices(D: int, k: int, seed: int) -> np.ndarray:
    """Floyd's k-subset with the counter-based stream (slow Python loop over k)."""
    key = stream_key(seed, _STREAM_RANDK)
    if k == D:
        return np.arange(D)
    chosen: set[int] = set()
    js = np.arange(D - k, D)
    hs = random_at(key, js)
    for j, h in zip(js.tolist(), hs.tolist(), strict=False):
        t = (h * (j + 1)) >> 64
        chosen.add(j if t in chosen else t)
    return np.array(sorted(chosen), dtype=np.int64)


def qsgd_levels(x: np.ndarray, norms: np.ndarray, s: int, bucket: int, seed: int):
    """QSGD levels and signs with the kernel's stream and arithmetic, given the stored norms.

    r = min(|x| * T(s / norm), s) in the input dtype, level = floor(r) + [u < r - floor(r)],
    u = 24-bit (float32) or 53-bit (float64) uniform of coordinate i."""
    D = x.size
    dt = x.dtype.type
    b_of = np.arange(D) // bucket
    nrm = norms.astype(np.float64)[b_of]
    with np.errstate(divide="ignore"):
        inv = np.where(nrm > 0, s / np.where(nrm > 0, nrm, 1.0), 0.0).astype(dt)
    r = np.minimum(np.abs(x) * inv, dt(s))
    li = np.floor(r)
    p = r - li
    h = random_at(stream_key(seed, _STREAM_QSGD), np.arange(D))
    if dt is np.float32:
        u = (h >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-24)
    else:
        u = (h >> np.uint64(11)).astype(np.float64) * 2.0**-53
    levels = li.astype(np.int64) + (u < p)
    signs = np.signbit(x).astype(np.int64)
    return levels, signs


def qsgd_decompress(levels, signs, norms, s, bucket, dtype):
    D = levels.size
    scale = norms.astype(np.float64)[np.arange(D) // bucket] / s
    v = (levels * scale).astype(dtype)
    return np.where(signs == 1, -v, v)


def pack_bits(values: np.ndarray, w: int) -> bytes:
    """LSB-first fixed-width packing: element j in bits [j*w, (j+1)*w), zero padded."""
    v = np.asarray(values, dtype=np.uint64)
    bits = ((v[:, None] >> np.arange(w, dtype=np.uint64)) & np.uint64(1)).astype(np.uint8)
    return np.packbits(bits.ravel(), bitorder="little").tobytes()


def unpack_bits(data: bytes, n: int, w: int) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")[: n * w]
    return (bits.reshape(n, w).astype(np.int64) << np.arange(w)).sum(axis=1)


def payload_size(kind: str, D: int, k: int = 0, s: int = 0, bucket: int = 0,
                 vb: int = 4, shared: bool = False) -> int:
    """The documented payload-size formulas (module docstring of cyclad.compression)."""
    wi = max(1, (D - 1).bit_length())
    if kind == "identity":
        return D * vb
    if kind == "topk" or (kind == "randk" and not shared):
        return -(-k * wi // 8) + k * vb
    if kind == "randk":
        return k * vb
    if kind == "qsgd":
        return -(-D // bucket) * vb + -(-D // 8) + -(-D * s.bit_length() // 8)
    return vb + -(-D // 8)  # sign
