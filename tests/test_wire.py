from __future__ import annotations

import contextlib
import dataclasses
import struct
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cyclad.compression as comp
from cyclad import _core
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
        "natural": lambda: comp.Natural(),  # no values travel: value_dtype is the input's
        "terngrad": lambda: comp.TernGrad(value_dtype=vdt),
        "terngrad-5": lambda: comp.TernGrad(bucket=5, value_dtype=vdt),
    }[kind]()


KINDS = [
    "topk",
    "topk-all",
    "randk",
    "randk-shared",
    "qsgd",
    "qsgd-1",
    "sign",
    "identity",
    "natural",
    "terngrad",
    "terngrad-5",
]


def sample_messages() -> list[comp.Message]:
    rng = np.random.default_rng(0)
    out = []
    for kind in KINDS:
        for D in (1, 13):
            x = rng.standard_normal(D)
            out.append(make(kind, D, "float32").compress(x, seed=3))
    return out


MESSAGES = sample_messages()


@contextlib.contextmanager
def address_space_headroom(nbytes: int = 1 << 30):
    """Cap the process's address space at its current size + ``nbytes`` (Linux), so that an
    allocation the input does not justify fails with MemoryError instead of exhausting RAM."""
    try:
        import resource

        with open("/proc/self/status") as f:
            vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    except (ImportError, OSError, StopIteration):
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = vm + nbytes if hard == resource.RLIM_INFINITY else min(hard, vm + nbytes)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def accept_or_value_error(b: bytes) -> None:
    """The contract for arbitrary bytes: parse + decompress cleanly (no warning, within a
    memory budget), or ValueError."""
    with address_space_headroom(), warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            m = comp.Message.from_bytes(b)
        except ValueError:
            return
        out = comp.decompress(m)
    assert out.shape == (m.dim,)
    assert m.dim <= comp.DEFAULT_MAX_DIM
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
    assert back.value_dtype == (c.value_dtype or np.dtype(dtype).name)
    out = c.decompress(back)
    assert out.dtype == dtype
    assert out.shape == (D,)
    np.testing.assert_array_equal(out, c.decompress(msg))
    # the documented size formula
    vb = VB[msg.value_dtype]
    base = ref.payload_size(msg.kind, D, msg.k, msg.levels, msg.bucket, vb, msg.shared)
    header = {
        "identity": 16,
        "sign": 16,
        "natural": 16,
        "topk": 24,
        "terngrad": 24,
        "qsgd": 32,
    }.get(msg.kind, 32 if msg.shared else 24)
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
    assert b[24 : 24 + nidx] == ref.pack_bits(idx, wi)
    assert b[24 + nidx :] == x[idx].tobytes()


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
    assert np.frombuffer(s[16:20], np.float32)[0] == np.float32(
        np.abs(x).astype(np.float64).sum() / 5
    )
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
    # natural: 1 sign bit + an 8-bit exponent per value, plus the 2-byte window start
    assert comp.Natural().compress(x).nbytes == 16 + 2 + 1250 + 10_000
    # TernGrad: 2 bits per value plus one scale per bucket
    assert comp.TernGrad().compress(x).nbytes == 24 + 4 + 2500
    assert comp.TernGrad(bucket=512).compress(x).nbytes == 24 + 20 * 4 + 2500
    assert comp.TernGrad(bucket=512, value_dtype="float16").compress(x).nbytes == 24 + 40 + 2500


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
    b[pos : pos + len(patch)] = patch
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
        ("topk", "<Q", 8, 10**9, "above max_dim"),
        ("topk", "<Q", 8, 2**20, "header implies"),
        ("topk", "<Q", 16, 0, "k must be"),
        ("topk", "<Q", 16, 1001, "k must be"),
        ("topk", "<Q", 16, 2**63, "k must be"),
        ("qsgd", "<Q", 16, 0, "levels must be"),
        ("qsgd", "<Q", 16, 65536, "levels must be"),
        ("qsgd", "<Q", 24, 0, "bucket must be"),
        ("qsgd", "<Q", 24, 1001, "bucket must be"),
        ("qsgd", "<Q", 24, 2**64 - 1, "bucket must be"),
        ("sign", "<B", 3, 1, "header implies|shorter|k must be"),
        ("terngrad", "<Q", 16, 0, "bucket must be"),
        ("terngrad", "<Q", 16, 1001, "bucket must be"),
        ("terngrad", "<Q", 16, 2**64 - 1, "bucket must be"),
        ("terngrad", "<Q", 16, 999, "header implies"),
        ("natural", "<B", 5, 3, "value dtype must equal"),
        ("natural", "<B", 5, 1, "value dtype must equal"),
        ("natural", "<B", 3, 6, "shorter|bucket must be"),
    ],
)
def test_header_edits(src, fmt, off, value, match) -> None:
    x = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    c = {
        "topk": comp.TopK(k=10),
        "qsgd": comp.QSGD(levels=4),
        "sign": comp.Sign(),
        "terngrad": comp.TernGrad(bucket=100),
        "natural": comp.Natural(),
    }[src]
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
    return (
        head
        + np.asarray(norms, np.float32).tobytes()
        + ref.pack_bits(signs, 1)
        + ref.pack_bits(levels, s.bit_length())
    )


