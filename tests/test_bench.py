"""The bench suite as a product: ``cyclad bench`` end to end on the test-only ``--tiny`` sizes
(one call per figure, so that it takes seconds; its figures mean nothing and nothing here
checks a time), its reports, plots and errors, and the round area against cyclad.protocol."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import cyclad.compression as comp
from cyclad import _core, cli, protocol
from cyclad.bench import _harness, _plots, lad_round
from cyclad.bench.__main__ import AREAS

TINY = ["--tiny", "--baselines", "numpy"]


def _reports(out: Path, area: str) -> tuple[dict, str]:
    (jpath,) = out.glob(f"{area}-tiny-*.json")
    (mpath,) = out.glob(f"{area}-tiny-*.md")
    return json.loads(jpath.read_text()), mpath.read_text()


@pytest.fixture(scope="module")
def tiny_all(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    assert cli.main(["bench", *TINY, "--out", str(out)]) == 0
    return out


def test_help_lists_every_area_and_option(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    for area in (*AREAS, "all"):
        (line,) = [ln for ln in lines if ln.startswith(f"  {area} ")]
        assert len(line.split()) > 3, line  # a one-line description
    options = ("--quick", "--out", "--baselines", "--no-plots", "--n", "--D", "--hostile", "--cold")
    for option in options:
        assert f"  {option}" in text, option
    assert "--tiny" not in text  # test-only


def test_bad_area_and_options_exit_2(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "aggregator"])
    assert exc.value.code == 2
    assert "invalid choice: 'aggregator'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "coding", "--baselines", "numpy,jax"])
    assert exc.value.code == 2
    assert "--baselines: unknown jax" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "coding", "--n", "20", "--D", "1e5"])
    assert exc.value.code == 2
    assert "aggregators area only" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "coding", "--frobnicate"])
    assert exc.value.code == 2


def test_every_area_writes_markdown_json_and_plots(tiny_all: Path) -> None:
    threads = _harness.all_threads()
    for area in AREAS:
        data, md = _reports(tiny_all, area)
        assert data["area"] == area
        assert data["mode"] == "tiny"
        m = data["machine"]
        for key in ("cpu", "isa_path", "hardware_threads", "read_bandwidth", "numpy"):
            assert m[key], key
        assert m["read_bandwidth"]["gbps_t1"] > 0
        assert m["read_bandwidth"][f"gbps_t{threads}"] > 0
        assert md.startswith(f"# cyclad bench: {area} (tiny)")
        for row in ("| CPU |", "| kernels |", "| cores |", "| read bandwidth |"):
            assert row in md
        assert m["isa_path"] in md
        assert data["records"]
        for rec in data["records"]:
            t = rec["timing"]
            assert t["runs"] >= 1
            assert t["low"] <= t["median"] <= t["high"]
            assert t["spread"] >= 0
        assert data["plots"], area
        for name in data["plots"]:
            png = tiny_all / name
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_aggregators_report(tiny_all: Path) -> None:
    data, md = _reports(tiny_all, "aggregators")
    recs = data["records"]
    assert {r["group"] for r in recs} == {"vs_D", "vs_n", "hostile"}
    assert {r["params"]["D"] for r in recs if r["group"] == "vs_D"} == {1000, 2000}
    assert {r["params"]["n"] for r in recs if r["group"] == "vs_n"} == {5, 8}
    names = {r["name"] for r in recs}
    assert {"read_pass", "copy_pass", "mean", "median", "trimmed_mean", "krum"} <= names
    refs = ("read_pass", "copy_pass")
    kernels = [r for r in recs if r["name"] not in refs and r["group"] != "hostile"]
    # The write floor: every copy pass is set against the read pass of the same size, and the
    # kernels that read twice and write once carry their ratio to read + copy.
    copies = [r for r in recs if r["name"] == "copy_pass"]
    assert copies
    assert all(r["read_ratio"] is not None for r in copies)
    assert all(r["seconds"] > 0 for r in copies)
    floored = [r for r in kernels if r["name"] in ("clip", "arc", "clip_out", "arc_out")]
    assert floored
    assert all(float(r["extra"]["x read + copy"]) > 0 for r in floored)
    assert not any("x read + copy" in r["extra"] for r in kernels if r not in floored)
    assert all(r["read_ratio"] is not None for r in kernels)
    assert any("numpy" in r["baselines"] for r in kernels)
    assert not any("torch" in r["baselines"] or "byzfl" in r["baselines"] for r in recs)
    if data["machine"]["memory_method"] is not None:
        assert all(isinstance(r["peak_bytes"], int) for r in kernels)
    if _harness.all_threads() > 1:
        ones = {
            (r["group"], r["name"], json.dumps(r["params"])) for r in kernels if r["threads"] == 1
        }
        multi = [r for r in kernels if r["threads"] > 1]
        assert multi
        for r in multi:  # weiszfeld_iteration may lack a twin: a t5 <= t1 difference is noted
            twin = (r["group"], r["name"], json.dumps(r["params"])) in ones
            assert (r["efficiency"] is not None) == twin, r["name"]
    for title in ("### time vs D (n = 6)", "### time vs n (D = 1000)", "### hostile rows"):
        assert title in md
    assert "| kernel | params | threads | ms | spread |" in md
    plots = set(data["plots"])
    assert {p.split("-")[-1] for p in plots} >= {"D.png", "n.png"}
    assert sum(p.endswith("-vs-D.png") for p in plots) == 1
    assert sum(p.endswith("-vs-n.png") for p in plots) == 1
    if _harness.all_threads() > 1:
        assert sum(p.endswith("-efficiency.png") for p in plots) == 1


def test_round_report(tiny_all: Path) -> None:
    data, md = _reports(tiny_all, "round")
    assert [r["variant"] for r in data["rounds"]] == list(lad_round.VARIANTS)
    for r in data["rounds"]:
        assert set(r["phases"]) == {*lad_round.PHASES, "round"}
        total = sum(r["phases"][p]["median"] for p in lad_round.PHASES)
        assert r["phases"]["round"]["median"] == pytest.approx(total, rel=1e-6)
        assert r["uplink_bytes"] > 0
    lad, com = data["rounds"]
    assert com["uplink_bytes"] < lad["uplink_bytes"] / 10  # top-k 1 %
    head = "| P | variant | gradient | encode | compress | decode | aggregate | round |"
    assert head in md
    assert "%)" in md  # shares of the round


def test_missing_peer_is_a_note(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(_harness._PEERS, "torch", None)
    out = tmp_path / "o"
    assert cli.main(["bench", "coding", "--tiny", "--baselines", "torch", "--out", str(out)]) == 0
    data, md = _reports(out, "coding")
    assert any("torch is not importable" in n for n in data["notes"])
    assert "torch is not importable: its baselines are skipped" in md
    assert not any("torch" in r["baselines"] for r in data["records"])


def test_plots_skipped_without_matplotlib(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(_plots, "pyplot", lambda: None)
    out = tmp_path / "o"
    assert cli.main(["bench", "compression", *TINY, "--out", str(out)]) == 0
    assert not list(out.glob("*.png"))
    data, md = _reports(out, "compression")
    assert data["plots"] == []
    assert _plots.MISSING in data["notes"]
    assert _plots.MISSING in md
    assert capsys.readouterr().err.count(_plots.MISSING) == 1


def test_module_entry_point_in_a_subprocess(tmp_path) -> None:
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "cyclad.bench", "coding", *TINY, "--no-plots", "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert "## coding (tiny" in res.stdout
    data, _ = _reports(out, "coding")
    assert data["plots"] == []
    bad = subprocess.run(
        [sys.executable, "-m", "cyclad.bench", "nope"], capture_output=True, text=True, check=False
    )
    assert bad.returncode == 2
    assert "invalid choice" in bad.stderr


# --- the harness -----------------------------------------------------------------------------


def test_cold_runs_the_eviction_before_every_timed_call(monkeypatch) -> None:
    events: list[str] = []
    budget = _harness.Budget(
        repeat=4, min_total=0.0, max_calls=4, before=lambda: events.append("e")
    )
    timing = _harness.measure(lambda: events.append("call"), budget, memory=False)
    assert events == ["e", "call"] * 5  # the warm-up and four timed calls
    assert timing.runs == 4
    # the eviction itself writes every cache line of its buffer
    monkeypatch.setattr(_harness, "_EVICT", [])
    monkeypatch.setattr(_harness, "_evict_bytes", lambda: 1 << 16)
    _harness.evict_caches()
    _harness.evict_caches()
    (buf,) = _harness._EVICT
    assert buf.size == 1 << 16
    assert np.all(buf[::64] == 2)
    assert buf.sum() == 2 * (1 << 10)


def test_cold_report_says_so(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(_harness, "_EVICT", [])
    monkeypatch.setattr(_harness, "_evict_bytes", lambda: 1 << 20)
    args = ["bench", "aggregators", *TINY, "--n", "4", "--D", "300", "--cold", "--no-plots"]
    assert cli.main([*args, "--out", str(tmp_path)]) == 0
    (md,) = tmp_path.glob("aggregators-tiny-cold-*.md")
    assert "cold caches: before every timed call" in md.read_text()
    assert len(_harness._EVICT) == 1
    assert _harness._EVICT[0].size == 1 << 20


def test_timing_median_and_spread() -> None:
    t = _harness.Timing.of([3.0, 1.0, 2.0, 10.0, 2.0])
    assert t.median == 2.0
    assert (t.low, t.high, t.runs) == (1.0, 10.0, 5)
    assert t.spread == pytest.approx(4.5)
    assert _harness.Timing.of([1.0]).spread == 0.0
    calls = []
    tm = _harness.measure(lambda: calls.append(1), _harness.BUDGETS["tiny"], memory=False)
    assert tm.runs == 1
    assert len(calls) == 2  # warm-up + one timed call


def test_peak_memory_sees_a_fresh_allocation() -> None:
    if _harness.memory_method() is None:
        pytest.skip("the resident-set high-water mark cannot be reset here")
    peak = _harness.peak_extra_bytes(lambda: np.ones(8_000_000))  # 64 MB, touched
    assert peak is not None
    assert 60e6 < peak < 200e6


# --- the round area is protocol's round ------------------------------------------------------


@pytest.mark.parametrize("compressed", [False, True], ids=["LAD", "Com-LAD"])
def test_round_matches_protocol(compressed: bool) -> None:
    rb = lad_round.RoundBench(3000, compressed=compressed, n=8, d=3, f=2)
    theta0 = rb.theta.copy()
    G = rb.model.subset_grads(theta0, rb.X, rb.y, rb.slices)
    spec = protocol.RoundSpec(n=8, d=3, seed=0)
    plan = protocol.plan_round(spec, 0)
    np.testing.assert_array_equal(plan.assignment, rb.code.assignment(0))
    Z = np.asarray(protocol.coding.encode(G, plan.assignment))
    base = comp.TopK(ratio=0.01) if compressed else None
    payloads = [
        protocol.encode_payload(
            Z[i], comp.ErrorFeedback(comp.TopK(ratio=0.01)) if compressed else None, 8 * 0 + i
        )
        for i in range(8)
    ]
    server = protocol.Server(
        8, rb.P, rb.theta.dtype, "trimmed_mean", f=2, compressor=base, lr=lad_round.LR
    )
    want = server.step(0, theta0, payloads)
    times = rb.round()
    assert set(times) == set(lad_round.PHASES)
    assert rb.payloads == payloads
    np.testing.assert_array_equal(rb.theta, want)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("nbytes", [0, 8, 64, 1000, 4096 + 24])
def test_copy_pass_copies_every_byte(stream: bool, nbytes: int) -> None:
    # The write floor must write exactly the bytes it reads, on the streaming-store path (every
    # output streamed when the threshold is 0) and the cached one, for any split over threads.
    rng = np.random.default_rng(nbytes)
    src = rng.integers(0, 256, size=nbytes, dtype=np.uint8)
    before = _core.stream_threshold(0 if stream else 1 << 40)
    try:
        for threads in (1, 2, 3):
            dst = np.zeros_like(src)
            _core.copy_pass(src, dst, threads=threads)
            assert np.array_equal(dst, src)
    finally:
        _core.stream_threshold(before)


def test_copy_pass_refuses_bad_buffers() -> None:
    buf = np.zeros(64, dtype=np.float64)
    with pytest.raises(ValueError, match="same size"):
        _core.copy_pass(buf, np.zeros(63, dtype=np.float64))
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.copy_pass(buf[::2], np.zeros(32, dtype=np.float64))
    with pytest.raises(ValueError, match="overlap"):
        _core.copy_pass(buf[:32], buf[16:48])
    raw = bytearray(80)
    with pytest.raises(ValueError, match="aligned"):
        _core.copy_pass(np.frombuffer(raw, np.uint8, 64, 1), np.zeros(64, dtype=np.uint8))
    ro = np.zeros(64, dtype=np.float64)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        _core.copy_pass(buf, ro)
    assert not buf.any()  # nothing was written by a refused call
