"""Argument checks and the dtype policy shared by every public function.

Policy: float32 stays float32, float64 stays float64 (in either byte order), other real dtypes
(integers, float16) become float64; complex, bool, object and string inputs raise ``TypeError``.

Layout: the kernels read raw ``T*`` pointers of C-contiguous, native-byte-order arrays whose
address is a multiple of the element size. An array that is not -- strided, Fortran-ordered,
negative strides, byte-swapped, or *misaligned* (e.g. ``np.frombuffer(b, np.float32,
offset=1)``, a view into a bytes buffer at an odd offset, or a torch tensor over such storage
via DLPack or ``torch.frombuffer``) -- is copied once into a fresh aligned C-contiguous array. An
aligned C-contiguous input of the right dtype is passed on without a copy (zero-copy). The same
holds for the int64 index arrays of :func:`as_index_array`. CPU torch tensors are viewed, not
copied, and results are handed back as torch tensors.

Integers: :func:`check_int` bounds every integer argument by the range of the C++ type the
kernel takes (``INT_MAX = 2**31 - 1`` for ``threads``, ``INT64_MAX = 2**63 - 1`` for counts,
``UINT64_MAX = 2**64 - 1`` for seeds), so an out-of-range value raises ``ValueError`` naming the
argument and the allowed range rather than reaching the extension.

Errors: every check raises :class:`ArgumentError` (a ``ValueError``) or
:class:`ArgumentTypeError` (a ``TypeError``). Both carry the offending argument's name as data,
``exc.argument`` (e.g. ``"X"``, ``"f"``, ``"threads"``), so a caller maps an error to its own
field by that attribute instead of by the message text; the message still names the argument
and the allowed range.
"""

from __future__ import annotations

import operator
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from cyclad import _core

__all__ = [
    "INT64_MAX",
    "INT_MAX",
    "UINT64_MAX",
    "ArgumentError",
    "ArgumentTypeError",
    "as_c_aligned",
    "as_float_array",
    "as_index_array",
    "as_matrix",
    "check_float",
    "check_int",
    "check_threads",
    "float_dtype",
    "parse_spec",
    "to_numpy",
]

FloatArray = NDArray[np.float32] | NDArray[np.float64]
Wrap = Callable[[Any], Any]

#: Largest value of the C++ integer types the kernels take (``int``, ``int64_t``, ``uint64_t``).
INT_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1


class ArgumentError(ValueError):
    """A bad argument value (shape, range, emptiness); ``argument`` names the argument.

    Raised as ``ArgumentError(msg, argument="f")``.

    Parameters
    ----------
    message : str
        The full message; it names the argument and the allowed values too.
    argument : str
        The name of the offending argument as the caller spelled it (``"f"``, ``"X"``, ...).
    """

    def __init__(self, message: str, argument: str) -> None:
        super().__init__(message)
        self.argument = argument

    def __reduce__(self) -> tuple[type[ArgumentError], tuple[str, str]]:
        return type(self), (str(self), self.argument)


class ArgumentTypeError(TypeError):
    """A bad argument type (not an integer, not real numbers, ...); ``argument`` names it.

    The ``TypeError`` twin of :class:`ArgumentError`, with the same ``argument`` attribute.
    """

    def __init__(self, message: str, argument: str) -> None:
        super().__init__(message)
        self.argument = argument

    def __reduce__(self) -> tuple[type[ArgumentTypeError], tuple[str, str]]:
        return type(self), (str(self), self.argument)


def _identity(out: Any) -> Any:
    return out


def _is_torch_tensor(x: object) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def to_numpy(x: Any, name: str = "X") -> tuple[np.ndarray, Wrap]:
    """Return ``(array, wrap)``: a NumPy view of ``x`` and a function that turns a NumPy result
    back into the input's kind (NumPy stays NumPy, a torch tensor gives a torch tensor)."""
    if isinstance(x, np.ndarray):
        return x, _identity
    if _is_torch_tensor(x):
        import torch

        t = x.detach()
        if t.device.type != "cpu":
            msg = f"{name} must be a CPU tensor, got device {t.device}"
            raise ArgumentError(msg, argument=name)
        if t.dtype in (torch.float16, torch.bfloat16):
            t = t.to(torch.float64)
        if t.is_complex() or t.dtype == torch.bool:
            msg = f"{name} must hold real floating-point values, got torch dtype {t.dtype}"
            raise ArgumentTypeError(msg, argument=name)
        if t.is_conj() or t.is_neg():
            t = t.resolve_conj().resolve_neg()

        def wrap(out: Any) -> Any:
            return torch.from_numpy(out) if isinstance(out, np.ndarray) else out

        return t.numpy(), wrap
    if isinstance(x, list | tuple) and x and all(_is_torch_tensor(t) for t in x):
        return to_numpy(_stack_tensors(x, name), name)
    if hasattr(x, "__dlpack__"):
        try:
            return np.from_dlpack(x), _identity
        except (TypeError, RuntimeError, BufferError):
            pass
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:
        msg = f"{name} must be array-like (NumPy array, CPU torch tensor, buffer), got {type(x)}"
        raise ArgumentTypeError(msg, argument=name) from exc
    return arr, _identity


