"""LAD and Com-LAD training: configuration, the round (device step + server step), the run loop.

One LAD round ``t`` (DESIGN §1):

1. the server draws the round's cyclic assignment ``A_t = CyclicCode(n, d, mode, seed)
   .assignment(t)``; device ``i`` is given the subsets ``A_t[i]``;
2. every honest device computes its ``d`` subset gradients at the current model and encodes them,
   ``z_i = (1/d) sum_{j in A_t[i]} g_j`` (:func:`cyclad.coding.encode`), then sends ``z_i``
   (LAD: the raw little-endian vector, ``4 P`` or ``8 P`` bytes) or a compressed
   :class:`cyclad.compression.Message` (Com-LAD) — :func:`device_message`;
3. the Byzantine devices (``byzantine="first"``: devices ``0 .. f-1``; ``"random"``: a seeded
   random set, fixed for the run) send what the attack crafts; they see the honest vectors as
   the server will see them, the assignment and the server's rule (:mod:`cyclad.attacks`);
4. the server decodes every payload (:meth:`Server.decode`): a payload that does not parse, has
   the wrong length, or decompresses to the wrong shape makes that device's vector all-NaN for
   the round, so the robust rule treats it as faulty (coordinate-wise rules order NaN last,
   distance-based rules give it infinite distance); it then aggregates with the configured
   pre-aggregation and rule and steps the model (:meth:`Server.apply`):
   ``v <- momentum * v + (F(z_1..z_n) + weight_decay * theta)``, ``theta <- theta - lr * v``.

The simulation (:func:`run`) computes the ``N`` subset gradients once per round (one vectorised
pass, :meth:`cyclad.models.Model.subset_grads`) and encodes all windows with the C++ kernel;
a distributed runtime calls :func:`device_step` on each device and :meth:`Server.step` on the
server, which run the same code.

Mini-batches (``batch_size``): in round ``t`` each subset ``j`` is replaced by a random batch of
``batch_size`` of its samples, drawn from ``(device_seed, t, j)`` so that the ``d`` devices that
compute subset ``j`` use the same batch (the coding needs identical copies).

Com-LAD: each honest device owns one compressor (wrapped in ``ErrorFeedback`` (EF14) or ``EF21``
when ``error_feedback`` is set); its compression seed is
``compression.derive_seed(device_seed, t, i)``, or ``derive_seed(device_seed, t)`` for shared
rand-k so that all devices keep the same coordinates.
With EF21 the server keeps the same per-device state ``g_i`` and adds each decompressed message to
it; ``g_i`` is the vector it aggregates. Byzantine devices send valid messages of the same
compressor (omniscient: under EF21 they compress ``v - g_i`` so the server ends up with ``v``).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

try:
    import tomllib
except ImportError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

import numpy as np
from numpy.typing import NDArray

from cyclad import aggregators, attacks, coding, compression, data, models
from cyclad._validation import parse_spec

__all__ = [
    "COMPRESSORS",
    "Config",
    "ConfigError",
    "History",
    "Interrupted",
    "Server",
    "build_compressor",
    "device_message",
    "device_step",
    "run",
]

Array = NDArray[Any]
COMPRESSORS = ("topk", "randk", "qsgd", "sign", "identity")


class ConfigError(ValueError):
    """A configuration error; ``field`` names the offending :class:`Config` field."""

    def __init__(self, field_name: str, message: str) -> None:
        self.field = field_name
        super().__init__(f"config field '{field_name}': {message}")


class Interrupted(KeyboardInterrupt):
    """Raised by :func:`run` on Ctrl-C; ``history`` holds the rounds completed so far."""

    def __init__(self, history: History) -> None:
        super().__init__("training interrupted")
        self.history = history


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------


@dataclass
class Config:
    """One LAD / Com-LAD experiment. Every field has a default; see ``validate`` for ranges.

    Attributes
    ----------
    dataset : str or Dataset
        ``"digits"`` (default), ``"wine"``, ``"breast_cancer"``, ``"synthetic"``, ``"mnist"``,
        ``"fashion_mnist"`` (with ``data_path``), or a :class:`cyclad.data.Dataset`.
    model : str
        ``"softmax"``, ``"logistic"``, ``"least_squares"``, ``"mlp"`` (``hidden``,
        ``activation``).
    n_devices, n_byzantine, d : int
        ``n`` devices (= ``N`` subsets), of which the Byzantine ones; redundancy ``1 <= d <= n``.
    assignment : str
        Cyclic assignment mode: ``"permute"``, ``"shift"``, ``"fixed"``.
    partition : str
        ``"iid"``, ``"dirichlet"`` (``alpha``), ``"extreme"``, ``"gamma"`` (``gamma``).
    aggregator, pre_aggregation : str
        Rule and optional pre-aggregation(s) for :func:`cyclad.aggregators.get`, e.g.
        ``"trimmed_mean"`` and ``"nnm"`` (or ``"bucketing"``, ``"nnm+clip"``).
    f : int or None
        The ``f`` the rule assumes; ``None`` uses ``n_byzantine``.
    aggregator_params : dict
        Extra rule parameters (``tau``, ``s``, ``m``, ``eps``, ...).
    attack : str
        An attack spec (:func:`cyclad.attacks.get`): ``"alie"``, ``"ipm:0.5"``, ...
    attack_params : dict
        Extra attack parameters.
    byzantine : str
        Which devices are Byzantine: ``"first"`` (``0 .. f-1``) or ``"random"`` (seeded).
    compressor : str or None
        ``None`` = LAD; ``"topk:0.01"`` (ratio) / ``"topk:k=100"``, ``"randk:0.05,shared"``,
        ``"qsgd:16"``, ``"sign"``, ``"identity"``.
    error_feedback : bool or str
        ``False``, ``True`` / ``"ef14"`` (residual accumulation) or ``"ef21"``.
    rounds, lr, momentum, weight_decay, batch_size
        Optimisation: ``batch_size=None`` uses the full subset in every subset gradient.
    seed : int
        Data split, partition, model init, cyclic assignment, Byzantine set.
    device_seed : int or None
        Mini-batches, compression and attack randomness (``None`` = ``seed``).
    eval_every : int
        Evaluate loss and test accuracy every that many rounds (and at the last round); other
        rounds record NaN.
    dtype : str
        ``"float64"`` or ``"float32"``: the dtype of the model, gradients and messages.
    threads : int or None
        Threads of the cyclad kernels (aggregation, encoding, compression); None = all cores.
    blas_threads : int or None
        Threads of NumPy's BLAS during the run (through ``threadpoolctl`` when installed).
        The default 1 is fastest for the small bundled models (multi-threaded BLAS on
        1000 x 64 products mostly waits on its threads); None leaves BLAS as it is.
    """

    dataset: Any = "digits"
    model: str = "softmax"
    n_devices: int = 20
    n_byzantine: int = 3
    d: int = 4
    assignment: str = "permute"
    partition: str = "extreme"
    alpha: float = 1.0
    gamma: float = 0.5
    aggregator: str = "trimmed_mean"
    pre_aggregation: str | None = None
    f: int | None = None
    aggregator_params: dict[str, Any] = field(default_factory=dict)
    attack: str = "alie"
    attack_params: dict[str, Any] = field(default_factory=dict)
    byzantine: str = "first"
    compressor: str | None = None
    error_feedback: bool | str = False
    rounds: int = 200
    lr: float = 0.5
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int | None = None
    seed: int = 0
    device_seed: int | None = None
    eval_every: int = 1
    dtype: str = "float64"
    hidden: int = 32
    activation: str = "tanh"
    test_fraction: float = 0.25
    standardize: bool = True
    data_path: str | None = None
    dataset_params: dict[str, Any] = field(default_factory=dict)
    threads: int | None = None
    blas_threads: int | None = 1

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def fields(cls) -> list[str]:
        """The field names."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Config:
        """Build from a mapping; unknown keys raise :class:`ConfigError` naming them."""
        known = set(cls.fields())
        for key in values:
            if key not in known:
                msg = f"unknown field; valid fields: {', '.join(sorted(known))}"
                raise ConfigError(key, msg)
        vals = dict(values)
        for key in ("compressor", "pre_aggregation", "f", "device_seed", "batch_size",
                    "threads", "data_path"):
            if isinstance(vals.get(key), str) and vals[key].lower() in ("none", ""):
                vals[key] = None
        return cls(**vals)

    @classmethod
    def from_toml(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
        """Read a TOML file of top-level ``field = value`` pairs (then apply ``overrides``)."""
        with open(path, "rb") as fh:
            values = tomllib.load(fh)
        values.update(overrides or {})
        return cls.from_dict(values)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (a custom Dataset is recorded as ``"<custom>"``)."""
        out = dataclasses.asdict(self)
        if isinstance(self.dataset, data.Dataset):
            out["dataset"] = "<custom>"
        return out

    def to_toml(self) -> str:
        """TOML text of the resolved configuration (``None`` fields are omitted)."""
        lines = []
        tables = []
        for key, value in self.to_dict().items():
            if value is None:
                continue
            if isinstance(value, dict):
                if value:
                    tables.append((key, value))
                continue
            lines.append(f"{key} = {_toml_value(value)}")
        for key, value in tables:
            lines.append(f"\n[{key}]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in value.items())
        return "\n".join(lines) + "\n"

    # -- derived -----------------------------------------------------------------------------

    @property
    def f_rule(self) -> int:
        """The ``f`` given to the aggregation rule."""
        return self.n_byzantine if self.f is None else int(self.f)

    @property
    def aggregator_name(self) -> str:
        """Registry name: ``pre_aggregation + "+" + aggregator``."""
        return f"{self.pre_aggregation}+{self.aggregator}" if self.pre_aggregation else self.aggregator

    def validate(self, n_params: int | None = None) -> None:
        """Check every field; raise :class:`ConfigError` naming the first bad one.

        ``n_params`` (the model size, known once the data is loaded) enables the compressor
        ``k <= P`` check.
        """
        def int_field(name: str, lo: int | None = None, hi: int | None = None,
                      optional: bool = False) -> None:
            v = getattr(self, name)
            if v is None and optional:
                return
            if isinstance(v, bool) or not isinstance(v, int | np.integer):
                raise ConfigError(name, f"must be an integer, got {v!r}")
            if (lo is not None and v < lo) or (hi is not None and v > hi):
                rng_s = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
                raise ConfigError(name, f"must be in {rng_s}, got {v}")

        def float_field(name: str, lo: float, strict: bool = False, hi: float | None = None) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float | np.floating | np.integer):
                raise ConfigError(name, f"must be a number, got {v!r}")
            if not math.isfinite(v) or (v <= lo if strict else v < lo) or (hi is not None and v >= hi):
                op = ">" if strict else ">="
                extra = f" and < {hi}" if hi is not None else ""
                raise ConfigError(name, f"must be finite and {op} {lo}{extra}, got {v}")

        def choice(name: str, options: Sequence[Any]) -> None:
            v = getattr(self, name)
            if v not in options:
                raise ConfigError(name, f"must be one of {', '.join(map(str, options))}, got {v!r}")

        if not isinstance(self.dataset, data.Dataset):
            choice("dataset", data.DATASETS)
        choice("model", models.MODELS)
        int_field("n_devices", lo=1)
        n = self.n_devices
        int_field("n_byzantine", lo=0, hi=n - 1)
        int_field("d", lo=1, hi=n)
        choice("assignment", ("permute", "shift", "fixed"))
        choice("partition", data.PARTITIONS)
        float_field("alpha", 0.0, strict=True)
        float_field("gamma", 0.0)
        if self.gamma > 1:
            name = "gamma"
            raise ConfigError(name, f"must be in [0, 1], got {self.gamma}")
        int_field("f", lo=0, hi=n - 1, optional=True)
        choice("byzantine", ("first", "random"))
        int_field("rounds", lo=1)
        float_field("lr", 0.0, strict=True)
        float_field("momentum", 0.0, hi=1.0)
        float_field("weight_decay", 0.0)
        int_field("batch_size", lo=1, optional=True)
        int_field("seed", lo=0)
        int_field("device_seed", lo=0, optional=True)
        int_field("eval_every", lo=1)
        choice("dtype", ("float32", "float64"))
        int_field("hidden", lo=1)
        choice("activation", ("tanh", "relu"))
        float_field("test_fraction", 0.0, strict=True, hi=1.0)
        int_field("threads", lo=1, optional=True)
        int_field("blas_threads", lo=1, optional=True)
        for name in ("aggregator_params", "attack_params", "dataset_params"):
            if not isinstance(getattr(self, name), dict):
                raise ConfigError(name, f"must be a table / dict, got {getattr(self, name)!r}")
        if self.error_feedback not in (False, True, "ef14", "ef21", "none"):
            name = "error_feedback"
            raise ConfigError(name, f"must be false, true, 'ef14' or 'ef21', got "
                                                f"{self.error_feedback!r}")
        if self.error_feedback not in (False, "none") and self.compressor is None:
            name = "error_feedback"
            raise ConfigError(name, "needs a compressor (compressor is None)")
        # attack
        try:
            attacks.get(self.attack, **self.attack_params)
        except (ValueError, TypeError) as exc:
            name = "attack"
            raise ConfigError(name, str(exc)) from None
        # Byzantine majority: no robust rule can work with f >= n/2.
        if self.aggregator != "mean" and 2 * self.n_byzantine >= n:
            name = "n_byzantine"
            raise ConfigError(name, f"must be < n_devices / 2 = {n / 2} for a robust "
                                             f"rule, got {self.n_byzantine}")
        # aggregator: build it and dry-run it on n zero vectors so its own checks fire now
        try:
            rule = build_aggregator(self, seed=0)
            out = np.asarray(rule(np.zeros((n, 3), dtype=self.dtype)))
        except (ValueError, TypeError) as exc:
            text = str(exc)
            name = "f" if (" f " in f" {text} " or "f=" in text or "f must" in text) else "aggregator"
            raise ConfigError(name, text) from None
        if out.shape != (3,):
            name = "aggregator"
            raise ConfigError(name, f"must return one vector, got shape {out.shape}")
        # compressor
        if self.compressor is not None:
            try:
                build_compressor(self.compressor, n_params)
            except (ValueError, TypeError) as exc:
                name = "compressor"
                raise ConfigError(name, str(exc)) from None


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v) if not isinstance(v, float) or math.isfinite(v) else f'"{v}"'
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v))


def build_aggregator(cfg: Config, seed: int = 0) -> Callable[[Array], Array]:
    """The server's aggregation ``(n, P) -> (P,)`` for ``cfg`` (registry composition).

    ``f`` (default ``n_byzantine``), the bucketing ``seed`` and the ``aggregator_params`` go to
    the components that take them; parameters that no component of the chosen aggregator takes
    are ignored, so one sweep file can set e.g. bucketing's ``s`` next to rules without it.
    """
    params = dict(cfg.aggregator_params)
    params.setdefault("f", cfg.f_rule)
    if "bucketing" in cfg.aggregator_name:
        params.setdefault("seed", seed)
    accepted: set[str] = set()
    for part in cfg.aggregator_name.split("+"):
        fn = getattr(aggregators, part.strip().lower().replace("-", "_"), None)
        if callable(fn):
            accepted |= set(inspect.signature(fn).parameters)
    if accepted:
        params = {k: v for k, v in params.items() if k in accepted}
    return aggregators.get(cfg.aggregator_name, threads=cfg.threads, **params)


def build_compressor(spec: str, n_params: int | None = None) -> Any:
    """A compressor from ``"topk:0.01"``, ``"topk:k=100"``, ``"randk:0.05,shared"``,
    ``"qsgd:16"``, ``"sign"``, ``"identity"``.

    A positional float is a ratio, a positional integer a count ``k``; ``qsgd``'s positional is
    the number of levels.
    """
    name, args, kwargs = parse_spec(spec, "compressor")
    if name not in COMPRESSORS:
        msg = f"compressor must be one of {', '.join(COMPRESSORS)} (or none), got {spec!r}"
        raise ValueError(msg)
    if len(args) > 1:
        msg = f"compressor {spec!r}: at most one positional argument"
        raise ValueError(msg)
    if name in ("topk", "randk"):
        if args:
            a = args[0]
            kwargs["k" if isinstance(a, int) and a >= 1 and not isinstance(a, bool) else "ratio"] = a
        k = kwargs.get("k")
        if k is not None and n_params is not None and k > n_params:
            msg = f"k={k} exceeds the number of model parameters D={n_params}"
            raise ValueError(msg)
        cls = compression.TopK if name == "topk" else compression.RandK
        return cls(**kwargs)
    if name == "qsgd":
        if args:
            kwargs["levels"] = args[0]
        return compression.QSGD(**kwargs)
    if args:
        msg = f"compressor {name!r} takes no positional argument, got {args}"
        raise ValueError(msg)
    return compression.Sign(**kwargs) if name == "sign" else compression.Identity(**kwargs)


# --------------------------------------------------------------------------------------------
# history
# --------------------------------------------------------------------------------------------

_SERIES = ("loss", "accuracy", "bytes_up", "bytes_down", "seconds", "spread", "heterogeneity")


@dataclass
class History:
    """Per-round record of a run (one entry per round in each sequence).

    Attributes
    ----------
    loss : list of float
        Global training objective after the round's update (all training data, weight decay
        included); NaN on rounds that are not evaluated.
    accuracy : list of float
        Test accuracy after the round's update; NaN on rounds not evaluated.
    bytes_up, bytes_down : list of int
        Bytes sent in the round, counted from the actual payloads (up: all ``n`` devices' messages;
        down: the model broadcast to the ``n`` devices, ``itemsize * P`` each).
    seconds : list of float
        Wall time since the start of training, at the end of each round.
    spread : list of float
        ``mean_h ||z_h - g||^2`` over the honest coded vectors (before compression).
    heterogeneity : list of float
        ``(1/N) sum_j ||g_j - g||^2`` over the subset gradients.
    config : dict
        The resolved configuration.
    interrupted : bool
        True if the run was stopped early (Ctrl-C).
    theta : ndarray or None
        The model after the last completed round (not written to CSV / JSON).
    """

    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    bytes_up: list[int] = field(default_factory=list)
    bytes_down: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    spread: list[float] = field(default_factory=list)
    heterogeneity: list[float] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    interrupted: bool = False
    theta: Array | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.loss)

    def _last_finite(self, seq: list[float]) -> float:
        for v in reversed(seq):
            if not math.isnan(v):
                return float(v)
        return float("nan")

    @property
    def final_accuracy(self) -> float:
        """Last evaluated test accuracy (NaN if none)."""
        return self._last_finite(self.accuracy)

    @property
    def final_loss(self) -> float:
        """Last evaluated training objective (NaN if none)."""
        return self._last_finite(self.loss)

    @property
    def cum_bytes_up(self) -> Array:
        """Cumulative uplink bytes after each round."""
        return np.cumsum(np.asarray(self.bytes_up, dtype=np.int64))

    def to_csv(self, path: str | Path) -> None:
        """Write one row per round: round, the series, and cumulative uplink bytes."""
        cols = ["round", *_SERIES, "cum_bytes_up"]
        cum = self.cum_bytes_up
        rows = [",".join(cols)]
        for t in range(len(self)):
            vals = [str(t + 1)] + [repr(getattr(self, s)[t]) for s in _SERIES] + [str(int(cum[t]))]
            rows.append(",".join(vals))
        Path(path).write_text("\n".join(rows) + "\n")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {s: list(getattr(self, s)) for s in _SERIES}
        out.update(config=self.config, interrupted=self.interrupted,
                   final_accuracy=self.final_accuracy, final_loss=self.final_loss)
        return out

    def to_json(self, path: str | Path) -> None:
        """Write the history (NaN as ``NaN``, which Python's json reads back)."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def from_json(cls, path: str | Path) -> History:
        """Read a history written by :meth:`to_json`."""
        raw = json.loads(Path(path).read_text())
        hist = cls(config=raw.get("config", {}), interrupted=raw.get("interrupted", False))
        for s in _SERIES:
            setattr(hist, s, list(raw.get(s, [])))
        return hist


# --------------------------------------------------------------------------------------------
# the round: device step and server step
# --------------------------------------------------------------------------------------------


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint32)[0])