def test_qsgd_payload_validation() -> None:
    ok = _qsgd_bytes([2.0, 1.0], [0, 1, 0], [4, 0, 1], 4, 2, 3)
    np.testing.assert_allclose(comp.decompress(comp.Message.from_bytes(ok)), [2.0, -0.0, 0.25])
    with pytest.raises(ValueError, match="level code 5"):
        comp.Message.from_bytes(_qsgd_bytes([2.0, 1.0], [0, 1, 0], [4, 5, 1], 4, 2, 3))
    for bad in (np.nan, -1.0, np.inf):
        with pytest.raises(ValueError, match="norm"):
            comp.Message.from_bytes(_qsgd_bytes([2.0, bad], [0, 0, 0], [1, 1, 1], 4, 2, 3))


def _natural_bytes(emin, signs, codes, dcode=1) -> bytes:
    D = len(codes)
    head = struct.pack("<2sBBBBBBQ", b"CZ", 1, 5, dcode, dcode + 1, 0, 0, D)
    return head + struct.pack("<h", emin) + ref.pack_bits(signs, 1) + bytes(codes)


def test_layout_natural(dtype) -> None:
    x = np.array([1.0, -2.0, 0.0, -0.0, 0.75], dtype=dtype)  # powers and 0.75 in [0.5, 1)
    msg = comp.Natural().compress(x, seed=3)
    b = msg.to_bytes()
    assert len(b) == 16 + 2 + 1 + 5
    (emin,) = struct.unpack_from("<h", b, 16)
    assert emin == max(1 - 254, -149 if dtype == np.float32 else -1074)  # top: 2^1 (|-2| exact)
    assert ref.unpack_bits(b[18:19], 5, 1).tolist() == [0, 1, 0, 1, 0]
    codes = list(b[19:])
    assert codes[:4] == [0 - emin + 1, 1 - emin + 1, 0, 0]
    assert codes[4] in (-1 - emin + 1, 0 - emin + 1)  # 0.75 -> 0.5 or 1
    out = comp.decompress(msg)
    np.testing.assert_array_equal(out[:4], [1.0, -2.0, 0.0, -0.0])
    assert np.signbit(out[3])
    assert out[4] in (0.5, 1.0)


def test_natural_payload_validation() -> None:
    ok = _natural_bytes(-140, [0, 1, 0], [1, 255, 0])
    out = comp.decompress(comp.Message.from_bytes(ok))
    np.testing.assert_array_equal(out, np.array([2.0**-140, -(2.0**114), 0.0], np.float32))
    assert comp.Message.from_bytes(_natural_bytes(-149, [1], [1]))  # the smallest subnormal
    comp.Message.from_bytes(_natural_bytes(-127, [0], [255]))  # 2^127: the largest power
    for emin in (-150, -126, 2**15 - 1, -(2**15)):
        with pytest.raises(ValueError, match="emin"):
            comp.Message.from_bytes(_natural_bytes(emin, [0], [255]))
    np.testing.assert_array_equal(
        comp.decompress(comp.Message.from_bytes(_natural_bytes(769, [1], [255], dcode=2))),
        [-(2.0**1023)],
    )
    with pytest.raises(ValueError, match="emin"):
        comp.Message.from_bytes(_natural_bytes(770, [0], [1], dcode=2))
    with pytest.raises(ValueError, match="emin"):
        comp.Message.from_bytes(_natural_bytes(-1075, [0], [1], dcode=2))
    b = bytearray(_natural_bytes(-140, [0, 1, 0], [1, 2, 3]))
    b[18] |= 0x10  # a sign bit past D = 3
    with pytest.raises(ValueError, match="padding"):
        comp.Message.from_bytes(bytes(b))


def _terngrad_bytes(scales, codes, bucket, dcode=1, vcode=2) -> bytes:
    D = len(codes)
    head = struct.pack("<2sBBBBBBQQ", b"CZ", 1, 6, dcode, vcode, 0, 0, D, bucket)
    vdt = {1: np.float16, 2: np.float32, 3: np.float64}[vcode]
    return head + np.asarray(scales, vdt).tobytes() + ref.pack_bits(codes, 2)


def test_layout_terngrad() -> None:
    x = np.array([0.0, 2.0, -2.0, 0.5, -0.0, 1.0, 3.0], np.float32)
    msg = comp.TernGrad(bucket=3).compress(x, seed=4)
    b = msg.to_bytes()
    assert struct.unpack_from("<Q", b, 16) == (3,)
    assert len(b) == 24 + 3 * 4 + 2
    np.testing.assert_array_equal(np.frombuffer(b[24:36], np.float32), [2.0, 1.0, 3.0])
    codes = ref.unpack_bits(b[36:], 7, 2)
    assert codes[:3].tolist() == [0, 1, 3]  # |x| = s: kept with probability 1
    assert codes[4] == 0
    assert codes[3] in (0, 1)
    out = comp.decompress(msg)
    np.testing.assert_array_equal(out[:3], [0.0, 2.0, -2.0])
    assert out[3] in (0.0, 1.0)


