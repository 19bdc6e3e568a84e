"""Atheris target ``wire``: ``Message.from_bytes`` + ``decompress`` on arbitrary bytes.

The input is a whole message (the corpus is shared with tests/native/fuzz_wire.cpp). Contract
(DESIGN.md section 4): parsing either raises ValueError or returns a message that

* re-encodes to exactly the input bytes (one encoding per message), ``nbytes == len(data)``;
* decompresses (threads 1 and 2, bit-identical) to a ``(dim,)`` vector of ``msg.dtype``, the
  same as a hand-built copy of the message gives (which ``decompress`` validates first: the
  parsed message is not validated twice);
* decompresses through every compressor: the matching configuration gives the same vector,
  every other raises ValueError;
* for QSGD, sign, natural and TernGrad messages (validated finite norms / scales / window),
  decodes to a finite vector.

Nothing else may escape and no warning may be issued. ``Message.from_bytes`` is called as a
receiver calls it, with ``dim=`` (pinned to the header's D when that is at most 2^20, else to
2^20, so the mismatch must be rejected), and without ``dim=`` under a ``max_dim`` of 2^20: a
header claiming more (a 44-byte top-k message can claim D = 2^32 - 1) must be rejected before
anything is allocated, and an accepted message must parse the same either way.
"""

from __future__ import annotations

import dataclasses
import struct
import warnings

import numpy as np

from tests.fuzz._common import PropertyFailure, check

MAX_DIM = 1 << 20

comp = None  # cyclad.compression, imported by setup() under atheris instrumentation


def setup() -> None:
    global comp
    import cyclad.compression as c

    comp = c


def _compressors(msg):  # every configuration that could have produced a message of msg.dim
    c = comp
    return [
        c.Identity(),
        c.Sign(),
        c.TopK(k=max(1, msg.k)) if msg.k <= msg.dim else c.TopK(k=1),
        c.RandK(k=max(1, msg.k), shared=msg.shared) if msg.k <= msg.dim else c.RandK(k=1),
        c.QSGD(levels=max(1, msg.levels), bucket=max(1, msg.bucket))
        if 1 <= msg.levels <= 65535
        else c.QSGD(),
        c.Natural(),
        c.TernGrad(bucket=max(1, msg.bucket)),
    ]


def one_input(data: bytes) -> None:
    assert comp is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        D = struct.unpack_from("<Q", data, 8)[0] if len(data) >= 16 else 1
        dim = D if 1 <= D <= MAX_DIM else MAX_DIM
        # The bytes-like kinds from_bytes accepts, chosen by the input so runs are reproducible.
        kind = (data[-1] if data else 0) % 4
        arg = {
            0: bytes,
            1: bytearray,
            2: memoryview,
            3: lambda b: np.frombuffer(b, dtype=np.uint8),
        }[kind](data)
        try:
            free = comp.Message.from_bytes(data, max_dim=MAX_DIM, threads=1)
        except ValueError as exc:
            if not str(exc):
                msg = "from_bytes raised ValueError without a message"
                raise PropertyFailure(msg) from exc
            free = None
        if free is not None and free.dim > MAX_DIM:
            msg = f"from_bytes(max_dim={MAX_DIM}) accepted D={free.dim}"
            raise PropertyFailure(msg)
        try:
            msg = comp.Message.from_bytes(arg, dim=dim, threads=1)
        except ValueError as exc:
            if not str(exc):
                text = "from_bytes raised ValueError without a message"
                raise PropertyFailure(text) from exc
            if free is not None and free.dim == dim:
                text = "from_bytes rejects with dim= what it accepts without"
                raise PropertyFailure(text) from exc
            return
        if free is None or free.to_bytes() != msg.to_bytes():
            text = "from_bytes accepts with dim= what it rejects without"
            raise PropertyFailure(text)
        if msg.to_bytes() != bytes(data):
            text = "accepted message does not re-encode to its bytes"
            raise PropertyFailure(text)
        if msg.nbytes != len(data):
            text = f"nbytes={msg.nbytes} for {len(data)} bytes"
            raise PropertyFailure(text)
        out1 = comp.decompress(msg, threads=1)
        out2 = comp.decompress(msg, threads=2)
        if not isinstance(out1, np.ndarray) or out1.shape != (msg.dim,) or out1.dtype != msg.dtype:
            text = f"decompress gave {type(out1)} {getattr(out1, 'shape', '')}"
            raise PropertyFailure(text)
        if out1.tobytes() != out2.tobytes():
            text = "decompress differs between threads=1 and threads=2"
            raise PropertyFailure(text)
        # The parsed message is decoded without a second validation pass; a hand-built copy of
        # it is validated by decompress and must decode to the same vector.
        copy = comp.Message(*(getattr(msg, f.name) for f in dataclasses.fields(msg)))
        if comp.decompress(copy, threads=1).tobytes() != out1.tobytes():
            text = "a validated copy decodes differently from the parsed message"
            raise PropertyFailure(text)
        if msg.kind in ("qsgd", "sign", "natural", "terngrad"):
            bad = ~np.isfinite(out1)
            if bad.any():
                check(
                    False,
                    "decode-overflow",
                    f"{msg!r} (validated finite norms/scales) decoded to "
                    f"{out1[bad][0]} at coordinate {int(np.argmax(bad))}",
                )
        for c in _compressors(msg):
            try:
                c.check_message(msg)
            except ValueError:
                try:
                    c.decompress(msg)
                except ValueError:
                    continue
                text = f"{c!r} decompressed a message it rejects: {msg!r}"
                raise PropertyFailure(text) from None
            got = c.decompress(msg, threads=1)
            if got.tobytes() != out1.tobytes():
                text = f"{c!r}.decompress differs from decompress for {msg!r}"
                raise PropertyFailure(text)
