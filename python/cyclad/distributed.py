"""LAD and Com-LAD across processes and machines, on torch.distributed.

Rank 0 is the server, rank ``i + 1`` is device ``i`` (``n_devices + 1`` ranks in all). Every
rank reads the same configuration, loads the same dataset and derives every round's plan on its
own (:func:`cyclad.protocol.plan_round`); the only things that cross process boundaries are
bytes. One round ``t``:

1. the server publishes ``t`` and the model ``theta`` (little-endian bytes);
2. every honest device runs :func:`cyclad.protocol.device_step` on its own copy of the data and
   sends its payload (LAD: ``itemsize * P`` raw bytes; Com-LAD: the compressor's real
   ``Message`` bytes) and its compute / encode times;
3. the Byzantine devices (chosen by the configuration's ``byzantine`` and ``n_byzantine``, so
   a run replays exactly) run :func:`cyclad.protocol.byzantine_step`. The attacks are
   omniscient: the server forwards them the honest vectors of the round as it decoded them
   (this experiment device is not counted in the uplink bytes);
4. the server takes what arrived by the round timeout (:class:`cyclad.protocol.Server`),
   records the rest as faults, aggregates and updates the model.

Transport. Payloads travel through the key-value store of torch.distributed
(:class:`torch.distributed.TCPStore`: the torchrun agent's store, or one hosted by rank 0),
one key per (round, device), and never through a collective. The store has what a round with
hostile or dead peers needs: every wait has its own timeout, ``check`` tells without blocking
which payloads arrived, and a payload that arrives after its round closed sits under its own
round's key, where it can never be taken for a later round's. A collective (``gather``)
blocks until every rank joins, so one dead device would stall the server; point-to-point
``irecv`` with ``Work.wait(timeout)`` can give up on a peer, but leaves the receive posted
and the pair's state undefined after a timeout. Every value goes in a length-prefixed frame,
in chunks of 4 MiB (the store's server refuses a single value above 8 MiB). A run's payloads
all have one size, fixed by the configuration (LAD: ``itemsize * P``; Com-LAD: the
compressor's message size), so the server checks a frame's declared length against it before
it reads any chunk, and then validates the payload in full (length, dimension, dtype, message
fields) before it uses it. No tensor goes through the process group, so the payload bytes stay on the CPU
whatever device a model runs on; the backend (gloo, or NCCL for GPU tensors) is free for the
caller's own collectives.

Faults. A malformed or wrong-sized payload, or none by the round timeout (a slow, silent or
dead device), is a :class:`cyclad.protocol.Fault` with its round and device; its vector is
absent for the round, and the run goes on. A round where fewer than ``n - f`` vectors arrive
(``n`` for ``mean``) ends the run with a clear error (exit code 3), the history so far saved.
A device that cannot reach the server within ``--server-timeout`` exits with code 4. Ctrl-C
stops every rank; the server keeps the history of the rounds done (exit code 130).

Launch::

    torchrun --standalone --nproc-per-node=N+1 -m cyclad.distributed config.toml --out DIR
    cyclad launch config.toml --out DIR        # the same on one machine, N+1 processes

Under torchrun, a rank that exits with an error makes torchrun stop every rank (its failure
policy), so a device that crashes ends the run there; a hung or silent device is handled by
the round timeout. ``cyclad launch`` supervises the ranks itself: a device that dies is a fault
and the run continues. Each rank uses ``threads`` kernel threads (default 1 here, since ranks
share the machine's cores) and one BLAS thread.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cyclad import compression, protocol, train

# A store wait that times out is routine here (a device is late, a round closes): keep
# c10d's per-timeout socket warnings out of the log unless the user asked for them. The
# level is read when torch is first imported.
os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")

__all__ = ["Options", "launch", "main", "run_rank"]

EXIT_OK, EXIT_ERROR, EXIT_CONFIG, EXIT_TOO_FEW, EXIT_NO_SERVER = 0, 1, 2, 3, 4
EXIT_INTERRUPTED = 130
_FRAME = struct.Struct("<QB")  # round, flags
_STOP = 1
_TIMES = struct.Struct("<dd")  # compute, encode seconds


@dataclass
class Options:
    """How a distributed run waits, and the faults it injects (for testing a deployment).

    Attributes
    ----------
    round_timeout : float or None
        Seconds the server waits for a round's payloads (None: 60 s plus 1 s per 10^6
        parameters per device).
    server_timeout : float or None
        Seconds a device waits for the server (None: ``2 * round_timeout + 60``).
    init_timeout : float
        Seconds to wait for every rank to start.
    faults : list of (rank, kind, round)
        Injected faults: ``garbage`` (random bytes of the wrong size instead of the payload),
        ``silent`` (no
        payload), ``nan`` (an all-NaN vector), ``exit`` (the process dies), each from that
        round on; rank 0 (the server) takes ``exit`` only.
    """

    round_timeout: float | None = None
    server_timeout: float | None = None
    init_timeout: float = 120.0
    faults: tuple[tuple[int, str, int], ...] = ()

    def round_seconds(self, n_devices: int, n_params: int) -> float:
        if self.round_timeout is not None:
            return float(self.round_timeout)
        return 60.0 + n_devices * n_params / 1e6

    def server_seconds(self, n_devices: int, n_params: int) -> float:
        if self.server_timeout is not None:
            return float(self.server_timeout)
        return 2 * self.round_seconds(n_devices, n_params) + 60.0

    def fault(self, rank: int, t: int) -> str | None:
        kinds = [k for r, k, start in self.faults if r == rank and t >= start]
        return kinds[-1] if kinds else None


FAULT_KINDS = ("garbage", "silent", "nan", "exit")


def parse_fault(text: str) -> tuple[int, str, int]:
    """``"RANK:KIND[:ROUND]"`` (round 0 by default)."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or parts[1] not in FAULT_KINDS:
        msg = f"--inject-fault takes RANK:KIND[:ROUND] with KIND in {', '.join(FAULT_KINDS)}, got {text!r}"
        raise ValueError(msg)
    try:
        rank, start = int(parts[0]), int(parts[2]) if len(parts) == 3 else 0
    except ValueError:
        msg = f"--inject-fault: RANK and ROUND must be integers, got {text!r}"
        raise ValueError(msg) from None
    return rank, parts[1], start


