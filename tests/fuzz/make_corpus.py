"""Regenerate the committed seed corpora under tests/fuzz/corpus/.

    python -m tests.fuzz.make_corpus

* ``wire/``: valid messages of every compressor, value dtype and dense dtype at small D, plus
  boundary cases (D = 1, k = D, s = 2^w - 1, one bucket per coordinate). Shared by the atheris
  wire target and the native wire target (tests/native/fuzz_wire.cpp).
* ``coding/``, ``aggregators/``: inputs of the structured atheris targets (each byte string is
  a sequence of choices, see the targets); deterministic pseudo-random seeds of a few lengths.
* ``native_kernels/``: 24-byte+ choice headers for tests/native/fuzz_kernels.cpp, one per op,
  dtype and thread count.

Every file is small (< 2 KB); the fuzzers add their own discoveries to a scratch directory,
never here.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import numpy as np

import cyclad.compression as comp

ROOT = Path(__file__).resolve().parent / "corpus"


def _write(sub: str, blobs: list[bytes]) -> int:
    d = ROOT / sub
    d.mkdir(parents=True, exist_ok=True)
    for old in d.glob("*"):
        old.unlink()
    seen = set()
    for b in blobs:
        h = hashlib.sha1(b).hexdigest()[:16]
        if h in seen:
            continue
        seen.add(h)
        (d / h).write_bytes(b)
    return len(seen)


def wire_seeds() -> list[bytes]:
    rng = np.random.default_rng(2026)
    out: list[bytes] = []
    for D in (1, 2, 7, 9, 13, 64, 200):
        for dtype in (np.float32, np.float64):
            x = rng.standard_normal(D).astype(dtype)
            x[0] = -x[0] if D > 1 else x[0]
            for vdt in (None, "float16", "float32", "float64"):
                cs = [
                    comp.Identity(value_dtype=vdt),
                    comp.TopK(k=max(1, D // 4), value_dtype=vdt),
                    comp.TopK(k=D, value_dtype=vdt),
                    comp.RandK(k=max(1, D // 3), value_dtype=vdt),
                    comp.RandK(k=max(1, D // 3), shared=True, value_dtype=vdt),
                    comp.QSGD(levels=5, bucket=7, value_dtype=vdt),
                    comp.QSGD(levels=1, value_dtype=vdt),
                    comp.QSGD(levels=15, bucket=1, value_dtype=vdt),
                    comp.QSGD(levels=65535, bucket=3, value_dtype=vdt),
                    comp.Sign(value_dtype=vdt),
                    comp.Sign(scaled=False, value_dtype=vdt),
                ]
                if D > 64 and vdt not in (None, "float32"):
                    cs = cs[1:]  # keep the files small
                for c in cs:
                    out.append(c.compress(x, seed=int(rng.integers(1 << 62))).to_bytes())
    # Non-finite raw values travel in identity / top-k / rand-k messages.
    x = np.array([np.nan, np.inf, -np.inf, 1.0, -0.0], dtype=np.float32)
    for c in (comp.Identity(), comp.TopK(k=3), comp.RandK(k=2)):
        out.append(c.compress(x, seed=5).to_bytes())
    # A header that claims a huge D with a tiny payload (k = 1): valid, and decoding it would
    # allocate D elements, so the targets pin dim=.
    head = struct.pack("<2sBBBBBBQQ", b"CZ", 1, 1, 1, 2, 0, 0, 2**32 - 1, 1)
    out.append(head + bytes(4) + struct.pack("<f", 1.0))
    # Natural compression and TernGrad (their own stream, so the seeds above stay as they were),
    # with vectors spanning more than the natural window and float32 subnormals.
    rng = np.random.default_rng(2027)
    for D in (1, 2, 7, 9, 13, 64, 200):
        for dtype in (np.float32, np.float64):
            hi = 30 if dtype == np.float32 else 120
            x = (rng.standard_normal(D) * 10.0 ** rng.uniform(-hi, hi, D)).astype(dtype)
            cs = [comp.Natural(), comp.TernGrad(), comp.TernGrad(bucket=1)]
            cs += [
                comp.TernGrad(bucket=5, value_dtype=v) for v in ("float16", "float32", "float64")
            ]
            for c in cs:
                if c.kind == "terngrad" and c.value_dtype is not None:
                    x16 = np.clip(x, -6e4, 6e4).astype(dtype)
                    out.append(c.compress(x16, seed=int(rng.integers(1 << 62))).to_bytes())
                    continue
                out.append(c.compress(x, seed=int(rng.integers(1 << 62))).to_bytes())
    sub = np.array([1e-45, -3e-44, 2e-40, 0.0, -0.0], dtype=np.float32)
    out.append(comp.Natural().compress(sub, seed=1).to_bytes())
    return out


def choice_seeds(tag: str, count: int, lengths: tuple[int, ...]) -> list[bytes]:
    out = []
    for i in range(count):
        n = lengths[i % len(lengths)]
        h = b""
        j = 0
        while len(h) < n:
            h += hashlib.sha256(f"{tag}:{i}:{j}".encode()).digest()
            j += 1
        out.append(h[:n])
    return out


def native_kernel_seeds() -> list[bytes]:
    out = []
    shapes = [(1, 1), (3, 5), (7, 31), (20, 97), (33, 8), (2, 8193), (1025, 2)]
    for op in range(16):
        for flags in (0, 1, 2, 3, 5, 14):
            for si, (n, d) in enumerate(shapes):
                if (op + flags + si) % 3:
                    continue
                p = max(0, (n - 1) // 4)
                b = struct.pack(
                    "<BBHIBBHBBHQ",
                    op,
                    flags,
                    n - 1,
                    d - 1,
                    min(p, 255),
                    si % 6,
                    p,
                    (op + si) % 12,
                    si % 2,
                    op * 17 + flags,
                    op * 1000 + flags * 10 + si,
                )
                out.append(b + bytes([si, 3, 0, 0, 0, 0, 0, 0]))
    return out


def main() -> None:
    print("wire:", _write("wire", wire_seeds()))
    print("coding:", _write("coding", choice_seeds("coding", 24, (16, 48, 96, 200))))
    print("aggregators:", _write("aggregators", choice_seeds("agg", 48, (16, 48, 96, 200))))
    print("native_kernels:", _write("native_kernels", native_kernel_seeds()))


if __name__ == "__main__":
    main()
