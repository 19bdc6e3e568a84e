"""Regression tests for inputs found by the fuzzers and the sanitizer harness (tests/fuzz/,
tests/native/). Each test reproduces its input inline and states the contract it checks
(DESIGN.md section 4). tests/fuzz/README.md lists the findings and the known-defect ids the
fuzz runs tolerate until they are fixed.

Some inputs only misbehave under the sanitizers (undefined behaviour that happens to give the
right answer in a normal build): their tests pass in a normal build and fail when the suite
runs against an extension built with CYCLAD_SANITIZE=address,undefined (see the README).
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import numpy as np
import pytest

import cyclad.aggregators as agg
import cyclad.compression as comp
from cyclad import coding
from tests import _arrays

F64_MAX = np.finfo(np.float64).max


def header(kind: int, dtype: int, vcode: int, D: int, *fields: int, flags: int = 0) -> bytes:
    return struct.pack("<2sBBBBBBQ", b"CZ", 1, kind, dtype, vcode, flags, 0, D) + b"".join(
        struct.pack("<Q", f) for f in fields
    )


# --------------------------------------------------------------------------------------------
# wire format
# --------------------------------------------------------------------------------------------


def test_wire_huge_dim_needs_a_bound() -> None:
    """A 32-byte top-k message (k = 1) claiming D = 2^32 - 1 must not parse without a bound:
    decompressing it allocates D elements (17 GB of float32). Found by the wire targets;
    they pass dim= to avoid the allocation."""
    b = header(1, 1, 2, 2**32 - 1, 1) + bytes(4) + struct.pack("<f", 1.0)
    assert len(b) == 32
    with pytest.raises(ValueError, match=r"D=4294967295, above max_dim="):
        comp.Message.from_bytes(b)  # never decompressed here: that would allocate 17 GB


def test_wire_huge_dim_with_dim_is_rejected() -> None:
    b = header(1, 1, 2, 2**32 - 1, 1) + bytes(4) + struct.pack("<f", 1.0)
    with pytest.raises(ValueError, match="dim"):
        comp.Message.from_bytes(b, dim=1000)


def _finite_or_rejected(b: bytes, dim: int) -> None:
    try:
        msg = comp.Message.from_bytes(b, dim=dim)
    except ValueError:
        return
    out = comp.decompress(msg)
    assert np.isfinite(out).all(), f"{msg!r} decodes to {out}"


def test_wire_sign_scale_beyond_float32() -> None:
    """A float32 sign message whose float64 scale (1e300) is finite on the wire but overflows
    the float32 output: validation checks the scale is finite, so the decoded vector must be
    finite too -- or the message is rejected. Today it decodes to +-inf
    (known defect 'decode-overflow')."""
    b = header(4, 1, 3, 3) + struct.pack("<d", 1e300) + bytes([0b101])
    _finite_or_rejected(b, 3)


def test_wire_qsgd_norm_beyond_float32() -> None:
    """The same for a QSGD norm: D = 2, s = 1, one bucket, norm 1e300 as float64, dense dtype
    float32, levels (1, 0). Today it decodes to [inf, -0.0]."""
    b = header(3, 1, 3, 2, 1, 2) + struct.pack("<d", 1e300) + bytes([0b10]) + bytes([0b01])
    _finite_or_rejected(b, 2)


@pytest.mark.parametrize("vcode", [1, 2])
def test_wire_narrow_values_still_decode(vcode: int) -> None:
    """Control: a float16 / float32 scale within range decodes to finite values."""
    vb = {1: struct.pack("<e", 2.0), 2: struct.pack("<f", 2.0)}[vcode]
    b = header(4, 1, vcode, 3) + vb + bytes([0b101])
    np.testing.assert_array_equal(
        comp.decompress(comp.Message.from_bytes(b, dim=3)),
        np.array([-2.0, 2.0, -2.0], dtype=np.float32),
    )


# --------------------------------------------------------------------------------------------
# top-k selection
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("D", "nonzero", "k"),
    [(64, [3], 1), (64, [3, 40], 2), (33, [31, 32], 1), (100, [0, 1, 99], 3), (96, [70], 2)],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_topk_blocks_with_few_candidates(D, nonzero, k, dtype) -> None:
    """The top-k candidate filter handles 32-element blocks; a block with at most two
    candidates made it call __builtin_ctzll(0) (undefined behaviour, select.hpp
    filter_block; found by tests/native/fuzz_kernels under UBSan, known defect 'topk-ctz').
    The normal build happens to return the right indices; under CYCLAD_SANITIZE UBSan aborts."""
    x = np.zeros(D, dtype=dtype)
    x[nonzero] = np.arange(1, len(nonzero) + 1, dtype=dtype)
    msg = comp.TopK(k=k).compress(x)
    out = comp.decompress(msg)
    order = sorted(nonzero, key=lambda i: (-abs(float(x[i])), i))[:k]
    want = np.zeros(D, dtype=dtype)
    want[order] = x[order]
    # With fewer nonzeros than k, zeros fill in by lowest index: values are zero either way.
    np.testing.assert_array_equal(out, want)


# --------------------------------------------------------------------------------------------
# distance-based rules with huge finite float64 rows
# --------------------------------------------------------------------------------------------


def _huge_rows(n: int = 7, D: int = 4, scale: float = 1e300, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, D)) * scale


def _in_honest_range(out: np.ndarray, honest: np.ndarray) -> bool:
    return bool(np.all(out >= honest.min(axis=0)) and np.all(out <= honest.max(axis=0)))


@pytest.mark.parametrize("scale", [1e155, 1e300])
def test_geometric_median_huge_finite_rows(scale: float) -> None:
    """Finite float64 rows whose squared distances overflow double: the geometric median
    returns NaN today (the Weiszfeld weights become 0/0; known defect
    'robust-finite/geometric_median'). Distances must be computed overflow-safely."""
    X = _huge_rows(5, 8, scale)
    out = agg.geometric_median(X)
    assert np.isfinite(out).all(), out


def test_krum_does_not_select_a_huge_row() -> None:
    """Honest rows at 1e300 and one Byzantine row of -DBL_MAX (f = 1, n = 7 >= 2f + 3): every
    distance overflows to +inf, the scores tie, and Krum returns the Byzantine row 0 today
    (known defect 'robust-range/krum'; tests/native/fuzz_kernels sweep)."""
    X = _huge_rows()
    X[0] = -F64_MAX
    out = agg.krum(X, 1)
    assert any(np.array_equal(out, row) for row in X[1:]), out


def test_multi_krum_huge_rows_finite() -> None:
    """Multi-Krum on the same input averages the -DBL_MAX row in and returns -inf today
    (known defect 'robust-range/multi_krum')."""
    X = _huge_rows()
    X[0] = -F64_MAX
    out = agg.multi_krum(X, 1)
    assert np.isfinite(out).all(), out
    assert _in_honest_range(out, X[1:]), out


def test_nnm_honest_rows_stay_finite_with_huge_rows() -> None:
    """NNM with at most f poisoned rows keeps every honest output row finite. With honest rows
    at 1e300 the distances overflow, the neighbour sets include the -DBL_MAX row, and every
    honest output row overflows today (known defect 'robust-finite/nnm')."""
    X = _huge_rows()
    X[0] = -F64_MAX
    out = agg.nnm(X, 1)
    assert np.isfinite(out[1:]).all(), out


def test_nnm_then_trimmed_mean_huge_rows() -> None:
    X = _huge_rows()
    X[0] = -F64_MAX
    out = agg.get("nnm+trimmed_mean", f=1)(X)
    assert np.isfinite(out).all(), out


# --------------------------------------------------------------------------------------------
# coding
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["shift", "fixed", "permute"])
def test_cyclic_code_with_n_beyond_int64(mode: str) -> None:
    """CyclicCode(n=2^63, d=1) is accepted (n has no upper bound); assignment() then raises
    OverflowError (shift), IndexError (fixed) or NumPy's "Maximum allowed dimension exceeded"
    (permute, a ValueError that does not name n): outside the contract of a ValueError naming
    the argument (found by the atheris coding target; known defect 'coding-huge-n'). 2^63
    fails before allocating anything; a large n below it would try to allocate n int64."""
    with pytest.raises(ValueError, match=r"\bn\b"):
        coding.CyclicCode(2**63, 1, mode=mode).assignment(0)


# --------------------------------------------------------------------------------------------
# misaligned inputs
# --------------------------------------------------------------------------------------------


def _misaligned(a: np.ndarray) -> np.ndarray:
    """The same values with the data pointer at an odd byte offset (C-contiguous, unaligned)."""
    m = _arrays.misaligned(a)
    assert not m.flags.aligned
    assert m.flags.c_contiguous
    return m


CALLS = {
    "mean": lambda X: agg.mean(X),
    "median": lambda X: agg.median(X),
    "trimmed_mean": lambda X: agg.trimmed_mean(X, 2),
    "meamed": lambda X: agg.meamed(X, 2),
    "krum": lambda X: agg.krum(X, 2),
    "multi_krum": lambda X: agg.multi_krum(X, 2),
    "geometric_median": lambda X: agg.geometric_median(X),
    "centered_clipping": lambda X: agg.centered_clipping(X, 1.0, iters=2),
    "nnm": lambda X: agg.nnm(X, 2),
    "bucketing": lambda X: agg.bucketing(X, 2, 7),
    "clip": lambda X: agg.clip(X, 1.0),
    "arc": lambda X: agg.arc(X, 2),
    "encode": lambda X: coding.encode(X, np.array([[0, 1], [2, 3], [4, 0]])),
    "topk": lambda X: comp.TopK(k=5)(X.ravel()),
    "qsgd": lambda X: comp.QSGD(levels=4)(X.ravel(), seed=1),
    "natural": lambda X: comp.Natural()(X.ravel(), seed=1),
    "terngrad": lambda X: comp.TernGrad(bucket=16)(X.ravel(), seed=1),
}


@pytest.mark.parametrize("call", sorted(CALLS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_misaligned_input(call: str, dtype) -> None:
    """A C-contiguous but misaligned array (np.frombuffer at an odd offset) reaches the kernels,
    which load it as naturally aligned: undefined behaviour that UBSan reports (alignment)
    under CYCLAD_SANITIZE; x86 tolerates it in a normal build. The result must equal the one
    for an aligned copy."""
    X = np.random.default_rng(3).standard_normal((9, 37)).astype(dtype)
    want = CALLS[call](X.copy())
    got = CALLS[call](_misaligned(X))
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_meamed_leaves_the_box_by_its_documented_bound(dtype) -> None:
    """Meamed keeps the n - f values closest to the median, and a finite adversarial value can
    be among them while lying outside the honest range: with honest 0, 10, 11 and one
    adversarial 12.5 (f = 1) the median is 10.5, the kept values 10, 11, 12.5, the result
    11.1667 > 11. The documented bound widens the honest box by f / (n - f) * W (here 11/3);
    the aggregators fuzz target asserted the unwidened box (found in a CI fuzz run)."""
    X = np.array([[0.0], [10.0], [11.0], [12.5]], dtype=dtype)
    out = agg.meamed(X, 1)
    assert out[0] == pytest.approx(33.5 / 3, rel=1e-6)
    assert 11.0 < float(out[0]) <= 11.0 + 1 / 3 * 11.0


def test_geometric_median_tol_zero_terminates() -> None:
    # Aggregators fuzz target: with tol=0 and max_iter=2**63 (clamped to 2**63 - 1, "until tol
    # is met"), these rows made the Weiszfeld iterates cycle at the last bits, and the call never
    # returned. The loop now also stops after 64 steps in a row no shorter than the shortest
    # one (a cycle at double precision). Run in a child
    # process so that a regression fails the test instead of hanging the suite.
    code = (
        "import json\n"
        "import cyclad.aggregators as agg, numpy as np\n"
        "X = [[-0.0004626679583452642, 3.4028234663852886e+38],\n"
        "     [3.4028234663852886e+38, -0.0012211372377350926],\n"
        "     [0.0004331072559580207, 3.4028234663852886e+38],\n"
        "     [-0.0020720642060041428, 3.4028234663852886e+38],\n"
        "     [-0.0017405292019248009, 3.4028234663852886e+38]]\n"
        "z = agg.geometric_median(X, eps=1e-8, max_iter=2**63, tol=0.0)\n"
        "assert np.isfinite(z).all(), z\n"
        "print(json.dumps(z.tolist()))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    z = np.array(json.loads(r.stdout))
    X = np.array([[0.0, 3.4028234663852886e38], [3.4028234663852886e38, 0.0]] + [[0.0, 3.4e38]] * 3)
    assert z.shape == (2,)
    # Four of five rows sit at (~0, FLT_MAX): the geometric median is essentially there.
    assert abs(z[0]) < 1e36
    assert abs(z[1] - X[0, 1]) < 1e36


def test_geometric_median_tol_zero_stops_when_steps_stop_shrinking(rng) -> None:
    X = rng.standard_normal((9, 40))
    z1 = agg.geometric_median(X, max_iter=10**6, tol=0.0)
    z2 = agg.geometric_median(X, max_iter=2**63, tol=0.0)
    np.testing.assert_array_equal(z1, z2)  # both stop at the same fixed point, far below 10**6
    np.testing.assert_allclose(z1, agg.geometric_median(X, max_iter=500, tol=1e-12), atol=1e-9)


def test_krum_may_select_a_close_adversarial_row(dtype) -> None:
    """Krum's guarantee against finite adversarial rows is a distance, not the honest box: two
    identical adversarial rows just outside the box score lower than every honest row (each
    has a neighbour at distance 0), and Krum returns one of them. It is within
    Delta * sqrt((n - f - 2) / (n - 2f - 1)) of an honest row, as documented; the aggregators
    fuzz target asserted the plain box (found in its long run, n = 7, f = 2 and n = 31, f = 14)."""
    H = np.array([[-3.0, 0.0], [3.0, 0.0], [0.0, -3.0], [0.0, 3.0], [-3.0, -3.0]])
    X = np.vstack([H, [[3.5, 3.5], [3.5, 3.5]]]).astype(dtype)
    n, f = X.shape[0], 2
    out = agg.krum(X, f).astype(np.float64)
    np.testing.assert_array_equal(out, [3.5, 3.5])  # an adversarial row, outside the box
    delta = max(np.linalg.norm(a - b) for a in H for b in H)
    bound = delta * np.sqrt((n - f - 2) / (n - 2 * f - 1))
    assert min(np.linalg.norm(out - h) for h in H) <= bound
    # Farther than the bound from every honest row, the same pair is never selected.
    far = np.vstack([H, [[40.0, 40.0], [40.0, 40.0]]]).astype(dtype)
    assert any(np.array_equal(agg.krum(far, f), h.astype(dtype)) for h in H)
