"""LAD and Com-LAD training: the configuration, the history, and the in-process simulation.

The round itself -- the plan, what a device computes and sends, what a Byzantine device sends,
what the server does with what it receives -- lives in :mod:`cyclad.protocol`; :func:`run`
builds a :class:`cyclad.protocol.RoundSpec` and a :class:`cyclad.protocol.Server` from a
:class:`Config` and calls those steps for every device, in one process.

Randomness (:mod:`cyclad._random`): ``seed`` keys the data split, the partition, the model's
initial values (NumPy generators, drawn once at set-up), the cyclic assignment, the Byzantine
set (``byzantine="random"``) and bucketing; ``device_seed`` (default ``seed``) keys the
mini-batches, the compression seeds and the attack's noise, all counter-based.
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
from typing import Any

try:
    import tomllib
except ImportError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

import numpy as np
from numpy.typing import NDArray

from cyclad import attacks, coding, compression, data, models, protocol
from cyclad._validation import (
    ArgumentError,
    ArgumentTypeError,
    check_float,
    check_int,
    parse_spec,
)

__all__ = [
    "COMPRESSORS",
    "Config",
    "ConfigError",
    "History",
    "Interrupted",
    "build_aggregator",
    "build_compressor",
    "device_compressor",
    "round_spec",
    "run",
    "write_run",
]

Array = NDArray[Any]
COMPRESSORS = ("topk", "randk", "qsgd", "sign", "natural", "terngrad", "identity")


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
        ``"fashion_mnist"`` (with ``data_path``), or a :class:`cyclad.data.Dataset` (already
        split: ``test_fraction``, ``data_path`` and ``dataset_params`` must keep their
        defaults; ``standardize`` applies to it as to a bundled one).
    model : str or model object
        ``"softmax"``, ``"logistic"``, ``"least_squares"``, ``"mlp"`` (``hidden``,
        ``activation``), or an object with the :class:`cyclad.models.ModelLike` methods, e.g.
        :class:`cyclad.torch.TorchModel` around any ``nn.Module`` (``dtype`` must match its
        parameters).
    n_devices : int
        Number of devices ``n`` (= number of data subsets ``N``).
    n_byzantine : int
        Number of Byzantine devices.
    d : int
        Redundancy: subsets per device, ``1 <= d <= n`` (the computation load: subset
        gradients per device per round; with ``method="draco"`` the group size).
    method : str
        ``"lad"`` (default): cyclic windows and the robust ``aggregator``. ``"draco"``: DRACO
        (Chen et al., 2018; :mod:`cyclad.protocol`): groups of ``d`` devices compute the same
        ``d`` subsets and the server takes each group's majority vector, which is exact with up
        to ``f`` Byzantine devices when ``d >= 2f + 1`` (``f`` defaults to ``n_byzantine``).
        Needs ``d`` to divide ``n_devices``, ``2 f + 1 <= d`` and no compressor; the majority
        vote replaces the aggregator (``pre_aggregation`` and ``aggregator_params`` must stay
        unset; ``aggregator`` is not used).
    assignment : str
        Cyclic assignment mode: ``"permute"``, ``"shift"``, ``"fixed"``.
    partition : str
        ``"iid"``, ``"dirichlet"`` (``alpha``), ``"extreme"``, ``"gamma"`` (``gamma``).
    alpha : float
        Concentration of the ``"dirichlet"`` partition (smaller is more heterogeneous).
    gamma : float
        Share of the ``"gamma"`` partition in ``[0, 1]``.
    aggregator : str
        The server's robust rule, e.g. ``"trimmed_mean"`` (:func:`cyclad.aggregators.get`), or
        ``"sign_majority"``: signSGD with majority vote on the devices' sign messages (needs
        ``compressor="sign"``; the 1-bit Byzantine-robust baseline).
    pre_aggregation : str or None
        Optional pre-aggregation(s) before the rule: ``"nnm"``, ``"bucketing"``, ``"nnm+clip"``.
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
        ``"qsgd:16"``, ``"sign"``, ``"natural"``, ``"terngrad"`` / ``"terngrad:512"`` (bucket),
        ``"identity"``.
    error_feedback : bool or str
        ``False``, ``True`` / ``"ef14"`` (residual accumulation) or ``"ef21"``.
    rounds : int
        Training rounds.
    lr : float
        Learning rate.
    momentum : float
        Heavy-ball momentum in ``[0, 1)``.
    weight_decay : float
        L2 penalty added to the objective.
    batch_size : int or None
        Mini-batch per subset gradient; ``None`` uses the full subset.
    seed : int
        Data split, partition, model init, cyclic assignment, Byzantine set.
    device_seed : int or None
        Mini-batches, compression and attack randomness (``None`` = ``seed``).
    standardize : bool
        Standardise the features (zero mean, unit variance), with statistics of the training
        part only; bundled and user datasets alike.
    test_fraction : float
        Held-out fraction of a bundled dataset (MNIST-style data keep their official split).
    eval_every : int
        Evaluate loss and test accuracy every that many rounds (and at the last round); other
        rounds record NaN.
    dtype : str
        ``"float64"`` or ``"float32"``: the dtype of the model, gradients and messages.
    hidden : int
        Hidden units of the ``"mlp"`` model.
    activation : str
        Activation of the ``"mlp"`` model: ``"tanh"`` or ``"relu"``.
    data_path : str or None
        Directory of the IDX files of ``"mnist"`` / ``"fashion_mnist"``.
    dataset_params : dict
        Extra parameters of the bundled dataset loader (e.g. ``n_samples`` of ``"synthetic"``).
    threads : int or None
        Threads of the cyclad kernels (aggregation, encoding, compression); None = all cores.
    blas_threads : int or None
        Threads of NumPy's BLAS during the run (through ``threadpoolctl`` when installed).
        The default 1 is fastest for the small bundled models (multi-threaded BLAS on
        1000 x 64 products mostly waits on its threads); None leaves BLAS as it is.
    """

    dataset: Any = "digits"
    model: Any = "softmax"
    n_devices: int = 20
    n_byzantine: int = 3
    d: int = 4
    method: str = "lad"
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
        for key in (
            "compressor",
            "pre_aggregation",
            "f",
            "device_seed",
            "batch_size",
            "threads",
            "data_path",
        ):
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
        model, dataset = self.model, self.dataset
        try:
            self.model, self.dataset = "<custom>", "<custom>"  # not deep-copied by asdict
            out = dataclasses.asdict(self)
        finally:
            self.model, self.dataset = model, dataset
        out["model"] = model if isinstance(model, str) else repr(model)
        out["dataset"] = dataset if isinstance(dataset, str) else "<custom>"
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
        return (
            f"{self.pre_aggregation}+{self.aggregator}" if self.pre_aggregation else self.aggregator
        )

    def validate(self, n_params: int | None = None) -> None:
        """Check every field; raise :class:`ConfigError` naming the first bad one.

        ``n_params`` (the model size, known once the data is loaded) enables the compressor
        ``k <= P`` check.
        """

        def int_field(
            name: str, lo: int | None = None, hi: int | None = None, optional: bool = False
        ) -> None:
            v = getattr(self, name)
            if v is None and optional:
                return
            try:
                check_int(v, name, lo, hi)
            except (ArgumentError, ArgumentTypeError) as exc:
                raise ConfigError(exc.argument, str(exc)) from None

        def float_field(
            name: str, lo: float, strict: bool = False, hi: float | None = None
        ) -> None:
            try:
                v = check_float(getattr(self, name), name, lo, strict_lo=strict)
            except (ArgumentError, ArgumentTypeError) as exc:
                raise ConfigError(exc.argument, str(exc)) from None
            if hi is not None and v >= hi:
                raise ConfigError(name, f"{name} must be < {hi}, got {v}")

        def choice(name: str, options: Sequence[Any]) -> None:
            v = getattr(self, name)
            if v not in options:
                raise ConfigError(name, f"must be one of {', '.join(map(str, options))}, got {v!r}")

        if not isinstance(self.dataset, data.Dataset):
            choice("dataset", data.DATASETS)
            if self.dataset in ("mnist", "fashion_mnist"):
                if self.data_path is None:
                    name = "data_path"
                    raise ConfigError(
                        name,
                        f"dataset {self.dataset!r} needs data_path, a directory with the IDX "
                        "files (train-images-idx3-ubyte[.gz], ...); cyclad never downloads data",
                    )
                if not Path(self.data_path).is_dir():
                    name = "data_path"
                    raise ConfigError(name, f"{self.data_path} is not a directory")
        else:
            # a Dataset arrives split and loaded: the loading fields would be silently ignored
            for name, default in (
                ("test_fraction", 0.25),
                ("data_path", None),
                ("dataset_params", {}),
            ):
                if getattr(self, name) != default:
                    raise ConfigError(
                        name, "applies to bundled datasets only; a Dataset arrives split and loaded"
                    )
        if isinstance(self.model, str):
            choice("model", models.MODELS)
        elif not isinstance(self.model, models.ModelLike):
            name = "model"
            raise ConfigError(
                name,
                f"must be a model name or a model object (init, "
                f"subset_grads, loss, accuracy), got {self.model!r}",
            )
        int_field("n_devices", lo=1)
        n = self.n_devices
        int_field("n_byzantine", lo=0, hi=n - 1)
        int_field("d", lo=1, hi=n)
        choice("method", protocol.METHODS)
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
        int_field("seed", lo=0, hi=2**64 - 1)
        int_field("device_seed", lo=0, hi=2**64 - 1, optional=True)
        int_field("eval_every", lo=1)
        choice("dtype", ("float32", "float64"))
        model_dtype = getattr(self.model, "dtype", None)
        if (
            not isinstance(self.model, str)
            and model_dtype is not None
            and (np.dtype(model_dtype) != np.dtype(self.dtype))
        ):
            name = "dtype"
            raise ConfigError(
                name,
                f"the model computes in {np.dtype(model_dtype)}; set "
                f"dtype = '{np.dtype(model_dtype)}'",
            )
        int_field("hidden", lo=1)
        choice("activation", ("tanh", "relu"))
        float_field("test_fraction", 0.0, strict=True, hi=1.0)
        int_field("threads", lo=1, optional=True)
        int_field("blas_threads", lo=1, optional=True)
        for name in ("aggregator_params", "attack_params", "dataset_params"):
            if not isinstance(getattr(self, name), dict):
                raise ConfigError(name, f"must be a table / dict, got {getattr(self, name)!r}")
        if isinstance(self.dataset, str):
            valid = data.DATASET_PARAMS[self.dataset]
            unknown = sorted(set(self.dataset_params) - set(valid))
            if unknown:
                name = "dataset_params"
                raise ConfigError(
                    name,
                    f"parameter(s) {unknown} are not taken by dataset {self.dataset!r}; "
                    f"valid parameters: {list(valid)}",
                )
        if self.error_feedback not in (False, True, "ef14", "ef21", "none"):
            name = "error_feedback"
            raise ConfigError(
                name, f"must be false, true, 'ef14' or 'ef21', got {self.error_feedback!r}"
            )
        if self.error_feedback not in (False, "none") and self.compressor is None:
            name = "error_feedback"
            raise ConfigError(name, "needs a compressor (compressor is None)")
        # attack
        try:
            attacks.get(self.attack, **self.attack_params)
        except (ValueError, TypeError) as exc:
            name = "attack"
            raise ConfigError(name, str(exc)) from None
        if self.method == "draco":
            self._validate_draco()
            return
        # Byzantine majority: no robust rule can work with f >= n/2.
        if self.aggregator != "mean" and 2 * self.n_byzantine >= n:
            name = "n_byzantine"
            raise ConfigError(
                name, f"must be < n_devices / 2 = {n / 2} for a robust rule, got {self.n_byzantine}"
            )
        if self.aggregator == protocol.SIGN_MAJORITY:
            name = "aggregator"
            spec = self.compressor if isinstance(self.compressor, str) else ""
            if spec.split(":")[0].strip() != "sign" or self.error_feedback == "ef21":
                raise ConfigError(name, "'sign_majority' needs compressor 'sign' (without EF21)")
            if self.pre_aggregation:
                raise ConfigError(name, "'sign_majority' takes no pre_aggregation")
        # aggregator: build it and dry-run it on n zero vectors so its own checks fire now
        try:
            rule = build_aggregator(self, seed=0)
            out = np.asarray(rule(np.zeros((n, 3), dtype=self.dtype)))
        except (ValueError, TypeError) as exc:
            argument = getattr(exc, "argument", None)
            name = {"f": "f", "params": "aggregator_params"}.get(str(argument), "aggregator")
            raise ConfigError(name, str(exc)) from None
        if out.shape != (3,):
            name = "aggregator"
            raise ConfigError(name, f"must return one vector, got shape {out.shape}")
        if self.compressor is not None:
            _check_compressor(self, n_params)

    def _validate_draco(self) -> None:
        n, d, f = self.n_devices, self.d, self.f_rule
        if n % d != 0:
            name = "d"
            raise ConfigError(name, f"method 'draco' needs d to divide n_devices = {n}, got {d}")
        if 2 * f + 1 > d:
            name = "n_byzantine" if self.f is None else "f"
            raise ConfigError(
                name,
                f"method 'draco' needs groups of d >= 2 f + 1 devices; f = {f} needs d >= "
                f"{2 * f + 1}, got d = {d}",
            )
        for name, default in (
            ("compressor", None),
            ("pre_aggregation", None),
            ("aggregator_params", {}),
        ):
            if getattr(self, name) != default:
                raise ConfigError(
                    name, "is not used by method 'draco' (the majority vote replaces the rule)"
                )