# --------------------------------------------------------------------------------------------
# the store
# --------------------------------------------------------------------------------------------


def _connect(rank: int, world: int, timeout: float) -> Any:
    """The run's store: the torchrun agent's (TORCHELASTIC_USE_AGENT_STORE), else one hosted by
    rank 0 at MASTER_ADDR:MASTER_PORT; keys live under the prefix ``cyclad/``."""
    import torch.distributed as dist

    host = os.environ.get("MASTER_ADDR", "127.0.0.1")
    port = int(os.environ.get("MASTER_PORT", "29500"))
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"
    store = dist.TCPStore(  # type: ignore[attr-defined]
        host,
        port,
        world,
        is_master=(rank == 0 and not agent),
        timeout=datetime.timedelta(seconds=timeout),
        wait_for_workers=False,
    )
    return dist.PrefixStore("cyclad/", store)  # type: ignore[attr-defined]


def _wait(store: Any, keys: list[str], seconds: float) -> list[str]:
    """Wait until every key exists or ``seconds`` pass; return the keys that exist.

    The wait goes in slices of at most 0.5 s, so that Ctrl-C is handled promptly; a store
    whose server is gone raises (``torch.distributed.DistError``)."""
    import torch.distributed as dist

    if not keys:
        return []
    end = time.monotonic() + max(seconds, 0.0)
    while True:
        step = min(0.5, end - time.monotonic())
        if step <= 0:
            break
        try:
            store.wait(keys, datetime.timedelta(seconds=step))
            return list(keys)
        except dist.DistStoreError as exc:
            if "timeout" not in str(exc).lower() and "timed out" not in str(exc).lower():
                raise
    return [k for k in keys if store.check([k])]


