"""cyclad.experiment: grid expansion, the sweep engine and plotting, called as a library (the
command line over them is tested in test_cli.py)."""

from __future__ import annotations

import pytest

from cyclad import experiment, train

SMALL = {"rounds": 2, "n_devices": 6, "n_byzantine": 1, "d": 2}


def test_expand_grid_list_fields_span_axes_in_order() -> None:
    keys, combos = experiment.expand_grid({"rounds": 3, "d": [1, 2], "seed": [0, 1, 2]})
    assert keys == ["d", "seed"]
    assert len(combos) == 6
    assert [(c["d"], c["seed"]) for c in combos[:4]] == [(1, 0), (1, 1), (1, 2), (2, 0)]
    assert all(c["rounds"] == 3 for c in combos)


def test_expand_grid_variants_axis_and_labels() -> None:
    values = {
        "d": [1, 4],
        "variants": [
            {"compressor": "topk:0.1", "error_feedback": True, "label": "topk+ef"},
            {"compressor": "sign"},
        ],
    }
    keys, combos = experiment.expand_grid(values)
    assert keys == ["variant", "d"]
    assert [(c["variant"], c["d"]) for c in combos] == [
        ("topk+ef", 1),
        ("topk+ef", 4),
        ("compressor=sign", 1),
        ("compressor=sign", 4),
    ]
    assert combos[0]["error_feedback"] is True
    assert "label" not in combos[0]
    assert "variants" not in combos[0]
    assert experiment.label(combos[3], keys) == "variant=compressor=sign,d=4"
    assert experiment.label({}, []) == "run"


def test_expand_grid_rejects_variants_that_are_not_tables() -> None:
    with pytest.raises(ValueError, match=r"variants must be an array of tables"):
        experiment.expand_grid({"variants": ["topk"]})


def test_expand_grid_does_not_modify_its_input() -> None:
    values = {"d": [1, 2], "variants": [{"attack": "ipm"}]}
    experiment.expand_grid(values)
    assert values == {"d": [1, 2], "variants": [{"attack": "ipm"}]}


def test_markdown_table() -> None:
    rows = [{"d": 1, "runs": 2}, {"d": 4, "runs": 2}]
    assert experiment.markdown_table(rows) == "| d | runs |\n|---|---|\n| 1 | 2 |\n| 4 | 2 |\n"


def test_run_sweep_reports_progress_and_returns_the_summary(tmp_path) -> None:
    seen: list[tuple[int, int, str]] = []
    summary = experiment.run_sweep(
        {**SMALL, "attack": ["none", "ipm"]},
        tmp_path,
        jobs=1,
        progress=lambda done, total, label: seen.append((done, total, label)),
    )
    assert seen == [(1, 2, "attack=none"), (2, 2, "attack=ipm")]
    assert [r["attack"] for r in summary] == ["none", "ipm"]
    assert list(summary[0]) == ["attack", "runs", "final_accuracy", "final_loss", "uplink_MB"]
    assert (tmp_path / "summary.md").read_text() == experiment.markdown_table(summary)
    h = train.History.from_json(tmp_path / "runs" / "001" / "history.json")
    assert h.config["attack"] == "ipm"
    assert len(h) == 2


def test_run_sweep_validates_before_running(tmp_path) -> None:
    with pytest.raises(train.ConfigError) as info:
        experiment.run_sweep({**SMALL, "d": [2, 7]}, tmp_path / "s", jobs=1)
    assert info.value.field == "d"
    assert not (tmp_path / "s").exists()


def test_collect_histories_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file or directory"):
        experiment.collect_histories([tmp_path / "missing"])
    with pytest.raises(FileNotFoundError, match=r"no history\.json found"):
        experiment.collect_histories([tmp_path])


def test_write_run_and_plot(tmp_path) -> None:
    cfg = train.Config.from_dict(SMALL)
    experiment.write_run(train.run(cfg), cfg, tmp_path / "a")
    cfg2 = train.Config.from_dict({**SMALL, "d": 3})
    experiment.write_run(train.run(cfg2), cfg2, tmp_path / "b")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "config.toml",
        "history.csv",
        "history.json",
    ]
    assert train.Config.from_toml(tmp_path / "b" / "config.toml").d == 3
    assert experiment.collect_histories([tmp_path]) == [
        tmp_path / "a" / "history.json",
        tmp_path / "b" / "history.json",
    ]
    png = experiment.plot_histories([tmp_path], tmp_path / "out" / "p.png", title="t")
    assert png == tmp_path / "out" / "p.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _labelled_runs(tmp_path):
    from cyclad import train

    dirs = []
    for k, (variant, extra) in enumerate(
        [("LAD", {}), ("top-k", {"compressor": "topk:0.2", "error_feedback": "ef21"})]
    ):
        for d in (1, 3):
            cfg = train.Config(n_devices=6, n_byzantine=1, d=d, rounds=2, **extra)
            out = tmp_path / f"{k}-{d}"
            experiment.write_run(train.run(cfg), cfg, out)
            (out / "label.txt").write_text(variant + "\n")
            dirs.append(out)
    return dirs