def parse_value(text: str) -> Any:
    """A command-line value: a TOML literal (``4``, ``0.5``, ``true``, ``[1, 2]``), else the
    string itself."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """Field flags to values: ``["--d", "4", "--attack=alie", "--aggregator_params.tau", "1"]``
    gives ``{"d": 4, "attack": "alie", "aggregator_params": {"tau": 1}}``."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(items):
        item = items[i]
        if not item.startswith("--") or len(item) <= 2:
            msg = f"expected --field value, got {item!r}"
            raise ValueError(msg)
        key = item[2:]
        if "=" in key:
            key, _, raw = key.partition("=")
            i += 1
        else:
            if i + 1 >= len(items):
                msg = f"missing value for --{key}"
                raise ValueError(msg)
            raw = items[i + 1]
            i += 2
        key = key.replace("-", "_")
        value = parse_value(raw)
        if "." in key:
            table, _, sub = key.partition(".")
            out.setdefault(table, {})[sub] = value
        else:
            out[key] = value
    return out


def load_values(path: str | Path | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """The fields of a TOML file (if any) with ``overrides`` applied (tables are merged)."""
    values: dict[str, Any] = {}
    if path is not None:
        with open(path, "rb") as fh:
            values = tomllib.load(fh)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            values[key] = {**values[key], **value}
        else:
            values[key] = value
    return values


def split_field_flags(
    argv: Sequence[str], takes_value: dict[str, bool]
) -> tuple[list[str], list[str], list[str]]:
    """Split a command line into its own options (``takes_value``: option -> takes a value),
    positional arguments and ``--field value`` flags, without taking a value (``--lr -0.5``)
    for an option or a positional."""
    own: list[str] = []
    positional: list[str] = []
    extra: list[str] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        key = tok.split("=", 1)[0]
        if key in takes_value:
            own.append(tok)
            if takes_value[key] and "=" not in tok and i + 1 < len(argv):
                own.append(argv[i + 1])
                i += 1
        elif tok.startswith("--"):
            extra.append(tok)
            if "=" not in tok and i + 1 < len(argv):
                extra.append(argv[i + 1])
                i += 1
        else:
            positional.append(tok)
        i += 1
    return own, positional, extra


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v) if not isinstance(v, float) or math.isfinite(v) else f'"{v}"'
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v))