def test_terngrad_payload_validation() -> None:
    ok = _terngrad_bytes([2.0, 0.5], [1, 3, 0, 3, 1], 3)
    np.testing.assert_array_equal(
        comp.decompress(comp.Message.from_bytes(ok)), [2.0, -2.0, 0.0, -0.5, 0.5]
    )
    with pytest.raises(ValueError, match=r"code 2 .* coordinate 4"):
        comp.Message.from_bytes(_terngrad_bytes([2.0, 0.5], [1, 3, 0, 3, 2], 3))
    for bad in (np.nan, -1.0, np.inf):
        with pytest.raises(ValueError, match="scale"):
            comp.Message.from_bytes(_terngrad_bytes([2.0, bad], [0, 0, 0, 0, 0], 3))
    # a float64 scale beyond FLT_MAX in a float32 message would decode to inf
    with pytest.raises(ValueError, match="scale"):
        comp.Message.from_bytes(_terngrad_bytes([1e300], [1], 1, dcode=1, vcode=3))
    b = bytearray(_terngrad_bytes([1.0], [1, 1, 1], 3))
    b[-1] |= 0x40  # the fourth 2-bit slot is padding
    with pytest.raises(ValueError, match="padding"):
        comp.Message.from_bytes(bytes(b))


def test_natural_and_terngrad_large_messages_validate_in_parallel() -> None:
    # a code 2 deep inside a long TernGrad message is found whatever the thread count
    D = 300_001
    codes = np.ones(D, np.int64)
    codes[250_000] = 2
    b = _terngrad_bytes([1.0], codes, D)
    for t in (1, 2):
        with pytest.raises(ValueError, match="coordinate 250000"):
            comp.Message.from_bytes(b, threads=t)


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


# --------------------------------------------------------------------------------------------
# allocation bounds: the receiver, not the header, decides how much memory a message may take
# --------------------------------------------------------------------------------------------


def _flipped_shared_randk() -> bytes:
    """A 44-byte shared rand-k message with bit 31 of D flipped: D = 2^31 + 13, still valid."""
    x = np.random.default_rng(0).standard_normal(13)
    c = comp.RandK(k=3, shared=True, value_dtype="float32")
    b = bytearray(c.compress(x, seed=3).to_bytes())
    assert len(b) == 44
    b[8 + 3] ^= 0x80
    assert struct.unpack_from("<Q", b, 8)[0] == 2**31 + 13
    return bytes(b)


def test_declared_dim_needs_dim_or_max_dim() -> None:
    b = _flipped_shared_randk()
    with address_space_headroom():
        with pytest.raises(ValueError, match=r"D=2147483661, above max_dim=16777216.*dim="):
            comp.Message.from_bytes(b)
        with pytest.raises(ValueError, match="expected dim=13"):
            comp.Message.from_bytes(b, dim=13)
        with pytest.raises(ValueError, match="max_dim=1000"):
            comp.Message.from_bytes(b, max_dim=1000)
        # the caller may allow it explicitly (parsing alone allocates nothing proportional to D)
        m = comp.Message.from_bytes(b, max_dim=2**32 - 1)
        assert m.dim == 2**31 + 13
        assert comp.Message.from_bytes(b, dim=2**31 + 13) == m


