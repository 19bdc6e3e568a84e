"""The LAD / Com-LAD round, written once: every runtime (the in-process simulation, a
torch.distributed run, a Flower app) calls these steps and only moves bytes between them.

One round ``t`` (DESIGN §1):

1. :func:`plan_round` gives everything random about the round, as a pure function of the run's
   :class:`RoundSpec` and ``t``: device ``i``'s window of subsets (row ``i`` of the cyclic
   assignment), the mini-batch of every subset, every device's compression seed, the Byzantine
   devices and the server's bucketing seed. Any process derives the same plan on its own
   (:mod:`cyclad._random`).
2. An honest device runs :func:`device_step`: its ``d`` subset gradients at the broadcast model
   ``theta`` (on the round's mini-batches), encoded as ``z_i = sum_j b_ij g_j``
   (:func:`cyclad.coding.encode`), then :func:`encode_payload`: the raw little-endian vector
   (LAD, ``itemsize * P`` bytes) or its compressed :class:`~cyclad.compression.Message` bytes
   (Com-LAD; the device's own compressor object carries its EF14 / EF21 state).
3. A Byzantine device runs :func:`byzantine_step`: the attack crafts its vector from what it is
   allowed to see (:class:`cyclad.attacks.AttackContext`), and it is sent as a valid message of
   the run's compressor (under EF21 through the device's own EF21 sender, so the server's state
   ends up at the crafted vector).
4. The :class:`Server` receives the payloads (:meth:`Server.step`, or :meth:`Server.begin`,
   :meth:`Server.receive` per device and :meth:`Server.finish`): it decodes and validates each
   one, keeps the EF21 receiver states, records every malformed, wrong-sized or missing payload
   as a :class:`Fault`, aggregates and steps the model.

Methods (:attr:`RoundSpec.method`): ``"lad"`` is the round above. ``"draco"`` is DRACO (Chen
et al., 2018, with the repetition code): the devices form ``n / d`` groups of ``d`` consecutive
devices, and every device of group ``k`` gets the same window, the ``k``-th block of ``d``
subsets of the round's permutation (``pi_t(kd), ..., pi_t(kd + d - 1)``; disjoint windows, so
every subset is still computed by exactly ``d`` devices). Devices encode and send exactly as in
LAD (the mean of their window's gradients), so the honest devices of a group send bit-identical
vectors, and the server replaces the robust rule by the majority vote of
:meth:`cyclad.coding.FractionalRepetitionCode.majority_rows` in every group
(:func:`draco_rule`): with ``d = 2f + 1`` it recovers the exact mean gradient whatever ``f``
Byzantine devices send. The computation load is ``d`` subset gradients per device, as LAD's.

An *absent* vector -- a payload that is ``None``, does not parse, has the wrong size, or never
arrives -- is an all-NaN row for that round. The rules treat it as a poisoned row (DESIGN §4):
coordinate-wise rules order NaN above +Inf and trim it, distance-based rules give it an
infinite distance (weight 0 in the geometric median, no contribution in centered clipping), so
up to ``f`` absent or Byzantine rows together leave every robust rule finite; ``mean`` becomes
NaN. Under EF21 an absent message leaves that device's receiver state unchanged. Under
``"sign_majority"`` (signSGD with majority vote) an absent device simply does not vote.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from cyclad import _random, aggregators, attacks, coding, compression, models
from cyclad._validation import ArgumentError

__all__ = [
    "SIGN_MAJORITY",
    "Fault",
    "RoundPlan",
    "RoundSpec",
    "Server",
    "bucketing_seed",
    "byzantine_devices",
    "byzantine_step",
    "device_step",
    "draco_rule",
    "encode_payload",
    "make_rule",
    "plan_round",
    "round_rule",
    "sign_majority",
]

Array = NDArray[Any]
Rule = Callable[[Array], Array]
METHODS = ("lad", "draco")
MALFORMED = b"\x00malformed"  # what a Byzantine device sends when its compressor refuses a vector


@dataclass(frozen=True)
class RoundSpec:
    """The plain values a round plan depends on (shared by the server and every device).

    Attributes
    ----------
    n, d : int
        Devices (= subsets) and redundancy, ``1 <= d <= n``.
    mode : str
        Cyclic assignment mode: ``"permute"``, ``"shift"`` or ``"fixed"``.
    seed : int
        Assignment, Byzantine set and bucketing.
    device_seed : int or None
        Mini-batches, compression and the attack's noise (None = ``seed``).
    n_byzantine : int
        Byzantine devices, ``0 <= n_byzantine < n``.
    byzantine : str
        ``"first"`` (devices ``0 .. n_byzantine - 1``) or ``"random"`` (seeded, fixed per run).
    subset_sizes : tuple of int or None
        Samples in each subset (needed with ``batch_size``).
    batch_size : int or None
        Samples per subset gradient; None (or at least a subset's size) uses the whole subset.
    shared_compression : bool
        One compression seed for every device per round (shared rand-k masks).
    method : str
        ``"lad"`` (cyclic windows) or ``"draco"`` (groups of ``d`` devices sharing a window;
        needs ``d`` to divide ``n``).
    """

    n: int
    d: int
    mode: str = "permute"
    seed: int = 0
    device_seed: int | None = None
    n_byzantine: int = 0
    byzantine: str = "first"
    subset_sizes: tuple[int, ...] | None = None
    batch_size: int | None = None
    shared_compression: bool = False
    method: str = "lad"

    def __post_init__(self) -> None:
        _code(self.n, self.d, self.mode, self.seed)  # checks n, d, mode and seed
        if self.method not in METHODS:
            msg = f"method must be one of {METHODS}, got {self.method!r}"
            raise ArgumentError(msg, argument="method")
        if self.method == "draco" and self.n % self.d != 0:
            msg = f"draco needs d to divide n (groups of d devices), got n={self.n}, d={self.d}"
            raise ArgumentError(msg, argument="d")
        if not 0 <= self.n_byzantine < self.n:
            msg = f"n_byzantine must be in [0, {self.n - 1}], got {self.n_byzantine}"
            raise ArgumentError(msg, argument="n_byzantine")
        if self.byzantine not in ("first", "random"):
            msg = f"byzantine must be 'first' or 'random', got {self.byzantine!r}"
            raise ArgumentError(msg, argument="byzantine")
        if self.batch_size is not None:
            if self.batch_size < 1:
                msg = f"batch_size must be >= 1, got {self.batch_size}"
                raise ArgumentError(msg, argument="batch_size")
            if self.subset_sizes is None or len(self.subset_sizes) != self.n:
                msg = "subset_sizes must give the size of each of the n subsets with batch_size"
                raise ArgumentError(msg, argument="subset_sizes")

    @property
    def dseed(self) -> int:
        """The seed of the devices' randomness."""
        return self.seed if self.device_seed is None else self.device_seed


@dataclass(frozen=True)
class RoundPlan:
    """Everything random about round ``t`` (:func:`plan_round`).

    Attributes
    ----------
    t : int
    assignment : ndarray of int64, shape (n, d)
        Row ``i``: the subsets of device ``i``'s window.
    batches : tuple of (ndarray of int64 or None)
        For each subset ``j``: the sorted positions (within the subset) of its mini-batch, or
        None for the whole subset. The ``d`` devices that compute subset ``j`` use the same batch.
    compression_seeds : tuple of int
        Device ``i``'s compression seed (all equal with ``shared_compression``); drawn on first
        use (:meth:`compression_seed` draws one device's alone).
    byzantine, honest : ndarray of int64
        The Byzantine and the honest devices, sorted.
    bucketing_seed : int
        The server's bucketing seed.
    device_seed : int
        The seed of the devices' draws (compression seeds, the coalition's stream).
    shared_compression : bool
        One compression seed for every device.
    """

    t: int
    assignment: Array
    batches: tuple[Array | None, ...]
    byzantine: Array
    honest: Array
    bucketing_seed: int
    device_seed: int
    shared_compression: bool = False

    def compression_seed(self, device: int) -> int:
        """Device ``device``'s compression seed of this round."""
        dev = _random.ALL if self.shared_compression else int(device)
        return _random.seed_word(self.device_seed, self.t, dev, _random.COMPRESSION)

    @functools.cached_property
    def compression_seeds(self) -> tuple[int, ...]:
        n = int(self.assignment.shape[0])
        if self.shared_compression:
            return (self.compression_seed(0),) * n
        return tuple(self.compression_seed(i) for i in range(n))

    def selections(self, subsets: Sequence[Any], devices: Any = None) -> list[Any]:
        """The sample selections of the round: subset ``j``'s rows (a slice or an index array into
        the data) restricted to its batch, for every subset (``devices=None``) or for the
        window of one device (``devices=i``), in window order."""
        js = range(len(subsets)) if devices is None else self.assignment[int(devices)].tolist()
        out = []
        for j in js:
            s, b = subsets[j], self.batches[j]
            if b is None:
                out.append(s)
            elif isinstance(s, slice):
                out.append(s.indices(2**62)[0] + b)
            else:
                out.append(np.asarray(s, dtype=np.int64)[b])
        return out

    def attack_stream(self) -> _random.Stream:
        """The coalition's random stream of this round (a fresh one at every call)."""
        return _random.Stream(self.device_seed, self.t, _random.ALL, _random.ATTACK)


@functools.lru_cache(maxsize=16)
def _code(n: int, d: int, mode: str, seed: int) -> coding.CyclicCode:
    return coding.CyclicCode(n, d, mode=mode, seed=seed)  # type: ignore[arg-type]


@functools.lru_cache(maxsize=16)
def byzantine_devices(spec: RoundSpec) -> Array:
    """The run's Byzantine devices (sorted; the same in every round)."""
    if spec.byzantine == "first":
        byz = np.arange(spec.n_byzantine, dtype=np.int64)
    else:
        stream = _random.Stream(spec.seed, _random.SETUP, _random.ALL, _random.BYZANTINE)
        byz = stream.sample(spec.n, spec.n_byzantine)
    byz.setflags(write=False)
    return byz


@functools.lru_cache(maxsize=16)
def _honest_devices(spec: RoundSpec) -> Array:
    honest = np.setdiff1d(np.arange(spec.n, dtype=np.int64), byzantine_devices(spec))
    honest.setflags(write=False)
    return honest


def bucketing_seed(seed: int, t: int) -> int:
    """The server's bucketing seed of round ``t``."""
    return _random.seed_word(seed, t, _random.ALL, _random.BUCKETING)


def plan_round(spec: RoundSpec, t: int) -> RoundPlan:
    """The plan of round ``t``: a pure function of ``spec`` and ``t``."""
    n, ds = spec.n, spec.dseed
    code = _code(n, spec.d, spec.mode, spec.seed)
    if spec.method == "draco":
        blocks = (np.arange(n) // spec.d * spec.d)[:, None] + np.arange(spec.d)[None, :]
        A = np.asarray(code.permutation(t)[blocks], dtype=np.int64)
    else:
        A = code.assignment(t)
    batches: list[Array | None] = [None] * n
    if spec.batch_size is not None and spec.subset_sizes is not None:
        for j, size in enumerate(spec.subset_sizes):
            if spec.batch_size < size:
                batches[j] = _random.sample(ds, t, j, _random.BATCH, size, spec.batch_size)
    byz = byzantine_devices(spec)
    return RoundPlan(
        t=t,
        assignment=A,
        batches=tuple(batches),
        byzantine=byz,
        honest=_honest_devices(spec),
        bucketing_seed=bucketing_seed(spec.seed, t),
        device_seed=ds,
        shared_compression=spec.shared_compression,
    )


# --------------------------------------------------------------------------------------------
# devices
# --------------------------------------------------------------------------------------------


def encode_payload(
    z: Array,
    compressor: compression.CompressorLike | None,
    seed: int,
    *,
    threads: int | None = None,
) -> bytes:
    """What a device puts on the wire for its coded vector ``z`` (shape ``(P,)``).

    LAD (``compressor=None``): the raw little-endian vector. Com-LAD: the compressor's
    :class:`~cyclad.compression.Message` bytes (``compressor`` may be an ``ErrorFeedback`` /
    ``EF21`` wrapper, which updates its state).
    """
    if compressor is None:
        return np.ascontiguousarray(z, dtype=z.dtype.newbyteorder("<")).tobytes()
    return bytes(compressor.compress(z, seed=seed, threads=threads).to_bytes())


def device_step(
    model: models.ModelLike,
    theta: Array,
    X: Array,
    y: Array,
    subsets: Sequence[Any],
    plan: RoundPlan,
    device: int,
    *,
    compressor: compression.CompressorLike | None = None,
    weights: Array | None = None,
    threads: int | None = None,
    timings: dict[str, float] | None = None,
) -> bytes:
    """One honest device's round: its window's subset gradients at ``theta``, encoded, sent.

    Parameters
    ----------
    model : Model
    theta : ndarray, shape (P,)
        The broadcast model.
    X, y : ndarray
        The (entire) training data the device holds.
    subsets : sequence of slices or index arrays
        The ``n`` data subsets (rows of ``X``).
    plan : RoundPlan
        The round's plan (:func:`plan_round`).
    device : int
        This device.
    compressor : compressor or None
        The device's own compressor (Com-LAD; its EF state is updated) or None (LAD).
    weights : ndarray, shape (1, d), optional
        Encoding weights (uniform ``1/d`` by default).
    threads : int, optional
        Threads of the encoding and compression kernels (None = all cores).
    timings : dict, optional
        Receives the wall-clock seconds of the step's parts: ``"compute"`` (the subset
        gradients) and ``"encode"`` (encoding and compression).

    Returns
    -------
    bytes
        The payload for the server.
    """
    t0 = time.perf_counter()
    G = model.subset_grads(theta, X, y, plan.selections(subsets, device))
    t1 = time.perf_counter()
    A = np.arange(G.shape[0], dtype=np.int64)[None, :]
    z = np.asarray(coding.encode(G, A, weights, threads=threads))[0]
    out = encode_payload(z, compressor, plan.compression_seed(device), threads=threads)
    if timings is not None:
        timings["compute"] = t1 - t0
        timings["encode"] = time.perf_counter() - t1
    return out


def byzantine_step(
    attack: attacks.Attack,
    plan: RoundPlan,
    *,
    honest: Array,
    n: int,
    byzantine_honest: Array | None = None,
    aggregate: Rule | None = None,
    compressor: compression.CompressorLike | None = None,
    senders: dict[int, Any] | None = None,
    devices: Sequence[int] | None = None,
    threads: int | None = None,
) -> list[bytes]:
    """The Byzantine devices' payloads of one round, in ``plan.byzantine`` order.

    Parameters
    ----------
    attack : Attack
    plan : RoundPlan
    honest : ndarray, shape (n_honest, P)
        What the coalition sees of the honest devices (the vectors as the server decodes them).
    n : int
        Number of devices.
    byzantine_honest : ndarray, shape (f, P), optional
        What the Byzantine devices would send if honest (their own windows' coded gradients).
    aggregate : callable, optional
        The server's rule of this round.
    compressor : compressor or None
        The run's base compressor (None: LAD, raw vectors).
    senders : dict, optional
        Per Byzantine device, its own stateful sender (an ``EF21`` wrapper under EF21), used
        instead of ``compressor``.
    devices : sequence of int, optional
        Encode the payloads of these Byzantine devices only (a process that runs one of them);
        the coalition's vectors are crafted together all the same.
    threads : int, optional

    Returns
    -------
    list of bytes
        One payload per Byzantine device (of ``devices``), in ``plan.byzantine`` order. A
        vector the compressor refuses (e.g. non-finite for a sign message) is sent as the
        malformed payload :data:`MALFORMED`.
    """
    ctx = attacks.AttackContext(
        honest=honest,
        n=n,
        f=int(plan.byzantine.size),
        byzantine_honest=byzantine_honest,
        assignment=plan.assignment,
        honest_idx=plan.honest,
        byzantine_idx=plan.byzantine,
        aggregate=aggregate,
        rng=plan.attack_stream(),
    )
    B = np.asarray(attack(ctx), dtype=honest.dtype)
    out = []
    wanted = None if devices is None else {int(i) for i in devices}
    for k, i in enumerate(plan.byzantine.tolist()):
        if wanted is not None and i not in wanted:
            continue
        comp = senders.get(i, compressor) if senders else compressor
        try:
            out.append(encode_payload(B[k], comp, plan.compression_seed(i), threads=threads))
        except (ValueError, TypeError):
            out.append(MALFORMED)
    return out


# --------------------------------------------------------------------------------------------
# the server
# --------------------------------------------------------------------------------------------


SIGN_MAJORITY = "sign_majority"
"""The rule name of signSGD with majority vote (:func:`cyclad.compression.majority_vote`): the
server votes on the devices' sign messages; it needs the ``sign`` compressor."""

_VOTER = compression.Sign(scaled=False)


def sign_majority(X: Any, *, threads: int | None = None) -> Array:
    """The majority vote of the rows' sign bits, ``(n, P) -> (P,)`` in ``{-1, 0, +1}``: the
    dense form of what :class:`Server` computes on the sign messages themselves. A row with a
    NaN (an absent device) does not vote; no voter gives zeros."""
    A = np.asarray(X)
    voters = [row for row in A if not np.isnan(row).any()]
    if not voters:
        return np.zeros(A.shape[1], dtype=A.dtype)
    msgs = [_VOTER.compress(row, threads=threads) for row in voters]
    return compression.majority_vote(msgs, threads=threads)


def _is_vote(name: str) -> bool:
    return name.strip().lower().replace("-", "_") == SIGN_MAJORITY


def make_rule(
    name: str,
    f: int,
    params: dict[str, Any] | None = None,
    *,
    seed: int = 0,
    threads: int | None = None,
) -> Rule:
    """The aggregation ``(n, P) -> (P,)`` for a registry name (``"nnm+trimmed_mean"``).

    ``f`` and the bucketing ``seed`` go to the components that take them; every parameter of
    ``params`` must be taken by some component.

    Raises
    ------
    cyclad.ArgumentError
        (a ``ValueError``) With ``argument == "params"`` if a parameter of ``params`` is taken
        by no component of the rule (the message lists the valid ones); otherwise as
        :func:`cyclad.aggregators.get`.
    """
    if _is_vote(name):
        if params:
            msg = f"parameter(s) {sorted(params)} are taken by no component of {name!r}"
            raise ArgumentError(msg, argument="params")
        return functools.partial(sign_majority, threads=threads)
    kw = dict(params or {})
    defaults: dict[str, Any] = {"f": f}
    if "bucketing" in name:
        defaults["seed"] = seed
    accepted: set[str] = set()
    known = True
    for part in name.split("+"):
        fn = getattr(aggregators, part.strip().lower().replace("-", "_"), None)
        if callable(fn):
            accepted |= set(list(inspect.signature(fn).parameters)[1:]) - {"threads"}
        else:
            known = False
    if known:  # else aggregators.get reports the unknown name
        unknown = sorted(set(kw) - accepted)
        if unknown:
            msg = (
                f"parameter(s) {unknown} are taken by no component of {name!r}; valid "
                f"parameters: {sorted(accepted)}"
            )
            raise ArgumentError(msg, argument="params")
        kw.update({k: v for k, v in defaults.items() if k in accepted and k not in kw})
    else:
        kw = {**defaults, **kw}
    return aggregators.get(name, threads=threads, **kw)


def round_rule(
    name: str,
    f: int,
    params: dict[str, Any] | None,
    *,
    seed: int,
    t: int,
    threads: int | None = None,
) -> Rule:
    """The server's rule of round ``t`` (:func:`make_rule`; bucketing draws its buckets with
    :func:`bucketing_seed` of ``seed``): what an omniscient coalition is told the server runs."""
    bseed = bucketing_seed(seed, t) if "bucketing" in name else 0
    return make_rule(name, f, params, seed=bseed, threads=threads)


def draco_rule(n: int, d: int, f: int | None = None, *, threads: int | None = None) -> Rule:
    """DRACO's server rule ``(n, P) -> (P,)``: the majority vector of every group of ``d``
    consecutive devices (:meth:`cyclad.coding.FractionalRepetitionCode.majority_rows`, ``f``
    Byzantine or absent devices tolerated per group, default ``(d - 1) // 2``), averaged over
    the ``n / d`` groups. With the windows of ``method="draco"`` (every row the mean of its
    group's ``d`` subset gradients) this is the exact mean gradient. All-NaN rows (absent
    devices, and Byzantine ones that send only NaN) neither win nor vote: identical placeholders
    cannot outvote a group's honest devices; they count against the group like Byzantine ones,
    so a group with more than ``f`` of them has no majority and the rule raises.

    Raises
    ------
    cyclad.ArgumentError
        If ``d`` does not divide ``n`` or ``f`` is outside ``[0, (d - 1) // 2]``; the rule
        itself raises :class:`cyclad.coding.NoMajorityError` for a group without majority.
    """
    code = _frc(int(n), int(d) - 1)
    fv = code._check_f(f)
    weights = np.full((1, code.groups), 1.0 / code.groups)

    def rule(X: Array) -> Array:
        absent = np.fromiter((bool(np.isnan(r).all()) for r in X), dtype=bool, count=len(X))
        rows = code.majority_rows(X, f=fv, absent=absent)
        out = np.asarray(coding.encode(X, rows[None, :], weights, threads=threads))
        return np.asarray(out[0])

    return rule


@functools.lru_cache(maxsize=16)
def _frc(n: int, s: int) -> coding.FractionalRepetitionCode:
    if s < 0 or s >= n or n % (s + 1):
        msg = f"draco needs d to divide n (groups of d devices), got n={n}, d={s + 1}"
        raise ArgumentError(msg, argument="d")
    return coding.FractionalRepetitionCode(n, s)


@dataclass(frozen=True)
class Fault:
    """A device whose vector was absent in a round, and why."""

    round: int
    device: int
    reason: str


class Server:
    """The server side of the round; it owns all server state.

    Parameters
    ----------
    n_devices, n_params : int
    dtype : numpy dtype
        The model's dtype; raw LAD payloads carry it, and every Com-LAD message must declare it
        (float32 or float64) and ``n_params`` coordinates.
    rule : str or callable
        A registry name (built with ``f`` and ``rule_params``; a bucketing rule is rebuilt every
        round with :func:`bucketing_seed` of ``seed``), ``"sign_majority"`` (signSGD with
        majority vote on the received sign messages' packed bits; needs the ``sign``
        compressor without EF21), or a fixed ``(n, P) -> (P,)`` callable.
    f : int
        The ``f`` of a named rule.
    rule_params : dict, optional
    seed : int
        The run's seed (bucketing).
    compressor : compressor or None
        The base compressor of Com-LAD messages (None: LAD).
    ef21 : bool
        Keep an :class:`~cyclad.compression.EF21Receiver` per device and aggregate its states.
    lr, momentum, weight_decay : float
        ``v <- momentum v + (F(z) + weight_decay theta)``, ``theta <- theta - lr v``.
    threads : int, optional
    """

    def __init__(
        self,
        n_devices: int,
        n_params: int,
        dtype: Any,
        rule: str | Rule,
        *,
        f: int = 0,
        rule_params: dict[str, Any] | None = None,
        seed: int = 0,
        compressor: compression.Compressor | None = None,
        ef21: bool = False,
        lr: float = 0.1,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        threads: int | None = None,
    ) -> None:
        self.n, self.P, self.dtype = int(n_devices), int(n_params), np.dtype(dtype)
        if compressor is not None and self.dtype not in (np.float32, np.float64):
            msg = f"dtype must be float32 or float64 with a compressor, got {self.dtype}"
            raise ArgumentError(msg, argument="dtype")
        self.threads, self.seed, self.compressor = threads, int(seed), compressor
        self.lr, self.momentum, self.weight_decay = float(lr), float(momentum), float(weight_decay)
        self._named = isinstance(rule, str)
        self._vote = isinstance(rule, str) and _is_vote(rule)
        if self._vote and (compressor is None or compressor.kind != "sign" or ef21):
            msg = "rule 'sign_majority' needs the sign compressor (without EF21)"
            raise ArgumentError(msg, argument="rule")
        self._msgs: list[compression.Message | None] = [None] * self.n
        self._rebuild = isinstance(rule, str) and "bucketing" in rule
        if isinstance(rule, str):
            self._name, self._f, self._params = rule, int(f), dict(rule_params or {})
            self.aggregate = make_rule(rule, self._f, self._params, seed=0, threads=threads)
        else:
            self.aggregate = rule
        self.receivers = (
            [compression.EF21Receiver(compressor) for _ in range(self.n)]
            if ef21 and compressor is not None
            else None
        )
        self.velocity = np.zeros(self.P, dtype=self.dtype)
        self.faults: list[Fault] = []  # every round's
        self.t = -1
        self._V = np.full((self.n, self.P), np.nan, dtype=self.dtype)
        self._got = np.zeros(self.n, dtype=bool)

    @property
    def faulty(self) -> list[int]:
        """The devices whose vector was absent in the current (or last finished) round."""
        return [e.device for e in self.faults if e.round == self.t]

    def begin(self, t: int) -> None:
        """Start round ``t``: forget the last round's vectors, set the round's rule."""
        self.t = int(t)
        self._V.fill(np.nan)
        self._got[:] = False
        self._msgs = [None] * self.n
        if self._rebuild:
            self.aggregate = round_rule(
                self._name, self._f, self._params, seed=self.seed, t=self.t, threads=self.threads
            )

    def _decode(self, payload: bytes) -> Any:
        """The raw vector (LAD) or the parsed and validated Message (Com-LAD)."""
        if self.compressor is None:
            if len(payload) != self.P * self.dtype.itemsize:
                msg = (
                    f"raw payload of {len(payload)} bytes, expected {self.P * self.dtype.itemsize}"
                )
                raise ValueError(msg)
            return np.frombuffer(payload, dtype=self.dtype.newbyteorder("<")).astype(self.dtype)
        return compression.Message.from_bytes(
            payload, dim=self.P, dtype=self.dtype, threads=self.threads
        )

    def receive(self, device: int, payload: bytes | None, *, reason: str = "missing") -> bool:
        """Take device ``device``'s payload of the current round; False if it is absent
        (``payload=None`` is recorded with ``reason``).

        The server, not the sender, fixes the dimension and dtype (``dim=n_params``,
        ``dtype``). No byte string makes this raise or warn: a bad payload is recorded as a
        :class:`Fault` and the device's vector is all-NaN this round.
        """
        if not 0 <= device < self.n:
            msg = f"device must be in [0, {self.n - 1}], got {device}"
            raise ArgumentError(msg, argument="device")
        if self._got[device]:
            msg = f"device {device} already sent its payload of round {self.t}"
            raise ArgumentError(msg, argument="device")
        self._got[device] = True
        if payload is None:
            self.faults.append(Fault(self.t, device, reason))
            return False
        try:
            decoded = self._decode(bytes(payload))
            if self.compressor is None:
                vec = decoded
            elif self.receivers is not None:
                vec = self.receivers[device].update(decoded, threads=self.threads)
            else:
                vec = self.compressor.decompress(decoded, threads=self.threads)
        except (ValueError, TypeError) as exc:
            self.faults.append(Fault(self.t, device, f"malformed: {exc}"))
            return False
        self._V[device] = vec
        if self._vote:
            self._msgs[device] = decoded
        return True

    def received(self, devices: Any) -> Array:
        """Copy of the vectors received this round from ``devices`` (NaN rows where absent)."""
        return self._V[np.asarray(devices, dtype=np.int64)].copy()

    def finish(self, theta: Array) -> Array:
        """Aggregate the round's vectors and return the updated model; a device that sent
        nothing is recorded as missing."""
        for i in np.flatnonzero(~self._got).tolist():
            self.faults.append(Fault(self.t, i, "missing"))
            self._got[i] = True
        if self._vote:
            # signSGD with majority vote: count the sign bits of the messages that arrived
            voters = [m for m in self._msgs if m is not None]
            agg = (
                compression.majority_vote(voters, threads=self.threads)
                if voters
                else np.zeros(self.P, dtype=self.dtype)
            )
        else:
            agg = np.asarray(self.aggregate(self._V), dtype=self.dtype)
        step = agg + self.weight_decay * theta if self.weight_decay else agg
        if self.momentum:
            self.velocity = self.momentum * self.velocity + step
            step = self.velocity
        return np.asarray(theta - self.lr * step, dtype=self.dtype)

    def step(self, t: int, theta: Array, payloads: Sequence[bytes | None]) -> Array:
        """The whole server round ``t``: every device's payload (None = nothing arrived),
        decoded, aggregated; returns the updated model."""
        if len(payloads) != self.n:
            msg = f"payloads must hold one entry per device ({self.n}), got {len(payloads)}"
            raise ArgumentError(msg, argument="payloads")
        self.begin(t)
        for i, p in enumerate(payloads):
            self.receive(i, p)
        return self.finish(theta)
