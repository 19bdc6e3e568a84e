"""Byzantine attacks: what the ``f`` Byzantine devices send in a round.

Attacks are omniscient where they need to be: they see the round's honest coded vectors, the
cyclic assignment, and the server's aggregation rule (:class:`AttackContext`). Each attack is a
callable ``attack(ctx) -> (f, P)`` array; build one by name with :func:`get`
(``get("ipm:0.5")``, ``get("alie")``, ``get("gaussian", sigma=2.0)``).

==================  ========================================================================
name                what the Byzantine devices send (``mu``, ``sd``: coordinate-wise mean and
                    standard deviation of the honest vectors)
==================  ========================================================================
``none``            what an honest device would send for their window (no attack)
``sign_flip``       ``-mu``
``ipm:eps``         ``-eps * mu`` (inner product manipulation, Xie et al. 2020; eps = 0.1)
``foe:tau``         ``(1 - tau) * mu`` (fall of empires, the large-epsilon regime of the same
                    paper; tau = 10)
``alie:z``          ``mu - z * sd`` (Baruch et al. 2019); default ``z`` from ``n`` and ``f``:
                    ``s = floor(n/2 + 1) - f``, ``z = Phi^-1((n - s) / n)``
``gaussian:sigma``  i.i.d. ``N(0, sigma^2)`` noise per coordinate (sigma = 1)
``mimic``           a copy of the honest vector farthest from ``mu`` this round
``inf`` / ``nan``   all ``+inf`` / all ``NaN`` (poisoned vectors)
``label_flip``      honest coding of gradients computed on flipped labels ``y -> C-1-y``
                    (data-level: the training loop computes them, see ``data_level``)
``optimal_alie``    ``mu - z * sd`` with ``z`` from a grid (``0 .. z_max``) chosen to move the
                    server's aggregate farthest from ``mu``
``optimal_ipm``     ``-eps * mu`` with ``eps`` from a grid (``0 .. eps_max``), same criterion
``coding_aware``    each Byzantine device ``i`` finds the honest devices whose windows share a
                    subset with its own window ``S_i`` and sends ``-scale`` times their mean:
                    a sign flip aimed at the honest vectors that carry the same data, so it
                    lands where those subsets' contribution is counted (scale = 1)
==================  ========================================================================
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np
from numpy.typing import NDArray

from cyclad._validation import parse_spec

__all__ = ["ATTACKS", "Attack", "AttackContext", "alie_z", "get"]

Array = NDArray[Any]


@dataclass
class AttackContext:
    """What an (omniscient) Byzantine coalition knows in one round.

    Attributes
    ----------
    honest : ndarray, shape (n_honest, P)
        The honest devices' coded vectors of the round.
    n : int
        Number of devices.
    f : int
        Number of Byzantine devices (rows to produce).
    byzantine_honest : ndarray, shape (f, P)
        What the Byzantine devices would send if they were honest (their own windows' coded
        gradients; computed on flipped labels for ``label_flip``).
    assignment : ndarray of int64, shape (n, d), optional
        The round's cyclic assignment (row ``i`` = device ``i``'s subsets).
    honest_idx, byzantine_idx : ndarray of int64
        Device indices of the honest and Byzantine devices.
    aggregate : callable, optional
        The server's aggregation (pre-aggregation + rule): ``(n, P) -> (P,)``.
    rng : cyclad._random.Stream or numpy.random.Generator
        The coalition's random stream for this round: in a run, the counter-based stream
        ``(device_seed, t, ALL, ATTACK)`` (:meth:`cyclad.protocol.RoundPlan.attack_stream`),
        which offers the Generator methods ``random``, ``standard_normal``, ``normal``,
        ``permutation``.
    """

    honest: Array
    n: int
    f: int
    byzantine_honest: Array | None = None
    assignment: Array | None = None
    honest_idx: Array | None = None
    byzantine_idx: Array | None = None
    aggregate: Callable[[Array], Array] | None = None
    rng: Any = field(default_factory=lambda: np.random.default_rng(0))


def alie_z(n: int, f: int) -> float:
    """Baruch et al. (2019): ``s = floor(n/2 + 1) - f``, ``z = Phi^-1((n - s) / n)``."""
    s = math.floor(n / 2 + 1) - f
    p = (n - s) / n
    p = min(max(p, 1e-6), 1 - 1e-6)
    return float(NormalDist().inv_cdf(p))


class Attack:
    """Base class. ``data_level`` attacks act on the data (the training loop handles them)."""

    name = "attack"
    data_level = False

    def __call__(self, ctx: AttackContext) -> Array:
        raise NotImplementedError

    def __repr__(self) -> str:
        params = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        inner = ", ".join(f"{k}={v!r}" for k, v in params.items())
        return f"{type(self).__name__}({inner})"


def _mu(ctx: AttackContext) -> Array:
    return np.asarray(ctx.honest.mean(axis=0))


def _rows(v: Array, f: int) -> Array:
    return np.ascontiguousarray(np.broadcast_to(v, (f, v.shape[0])))


class NoAttack(Attack):
    name = "none"

    def __call__(self, ctx: AttackContext) -> Array:
        if ctx.byzantine_honest is None:
            msg = "attack 'none' needs ctx.byzantine_honest"
            raise ValueError(msg)
        return np.array(ctx.byzantine_honest, copy=True)


class LabelFlip(NoAttack):
    name = "label_flip"
    data_level = True

    @staticmethod
    def flip(y: Array, n_classes: int) -> Array:
        """The flipped labels ``C - 1 - y``."""
        return (n_classes - 1 - np.asarray(y)).astype(np.int64)


class SignFlip(Attack):
    name = "sign_flip"

    def __call__(self, ctx: AttackContext) -> Array:
        return _rows(-_mu(ctx), ctx.f)


class IPM(Attack):
    name = "ipm"

    def __init__(self, eps: float = 0.1) -> None:
        self.eps = float(eps)

    def __call__(self, ctx: AttackContext) -> Array:
        return _rows(-self.eps * _mu(ctx), ctx.f)


class FOE(Attack):
    name = "foe"

    def __init__(self, tau: float = 10.0) -> None:
        self.tau = float(tau)

    def __call__(self, ctx: AttackContext) -> Array:
        return _rows((1.0 - self.tau) * _mu(ctx), ctx.f)


class ALIE(Attack):
    name = "alie"

    def __init__(self, z: float | None = None) -> None:
        self.z = None if z is None else float(z)

    def __call__(self, ctx: AttackContext) -> Array:
        z = alie_z(ctx.n, ctx.f) if self.z is None else self.z
        return _rows(_mu(ctx) - z * ctx.honest.std(axis=0), ctx.f)


class Gaussian(Attack):
    name = "gaussian"

    def __init__(self, sigma: float = 1.0) -> None:
        if not sigma >= 0:
            msg = f"gaussian attack: sigma must be >= 0, got {sigma}"
            raise ValueError(msg)
        self.sigma = float(sigma)

    def __call__(self, ctx: AttackContext) -> Array:
        P = ctx.honest.shape[1]
        noise = np.asarray(ctx.rng.standard_normal((ctx.f, P)), dtype=np.float64)
        return (noise * self.sigma).astype(ctx.honest.dtype)


class Mimic(Attack):
    name = "mimic"

    def __call__(self, ctx: AttackContext) -> Array:
        dist = np.sum((ctx.honest - _mu(ctx)) ** 2, axis=1)
        return _rows(ctx.honest[int(np.argmax(dist))].copy(), ctx.f)


class Inf(Attack):
    name = "inf"

    def __call__(self, ctx: AttackContext) -> Array:
        return np.full((ctx.f, ctx.honest.shape[1]), np.inf, dtype=ctx.honest.dtype)


class NaN(Attack):
    name = "nan"

    def __call__(self, ctx: AttackContext) -> Array:
        return np.full((ctx.f, ctx.honest.shape[1]), np.nan, dtype=ctx.honest.dtype)


class _Optimal(Attack):
    """Search a grid of scales for the one that moves the aggregate farthest from ``mu``."""

    def __init__(self, max_scale: float = 10.0, steps: int = 21) -> None:
        if not (max_scale > 0 and int(steps) == steps and steps >= 2):
            msg = f"{self.name}: max_scale must be > 0 and steps >= 2, got {max_scale}, {steps}"
            raise ValueError(msg)
        self.max_scale = float(max_scale)
        self.steps = int(steps)
        self.last_scale = float("nan")

    def _craft(self, ctx: AttackContext, scale: float) -> Array:
        raise NotImplementedError

    def __call__(self, ctx: AttackContext) -> Array:
        if ctx.aggregate is None:
            msg = f"attack {self.name!r} needs ctx.aggregate (the server's rule)"
            raise ValueError(msg)
        mu = _mu(ctx)
        best, best_dist = None, -1.0
        for s in np.linspace(0.0, self.max_scale, self.steps):
            byz = self._craft(ctx, float(s))
            out = np.asarray(ctx.aggregate(np.concatenate([ctx.honest, byz])))
            dist = float(np.linalg.norm(out - mu))
            if not np.isfinite(dist):
                dist = np.inf
            if dist > best_dist:
                best, best_dist, self.last_scale = byz, dist, float(s)
        assert best is not None
        return best


class OptimalALIE(_Optimal):
    name = "optimal_alie"

    def _craft(self, ctx: AttackContext, scale: float) -> Array:
        return _rows(_mu(ctx) - scale * ctx.honest.std(axis=0), ctx.f)


class OptimalIPM(_Optimal):
    name = "optimal_ipm"

    def _craft(self, ctx: AttackContext, scale: float) -> Array:
        return _rows(-scale * _mu(ctx), ctx.f)


class CodingAware(Attack):
    name = "coding_aware"

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = float(scale)

    def __call__(self, ctx: AttackContext) -> Array:
        if ctx.assignment is None or ctx.honest_idx is None or ctx.byzantine_idx is None:
            msg = "attack 'coding_aware' needs ctx.assignment, honest_idx and byzantine_idx"
            raise ValueError(msg)
        A = np.asarray(ctx.assignment)
        n_sub = int(A.max()) + 1
        member = np.zeros((A.shape[0], n_sub), dtype=np.int64)
        np.put_along_axis(member, A, 1, axis=1)
        overlap = member[ctx.byzantine_idx] @ member[ctx.honest_idx].T > 0  # (f, h)
        counts = overlap.sum(axis=1)
        w = np.where(counts[:, None] > 0, overlap, True).astype(ctx.honest.dtype)
        w /= w.sum(axis=1, keepdims=True)
        return np.ascontiguousarray(-self.scale * (w @ ctx.honest))


_REGISTRY: dict[str, type[Attack]] = {
    c.name: c
    for c in (
        NoAttack,
        SignFlip,
        IPM,
        FOE,
        ALIE,
        Gaussian,
        Mimic,
        Inf,
        NaN,
        LabelFlip,
        OptimalALIE,
        OptimalIPM,
        CodingAware,
    )
}
ATTACKS = tuple(_REGISTRY)


def get(spec: str, **params: Any) -> Attack:
    """Build an attack from ``"name[:arg,key=value]"`` plus keyword parameters.

    Parameters
    ----------
    spec : str
        ``"none"``, ``"sign_flip"``, ``"ipm:0.5"``, ``"alie"``, ``"alie:z=1.5"``,
        ``"gaussian:2"``, ``"optimal_alie:max_scale=5"``, ... (see the module table). A positional
        argument sets the attack's first parameter.
    **params
        Extra parameters (override the spec's).

    Returns
    -------
    Attack

    Raises
    ------
    ValueError
        Unknown name (the message lists the valid ones) or parameters the attack does not take.
    """
    name, args, kwargs = parse_spec(spec, "attack")
    name = name.replace("-", "_")
    if name not in _REGISTRY:
        msg = f"attack must be one of {', '.join(ATTACKS)}, got {spec!r}"
        raise ValueError(msg)
    cls = _REGISTRY[name]
    kwargs.update(params)
    try:
        inspect.signature(cls).bind(*args, **kwargs)
    except TypeError as exc:
        accepted = list(inspect.signature(cls).parameters)
        msg = f"attack {name!r} takes parameters {accepted}, got args={args} kwargs={kwargs}"
        raise ValueError(msg) from exc
    return cls(*args, **kwargs)
