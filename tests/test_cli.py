"""The cyclad command line, end to end (short runs)."""

from __future__ import annotations

import gzip
import json
import os
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

from cyclad import cli, train

QUICK = ["--rounds", "3", "--n_devices", "6", "--n_byzantine", "1", "--d", "2"]


def test_parse_overrides_toml_literals() -> None:
    out = train.parse_overrides(
        [
            "--d",
            "4",
            "--attack",
            "alie",
            "--lr=0.5",
            "--compressor",
            '"topk:0.1"',
            "--aggregator_params.tau",
            "1.5",
            "--error-feedback",
            "true",
            "--lr",
            "-0.25",
        ]
    )
    assert out == {
        "d": 4,
        "attack": "alie",
        "lr": -0.25,
        "compressor": "topk:0.1",
        "aggregator_params": {"tau": 1.5},
        "error_feedback": True,
    }
    with pytest.raises(ValueError, match="missing value for --d"):
        train.parse_overrides(["--d"])
    with pytest.raises(ValueError, match="expected --field value"):
        train.parse_overrides(["d", "3"])


def test_run_writes_three_files(tmp_path, capsys) -> None:
    out = tmp_path / "r"
    code = cli.main(["run", *QUICK, "--attack", "sign_flip", "--out", str(out), "--quiet"])
    assert code == 0
    for name in ("history.csv", "history.json", "config.toml"):
        assert (out / name).is_file()
    h = train.History.from_json(out / "history.json")
    assert len(h) == 3
    cfg = train.Config.from_toml(out / "config.toml")
    assert (cfg.d, cfg.attack, cfg.rounds) == (2, "sign_flip", 3)
    text = capsys.readouterr().out
    assert "final test accuracy" in text


