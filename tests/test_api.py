"""General API contract of the aggregators (DESIGN §3, §4): input kinds, dtype policy, errors."""

from __future__ import annotations

import numpy as np
import pytest

import cyclad.aggregators as agg
from cyclad import _core
from tests import _reference as ref

torch = pytest.importorskip("torch")

# name -> (call(X, **kw), reference(X)); f=1 for the trimming rules.
RULES = {
    "mean": (lambda X, **kw: agg.mean(X, **kw), ref.mean),
    "median": (lambda X, **kw: agg.median(X, **kw), ref.median),
    "trimmed_mean": (
        lambda X, **kw: agg.trimmed_mean(X, 1, **kw),
        lambda X: ref.trimmed_mean(X, 1),
    ),
    "meamed": (lambda X, **kw: agg.meamed(X, 1, **kw), lambda X: ref.meamed(X, 1)),
}
NAMES = list(RULES)


@pytest.fixture
def X(rng) -> np.ndarray:
    return rng.standard_normal((5, 33))


class DLPackOnly:
    """An array-like exposing only the DLPack protocol."""

    def __init__(self, arr: np.ndarray) -> None:
        self._arr = arr

    def __dlpack__(self, **kwargs):
        return self._arr.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._arr.__dlpack_device__()


# --------------------------------------------------------------------------------------------
# input kinds
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("tdtype", ["float32", "float64"])
def test_torch_in_torch_out(name, tdtype, X) -> None:
    call, reference = RULES[name]
    t = torch.from_numpy(X).to(getattr(torch, tdtype))
    out = call(t)
    assert isinstance(out, torch.Tensor)
    assert out.dtype == t.dtype
    assert out.shape == (X.shape[1],)
    expected = reference(t.numpy())
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_torch_contiguous_input_not_copied(name, X, monkeypatch) -> None:
    call, _ = RULES[name]
    t = torch.from_numpy(X.astype(np.float32))
    seen: list[int] = []
    original = getattr(_core, name)

    def spy(x, *args, **kw):
        seen.append(x.__array_interface__["data"][0])
        return original(x, *args, **kw)

    monkeypatch.setattr(_core, name, spy)
    call(t)
    assert seen == [t.data_ptr()]


@pytest.mark.parametrize("name", NAMES)
def test_numpy_contiguous_input_not_copied(name, X, monkeypatch) -> None:
    call, _ = RULES[name]
    seen: list[int] = []
    original = getattr(_core, name)

    def spy(x, *args, **kw):
        seen.append(x.__array_interface__["data"][0])
        return original(x, *args, **kw)

    monkeypatch.setattr(_core, name, spy)
    call(X)
    assert seen == [X.__array_interface__["data"][0]]


@pytest.mark.parametrize("name", NAMES)
def test_torch_noncontiguous_and_requires_grad(name, X) -> None:
    call, reference = RULES[name]
    t = torch.from_numpy(X).T.contiguous().T  # column-major view
    assert not t.is_contiguous()
    np.testing.assert_allclose(call(t).numpy(), reference(X), rtol=1e-12, atol=1e-12)
    g = torch.from_numpy(X.copy()).requires_grad_(True)
    np.testing.assert_allclose(call(g).numpy(), reference(X), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_dlpack_object(name, X) -> None:
    call, reference = RULES[name]
    out = call(DLPackOnly(X))
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, reference(X), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_list_and_buffer_inputs(name, X) -> None:
    call, reference = RULES[name]
    expected = reference(X)
    np.testing.assert_allclose(call(X.tolist()), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(call(memoryview(X)), expected, rtol=1e-12, atol=1e-12)
    X32 = X.astype(np.float32)
    out = call(memoryview(X32))
    assert out.dtype == np.float32


# --------------------------------------------------------------------------------------------
# dtype policy
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dt", [np.float16, np.int8, np.int64, np.uint16])
def test_other_real_dtypes_become_float64(name, dt, X) -> None:
    call, reference = RULES[name]
    Xd = (X * 10).astype(dt)
    out = call(Xd)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, reference(Xd.astype(np.float64)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_torch_half_and_int_become_float64(name, X) -> None:
    call, _ = RULES[name]
    assert call(torch.from_numpy(X).half()).dtype == torch.float64
    assert call(torch.from_numpy((X * 10).astype(np.int32))).dtype == torch.float64


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "bad",
    [
        np.ones((3, 4), dtype=np.complex128),
        np.ones((3, 4), dtype=bool),
        np.array([[object(), object()], [object(), object()]], dtype=object),
        np.array([["a", "b"], ["c", "d"]]),
    ],
    ids=["complex", "bool", "object", "str"],
)
def test_unsupported_dtypes_raise_type_error(name, bad) -> None:
    call, _ = RULES[name]
    with pytest.raises(TypeError, match="X must hold real"):
        call(bad)


@pytest.mark.parametrize("name", NAMES)
def test_torch_bool_and_complex_raise_type_error(name) -> None:
    call, _ = RULES[name]
    with pytest.raises(TypeError, match="X must hold real"):
        call(torch.ones((3, 4), dtype=torch.bool))
    with pytest.raises(TypeError, match="X must hold real"):
        call(torch.ones((3, 4), dtype=torch.complex64))


# --------------------------------------------------------------------------------------------
# documented errors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(), (4,), (2, 3, 4)], ids=["0d", "1d", "3d"])
def test_wrong_ndim(name, shape) -> None:
    call, _ = RULES[name]
    with pytest.raises(ValueError, match=r"X must be 2-D \(n, D\)"):
        call(np.ones(shape))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(0, 3), (3, 0), (0, 0)])
