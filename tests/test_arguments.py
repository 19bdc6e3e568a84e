"""Argument handling at the boundary to the kernels: misaligned arrays are copied once (aligned
C-contiguous inputs are not copied at all), and every integer argument is checked against the
range of the C++ type it reaches (ValueError naming the argument and the range) or, where a huge
value has a defined meaning, clamped."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import cyclad.aggregators as agg
from cyclad import _core, _validation, coding
from tests import _arrays

INT_MAX, INT64_MAX, UINT64_MAX = 2**31 - 1, 2**63 - 1, 2**64 - 1
HUGE = [2**31, 2**63, 2**64]
NP_INTS = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]

# Every aggregator of the public API: name -> (call(X, **kw), name of the _core function).
CALLS = {
    "mean": (lambda X, **kw: agg.mean(X, **kw), "mean"),
    "median": (lambda X, **kw: agg.median(X, **kw), "median"),
    "trimmed_mean": (lambda X, **kw: agg.trimmed_mean(X, 2, **kw), "trimmed_mean"),
    "meamed": (lambda X, **kw: agg.meamed(X, 2, **kw), "meamed"),
    "krum": (lambda X, **kw: agg.krum(X, 2, **kw), "krum"),
    "multi_krum": (lambda X, **kw: agg.multi_krum(X, 2, 3, **kw), "multi_krum"),
    "geometric_median": (lambda X, **kw: agg.geometric_median(X, **kw), "geometric_median"),
    "centered_clipping": (
        lambda X, **kw: agg.centered_clipping(X, 1.0, 2, **kw),
        "centered_clipping",
    ),
    "nnm": (lambda X, **kw: agg.nnm(X, 2, **kw), "nnm"),
    "bucketing": (lambda X, **kw: agg.bucketing(X, 2, 5, **kw), "bucketing"),
    "clip": (lambda X, **kw: agg.clip(X, 1.0, **kw), "clip"),
    "arc": (lambda X, **kw: agg.arc(X, 2, **kw), "arc"),
    "mean_weighted": (
        lambda X, **kw: agg.mean(X, weights=np.arange(1.0, X.shape[0] + 1), **kw),
        "weighted_mean",
    ),
    "multi_krum_weighted": (
        lambda X, **kw: agg.multi_krum(X, 2, 3, weights=np.ones(X.shape[0]), **kw),
        "multi_krum",
    ),
    "closest": (lambda X, **kw: agg.closest(X, np.zeros(X.shape[1]), 3, **kw), "closest"),
    "closest_coordinate": (
        lambda X, **kw: agg.closest(X, np.zeros(X.shape[1]), 3, metric="coordinate", **kw),
        "closest_coordinates",
    ),
    "bulyan": (lambda X, **kw: agg.bulyan(X, 1, **kw), "bulyan"),
    "bulyan_multi_krum": (
        lambda X, **kw: agg.bulyan(X, 1, selection="multi_krum", **kw),
        "bulyan",
    ),
    "mda": (lambda X, **kw: agg.mda(X, 2, **kw), "mda"),
    "smea": (lambda X, **kw: agg.smea(X, 2, **kw), "smea"),
    "caf": (lambda X, **kw: agg.caf(X, 2, **kw), "caf"),
}
NAMES = list(CALLS)


def test_calls_cover_every_registered_component() -> None:
    names = agg.available()
    assert set(names["rules"]) | set(names["pre_aggregations"]) <= set(CALLS)


def misaligned(X: np.ndarray, offset: int = 1) -> np.ndarray:
    """A writable copy of ``X`` whose data starts ``offset`` bytes into a bytearray (so its
    address is not a multiple of the element size)."""
    out = _arrays.misaligned(X, offset)
    assert not out.flags.aligned
    assert out.flags.c_contiguous
    return out


def misaligned_readonly(X: np.ndarray, offset: int = 3) -> np.ndarray:
    """A read-only view into a ``bytes`` object at an odd offset."""
    raw = b"\0" * offset + np.ascontiguousarray(X).tobytes()
    out = np.frombuffer(raw, dtype=X.dtype, offset=offset).reshape(X.shape)
    assert not out.flags.aligned
    assert not out.flags.writeable
    return out


@pytest.fixture
def X(rng, dtype) -> np.ndarray:
    return (rng.standard_normal((7, 13)) * rng.uniform(0.5, 2.0, (7, 1))).astype(dtype)


# --------------------------------------------------------------------------------------------
# misaligned inputs
# --------------------------------------------------------------------------------------------


def _spy_alignment(monkeypatch, core_name: str) -> list[tuple[bool, bool]]:
    """Record (aligned, C-contiguous) of every array argument reaching ``_core.<core_name>``."""
    seen: list[tuple[bool, bool]] = []
    original = getattr(_core, core_name)

    def spy(*args, **kw):
        for a in (*args, *kw.values()):
            if isinstance(a, np.ndarray):
                seen.append((bool(a.flags.aligned), bool(a.flags.c_contiguous)))
        return original(*args, **kw)

    monkeypatch.setattr(_core, core_name, spy)
    return seen


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("make", [misaligned, misaligned_readonly], ids=["bytearray", "bytes"])
def test_misaligned_numpy_equals_aligned(name, make, X, monkeypatch) -> None:
    call, core_name = CALLS[name]
    expected = call(X.copy())
    M = make(X)
    seen = _spy_alignment(monkeypatch, core_name)
    got = call(M)
    assert seen
    assert all(a and c for a, c in seen)
    assert got.dtype == X.dtype
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(M, X)  # never modified


@pytest.mark.parametrize("name", NAMES)
def test_misaligned_strided_view_equals_aligned(name, X) -> None:
    # A column slice of a misaligned array: neither contiguous nor aligned.
    call, _ = CALLS[name]
    wide = misaligned(np.hstack([X, X]))
    view = wide[:, 1 : 1 + X.shape[1]]
    np.testing.assert_array_equal(call(view), call(np.ascontiguousarray(view)))


@pytest.mark.parametrize("name", NAMES)
def test_misaligned_torch_equals_aligned(name, X) -> None:
    torch = pytest.importorskip("torch")
    call, _ = CALLS[name]
    expected = call(X.copy())
    tdtype = torch.float32 if X.dtype == np.float32 else torch.float64
    buf = bytearray(X.nbytes + 1)
    t = torch.frombuffer(buf, dtype=tdtype, count=X.size, offset=1).reshape(X.shape)
    t.copy_(torch.from_numpy(X.copy()))
    assert t.data_ptr() % X.itemsize != 0
    out = call(t)
    assert isinstance(out, torch.Tensor)
    np.testing.assert_array_equal(out.numpy(), expected)
    # The same storage seen through DLPack (torch -> NumPy and NumPy -> torch).
    np.testing.assert_array_equal(call(np.from_dlpack(t)), expected)
    t2 = torch.from_dlpack(misaligned(X))
    assert t2.data_ptr() % X.itemsize != 0
    np.testing.assert_array_equal(call(t2).numpy(), expected)


@pytest.mark.parametrize("name", agg.available()["rules"])
def test_misaligned_registry_composition(name, X) -> None:
    params = {"f": 2, "tau": 1.0, "s": 2, "seed": 1, "reference": np.zeros(X.shape[1]), "beta": 2}
    for pre in ("", "nnm+", "clip+", "arc+", "bucketing+"):
        spec = pre + name
        f = 1 if pre == "bucketing+" else 2
        if name == "bulyan":  # n >= 4f + 3 at the rule: 7 rows, or 4 buckets
            f = 0 if pre == "bucketing+" else 1
        a = agg.get(spec, **{k: v for k, v in {**params, "f": f}.items() if k in _accepted(spec)})
        np.testing.assert_array_equal(a(misaligned(X)), a(X.copy()))


def _accepted(spec: str) -> set[str]:
    names: set[str] = set()
    for part in spec.split("+"):
        names |= set(inspect.signature(getattr(agg, part)).parameters) - {"X", "threads"}
    return names


def test_misaligned_center(rng, dtype) -> None:
    X = rng.standard_normal((6, 9)).astype(dtype)
    c = rng.standard_normal(9)
    expected = agg.centered_clipping(X, 0.7, 3, c)
    np.testing.assert_array_equal(agg.centered_clipping(X, 0.7, 3, misaligned(c)), expected)
    np.testing.assert_array_equal(
        agg.centered_clipping(X, 0.7, 3, misaligned(c.astype(np.float32))),
        agg.centered_clipping(X, 0.7, 3, c.astype(np.float32)),
    )


@pytest.mark.parametrize("weights", ["none", "row", "matrix"])
def test_misaligned_encode_equals_aligned(rng, dtype, weights, monkeypatch) -> None:
    n, d, D = 6, 3, 11
    G = rng.standard_normal((n, D)).astype(dtype)
    A = coding.CyclicCode(n, d, seed=4).assignment(2)
    W = {
        "none": None,
        "row": rng.standard_normal(d).astype(dtype),
        "matrix": rng.standard_normal((n, d)).astype(dtype),
    }[weights]
    expected = coding.encode(G.copy(), A.copy(), None if W is None else W.copy())
    seen = _spy_alignment(monkeypatch, "encode")
    got = coding.encode(misaligned(G), misaligned(A), None if W is None else misaligned(W, 3))
    assert len(seen) == 3
    assert all(a and c for a, c in seen)
    np.testing.assert_array_equal(got, expected)
    # Only the int64 assignment misaligned, and through the CyclicCode / GradientCode helpers.
    np.testing.assert_array_equal(coding.encode(G, misaligned(A, 5)), coding.encode(G, A))
    code = coding.CyclicCode(n, d, seed=4)
    np.testing.assert_array_equal(code.encode(misaligned(G), 2), code.encode(G, 2))
    gc = coding.GradientCode(n, 2)
    np.testing.assert_array_equal(gc.encode(misaligned(G)), gc.encode(G))
    z = gc.encode(G)
    r = np.arange(1, n)
    np.testing.assert_array_equal(gc.decode(misaligned(z[r]), misaligned(r)), gc.decode(z[r], r))


def test_misaligned_torch_encode(rng, dtype) -> None:
    torch = pytest.importorskip("torch")
    G = rng.standard_normal((5, 7)).astype(dtype)
    A = coding.CyclicCode(5, 2, seed=1).assignment(0)
    t = torch.from_dlpack(misaligned(G))
    out = coding.encode(t, torch.from_dlpack(misaligned(A)))
    assert isinstance(out, torch.Tensor)
    np.testing.assert_array_equal(out.numpy(), coding.encode(G, A))


# --- zero copy for aligned inputs, one copy for the others -----------------------------------


def test_aligned_c_contiguous_is_not_copied(dtype) -> None:
    X = np.arange(30, dtype=dtype).reshape(5, 6)
    out, _ = _validation.as_float_array(X, ndim=2)
    assert out is X or (np.shares_memory(out, X) and out.ctypes.data == X.ctypes.data)
    ro = X.copy()
    ro.flags.writeable = False
    out, _ = _validation.as_float_array(ro, ndim=2)
    assert out.ctypes.data == ro.ctypes.data
    A = np.arange(12, dtype=np.int64).reshape(4, 3) % 5
    idx = _validation.as_index_array(A, "a", ndim=2, shape="(n, d)", bound=5, bound_name="N")
    assert idx.ctypes.data == A.ctypes.data


def test_aligned_torch_tensor_is_not_copied(dtype) -> None:
    torch = pytest.importorskip("torch")
    t = torch.arange(30, dtype=torch.float32 if dtype == np.float32 else torch.float64)
    t = t.reshape(5, 6)
    out, wrap = _validation.as_float_array(t, ndim=2)
    assert out.ctypes.data == t.data_ptr()
    assert isinstance(wrap(out), torch.Tensor)


@pytest.mark.parametrize("offset", [1, 2, 3, 5])
def test_misaligned_is_copied_once_into_aligned_memory(dtype, offset) -> None:
    X = np.arange(30, dtype=dtype).reshape(5, 6)
    M = misaligned(X, offset)
    out, _ = _validation.as_float_array(M, ndim=2)
    assert out.flags.aligned
    assert out.flags.c_contiguous
    assert out.dtype == dtype
    assert not np.shares_memory(out, M)
    np.testing.assert_array_equal(out, X)
    A = misaligned(np.arange(12, dtype=np.int64).reshape(4, 3), offset)
    idx = _validation.as_index_array(A, "a", ndim=2, shape="(n, d)", bound=12, bound_name="N")
    assert idx.flags.aligned
    assert idx.flags.c_contiguous
    assert idx.dtype == np.int64
    np.testing.assert_array_equal(idx, A)


def test_other_layouts_become_aligned_c_contiguous(dtype) -> None:
    X = np.arange(42, dtype=dtype).reshape(6, 7)
    for Y in (
        np.asfortranarray(X),
        X[::-1],
        X[:, ::2],
        X.astype(X.dtype.newbyteorder(">")),
        misaligned(X)[::-1],
    ):
        out, _ = _validation.as_float_array(Y, ndim=2)
        assert out.flags.aligned
        assert out.flags.c_contiguous
        assert out.dtype == dtype  # float32 stays float32 in either byte order
        np.testing.assert_array_equal(out, Y)


# --------------------------------------------------------------------------------------------
# integer arguments: range of the C++ type, or a documented clamp
# --------------------------------------------------------------------------------------------


def _range_error(name: str, hi: int | str):
    return pytest.raises(ValueError, match=rf"{name}.* must be in \[\d+, {hi}\]")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("threads", [*HUGE, -1, 0, np.int64(2**31), np.uint64(UINT64_MAX)])
def test_threads_past_int_max(name, threads, X) -> None:
    call, _ = CALLS[name]
    with _range_error("threads", INT_MAX):
        call(X, threads=threads)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("typ", NP_INTS)
def test_threads_numpy_integers_and_int_max(name, typ, X) -> None:
    call, _ = CALLS[name]
    expected = call(X, threads=1)
    np.testing.assert_array_equal(call(X, threads=typ(2)), expected)
    np.testing.assert_array_equal(call(X, threads=INT_MAX), expected)  # capped by the work


def test_threads_of_registry_and_coding(rng) -> None:
    X = rng.standard_normal((7, 5))
    for t in [*HUGE, -1]:
        with _range_error("threads", INT_MAX):
            agg.get("nnm+krum", f=1, threads=t)
        with _range_error("threads", INT_MAX):
            coding.encode(X, np.zeros((2, 1), dtype=np.int64), threads=t)
        with _range_error("threads", INT_MAX):
            coding.CyclicCode(7, 2).encode(X, 0, threads=t)
    out = coding.encode(X, np.zeros((2, 1), dtype=np.int64), threads=np.uint8(2))
    np.testing.assert_array_equal(out, coding.encode(X, np.zeros((2, 1), dtype=np.int64)))


F_RULES = {
    "trimmed_mean": lambda X, f: agg.trimmed_mean(X, f),
    "meamed": lambda X, f: agg.meamed(X, f),
    "krum": lambda X, f: agg.krum(X, f),
    "multi_krum": lambda X, f: agg.multi_krum(X, f),
    "nnm": lambda X, f: agg.nnm(X, f),
    "arc": lambda X, f: agg.arc(X, f),
    "krum_byzfl": lambda X, f: agg.krum(X, f, neighbors="byzfl"),
    "multi_krum_flower": lambda X, f: agg.multi_krum(X, f, neighbors="flower"),
    "bulyan": lambda X, f: agg.bulyan(np.vstack([X, X]), f),
    "registry": lambda X, f: agg.get("nnm+trimmed_mean", f=f)(X),
}


@pytest.mark.parametrize("rule", list(F_RULES))
@pytest.mark.parametrize("f", [*HUGE, -1, np.uint64(UINT64_MAX), np.int64(-1)])
def test_f_past_the_range(rule, f, X) -> None:
    with pytest.raises(ValueError, match=r"f .*must be in \[0, \d+\]"):
        F_RULES[rule](X, f)


@pytest.mark.parametrize("rule", list(F_RULES))
@pytest.mark.parametrize("typ", NP_INTS)
def test_f_numpy_integers(rule, typ, X) -> None:
    np.testing.assert_array_equal(F_RULES[rule](X, typ(2)), F_RULES[rule](X, 2))


@pytest.mark.parametrize("m", [*HUGE, -1, 0, np.uint64(UINT64_MAX)])
def test_multi_krum_m_past_the_range(m, X) -> None:
    with pytest.raises(ValueError, match=r"m \(for multi_krum with n=7 rows\) must be in \[1, 7\]"):
        agg.multi_krum(X, 2, m)


@pytest.mark.parametrize("typ", NP_INTS)
def test_multi_krum_m_numpy_integers(typ, X) -> None:
    np.testing.assert_array_equal(agg.multi_krum(X, 2, typ(3)), agg.multi_krum(X, 2, 3))


@pytest.mark.parametrize("s", [*HUGE, INT64_MAX, np.uint64(UINT64_MAX), np.int64(INT64_MAX)])
def test_bucketing_huge_s_is_one_bucket(s, X) -> None:
    # Documented clamp: any s >= n gives one bucket, the mean of all rows.
    out = agg.bucketing(X, s, 3)
    assert out.shape == (1, X.shape[1])
    np.testing.assert_array_equal(out, agg.bucketing(X, X.shape[0], 3))
    np.testing.assert_array_equal(
        agg.get("bucketing+median", s=s, seed=3)(X), agg.median(agg.bucketing(X, 7, 3))
    )


@pytest.mark.parametrize("s", [-1, 0, np.int64(-1), -(2**63)])
def test_bucketing_s_below_one(s, X) -> None:
    with pytest.raises(ValueError, match=r"s must be in \[1, inf\]"):
        agg.bucketing(X, s, 0)


@pytest.mark.parametrize("typ", NP_INTS)
def test_bucketing_numpy_integers(typ, X) -> None:
    np.testing.assert_array_equal(agg.bucketing(X, typ(2), typ(9)), agg.bucketing(X, 2, 9))


@pytest.mark.parametrize("seed", [2**31, 2**63, UINT64_MAX, np.uint64(UINT64_MAX)])
def test_bucketing_seed_in_range(seed, X) -> None:
    out = agg.bucketing(X, 2, seed)
    perm = agg.bucket_permutation(X.shape[0], int(seed))
    np.testing.assert_array_equal(out[0], X[perm[:2]].astype(np.float64).mean(0).astype(X.dtype))


@pytest.mark.parametrize("seed", [2**64, 2**65, -1, np.int64(-1)])
def test_bucketing_seed_past_the_range(seed, X) -> None:
    with _range_error("seed", UINT64_MAX):
        agg.bucketing(X, 2, seed)
    with _range_error("seed", UINT64_MAX):
        agg.bucket_permutation(5, seed)


@pytest.mark.parametrize("max_iter", [*HUGE, 2**100, np.uint64(UINT64_MAX), np.int64(INT64_MAX)])
def test_geometric_median_huge_max_iter_means_until_tol(max_iter, X) -> None:
    # Documented clamp: values past 2**63 - 1 run until tol is met, as 2**63 - 1 does.
    expected = agg.geometric_median(X, max_iter=100_000)
    np.testing.assert_array_equal(agg.geometric_median(X, max_iter=max_iter), expected)
    np.testing.assert_array_equal(
        agg.get("nnm+geometric_median", f=1, max_iter=max_iter)(X),
        agg.geometric_median(agg.nnm(X, 1), max_iter=100_000),
    )


@pytest.mark.parametrize("max_iter", [-1, 0, np.int64(-1)])
def test_geometric_median_max_iter_below_one(max_iter, X) -> None:
    with pytest.raises(ValueError, match=r"max_iter must be in \[1, inf\]"):
        agg.geometric_median(X, max_iter=max_iter)


@pytest.mark.parametrize("typ", NP_INTS)
def test_geometric_median_max_iter_numpy_integers(typ, X) -> None:
    np.testing.assert_array_equal(
        agg.geometric_median(X, max_iter=typ(3)), agg.geometric_median(X, max_iter=3)
    )


@pytest.mark.parametrize("iters", [2**63, 2**64, -1, 0, np.uint64(UINT64_MAX)])
def test_centered_clipping_iters_past_the_range(iters, X) -> None:
    with _range_error("iters", INT64_MAX):
        agg.centered_clipping(X, 1.0, iters)


@pytest.mark.parametrize("iters", [2**31, INT64_MAX, np.int64(INT64_MAX), np.uint64(2**63 - 1)])
def test_centered_clipping_iters_in_range_reach_the_kernel(iters, X, monkeypatch) -> None:
    # In range (up to int64): passed on unchanged as a Python int the binding accepts. (Not run:
    # 2**31 clipping iterations would take hours.)
    seen = []
    monkeypatch.setattr(_core, "centered_clipping", lambda x, tau, it, c, threads: seen.append(it))
    agg.centered_clipping(X, 1.0, iters)
    assert seen == [int(iters)]
    assert type(seen[0]) is int


def test_kernel_rejects_what_the_checks_stop(X) -> None:
    # Why the Python checks exist: the bindings take C++ ints and give a generic TypeError.
    with pytest.raises(TypeError):
        _core.centered_clipping(X, 1.0, 2**63, None)
    with pytest.raises(TypeError):
        _core.median(X, threads=2**31)


@pytest.mark.parametrize("typ", NP_INTS)
def test_centered_clipping_iters_numpy_integers(typ, X) -> None:
    np.testing.assert_array_equal(
        agg.centered_clipping(X, 1.0, typ(3)), agg.centered_clipping(X, 1.0, 3)
    )


# --- coding -----------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2**63, 2**64, -1, 0, np.uint64(UINT64_MAX)])
def test_coding_n_past_the_range(n) -> None:
    for make in (
        lambda: coding.CyclicCode(n, 1),
        lambda: coding.GradientCode(n, 0),
        lambda: coding.FractionalRepetitionCode(n, 0),
        lambda: coding.permutation(n, 0, 0),
    ):
        with _range_error("n", INT64_MAX):
            make()


def test_coding_n_in_range_is_accepted() -> None:
    # Constructing a code allocates nothing: n up to 2**63 - 1 is a valid argument.
    for n in (2**31, INT64_MAX, np.int64(INT64_MAX), np.uint64(2**40)):
        code = coding.CyclicCode(n, 1)
        assert code.n == int(n)
        assert type(code.n) is int


@pytest.mark.parametrize("d", [*HUGE, -1, 0, np.uint64(UINT64_MAX)])
def test_coding_d_past_the_range(d) -> None:
    with _range_error("d", 5):
        coding.CyclicCode(5, d)


@pytest.mark.parametrize("s", [*HUGE, -1, np.uint64(UINT64_MAX)])
def test_coding_s_past_the_range(s) -> None:
    with pytest.raises(ValueError, match=r"s must be in \[0, 5\]"):
        coding.GradientCode(6, s)
    with pytest.raises(ValueError, match=r"s must be in \[0, 5\]"):
        coding.FractionalRepetitionCode(6, s)


@pytest.mark.parametrize("seed", [2**64, 2**65, -1, np.int64(-1)])
def test_coding_seed_and_t_past_the_range(seed) -> None:
    with _range_error("seed", UINT64_MAX):
        coding.CyclicCode(5, 2, seed=seed)
    with _range_error("seed", UINT64_MAX):
        coding.GradientCode(5, 2, seed=seed)
    with _range_error("seed", UINT64_MAX):
        coding.permutation(5, seed, 0)
    with _range_error("t", UINT64_MAX):
        coding.permutation(5, 0, seed)
    code = coding.CyclicCode(5, 2)
    for method in (code.assignment, code.permutation, code.counts):
        with _range_error("t", UINT64_MAX):
            method(seed)
    with _range_error("t", UINT64_MAX):
        code.encode(np.ones((5, 3)), seed)


@pytest.mark.parametrize("value", [2**31, 2**63, UINT64_MAX, np.uint64(UINT64_MAX)])
def test_coding_seed_and_t_in_range(value) -> None:
    for mode in ("permute", "shift", "fixed"):
        code = coding.CyclicCode(5, 2, mode=mode, seed=value)
        a = code.assignment(value)
        assert a.shape == (5, 2)
        assert sorted(a[:, 0].tolist()) == list(range(5))
        np.testing.assert_array_equal(
            a, coding.CyclicCode(5, 2, mode, int(value)).assignment(int(value))
        )
    gc = coding.GradientCode(5, 2, seed=value)
    np.testing.assert_allclose(gc.decode_weights([0, 1, 2]) @ gc.B[[0, 1, 2]], np.ones(5))


@pytest.mark.parametrize("typ", NP_INTS)
def test_coding_numpy_integers(typ) -> None:
    code = coding.CyclicCode(typ(6), typ(2), seed=typ(7))
    ref_code = coding.CyclicCode(6, 2, seed=7)
    assert code == ref_code
    np.testing.assert_array_equal(code.assignment(typ(3)), ref_code.assignment(3))
    np.testing.assert_array_equal(
        coding.GradientCode(typ(6), typ(2)).B, coding.GradientCode(6, 2).B
    )
    assert coding.FractionalRepetitionCode(typ(6), typ(2)).n == 6


def test_coding_rejects_bool_and_float_integers() -> None:
    with pytest.raises(TypeError, match="n must be an integer"):
        coding.CyclicCode(True, 1)
    with pytest.raises(TypeError, match="t must be an integer"):
        coding.CyclicCode(4, 1).assignment(1.0)


def test_core_rejects_misaligned_arrays_directly() -> None:
    # The last line of defence: _core itself never loads through a misaligned typed pointer.
    buf = bytearray(8 * 41)
    X = np.frombuffer(buf, dtype=np.float64, offset=1, count=40).reshape(4, 10)
    assert not X.flags.aligned
    v = np.frombuffer(buf, dtype=np.float32, offset=2, count=10)
    for call in (
        lambda: _core.mean(X),
        lambda: _core.krum(X, 1),
        lambda: _core.geometric_median(X, 1e-8, 10, 1e-7),
        lambda: _core.topk_indices(v, 2),
    ):
        with pytest.raises(ValueError, match="aligned"):
            call()
    with pytest.raises(ValueError, match="aligned"):
        _core.read_pass(np.frombuffer(buf, dtype=np.uint8, offset=3, count=64))


# --------------------------------------------------------------------------------------------
# errors carry the argument's name as data
# --------------------------------------------------------------------------------------------

ARGUMENT_ERRORS = {
    "X 1-D": (lambda X: agg.mean(X[0]), _validation.ArgumentError, "X"),
    "X empty": (lambda X: agg.median(X[:0]), _validation.ArgumentError, "X"),
    "X complex": (lambda X: agg.mean(X.astype(np.complex64)), _validation.ArgumentTypeError, "X"),
    "X not array-like": (lambda X: agg.mean(object()), _validation.ArgumentTypeError, "X"),
    "X too few rows": (lambda X: agg.krum(X[:2], 0), _validation.ArgumentError, "X"),
    "f trim range": (lambda X: agg.trimmed_mean(X, 4), _validation.ArgumentError, "f"),
    "f trim type": (lambda X: agg.trimmed_mean(X, 1.5), _validation.ArgumentTypeError, "f"),
    "f krum range": (lambda X: agg.krum(X, 5), _validation.ArgumentError, "f"),
    "f krum bool": (lambda X: agg.krum(X, True), _validation.ArgumentTypeError, "f"),
    "f nnm range": (lambda X: agg.nnm(X, -1), _validation.ArgumentError, "f"),
    "m range": (lambda X: agg.multi_krum(X, 2, 8), _validation.ArgumentError, "m"),
    "neighbors": (lambda X: agg.krum(X, 1, neighbors="x"), _validation.ArgumentError, "neighbors"),
    "weights nan": (
        lambda X: agg.mean(X, weights=np.full(X.shape[0], np.nan)),
        _validation.ArgumentError,
        "weights",
    ),
    "beta range": (
        lambda X: agg.closest(X, np.zeros(X.shape[1]), 0),
        _validation.ArgumentError,
        "beta",
    ),
    "f bulyan range": (lambda X: agg.bulyan(X, 2), _validation.ArgumentError, "f"),
    "threads range": (lambda X: agg.mean(X, threads=0), _validation.ArgumentError, "threads"),
    "threads type": (lambda X: agg.mean(X, threads="2"), _validation.ArgumentTypeError, "threads"),
    "tau range": (lambda X: agg.clip(X, 0.0), _validation.ArgumentError, "tau"),
    "tau finite": (lambda X: agg.centered_clipping(X, np.inf), _validation.ArgumentError, "tau"),
    "eps range": (lambda X: agg.geometric_median(X, eps=-1.0), _validation.ArgumentError, "eps"),
    "iters range": (lambda X: agg.centered_clipping(X, 1.0, 0), _validation.ArgumentError, "iters"),
    "center shape": (
        lambda X: agg.centered_clipping(X, 1.0, center=np.zeros(3)),
        _validation.ArgumentError,
        "center",
    ),
    "center finite": (
        lambda X: agg.centered_clipping(X, 1.0, center=np.full(X.shape[1], np.nan)),
        _validation.ArgumentError,
        "center",
    ),
    "s range": (lambda X: agg.bucketing(X, 0, 1), _validation.ArgumentError, "s"),
    "seed range": (lambda X: agg.bucketing(X, 2, -1), _validation.ArgumentError, "seed"),
    "get unknown name": (lambda X: agg.get("vote"), _validation.ArgumentError, "name"),
    "get empty name": (lambda X: agg.get(" "), _validation.ArgumentError, "name"),
    "get rule first": (lambda X: agg.get("krum+nnm", f=1), _validation.ArgumentError, "name"),
    "get missing f": (lambda X: agg.get("nnm+krum"), _validation.ArgumentError, "f"),
    "get unknown param": (
        lambda X: agg.get("median", tau=1.0),
        _validation.ArgumentError,
        "tau",
    ),
    "get stage f": (
        lambda X: agg.get("nnm+trimmed_mean", f=4)(X),
        _validation.ArgumentError,
        "f",
    ),
    "get stage type": (
        lambda X: agg.get("clip+mean", tau="big")(X),
        _validation.ArgumentTypeError,
        "tau",
    ),
    "coding d": (lambda X: coding.CyclicCode(5, 6), _validation.ArgumentError, "d"),
    "coding assignment": (
        lambda X: coding.encode(X, np.full((2, 2), 99)),
        _validation.ArgumentError,
        "assignment",
    ),
}


@pytest.mark.parametrize("case", list(ARGUMENT_ERRORS))
def test_error_names_the_argument(case, X) -> None:
    call, cls, argument = ARGUMENT_ERRORS[case]
    base = ValueError if issubclass(cls, ValueError) else TypeError
    with pytest.raises(base) as info:
        call(X)
    assert type(info.value) is cls
    assert info.value.argument == argument
    # the message still names the argument (callers that match text keep working); get()'s
    # name errors quote the offending spec instead
    assert (argument if argument != "name" else "'") in str(info.value)


def test_argument_errors_are_exported_and_pickle() -> None:
    import pickle

    import cyclad

    assert cyclad.ArgumentError is _validation.ArgumentError
    assert cyclad.ArgumentTypeError is _validation.ArgumentTypeError
    assert issubclass(cyclad.ArgumentError, ValueError)
    assert issubclass(cyclad.ArgumentTypeError, TypeError)
    for cls in (cyclad.ArgumentError, cyclad.ArgumentTypeError):
        exc = cls("f must be in [0, 3], got 9", argument="f")
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is cls
        assert (str(back), back.argument) == ("f must be in [0, 3], got 9", "f")


def test_check_int_label_words_the_message_only() -> None:
    with pytest.raises(ValueError, match=r"^f \(for krum with n=5 rows\) must be in") as info:
        _validation.check_int(9, "f", 0, 2, label="f (for krum with n=5 rows)")
    assert info.value.argument == "f"