# A store value travels as one message, and the store's server refuses large ones (the libuv
# backend of torch 2.13 resets the connection above 8 MiB): values go in chunks of 4 MiB, the
# chunks first, then the key itself with the length prefix, so that a reader who sees the key
# finds every chunk.
_CHUNK = 4 * 2**20
_HEAD = struct.Struct("<QI")  # total length, chunks


class _BadFrame(ValueError):
    """A store value whose framing does not hold (a device's, so data, not a bug)."""


def _chunks(total: int) -> int:
    return max(1, -(-total // _CHUNK))


def _put(store: Any, key: str, data: bytes) -> None:
    parts = [data[i : i + _CHUNK] for i in range(0, len(data), _CHUNK)] or [b""]
    for i, part in enumerate(parts[1:], start=1):
        store.set(f"{key}#{i}", part)
    store.set(key, _HEAD.pack(len(data), len(parts)) + parts[0])


def _get(store: Any, key: str, limit: int) -> bytes:
    """The value put by :func:`_put`; its declared length is checked against ``limit`` before
    anything else is read."""
    first = store.get(key)
    if len(first) < _HEAD.size:
        msg = (
            f"malformed: a frame of {len(first)} bytes is shorter than its {_HEAD.size}-byte header"
        )
        raise _BadFrame(msg)
    total, count = _HEAD.unpack(first[: _HEAD.size])
    if total > limit:
        msg = f"malformed: the frame declares {total} bytes, more than the {limit} this run's payloads have"
        raise _BadFrame(msg)
    if count != _chunks(total) or len(first) - _HEAD.size != min(total, _CHUNK):
        msg = f"malformed: the frame's chunking does not match its length {total}"
        raise _BadFrame(msg)
    parts = [first[_HEAD.size :]]
    for i in range(1, count):
        part = store.get(f"{key}#{i}") if store.check([f"{key}#{i}"]) else b""
        if len(part) != min(_CHUNK, total - i * _CHUNK):
            msg = f"malformed: chunk {i} of the frame is missing or of the wrong size"
            raise _BadFrame(msg)
        parts.append(part)
    return b"".join(parts)


def _delete(store: Any, key: str, total: int) -> None:
    for i in range(1, _chunks(total)):
        store.delete_key(f"{key}#{i}")
    store.delete_key(key)


def _payload_size(sim: Any) -> int:
    """The size of every payload of a run: LAD ``itemsize * P``; Com-LAD the compressor's
    message size, which is fixed by the configuration (k, levels, dtypes)."""
    if sim.base is None:
        return int(sim.P * sim.dtype.itemsize)
    return len(sim.base.compress(np.zeros(sim.P, dtype=sim.dtype)).to_bytes())


# --------------------------------------------------------------------------------------------
# the server
# --------------------------------------------------------------------------------------------


def _needed(cfg: train.Config) -> int:
    """Vectors a round needs: every one for ``mean``, else ``n - f``."""
    return cfg.n_devices if cfg.aggregator == "mean" else cfg.n_devices - cfg.f_rule


def _serve(cfg: train.Config, store: Any, opts: Options, out: Path, quiet: bool) -> int:
    sim = train._Simulation(cfg, validated=True)
    n, P, srv, spec = cfg.n_devices, sim.P, sim.server, sim.spec
    timeout = opts.round_seconds(n, P)
    size = _payload_size(sim)
    hist = train.History(config=cfg.to_dict())
    rounds: list[dict[str, Any]] = []
    theta = sim.theta
    code = EXIT_OK
    message = ""
    ready = _wait(store, [f"ready/{i}" for i in range(n)], opts.init_timeout)
    if len(ready) < n:
        missing = sorted(set(range(n)) - {int(k.split("/")[1]) for k in ready})
        message = f"devices {missing} did not start within {opts.init_timeout:.0f} s"
        _log(message)
        store.set("stop", b"1")
        return EXIT_ERROR
    t0 = time.perf_counter()
    t = 0
    try:
        for t in range(cfg.rounds):
            if opts.fault(0, t) == "exit":
                os._exit(EXIT_ERROR)
            r0 = time.perf_counter()
            _put(store, f"theta/{t}", _FRAME.pack(t, 0) + _le(theta).tobytes())
            plan = protocol.plan_round(spec, t)
            srv.begin(t)
            got = _Received()
            _collect(store, srv, t, plan.honest.tolist(), r0 + timeout, timeout, size, got)
            if plan.byzantine.size:
                view = srv.received(plan.honest)
                _put(store, f"view/{t}", _le(view).tobytes())
                _collect(
                    store,
                    srv,
                    t,
                    plan.byzantine.tolist(),
                    time.perf_counter() + timeout,
                    timeout,
                    size,
                    got,
                )
            arrived = n - len(srv.faulty)
            wait_s = time.perf_counter() - r0 - got.decode
            a0 = time.perf_counter()
            if arrived < _needed(cfg):
                code = EXIT_TOO_FEW
                message = (
                    f"round {t}: {arrived} of {n} vectors arrived, the rule "
                    f"{cfg.aggregator_name!r} with f={cfg.f_rule} needs {_needed(cfg)}"
                )
                break
            theta = srv.finish(theta)
            agg_s = time.perf_counter() - a0 + got.decode
            # A device slower than the timeout may still read round t - 1's model or write
            # its payload late: keys are kept for two rounds.
            if t >= 2:
                old = t - 2
                _delete(store, f"theta/{old}", _FRAME.size + P * sim.dtype.itemsize)
                _delete(store, f"view/{old}", plan.honest.size * P * sim.dtype.itemsize)
                for i in range(n):
                    _delete(store, f"up/{old}/{i}", size)
                    store.delete_key(f"time/{old}/{i}")
            evaluate = (t + 1) % cfg.eval_every == 0 or t + 1 == cfg.rounds
            loss = sim.objective(theta) if evaluate else float("nan")
            acc = sim.model.accuracy(theta, sim.Xte, sim.yte) if evaluate else float("nan")
            hist.loss.append(loss)
            hist.accuracy.append(acc)
            hist.bytes_up.append(got.bytes)
            hist.bytes_down.append(n * P * sim.dtype.itemsize)
            hist.seconds.append(time.perf_counter() - t0)
            hist.spread.append(float("nan"))
            hist.heterogeneity.append(float("nan"))
            hist.theta = theta
            compute = max((c for c, _ in got.times.values()), default=0.0)
            encode = max((e for _, e in got.times.values()), default=0.0)
            rounds.append(
                {
                    "round": t + 1,
                    "seconds": time.perf_counter() - r0,
                    "compute": compute,
                    "encode": encode,
                    "communication": max(wait_s - compute - encode, 0.0),
                    "aggregation": agg_s,
                    "arrived": arrived,
                    "faulty": [[e.device, e.reason] for e in srv.faults if e.round == t],
                }
            )
            for e in srv.faults:
                if e.round == t:
                    _log(f"round {t}: device {e.device} (rank {e.device + 1}): {e.reason}")
            if not quiet:
                _log(
                    f"round {t + 1}/{cfg.rounds}  loss {loss:.4f}  acc {acc:.3f}  "
                    f"{arrived}/{n} arrived  {rounds[-1]['seconds']:.3f} s"
                )
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
        message = f"interrupted after {len(hist)} rounds"
        hist.interrupted = True
    finally:
        with contextlib.suppress(Exception):
            store.set("stop", str(code).encode())
            for k in (t, t + 1):  # devices wait for the model of round t or t + 1
                _put(store, f"theta/{k}", _FRAME.pack(k, _STOP))
        _write(out, hist, cfg, rounds, srv.faults)
    if message:
        _log(message)
    return code


@dataclass
class _Received:
    """What the server took in one round: payload bytes, decode seconds, device times."""

    bytes: int = 0
    decode: float = 0.0
    times: dict[int, tuple[float, float]] = field(default_factory=dict)


def _collect(
    store: Any,
    srv: protocol.Server,
    t: int,
    devices: Sequence[int],
    deadline: float,
    timeout: float,
    size: int,
    got: _Received,
) -> None:
    """Wait until ``deadline`` for the devices' payloads of round ``t`` and hand them to the
    server (a device with none by then is absent)."""
    keys = [f"up/{t}/{i}" for i in devices]
    present = set(_wait(store, keys, deadline - time.perf_counter()))
    for i, key in zip(devices, keys, strict=True):
        if key not in present:
            srv.receive(i, None, reason=f"no payload within {timeout:g} s")
            continue
        try:
            payload = _get(store, key, size)
        except _BadFrame as exc:
            srv.receive(i, None, reason=str(exc))
            continue
        got.bytes += len(payload)
        d0 = time.perf_counter()
        srv.receive(i, payload)
        got.decode += time.perf_counter() - d0
        tkey = f"time/{t}/{i}"
        if store.check([tkey]):
            raw = store.get(tkey)
            if len(raw) == _TIMES.size:  # a device's own report: checked, never trusted
                times = _TIMES.unpack(raw)
                got.times[i] = (float(times[0]), float(times[1]))


def _le(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))


def _write(
    out: Path,
    hist: train.History,
    cfg: train.Config,
    rounds: list[dict[str, Any]],
    faults: Sequence[protocol.Fault],
) -> None:
    train.write_run(hist, cfg, out)
    if hist.theta is not None:
        np.save(out / "theta.npy", hist.theta)
    cols = ["round", "seconds", "compute", "encode", "communication", "aggregation", "arrived"]
    lines = [",".join([*cols, "faulty"])]
    for r in rounds:
        faulty = " ".join(str(d) for d, _ in r["faulty"])
        lines.append(",".join([*(repr(r[c]) for c in cols), faulty]))
    (out / "rounds.csv").write_text("\n".join(lines) + "\n")
    (out / "faults.json").write_text(
        json.dumps(
            [
                {"round": e.round, "device": e.device, "rank": e.device + 1, "reason": e.reason}
                for e in faults
            ],
            indent=1,
        )
    )


# --------------------------------------------------------------------------------------------
# a device
# --------------------------------------------------------------------------------------------


def _device(cfg: train.Config, store: Any, rank: int, opts: Options) -> int:
    device = rank - 1
    sim = train._Simulation(cfg, validated=True)
    n, P, spec, dtype = cfg.n_devices, sim.P, sim.spec, sim.dtype
    wait_s = opts.server_seconds(n, P)
    byz = protocol.byzantine_devices(spec)
    honest = device not in byz.tolist()
    comp = sim.device_comp[device] if honest else None
    base = sim.base
    store.set(f"ready/{device}", b"1")
    for t in range(cfg.rounds):
        if not _wait(store, [f"theta/{t}"], wait_s):
            stopped = store.check(["stop"])
            _log(
                f"device {device}: "
                + (
                    "the server stopped"
                    if stopped
                    else f"no model from the server within {wait_s:g} s"
                )
            )
            return EXIT_OK if stopped else EXIT_NO_SERVER
        frame = _get(store, f"theta/{t}", _FRAME.size + P * dtype.itemsize)
        rt, flags = _FRAME.unpack(frame[: _FRAME.size])
        if flags & _STOP or rt != t:
            return EXIT_OK
        theta = np.frombuffer(frame[_FRAME.size :], dtype=dtype.newbyteorder("<")).astype(dtype)
        plan = protocol.plan_round(spec, t)
        fault = opts.fault(rank, t)
        if fault == "exit":
            os._exit(EXIT_ERROR)
        tm: dict[str, float] = {}
        if honest:
            payload = sim.device_payload(plan, theta, device, comp, timings=tm)
            store.set(f"time/{t}/{device}", _TIMES.pack(tm["compute"], tm["encode"]))
        else:
            if not _wait(store, [f"view/{t}"], wait_s):
                return EXIT_NO_SERVER
            raw = _get(store, f"view/{t}", plan.honest.size * P * dtype.itemsize)
            view = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype)
            payload = sim.byzantine_payloads(
                plan, theta, view.reshape(plan.honest.size, P), devices=[device], timings=tm
            )[0]
            store.set(f"time/{t}/{device}", _TIMES.pack(tm["compute"], tm["encode"]))
        if fault == "silent":
            continue
        if fault == "garbage":
            payload = os.urandom(len(payload) + 3)  # malformed, and of the wrong size
        elif fault == "nan":
            nan = np.full(P, np.nan, dtype=dtype)
            payload = (
                protocol.encode_payload(nan, None, 0)
                if base is None
                else compression.Identity().compress(nan).to_bytes()
            )
        _put(store, f"up/{t}/{device}", payload)
    return EXIT_OK


