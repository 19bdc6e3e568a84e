"""Gradient compression for Com-LAD: compressors, error feedback and an exact wire format.

A compressor maps a 1-D float32/float64 vector ``x`` of length ``D`` to a :class:`Message`
whose byte encoding is what a device sends; ``decompress`` turns a message back into a dense
vector of the message's dtype. Every message has exactly one byte encoding and
``msg.nbytes == len(msg.to_bytes())``, so communication is counted from real bytes.

=====================  ==========================================  ==========================
compressor             C(x)                                        guarantee
=====================  ==========================================  ==========================
``TopK(k | ratio)``    the k largest ``|x_i|``, others 0           contractive, delta = k/D
``RandK(k | ratio)``   ``D/k * x_i`` on k uniform coordinates      unbiased, omega = D/k - 1
``QSGD(levels=s)``     per bucket of b: ``||x|| sign(x_i) l_i/s``  unbiased,
                       with stochastic levels l_i in {0..s}        omega = min(b/s^2, sqrt(b)/s)
``Sign(scaled=True)``  ``||x||_1 / D * sign(x)``                   contractive, delta >= 1/D
``Natural()``          ``sign(x_i) 2^e_i``, |x_i| rounded to one   unbiased, omega = 1/8
                       of its two nearest powers of two
``TernGrad(bucket)``   per bucket: ``max|x| sign(x_i) b_i``,       unbiased,
                       ``b_i ~ Bernoulli(|x_i| / max|x|)``         omega = (sqrt(b) - 1) / 2
``Identity()``         x                                           exact (omega = 0)
=====================  ==========================================  ==========================

:func:`majority_vote` is the server side of signSGD with majority vote (Bernstein et al.
2019): the coordinate-wise majority of n sign messages, counted on their packed sign bits.

``ratio`` gives ``k = max(1, floor(ratio * D + 1/2))``. ``omega(D)`` bounds
``E||C(x) - x||^2 <= omega ||x||^2`` of unbiased compressors; ``delta(D)`` bounds
``||C(x) - x||^2 <= (1 - delta) ||x||^2`` of contractive ones. For the scaled sign the exact
factor is data dependent, ``||x||_1^2 / (D ||x||_2^2)``, given by :meth:`Sign.delta_of`;
``Sign.delta(D)`` returns its worst case ``1/D``. The bounds are for exact arithmetic; narrowing
the values (``value_dtype``) adds its rounding error on top.

**Randomness.** Every random draw is a counter-based function of ``(seed, stream, coordinate)``
(splitmix64), so results are identical for any thread count and on any machine. The caller folds
the round, and for private streams the device, into ``seed``: a run takes it from its
counter-based streams (:func:`derive_seed`, :mod:`cyclad._random`). ``RandK``
with ``shared=True`` draws its mask from the seed alone: every device using the round's seed
keeps the same coordinates, and the message carries the seed instead of the indices.

**Values on the wire.** ``value_dtype`` is ``"float16"``, ``"float32"`` or ``"float64"`` (``None``:
the input's dtype, lossless). It applies to top-k / rand-k / identity values, QSGD norms and the
sign scale. Narrowing (float64 data to float32 values, anything to float16) rounds to nearest and
is lossy by design; a *finite* value beyond the range of ``value_dtype`` raises ``ValueError``
instead of turning into Inf. QSGD norms are rounded *up*, so the levels stay within ``[0, s]``.

**Non-finite input** (Byzantine devices send it): identity, top-k and rand-k carry raw values, so
NaN and Inf round-trip (top-k ranks NaN above +Inf). QSGD raises ``ValueError`` when a bucket
norm is not finite, the scaled sign when ``||x||_1`` is not finite, and natural compression and
TernGrad when any value is NaN or Inf (they quantise magnitudes, which a NaN does not have). A finite input never
decompresses to +-Inf: rand-k raises ``ValueError`` when a kept ``D/k * x_i`` overflows the
dtype of ``x``, and QSGD when a bucket's quantized values would (float32 input with
``value_dtype="float64"`` and a norm above the float32 range).

**Top-k tie rule.** Magnitudes compare as IEEE values with every NaN equal and above +Inf;
among equal magnitudes the lower index wins. Indices are sent in ascending order.

Wire format
-----------
The byte layout (header fields, offsets and sizes, the per-kind payloads) and the validation
rules are documented once, in ``docs/wire-format.md``; the C++ core (``csrc/cyclad/wire.hpp``)
packs and parses the header and validates the payload, so Python never re-implements them.
In short: a 16-, 24- or 32-byte little-endian header (magic ``b"CZ"``, version 1, kind, dense
dtype, value dtype, flags, D, then k / s and seed / bucket as the kind needs) followed by a
payload whose size is a closed-form function of the header.

:meth:`Message.from_bytes` validates everything, once: the header, the exact byte length (no
truncation, no trailing bytes), index range and strict increase, QSGD level codes ``<= s``,
finite non-negative norms and scale, zero padding, and the range of what the message decodes
to in its dense dtype. Any violation raises ``ValueError``; no byte string can cause an
out-of-bounds access or a warning. The message it returns carries that validated state, as does
one built by ``compress`` (valid by construction), so :func:`decompress` decodes either without
a second validation pass; a :class:`Message` built by hand is validated by :func:`decompress`.

**Sizes and allocation.** For top-k and rand-k the byte length does not bound D (a 44-byte
shared rand-k message can declare D = 2^32 - 1), so :meth:`Message.from_bytes` also requires
``D == dim`` when ``dim=`` is given, else ``D <= max_dim`` (default :data:`DEFAULT_MAX_DIM` =
2^24), before any size-dependent work. Parsing allocates at most a copy of the bytes and k
indices, never anything proportional to an unchecked D; :func:`decompress` allocates the
``D``-element output (plus a ``D/8``-byte bitmap for a shared rand-k mask). The receiver, not
the sender, decides the dense dtype: ``dtype=`` rejects a message declaring another one (the
training server passes ``dim=`` and ``dtype=``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from cyclad import _core, _random
from cyclad._validation import (
    ArgumentError,
    ArgumentTypeError,
    as_float_array,
    check_float,
    check_int,
    check_threads,
)

__all__ = [
    "DEFAULT_MAX_DIM",
    "EF21",
    "QSGD",
    "Compressor",
    "CompressorLike",
    "EF21Receiver",
    "ErrorFeedback",
    "Identity",
    "Message",
    "Natural",
    "RandK",
    "Sign",
    "TernGrad",
    "TopK",
    "decompress",
    "derive_seed",
    "majority_vote",
]

FloatArray = NDArray[np.float32] | NDArray[np.float64]

_FORMAT = _core.wire_format  # codes and limits, defined once in csrc/cyclad/wire.hpp
_MAX_DIM: int = _FORMAT["max_dim"]
DEFAULT_MAX_DIM = 2**24
"""Largest D that :meth:`Message.from_bytes` accepts when neither ``dim=`` nor ``max_dim=`` is
given (2^24 = 16,777,216 coordinates: a 128 MiB float64 output at most)."""
_MAX_LEVELS: int = _FORMAT["max_levels"]
_U64 = 2**64 - 1
_KINDS: dict[str, int] = dict(_FORMAT["kinds"])
_KIND_NAMES = {v: k for k, v in _KINDS.items()}
_DTYPES: dict[np.dtype[Any], int] = {
    np.dtype(name): code for name, code in _FORMAT["dense_dtypes"].items()
}
_DTYPE_OF_CODE: dict[int, np.dtype[Any]] = {v: k for k, v in _DTYPES.items()}
_VALUE_DTYPES: dict[str, int] = dict(_FORMAT["value_dtypes"])
_VALUE_OF_CODE = {v: k for k, v in _VALUE_DTYPES.items()}


# --------------------------------------------------------------------------------------------
# seeds
# --------------------------------------------------------------------------------------------


def derive_seed(seed: int, t: int = 0, device: int | None = None) -> int:
    """The compression seed a run uses: round ``t`` and, for a private stream, ``device``.

    ``derive_seed(s, t)`` is the round seed shared by every device (shared rand-k masks);
    ``derive_seed(s, t, i)`` device ``i``'s private seed in round ``t``. Both are the first word
    of the run's counter-based stream ``(s, t, device or ALL, COMPRESSION)``
    (:mod:`cyclad._random`), the values :func:`cyclad.protocol.plan_round` gives.

    Parameters
    ----------
    seed : int
        The run's device seed, in ``[0, 2^64 - 1]``.
    t : int
        The round, in ``[0, 2^64 - 1]``.
    device : int, optional
        The device, in ``[0, 2^64 - 2]``; None for the shared round seed.

    Returns
    -------
    int
        A seed in ``[0, 2^64 - 1]``.

    Raises
    ------
    ValueError
        If an argument is out of range.
    TypeError
        If an argument is not an integer.
    """
    s = check_int(seed, "seed", 0, _U64)
    r = check_int(t, "t", 0, _U64)
    dev = _random.ALL if device is None else check_int(device, "device", 0, _U64 - 1)
    return _random.seed_word(s, r, dev, _random.COMPRESSION)


# --------------------------------------------------------------------------------------------
# messages
# --------------------------------------------------------------------------------------------


def _check_dense_dtype(dtype: Any) -> np.dtype[Any]:
    msg = f"dtype must be float32 or float64, got {dtype!r}"
    try:
        dt: np.dtype[Any] = np.dtype(dtype)
    except TypeError as exc:
        raise ArgumentTypeError(msg, argument="dtype") from exc
    if dt not in _DTYPES:
        raise ArgumentTypeError(msg, argument="dtype")
    return dt


@dataclass(frozen=True, eq=False)
class Message:
    """One compressed vector: header fields plus the read-only payload bytes.

    Build messages with a compressor's ``compress`` or with :meth:`from_bytes`: both give a
    message that is valid as a whole, and :func:`decompress` decodes it without validating it
    again. A message built by hand is checked for consistent fields here, and its payload is
    validated by :func:`decompress`.

    Attributes
    ----------
    kind : str
        ``"identity"``, ``"topk"``, ``"randk"``, ``"qsgd"``, ``"sign"``, ``"natural"`` or
        ``"terngrad"``.
    dtype : numpy.dtype
        float32 or float64: the dtype ``decompress`` returns.
    value_dtype : str
        ``"float16"``, ``"float32"`` or ``"float64"``: how values travel.
    dim : int
        D, the length of the dense vector.
    k : int
        Kept coordinates (top-k, rand-k), else 0.
    levels : int
        QSGD levels s, else 0.
    bucket : int
        QSGD / TernGrad bucket size (``<= dim``), else 0.
    shared : bool
        Rand-k with a shared mask (regenerated from ``seed``; no indices sent).
    seed : int
        The mask seed of a shared rand-k message, else 0.
    payload : numpy.ndarray
        uint8, read-only.
    """

    kind: str
    dtype: np.dtype[Any]
    value_dtype: str
    dim: int
    k: int
    levels: int
    bucket: int
    shared: bool
    seed: int
    payload: NDArray[np.uint8]

    # Whether the payload is known valid for these fields (from_bytes validated it, or compress
    # produced it); set only by _valid(). A hand-built message has the class default, False.
    _validated: ClassVar[bool] = False

    @classmethod
    def _valid(cls, *values: Any) -> Message:
        """A message whose fields and payload are valid (validated by the C++ parser, or made by
        ``compress``), in field order; skips the consistency check of ``__post_init__``."""
        self = object.__new__(cls)
        for f, value in zip(_FIELDS, values, strict=True):
            object.__setattr__(self, f, value)
        object.__setattr__(self, "_validated", True)
        return self

    def __post_init__(self) -> None:
        # A Message built by hand must be as consistent as a parsed one: decompress trusts the
        # header fields (D, k, ...) to match the payload size before it allocates anything.
        p = self.payload
        ok = (
            self.kind in _KINDS
            and isinstance(self.dtype, np.dtype)
            and self.dtype in _DTYPES
            and self.value_dtype in _VALUE_DTYPES
            and isinstance(p, np.ndarray)
            and p.dtype == np.uint8
            and p.ndim == 1
            and p.flags.c_contiguous
        )
        if not ok:
            msg = (
                f"inconsistent Message fields: kind={self.kind!r}, dtype={self.dtype!r}, "
                f"value_dtype={self.value_dtype!r}, payload {type(p).__name__}"
            )
            raise ArgumentError(msg, argument="msg")
        if self.kind == "natural" and self.value_dtype != self.dtype.name:
            msg = (
                "inconsistent Message fields: natural compression sends no values: the value "
                f"dtype must equal the dense dtype {self.dtype.name}, got {self.value_dtype!r}"
            )
            raise ArgumentError(msg, argument="msg")
        try:
            size = _core.wire_payload_size(
                _KINDS[self.kind],
                _VALUE_DTYPES[self.value_dtype],
                self.dim,
                self._param(),
                self.bucket,
                self.shared,
            )
        except (TypeError, ValueError) as exc:
            msg = f"inconsistent Message fields: {exc}"
            raise ArgumentError(msg, argument="msg") from None
        if size != p.size:
            msg = f"inconsistent Message fields: payload has {p.size} bytes, header implies {size}"
            raise ArgumentError(msg, argument="msg")

    @property
    def header_nbytes(self) -> int:
        """Size of the header in bytes (16, 24 or 32)."""
        return int(_core.wire_header_size(_KINDS[self.kind], self.shared))

    @property
    def nbytes(self) -> int:
        """Exact encoded size: ``header_nbytes + payload size`` (``== len(self.to_bytes())``)."""
        return self.header_nbytes + int(self.payload.size)

    def _param(self) -> int:
        return self.levels if self.kind == "qsgd" else self.k

    def to_bytes(self) -> bytes:
        """The wire encoding (``docs/wire-format.md``): the header, packed by the C++ core,
        then the payload."""
        head = _core.wire_header(
            _KINDS[self.kind],
            _DTYPES[self.dtype],
            _VALUE_DTYPES[self.value_dtype],
            self.dim,
            self._param(),
            self.bucket,
            self.shared,
            self.seed,
        )
        return head + self.payload.tobytes()

    @staticmethod
    def from_bytes(
        data: Any,
        *,
        dim: int | None = None,
        max_dim: int | None = None,
        dtype: Any = None,
        threads: int | None = None,
    ) -> Message:
        """Parse and fully validate an encoded message.

        Every check runs before anything the header asks for is allocated; parsing allocates
        the payload copy and O(k) index scratch (k is bounded by the byte length), never O(D).
        A receiver should pass the ``dim`` and ``dtype`` it expects: the header is
        written by the sender, and D decides how much :func:`decompress` allocates.

        Parameters
        ----------
        data : bytes-like
            ``bytes``, ``bytearray``, ``memoryview`` or a uint8 array (mutable inputs are copied).
        dim : int, optional
            Expected D in ``[1, 2^32 - 1]``; a message for another dimension raises
            ``ValueError``.
        max_dim : int, optional
            Largest accepted D in ``[1, 2^32 - 1]``. Defaults to :data:`DEFAULT_MAX_DIM`
            (2^24) when ``dim`` is None, and to no extra bound when ``dim`` is given.
        dtype : {None, numpy.float32, numpy.float64}, optional
            Expected dense dtype (what :func:`decompress` returns); a message declaring
            another one raises ``ValueError``.
        threads : int, optional
            Worker threads for the payload scan; ``None`` uses all cores.

        Returns
        -------
        Message

        Raises
        ------
        ValueError
            If the bytes are not a valid message (truncated or trailing bytes, bad magic,
            version, kind, dtype or flags, out-of-range D / k / s / bucket, indices out of range
            or not strictly increasing, level codes above s, non-finite or negative norms or
            scale, nonzero padding, or a finite field that would decode to +-Inf in the dense
            dtype), if D differs from ``dim`` or exceeds ``max_dim``, if the dense dtype
            differs from ``dtype``, or if ``dim`` / ``max_dim`` is out of range.
        TypeError
            If ``data`` is not bytes-like, or ``dtype`` is not float32 / float64.
        """
        t = check_threads(threads)
        want_dim = None if dim is None else check_int(dim, "dim", 1, _MAX_DIM)
        if max_dim is not None:
            limit: int | None = check_int(max_dim, "max_dim", 1, _MAX_DIM)
        else:
            limit = DEFAULT_MAX_DIM if want_dim is None else None
        want_dtype = None if dtype is None else _check_dense_dtype(dtype)
        if isinstance(data, np.ndarray):
            data = data.tobytes()
        try:
            buf = data if isinstance(data, bytes) else bytes(memoryview(data))
        except TypeError as exc:
            msg = f"data must be bytes-like, got {type(data).__name__}"
            raise ArgumentTypeError(msg, argument="data") from exc
        # One pass in C++: header, receiver limits, exact length, payload (docs/wire-format.md).
        kcode, dcode, vcode, d, param, bucket, shared, seed, hsize = _core.wire_parse(
            buf,
            dim=0 if want_dim is None else want_dim,
            max_dim=0 if limit is None else limit,
            dense=0 if want_dtype is None else _DTYPES[want_dtype],
            threads=t,
        )
        kind = _KIND_NAMES[kcode]
        sparse = kind in ("topk", "randk")
        payload = np.frombuffer(buf, dtype=np.uint8, offset=hsize)
        return Message._valid(
            kind,
            _DTYPE_OF_CODE[dcode],
            _VALUE_OF_CODE[vcode],
            d,
            param if sparse else 0,
            param if kind == "qsgd" else 0,
            bucket,
            shared,
            seed,
            payload,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return self.to_bytes() == other.to_bytes()

    def __hash__(self) -> int:
        return hash(self.to_bytes())

    def __repr__(self) -> str:
        extra = {
            "topk": f", k={self.k}",
            "randk": f", k={self.k}, shared={self.shared}",
            "qsgd": f", levels={self.levels}, bucket={self.bucket}",
            "terngrad": f", bucket={self.bucket}",
        }.get(self.kind, "")
        return (
            f"Message(kind={self.kind!r}, dim={self.dim}{extra}, dtype={self.dtype.name}, "
            f"value_dtype={self.value_dtype!r}, nbytes={self.nbytes})"
        )


_FIELDS = tuple(f.name for f in fields(Message))


def decompress(msg: Message, *, threads: int | None = None) -> FloatArray:
    """Dense vector of any valid message (no check of which compressor made it).

    A message from :meth:`Message.from_bytes` (validated there) or from ``compress`` (valid by
    construction) is decoded without a second validation pass; a message built by hand is
    validated first. The output is exactly ``msg.dim`` elements of ``msg.dtype``; besides it,
    top-k / rand-k allocate ``k`` indices (and a shared rand-k mask a ``D/8``-byte bitmap), QSGD
    and sign a few KiB per thread. Bound ``msg.dim`` when parsing
    (``Message.from_bytes(..., dim=...)``), not here.

    Every element is finite except where the message carries a NaN or +-Inf raw value (top-k,
    rand-k, identity): QSGD norms, the sign scale and finite raw values (times ``D/k`` for
    rand-k) are checked to stay finite in ``msg.dtype``.

    Parameters
    ----------
    msg : Message
    threads : int, optional
        Worker threads; ``None`` uses all cores.

    Returns
    -------
    numpy.ndarray, shape (msg.dim,)
        float32 or float64 as ``msg.dtype``.

    Raises
    ------
    TypeError
        If ``msg`` is not a :class:`Message`.
    ValueError
        If the payload of a hand-built message is malformed.
    """
    if not isinstance(msg, Message):
        m = f"msg must be a cyclad.compression.Message, got {type(msg).__name__}"
        raise ArgumentTypeError(m, argument="msg")
    t = check_threads(threads)
    decode = _core.wire_decode if msg._validated else _core.wire_decompress
    out: FloatArray = decode(
        msg.payload,
        _KINDS[msg.kind],
        _VALUE_DTYPES[msg.value_dtype],
        msg.dim,
        msg._param(),
        msg.bucket,
        msg.shared,
        msg.seed,
        msg.dtype == np.float64,
        threads=t,
    )
    return out


# --------------------------------------------------------------------------------------------
# compressors
# --------------------------------------------------------------------------------------------


def _check_value_dtype(value_dtype: str | None) -> str | None:
    if value_dtype is None:
        return None
    if not isinstance(value_dtype, str) or value_dtype not in _VALUE_DTYPES:
        msg = f"value_dtype must be None, 'float16', 'float32' or 'float64', got {value_dtype!r}"
        raise ArgumentError(msg, argument="value_dtype")
    return value_dtype


def _check_k_ratio(k: int | None, ratio: float | None) -> tuple[int | None, float | None]:
    if (k is None) == (ratio is None):
        msg = f"give exactly one of k and ratio, got k={k!r}, ratio={ratio!r}"
        raise ArgumentError(msg, argument="k")
    if k is not None:
        return check_int(k, "k", 1, _MAX_DIM), None
    r = check_float(ratio, "ratio", 0.0, strict_lo=True)
    if r > 1.0:
        msg = f"ratio must be in (0, 1], got {r}"
        raise ArgumentError(msg, argument="ratio")
    return None, r


@runtime_checkable
class CompressorLike(Protocol):
    """What a device and the server need of a compressor: every :class:`Compressor`, and the
    stateful :class:`ErrorFeedback` / :class:`EF21` wrappers (a device's own object)."""

    def compress(self, x: Any, seed: int = 0, *, threads: int | None = None) -> Message: ...

    def decompress(self, msg: Message, *, threads: int | None = None) -> FloatArray: ...


class Compressor:
    """Base class: ``compress`` -> :class:`Message`, ``decompress`` -> dense vector.

    Subclasses set ``kind``, ``unbiased`` and ``contractive`` and provide ``omega(D)``
    (unbiased) or ``delta(D)`` (contractive).
    """

    kind: ClassVar[str] = ""
    unbiased: ClassVar[bool] = False
    contractive: ClassVar[bool] = False

    def __init__(self, value_dtype: str | None = None) -> None:
        self.value_dtype = _check_value_dtype(value_dtype)

    # -- per-kind hooks ---------------------------------------------------------------------
    def _param(self, dim: int) -> int:
        return 0

    def _bucket(self, dim: int) -> int:
        return 0

    def _shared(self) -> bool:
        return False

    def _scaled(self) -> bool:
        return True

    # -- public API --------------------------------------------------------------------------
    def omega(self, dim: int) -> float:
        """Variance factor: ``E||C(x) - x||^2 <= omega ||x||^2`` (unbiased compressors)."""
        msg = f"{type(self).__name__} is not unbiased; see delta()"
        raise NotImplementedError(msg)

    def delta(self, dim: int) -> float:
        """Contraction factor: ``||C(x) - x||^2 <= (1 - delta) ||x||^2`` (contractive ones)."""
        msg = f"{type(self).__name__} is not contractive; see omega()"
        raise NotImplementedError(msg)

    def compress(self, x: Any, seed: int = 0, *, threads: int | None = None) -> Message:
        """Compress a vector.

        Parameters
        ----------
        x : array-like, shape (D,)
            float32 or float64 (other real dtypes become float64); NumPy, CPU torch, buffer.
        seed : int
            Random stream seed in ``[0, 2^64 - 1]`` (rand-k mask, QSGD dither); the caller folds
            the round (and device) in, see :func:`derive_seed`. Ignored by top-k, sign, identity.
        threads : int, optional
            Worker threads; ``None`` uses all cores. The result does not depend on it.

        Returns
        -------
        Message

        Raises
        ------
        ValueError
            If ``x`` is not 1-D or is empty, D exceeds 2^32 - 1, k exceeds D, a value overflows
            ``value_dtype``, or (QSGD, sign) a norm is not finite.
        TypeError
            If ``x`` does not hold real numbers.
        """
        arr, _ = as_float_array(x, "x", ndim=1)
        s = check_int(seed, "seed", 0, _U64)
        t = check_threads(threads)
        d = int(arr.shape[0])
        if d > _MAX_DIM:
            msg = f"x must have at most 2^32 - 1 coordinates, got D={d}"
            raise ArgumentError(msg, argument="x")
        vdt = self.value_dtype or arr.dtype.name
        param, bucket, shared = self._param(d), self._bucket(d), self._shared()
        payload = _core.wire_compress(
            arr,
            _KINDS[self.kind],
            _VALUE_DTYPES[vdt],
            param,
            bucket,
            shared,
            s,
            self._scaled(),
            threads=t,
        )
        payload.flags.writeable = False
        k = param if self.kind in ("topk", "randk") else 0
        levels = param if self.kind == "qsgd" else 0
        return Message._valid(
            self.kind, arr.dtype, vdt, d, k, levels, bucket, shared, s if shared else 0, payload
        )

    def check_message(self, msg: Message) -> None:
        """Raise ``ValueError`` unless ``msg`` is what this compressor produces for ``msg.dim``
        (kind, k, levels, bucket, shared flag, and value dtype when one is configured)."""
        if not isinstance(msg, Message):
            m = f"msg must be a cyclad.compression.Message, got {type(msg).__name__}"
            raise ArgumentTypeError(m, argument="msg")
        want = (
            self.kind,
            self._param(msg.dim) if self.kind in ("topk", "randk", "qsgd") else 0,
            self._bucket(msg.dim),
            self._shared(),
        )
        got = (msg.kind, msg._param(), msg.bucket, msg.shared)
        if want != got:
            m = (
                f"message (kind, k|levels, bucket, shared)={got} does not match "
                f"{type(self).__name__}: expected {want}"
            )
            raise ArgumentError(m, argument="msg")
        if self.value_dtype is not None and msg.value_dtype != self.value_dtype:
            m = f"message value_dtype={msg.value_dtype!r}, expected {self.value_dtype!r}"
            raise ArgumentError(m, argument="msg")

    def decompress(self, msg: Message, *, threads: int | None = None) -> FloatArray:
        """Dense vector of a message made by this compressor's configuration.

        Parameters
        ----------
        msg : Message
        threads : int, optional
            Worker threads; ``None`` uses all cores.

        Returns
        -------
        numpy.ndarray, shape (msg.dim,)
            float32 or float64 as ``msg.dtype``.

        Raises
        ------
        ValueError
            If the message does not match this compressor (see :meth:`check_message`) or its
            payload is malformed.
        """
        self.check_message(msg)
        return decompress(msg, threads=threads)

    def __call__(self, x: Any, seed: int = 0, *, threads: int | None = None) -> FloatArray:
        """``decompress(compress(x, seed))``: the compressed vector C(x) as the server sees it."""
        return self.decompress(self.compress(x, seed, threads=threads), threads=threads)


class _Sparse(Compressor):
    def __init__(
        self, k: int | None = None, ratio: float | None = None, value_dtype: str | None = None
    ) -> None:
        super().__init__(value_dtype)
        self.k, self.ratio = _check_k_ratio(k, ratio)

    def k_for(self, dim: int) -> int:
        """k for a vector of length ``dim`` (``ratio``: ``max(1, floor(ratio*D + 1/2))``)."""
        if self.k is not None:
            if self.k > dim:
                msg = f"k must be in [1, D={dim}], got k={self.k}"
                raise ArgumentError(msg, argument="k")
            return self.k
        assert self.ratio is not None
        return max(1, min(dim, math.floor(self.ratio * dim + 0.5)))

    def _param(self, dim: int) -> int:
        return self.k_for(dim)

    def _what(self) -> str:
        return f"k={self.k}" if self.k is not None else f"ratio={self.ratio}"


class TopK(_Sparse):
    """Keep the k largest magnitudes (contractive, ``delta = k/D``).

    Parameters
    ----------
    k : int, optional
        Number of kept coordinates.
    ratio : float, optional
        Fraction in (0, 1]; exactly one of ``k`` and ``ratio`` is given.
    value_dtype : {None, "float16", "float32", "float64"}
        How values travel (``None``: the input dtype).

    Raises
    ------
    ValueError
        If both or neither of ``k`` and ``ratio`` are given, or they are out of range.
    """

    kind = "topk"
    contractive = True

    def delta(self, dim: int) -> float:
        return self.k_for(dim) / dim

    def __repr__(self) -> str:
        return f"TopK({self._what()}, value_dtype={self.value_dtype!r})"


class RandK(_Sparse):
    """Keep k uniformly random coordinates, scaled by D/k (unbiased, ``omega = D/k - 1``).

    Parameters
    ----------
    k, ratio : see :class:`TopK`.
    shared : bool
        If True the mask depends on the seed only: devices compressing with the same (round)
        seed keep the same coordinates, and the message sends the seed instead of indices.
    value_dtype : {None, "float16", "float32", "float64"}

    Raises
    ------
    ValueError
        If both or neither of ``k`` and ``ratio`` are given, or they are out of range.
    """

    kind = "randk"
    unbiased = True

    def __init__(
        self,
        k: int | None = None,
        ratio: float | None = None,
        shared: bool = False,
        value_dtype: str | None = None,
    ) -> None:
        super().__init__(k, ratio, value_dtype)
        self.shared = bool(shared)

    def _shared(self) -> bool:
        return self.shared

    def omega(self, dim: int) -> float:
        return dim / self.k_for(dim) - 1.0

    def mask(self, dim: int, seed: int) -> NDArray[np.int64]:
        """The ascending kept indices for ``(dim, seed)`` (what a shared message regenerates)."""
        d = check_int(dim, "dim", 1, _MAX_DIM)
        s = check_int(seed, "seed", 0, _U64)
        return _core.randk_indices(d, self.k_for(d), s)

    def __repr__(self) -> str:
        return f"RandK({self._what()}, shared={self.shared}, value_dtype={self.value_dtype!r})"


class QSGD(Compressor):
    """Stochastic quantization with s levels per bucket (Alistarh et al. 2017), unbiased.

    Each bucket of ``bucket`` coordinates sends its norm; coordinate i sends its sign and a
    level ``l_i`` in ``{0..s}`` with ``E[l_i] = s |x_i| / ||x_bucket||``.
    ``omega = min(b/s^2, sqrt(b)/s)`` with ``b = min(bucket, D)``.

    Parameters
    ----------
    levels : int
        s, in [1, 65535]; levels travel in ``bit_length(s)`` bits.
    bucket : int
        Bucket size (>= 1; capped at D).
    value_dtype : {None, "float16", "float32", "float64"}
        Dtype of the norms (rounded up).

    Raises
    ------
    ValueError
        If ``levels`` or ``bucket`` is out of range.
    """

    kind = "qsgd"
    unbiased = True

    def __init__(self, levels: int = 16, bucket: int = 512, value_dtype: str | None = None):
        super().__init__(value_dtype)
        self.levels = check_int(levels, "levels", 1, _MAX_LEVELS)
        self.bucket = check_int(bucket, "bucket", 1, None)

    def _param(self, dim: int) -> int:
        return self.levels

    def _bucket(self, dim: int) -> int:
        return min(self.bucket, dim)

    def omega(self, dim: int) -> float:
        b = self._bucket(dim)
        s = self.levels
        return min(b / s**2, math.sqrt(b) / s)

    def __repr__(self) -> str:
        return f"QSGD(levels={self.levels}, bucket={self.bucket}, value_dtype={self.value_dtype!r})"


class Sign(Compressor):
    """Sign compression: ``||x||_1 / D * sign(x)`` (scaled, contractive) or ``sign(x)``.

    Zero and -0.0 follow their IEEE sign bit (0.0 -> +scale, -0.0 -> -scale).
    ``delta(D) = 1/D`` is the worst case of the exact, data-dependent factor
    :meth:`delta_of`. The unscaled sign is neither unbiased nor contractive.

    Parameters
    ----------
    scaled : bool
        Scale by the mean magnitude (default) or send plain signs (scale 1).
    value_dtype : {None, "float16", "float32", "float64"}
        Dtype of the scale.
    """

    kind = "sign"

    def __init__(self, scaled: bool = True, value_dtype: str | None = None) -> None:
        super().__init__(value_dtype)
        self.scaled = bool(scaled)

    @property
    def contractive(self) -> bool:  # type: ignore[override]
        return self.scaled

    def _scaled(self) -> bool:
        return self.scaled

    def delta(self, dim: int) -> float:
        if not self.scaled:
            return super().delta(dim)
        return 1.0 / dim

    def delta_of(self, x: Any) -> float:
        """Exact contraction of the scaled sign for this x: ``||x||_1^2 / (D ||x||_2^2)``
        (so ``||C(x) - x||^2 = (1 - delta_of(x)) ||x||^2``); 1.0 for x = 0."""
        arr, _ = as_float_array(x, "x", ndim=1)
        a = arr.astype(np.float64)
        l2 = float(np.dot(a, a))
        if l2 == 0.0:
            return 1.0
        return float(np.abs(a).sum() ** 2 / (a.size * l2))

    def __repr__(self) -> str:
        return f"Sign(scaled={self.scaled}, value_dtype={self.value_dtype!r})"


class Natural(Compressor):
    """Natural compression (Horvath et al. 2019): each value is stochastically rounded to one
    of its two nearest powers of two, unbiased, ``omega = 1/8``.

    ``|x_i|`` in ``[2^e, 2^(e+1))`` becomes ``2^(e+1)`` with probability ``|x_i| / 2^e - 1``,
    else ``2^e``; the sign and zero are kept. A value travels as its sign bit and an 8-bit
    exponent code (9 bits), relative to a per-message window ``[2^emin, 2^(emin+254)]`` whose
    top is the largest power ``max|x|`` can round to (``emin`` is clamped to the smallest
    subnormal power of the dtype). A nonzero ``|x_i|`` below ``2^emin`` (only when the vector
    spans more than 2^254) becomes ``2^emin`` with probability ``|x_i| / 2^emin``, else 0:
    still unbiased, with a variance of at most ``4^emin / 4`` for that coordinate on top of
    the ``omega`` bound.

    The variance bound is tight: ``E(C(a) - a)^2 = (2^(e+1) - a)(a - 2^e) <= a^2 / 8``, with
    equality at ``a = 4/3 * 2^e``. Narrowing does not apply (no values travel; the message's
    ``value_dtype`` is the input's dtype).

    Raises ``ValueError`` on NaN / Inf input, and when ``max|x|`` could round up past the
    input dtype's range (float32 above 2^127, float64 above 2^1023).
    """

    kind = "natural"
    unbiased = True

    def __init__(self) -> None:
        super().__init__(None)

    def omega(self, dim: int) -> float:
        return 0.125

    def __repr__(self) -> str:
        return "Natural()"


class TernGrad(Compressor):
    """TernGrad (Wen et al. 2017): values in ``{-s, 0, +s}`` per bucket, unbiased.

    Each bucket of ``bucket`` coordinates sends its scale ``s = max |x_i|`` (rounded up to
    ``value_dtype``); coordinate i sends 2 bits, and is ``sign(x_i) s`` with probability
    ``|x_i| / s``, else 0. ``E||C(x) - x||^2 = s ||x||_1 - ||x||^2`` per bucket, at most
    ``omega ||x||^2`` with the tight ``omega = (sqrt(b) - 1) / 2``, ``b = min(bucket, D)``
    (worst case: one coordinate at ``s`` and the others at ``s / (sqrt(b) + 1)``). The paper's
    optional gradient clipping is not applied here (clip before compressing).

    Parameters
    ----------
    bucket : int, optional
        Bucket size (>= 1; capped at D). ``None`` (default): one scale for the whole vector,
        as in the paper's per-layer scalar.
    value_dtype : {None, "float16", "float32", "float64"}
        Dtype of the scales (rounded up).

    Raises
    ------
    ValueError
        If ``bucket`` is out of range.
    """

    kind = "terngrad"
    unbiased = True

    def __init__(self, bucket: int | None = None, value_dtype: str | None = None) -> None:
        super().__init__(value_dtype)
        self.bucket = None if bucket is None else check_int(bucket, "bucket", 1, None)

    def _bucket(self, dim: int) -> int:
        return dim if self.bucket is None else min(self.bucket, dim)

    def omega(self, dim: int) -> float:
        return (math.sqrt(self._bucket(dim)) - 1.0) / 2.0

    def __repr__(self) -> str:
        return f"TernGrad(bucket={self.bucket}, value_dtype={self.value_dtype!r})"


class Identity(Compressor):
    """No compression (values in ``value_dtype``): unbiased with ``omega = 0``."""

    kind = "identity"
    unbiased = True
    contractive = True

    def omega(self, dim: int) -> float:
        return 0.0

    def delta(self, dim: int) -> float:
        return 1.0

    def __repr__(self) -> str:
        return f"Identity(value_dtype={self.value_dtype!r})"


# --------------------------------------------------------------------------------------------
# signSGD with majority vote
# --------------------------------------------------------------------------------------------


def majority_vote(
    messages: Any,
    *,
    dim: int | None = None,
    dtype: Any = None,
    threads: int | None = None,
) -> FloatArray:
    """Coordinate-wise majority of n sign messages: signSGD with majority vote (Bernstein et
    al. 2019), the server's 1-bit aggregation.

    Each message votes with its sign bits only (its scale is ignored, so scaled and unscaled
    :class:`Sign` messages vote alike). Coordinate i of the result is ``-1`` where more than
    half of the n messages are negative (sign bit 1: negative values and ``-0.0``), ``+1``
    where more than half are non-negative, and ``0`` on a tie (n even, n/2 each way), as with
    ``sign(sum_j sign(x_j))`` and ``sign(0) = 0``. The count runs in C++ on the packed bits
    (bit-sliced 64-bit counters), exactly: bit-identical for any thread count and ISA.

    A Byzantine device changes at most one vote per coordinate; with ``f`` of them, a
    coordinate where the honest majority leads by more than ``2f`` votes keeps its sign.

    Parameters
    ----------
    messages : sequence of Message or bytes-like
        n >= 1 sign messages of one dimension and dtype. Bytes are parsed and validated with
        :meth:`Message.from_bytes` (with ``dim=`` and ``dtype=``); a hand-built
        :class:`Message` is validated too.
    dim : int, optional
        Expected D of every message.
    dtype : {None, numpy.float32, numpy.float64}, optional
        Expected dense dtype of every message (the result's dtype).
    threads : int, optional
        Worker threads; ``None`` uses all cores.

    Returns
    -------
    numpy.ndarray, shape (D,)
        Values in ``{-1, 0, +1}``, of the messages' dtype.

    Raises
    ------
    ValueError
        If there is no message, a message is malformed or not of kind ``"sign"``, or the
        messages differ in D or dtype (or from ``dim`` / ``dtype``).
    TypeError
        If an entry is neither a :class:`Message` nor bytes-like.
    """
    t = check_threads(threads)
    want_dim = None if dim is None else check_int(dim, "dim", 1, _MAX_DIM)
    want_dtype = None if dtype is None else _check_dense_dtype(dtype)
    if isinstance(messages, (bytes, bytearray, memoryview, Message, np.ndarray)):
        msg = f"messages must be a sequence of messages, got one {type(messages).__name__}"
        raise ArgumentTypeError(msg, argument="messages")
    try:
        items = list(messages)
    except TypeError as exc:
        msg = f"messages must be a sequence of messages, got {type(messages).__name__}"
        raise ArgumentTypeError(msg, argument="messages") from exc
    if not items:
        msg = "majority_vote needs at least one message, got none"
        raise ArgumentError(msg, argument="messages")
    parsed: list[Message] = []
    for i, m in enumerate(items):
        if not isinstance(m, Message):
            try:
                m = Message.from_bytes(m, dim=want_dim, dtype=want_dtype, threads=threads)
            except ValueError as exc:
                msg = f"message {i}: {exc}"
                raise ArgumentError(msg, argument="messages") from None
            except TypeError as exc:
                msg = f"message {i} must be a Message or bytes-like, got {type(m).__name__}"
                raise ArgumentTypeError(msg, argument="messages") from exc
        elif not m._validated:
            try:
                m = Message.from_bytes(m.to_bytes(), dim=m.dim, threads=threads)
            except ValueError as exc:
                msg = f"message {i}: {exc}"
                raise ArgumentError(msg, argument="messages") from None
        if m.kind != "sign":
            msg = f"message {i} is a {m.kind!r} message; majority_vote takes sign messages"
            raise ArgumentError(msg, argument="messages")
        ref = parsed[0] if parsed else None
        d0 = want_dim if want_dim is not None else (ref.dim if ref is not None else m.dim)
        t0 = want_dtype if want_dtype is not None else (ref.dtype if ref is not None else m.dtype)
        if m.dim != d0 or m.dtype != t0:
            msg = (
                f"message {i} has D={m.dim} and dtype {m.dtype.name}, expected D={d0} and "
                f"dtype {np.dtype(t0).name}"
            )
            raise ArgumentError(msg, argument="messages")
        parsed.append(m)
    first = parsed[0]
    sections = [m.payload[np.dtype(m.value_dtype).itemsize :] for m in parsed]
    out: FloatArray = _core.sign_majority(
        sections, first.dim, float64=first.dtype == np.float64, threads=t
    )
    return out


# --------------------------------------------------------------------------------------------
# error feedback
# --------------------------------------------------------------------------------------------


class _Stateful:
    def __init__(self, compressor: Compressor) -> None:
        if not isinstance(compressor, Compressor):
            msg = f"compressor must be a cyclad.compression.Compressor, got {compressor!r}"
            raise ArgumentTypeError(msg, argument="compressor")
        self.compressor = compressor
        self._state: FloatArray | None = None

    def reset(self) -> None:
        """Forget the state (start of a new run)."""
        self._state = None

    def _input(self, x: Any) -> FloatArray:
        arr, _ = as_float_array(x, "x", ndim=1)
        st = self._state
        if st is not None and (st.shape != arr.shape or st.dtype != arr.dtype):
            msg = (
                f"x has shape {arr.shape} and dtype {arr.dtype}, but the state holds "
                f"{st.shape} {st.dtype}; call reset() to start over"
            )
            raise ArgumentError(msg, argument="x")
        return arr

    def decompress(self, msg: Message, *, threads: int | None = None) -> FloatArray:
        """The wrapped compressor's ``decompress``."""
        return self.compressor.decompress(msg, threads=threads)


class ErrorFeedback(_Stateful):
    """EF14 error feedback around a compressor, one instance per device.

    ``compress(x)`` sends ``C(x + e)`` and keeps ``e <- x + e - C(x + e)``, so over any number of
    rounds ``sum(decompressed) + residual == sum(inputs)`` (to rounding). The server just
    decompresses each message.

    Parameters
    ----------
    compressor : Compressor
    """

    @property
    def residual(self) -> FloatArray | None:
        """Copy of the accumulated error e (None before the first call)."""
        return None if self._state is None else self._state.copy()

    def compress(self, x: Any, seed: int = 0, *, threads: int | None = None) -> Message:
        """Compress ``x + e`` and update the residual; see :meth:`Compressor.compress`."""
        arr = self._input(x)
        v = arr if self._state is None else arr + self._state
        msg = self.compressor.compress(v, seed, threads=threads)
        self._state = v - self.compressor.decompress(msg, threads=threads)
        return msg

    def __repr__(self) -> str:
        return f"ErrorFeedback({self.compressor!r})"


class EF21(_Stateful):
    """EF21 state differences (Richtarik et al. 2021), one instance per device.

    The device keeps ``g`` (zeros at start), sends ``C(x - g)`` and sets ``g <- g + C(x - g)``.
    The server must keep the same ``g`` for this device (an :class:`EF21Receiver`), add each
    decompressed message to it, and aggregate the states ``g_i``, not the messages.

    Parameters
    ----------
    compressor : Compressor
    """

    @property
    def state(self) -> FloatArray | None:
        """Copy of the device state g (None before the first call)."""
        return None if self._state is None else self._state.copy()

    def compress(self, x: Any, seed: int = 0, *, threads: int | None = None) -> Message:
        """Compress ``x - g`` and update ``g``; see :meth:`Compressor.compress`."""
        arr = self._input(x)
        diff = arr if self._state is None else arr - self._state
        msg = self.compressor.compress(diff, seed, threads=threads)
        delta = self.compressor.decompress(msg, threads=threads)
        self._state = delta if self._state is None else self._state + delta
        return msg

    def __repr__(self) -> str:
        return f"EF21({self.compressor!r})"


class EF21Receiver(_Stateful):
    """Server-side mirror of one device's :class:`EF21` state.

    Parameters
    ----------
    compressor : Compressor
        The configuration the device uses (messages are checked against it).
    """

    @property
    def state(self) -> FloatArray | None:
        """Copy of the mirrored state g (None before the first message)."""
        return None if self._state is None else self._state.copy()

    def update(self, msg: Message, *, threads: int | None = None) -> FloatArray:
        """Add the decompressed message to the state and return a copy of the new state.

        Raises
        ------
        ValueError
            If the message does not match the compressor or the state's shape / dtype.
        """
        delta = self.compressor.decompress(msg, threads=threads)
        st = self._state
        if st is not None and (st.shape != delta.shape or st.dtype != delta.dtype):
            m = f"message gives {delta.shape} {delta.dtype}, state holds {st.shape} {st.dtype}"
            raise ArgumentError(m, argument="msg")
        if st is None:
            self._state = delta
        else:
            # a sender's state may overflow or turn NaN (Inf - Inf): that is data, not a warning
            with np.errstate(over="ignore", invalid="ignore"):
                self._state = st + delta
        return self._state.copy()

    def __repr__(self) -> str:
        return f"EF21Receiver({self.compressor!r})"
