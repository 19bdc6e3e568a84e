"""cyclad on Flower (``flwr`` 1.42, the Message API of ``flwr.serverapp`` and ``flwr.clientapp``).

Two things live here.

:class:`RobustStrategy` is a ``flwr.serverapp.strategy.FedAvg`` whose ``aggregate_train`` runs a
cyclad rule (:func:`cyclad.aggregators.get`) on the clients' *updates*: each reply's arrays minus
the global arrays the strategy sent that round, flattened in the record's key order. The new
global arrays are the old ones plus the rule's output.

- Coordinate-wise rules (``mean``, ``median``, ``trimmed_mean``, ``meamed`` and ``+``
  compositions of them) go layer by layer: one ``(n, layer size)`` block at a time. A
  coordinate-wise rule gives the same numbers either way; per layer only bounds memory.
- Every other rule sees each client's whole flattened update as one row: ``krum``,
  ``multi_krum``, ``geometric_median``, ``centered_clipping``, and any rule after a
  pre-aggregation ``nnm``, ``bucketing``, ``clip`` or ``arc``. These rules use distances or
  norms of whole vectors (Flower's own Krum does the same; its FedMedian goes per layer).
- ``weighted=True`` weighs the clients by the reply metric ``num-examples``
  (``weighted_by_key``). Only ``mean`` honours weights (a weighted mean, computed here). Every
  other rule refuses ``weighted=True`` with a ``ValueError``: none of cyclad's robust rules
  takes weights.
- A reply that cannot be used is an absent row (all-NaN) for that round, as in
  :mod:`cyclad.protocol`: an error reply, no or several ArrayRecords, other keys, shapes or
  dtypes than the global arrays, arrays that do not parse, or (weighted) a weight that is not
  a finite positive number. Robust rules trim absent rows like Byzantine ones; ``mean`` becomes
  NaN. A round the rule cannot aggregate (too few replies for its ``f``) keeps the global
  arrays. :attr:`RobustStrategy.faults` records both.

:func:`server_app` and :func:`client_app` run LAD / Com-LAD (a :class:`cyclad.train.Config`) on
Flower: ``n_devices`` client nodes, each holding the whole dataset as LAD requires. Device ``i``
is the ``i``-th smallest node id. One round ``t``:

1. the server sends every honest device the model (an ArrayRecord ``"theta"``) and a
   ConfigRecord ``"cyclad"``: the round, the device index, the device's subset window (row ``i``
   of :func:`cyclad.protocol.plan_round`'s assignment) and a fingerprint of the configuration;
2. each honest client checks the window and the fingerprint against its own configuration
   (a mismatch is an error reply, never a gradient of other subsets), runs
   :func:`cyclad.protocol.device_step` and replies with its payload bytes (ConfigRecord
   ``"cyclad"``, key ``"payload"``): the raw vector (LAD) or the compressor's message (Com-LAD);
   error-feedback state stays on the node (``context.state``) between rounds;
3. the server hands each payload to :class:`cyclad.protocol.Server`. Then the Byzantine devices
   (the configuration's ``byzantine`` and ``n_byzantine``) get the same message plus the honest
   view (an ArrayRecord ``"view"``: the honest vectors as the server decoded them). The attacks
   are omniscient, as in :mod:`cyclad.distributed`: this experiment device is not part of the
   bytes counted up. Each runs :func:`cyclad.protocol.byzantine_step` for itself;
4. the server records missing, error and malformed replies as faults, aggregates and steps
   the model (:meth:`cyclad.protocol.Server.finish`).

With the same configuration the final model equals :func:`cyclad.train.run`'s bit for bit.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from logging import INFO, WARNING
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.supercore import log
from numpy.typing import NDArray

from cyclad import protocol, train

__all__ = [
    "COORDINATE_WISE",
    "Fault",
    "RobustStrategy",
    "client_app",
    "fingerprint",
    "run_lad",
    "server_app",
]

Arr = NDArray[Any]
COORDINATE_WISE = ("mean", "median", "trimmed_mean", "meamed")
_BAD_ARRAY = (TypeError, ValueError, KeyError, OSError, EOFError)


@dataclass(frozen=True)
class Fault:
    """A reply left out of a round (``node`` 0 for a round that kept the model)."""

    round: int
    node: int
    reason: str


def _parts(rule: str) -> list[str]:
    return [p.strip().lower().replace("-", "_") for p in rule.split("+")]


class RobustStrategy(FedAvg):
    """FedAvg with a cyclad aggregation rule on the clients' updates.

    Parameters
    ----------
    rule : str or callable
        A registry name (``"trimmed_mean"``, ``"nnm+krum"``, ...; built with ``f`` and
        ``rule_params``) or a callable ``(n, D) -> (D,)``, which always sees whole vectors.
    f : int
        The ``f`` of a named rule.
    rule_params : dict, optional
        Extra parameters of a named rule (``tau``, ``m``, ``s``, ...).
    per_layer : bool or None
        None: per layer for coordinate-wise rules, whole vectors otherwise. True for a rule that
        is not coordinate-wise raises ``ValueError``.
    weighted : bool
        Weigh clients by ``weighted_by_key`` (``mean`` only).
    seed : int
        Bucketing's seed (a bucketing rule draws new buckets every round from it).
    threads : int, optional
        Threads of the cyclad kernels (None = all cores).
    **kwargs
        ``FedAvg``'s own parameters (``fraction_train``, ``min_available_nodes``,
        ``weighted_by_key``, ``arrayrecord_key``, ...).

    Raises
    ------
    ValueError
        For an unknown rule, ``weighted=True`` with a rule other than ``mean``, or
        ``per_layer=True`` with a rule that is not coordinate-wise.
    """

    def __init__(
        self,
        rule: str | Callable[[Arr], Arr] = "trimmed_mean",
        *,
        f: int = 0,
        rule_params: dict[str, Any] | None = None,
        per_layer: bool | None = None,
        weighted: bool = False,
        seed: int = 0,
        threads: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.rule, self.f, self.seed, self.threads = rule, int(f), int(seed), threads
        self.rule_params = dict(rule_params or {})
        named = isinstance(rule, str)
        coordinate_wise = named and all(p in COORDINATE_WISE for p in _parts(str(rule)))
        if per_layer and named and not coordinate_wise:
            msg = (
                f"per_layer=True needs a coordinate-wise rule ({', '.join(COORDINATE_WISE)}); "
                f"{rule!r} must see whole vectors"
            )
            raise ValueError(msg)
        self.per_layer = coordinate_wise if per_layer is None else bool(per_layer)
        if weighted and (not named or _parts(str(rule)) != ["mean"]):
            msg = (
                f"weighted=True: only the rule 'mean' takes weights (the replies' "
                f"{self.weighted_by_key!r}); {rule!r} does not"
            )
            raise ValueError(msg)
        self.weighted = bool(weighted)
        if named:  # build once now, so a bad name or f fails at construction
            self._rule(0)
        self.global_arrays: ArrayRecord | None = None
        self.faults: list[Fault] = []

    def summary(self) -> None:
        """Log the configuration."""
        log(
            INFO,
            "\t├──> cyclad rule: %s (f=%d, %s%s)",
            self.rule,
            self.f,
            "per layer" if self.per_layer else "whole vectors",
            ", weighted" if self.weighted else "",
        )
        super().summary()

    def _rule(self, server_round: int) -> Callable[[Arr], Arr]:
        if not isinstance(self.rule, str):
            return self.rule
        return protocol.round_rule(
            self.rule,
            self.f,
            self.rule_params,
            seed=self.seed,
            t=server_round,
            threads=self.threads,
        )

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's, keeping the global arrays the updates are taken against."""
        self.global_arrays = arrays
        return super().configure_train(server_round, arrays, config, grid)

    def _rows(
        self, server_round: int, replies: Sequence[Message], ref: dict[str, Arr]
    ) -> tuple[list[dict[str, Arr] | None], list[float]]:
        """Each reply's arrays (None: absent) and weight."""
        rows: list[dict[str, Arr] | None] = []
        weights: list[float] = []
        for msg in replies:
            node = int(msg.metadata.src_node_id)
            row, w, reason = None, 1.0, ""
            if msg.has_error():
                reason = f"error reply: {msg.error.reason}"
            else:
                row, w, reason = self._parse(msg.content, ref)
            if row is None:
                self.faults.append(Fault(server_round, node, reason))
            rows.append(row)
            weights.append(w)
        return rows, weights

    def _parse(
        self, content: RecordDict, ref: dict[str, Arr]
    ) -> tuple[dict[str, Arr] | None, float, str]:
        records = list(content.array_records.values())
        if len(records) != 1:
            return None, 1.0, f"{len(records)} ArrayRecords, expected 1"
        rec = records[0]
        if list(rec.keys()) != list(ref):
            return None, 1.0, "array keys differ from the global arrays'"
        out: dict[str, Arr] = {}
        for key, g in ref.items():
            try:
                a = rec[key].numpy()
            except _BAD_ARRAY as exc:
                return None, 1.0, f"array {key!r} does not parse: {exc}"
            if a.shape != g.shape or a.dtype != g.dtype:
                return (
                    None,
                    1.0,
                    (
                        f"array {key!r} is {a.dtype}{list(a.shape)}, expected "
                        f"{g.dtype}{list(g.shape)}"
                    ),
                )
            out[key] = a
        w = 1.0
        if self.weighted:
            metrics = list(content.metric_records.values())
            value = metrics[0].get(self.weighted_by_key) if len(metrics) == 1 else None
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not np.isfinite(value)
                or value <= 0
            ):
                return (
                    None,
                    1.0,
                    (
                        f"weight {self.weighted_by_key!r} missing or not a finite "
                        f"positive number: {value!r}"
                    ),
                )
            w = float(value)
        return out, w, ""

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The rule on the updates (replies minus the global arrays); see the class docs.

        Without a global model (``configure_train`` never ran, e.g. replies built by hand) the
        rule runs on the replies' arrays themselves, as updates from zero.
        """
        replies = list(replies)
        if not replies:
            return None, None
        if self.global_arrays is not None:
            ref = {k: v.numpy() for k, v in self.global_arrays.items()}
        else:
            first = next(
                (m for m in replies if not m.has_error() and len(m.content.array_records) == 1),
                None,
            )
            if first is None:
                self.faults.append(Fault(server_round, 0, "no usable reply"))
                return None, None
            rec = next(iter(first.content.array_records.values()))
            try:
                ref = {k: np.zeros_like(v.numpy()) for k, v in rec.items()}
            except _BAD_ARRAY as exc:
                self.faults.append(Fault(server_round, 0, f"no usable reply: {exc}"))
                return None, None
        rows, weights = self._rows(server_round, replies, ref)
        try:
            new = self._aggregate(server_round, rows, np.asarray(weights), ref)
        except ValueError as exc:
            log(WARNING, "aggregate_train: round %d keeps the global arrays: %s", server_round, exc)
            self.faults.append(Fault(server_round, 0, f"not aggregated: {exc}"))
            return None, None
        good = [m.content for m, r in zip(replies, rows, strict=True) if r is not None]
        return ArrayRecord({k: Array(v) for k, v in new.items()}), self._metrics(good)

    def _metrics(self, contents: list[RecordDict]) -> MetricRecord | None:
        usable = [
            c
            for c in contents
            if len(c.metric_records) == 1
            and self.weighted_by_key in next(iter(c.metric_records.values()))
        ]
        if not usable or len(usable) != len(contents):
            return None
        try:
            return self.train_metrics_aggr_fn(usable, self.weighted_by_key)
        except (TypeError, ValueError, ZeroDivisionError):
            return None

    def _aggregate(
        self, server_round: int, rows: list[dict[str, Arr] | None], w: Arr, ref: dict[str, Arr]
    ) -> dict[str, Arr]:
        dts = [g.dtype for g in ref.values()]
        work = np.dtype(np.float32) if all(d == np.float32 for d in dts) else np.dtype(np.float64)
        keys = list(ref)
        sizes = [int(ref[k].size) for k in keys]

        def block(ks: list[str]) -> Arr:
            """(n, size of ks) updates; NaN rows for absent replies."""
            width = sum(int(ref[k].size) for k in ks)
            U = np.full((len(rows), width), np.nan, dtype=work)
            for i, r in enumerate(rows):
                if r is not None:
                    U[i] = (
                        np.concatenate(
                            [(r[k].astype(work) - ref[k].astype(work)).ravel() for k in ks]
                        )
                        if ks
                        else np.zeros(0, dtype=work)
                    )
            return U

        rule = None if self.weighted else self._rule(server_round)

        def agg(U: Arr) -> Arr:
            if rule is None:  # the weighted mean
                return np.asarray((w / w.sum()) @ U, dtype=work)
            return np.asarray(rule(U), dtype=work)

        if self.per_layer:
            deltas = [agg(block([k])) for k in keys]
        else:
            flat = agg(block(keys))
            deltas = np.split(flat, np.cumsum(sizes)[:-1])
        out: dict[str, Arr] = {}
        for k, d in zip(keys, deltas, strict=True):
            g = ref[k]
            v = g.astype(work) + d.reshape(g.shape)
            out[k] = (np.rint(v) if g.dtype.kind in "iub" else v).astype(g.dtype)
        return out


# --------------------------------------------------------------------------------------------
# LAD / Com-LAD on Flower
# --------------------------------------------------------------------------------------------


def fingerprint(cfg: train.Config) -> str:
    """A digest of the resolved configuration: server and clients must agree on it."""
    return hashlib.sha256(cfg.to_toml().encode()).hexdigest()[:16]


_SIMS: dict[str, train._Simulation] = {}


def _simulation(cfg: train.Config) -> train._Simulation:
    """This process's set-up of ``cfg`` (data, model, spec), built once."""
    key = fingerprint(cfg)
    if key not in _SIMS:
        _SIMS.clear()
        _SIMS[key] = train._Simulation(cfg, validated=True)
    return _SIMS[key]