def _log(text: str) -> None:
    sys.stderr.write(f"cyclad.distributed: {text}\n")
    sys.stderr.flush()


# --------------------------------------------------------------------------------------------
# entry points
# --------------------------------------------------------------------------------------------


def run_rank(
    cfg: train.Config,
    rank: int,
    world: int,
    out: Path,
    opts: Options | None = None,
    *,
    quiet: bool = False,
) -> int:
    """Run rank ``rank`` of ``world = n_devices + 1`` ranks; returns its exit code."""
    import torch.distributed as dist

    opts = opts or Options()
    cfg.validate()
    if world != cfg.n_devices + 1:
        msg = (
            f"a run of n_devices={cfg.n_devices} needs {cfg.n_devices + 1} ranks (one server "
            f"and one per device), got a world size of {world}"
        )
        name = "n_devices"
        raise train.ConfigError(name, msg)
    if cfg.threads is None:
        cfg = train.Config.from_dict({**_fields(cfg), "threads": 1})
    store = _connect(rank, world, opts.init_timeout)
    limiter = None
    with contextlib.suppress(ImportError):
        from threadpoolctl import threadpool_limits

        limiter = threadpool_limits(limits=1, user_api="blas")
    try:
        if rank == 0:
            return _serve(cfg, store, opts, out, quiet)
        return _device(cfg, store, rank, opts)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except dist.DistError as exc:  # the store is gone: on a device, the server is
        if rank == 0:
            raise
        _log(f"device {rank - 1}: lost the server ({str(exc).splitlines()[0]})")
        return EXIT_NO_SERVER
    finally:
        if limiter is not None:
            limiter.restore_original_limits()