def test_empty(name, shape) -> None:
    call, _ = RULES[name]
    with pytest.raises(ValueError, match="X must not be empty"):
        call(np.ones(shape))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("threads", [0, -1, -8])
def test_threads_out_of_range(name, threads, X) -> None:
    call, _ = RULES[name]
    with pytest.raises(ValueError, match=r"threads must be in \[1, 2147483647\]"):
        call(X, threads=threads)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("threads", [True, False, 1.5, "2"])
def test_threads_wrong_type(name, threads, X) -> None:
    call, _ = RULES[name]
    with pytest.raises(TypeError, match="threads must be an integer"):
        call(X, threads=threads)


@pytest.mark.parametrize("rule", ["trimmed_mean", "meamed"])
@pytest.mark.parametrize(("n", "f"), [(5, 3), (5, -1), (4, 2), (1, 1), (2, 1), (10, 5)])
def test_f_out_of_range(rule, n, f) -> None:
    X = np.ones((n, 3))
    hi = (n - 1) // 2
    with pytest.raises(
        ValueError, match=rf"f must be in \[0, {hi}\] \(n > 2f\) for n={n} rows, got f={f}"
    ):
        getattr(agg, rule)(X, f)


@pytest.mark.parametrize("rule", ["trimmed_mean", "meamed"])
@pytest.mark.parametrize("f", [True, 1.0, "1", None])
def test_f_wrong_type(rule, f) -> None:
    with pytest.raises(TypeError, match="f must be an integer"):
        getattr(agg, rule)(np.ones((5, 3)), f)


@pytest.mark.parametrize("rule", ["trimmed_mean", "meamed"])
def test_f_numpy_integer_accepted(rule, X) -> None:
    np.testing.assert_array_equal(getattr(agg, rule)(X, np.int64(1)), getattr(agg, rule)(X, 1))


@pytest.mark.parametrize("rule", ["trimmed_mean", "meamed"])
def test_core_rejects_bad_f_too(rule) -> None:
    # The binding's own check is the last line of defence behind the Python validation.
    with pytest.raises(ValueError, match="f must be in"):
        getattr(_core, rule)(np.ones((4, 3)), 2)
    with pytest.raises(ValueError, match="f must be in"):
        getattr(_core, rule)(np.ones((4, 3)), -1)


def test_keyword_only_threads(X) -> None:
    with pytest.raises(TypeError):
        agg.median(X, 1)  # type: ignore[misc]
    with pytest.raises(TypeError):
        agg.trimmed_mean(X, 1, 1)  # type: ignore[misc]


def test_public_names() -> None:
    assert {"mean", "median", "trimmed_mean", "meamed"} <= set(agg.__all__)
    for name in ("mean", "median", "trimmed_mean", "meamed"):
        doc = getattr(agg, name).__doc__
        assert doc is not None
        assert "Parameters" in doc
        assert "Returns" in doc
        assert "Raises" in doc