def test_line_names_use_variant_labels_and_only_the_fields_they_do_not_explain(tmp_path):
    from cyclad import train

    dirs = _labelled_runs(tmp_path)
    files = experiment.collect_histories([str(d) for d in dirs])
    hists = [train.History.from_json(f) for f in files]
    names = experiment.line_names(hists, files)
    # compressor and error_feedback come with the label; d does not
    assert sorted(names) == ["LAD, d=1", "LAD, d=3", "top-k, d=1", "top-k, d=3"]


def test_plot_summary_of_final_accuracy_against_a_field(tmp_path):
    dirs = _labelled_runs(tmp_path)
    out = experiment.plot_summary([str(d) for d in dirs], tmp_path / "acc.png", "d")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="--x nosuch: not a config field"):
        experiment.plot_summary([str(d) for d in dirs], tmp_path / "x.png", "nosuch")
    with pytest.raises(TypeError, match="--x attack: needs a numeric field"):
        experiment.plot_summary([str(d) for d in dirs], tmp_path / "x.png", "attack")


def test_a_sweep_records_each_runs_variant_label(tmp_path):
    values = {
        **SMALL,
        "variants": [{"label": "plain"}, {"label": "topk", "compressor": "topk:0.2"}],
    }
    experiment.run_sweep(values, tmp_path / "s", jobs=1)
    labels = sorted(p.read_text().strip() for p in (tmp_path / "s" / "runs").glob("*/label.txt"))
    assert labels == ["plain", "topk"]


# --- sweep plots: panels and colours, read from the matplotlib figure ------------------------


def _fake_runs(tmp_path, points, *, seeds=(0,), labels=None):
    """history.json files (no training): one per point (a dict of config fields) and seed."""
    dirs = []
    for i, point in enumerate(points):
        for seed in seeds:
            cfg = train.Config.from_dict({**SMALL, "rounds": 4, "seed": seed, **point})
            acc = [0.1 * (i % 7) + 0.01 * r + 0.001 * seed for r in range(4)]
            hist = train.History(
                loss=[1.0, 0.8, 0.6, 0.5],
                accuracy=acc,
                bytes_up=[1000 * (1 + i)] * 4,
                bytes_down=[10] * 4,
                seconds=[0.1, 0.2, 0.3, 0.4],
                config=cfg.to_dict(),
            )
            out = tmp_path / f"{len(dirs):03d}"
            out.mkdir()
            hist.to_json(out / "history.json")
            if labels is not None:
                (out / "label.txt").write_text(labels[i] + "\n")
            dirs.append(out)
    return dirs


def _line_axes(fig):
    return [ax for ax in fig.axes if ax.get_lines()]


ATTACKS = ["sign_flip", "alie", "foe"]
DS = [1, 2, 4, 10, 20]


def test_a_grid_sweep_plots_one_panel_per_attack_coloured_by_d(tmp_path) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_hex

    _fake_runs(tmp_path, [{"d": d, "attack": a} for d in DS for a in ATTACKS])
    fig = experiment.history_figure([tmp_path])
    try:
        axes = _line_axes(fig)
        assert len(axes) == 2 * len(ATTACKS)  # accuracy vs round, accuracy vs uplink bytes
        titles = [ax.get_title() for ax in axes]
        for a in ATTACKS:
            assert sum(t.startswith(f"attack={a}:") for t in titles) == 2
        assert sum("vs round" in t for t in titles) == len(ATTACKS)
        assert sum(ax.get_xscale() == "log" for ax in axes) == len(ATTACKS)
        colour_of = {}
        for ax in axes:
            lines = ax.get_lines()
            assert [ln.get_label() for ln in lines] == [f"d={d}" for d in DS]
            hexes = [to_hex(ln.get_color()) for ln in lines]
            assert len(set(hexes)) == len(DS)  # one colour per d within a panel
            for d, h in zip(DS, hexes, strict=True):
                assert colour_of.setdefault(d, h) == h  # the same d, the same colour everywhere
        # the colours follow viridis in the order of d, and a colour bar names them
        viridis = plt.get_cmap("viridis")
        assert colour_of[1] == to_hex(viridis(0.0))
        assert colour_of[20] == to_hex(viridis(0.9))
        (cbar_ax,) = [ax for ax in fig.axes if ax.get_ylabel() == "d" and not ax.get_lines()]
        ticks = [t.get_text() for t in cbar_ax.get_yticklabels()]
        assert ticks == [str(d) for d in DS]
        assert not any(ax.get_legend() for ax in fig.axes)  # no legend over the curves
    finally:
        plt.close(fig)