def _fields(cfg: train.Config) -> dict[str, Any]:
    return {f: getattr(cfg, f) for f in train.Config.fields()}


_OPTIONS = {
    "--out": True,
    "--round-timeout": True,
    "--server-timeout": True,
    "--init-timeout": True,
    "--inject-fault": True,
    "--quiet": False,
    "--overwrite": False,
}


def _parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        allow_abbrev=False,
        description="Run LAD / Com-LAD with one server rank and one rank per device "
        "(n_devices + 1 ranks); rank 0 writes history.csv, history.json, config.toml, "
        "rounds.csv (time split and faults per round), faults.json and theta.npy to --out.",
        epilog="Any other --FIELD VALUE sets a Config field, as in cyclad run.",
    )
    p.add_argument("config", nargs="?", help="TOML file of Config fields")
    p.add_argument("--out", help="output directory of rank 0 (default runs/<timestamp>)")
    p.add_argument(
        "--round-timeout",
        type=float,
        default=None,
        help="seconds the server waits for a round's payloads (default 60 s plus "
        "1 s per 10^6 parameters per device)",
    )
    p.add_argument(
        "--server-timeout",
        type=float,
        default=None,
        help="seconds a device waits for the server (default 2 x round timeout + 60 s)",
    )
    p.add_argument(
        "--init-timeout",
        type=float,
        default=120.0,
        help="seconds to wait for every rank to start (default 120)",
    )
    p.add_argument(
        "--inject-fault",
        action="append",
        default=[],
        metavar="RANK:KIND[:ROUND]",
        help="make a rank misbehave from ROUND on (testing a deployment): KIND is "
        "garbage (random bytes of the wrong size), silent (sends nothing), nan (an "
        "all-NaN vector) or exit (the process dies); rank 0 (the server) takes exit "
        "only; repeatable",
    )
    p.add_argument("--quiet", action="store_true", help="no per-round progress lines")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="write into an existing non-empty --out (files of the same name are replaced)",
    )
    return p


