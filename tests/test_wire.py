from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cyclad.compression as comp
from tests import _reference as ref

VDTS = ["float16", "float32", "float64"]
VB = {"float16": 2, "float32": 4, "float64": 8}


def make(kind: str, D: int, vdt: str | None) -> comp.Compressor:
    k = max(1, D // 4)
    return {
        "topk": lambda: comp.TopK(k=k, value_dtype=vdt),
        "topk-all": lambda: comp.TopK(k=D, value_dtype=vdt),
        "randk": lambda: comp.RandK(k=k, value_dtype=vdt),
        "randk-shared": lambda: comp.RandK(k=k, shared=True, value_dtype=vdt),
        "qsgd": lambda: comp.QSGD(levels=5, bucket=7, value_dtype=vdt),
        "qsgd-1": lambda: comp.QSGD(levels=1, value_dtype=vdt),
        "sign": lambda: comp.Sign(value_dtype=vdt),
        "identity": lambda: comp.Identity(value_dtype=vdt),
    }[kind]()


KINDS = ["topk", "topk-all", "randk", "randk-shared", "qsgd", "qsgd-1", "sign", "identity"]


def sample_messages() -> list[comp.Message]:
    rng = np.random.default_rng(0)
    out = []
    for kind in KINDS:
        for D in (1, 13):
            x = rng.standard_normal(D)
            out.append(make(kind, D, "float32").compress(x, seed=3))
    return out


MESSAGES = sample_messages()


def accept_or_value_error(b: bytes) -> None:
    """The contract for arbitrary bytes: parse + decompress cleanly, or ValueError."""
    try:
        m = comp.Message.from_bytes(b)
    except ValueError:
        return
    out = comp.decompress(m)
    assert out.shape == (m.dim,)
    assert m.to_bytes() == b  # canonical: one encoding per message


# --------------------------------------------------------------------------------------------
# round trips and sizes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("vdt", [None, *VDTS])
@pytest.mark.parametrize("D", [1, 2, 9, 1000])
def test_round_trip(kind, vdt, D, dtype) -> None:
    x = np.random.default_rng(D).standard_normal(D).astype(dtype)
    c = make(kind, D, vdt)
    msg = c.compress(x, seed=77)
    b = msg.to_bytes()
    assert msg.nbytes == len(b)
    back = comp.Message.from_bytes(b, dim=D)
    assert back == msg
    assert back.to_bytes() == b
    assert back.dtype == dtype
    assert back.value_dtype == (vdt or np.dtype(dtype).name)
    out = c.decompress(back)
    assert out.dtype == dtype
    assert out.shape == (D,)
    np.testing.assert_array_equal(out, c.decompress(msg))
    # the documented size formula
    vb = VB[msg.value_dtype]
    base = ref.payload_size(msg.kind, D, msg.k, msg.levels, msg.bucket, vb, msg.shared)
    header = {"identity": 16, "sign": 16, "topk": 24, "qsgd": 32}.get(
        msg.kind, 32 if msg.shared else 24)
    assert msg.nbytes == header + base
    if kind == "topk-all" and vdt in (None, "float64"):
        np.testing.assert_array_equal(out, x)


def test_layout_topk(dtype) -> None:
    x = (np.arange(1, 301) * np.where(np.arange(300) % 2, -1, 1)).astype(dtype)
    msg = comp.TopK(k=5).compress(x)
    b = msg.to_bytes()
    magic, ver, kind, dcode, vcode, flags, res, D, k = struct.unpack_from("<2sBBBBBBQQ", b)
    assert (magic, ver, kind, flags, res, D, k) == (b"CZ", 1, 1, 0, 0, 300, 5)
    assert dcode == (1 if dtype == np.float32 else 2)
    assert vcode == dcode + 1
    idx = np.arange(295, 300)
    wi = (300 - 1).bit_length()
    nidx = -(-5 * wi // 8)
    assert b[24:24 + nidx] == ref.pack_bits(idx, wi)
    assert b[24 + nidx:] == x[idx].tobytes()


def test_layout_qsgd_and_sign() -> None:
    x = np.array([3.0, -4.0, 0.0, 1e-3, -2.0], np.float32)
    msg = comp.QSGD(levels=3, bucket=2).compress(x, seed=1)
    b = msg.to_bytes()
    assert struct.unpack_from("<QQ", b, 16) == (3, 2)
    norms = np.frombuffer(b[32:44], np.float32)
    np.testing.assert_allclose(norms, [5.0, 1e-3, 2.0], rtol=1e-7)
    assert b[44:45] == ref.pack_bits(np.signbit(x).astype(int), 1)
    assert len(b) == 32 + 12 + 1 + 2
    s = comp.Sign().compress(x).to_bytes()
    assert len(s) == 16 + 4 + 1
    assert np.frombuffer(s[16:20], np.float32)[0] == np.float32(np.abs(x).astype(np.float64).sum() / 5)
    assert s[20:] == bytes([0b10010])


def test_shared_randk_sends_no_indices() -> None:
    x = np.ones(1 << 16, np.float32)
    sh = comp.RandK(k=1000, shared=True).compress(x, seed=5)
    pr = comp.RandK(k=1000).compress(x, seed=5)
    assert sh.nbytes == 32 + 4000
    assert pr.nbytes == 24 + 2000 + 4000  # 16-bit indices
    np.testing.assert_array_equal(comp.decompress(sh), comp.decompress(pr))


def test_compression_ratios() -> None:
    D = 10_000
    x = np.random.default_rng(0).standard_normal(D).astype(np.float32)
    qs = comp.QSGD(levels=16).compress(x)  # 1 sign + 5 level bits + 32/512 norm bits
    assert qs.nbytes == 32 + 20 * 4 + 1250 + 6250
    assert comp.Sign().compress(x).nbytes == 16 + 4 + 1250


# --------------------------------------------------------------------------------------------
# malformed input
# --------------------------------------------------------------------------------------------


def test_truncation_and_extension() -> None:
    for m in MESSAGES:
        b = m.to_bytes()
        for n in range(len(b)):
            with pytest.raises(ValueError, match="malformed"):
                comp.Message.from_bytes(b[:n])
        for extra in (b"\0", b"\1\2\3"):
            with pytest.raises(ValueError, match="trailing"):
                comp.Message.from_bytes(b + extra)


def test_every_bit_flip() -> None:
    for m in MESSAGES:
        b = bytearray(m.to_bytes())
        for i in range(len(b) * 8):
            b[i // 8] ^= 1 << (i % 8)
            accept_or_value_error(bytes(b))
            b[i // 8] ^= 1 << (i % 8)


@given(st.binary(max_size=200))
def test_random_bytes(b) -> None:
    accept_or_value_error(b)


@settings(max_examples=150)
@given(st.sampled_from(range(len(MESSAGES))), st.binary(min_size=1, max_size=8), st.data())
def test_random_overwrites(i, patch, data) -> None:
    b = bytearray(MESSAGES[i].to_bytes())
    pos = data.draw(st.integers(0, len(b) - 1))
    b[pos:pos + len(patch)] = patch
    accept_or_value_error(bytes(b))


def _edit(b: bytes, fmt: str, off: int, value: int) -> bytes:
    out = bytearray(b)
    struct.pack_into(fmt, out, off, value)
    return bytes(out)


@pytest.mark.parametrize(
    ("src", "fmt", "off", "value", "match"),
    [
        ("topk", "<B", 0, ord("X"), "magic"),
        ("topk", "<B", 2, 2, "version"),
        ("topk", "<B", 3, 9, "kind"),
        ("topk", "<B", 4, 0, "dtype code"),
        ("topk", "<B", 4, 3, "dtype code"),
        ("topk", "<B", 5, 0, "value dtype"),
        ("topk", "<B", 5, 4, "value dtype"),
        ("topk", "<B", 6, 1, "flags"),
        ("topk", "<B", 6, 2, "flags"),
        ("topk", "<B", 7, 1, "reserved"),
        ("topk", "<Q", 8, 0, "D must be"),
        ("topk", "<Q", 8, 2**40, "D must be"),
        ("topk", "<Q", 8, 2**64 - 1, "D must be"),
        ("topk", "<Q", 8, 10**9, "header implies"),
        ("topk", "<Q", 16, 0, "k must be"),
        ("topk", "<Q", 16, 1001, "k must be"),
        ("topk", "<Q", 16, 2**63, "k must be"),
        ("qsgd", "<Q", 16, 0, "levels must be"),
        ("qsgd", "<Q", 16, 65536, "levels must be"),
        ("qsgd", "<Q", 24, 0, "bucket must be"),
        ("qsgd", "<Q", 24, 1001, "bucket must be"),
        ("qsgd", "<Q", 24, 2**64 - 1, "bucket must be"),
        ("sign", "<B", 3, 1, "header implies|shorter|k must be"),
    ],
)
def test_header_edits(src, fmt, off, value, match) -> None:
    x = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    c = {"topk": comp.TopK(k=10), "qsgd": comp.QSGD(levels=4), "sign": comp.Sign()}[src]
    b = _edit(c.compress(x).to_bytes(), fmt, off, value)
    with pytest.raises(ValueError, match=match):
        comp.Message.from_bytes(b)


def _topk_bytes(idx: list[int], D: int = 100) -> bytes:
    wi = (D - 1).bit_length()
    head = struct.pack("<2sBBBBBBQQ", b"CZ", 1, 1, 1, 2, 0, 0, D, len(idx))
    return head + ref.pack_bits(np.array(idx), wi) + np.ones(len(idx), np.float32).tobytes()


def test_index_validation() -> None:
    comp.Message.from_bytes(_topk_bytes([0, 5, 99]))
    with pytest.raises(ValueError, match="out of range"):
        comp.Message.from_bytes(_topk_bytes([0, 5, 100]))
    with pytest.raises(ValueError, match="out of range"):
        comp.Message.from_bytes(_topk_bytes([127]))
    with pytest.raises(ValueError, match="strictly increasing"):
        comp.Message.from_bytes(_topk_bytes([3, 3]))
    with pytest.raises(ValueError, match="strictly increasing"):
        comp.Message.from_bytes(_topk_bytes([4, 2]))
    b = bytearray(_topk_bytes([1, 2, 3]))  # 21 index bits: 3 padding bits in byte 26
    b[24 + 2] |= 0x80
    with pytest.raises(ValueError, match="padding"):
        comp.Message.from_bytes(bytes(b))


def _qsgd_bytes(norms, signs, levels, s, bucket, D) -> bytes:
    head = struct.pack("<2sBBBBBBQQQ", b"CZ", 1, 3, 1, 2, 0, 0, D, s, bucket)
    return (head + np.asarray(norms, np.float32).tobytes() + ref.pack_bits(signs, 1)
            + ref.pack_bits(levels, s.bit_length()))


def test_qsgd_payload_validation() -> None:
    ok = _qsgd_bytes([2.0, 1.0], [0, 1, 0], [4, 0, 1], 4, 2, 3)
    np.testing.assert_allclose(comp.decompress(comp.Message.from_bytes(ok)), [2.0, -0.0, 0.25])
    with pytest.raises(ValueError, match="level code 5"):
        comp.Message.from_bytes(_qsgd_bytes([2.0, 1.0], [0, 1, 0], [4, 5, 1], 4, 2, 3))
    for bad in (np.nan, -1.0, np.inf):
        with pytest.raises(ValueError, match="norm"):
            comp.Message.from_bytes(_qsgd_bytes([2.0, bad], [0, 0, 0], [1, 1, 1], 4, 2, 3))


def test_sign_scale_validation() -> None:
    for bad in (np.nan, -2.0, np.inf):
        b = struct.pack("<2sBBBBBBQ", b"CZ", 1, 4, 1, 2, 0, 0, 3) + np.float32(bad).tobytes()
        with pytest.raises(ValueError, match="scale"):
            comp.Message.from_bytes(b + b"\x01")


def test_from_bytes_inputs() -> None:
    b = MESSAGES[0].to_bytes()
    for form in (bytearray(b), memoryview(b), np.frombuffer(b, np.uint8)):
        assert comp.Message.from_bytes(form) == MESSAGES[0]
    with pytest.raises(TypeError, match="bytes-like"):
        comp.Message.from_bytes(12)
    with pytest.raises(ValueError, match="expected dim"):
        comp.Message.from_bytes(b, dim=MESSAGES[0].dim + 1)


def test_payload_is_read_only() -> None:
    m = comp.TopK(k=1).compress(np.ones(4))
    with pytest.raises(ValueError, match="read-only"):
        m.payload[0] = 1
    parsed = comp.Message.from_bytes(m.to_bytes())
    with pytest.raises(ValueError, match="read-only"):
        parsed.payload[0] = 1