def test_grid_sweep_pools_seeds_into_one_line_with_a_band(tmp_path) -> None:
    import matplotlib.pyplot as plt

    _fake_runs(tmp_path, [{"d": d, "attack": a} for d in (1, 3) for a in ATTACKS[:2]], seeds=(0, 1))
    fig = experiment.history_figure([tmp_path])
    try:
        axes = _line_axes(fig)
        assert len(axes) == 4
        for ax in axes:
            assert len(ax.get_lines()) == 2  # seeds pooled
            assert len(ax.collections) == 2  # a min-max band per line
    finally:
        plt.close(fig)


def test_a_one_field_sweep_is_one_panel_per_row(tmp_path) -> None:
    import matplotlib.pyplot as plt

    _fake_runs(tmp_path, [{"d": d} for d in DS])
    fig = experiment.history_figure([tmp_path], title="d only")
    try:
        axes = _line_axes(fig)
        assert len(axes) == 2
        assert all(len(ax.get_lines()) == len(DS) for ax in axes)
        assert fig.get_suptitle() == "d only"
    finally:
        plt.close(fig)


def test_variant_labels_span_panels(tmp_path) -> None:
    import matplotlib.pyplot as plt

    points = [{"d": d, "compressor": c} for c in (None, "topk:0.2") for d in (1, 2, 3)]
    labels = ["LAD"] * 3 + ["top-k"] * 3
    _fake_runs(tmp_path, points, labels=labels)
    fig = experiment.history_figure([tmp_path])
    try:
        titles = [ax.get_title() for ax in _line_axes(fig)]
        assert len(titles) == 4
        assert sum(t.startswith("variant=LAD:") for t in titles) == 2
        assert sum(t.startswith("variant=top-k:") for t in titles) == 2
    finally:
        plt.close(fig)


def test_runs_that_are_no_grid_get_distinct_colours_and_an_outside_legend(tmp_path) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_hex

    grid = [{"d": d, "attack": a} for d in DS for a in ATTACKS]
    _fake_runs(tmp_path, grid[:13])  # two grid points missing: not a grid
    fig = experiment.history_figure([tmp_path])
    try:
        axes = _line_axes(fig)
        assert len(axes) == 4  # accuracy and loss vs round and vs uplink bytes
        for ax in axes:
            styles = {(to_hex(ln.get_color()), ln.get_linestyle()) for ln in ax.get_lines()}
            assert len(styles) == 13
            assert ax.get_legend() is None
        (legend,) = fig.legends
        assert len(legend.get_texts()) == 13
    finally:
        plt.close(fig)
    many = tmp_path / "many"
    many.mkdir()
    _fake_runs(many, [{"d": 1 + i % 6, "lr": 0.1 + 0.01 * i} for i in range(24)])
    fig = experiment.history_figure([many])
    try:
        (ax, *_) = _line_axes(fig)
        styles = {(to_hex(ln.get_color()), ln.get_linestyle()) for ln in ax.get_lines()}
        assert len(styles) == 24  # tab20, then other line styles
    finally:
        plt.close(fig)


def test_sweep_layout_rules() -> None:
    coords = [{"attack": a, "d": d} for a in ATTACKS for d in DS]
    assert experiment.sweep_layout(["attack", "d"], coords) == ("d", ["attack"])
    assert experiment.sweep_layout(["attack", "d"], coords[:-1]) is None
    assert experiment.sweep_layout([], []) is None
    cat = [{"attack": a, "aggregator": g} for a in ATTACKS for g in ("median", "krum")]
    assert experiment.sweep_layout(["attack", "aggregator"], cat) == ("aggregator", ["attack"])