def test_run_from_toml_with_flag_override(tmp_path) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text('rounds = 2\nn_devices = 6\nn_byzantine = 1\nd = 6\nattack = "ipm"\n')
    out = tmp_path / "r"
    assert cli.main(["run", str(conf), "--d", "3", "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "history.json").read_text())["config"]["d"] == 3


@pytest.mark.parametrize(
    ("flags", "field"),
    [
        (["--d", "9"], "d"),
        (["--lr", "-0.5"], "lr"),
        (["--learning_rate", "1"], "learning_rate"),
        (["--compressor", "topk:k=99999"], "compressor"),
        (["--aggregator", "vote"], "aggregator"),
    ],
)
def test_run_config_errors_exit_nonzero(tmp_path, capsys, flags, field) -> None:
    code = cli.main(["run", *QUICK, *flags, "--out", str(tmp_path / "x"), "--quiet"])
    assert code == cli.EXIT_CONFIG
    assert f"'{field}'" in capsys.readouterr().err
    assert not (tmp_path / "x" / "history.json").exists()


def test_run_ctrl_c_keeps_history_and_exits_130(tmp_path, monkeypatch) -> None:
    real = train.run

    def interrupted_run(cfg, progress=False, **kw):
        def stop(t, h):
            if t == 1:
                raise KeyboardInterrupt

        return real(cfg, progress, callback=stop)

    monkeypatch.setattr(train, "run", interrupted_run)
    out = tmp_path / "r"
    code = cli.main(["run", *QUICK, "--rounds", "10", "--out", str(out), "--quiet"])
    assert code == 130
    h = train.History.from_json(out / "history.json")
    assert len(h) == 2
    assert h.interrupted
    assert (out / "history.csv").read_text().count("\n") == 3


def test_sweep_over_two_values_and_plot(tmp_path, capsys) -> None:
    grid = tmp_path / "g.toml"
    grid.write_text(
        "rounds = 3\nn_devices = 6\nn_byzantine = 1\nd = [1, 6]\n"
        'attack = "sign_flip"\nseed = [0, 1]\n'
    )
    out = tmp_path / "s"
    assert cli.main(["sweep", str(grid), "--out", str(out), "--jobs", "1"]) == 0
    summary = (out / "summary.csv").read_text().splitlines()
    assert summary[0].startswith("d,runs,final_accuracy,final_loss")
    assert len(summary) == 3  # header + d=1 + d=6, seeds pooled
    assert "±" in summary[1]
    assert len((out / "results.csv").read_text().splitlines()) == 5
    assert (out / "summary.md").read_text().startswith("| d |")
    assert len(list(out.glob("runs/*/history.json"))) == 4
    png = tmp_path / "p.png"
    assert cli.main(["plot", str(out), "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()


def test_sweep_in_parallel_processes(tmp_path) -> None:
    grid = tmp_path / "g.toml"
    grid.write_text(
        "rounds = 2\nn_devices = 6\nn_byzantine = 1\nd = 2\n"
        'aggregator = ["median", "trimmed_mean"]\n'
    )
    out = tmp_path / "s"
    assert cli.main(["sweep", str(grid), "--out", str(out), "--jobs", "2"]) == 0
    lines = (out / "summary.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in lines[1:]] == ["median", "trimmed_mean"]


def test_sweep_validates_every_point_first(tmp_path, capsys) -> None:
    grid = tmp_path / "g.toml"
    grid.write_text("rounds = 2\nn_devices = 6\nn_byzantine = 1\nd = [2, 7]\n")
    assert cli.main(["sweep", str(grid), "--out", str(tmp_path / "s")]) == cli.EXIT_CONFIG
    assert "'d'" in capsys.readouterr().err
    assert not (tmp_path / "s" / "runs").exists()


def test_plot_of_a_variants_sweep_uses_the_labels_and_x_d(tmp_path, capsys, monkeypatch):
    from cyclad import experiment

    grid = tmp_path / "g.toml"
    grid.write_text(
        'rounds = 3\nn_devices = 6\nn_byzantine = 1\nd = [1, 6]\nattack = "sign_flip"\n'
        '[[variants]]\nlabel = "plain LAD"\n'
        '[[variants]]\nlabel = "top-k EF"\ncompressor = "topk:0.2"\nerror_feedback = true\n'
    )
    out = tmp_path / "s"
    assert cli.main(["sweep", str(grid), "--out", str(out), "--jobs", "1"]) == 0
    rows = [r.split(",") for r in (out / "summary.csv").read_text().splitlines()[1:]]
    expected = {(v, float(d)): float(acc) for v, d, _, acc, *_ in rows}
    assert {v for v, _ in expected} == {"plain LAD", "top-k EF"}

    figures = []
    for name in ("summary_figure", "history_figure"):
        real = getattr(experiment, name)

        def record(*a, _real=real, **k):
            figures.append(_real(*a, **k))
            return figures[-1]

        monkeypatch.setattr(experiment, name, record)
    png = tmp_path / "acc_vs_d.png"
    assert cli.main(["plot", str(out), "--x", "d", "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (ax,) = figures[0].axes
    assert ax.get_xlabel() == "d"
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert sorted(lines) == ["plain LAD", "top-k EF"]
    for label, ln in lines.items():
        assert list(ln.get_xdata()) == [1.0, 6.0]
        for d, acc in zip(ln.get_xdata(), ln.get_ydata(), strict=True):
            assert acc == pytest.approx(expected[label, d], abs=5e-5)

    assert cli.main(["plot", str(out), "--out", str(tmp_path / "h.png")]) == 0
    titles = [a.get_title() for a in figures[1].axes if a.get_lines()]
    assert sum(t.startswith("variant=plain LAD:") for t in titles) == 2
    assert sum(t.startswith("variant=top-k EF:") for t in titles) == 2
    capsys.readouterr()


def test_plot_errors(tmp_path, capsys, monkeypatch) -> None:
    assert cli.main(["plot", str(tmp_path / "missing"), "--out", str(tmp_path / "p.png")]) == 1
    assert "no such file" in capsys.readouterr().err
    import builtins

    real_import = builtins.__import__

    def no_mpl(name, *a, **k):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_mpl)
    assert cli.main(["plot", str(tmp_path), "--out", str(tmp_path / "p.png")]) == 1
    assert "pip install 'cyclad[plot]'" in capsys.readouterr().err


def test_demo_runs_quickly(capsys) -> None:
    assert cli.main(["demo", "--rounds", "5"]) == 0
    out = capsys.readouterr().out
    assert "sign_flip" in out
    assert "worst-case accuracy" in out
    rows = [line.split() for line in out.splitlines() if line.strip()[:2] in ("1 ", "20")]
    assert [r[0] for r in rows] == ["1", "20"]
    assert all(len(r) == 5 for r in rows)


# --- data and config files -------------------------------------------------------------------


def _mnist_dir(root, truncate: str | None = None):
    root.mkdir()
    for part, m in (("train", 30), ("t10k", 10)):
        for kind, shape in (("images-idx3", (m, 2, 2)), ("labels-idx1", (m,))):
            raw = bytes([0, 0, 8, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)
            raw += bytes(int(np.prod(shape)))
            name = f"{part}-{kind}-ubyte.gz"
            body = gzip.compress(raw)
            if name == truncate:
                body = body[: len(body) // 2]
            (root / name).write_bytes(body)
    return root


@pytest.mark.parametrize(
    ("setup", "needle"),
    [
        ("none", "needs data_path"),
        ("missing", "/no/such/dir is not a directory"),
        ("empty", "no IDX file train-images-idx3-ubyte"),
        ("truncated", "train-labels-idx1-ubyte.gz"),
    ],
)
def test_run_mnist_file_errors_are_config_errors(tmp_path, capsys, setup, needle) -> None:
    flags = ["--dataset", "mnist"]
    if setup == "missing":
        flags += ["--data_path", "/no/such/dir"]
    elif setup == "empty":
        (tmp_path / "m").mkdir()
        flags += ["--data_path", str(tmp_path / "m")]
    elif setup == "truncated":
        root = _mnist_dir(tmp_path / "m", truncate="train-labels-idx1-ubyte.gz")
        flags += ["--data_path", str(root)]
    code = cli.main(["run", *QUICK, *flags, "--out", str(tmp_path / "x"), "--quiet"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_CONFIG
    assert "config field 'data_path'" in err
    assert needle in err
    assert not (tmp_path / "x").exists()


def test_run_mnist_from_a_good_folder(tmp_path, capsys) -> None:
    root = _mnist_dir(tmp_path / "m")
    flags = ["--dataset", "mnist", "--data_path", str(root), "--out", str(tmp_path / "x")]
    assert cli.main(["run", *QUICK, *flags, "--quiet"]) == 0
    capsys.readouterr()


def test_invalid_toml_names_the_file(tmp_path, capsys) -> None:
    conf = tmp_path / "bad.toml"
    conf.write_text("rounds = = 3\n")
    for command in ("run", "sweep"):
        assert cli.main([command, str(conf), "--out", str(tmp_path / "x")]) == cli.EXIT_CONFIG
        err = capsys.readouterr().err
        assert f"{conf}: invalid TOML" in err


def test_out_refuses_a_non_empty_folder_unless_overwrite(tmp_path, capsys) -> None:
    out = tmp_path / "r"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert cli.main(["run", *QUICK, "--out", str(out), "--quiet"]) == cli.EXIT_CONFIG
    assert "pass --overwrite" in capsys.readouterr().err
    assert not (out / "history.json").exists()
    grid = tmp_path / "g.toml"
    grid.write_text("rounds = 2\nn_devices = 6\nn_byzantine = 1\nd = [1, 2]\n")
    assert cli.main(["sweep", str(grid), "--out", str(out), "--jobs", "1"]) == cli.EXIT_CONFIG
    assert "pass --overwrite" in capsys.readouterr().err
    assert not (out / "summary.csv").exists()
    assert cli.main(["run", *QUICK, "--out", str(out), "--quiet", "--overwrite"]) == 0
    assert (out / "history.json").is_file()
    assert (out / "keep.txt").read_text() == "mine"
    capsys.readouterr()


@pytest.mark.parametrize("argv", [["run", "--help"], ["run", *QUICK, "--quiet"]])
def test_closed_stdout_pipe_is_not_a_traceback(tmp_path, argv) -> None:
    if argv[0] == "run" and "--help" not in argv:
        argv = [*argv, "--out", str(tmp_path / "r")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "cyclad.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    proc.stdout.close()  # the reader is gone before the first line, as with | head -0
    _, err = proc.communicate(timeout=120)
    assert b"Traceback" not in err, err.decode()
    assert b"BrokenPipeError" not in err
    assert proc.returncode == 0
    if "--help" not in argv:
        assert (tmp_path / "r" / "history.json").is_file()


# --- aggregator parameters -------------------------------------------------------------------


def test_misspelled_aggregator_parameter_is_a_config_error(tmp_path, capsys) -> None:
    flags = ["--aggregator", "multi_krum", "--aggregator_params.M", "5"]
    code = cli.main(["run", *QUICK, *flags, "--out", str(tmp_path / "x"), "--quiet"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_CONFIG
    assert "config field 'aggregator_params'" in err
    assert "['M']" in err
    assert "valid parameters: ['f', 'm', 'neighbors', 'weights']" in err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("flags", "field", "needle"),
    [
        (["--compressor", "topk:zz=3"], "compressor", "valid parameters: ['k', 'ratio', "),
        (["--compressor", "randk:0.1,shard"], "compressor", "['k', 'ratio', 'shared', "),
        (["--compressor", "qsgd:4,lvls=2"], "compressor", "valid parameters: ['levels', "),
        (
            ["--attack", "alie", "--attack_params.zz", "1"],
            "attack",
            "parameters ['z', 'sign', 'ddof']",
        ),
        (
            ["--dataset", "synthetic", "--dataset_params.zz", "1"],
            "dataset_params",
            "valid parameters: ['n_samples', 'n_features', 'n_classes', 'separation']",
        ),
        (["--dataset_params.n_samples", "50"], "dataset_params", "valid parameters: []"),
        (
            ["--dataset", "synthetic", "--dataset_params.n_samples", "-5"],
            "dataset_params",
            "n_samples must be an integer >= 2, got -5",
        ),
    ],
)
def test_unknown_parameters_are_config_errors_everywhere(tmp_path, capsys, flags, field, needle):
    code = cli.main(["run", *QUICK, *flags, "--out", str(tmp_path / "x"), "--quiet"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_CONFIG, err
    assert f"config field '{field}'" in err
    assert needle in err
    assert "Traceback" not in err
    assert not (tmp_path / "x" / "history.json").exists()


def test_dataset_params_reach_the_synthetic_loader(tmp_path, capsys) -> None:
    flags = ["--dataset", "synthetic", "--dataset_params.n_samples", "124"]
    out = tmp_path / "x"
    assert cli.main(["run", *QUICK, *flags, "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    cfg = train.Config.from_toml(out / "config.toml")
    assert cfg.dataset_params == {"n_samples": 124}
    hist = train.History.from_json(out / "history.json")
    # 31 test samples (test_fraction 0.25 of 124): every accuracy is a multiple of 1/31, which
    # no accuracy strictly between 0 and 1 on the default 500 test samples is
    assert all(abs(a * 31 - round(a * 31)) < 1e-9 for a in hist.accuracy)
    assert any(0 < a < 1 for a in hist.accuracy)


def test_a_parameter_no_component_takes_is_refused_by_a_sweep(tmp_path, capsys) -> None:
    grid = tmp_path / "g.toml"
    grid.write_text(
        'rounds = 2\nn_devices = 6\nn_byzantine = 1\naggregator = "trimmed_mean"\n'
        'pre_aggregation = ["nnm", "bucketing"]\n[aggregator_params]\ns = 2\n'
    )
    assert cli.main(["sweep", str(grid), "--out", str(tmp_path / "s")]) == cli.EXIT_CONFIG
    err = capsys.readouterr().err
    assert "'aggregator_params'" in err
    assert "'nnm+trimmed_mean'" in err


def test_make_rule_rejects_unknown_parameters_and_keeps_defaults() -> None:
    from cyclad import ArgumentError, protocol

    with pytest.raises(
        ArgumentError, match=r"valid parameters: \['f', 'm', 'neighbors', 'weights'\]"
    ) as info:
        protocol.make_rule("multi_krum", 1, {"M": 5})
    assert info.value.argument == "params"
    X = np.arange(24.0).reshape(6, 4)
    # f (and bucketing's seed) still go only to the components that take them
    np.testing.assert_array_equal(protocol.make_rule("mean", 1)(X), X.mean(axis=0))
    assert protocol.make_rule("bucketing+trimmed_mean", 1, {"s": 2})(X).shape == (4,)


# --- Ctrl-C on a sweep -----------------------------------------------------------------------


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("presses", [1, 2], ids=["ctrl-c", "ctrl-c-twice"])
def test_sweep_ctrl_c_stops_reaps_writes_and_exits_130(tmp_path, presses) -> None:
    grid = tmp_path / "g.toml"
    # 12 runs, 2 at a time: the first finishes quickly, the others are long
    grid.write_text(
        "n_devices = 6\nn_byzantine = 1\nd = 2\nrounds = [5, 20000]\nseed = [0, 1, 2, 3, 4, 5]\n"
    )
    out = tmp_path / "s"
    argv = [sys.executable, "-m", "cyclad.cli", "sweep", str(grid), "--out", str(out)]
    proc = subprocess.Popen(
        [*argv, "--jobs", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    line = ""
    while "[2/12]" not in line and time.monotonic() < deadline:
        line = proc.stdout.readline()
    if "[2/12]" not in line:
        proc.kill()
        pytest.fail(f"the sweep did not get going: {proc.communicate()[1]}")
    time.sleep(0.5)  # long runs are under way
    for _ in range(presses):  # what Ctrl-C does: the whole group gets SIGINT
        os.killpg(proc.pid, signal.SIGINT)
    # A sweep that waited for its running or queued jobs would outlive the timeout (a long run
    # takes minutes); no wall-clock bound beyond that, which a busy machine could break.
    rest, err = proc.communicate(timeout=30)
    assert proc.returncode == cli.EXIT_INTERRUPTED, err
    assert "Traceback" not in err
    assert "interrupted after" in err
    group_deadline = time.monotonic() + 5
    while _group_alive(proc.pid) and time.monotonic() < group_deadline:
        time.sleep(0.05)
    assert not _group_alive(proc.pid), "worker processes left behind"
    done = (out / "results.csv").read_text().splitlines()[1:]
    assert 2 <= len(done) < 12
    assert all(row.startswith("5,") for row in done)  # only short runs could finish
    assert (out / "summary.md").read_text().startswith("| rounds |")
    assert len((out / "summary.csv").read_text().splitlines()) == 2
    assert "| rounds |" in rest


# --- help ------------------------------------------------------------------------------------


def test_help_texts_list_options_choices_and_fields(capsys) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    top = capsys.readouterr().out
    assert "``" not in top
    assert "fields" in top
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    run_help = capsys.readouterr().out
    assert "--FIELD VALUE" in run_help
    assert "--overwrite" in run_help
    for name in train.Config.fields():
        assert f"\n  {name} " in run_help, name
    assert "Redundancy: subsets per device" in run_help
    with pytest.raises(SystemExit):
        cli.main(["bench", "--help"])
    bench_help = capsys.readouterr().out
    for area in ("aggregators", "coding", "compression", "round", "all"):
        assert f"\n  {area} " in bench_help, area
    assert "--quick" in bench_help
    assert cli.main(["fields"]) == 0
    rows = capsys.readouterr().out.splitlines()[2:]
    assert len(rows) == len(train.Config.fields())
    blas = next(r for r in rows if r.split()[0] == "blas_threads")
    assert blas.split()[1:5] == ["int", "or", "None", "1"]
    assert all(len(r.split()) >= 4 for r in rows)  # every field has a meaning
    meaning = {r.split()[0]: r for r in rows}
    assert meaning["threads"].endswith("None = all cores")
    assert meaning["f"].endswith("None uses n_byzantine")
    assert '"topk:0.01"' in meaning["compressor"]
    assert meaning["attack"].endswith('"ipm:0.5", ...')