def device_message(
    z: Array, compressor: Any | None, seed: int, *, threads: int | None = None
) -> bytes:
    """What a device puts on the wire for its coded vector ``z`` (shape ``(P,)``).

    LAD (``compressor=None``): the raw little-endian vector. Com-LAD: the compressor's
    ``Message`` bytes (``compressor`` may be an ``ErrorFeedback`` / ``EF21`` wrapper, which
    updates its state).
    """
    if compressor is None:
        return np.ascontiguousarray(z, dtype=z.dtype.newbyteorder("<")).tobytes()
    return bytes(compressor.compress(z, seed=seed, threads=threads).to_bytes())


def device_step(
    model: models.Model,
    theta: Array,
    X: Array,
    y: Array,
    subsets: Sequence[Any],
    *,
    compressor: Any | None = None,
    seed: int = 0,
    weights: Array | None = None,
    threads: int | None = None,
) -> bytes:
    """One honest device's round: ``d`` subset gradients at ``theta``, encoded, then sent.

    Parameters
    ----------
    model : Model
    theta : ndarray, shape (P,)
        The broadcast model.
    X, y : ndarray
        The (entire) training data the device holds.
    subsets : sequence of index arrays or slices
        The device's window of subsets this round (its row of the assignment).
    compressor : compressor or None
        The device's compressor (Com-LAD) or None (LAD).
    seed : int
        The compression seed of this device and round.
    weights : ndarray, shape (1, d), optional
        Encoding weights (uniform ``1/d`` by default).
    threads : int, optional
        Threads of the encoding and compression kernels (None = all cores).

    Returns
    -------
    bytes
        The payload for the server.
    """
    G = model.subset_grads(theta, X, y, subsets)
    A = np.arange(len(subsets), dtype=np.int64)[None, :]
    z = np.asarray(coding.encode(G, A, weights, threads=threads))[0]
    return device_message(z, compressor, seed, threads=threads)