def _parse(argv: Sequence[str], prog: str) -> tuple[argparse.Namespace, train.Config, Options]:
    p = _parser(prog)
    if {"-h", "--help"} & set(argv):
        p.parse_args(["--help"])
    own, positional, extra = train.split_field_flags(list(argv), _OPTIONS)
    args = p.parse_args(positional + own)
    cfg = train.Config.from_dict(train.load_values(args.config, train.parse_overrides(extra)))
    opts = Options(
        round_timeout=args.round_timeout,
        server_timeout=args.server_timeout,
        init_timeout=args.init_timeout,
        faults=tuple(parse_fault(f) for f in args.inject_fault),
    )
    return args, cfg, opts


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cyclad.distributed config.toml [--out DIR] [--field value ...]``, one rank
    (RANK and WORLD_SIZE from the environment, as torchrun sets them)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args, cfg, opts = _parse(argv, "python -m cyclad.distributed")
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        out = Path(args.out or f"runs/{time.strftime('%Y%m%d-%H%M%S')}")
        return run_rank(cfg, rank, world, out, opts, quiet=args.quiet)
    except KeyError as exc:
        _log(f"{exc.args[0]} is not set: launch with torchrun or cyclad launch")
        return EXIT_CONFIG
    except (ValueError, TypeError, OSError) as exc:
        _log(f"error: {exc}")
        return EXIT_CONFIG


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(argv: Sequence[str], *, grace: float = 10.0) -> int:
    """``cyclad launch config.toml [...]``: start the ``n_devices + 1`` ranks on this machine
    (127.0.0.1), supervise them and return the server's exit code.

    A device that dies does not stop the others (the server treats it as absent). When the
    server ends, devices still running after ``grace`` seconds are terminated. Ctrl-C (SIGINT
    or SIGTERM to the launcher) is passed to every rank; the server writes what it has.
    """
    argv = list(argv)
    try:
        args, cfg, _ = _parse(argv, "cyclad launch")
        cfg.validate()
    except (ValueError, TypeError, OSError) as exc:
        _log(f"error: {exc}")
        return EXIT_CONFIG
    out = Path(args.out) if args.out else None
    if out is not None and not args.overwrite and out.is_dir() and any(out.iterdir()):
        _log(f"error: --out {out} exists and is not empty; pass --overwrite to write into it")
        return EXIT_CONFIG
    world = cfg.n_devices + 1
    env = {
        **os.environ,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "WORLD_SIZE": str(world),
    }
    env.pop("TORCHELASTIC_USE_AGENT_STORE", None)
    procs: list[subprocess.Popen[bytes]] = []
    stopping = False

    def forward(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGINT)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for r in range(world):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "cyclad.distributed", *argv],
                    env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                )
            )
        server = procs[0]
        while server.poll() is None:
            time.sleep(0.05)
        deadline = time.monotonic() + grace
        while any(p.poll() is None for p in procs[1:]) and time.monotonic() < deadline:
            time.sleep(0.05)
        for r, p in enumerate(procs[1:], start=1):
            if p.poll() is None:
                _log(f"rank {r} still running {grace:g} s after the server ended: killed")
            elif p.returncode != 0:
                _log(f"rank {r} (device {r - 1}) exited with code {p.returncode}")
        code = server.returncode
        return EXIT_INTERRUPTED if stopping and code in (0, EXIT_INTERRUPTED) else code
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for p in procs:
            with contextlib.suppress(Exception):
                p.wait(timeout=5)
        for s, h in old.items():
            signal.signal(s, h)


if __name__ == "__main__":
    raise SystemExit(main())