def _stack_tensors(rows: list[Any] | tuple[Any, ...], name: str) -> Any:
    """One worker's vector per tensor (each 1-D, one shape and dtype, on the CPU) as one
    ``(n, D)`` tensor: the single copy a list of rows needs."""
    import torch

    for k, t in enumerate(rows):
        if t.device.type != "cpu":
            msg = f"{name}[{k}] must be a CPU tensor, got device {t.device}"
            raise ArgumentError(msg, argument=name)
        if t.ndim != 1:
            msg = f"{name}[{k}] must be 1-D (one worker's vector), got shape {tuple(t.shape)}"
            raise ArgumentError(msg, argument=name)
    shapes = sorted({int(t.shape[0]) for t in rows})
    if len(shapes) > 1:
        msg = f"{name}: the tensors must all have one length, got lengths {shapes}"
        raise ArgumentError(msg, argument=name)
    dtypes = sorted({str(t.dtype) for t in rows})
    if len(dtypes) > 1:
        msg = f"{name}: the tensors must all have one dtype, got {', '.join(dtypes)}"
        raise ArgumentTypeError(msg, argument=name)
    return torch.stack([t.detach() for t in rows])


def float_dtype(arr: np.ndarray, name: str = "X") -> np.dtype[Any]:
    """Apply the dtype policy: float32 stays, other real dtypes become float64."""
    dt = arr.dtype
    if dt.kind == "f" and dt.itemsize in (4, 8):
        return np.dtype(np.float32) if dt.itemsize == 4 else np.dtype(np.float64)
    if dt.kind in "iuf":
        return np.dtype(np.float64)
    msg = f"{name} must hold real numbers (float32 or float64), got dtype {dt}"
    raise ArgumentTypeError(msg, argument=name)


def as_float_array(
    x: Any, name: str = "X", ndim: int | None = None, dtype: Any = None
) -> tuple[FloatArray, Wrap]:
    """Validate and normalise one array argument: dtype policy, ndim, non-empty, C-contiguous.

    ``dtype`` forces a dtype (for arrays that must match another argument)."""
    arr, wrap = to_numpy(x, name)
    dt = float_dtype(arr, name) if dtype is None else np.dtype(dtype)
    if dtype is not None:
        float_dtype(arr, name)  # still reject complex / bool / object
    if ndim is not None and arr.ndim != ndim:
        shape = "(n, D)" if ndim == 2 else "(D,)" if ndim == 1 else f"{ndim}-D"
        msg = f"{name} must be {ndim}-D {shape}, got shape {arr.shape}"
        raise ArgumentError(msg, argument=name)
    if arr.size == 0:
        msg = f"{name} must not be empty, got shape {arr.shape}"
        raise ArgumentError(msg, argument=name)
    return as_c_aligned(arr, dt), wrap


def as_c_aligned(arr: np.ndarray, dtype: Any) -> np.ndarray:
    """``arr`` as a C-contiguous, aligned, native-byte-order ``ndarray`` of ``dtype``.

    No copy when ``arr`` already is one; otherwise exactly one copy (the kernels load the data
    as aligned ``T*``, so a misaligned view must never reach them)."""
    out = np.ascontiguousarray(arr, dtype=dtype)
    if not out.flags.aligned:
        out = out.copy(order="C")  # a fresh allocation is aligned for its dtype
    return out


def as_matrix(x: Any, name: str = "X") -> tuple[FloatArray, Wrap]:
    """An (n, D) float32/float64 C-contiguous matrix with n >= 1 and D >= 1."""
    return as_float_array(x, name, ndim=2)


def check_int(
    value: Any,
    name: str,
    lo: int | None = None,
    hi: int | None = None,
    *,
    label: str | None = None,
) -> int:
    """An integer in [lo, hi] (inclusive bounds, None = unbounded); bool is rejected.

    Accepts Python and NumPy integers (anything with ``__index__``). Callers pass the bound of
    the C++ type the value reaches (:data:`INT_MAX`, :data:`INT64_MAX`, :data:`UINT64_MAX`).
    ``label`` words the argument in the message (e.g. ``"f (for krum with n=5 rows)"``);
    ``exc.argument`` is always ``name``."""
    text = name if label is None else label
    if isinstance(value, bool | np.bool_):
        msg = f"{text} must be an integer, got {value!r}"
        raise ArgumentTypeError(msg, argument=name)
    try:
        v = operator.index(value)
    except TypeError as exc:
        msg = f"{text} must be an integer, got {type(value).__name__} {value!r}"
        raise ArgumentTypeError(msg, argument=name) from exc
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        lo_s = "-inf" if lo is None else str(lo)
        hi_s = "inf" if hi is None else str(hi)
        msg = f"{text} must be in [{lo_s}, {hi_s}], got {v}"
        raise ArgumentError(msg, argument=name)
    return v