class Server:
    """The server side of a round: decode the payloads, aggregate, step the model.

    Parameters
    ----------
    n_devices, n_params : int
    dtype : numpy dtype
        Dtype of the model and of raw LAD payloads; with a compressor, float32 or float64, and
        every message must declare this dense dtype and ``n_params`` coordinates.
    aggregate : callable
        ``(n, P) -> (P,)`` robust aggregation (pre-aggregation included).
    compressor : compressor or None
        The base (stateless) compressor used to decompress Com-LAD messages.
    ef21 : bool
        Keep EF21 per-device states (each decompressed message is added to the sender's state).
    lr, momentum, weight_decay : float
    """

    def __init__(
        self,
        n_devices: int,
        n_params: int,
        dtype: Any,
        aggregate: Callable[[Array], Array],
        *,
        compressor: Any | None = None,
        ef21: bool = False,
        lr: float = 0.1,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        threads: int | None = None,
    ) -> None:
        self.threads = threads
        self.n = int(n_devices)
        self.P = int(n_params)
        self.dtype = np.dtype(dtype)
        if compressor is not None and self.dtype not in (np.float32, np.float64):
            msg = f"dtype must be float32 or float64 with a compressor, got {self.dtype}"
            raise ValueError(msg)
        self.aggregate = aggregate
        self.compressor = compressor
        self.lr, self.momentum, self.weight_decay = float(lr), float(momentum), float(weight_decay)
        self.velocity = np.zeros(self.P, dtype=self.dtype)
        self.state = np.zeros((self.n, self.P), dtype=self.dtype) if ef21 else None
        self.faulty: list[int] = []

    def decode(self, device: int, payload: bytes) -> Array:
        """The vector device ``device`` contributes this round (all-NaN if its payload is bad).

        The server, not the sender, fixes the message's dimension and dtype (``dim=P``,
        ``dtype=self.dtype``): a message declaring others is malformed and marks the device
        faulty for the round. No byte string makes this raise or warn.
        """
        try:
            if self.compressor is None:
                if len(payload) != self.P * self.dtype.itemsize:
                    msg = "raw payload has the wrong length"
                    raise ValueError(msg)
                vec = np.frombuffer(payload, dtype=self.dtype.newbyteorder("<")).astype(self.dtype)
            else:
                msg_obj = compression.Message.from_bytes(
                    payload, dim=self.P, dtype=self.dtype, threads=self.threads
                )
                vec = self.compressor.decompress(msg_obj, threads=self.threads)
                if vec.shape != (self.P,) or vec.dtype != self.dtype:
                    msg = f"message decompresses to {vec.shape} {vec.dtype}"
                    raise ValueError(msg)
        except (ValueError, TypeError):
            self.faulty.append(device)
            return np.full(self.P, np.nan, dtype=self.dtype)
        if self.state is not None:
            # Non-finite values are data (DESIGN 4): an EF21 state may overflow or become NaN
            # (Inf - Inf) without a warning; the robust rule deals with the poisoned row.
            with np.errstate(over="ignore", invalid="ignore"):
                self.state[device] += vec
            return np.array(self.state[device], copy=True)
        return np.asarray(vec)

    def apply(self, theta: Array, V: Array) -> Array:
        """Aggregate the ``(n, P)`` received vectors and return the updated model."""
        agg = np.asarray(self.aggregate(V), dtype=self.dtype)
        step = agg + self.weight_decay * theta if self.weight_decay else agg
        if self.momentum:
            self.velocity = self.momentum * self.velocity + step
            step = self.velocity
        return np.asarray(theta - self.lr * step, dtype=self.dtype)

    def step(self, theta: Array, payloads: Sequence[bytes]) -> Array:
        """The whole server step: decode every device's payload, aggregate, update."""
        if len(payloads) != self.n:
            msg = f"payloads must hold one message per device ({self.n}), got {len(payloads)}"
            raise ValueError(msg)
        self.faulty = []
        V = np.stack([self.decode(i, p) for i, p in enumerate(payloads)])
        return self.apply(theta, V)


