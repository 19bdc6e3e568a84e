"""The cyclad command line, end to end (short runs)."""

from __future__ import annotations

import json

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
