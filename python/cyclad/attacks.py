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
                    ``s = floor(n/2 + 1) - f``, ``z = Phi^-1((n - s) / n)``; ``sd`` is the
                    population deviation (``ddof=0``); ``sign=1`` gives ``mu + z * sd``
                    (ByzFL's ``ALittleIsEnough(tau)`` is ``alie:z=tau,sign=1,ddof=1``)
``gaussian:sigma``  i.i.d. ``N(0, sigma^2)`` noise per coordinate (sigma = 1)
``mimic:index``     a copy of honest vector ``index`` (the position among the honest
                    vectors, as ByzFL's ``Mimic(epsilon)``); by default the honest vector
                    farthest from ``mu`` this round
``inf`` / ``nan``   all ``+inf`` / all ``NaN`` (poisoned vectors)
``label_flip``      honest coding of gradients computed on flipped labels ``y -> C-1-y``
                    (data-level: the training loop computes them, see ``data_level``)
``optimal_alie``    ``mu - z * sd`` with the ``z >= 0`` that moves the server's aggregate
                    farthest from ``mu``, found by a line search (:func:`line_maximize`, as
                    ByzFL's ``LineMaximize``: 16 evaluations from 0, step 1, ratio 0.8), or
                    on a grid ``0 .. max_scale`` with ``search="grid"``; ``sign`` and
                    ``ddof`` as for ``alie``
``optimal_ipm``     ``-eps * mu`` with the ``eps >= 0`` found the same way
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

__all__ = ["ATTACKS", "Attack", "AttackContext", "alie_z", "get", "line_maximize"]

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


def _sign_ddof(name: str, sign: Any, ddof: Any) -> tuple[int, int]:
    if sign not in (-1, 1) or isinstance(sign, bool):
        msg = f"{name}: sign must be -1 (mu - z * sd) or 1 (mu + z * sd), got {sign!r}"
        raise ValueError(msg)
    if ddof not in (0, 1) or isinstance(ddof, bool):
        msg = f"{name}: ddof must be 0 (population sd) or 1 (sample sd), got {ddof!r}"
        raise ValueError(msg)
    return int(sign), int(ddof)


def _sd(ctx: AttackContext, ddof: int) -> Array:
    if ddof == 1 and ctx.honest.shape[0] < 2:
        return np.zeros(ctx.honest.shape[1], dtype=ctx.honest.dtype)
    return np.asarray(ctx.honest.std(axis=0, ddof=ddof))


class ALIE(Attack):
    name = "alie"

    def __init__(self, z: float | None = None, sign: int = -1, ddof: int = 0) -> None:
        self.z = None if z is None else float(z)
        self.sign, self.ddof = _sign_ddof(self.name, sign, ddof)

    def __call__(self, ctx: AttackContext) -> Array:
        z = alie_z(ctx.n, ctx.f) if self.z is None else self.z
        return _rows(_mu(ctx) + self.sign * z * _sd(ctx, self.ddof), ctx.f)


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

    def __init__(self, index: int | None = None) -> None:
        if index is not None and (isinstance(index, bool) or int(index) != index or index < 0):
            msg = f"mimic: index must be an integer >= 0 (an honest vector), got {index!r}"
            raise ValueError(msg)
        self.index = None if index is None else int(index)

    def __call__(self, ctx: AttackContext) -> Array:
        if self.index is None:
            dist = np.sum((ctx.honest - _mu(ctx)) ** 2, axis=1)
            return _rows(ctx.honest[int(np.argmax(dist))].copy(), ctx.f)
        if self.index >= ctx.honest.shape[0]:
            msg = f"mimic: index {self.index} is not an honest vector (there are {ctx.honest.shape[0]})"
            raise ValueError(msg)
        return _rows(ctx.honest[self.index].copy(), ctx.f)


class Inf(Attack):
    name = "inf"

    def __call__(self, ctx: AttackContext) -> Array:
        return np.full((ctx.f, ctx.honest.shape[1]), np.inf, dtype=ctx.honest.dtype)


class NaN(Attack):
    name = "nan"

    def __call__(self, ctx: AttackContext) -> Array:
        return np.full((ctx.f, ctx.honest.shape[1]), np.nan, dtype=ctx.honest.dtype)


def _check_line_search(evals: float, start: float, delta: float, ratio: float) -> None:
    """The parameters :func:`line_maximize` takes (ValueError otherwise)."""
    if int(evals) != evals or evals < 1:
        msg = f"line search: evals must be an integer >= 1, got {evals!r}"
        raise ValueError(msg)
    if not (math.isfinite(start) and start >= 0 and math.isfinite(delta) and delta > 0):
        msg = f"line search: need start >= 0 and delta > 0 (finite), got {start}, {delta}"
        raise ValueError(msg)
    if not 0.5 < ratio < 1:
        msg = f"line search: ratio must be in (0.5, 1), got {ratio}"
        raise ValueError(msg)


def line_maximize(
    objective: Callable[[float], float],
    evals: int = 16,
    start: float = 0.0,
    delta: float = 1.0,
    ratio: float = 0.8,
) -> tuple[float, float]:
    """Best-effort maximiser of ``objective`` over ``x >= 0`` in ``evals`` evaluations: the
    expansion-then-contraction line search of ByzFL's ``LineMaximize``.

    Expansion: from ``start``, step up by ``delta``, doubling the step after every improvement,
    until a step does not improve (the step is then multiplied by ``ratio``). Contraction: each
    further proposal moves by the current step from the last proposal towards the best point so
    far (halving back towards the last proposal when it would go below 0), and the step shrinks
    by ``ratio`` after every evaluation. A NaN objective counts as no improvement.

    Returns
    -------
    (x, y) : the best point found and its objective value.
    """
    _check_line_search(evals, start, delta, ratio)
    left = int(evals)

    def value(x: float) -> float:
        nonlocal left
        left -= 1
        y = float(objective(x))
        return y if not math.isnan(y) else -math.inf

    best_x, best_y = start, value(start)
    x = best_x
    while left > 0:  # expansion
        x = best_x + delta
        y = value(x)
        if y > best_y:
            best_x, best_y = x, y
            delta *= 2.0
        else:
            delta *= ratio
            break
    while left > 0:  # contraction, around the best point
        if x < best_x:
            x += delta
        else:
            nxt = x - delta
            while nxt < 0:
                nxt = (nxt + x) / 2.0
            x = nxt
        y = value(x)
        if y > best_y:
            best_x, best_y = x, y
        delta *= ratio
    return best_x, best_y


class _Optimal(Attack):
    """Find the scale that moves the server's aggregate farthest from ``mu``: by the line
    search :func:`line_maximize` (``search="line"``, the default) or on ``steps`` evenly
    spaced points of ``[0, max_scale]`` (``search="grid"``)."""

    def __init__(
        self,
        search: str = "line",
        evals: int = 16,
        start: float = 0.0,
        delta: float = 1.0,
        ratio: float = 0.8,
        max_scale: float = 10.0,
        steps: int = 21,
    ) -> None:
        if search not in ("line", "grid"):
            msg = f"{self.name}: search must be 'line' or 'grid', got {search!r}"
            raise ValueError(msg)
        if not (max_scale > 0 and int(steps) == steps and steps >= 2):
            msg = f"{self.name}: max_scale must be > 0 and steps >= 2, got {max_scale}, {steps}"
            raise ValueError(msg)
        if search == "line":  # the search's own checks, at construction
            _check_line_search(evals, start, delta, ratio)
        self.search = search
        self.evals, self.start, self.delta, self.ratio = (
            int(evals),
            float(start),
            float(delta),
            float(ratio),
        )
        self.max_scale = float(max_scale)
        self.steps = int(steps)
        self.last_scale = float("nan")

    def _craft(self, ctx: AttackContext, scale: float) -> Array:
        raise NotImplementedError

    def __call__(self, ctx: AttackContext) -> Array:
        if ctx.aggregate is None:
            msg = f"attack {self.name!r} needs ctx.aggregate (the server's rule)"
            raise ValueError(msg)
        aggregate = ctx.aggregate
        mu = _mu(ctx)

        def damage(scale: float) -> float:
            byz = self._craft(ctx, scale)
            out = np.asarray(aggregate(np.concatenate([ctx.honest, byz])))
            dist = float(np.linalg.norm(out - mu))
            return dist if np.isfinite(dist) else math.inf

        if self.search == "line":
            best, _ = line_maximize(damage, self.evals, self.start, self.delta, self.ratio)
        else:
            best, best_dist = 0.0, -1.0
            for s in np.linspace(0.0, self.max_scale, self.steps):
                dist = damage(float(s))
                if dist > best_dist:
                    best, best_dist = float(s), dist
        self.last_scale = best
        return self._craft(ctx, best)


class OptimalALIE(_Optimal):
    name = "optimal_alie"

    def __init__(
        self,
        search: str = "line",
        evals: int = 16,
        start: float = 0.0,
        delta: float = 1.0,
        ratio: float = 0.8,
        max_scale: float = 10.0,
        steps: int = 21,
        sign: int = -1,
        ddof: int = 0,
    ) -> None:
        super().__init__(search, evals, start, delta, ratio, max_scale, steps)
        self.sign, self.ddof = _sign_ddof(self.name, sign, ddof)

    def _craft(self, ctx: AttackContext, scale: float) -> Array:
        return _rows(_mu(ctx) + self.sign * scale * _sd(ctx, self.ddof), ctx.f)


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
