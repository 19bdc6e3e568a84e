# ruff: noqa: B023  (the timed closures run inside the loop iteration that defines them)
"""Bench area ``compression``: compress / decompress kernels against NumPy (and torch.topk),
at D in {1e6, 1e7} (``--quick``: 1e5), float32, threads in {1, all}; and the signSGD majority
vote of n = 20 sign messages against NumPy's unpackbits-and-sum.

Every record carries the compression ratio ``nbytes / (4 D)`` (bytes sent over the bytes of a
float32 vector) in ``extra["ratio"]``; baselines are timed in the same process on the same data.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

import cyclad.compression as comp
from cyclad.bench._harness import (
    Record,
    Report,
    Settings,
    Timing,
    grouped_tables,
    load_torch,
    measure,
    peers,
    read_pass,
    set_efficiency,
    thread_counts,
)

AREA = "compression"
SIZES = {"full": (10**6, 10**7), "quick": (10**5,), "tiny": (2000,)}


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


def np_natural(x: np.ndarray, rng: np.random.Generator) -> bytes:
    """Stochastic rounding to a power of two: sign bits and the float32 exponent bytes."""
    m, e = np.frexp(np.abs(x))  # |x| = m 2^e, m in [0.5, 1)
    up = rng.random(x.size, dtype=np.float32) < (2 * m - 1)
    code = np.where(m > 0, e - 1 + up + 127, 0).astype(np.uint8)
    return np.packbits(np.signbit(x), bitorder="little").tobytes() + code.tobytes()


def np_natural_decompress(b: bytes, d: int) -> np.ndarray:
    nb = -(-d // 8)
    signs = np.unpackbits(np.frombuffer(b[:nb], np.uint8), bitorder="little")[:d]
    code = np.frombuffer(b[nb:], np.uint8).astype(np.int32)
    v = np.where(code > 0, np.ldexp(np.float32(1), code - 127), np.float32(0))
    out: np.ndarray = np.where(signs == 1, -v, v).astype(np.float32)
    return out


def np_terngrad(x: np.ndarray, rng: np.random.Generator) -> bytes:
    """One scale max|x|, a Bernoulli(|x|/s) mask and signs, packed 2 bits a value."""
    s = np.abs(x).max()
    nz = rng.random(x.size, dtype=np.float32) < np.abs(x) / (s if s > 0 else 1)
    code = nz.astype(np.uint8) | ((nz & (x < 0)).astype(np.uint8) << 1)
    pad = np.concatenate([code, np.zeros((-x.size) % 4, np.uint8)]).reshape(-1, 4)
    packed = pad[:, 0] | pad[:, 1] << 2 | pad[:, 2] << 4 | pad[:, 3] << 6
    out: bytes = np.float32(s).tobytes() + packed.astype(np.uint8).tobytes()
    return out


def np_majority(sections: list[np.ndarray], d: int) -> np.ndarray:
    """sign(sum sign) from packed sign bits: unpack every message, count, compare."""
    neg = np.zeros(d, np.int32)
    for sec in sections:
        neg += np.unpackbits(sec, bitorder="little")[:d]
    n = len(sections)
    out: np.ndarray = np.sign(n - 2 * neg).astype(np.float32)
    return out


def np_sparse_decompress(idx: np.ndarray, vals: np.ndarray, d: int) -> np.ndarray:
    out = np.zeros(d, np.float32)
    out[idx] = vals
    return out


# --------------------------------------------------------------------------------------------


def _torch_topk(x: np.ndarray, k: int, settings: Settings) -> Callable[[], Any] | None:
    torch = load_torch() if "torch" in settings.baselines else None
    if torch is None:
        return None
    t = torch.from_numpy(x)

    def run() -> Any:
        return torch.topk(t.abs(), k, sorted=False)

    return run


def run(settings: Settings) -> Report:
    """Time every compressor at the mode's sizes, threads in {1, all}."""
    budget = settings.budget
    notes: list[str] = []
    peers(settings, notes, ("torch",))
    use_numpy = "numpy" in settings.baselines
    rng = np.random.default_rng(0)
    records: list[Record] = []
    for d in SIZES[settings.mode]:
        settings.say(f"compression: D={d}")
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
                    _torch_topk(x, k, settings),
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
        cases.append(("natural", comp.Natural(), {"D": d}, partial(np_natural, x, rng), None))
        cases.append(("terngrad", comp.TernGrad(), {"D": d}, partial(np_terngrad, x, rng), None))
        cases.append(("terngrad", comp.TernGrad(bucket=512), {"D": d, "bucket": 512}, None, None))
        np_sign_bytes = np_sign(x)
        np_natural_bytes = np_natural(x, rng)
        voters = 20
        V = rng.standard_normal((voters, d)).astype(np.float32)
        votes = [comp.Sign().compress(v, threads=1) for v in V]
        sections = [m.payload[4:] for m in votes]
        packed = np.concatenate(sections)
        torch = load_torch() if "torch" in settings.baselines else None
        for t in thread_counts():
            rp = read_pass(x, t, budget)
            if torch is not None:
                torch.set_num_threads(t)  # torch.topk on as many threads as the kernel
            for name, c, params, np_fn, torch_fn in cases:
                msg = c.compress(x, seed=1, threads=t)
                ratio_bytes = msg.nbytes / (4 * d)
                sec = measure(partial(c.compress, x, seed=1, threads=t), budget)
                base: dict[str, Timing] = {}
                if np_fn is not None and use_numpy:
                    base["numpy"] = measure(np_fn, budget)
                if torch_fn is not None:
                    base["torch"] = measure(torch_fn, budget)
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
                dsec = measure(partial(c.decompress, msg, threads=t), budget)
                dbase: dict[str, Timing] = {}
                if use_numpy and name == "sign":
                    dbase["numpy"] = measure(lambda: np_sign_decompress(np_sign_bytes, d), budget)
                elif use_numpy and name == "natural":
                    dbase["numpy"] = measure(
                        lambda: np_natural_decompress(np_natural_bytes, d), budget
                    )
                elif use_numpy and name.startswith(("topk", "randk")):
                    idx = np.sort(rng.choice(d, msg.k, replace=False))
                    vals = x[idx]
                    dbase["numpy"] = measure(lambda: np_sparse_decompress(idx, vals, d), budget)
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
            # signSGD majority vote: reads n * D/8 bytes of sign bits, writes D floats
            vsec = measure(partial(comp.majority_vote, votes, threads=t), budget)
            vbase: dict[str, Timing] = {}
            if use_numpy:
                vbase["numpy"] = measure(partial(np_majority, sections, d), budget)
            records.append(
                Record(
                    AREA,
                    "sign majority vote",
                    {"D": d, "n": voters},
                    t,
                    vsec,
                    int(packed.nbytes),
                    read_pass(packed, t, budget),
                    vbase,
                    {"ratio": round(sections[0].nbytes / (4 * d), 5)},
                )
            )
    set_efficiency(records)
    return Report(AREA, settings.mode, records, grouped_tables(records), notes)
