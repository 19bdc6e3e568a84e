"""The torch.distributed runtime (cyclad.distributed): real processes on 127.0.0.1.

Every run is bounded by timeouts and by the subprocess timeout of the test; the launcher kills
any rank left when it returns, and a test that fails kills its launcher (``_run``'s finally).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch.distributed

from cyclad import train

SMALL = {"n_devices": 4, "n_byzantine": 1, "d": 2, "rounds": 6, "attack": "alie", "blas_threads": 1}
LAUNCH = [
    sys.executable,
    "-c",
    "import sys; from cyclad.cli import main; sys.exit(main())",
    "launch",
]


def _flags(values: dict) -> list[str]:
    out = []
    for k, v in values.items():
        out += [f"--{k}", json.dumps(v) if not isinstance(v, str) else v]
    return out


def _run(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _launch(tmp: Path, values: dict, *extra: str, timeout: float = 120):
    res = _run([*LAUNCH, *_flags(values), "--out", str(tmp), "--quiet", *extra], timeout)
    return res


def _simulated(values: dict) -> train.History:
    return train.run(train.Config(**values))


def _check_equal(tmp: Path, values: dict, rtol: float) -> None:
    hist = _simulated(values)
    theta = np.load(tmp / "theta.npy")
    np.testing.assert_allclose(theta, hist.theta, rtol=rtol, atol=0)
    got = json.loads((tmp / "history.json").read_text())
    assert got["bytes_up"] == hist.bytes_up
    assert got["bytes_down"] == hist.bytes_down
    np.testing.assert_allclose(got["loss"], hist.loss, rtol=rtol)


def test_lad_run_matches_the_simulation(tmp_path) -> None:
    res = _launch(tmp_path, SMALL)
    assert res.returncode == 0, res.stderr
    _check_equal(tmp_path, SMALL, rtol=1e-9)
    rounds = (tmp_path / "rounds.csv").read_text().splitlines()
    assert rounds[0].split(",")[:6] == [
        "round",
        "seconds",
        "compute",
        "encode",
        "communication",
        "aggregation",
    ]
    assert len(rounds) == 1 + SMALL["rounds"]
    assert json.loads((tmp_path / "faults.json").read_text()) == []


def test_comlad_ef21_run_matches_the_simulation(tmp_path) -> None:
    values = {**SMALL, "compressor": "topk:0.1", "error_feedback": "ef21", "pre_aggregation": "nnm"}
    res = _launch(tmp_path, values)
    assert res.returncode == 0, res.stderr
    _check_equal(tmp_path, values, rtol=1e-9)


def test_torchrun_float32_run_matches_the_simulation(tmp_path) -> None:
    values = {**SMALL, "dtype": "float32", "compressor": "qsgd:8", "rounds": 4}
    config = tmp_path / "config.toml"
    config.write_text(train.Config(**values).to_toml())
    out = tmp_path / "out"
    # torchrun reads abbreviated options anywhere on its line (--d would be ambiguous): the
    # fields go in the TOML file
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=5",
        "-m",
        "cyclad.distributed",
        str(config),
        "--out",
        str(out),
        "--quiet",
    ]
    res = _run(cmd, timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    _check_equal(out, values, rtol=1e-6)


def test_garbage_and_nan_payloads_are_faults_and_the_run_goes_on(tmp_path) -> None:
    values = {**SMALL, "n_devices": 6, "n_byzantine": 0, "f": 2, "attack": "none"}
    res = _launch(tmp_path, values, "--inject-fault", "2:garbage:1", "--inject-fault", "4:nan:3")
    assert res.returncode == 0, res.stderr
    faults = json.loads((tmp_path / "faults.json").read_text())
    garbage = [f for f in faults if f["rank"] == 2]
    assert [f["round"] for f in garbage] == [1, 2, 3, 4, 5]
    assert all("malformed" in f["reason"] for f in garbage)
    assert all(f["rank"] == 2 for f in faults)  # a NaN vector is data, not a fault
    assert "device 1 (rank 2): malformed" in res.stderr
    hist = json.loads((tmp_path / "history.json").read_text())
    assert len(hist["loss"]) == 6
    assert np.isfinite(np.load(tmp_path / "theta.npy")).all()
    assert hist["loss"][-1] < hist["loss"][0]


def test_a_device_that_dies_is_absent_and_the_run_goes_on(tmp_path) -> None:
    res = _launch(
        tmp_path,
        {**SMALL, "attack": "none"},
        "--inject-fault",
        "3:exit:2",
        "--round-timeout",
        "1.5",
    )
    assert res.returncode == 0, res.stderr
    faults = json.loads((tmp_path / "faults.json").read_text())
    assert [(f["round"], f["rank"]) for f in faults] == [(r, 3) for r in range(2, 6)]
    assert "no payload within 1.5 s" in faults[0]["reason"]
    rounds = (tmp_path / "rounds.csv").read_text().splitlines()[1:]
    assert [r.split(",")[-1] for r in rounds] == ["", ""] + ["2"] * 4
    assert "rank 3 (device 2) exited with code 1" in res.stderr


def test_too_few_vectors_end_the_run_with_the_history_saved(tmp_path) -> None:
    res = _launch(
        tmp_path,
        {**SMALL, "attack": "none"},
        "--inject-fault",
        "2:silent:3",
        "--inject-fault",
        "3:silent:3",
        "--round-timeout",
        "1",
    )
    assert res.returncode == 3
    assert "round 3: 2 of 4 vectors arrived" in res.stderr
    assert "needs 3" in res.stderr
    hist = json.loads((tmp_path / "history.json").read_text())
    assert len(hist["loss"]) == 3


def test_the_server_dying_ends_every_device(tmp_path) -> None:
    res = _launch(
        tmp_path, {**SMALL, "rounds": 50}, "--inject-fault", "0:exit:2", "--server-timeout", "10"
    )
    assert res.returncode == 1
    # every device stopped on its own (none had to be killed by the launcher)
    assert "killed" not in res.stderr
    assert res.stderr.count("exited with code 4") == 4


def test_ctrl_c_stops_every_rank_and_keeps_the_history(tmp_path) -> None:
    cmd = [*LAUNCH, *_flags({**SMALL, "rounds": 100000}), "--out", str(tmp_path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "round 3/" in line:
                break
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    hist = json.loads((tmp_path / "history.json").read_text())
    assert hist["interrupted"] is True
    assert len(hist["loss"]) >= 3
    assert "killed" not in err


def test_the_world_size_must_fit_the_config(tmp_path) -> None:
    env = {**os.environ, "RANK": "0", "WORLD_SIZE": "3"}
    cmd = [
        sys.executable,
        "-m",
        "cyclad.distributed",
        "--n_devices",
        "4",
        "--n_byzantine",
        "1",
        "--out",
        str(tmp_path),
    ]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 2
    assert "needs 5 ranks" in res.stderr
    res = subprocess.run(
        [*cmd[:3], "--inject-fault", "1:explode"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert res.returncode == 2
    assert "RANK:KIND[:ROUND]" in res.stderr


def test_store_frames_carry_values_past_the_store_limit_and_check_lengths() -> None:
    import datetime

    import pytest

    from cyclad import distributed as d

    store = torch.distributed.TCPStore(
        "127.0.0.1",
        d._free_port(),
        1,
        True,
        timeout=datetime.timedelta(seconds=30),
        wait_for_workers=False,
    )
    big = os.urandom(3 * d._CHUNK + 12345)  # 12 MiB: one store value would be refused
    d._put(store, "k", big)
    assert d._get(store, "k", len(big)) == big
    with pytest.raises(d._BadFrame, match=f"declares {len(big)} bytes, more than the 100"):
        d._get(store, "k", 100)
    store.set("short", b"\x01")
    with pytest.raises(d._BadFrame, match="shorter than its 12-byte header"):
        d._get(store, "short", 100)
    store.delete_key("k#2")
    with pytest.raises(d._BadFrame, match="chunk 2 of the frame is missing"):
        d._get(store, "k", len(big))
    d._put(store, "empty", b"")
    assert d._get(store, "empty", 0) == b""