# --------------------------------------------------------------------------------------------
# the simulation
# --------------------------------------------------------------------------------------------


def _resolve_dataset(cfg: Config) -> data.Dataset:
    if isinstance(cfg.dataset, data.Dataset):
        return cfg.dataset
    params = dict(cfg.dataset_params)
    return data.load(cfg.dataset, test_fraction=cfg.test_fraction, seed=cfg.seed,
                     standardize=cfg.standardize, path=cfg.data_path, **params)


class _Simulation:
    """State of an in-process simulated run (built by :func:`run`)."""

    def __init__(self, cfg: Config) -> None:
        cfg.validate()
        self.cfg = cfg
        ds = _resolve_dataset(cfg)
        self.ds = ds
        self.dtype = np.dtype(cfg.dtype)
        n = cfg.n_devices
        mparams = {"hidden": cfg.hidden, "activation": cfg.activation} if cfg.model == "mlp" else {}
        try:
            self.model = models.get(cfg.model, ds.n_features, ds.n_classes, **mparams)
        except ValueError as exc:
            name = "model"
            raise ConfigError(name, str(exc)) from None
        P = self.model.n_params
        cfg.validate(n_params=P)
        try:
            subsets = data.partition(ds.y_train, n, cfg.partition, alpha=cfg.alpha,
                                     gamma=cfg.gamma, seed=cfg.seed)
        except ValueError as exc:
            name = "partition"
            raise ConfigError(name, str(exc)) from None
        # Reorder the training data so that each subset is a contiguous slice: no copies later.
        order = np.concatenate(subsets)
        self.X = np.ascontiguousarray(ds.X_train[order], dtype=self.dtype)
        self.y = ds.y_train[order]
        ends = np.cumsum([s.shape[0] for s in subsets])
        self.slices = [slice(int(e - s.shape[0]), int(e)) for s, e in zip(subsets, ends, strict=True)]
        self.Xte = np.ascontiguousarray(ds.X_test, dtype=self.dtype)
        self.yte = ds.y_test
        self.attack = attacks.get(cfg.attack, **cfg.attack_params)
        self.y_flip = (attacks.LabelFlip.flip(self.y, ds.n_classes)
                       if self.attack.data_level else None)
        self.code = coding.CyclicCode(n, cfg.d, mode=cast(Any, cfg.assignment), seed=cfg.seed)
        nb = cfg.n_byzantine
        if cfg.byzantine == "first":
            byz = np.arange(nb, dtype=np.int64)
        else:
            rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0xB7]))
            byz = np.sort(rng.choice(n, size=nb, replace=False)).astype(np.int64)
        self.byz = byz
        self.honest = np.setdiff1d(np.arange(n, dtype=np.int64), byz)
        self.dseed = cfg.seed if cfg.device_seed is None else cfg.device_seed
        self.theta = self.model.init(cfg.seed, dtype=self.dtype)
        self.rebucket = "bucketing" in cfg.aggregator_name
        # Com-LAD
        self.base = None if cfg.compressor is None else build_compressor(cfg.compressor, P)
        ef = cfg.error_feedback
        self.ef21 = ef == "ef21"
        self.device_comp: list[Any] = [None] * n
        if self.base is not None:
            for i in self.honest:
                c = build_compressor(cfg.compressor or "", P)
                if ef in (True, "ef14"):
                    c = compression.ErrorFeedback(c)
                elif ef == "ef21":
                    c = compression.EF21(c)
                self.device_comp[int(i)] = c
        self.shared = bool(getattr(self.base, "shared", False))
        self.server = Server(n, P, self.dtype, build_aggregator(cfg, seed=0),
                             compressor=self.base, ef21=self.ef21, lr=cfg.lr,
                             momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                             threads=cfg.threads)
        self.P = P

    def subsets_for_round(self, t: int) -> list[Any]:
        bs = self.cfg.batch_size
        if bs is None:
            return list(self.slices)
        out: list[Any] = []
        for j, s in enumerate(self.slices):
            size = s.stop - s.start
            if bs >= size:
                out.append(s)
            else:
                rng = np.random.default_rng(np.random.SeedSequence([self.dseed, t, j, 0xBA7C]))
                out.append(s.start + np.sort(rng.choice(size, size=bs, replace=False)))
        return out

    def objective(self, theta: Array) -> float:
        loss = self.model.loss(theta, self.X, self.y)
        if self.cfg.weight_decay:
            loss += 0.5 * self.cfg.weight_decay * float(theta @ theta)
        return float(loss)

    def round(self, t: int) -> tuple[int, int, float, float]:
        cfg, n, theta = self.cfg, self.cfg.n_devices, self.theta
        A = self.code.assignment(t)
        subs = self.subsets_for_round(t)
        G = self.model.subset_grads(theta, self.X, self.y, subs)
        Z = np.asarray(coding.encode(G, A, threads=cfg.threads))
        g = G.mean(axis=0)
        het = float(np.mean(np.sum((G - g) ** 2, axis=1)))
        spread = float(np.mean(np.sum((Z[self.honest] - g) ** 2, axis=1)))
        srv = self.server
        srv.faulty = []
        if self.rebucket:
            srv.aggregate = build_aggregator(cfg, seed=_seed(cfg.seed, t, 0xB0C))
        compressing = self.base is not None
        round_seed = compression.derive_seed(self.dseed, t) if compressing else 0

        def seed_of(i: int) -> int:
            if not compressing:
                return 0
            return round_seed if self.shared else compression.derive_seed(self.dseed, t, i)

        payloads: list[bytes] = [b""] * n
        V = np.empty((n, self.P), dtype=self.dtype)
        # honest devices
        for i in self.honest:
            i = int(i)
            payloads[i] = device_message(Z[i], self.device_comp[i], seed_of(i),
                                         threads=cfg.threads)
            V[i] = srv.decode(i, payloads[i])
        # Byzantine devices
        if self.byz.size:
            byz_honest = Z[self.byz]
            if self.y_flip is not None:
                Gf = self.model.subset_grads(theta, self.X, self.y_flip, subs)
                byz_honest = np.asarray(coding.encode(Gf, A[self.byz], threads=cfg.threads))
            ctx = attacks.AttackContext(
                honest=V[self.honest], n=n, f=int(self.byz.size), byzantine_honest=byz_honest,
                assignment=A, honest_idx=self.honest, byzantine_idx=self.byz,
                aggregate=srv.aggregate,
                rng=np.random.default_rng(np.random.SeedSequence([self.dseed, t, 0xA77])))
            B = np.asarray(self.attack(ctx), dtype=self.dtype)
            for k, i in enumerate(self.byz):
                i = int(i)
                v = B[k]
                if self.base is not None and srv.state is not None:
                    v = v - srv.state[i]
                try:
                    payloads[i] = device_message(v, self.base, seed_of(i), threads=cfg.threads)
                except (ValueError, TypeError):
                    payloads[i] = b"\x00malformed"  # the compressor refused the vector
                V[i] = srv.decode(i, payloads[i])
        self.theta = srv.apply(theta, V)
        up = sum(len(p) for p in payloads)
        down = n * self.P * self.dtype.itemsize
        return up, down, spread, het


