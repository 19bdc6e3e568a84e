"""The randomness of a run: one counter-based scheme, keyed by (seed, round, device, purpose).

Every random value a run uses is a pure function of those four keys and a position in the
stream, so any process (the simulation, a device, the server) derives the same values on its own
without carrying state between rounds:

    word k of stream(seed, t, device, purpose) = output k of Philox-4x64-10 (Random123)
                                                 with key (seed, t), counter (0, device, purpose, 0)

(NumPy's :class:`numpy.random.Philox` bit generator computes these words; a bit generator's raw
output is fixed by its algorithm, unlike the methods of :class:`numpy.random.Generator`, whose
streams may change between NumPy versions.) Integer draws -- permutations, samples without
replacement, seeds for the C++ kernels -- are therefore identical on every NumPy version and
platform. Floating-point draws (uniform, normal) are computed from the words with a fixed
formula; a normal draw goes through ``log`` and ``cos``, so it can differ in the last bit where
two platforms' math libraries do.

Purposes (the third key): :data:`PERMUTATION` (cyclic assignment, round ``t``; device 0 -- these
are the words :func:`cyclad.coding.permutation` has always used), :data:`BATCH` (mini-batch of
subset ``j``: the device slot holds ``j``), :data:`BYZANTINE` (the Byzantine set, round
:data:`SETUP`), :data:`ATTACK` (the coalition's noise), :data:`COMPRESSION` (a device's
compression seed; :data:`ALL` for a seed shared by every device), :data:`BUCKETING` (the
server's bucketing seed), :data:`CODE_MATRIX` (the random matrix of a gradient code).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "ALL",
    "ATTACK",
    "BATCH",
    "BUCKETING",
    "BYZANTINE",
    "CODE_MATRIX",
    "COMPRESSION",
    "PERMUTATION",
    "SETUP",
    "Stream",
    "permutation",
    "sample",
    "seed_word",
    "words",
]

U64_MAX = 2**64 - 1

PERMUTATION = 0
BATCH = 1
BYZANTINE = 2
ATTACK = 3
COMPRESSION = 4
BUCKETING = 5
CODE_MATRIX = 6

#: Round key of draws that belong to the whole run rather than one round.
SETUP = U64_MAX
#: Device key of draws shared by every device (a shared mask seed, the coalition, the server).
ALL = U64_MAX


def _key(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        msg = f"{name} must be an integer, got {type(value).__name__}"
        raise TypeError(msg)
    v = int(value)
    if not 0 <= v <= U64_MAX:
        msg = f"{name} must be in [0, 2**64 - 1], got {v}"
        raise ValueError(msg)
    return v


class Stream:
    """The words of ``stream(seed, t, device, purpose)``, read front to back.

    Each draw takes the next words of the stream, so a sequence of draws is a pure function of the
    keys and the order of the calls. The methods mirror :class:`numpy.random.Generator`'s where
    they share a name, so an attack written against a Generator runs unchanged.

    Parameters
    ----------
    seed, t, device, purpose : int
        The four keys, each in ``[0, 2**64 - 1]``.
    """

    def __init__(self, seed: int, t: int, device: int, purpose: int) -> None:
        self.keys = (
            _key(seed, "seed"),
            _key(t, "t"),
            _key(device, "device"),
            _key(purpose, "purpose"),
        )
        s, r, dev, pur = self.keys
        key = np.array([s, r], dtype=np.uint64)
        counter = np.array([0, dev, pur, 0], dtype=np.uint64)
        self._bits = np.random.Philox(key=key, counter=counter)

    def words(self, count: int) -> NDArray[np.uint64]:
        """The next ``count`` 64-bit words."""
        if count <= 0:
            return np.empty(0, dtype=np.uint64)
        return np.asarray(self._bits.random_raw(int(count)), dtype=np.uint64)

    def random(self, size: Any = None) -> Any:
        """Uniform floats in ``[0, 1)``: the top 53 bits of one word each, times ``2**-53``."""
        shape = () if size is None else size
        count = int(np.prod(shape, dtype=np.int64))
        u = (self.words(count) >> np.uint64(11)).astype(np.float64) * 2.0**-53
        return float(u[0]) if size is None else u.reshape(shape)

    def standard_normal(self, size: Any = None) -> Any:
        """Standard normal floats by the Box-Muller transform of pairs of uniforms."""
        shape = () if size is None else size
        count = int(np.prod(shape, dtype=np.int64))
        pairs = (count + 1) // 2
        u = self.random(2 * pairs).reshape(pairs, 2) if pairs else np.empty((0, 2))
        r = np.sqrt(-2.0 * np.log1p(-u[:, 0]))  # 1 - u in (0, 1]: the log is finite
        a = 2.0 * np.pi * u[:, 1]
        z = np.stack([r * np.cos(a), r * np.sin(a)], axis=1).reshape(-1)[:count]
        return float(z[0]) if size is None else z.reshape(shape)

    def normal(self, loc: float = 0.0, scale: float = 1.0, size: Any = None) -> Any:
        """``loc + scale * standard_normal(size)``."""
        z = self.standard_normal(size)
        return loc + scale * z

    def permutation(self, n: int) -> NDArray[np.int64]:
        """A uniform permutation of ``range(n)``: the stable argsort of ``n`` words (ties among
        64-bit words have probability about ``n**2 / 2**65``)."""
        return np.argsort(self.words(n), kind="stable").astype(np.int64, copy=False)

    def sample(self, n: int, k: int) -> NDArray[np.int64]:
        """``k`` distinct indices of ``range(n)``, uniformly, in increasing order."""
        if not 0 <= k <= n:
            msg = f"k must be in [0, n = {n}], got {k}"
            raise ValueError(msg)
        return np.sort(self.permutation(n)[:k])

    def __repr__(self) -> str:
        return "Stream(seed={}, t={}, device={}, purpose={})".format(*self.keys)


def words(seed: int, t: int, device: int, purpose: int, count: int) -> NDArray[np.uint64]:
    """The first ``count`` words of ``stream(seed, t, device, purpose)``."""
    return Stream(seed, t, device, purpose).words(count)


def seed_word(seed: int, t: int, device: int, purpose: int) -> int:
    """The first word of ``stream(seed, t, device, purpose)``: a 64-bit seed for a C++ kernel."""
    return int(words(seed, t, device, purpose, 1)[0])


def permutation(seed: int, t: int, device: int, purpose: int, n: int) -> NDArray[np.int64]:
    """:meth:`Stream.permutation` of a fresh stream."""
    return Stream(seed, t, device, purpose).permutation(n)


def sample(seed: int, t: int, device: int, purpose: int, n: int, k: int) -> NDArray[np.int64]:
    """:meth:`Stream.sample` of a fresh stream."""
    return Stream(seed, t, device, purpose).sample(n, k)