def check_float(
    value: Any, name: str, lo: float | None = None, *, strict_lo: bool = False
) -> float:
    """A finite real number, >= lo (or > lo with ``strict_lo``)."""
    if isinstance(value, bool | np.bool_):
        msg = f"{name} must be a real number, got {value!r}"
        raise ArgumentTypeError(msg, argument=name)
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        msg = f"{name} must be a real number, got {type(value).__name__} {value!r}"
        raise ArgumentTypeError(msg, argument=name) from exc
    if not np.isfinite(v):
        msg = f"{name} must be finite, got {v}"
        raise ArgumentError(msg, argument=name)
    if lo is not None and (v <= lo if strict_lo else v < lo):
        op = ">" if strict_lo else ">="
        msg = f"{name} must be {op} {lo}, got {v}"
        raise ArgumentError(msg, argument=name)
    return v


def check_out(
    out: Any, x: NDArray[Any], given: Any, shape: tuple[int, ...], name: str = "X"
) -> None:
    """Raise unless ``out`` can receive a result of ``shape`` and ``x``'s dtype in place.

    ``given`` is the caller's input ``name`` as passed, ``x`` its array after the dtype policy:
    both must be NumPy arrays (a torch tensor or a list would be converted, so a result written
    into ``out`` would not reach the caller's object), and ``out`` must be C-contiguous,
    aligned, writable and share no memory with ``x``.
    """
    if not isinstance(given, np.ndarray) or not isinstance(out, np.ndarray):
        msg = (
            f"out must be a NumPy array and {name} a NumPy array, got {type(out).__name__} "
            f"for out and {type(given).__name__} for {name}"
        )
        raise ArgumentTypeError(msg, argument="out")
    if out.dtype != x.dtype:
        msg = f"out must have {name}'s dtype {x.dtype}, got {out.dtype}"
        raise ArgumentTypeError(msg, argument="out")
    if out.shape != shape:
        msg = f"out must have shape {shape}, got {out.shape}"
        raise ArgumentError(msg, argument="out")
    if not out.flags.c_contiguous or not out.flags.writeable or not out.flags.aligned:
        msg = "out must be C-contiguous, aligned and writable"
        raise ArgumentError(msg, argument="out")
    if np.may_share_memory(out, x):
        msg = f"out must not share memory with {name}"
        raise ArgumentError(msg, argument="out")


def check_threads(threads: Any) -> int:
    """Map the public ``threads`` argument to the kernels' convention (0 = all cores)."""
    if threads is None:
        return 0
    t = check_int(threads, "threads", lo=1, hi=INT_MAX)
    if t > 1 and not _core._has_openmp:
        warnings.warn("cyclad was built without OpenMP; running single-threaded", stacklevel=3)
    return t


def parse_spec(spec: str, name: str = "spec") -> tuple[str, list[Any], dict[str, Any]]:
    """Parse a ``"kind[:arg,...,key=value,...]"`` string into ``(kind, args, kwargs)``.

    Values are parsed as numbers where possible (``"16"`` -> 16, ``"0.5"`` -> 0.5), ``true`` /
    ``false`` as booleans, and a bare word after the colon (``"randk:0.05,shared"``) as
    ``{word: True}``.
    """
    if not isinstance(spec, str) or not spec.strip():
        msg = f"{name} must be a non-empty string, got {spec!r}"
        raise ArgumentError(msg, argument=name)
    kind, _, rest = spec.strip().partition(":")
    args: list[Any] = []
    kwargs: dict[str, Any] = {}

    def value(text: str) -> Any:
        t = text.strip()
        low = t.lower()
        if low in ("true", "false"):
            return low == "true"
        try:
            return int(t)
        except ValueError:
            pass
        try:
            return float(t)
        except ValueError:
            return t

    for item in filter(None, (s.strip() for s in rest.split(","))):
        if "=" in item:
            k, _, v = item.partition("=")
            kwargs[k.strip()] = value(v)
        else:
            v = value(item)
            if isinstance(v, str):
                kwargs[v] = True
            else:
                args.append(v)
    return kind.strip().lower(), args, kwargs


def as_index_array(
    x: Any, name: str, *, ndim: int, shape: str, bound: int, bound_name: str
) -> NDArray[np.int64]:
    """An integer index array with ``ndim`` dimensions and every entry in ``[0, bound)``,
    as C-contiguous int64 (``shape`` and ``bound_name`` only word the error messages)."""
    arr, _ = to_numpy(x, name)
    if arr.dtype.kind not in "iu":
        msg = f"{name} must hold integers, got dtype {arr.dtype}"
        raise ArgumentTypeError(msg, argument=name)
    if arr.ndim != ndim:
        msg = f"{name} must be {ndim}-D {shape}, got shape {arr.shape}"
        raise ArgumentError(msg, argument=name)
    if arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= bound:
            msg = f"{name} must be in [0, {bound_name}) = [0, {bound}), got values in [{lo}, {hi}]"
            raise ArgumentError(msg, argument=name)
    return as_c_aligned(arr, np.int64)