def _le(a: Arr) -> Arr:
    return np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))


def run_lad(
    grid: Grid, cfg: train.Config, *, timeout: float = 600.0, node_wait: float = 120.0
) -> tuple[train.History, list[protocol.Fault]]:
    """The server's side of a LAD / Com-LAD run on a Flower ``Grid`` (see the module docs).

    Parameters
    ----------
    grid : Grid
        The ServerApp's grid; it needs at least ``cfg.n_devices`` nodes running
        :func:`client_app` with the same configuration.
    cfg : Config
    timeout : float
        Seconds to wait for the replies of one send.
    node_wait : float
        Seconds to wait for ``n_devices`` nodes to connect.

    Returns
    -------
    (History, list of Fault)
        The history (``theta`` holds the final model) and every round's faults.

    Raises
    ------
    RuntimeError
        If fewer than ``n_devices`` nodes connect within ``node_wait``.
    """
    cfg.validate()
    sim = train._Simulation(cfg, validated=True)
    n, P, srv, spec = cfg.n_devices, sim.P, sim.server, sim.spec
    end = time.monotonic() + node_wait
    while len(nodes := sorted(int(i) for i in grid.get_node_ids())) < n:
        if time.monotonic() > end:
            msg = f"{len(nodes)} Flower nodes connected within {node_wait:g} s, the run needs {n}"
            raise RuntimeError(msg)
        time.sleep(0.2)
    nodes = nodes[:n]
    node_of = dict(enumerate(nodes))
    device_of = {nd: i for i, nd in node_of.items()}
    fp = fingerprint(cfg)
    hist = train.History(config=cfg.to_dict())
    theta = sim.theta
    t0 = time.perf_counter()
    for t in range(cfg.rounds):
        plan = protocol.plan_round(spec, t)
        srv.begin(t)
        model = ArrayRecord({"theta": Array(_le(theta))})
        up = 0

        def send(
            devices: list[int],
            view: Arr | None,
            t: int = t,
            model: ArrayRecord = model,
            plan: protocol.RoundPlan = plan,
        ) -> int:
            msgs = []
            for i in devices:
                content = RecordDict(
                    {
                        "theta": model,
                        "cyclad": ConfigRecord(
                            {
                                "round": t,
                                "device": i,
                                "window": [int(j) for j in plan.assignment[i]],
                                "fingerprint": fp,
                            }
                        ),
                    }
                )
                if view is not None:
                    content["view"] = ArrayRecord({"view": Array(_le(view))})
                msgs.append(grid.create_message(content, MessageType.TRAIN, node_of[i], str(t)))
            got: dict[int, bytes | None] = {}
            reasons: dict[int, str] = {}
            for reply in grid.send_and_receive(msgs, timeout=timeout):
                i = device_of.get(int(reply.metadata.src_node_id), -1)
                if i not in devices or i in got:
                    continue
                payload = None
                if reply.has_error():
                    reasons[i] = f"error reply: {reply.error.reason}"
                else:
                    rec = reply.content.config_records.get("cyclad")
                    value = None if rec is None else rec.get("payload")
                    if isinstance(value, bytes):
                        payload = value
                    else:
                        reasons[i] = "reply without payload bytes"
                got[i] = payload
            nbytes = 0
            for i in devices:
                p = got.get(i)
                if p is None:
                    srv.receive(i, None, reason=reasons.get(i, f"no reply within {timeout:g} s"))
                else:
                    nbytes += len(p)
                    srv.receive(i, p)
            return nbytes

        up += send(plan.honest.tolist(), None)
        if plan.byzantine.size:
            up += send(plan.byzantine.tolist(), srv.received(plan.honest))
        theta = srv.finish(theta)
        evaluate = (t + 1) % cfg.eval_every == 0 or t + 1 == cfg.rounds
        hist.loss.append(sim.objective(theta) if evaluate else float("nan"))
        hist.accuracy.append(
            sim.model.accuracy(theta, sim.Xte, sim.yte) if evaluate else float("nan")
        )
        hist.bytes_up.append(up)
        hist.bytes_down.append(n * P * sim.dtype.itemsize)
        hist.seconds.append(time.perf_counter() - t0)
        hist.spread.append(float("nan"))
        hist.heterogeneity.append(float("nan"))
        hist.theta = theta
        for e in srv.faults:
            if e.round == t:
                log(
                    WARNING,
                    "round %d: device %d (node %d): %s",
                    t,
                    e.device,
                    node_of[e.device],
                    e.reason,
                )
        if evaluate:
            log(
                INFO,
                "cyclad round %d/%d: loss %.4f, accuracy %.3f",
                t + 1,
                cfg.rounds,
                hist.loss[-1],
                hist.accuracy[-1],
            )
    return hist, list(srv.faults)


