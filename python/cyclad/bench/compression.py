# ruff: noqa: B023  (the timed closures run inside the loop iteration that defines them)
"""Bench area ``compression``: compress / decompress kernels against NumPy (and torch.topk).

Every record carries the compression ratio ``nbytes / (4 D)`` (bytes sent over the bytes of a
float32 vector) in ``extra["ratio"]``; baselines are timed in the same process on the same data.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

import cyclad.compression as comp
from cyclad import _core
from cyclad.bench._harness import Record, best_time, read_pass_time

AREA = "compression"


# --------------------------------------------------------------------------------------------
# NumPy baselines (vectorised, what a user would write)
# --------------------------------------------------------------------------------------------


def np_topk(x: np.ndarray, k: int) -> np.ndarray:
    idx = np.argpartition(np.abs(x), -k)[-k:]
    return np.concatenate([idx.astype(np.uint32).view(np.uint8), x[idx].view(np.uint8)])


def np_randk(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    idx = np.sort(rng.choice(x.size, k, replace=False))
    return np.concatenate([idx.astype(np.uint32).view(np.uint8), x[idx].view(np.uint8)])


def np_qsgd(x: np.ndarray, s: int, bucket: int, rng: np.random.Generator) -> bytes:
    d = x.size
    pad = (-d) % bucket
    xb = np.concatenate([x, np.zeros(pad, x.dtype)]).reshape(-1, bucket)
    norms = np.sqrt(np.einsum("ij,ij->i", xb, xb))
    safe = np.where(norms > 0, norms, 1)
    r = np.abs(xb) * (s / safe)[:, None]
    lo = np.floor(r)
    lev = (lo + (rng.random(xb.shape, dtype=np.float32) < (r - lo))).astype(np.uint16)
    w = s.bit_length()
    bits = ((lev.ravel()[:d, None] >> np.arange(w, dtype=np.uint16)) & 1).astype(np.uint8)
    out: bytes = (
        norms.astype(np.float32).tobytes()
        + np.packbits(x < 0).tobytes()
        + np.packbits(bits.ravel(), bitorder="little").tobytes()
    )
    return out


def np_sign(x: np.ndarray) -> bytes:
    scale = np.float32(np.abs(x).mean(dtype=np.float64))
    return scale.tobytes() + np.packbits(x < 0, bitorder="little").tobytes()


def np_sign_decompress(b: bytes, d: int) -> np.ndarray:
    scale = np.frombuffer(b[:4], np.float32)[0]
    bits = np.unpackbits(np.frombuffer(b[4:], np.uint8), bitorder="little")[:d]
    out: np.ndarray = scale * (1 - 2 * bits.astype(np.float32))
    return out


def np_sparse_decompress(idx: np.ndarray, vals: np.ndarray, d: int) -> np.ndarray:
    out = np.zeros(d, np.float32)
    out[idx] = vals
    return out


# --------------------------------------------------------------------------------------------


def _torch_topk(x: np.ndarray, k: int) -> Callable[[], Any] | None:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return None
    t = torch.from_numpy(x)

    def run() -> Any:
        return torch.topk(t.abs(), k, sorted=False)

    return run


def _threads_list() -> list[int]:
    hw = int(_core.hardware_threads())
    return [1] if hw == 1 else [1, hw]


def run(quick: bool) -> list[Record]:
    """Time every compressor at D in {1e6, 1e7} (quick: 1e5), threads in {1, all}."""
    sizes = [100_000] if quick else [1_000_000, 10_000_000]
    kw: dict[str, Any] = {"repeat": 2, "min_total": 0.05} if quick else {"repeat": 5}
    rng = np.random.default_rng(0)
    records: list[Record] = []
    for d in sizes:
        x = rng.standard_normal(d).astype(np.float32)
        nbytes = x.nbytes
        cases: list[
            tuple[
                str,
                comp.Compressor,
                dict[str, Any],
                Callable[[], Any] | None,
                Callable[[], Any] | None,
            ]
        ] = []
        for ratio in (0.01, 0.001):
            k = max(1, round(ratio * d))
            cases.append(
                (
                    "topk",
                    comp.TopK(ratio=ratio),
                    {"D": d, "ratio": ratio},
                    partial(np_topk, x, k),
                    _torch_topk(x, k),
                )
            )
        k = max(1, round(0.01 * d))
        cases.append(
            (
                "randk",
                comp.RandK(ratio=0.01),
                {"D": d, "ratio": 0.01},
                partial(np_randk, x, k, rng),
                None,
            )
        )
        cases.append(
            (
                "randk-shared",
                comp.RandK(ratio=0.01, shared=True),
                {"D": d, "ratio": 0.01},
                partial(np_randk, x, k, rng),
                None,
            )
        )
        for s in (4, 16):
            cases.append(
                (
                    "qsgd",
                    comp.QSGD(levels=s, bucket=512),
                    {"D": d, "s": s, "bucket": 512},
                    partial(np_qsgd, x, s, 512, rng),
                    None,
                )
            )
        cases.append(("sign", comp.Sign(), {"D": d}, partial(np_sign, x), None))
        np_sign_bytes = np_sign(x)
        for t in _threads_list():
            rp = read_pass_time(x, threads=t, **kw)
            for name, c, params, np_fn, torch_fn in cases:
                msg = c.compress(x, seed=1, threads=t)
                ratio_bytes = msg.nbytes / (4 * d)
                sec = best_time(partial(c.compress, x, seed=1, threads=t), **kw)
                base: dict[str, float] = {}
                if np_fn is not None:
                    base["numpy"] = best_time(np_fn, **kw)
                if torch_fn is not None:
                    base["torch"] = best_time(torch_fn, **kw)
                records.append(
                    Record(
                        AREA,
                        f"{name} compress",
                        params,
                        t,
                        sec,
                        nbytes,
                        rp,
                        base,
                        {"ratio": round(ratio_bytes, 5), "bytes": msg.nbytes},
                    )
                )
                dsec = best_time(partial(c.decompress, msg, threads=t), **kw)
                dbase: dict[str, float] = {}
                if name == "sign":
                    dbase["numpy"] = best_time(lambda: np_sign_decompress(np_sign_bytes, d), **kw)
                elif name.startswith(("topk", "randk")):
                    idx = np.sort(rng.choice(d, msg.k, replace=False))
                    vals = x[idx]
                    dbase["numpy"] = best_time(lambda: np_sparse_decompress(idx, vals, d), **kw)
                records.append(
                    Record(
                        AREA,
                        f"{name} decompress",
                        params,
                        t,
                        dsec,
                        nbytes,
                        rp,
                        dbase,
                        {"ratio": round(ratio_bytes, 5)},
                    )
                )
    return records