def run(
    cfg: Config,
    progress: bool = False,
    *,
    callback: Callable[[int, History], None] | None = None,
) -> History:
    """Train with LAD / Com-LAD as configured and return the per-round history.

    Parameters
    ----------
    cfg : Config
        Validated before anything is trained (:meth:`Config.validate`).
    progress : bool
        Show a tqdm progress bar with the current loss and accuracy (if tqdm is installed).
    callback : callable, optional
        ``callback(t, history)`` after each round ``t`` (0-based).

    Returns
    -------
    History

    Raises
    ------
    ConfigError
        For any invalid field (the message names it).
    Interrupted
        On Ctrl-C (a ``KeyboardInterrupt``); its ``history`` holds the completed rounds.
    """
    sim = _Simulation(cfg)
    hist = History(config=cfg.to_dict())
    limiter = None
    if cfg.blas_threads is not None:
        try:
            from threadpoolctl import threadpool_limits

            limiter = threadpool_limits(limits=cfg.blas_threads, user_api="blas")
        except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
            limiter = None
    bar = None
    if progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=cfg.rounds, unit="round", dynamic_ncols=True, leave=True)
        except ImportError:  # pragma: no cover - tqdm is in the train extra
            bar = None
    t0 = time.perf_counter()
    try:
        for t in range(cfg.rounds):
            up, down, spread, het = sim.round(t)
            evaluate = (t + 1) % cfg.eval_every == 0 or t + 1 == cfg.rounds
            if evaluate:
                loss = sim.objective(sim.theta)
                acc = sim.model.accuracy(sim.theta, sim.Xte, sim.yte)
            else:
                loss = acc = float("nan")
            hist.loss.append(loss)
            hist.accuracy.append(acc)
            hist.bytes_up.append(int(up))
            hist.bytes_down.append(int(down))
            hist.seconds.append(time.perf_counter() - t0)
            hist.spread.append(spread)
            hist.heterogeneity.append(het)
            hist.theta = sim.theta
            if bar is not None:
                bar.update(1)
                if evaluate:
                    bar.set_postfix(loss=f"{loss:.4f}", acc=f"{acc:.3f}", refresh=False)
            if callback is not None:
                callback(t, hist)
    except KeyboardInterrupt:
        hist.interrupted = True
        raise Interrupted(hist) from None
    finally:
        if bar is not None:
            bar.close()
        if limiter is not None:
            limiter.restore_original_limits()
    return hist