def build_aggregator(cfg: Config, seed: int = 0) -> Callable[[Array], Array]:
    """The server's aggregation ``(n, P) -> (P,)`` for ``cfg`` (:func:`protocol.make_rule`:
    ``f`` defaults to ``n_byzantine``; a parameter no component takes is an error; with
    ``method="draco"``: :func:`protocol.draco_rule`)."""
    if cfg.method == "draco":
        return protocol.draco_rule(cfg.n_devices, cfg.d, cfg.f_rule, threads=cfg.threads)
    return protocol.make_rule(
        cfg.aggregator_name, cfg.f_rule, cfg.aggregator_params, seed=seed, threads=cfg.threads
    )


def round_spec(cfg: Config, subset_sizes: Sequence[int]) -> protocol.RoundSpec:
    """The :class:`protocol.RoundSpec` of a run of ``cfg`` whose subsets have these sizes."""
    return protocol.RoundSpec(
        n=cfg.n_devices,
        d=cfg.d,
        mode=cfg.assignment,
        seed=cfg.seed,
        device_seed=cfg.device_seed,
        n_byzantine=cfg.n_byzantine,
        byzantine=cfg.byzantine,
        subset_sizes=tuple(int(m) for m in subset_sizes),
        batch_size=cfg.batch_size,
        shared_compression=cfg.compressor is not None
        and bool(getattr(build_compressor(cfg.compressor), "shared", False)),
        method=cfg.method,
    )