def server_app(
    cfg: train.Config,
    *,
    out: str | Path | None = None,
    on_finish: Callable[[train.History, list[protocol.Fault]], None] | None = None,
    timeout: float = 600.0,
) -> ServerApp:
    """A ``ServerApp`` that runs :func:`run_lad` for ``cfg``.

    ``out``: a directory for ``history.csv``, ``history.json``, ``config.toml`` and
    ``theta.npy``. ``on_finish(history, faults)`` is called at the end of the run.
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        hist, faults = run_lad(grid, cfg, timeout=timeout)
        if out is not None:
            train.write_run(hist, cfg, out)
            if hist.theta is not None:
                np.save(Path(out) / "theta.npy", hist.theta)
        if on_finish is not None:
            on_finish(hist, faults)

    return app


_STATE = "cyclad.ef"  # the node's error-feedback state in context.state


def _restore(context: Context, comp: Any) -> None:
    rec = context.state.array_records.get(_STATE)
    if comp is not None and rec is not None and "state" in rec:
        comp._state = rec["state"].numpy()  # the EF14 residual / EF21 state of this device


def _keep(context: Context, comp: Any) -> None:
    state = getattr(comp, "_state", None)
    if state is not None:
        context.state[_STATE] = ArrayRecord({"state": Array(np.ascontiguousarray(state))})


def _device_reply(msg: Message, context: Context, cfg: train.Config) -> Message:
    sim = _simulation(cfg)
    content = msg.content
    cr = content.config_records.get("cyclad")
    if cr is None or cr.get("fingerprint") != fingerprint(cfg):
        return Message(
            Error(1, "configuration fingerprint differs from the client's"), reply_to=msg
        )
    t, device, window = cr.get("round"), cr.get("device"), cr.get("window")
    if (
        not isinstance(t, int)
        or not isinstance(device, int)
        or not isinstance(window, list)
        or not 0 <= device < cfg.n_devices
        or t < 0
    ):
        return Message(
            Error(1, f"bad round {t!r}, device {device!r} or window {window!r}"), reply_to=msg
        )
    plan = protocol.plan_round(sim.spec, t)
    if window != plan.assignment[device].tolist():
        return Message(Error(1, f"window {window} differs from the client's plan"), reply_to=msg)
    theta = content.array_records["theta"]["theta"].numpy()
    if theta.shape != (sim.P,) or theta.dtype != sim.dtype:
        return Message(Error(1, f"model of shape {theta.shape} {theta.dtype}"), reply_to=msg)
    theta = theta.astype(sim.dtype)
    t0 = time.perf_counter()
    if device not in plan.byzantine.tolist():
        comp = train.device_compressor(cfg, sim.P)
        _restore(context, comp)
        payload = sim.device_payload(plan, theta, device, comp)
        _keep(context, comp)
    else:
        view = content.array_records["view"]["view"].numpy().astype(sim.dtype)
        sender = sim.byz_senders.get(device)
        senders: dict[int, Any] = {}
        if sender is not None:
            sender = type(sender)(sim.base)
            _restore(context, sender)
            senders = {device: sender}
        payload = sim.byzantine_payloads(plan, theta, view, devices=[device], senders=senders)[0]
        _keep(context, sender)
    reply = ConfigRecord({"payload": payload, "seconds": time.perf_counter() - t0})
    return Message(RecordDict({"cyclad": reply}), reply_to=msg)


def client_app(cfg: train.Config) -> ClientApp:
    """A ``ClientApp`` that runs one LAD / Com-LAD device of ``cfg`` per train message.

    Every node holds the whole dataset (LAD's allocation), loaded once per process. The
    server's message says which device the node is this round; honest devices run
    :func:`cyclad.protocol.device_step`, Byzantine ones :func:`cyclad.protocol.byzantine_step`
    on the honest view the server sends them.
    """
    cfg.validate()
    app = ClientApp()

    @app.train()
    def _train(msg: Message, context: Context) -> Message:
        return _device_reply(msg, context, cfg)

    return app