def test_max_dim_bounds() -> None:
    assert comp.DEFAULT_MAX_DIM == 2**24
    D = comp.DEFAULT_MAX_DIM + 1  # a sign message of D coordinates is only ~2 MB
    b = struct.pack("<2sBBBBBBQ", b"CZ", 1, 4, 1, 2, 0, 0, D) + np.float32(1).tobytes()
    b += bytes(-(-D // 8))
    with pytest.raises(ValueError, match="max_dim"):
        comp.Message.from_bytes(b)
    assert comp.Message.from_bytes(b, dim=D).dim == D
    assert comp.Message.from_bytes(b, max_dim=D).dim == D
    with pytest.raises(ValueError, match="max_dim"):
        comp.Message.from_bytes(b, dim=D, max_dim=D - 1)  # both bounds apply when both given
    small = MESSAGES[3].to_bytes()
    assert comp.Message.from_bytes(small, max_dim=MESSAGES[3].dim) == MESSAGES[3]
    for bad, exc in ((0, ValueError), (2**32, ValueError), (1.5, TypeError), (True, TypeError)):
        with pytest.raises(exc, match="max_dim"):
            comp.Message.from_bytes(small, max_dim=bad)
        with pytest.raises(exc, match="dim"):
            comp.Message.from_bytes(small, dim=bad)


def test_extreme_size_fields_stay_within_a_memory_budget() -> None:
    # 8-byte overwrites of D, k/s and bucket with extreme values (each call is capped at
    # 1 GiB of fresh address space; see accept_or_value_error)
    for m in MESSAGES:
        b = m.to_bytes()
        for off in (8, 16, 24):
            if off + 8 > len(b):
                continue
            for v in (2**32 - 1, 2**31 + 13, 2**24, 2**24 + 1, 2**63, 2**64 - 1):
                accept_or_value_error(_edit(b, "<Q", off, v))


def test_handmade_message_is_checked() -> None:
    ok = MESSAGES[0]
    with pytest.raises(ValueError, match=r"header implies|inconsistent"):
        comp.Message(
            ok.kind,
            ok.dtype,
            ok.value_dtype,
            ok.dim + 2**31,
            ok.k,
            ok.levels,
            ok.bucket,
            ok.shared,
            ok.seed,
            ok.payload,
        )
    with pytest.raises(ValueError, match="inconsistent"):
        comp.Message(
            "randk",
            np.dtype(np.float64),
            "float32",
            2**40,
            3,
            0,
            0,
            True,
            0,
            np.zeros(12, np.uint8),
        )
    with pytest.raises(ValueError, match="inconsistent"):
        comp.Message(
            ok.kind,
            np.dtype(np.int32),
            ok.value_dtype,
            ok.dim,
            ok.k,
            ok.levels,
            ok.bucket,
            ok.shared,
            ok.seed,
            ok.payload,
        )
    with pytest.raises(ValueError, match="inconsistent"):
        comp.Message(
            ok.kind,
            ok.dtype,
            ok.value_dtype,
            ok.dim,
            ok.k,
            ok.levels,
            ok.bucket,
            ok.shared,
            ok.seed,
            ok.payload.astype(np.int8),
        )


# --------------------------------------------------------------------------------------------
# sizes at the extremes: exact, or rejected, never wrapped
# --------------------------------------------------------------------------------------------

_MAXD = 2**32 - 1


@pytest.mark.parametrize("vdt", VDTS)
@pytest.mark.parametrize(
    ("kind", "D", "param", "bucket", "shared"),
    [
        ("identity", _MAXD, 0, 0, False),
        ("sign", _MAXD, 0, 0, False),
        ("topk", _MAXD, _MAXD, 0, False),
        ("topk", _MAXD, 1, 0, False),
        ("topk", 2**31 + 1, 2**31 + 1, 0, False),
        ("randk", _MAXD, _MAXD, 0, False),
        ("randk", _MAXD, _MAXD, 0, True),
        ("qsgd", _MAXD, 65535, 1, False),
        ("qsgd", _MAXD, 65535, _MAXD, False),
        ("qsgd", _MAXD, 1, 1, False),
        ("qsgd", _MAXD, 32768, 3, False),
        ("natural", _MAXD, 0, 0, False),
        ("terngrad", _MAXD, 0, 1, False),
        ("terngrad", _MAXD, 0, _MAXD, False),
        ("terngrad", _MAXD, 0, 3, False),
    ],
)
def test_payload_size_is_exact_at_the_extremes(kind, D, param, bucket, shared, vdt) -> None:
    code = comp._KINDS[kind]
    vcode = comp._VALUE_DTYPES["float64" if kind == "natural" else vdt]  # natural: dense f64
    got = _core.wire_payload_size(code, vcode, D, param, bucket, shared)
    k = param if kind in ("topk", "randk") else 0
    s = param if kind == "qsgd" else 0
    want = ref.payload_size(kind, D, k, s, bucket, VB[comp._VALUE_OF_CODE[vcode]], shared)
    assert got == want  # Python integers: exact
    # a header declaring it, with a short body, is rejected before anything is allocated, and
    # the error names the exact size
    head = struct.pack("<2sBBBBBBQ", b"CZ", 1, code, 2, vcode, int(shared), 0, D)
    if kind in ("topk", "randk"):
        head += struct.pack("<Q", param) + (struct.pack("<Q", 7) if shared else b"")
    elif kind == "qsgd":
        head += struct.pack("<QQ", param, bucket)
    elif kind == "terngrad":
        head += struct.pack("<Q", bucket)
    with (
        address_space_headroom(),
        pytest.raises(ValueError, match=f"header implies {len(head)} \\+ {want}$"),
    ):
        comp.Message.from_bytes(head + bytes(64), max_dim=_MAXD)


@pytest.mark.parametrize(
    ("kind", "D", "param", "bucket", "match"),
    [
        ("identity", 2**32, 0, 0, "D must be"),
        ("identity", 2**64 - 1, 0, 0, "D must be"),
        ("topk", _MAXD, _MAXD + 1, 0, "k must be"),
        ("topk", _MAXD, 2**64 - 1, 0, "k must be"),
        ("randk", 5, 6, 0, "k must be"),
        ("qsgd", _MAXD, 65536, 1, "levels must be"),
        ("qsgd", _MAXD, 2**64 - 1, 1, "levels must be"),
        ("qsgd", _MAXD, 1, _MAXD + 1, "bucket must be"),
        ("qsgd", _MAXD, 1, 0, "bucket must be"),
        ("terngrad", _MAXD, 0, 0, "bucket must be"),
        ("terngrad", 10, 0, 11, "bucket must be"),
        ("natural", _MAXD + 1, 0, 0, "D must be"),
    ],
)
def test_payload_size_rejects_out_of_range(kind, D, param, bucket, match) -> None:
    with pytest.raises(ValueError, match=match):
        _core.wire_payload_size(comp._KINDS[kind], 3, D, param, bucket, False)


# --------------------------------------------------------------------------------------------
# decoded values stay finite in the dense dtype
# --------------------------------------------------------------------------------------------

F32_MAX = float(np.finfo(np.float32).max)
F32_EDGE = 2.0**128 - 2.0**103  # the smallest double that rounds to float32 +Inf
F64_MAX = float(np.finfo(np.float64).max)


def _head(kind: int, dcode: int, vcode: int, D: int, *extra: int, flags: int = 0) -> bytes:
    return struct.pack("<2sBBBBBBQ", b"CZ", 1, kind, dcode, vcode, flags, 0, D) + b"".join(
        struct.pack("<Q", e) for e in extra
    )


def _decode(b: bytes) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return comp.decompress(comp.Message.from_bytes(b))


def _decode_or_dense_dtype_error(b: bytes, ok: bool) -> np.ndarray | None:
    """The decoded vector when ``ok``; else check that parsing rejects the message for its
    dense dtype and return None."""
    if ok:
        return _decode(b)
    with pytest.raises(ValueError, match="dense dtype"):
        comp.Message.from_bytes(b)
    return None


@pytest.mark.parametrize(
    ("norm", "dcode", "s", "ok"),
    [
        (1e300, 1, 4, False),
        (1e300, 2, 4, True),
        (F32_MAX, 1, 3, True),
        (np.nextafter(F32_EDGE, 0), 1, 1, True),
        (F32_EDGE, 1, 1, False),
        (F64_MAX, 2, 1, True),
        (F64_MAX, 2, 3, False),  # 3 * (max / 3) rounds to +Inf
        (F64_MAX, 2, 65535, False),
    ],
)
def test_qsgd_norm_must_decode_finite_in_the_dense_dtype(norm, dcode, s, ok) -> None:
    # one bucket of 2 coordinates, both at level s
    b = (
        _head(3, dcode, 3, 2, s, 2)
        + np.float64(norm).tobytes()
        + b"\x00"
        + ref.pack_bits(np.array([s, s]), s.bit_length())
    )
    out = _decode_or_dense_dtype_error(b, ok)
    if out is None:
        return
    assert np.all(np.isfinite(out))
    assert np.all(out > 0)


@pytest.mark.parametrize(
    ("scale", "dcode", "ok"),
    [(1e300, 1, False), (1e300, 2, True), (F32_MAX, 1, True), (F32_EDGE, 1, False)],
)
def test_sign_scale_must_be_finite_in_the_dense_dtype(scale, dcode, ok) -> None:
    b = _head(4, dcode, 3, 3) + np.float64(scale).tobytes() + b"\x05"
    out = _decode_or_dense_dtype_error(b, ok)
    if out is None:
        return
    assert np.all(np.isfinite(out))
    np.testing.assert_array_equal(np.signbit(out), [True, False, True])


def _sparse_bytes(kind: int, dcode: int, vals, D: int = 100, shared: bool = False) -> bytes:
    vals = np.asarray(vals, np.float64)
    k = vals.size
    if shared:
        return _head(kind, dcode, 3, D, k, 7, flags=1) + vals.tobytes()
    return (
        _head(kind, dcode, 3, D, k)
        + ref.pack_bits(np.arange(k), (D - 1).bit_length())
        + vals.tobytes()
    )


@pytest.mark.parametrize("kind", [0, 1, 2])  # identity, top-k, private rand-k (k = D: no scale)
def test_raw_values_must_not_overflow_the_dense_dtype(kind) -> None:
    def msg(vals, dcode):
        if kind == 0:
            return _head(0, dcode, 3, len(vals)) + np.asarray(vals, np.float64).tobytes()
        return _sparse_bytes(kind, dcode, vals, D=len(vals))

    for bad in (1e300, -1e39, F32_EDGE):
        with pytest.raises(ValueError, match="dense dtype float32"):
            comp.Message.from_bytes(msg([1.0, bad, 2.0], 1))
        np.testing.assert_array_equal(_decode(msg([1.0, bad, 2.0], 2)), [1.0, bad, 2.0])
    # NaN and Inf are data; a value that rounds to FLT_MAX is fine
    edge = np.nextafter(F32_EDGE, 0)
    out = _decode(msg([np.nan, -np.inf, edge], 1))
    assert out.dtype == np.float32
    assert np.isnan(out[0])
    assert out[1] == -np.inf
    assert out[2] == np.float32(F32_MAX)


@pytest.mark.parametrize("shared", [False, True])
def test_randk_scaled_value_must_not_overflow(shared) -> None:
    # D/k = 100: a finite value v decodes to 100 v
    b32 = _sparse_bytes(2, 1, [1.0, 3e37], D=200, shared=shared)
    with pytest.raises(ValueError, match=r"D/k = 100.*dense dtype float32"):
        comp.Message.from_bytes(b32)
    np.testing.assert_array_equal(
        np.sort(_decode(_sparse_bytes(2, 2, [1.0, 3e37], D=200, shared=shared)))[-2:], [100.0, 3e39]
    )
    b64 = _sparse_bytes(2, 2, [1.0, 1e307], D=200, shared=shared)
    with pytest.raises(ValueError, match=r"D/k = 100.*dense dtype float64"):
        comp.Message.from_bytes(b64)
    ok = _decode(_sparse_bytes(2, 1, [np.inf, F32_MAX / 100], D=200, shared=shared))
    assert np.isinf(ok).sum() == 1
    assert np.isfinite(ok).sum() == 199


@pytest.mark.parametrize("shared", [False, True])
def test_randk_compress_refuses_what_would_decode_to_inf(shared) -> None:
    x = np.ones(200, np.float32)
    x[:] = 3e37
    with pytest.raises(ValueError, match="D/k"):
        comp.RandK(k=2, shared=shared).compress(x, seed=1)
    m = comp.RandK(k=2, shared=shared).compress(x.astype(np.float64), seed=1)
    out = comp.decompress(comp.Message.from_bytes(m.to_bytes()))
    assert np.all(np.isfinite(out))
    y = np.full(200, np.inf, np.float32)  # non-finite values are data and still travel
    assert np.isinf(comp.RandK(k=2, shared=shared)(y, seed=1)).sum() == 2


def test_qsgd_compress_refuses_what_would_decode_to_inf() -> None:
    big = np.array([3e38, -3e38], np.float32)  # norm 4.2e38 > FLT_MAX
    with pytest.raises(ValueError, match="overflow"):
        comp.QSGD(levels=1, value_dtype="float64").compress(big)
    with pytest.raises(ValueError, match=r"float32|overflow"):
        comp.QSGD(levels=1).compress(big)
    with pytest.raises(ValueError, match="overflow float64"):
        comp.QSGD(levels=3).compress(np.array([F64_MAX]))
    out = comp.QSGD(levels=1)(np.array([F64_MAX]))  # 1 * (max / 1) is exact
    assert np.all(np.isfinite(out))


# --------------------------------------------------------------------------------------------
# the receiver decides the dense dtype
# --------------------------------------------------------------------------------------------


def test_from_bytes_dtype() -> None:
    m64 = comp.Identity().compress(np.arange(4.0))
    b = m64.to_bytes()
    assert comp.Message.from_bytes(b, dtype=np.float64) == m64
    assert comp.Message.from_bytes(b, dtype="float64") == m64
    with pytest.raises(ValueError, match="dtype float64, expected dtype=float32"):
        comp.Message.from_bytes(b, dtype=np.float32)
    for bad in (np.int32, "float16", "no such dtype", object):
        with pytest.raises(TypeError, match="dtype must be float32 or float64"):
            comp.Message.from_bytes(b, dtype=bad)


def _server(dtype, compressor, P=4, ef21=False):
    from cyclad import protocol

    return protocol.Server(
        2, P, dtype, lambda X: np.nanmedian(X, axis=0), compressor=compressor, ef21=ef21
    )


def _server_vector(srv, device, payload):
    """The vector the server takes from ``payload`` in a round of its own."""
    srv.begin(srv.t + 1)
    srv.receive(device, payload)
    return srv.received([device])[0]


def test_server_rejects_a_message_in_another_dtype() -> None:
    srv = _server(np.float32, comp.Identity())
    huge = comp.Identity().compress(np.array([1e300, 1.0, 2.0, 3.0])).to_bytes()
    plain = comp.Identity().compress(np.arange(4.0)).to_bytes()
    good = comp.Identity().compress(np.arange(4.0, dtype=np.float32)).to_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for b in (huge, plain):
            out = _server_vector(srv, 1, b)
            assert out.dtype == np.float32
            assert np.all(np.isnan(out))
            assert srv.faulty == [1]
        np.testing.assert_array_equal(_server_vector(srv, 0, good), np.arange(4.0))
        assert srv.faulty == []


def test_server_rejects_the_flipped_dimension_message() -> None:
    srv = _server(np.float64, comp.RandK(k=3, shared=True, value_dtype="float32"), P=13)
    with address_space_headroom(), warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.all(np.isnan(_server_vector(srv, 0, _flipped_shared_randk())))
    assert srv.faulty == [0]


def test_server_needs_a_float_dtype_with_a_compressor() -> None:
    with pytest.raises(ValueError, match="float32 or float64"):
        _server(np.float16, comp.Identity())


def test_server_decode_never_raises_or_warns() -> None:
    # EF21 states overflow or turn NaN (Inf - Inf) silently: non-finite values are data
    srv = _server(np.float32, comp.Identity(), ef21=True)
    big = comp.Identity().compress(np.full(4, 3e38, np.float32)).to_bytes()
    inf = comp.Identity().compress(np.array([np.inf, -np.inf, 1, 1], np.float32)).to_bytes()
    ninf = comp.Identity().compress(np.array([-np.inf, np.inf, 1, 1], np.float32)).to_bytes()
    c = comp.TopK(k=2)
    srv_t = _server(np.float64, c, P=13)
    with address_space_headroom(), warnings.catch_warnings():
        warnings.simplefilter("error")
        _server_vector(srv, 0, big)
        assert np.all(np.isinf(_server_vector(srv, 0, big)))
        _server_vector(srv, 1, inf)
        assert np.all(np.isnan(_server_vector(srv, 1, ninf))[:2])
        assert srv.faulty == []
        b = bytearray(c.compress(np.random.default_rng(0).standard_normal(13)).to_bytes())
        for i in range(len(b) * 8):
            b[i // 8] ^= 1 << (i % 8)
            out = _server_vector(srv_t, 0, bytes(b))
            assert out.shape == (13,)
            assert out.dtype == np.float64
            b[i // 8] ^= 1 << (i % 8)


def test_ef21_receiver_state_overflow_is_silent() -> None:
    rx = comp.EF21Receiver(comp.Identity())
    big = comp.Identity().compress(np.full(3, 3e38, np.float32))
    inf = comp.Identity().compress(np.array([np.inf, 1, 1], np.float32))
    ninf = comp.Identity().compress(np.array([-np.inf, 1, 1], np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rx.update(big)
        assert np.all(np.isinf(rx.update(big)))
        rx.reset()
        rx.update(inf)
        assert np.isnan(rx.update(ninf)[0])


# --------------------------------------------------------------------------------------------
# one source of truth: the header is packed and parsed in C++, a message is validated once
# --------------------------------------------------------------------------------------------


def test_wire_format_codes_are_the_documented_ones() -> None:
    f = _core.wire_format
    assert f["magic"] == b"CZ"
    assert f["version"] == 1
    assert f["kinds"] == {
        "identity": 0,
        "topk": 1,
        "randk": 2,
        "qsgd": 3,
        "sign": 4,
        "natural": 5,
        "terngrad": 6,
    }
    assert f["natural_emin"] == ((-149, -127), (-1074, 769))
    assert f["dense_dtypes"] == {"float32": 1, "float64": 2}
    assert f["value_dtypes"] == {"float16": 1, "float32": 2, "float64": 3}
    assert f["flag_shared"] == 1
    assert f["max_dim"] == 2**32 - 1
    assert f["max_levels"] == 65535


def _le(v: int) -> bytes:
    return v.to_bytes(8, "little")


@pytest.mark.parametrize(
    ("compressor", "dtype", "literal"),
    [
        # offset 0: magic, 2: version, 3: kind, 4: dense dtype, 5: value dtype, 6: flags,
        # 7: reserved, 8: D, 16: k | s, 24: seed | bucket (docs/wire-format.md, "Header")
        (comp.Identity(), np.float32, b"CZ\x01\x00\x01\x02\x00\x00" + _le(1000)),
        (comp.Sign(value_dtype="float16"), np.float64, b"CZ\x01\x04\x02\x01\x00\x00" + _le(1000)),
        (comp.TopK(k=10), np.float64, b"CZ\x01\x01\x02\x03\x00\x00" + _le(1000) + _le(10)),
        (
            comp.RandK(k=7, value_dtype="float32"),
            np.float64,
            b"CZ\x01\x02\x02\x02\x00\x00" + _le(1000) + _le(7),
        ),
        (
            comp.RandK(k=7, shared=True),
            np.float32,
            b"CZ\x01\x02\x01\x02\x01\x00" + _le(1000) + _le(7) + _le(2**64 - 3),
        ),
        (
            comp.QSGD(levels=300, bucket=64),
            np.float32,
            b"CZ\x01\x03\x01\x02\x00\x00" + _le(1000) + _le(300) + _le(64),
        ),
        (comp.Natural(), np.float64, b"CZ\x01\x05\x02\x03\x00\x00" + _le(1000)),
        (
            comp.TernGrad(bucket=64, value_dtype="float16"),
            np.float32,
            b"CZ\x01\x06\x01\x01\x00\x00" + _le(1000) + _le(64),
        ),
    ],
)
def test_header_bytes_match_the_documented_layout(compressor, dtype, literal) -> None:
    x = np.random.default_rng(1).standard_normal(1000).astype(dtype)
    msg = compressor.compress(x, seed=2**64 - 3)
    b = msg.to_bytes()
    assert msg.header_nbytes == len(literal)
    assert b[: len(literal)] == literal
    assert (
        _core.wire_header(
            comp._KINDS[msg.kind],
            comp._DTYPES[msg.dtype],
            comp._VALUE_DTYPES[msg.value_dtype],
            msg.dim,
            msg._param(),
            msg.bucket,
            msg.shared,
            msg.seed,
        )
        == literal
    )
    assert _core.wire_header_size(comp._KINDS[msg.kind], msg.shared) == len(literal)
    # and the parser reads the same fields back
    kcode, dcode, vcode, d, param, bucket, shared, seed, hsize = _core.wire_parse(b)
    assert (kcode, dcode, vcode, d, hsize) == (*literal[3:6], 1000, len(literal))
    assert (param, bucket, shared, seed) == (msg._param(), msg.bucket, msg.shared, msg.seed)


def test_wire_header_rejects_fields_out_of_range() -> None:
    with pytest.raises(ValueError, match="k must be"):
        _core.wire_header(1, 1, 2, 10, 11, 0, False, 0)
    with pytest.raises(ValueError, match="dense dtype code"):
        _core.wire_header(1, 3, 2, 10, 1, 0, False, 0)
    with pytest.raises(ValueError, match="shared flag"):
        _core.wire_header(1, 1, 2, 10, 1, 0, True, 0)


class _Recorder:
    """Stands in for ``cyclad._core`` inside ``cyclad.compression`` and records the calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattr__(self, name: str):
        target = getattr(_core, name)
        if not callable(target):
            return target

        def call(*args, **kwargs):
            self.calls.append(name)
            return target(*args, **kwargs)

        return call


@pytest.mark.parametrize("i", range(len(MESSAGES)))
def test_a_received_message_is_validated_once(i, monkeypatch) -> None:
    b = MESSAGES[i].to_bytes()
    rec = _Recorder()
    monkeypatch.setattr(comp, "_core", rec)
    msg = comp.Message.from_bytes(b, dim=MESSAGES[i].dim)
    assert rec.calls == ["wire_parse"]  # header, limits, length and payload in one call
    rec.calls.clear()
    out = comp.decompress(msg)
    assert rec.calls == ["wire_decode"]  # no second validation pass
    rec.calls.clear()
    monkeypatch.undo()
    np.testing.assert_array_equal(out, comp.decompress(MESSAGES[i]))


def test_compressed_and_parsed_messages_carry_their_validated_state(monkeypatch) -> None:
    x = np.random.default_rng(3).standard_normal(50)
    for c in (comp.TopK(k=5), comp.QSGD(levels=3), comp.RandK(k=4, shared=True), comp.Sign()):
        sent = c.compress(x, seed=5)
        got = comp.Message.from_bytes(sent.to_bytes())
        by_hand = comp.Message(*(getattr(sent, f.name) for f in dataclasses.fields(sent)))
        assert sent._validated
        assert got._validated
        assert not by_hand._validated
        assert not dataclasses.replace(got)._validated
        rec = _Recorder()
        monkeypatch.setattr(comp, "_core", rec)
        outs = [comp.decompress(m) for m in (sent, got, by_hand)]
        monkeypatch.undo()
        assert rec.calls == ["wire_decode", "wire_decode", "wire_decompress"]
        for o in outs[1:]:
            np.testing.assert_array_equal(o, outs[0])


def _handmade(
    kind: str, payload: bytes, dim: int, k: int = 0, levels: int = 0, bucket: int = 0
) -> comp.Message:
    p = np.frombuffer(payload, dtype=np.uint8)
    return comp.Message(kind, np.dtype(np.float32), "float32", dim, k, levels, bucket, False, 0, p)


def test_a_handmade_message_is_validated_by_decompress() -> None:
    # the sizes are consistent (so the constructor accepts them) but the payloads are malformed
    qsgd = _qsgd_bytes([2.0, 1.0], [0, 1, 0], [4, 5, 1], 4, 2, 3)[32:]  # level code 5 > s = 4
    topk = _topk_bytes([4, 2])[24:]  # indices not increasing
    with pytest.raises(ValueError, match="level code 5"):
        comp.decompress(_handmade("qsgd", qsgd, 3, levels=4, bucket=2))
    with pytest.raises(ValueError, match="strictly increasing"):
        comp.decompress(_handmade("topk", topk, 100, k=2))


def test_decode_trusts_validation_but_stays_in_bounds() -> None:
    # Marked valid by hand (only from_bytes and compress do that): decompress decodes without
    # re-checking, so a level code above s decodes as is ...
    qsgd = _qsgd_bytes([2.0, 1.0], [0, 1, 0], [4, 5, 1], 4, 2, 3)[32:]
    m = _handmade("qsgd", qsgd, 3, levels=4, bucket=2)
    trusted = comp.Message._valid(*(getattr(m, f.name) for f in dataclasses.fields(m)))
    np.testing.assert_array_equal(comp.decompress(trusted), [2.0, -2.5, 0.25])
    # ... but an index out of range is still refused, never written
    bad = _topk_bytes([5, 127])[24:]  # D = 100, the 7-bit field holds 127
    m = _handmade("topk", bad, 100, k=2)
    trusted = comp.Message._valid(*(getattr(m, f.name) for f in dataclasses.fields(m)))
    with pytest.raises(ValueError, match="out of range"):
        comp.decompress(trusted)
    with pytest.raises(ValueError, match="payload size"):
        _core.wire_decode(np.zeros(3, np.uint8), 1, 2, 100, 2, 0, False, 0, False)


@pytest.mark.parametrize("i", range(len(MESSAGES)))
def test_a_handmade_copy_of_every_kind_decodes_like_the_original(i) -> None:
    m = MESSAGES[i]
    copy = comp.Message(*(getattr(m, f.name) for f in dataclasses.fields(m)))
    assert not copy._validated
    np.testing.assert_array_equal(comp.decompress(copy), comp.decompress(m))
    assert copy.to_bytes() == m.to_bytes()


def test_handmade_natural_message_needs_the_dense_value_dtype() -> None:
    m = comp.Natural().compress(np.ones(5, np.float32))
    with pytest.raises(ValueError, match="value dtype must equal"):
        dataclasses.replace(m, value_dtype="float64")