def device_compressor(cfg: Config, n_params: int | None = None) -> Any:
    """A fresh compressor for one honest device of ``cfg`` (with its error feedback), or None
    for LAD."""
    if cfg.compressor is None:
        return None
    c = build_compressor(cfg.compressor, n_params)
    if cfg.error_feedback in (True, "ef14"):
        return compression.ErrorFeedback(c)
    if cfg.error_feedback == "ef21":
        return compression.EF21(c)
    return c


def _check_compressor(cfg: Config, n_params: int | None) -> None:
    try:
        build_compressor(cfg.compressor or "", n_params)
    except (ValueError, TypeError) as exc:
        name = "compressor"
        raise ConfigError(name, str(exc)) from None


def build_compressor(spec: str, n_params: int | None = None) -> Any:
    """A compressor from ``"topk:0.01"``, ``"topk:k=100"``, ``"randk:0.05,shared"``,
    ``"qsgd:16"``, ``"sign"``, ``"natural"``, ``"terngrad"``, ``"terngrad:512"``,
    ``"identity"``.

    A positional float is a ratio, a positional integer a count ``k``; ``qsgd``'s positional is
    the number of levels, ``terngrad``'s the bucket size.
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
            kwargs[
                "k" if isinstance(a, int) and a >= 1 and not isinstance(a, bool) else "ratio"
            ] = a
        k = kwargs.get("k")
        if k is not None and n_params is not None and k > n_params:
            msg = f"k={k} exceeds the number of model parameters D={n_params}"
            raise ValueError(msg)
        cls = compression.TopK if name == "topk" else compression.RandK
        return cls(**_compressor_params(name, cls, kwargs))
    if name == "qsgd":
        if args:
            kwargs["levels"] = args[0]
        return compression.QSGD(**_compressor_params(name, compression.QSGD, kwargs))
    if name == "terngrad":
        if args:
            kwargs["bucket"] = args[0]
        return compression.TernGrad(**_compressor_params(name, compression.TernGrad, kwargs))
    if args:
        msg = f"compressor {name!r} takes no positional argument, got {args}"
        raise ValueError(msg)
    other = {"sign": compression.Sign, "natural": compression.Natural}.get(
        name, compression.Identity
    )
    return other(**_compressor_params(name, other, kwargs))


def _compressor_params(name: str, cls: type, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs``, after checking that the compressor class ``cls`` takes each of them."""
    valid = [p for p in inspect.signature(cls).parameters if p != "self"]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        msg = f"compressor {name!r} takes no parameter(s) {unknown}; valid parameters: {valid}"
        raise ValueError(msg)
    return kwargs


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
        out.update(
            config=self.config,
            interrupted=self.interrupted,
            final_accuracy=self.final_accuracy,
            final_loss=self.final_loss,
        )
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


def write_run(hist: History, cfg: Config, out: str | Path) -> None:
    """Write ``history.csv``, ``history.json`` and the resolved ``config.toml`` to ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    hist.to_csv(out / "history.csv")
    hist.to_json(out / "history.json")
    (out / "config.toml").write_text(cfg.to_toml())


# --------------------------------------------------------------------------------------------
# the simulation
# --------------------------------------------------------------------------------------------


def _resolve_dataset(cfg: Config) -> data.Dataset:
    if isinstance(cfg.dataset, data.Dataset):
        return cfg.dataset.standardized() if cfg.standardize else cfg.dataset
    params = dict(cfg.dataset_params)
    try:
        return data.load(
            cfg.dataset,
            test_fraction=cfg.test_fraction,
            seed=cfg.seed,
            standardize=cfg.standardize,
            path=cfg.data_path,
            **params,
        )
    except (OSError, EOFError, ValueError, TypeError) as exc:
        if cfg.dataset not in ("mnist", "fashion_mnist"):
            if params and isinstance(exc, ValueError | TypeError):
                # e.g. n_samples = -5 for "synthetic": a value of dataset_params
                name = "dataset_params"
                raise ConfigError(name, str(exc)) from None
            raise
        # a missing, unreadable or truncated IDX file is a configuration error of data_path
        text = str(exc).removeprefix("path: ")
        if str(cfg.data_path) not in text:
            text = f"{cfg.data_path}: {text}"
        name = "data_path"
        raise ConfigError(name, text) from None


class _Simulation:
    """An in-process run: every device and the server in one process, calling
    :mod:`cyclad.protocol` (built by :func:`run`).

    Honest devices take a vectorised path that gives :func:`protocol.device_step`'s payloads
    byte for byte (a test checks it): the ``N`` subset gradients of the round in one pass,
    every window encoded by one :func:`cyclad.coding.encode` call, then each device's
    :func:`protocol.encode_payload`.
    """

    def __init__(self, cfg: Config, *, validated: bool = False) -> None:
        if not validated:
            cfg.validate()
        self.cfg = cfg
        ds = _resolve_dataset(cfg)
        self.ds = ds
        self.dtype = np.dtype(cfg.dtype)
        n = cfg.n_devices
        mparams = {"hidden": cfg.hidden, "activation": cfg.activation} if cfg.model == "mlp" else {}
        self.model: Any
        if not isinstance(cfg.model, str):
            self.model = cfg.model
        else:
            try:
                self.model = models.get(cfg.model, ds.n_features, ds.n_classes, **mparams)
            except ValueError as exc:
                name = "model"
                raise ConfigError(name, str(exc)) from None
        P = self.model.n_params
        if cfg.compressor is not None:
            _check_compressor(cfg, P)
        try:
            subsets = data.partition(
                ds.y_train, n, cfg.partition, alpha=cfg.alpha, gamma=cfg.gamma, seed=cfg.seed
            )
        except ValueError as exc:
            name = "partition"
            raise ConfigError(name, str(exc)) from None
        # Reorder the training data so that each subset is a contiguous slice: no copies later.
        order = np.concatenate(subsets)
        self.X = np.ascontiguousarray(ds.X_train[order], dtype=self.dtype)
        self.y = ds.y_train[order]
        ends = np.cumsum([s.shape[0] for s in subsets])
        self.slices = [
            slice(int(e - s.shape[0]), int(e)) for s, e in zip(subsets, ends, strict=True)
        ]
        self.Xte = np.ascontiguousarray(ds.X_test, dtype=self.dtype)
        self.yte = ds.y_test
        self.attack = attacks.get(cfg.attack, **cfg.attack_params)
        self.y_flip = (
            attacks.LabelFlip.flip(self.y, ds.n_classes) if self.attack.data_level else None
        )
        self.base = None if cfg.compressor is None else build_compressor(cfg.compressor, P)
        self.spec = round_spec(cfg, [s.stop - s.start for s in self.slices])
        byz = protocol.byzantine_devices(self.spec)
        self.byz = byz
        self.honest = np.setdiff1d(np.arange(n, dtype=np.int64), byz)
        self.theta = self.model.init(cfg.seed, dtype=self.dtype)
        # Com-LAD: every honest device owns its compressor (and its EF state); under EF21 every
        # Byzantine device owns an EF21 sender, so the server's state ends at its crafted vector.
        ef = cfg.error_feedback
        self.device_comp: list[Any] = [None] * n
        self.byz_senders: dict[int, Any] = {}
        if self.base is not None:
            for i in self.honest.tolist():
                self.device_comp[i] = device_compressor(cfg, P)
            if ef == "ef21":
                self.byz_senders = {i: compression.EF21(self.base) for i in byz.tolist()}
        self.server = protocol.Server(
            n,
            P,
            self.dtype,
            build_aggregator(cfg) if cfg.method == "draco" else cfg.aggregator_name,
            f=cfg.f_rule,
            rule_params=cfg.aggregator_params,
            seed=cfg.seed,
            compressor=self.base,
            ef21=ef == "ef21",
            lr=cfg.lr,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
            threads=cfg.threads,
        )
        self.P = P
        self.payloads: list[bytes | None] = [None] * n  # the last round's, for inspection

    def device_payload(
        self,
        plan: protocol.RoundPlan,
        theta: Array,
        device: int,
        compressor: Any | None,
        *,
        timings: dict[str, float] | None = None,
    ) -> bytes:
        """An honest device's payload of a round, as a process that holds the data computes it
        on its own: :func:`protocol.device_step` on this run's model, data and subsets."""
        return protocol.device_step(
            self.model,
            theta,
            self.X,
            self.y,
            self.slices,
            plan,
            device,
            compressor=compressor,
            threads=self.cfg.threads,
            timings=timings,
        )

    def byzantine_payloads(
        self,
        plan: protocol.RoundPlan,
        theta: Array,
        honest: Array,
        *,
        devices: Sequence[int] | None = None,
        senders: dict[int, Any] | None = None,
        timings: dict[str, float] | None = None,
    ) -> list[bytes]:
        """The Byzantine devices' payloads of a round, as a process that holds the data works
        them out on its own (the distributed and Flower runtimes): the coalition's own coded
        gradients (on flipped labels for ``label_flip``), the server's rule of the round, then
        :func:`protocol.byzantine_step` with ``honest``, the view of the honest vectors.
        ``senders`` default to this simulation's EF21 senders; ``timings`` receives
        ``"compute"`` and ``"encode"`` seconds."""
        cfg = self.cfg
        t0 = time.perf_counter()
        y = self.y if self.y_flip is None else self.y_flip
        G = self.model.subset_grads(theta, self.X, y, plan.selections(self.slices))
        Z = np.asarray(coding.encode(G, plan.assignment[plan.byzantine], threads=cfg.threads))
        rule = (
            self.server.aggregate
            if cfg.method == "draco"
            else protocol.round_rule(
                cfg.aggregator_name,
                cfg.f_rule,
                cfg.aggregator_params,
                seed=cfg.seed,
                t=plan.t,
                threads=cfg.threads,
            )
        )
        t1 = time.perf_counter()
        out = protocol.byzantine_step(
            self.attack,
            plan,
            honest=honest,
            n=cfg.n_devices,
            byzantine_honest=Z,
            aggregate=rule,
            compressor=self.base,
            senders=self.byz_senders if senders is None else senders,
            devices=devices,
            threads=cfg.threads,
        )
        if timings is not None:
            timings["compute"] = t1 - t0
            timings["encode"] = time.perf_counter() - t1
        return out

    def objective(self, theta: Array) -> float:
        loss = self.model.loss(theta, self.X, self.y)
        if self.cfg.weight_decay:
            loss += 0.5 * self.cfg.weight_decay * float(theta @ theta)
        return float(loss)

    def round(self, t: int) -> tuple[int, int, float, float]:
        cfg, n, theta, srv = self.cfg, self.cfg.n_devices, self.theta, self.server
        plan = protocol.plan_round(self.spec, t)
        sels = plan.selections(self.slices)
        G = self.model.subset_grads(theta, self.X, self.y, sels)
        Z = np.asarray(coding.encode(G, plan.assignment, threads=cfg.threads))
        g = G.mean(axis=0)
        het = float(np.mean(np.sum((G - g) ** 2, axis=1)))
        spread = float(np.mean(np.sum((Z[self.honest] - g) ** 2, axis=1)))
        payloads: list[bytes | None] = [None] * n
        srv.begin(t)
        for i in self.honest.tolist():
            seed = plan.compression_seed(i) if self.base is not None else 0
            payloads[i] = protocol.encode_payload(
                Z[i], self.device_comp[i], seed, threads=cfg.threads
            )
            srv.receive(i, payloads[i])
        if self.byz.size:
            byz_honest = Z[self.byz]
            if self.y_flip is not None:
                Gf = self.model.subset_grads(theta, self.X, self.y_flip, sels)
                byz_honest = np.asarray(
                    coding.encode(Gf, plan.assignment[self.byz], threads=cfg.threads)
                )
            sent = protocol.byzantine_step(
                self.attack,
                plan,
                honest=srv.received(self.honest),
                n=n,
                byzantine_honest=byz_honest,
                aggregate=srv.aggregate,
                compressor=self.base,
                senders=self.byz_senders,
                threads=cfg.threads,
            )
            for i, p in zip(self.byz.tolist(), sent, strict=True):
                payloads[i] = p
                srv.receive(i, p)
        self.theta = srv.finish(theta)
        self.payloads = payloads
        up = sum(len(p) for p in payloads if p is not None)
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
