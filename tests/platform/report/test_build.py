"""Ablation report: hand-checked mean/std/n per group, status handling, grid grouping, best
hyperparameters, the files written (CSV parsed back, PNGs opened, HTML self-contained) and the
edge cases (no records, no finished run, a run without history)."""

from __future__ import annotations

import base64
import csv
import math
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from leoclr_platform import report as R
from leoclr_platform.report import RunRecord, build_report

REPO = Path(__file__).resolve().parents[3]
SEARCHED = ["attraction_strategy", "temperature", "key_momentum", "queue_size"]


def run(trial: str, strategy: str, value: float | None, status: str = "FINISHED", *,
        epochs: int = 4, seed: int = 0, history: bool = True, **params) -> RunRecord:
    """A run whose val_knn_top1 climbs linearly to `value` at its last epoch."""
    p = {"attraction_strategy": strategy, "mechanism": "momentum", "temperature": 0.2,
         "key_momentum": 0.99, "queue_size": 4096, "seed": seed}
    p.update(params)
    metrics = {} if value is None else {"val_knn_top1": float(value), "loss": 10.0 - value / 10}
    hist = {}
    if history and value is not None:
        hist = {"val_knn_top1": [(e, value * e / epochs) for e in range(1, epochs + 1)],
                "loss": [(e, 10.0 - value * e / epochs / 10) for e in range(1, epochs + 1)]}
    return RunRecord(run_id=f"run-{trial}", trial_id=trial, status=status, params=p,
                     metrics=metrics, history=hist, seed=seed, epochs=epochs)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def by_strategy(rows):
    return {r["attraction_strategy"]: r for r in rows}


def rows_of(records, **kw):
    """The ablation rows alone (no files, no plots: fast)."""
    kw.setdefault("searched", SEARCHED)
    return R.ablation_rows(records, **kw)[1]


def make_search_records():
    return [
        run("t1", "leoclr", 40.0, temperature=0.1),
        run("t2", "leoclr", 47.0, temperature=0.3, key_momentum=0.996, queue_size=8192),
        run("t3", "leoclr", 42.0, temperature=0.2),
        run("t4", "leoclr", 60.0, "KILLED", epochs=2),     # stopped early: higher, but not counted
        run("t5", "leoclr", None, "FAILED", epochs=1),
        run("t6", "moco_v2", 30.0),
        run("t7", "moco_v2", 36.0, temperature=0.07),
        run("t8", "attract_all", 35.0),                     # n = 1
        run("t9", "leoclr_random_original", 20.0, "KILLED", epochs=1),  # no finished run
    ]


@pytest.fixture
def search_records():
    return make_search_records()


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("search") / "report"


@pytest.fixture(scope="module")
def search_report(report_dir):
    """Built once for the module (rendering the PNGs is the slow part); tests only read it."""
    return build_report(make_search_records(), metric="val_knn_top1", mode="max", searched=SEARCHED,
                        grid=False, title="demo sweep", out_dir=report_dir, max_epochs=4)


# ---------------------------------------------------------------------------------------------
# the numbers

def test_group_mean_std_n_hand_computed(search_report):
    rows = by_strategy(search_report.rows)
    leo = rows["leoclr"]
    # 40, 42, 47: mean 43, deviations -3, -1, 4 -> sum of squares 26 / (3 - 1) = 13
    assert leo["n"] == 3
    assert leo["mean"] == pytest.approx(43.0)
    assert leo["std"] == pytest.approx(math.sqrt(13))
    assert leo["mean_std"] == "43.00 ± 3.61"
    assert leo["best"] == 47.0 and leo["best_trial"] == "t2"
    # the KILLED run (60, better than all) and the FAILED one are counted, never averaged
    assert (leo["stopped"], leo["failed"]) == (1, 1)
    moco = rows["moco_v2"]
    assert (moco["n"], moco["mean"]) == (2, pytest.approx(33.0))
    assert moco["std"] == pytest.approx(math.sqrt(18))  # 30, 36: (9 + 9) / 1
    assert (moco["stopped"], moco["failed"]) == (0, 0)


def test_single_run_has_no_std_and_empty_group_is_kept(search_report):
    rows = by_strategy(search_report.rows)
    one = rows["attract_all"]
    assert one["n"] == 1 and one["mean"] == 35.0 and one["std"] is None
    assert one["mean_std"] == "35.00"
    empty = rows["leoclr_random_original"]
    assert empty["n"] == 0 and empty["mean"] is None and empty["std"] is None
    assert empty["best"] is None and empty["best_trial"] == "" and empty["stopped"] == 1


def test_rows_sorted_best_mean_first_and_min_mode_reverses(search_records):
    rows = rows_of(search_records)
    assert [r["attraction_strategy"] for r in rows] == [
        "leoclr", "attract_all", "moco_v2", "leoclr_random_original"]  # 43, 35, 33, then n = 0
    rows = rows_of(search_records, metric="val_knn_top1", mode="min")
    assert [r["attraction_strategy"] for r in rows] == [
        "moco_v2", "attract_all", "leoclr", "leoclr_random_original"]  # n = 0 stays last
    leo = by_strategy(rows)["leoclr"]
    assert leo["best"] == 40.0 and leo["best_trial"] == "t1"  # min mode: the lowest is best


def test_min_mode_on_loss_orders_ascending():
    recs = [run("a", "leoclr", 50.0), run("b", "moco_v2", 20.0), run("c", "attract_all", 35.0)]
    # loss = 10 - value / 10: leoclr 5.0, attract_all 6.5, moco_v2 8.0
    rows = rows_of(recs, metric="loss", mode="min")
    assert [r["attraction_strategy"] for r in rows] == ["leoclr", "attract_all", "moco_v2"]
    assert rows[0]["mean"] == pytest.approx(5.0)


def test_best_hyperparameters_come_from_the_best_run(search_report):
    leo = by_strategy(search_report.rows)["leoclr"]
    # t2 (47) has temperature 0.3, key_momentum 0.996, queue 8192; strategy and seed are not repeated
    assert leo["best_params"] == "temperature=0.3, key_momentum=0.996, queue_size=8192"
    moco = by_strategy(search_report.rows)["moco_v2"]
    assert moco["best_trial"] == "t7" and "temperature=0.07" in moco["best_params"]


def test_value_formatting():
    assert R.format_value("temperature", 0.123456) == "0.1235"
    assert R.format_value("lr", 3.0e-4) == "0.0003"
    assert R.format_value("key_momentum", 0.996) == "0.996"
    assert R.format_value("key_momentum", 0.99) == "0.99"
    assert R.format_value("key_momentum", 0.9987654321) == "0.998765"  # 4 digits of 1 - m (0.001235)
    assert R.format_value("queue_size", 65536) == "65536"
    assert R.format_value("enqueue", "first") == "first"
    assert R.format_value("symmetric", True) == "true"
    assert R.format_params({"a": 0.5, "b": None, "c": 2}, ["a", "b", "c"]) == "a=0.5, c=2"


def test_finished_short_of_max_epochs_counts_as_stopped():
    recs = [run("a", "leoclr", 40.0, epochs=10), run("b", "leoclr", 44.0, epochs=10),
            run("c", "leoclr", 70.0, epochs=3)]  # FINISHED in Tune's eyes, but ASHA stopped it
    row = rows_of(recs, max_epochs=10)[0]
    assert (row["n"], row["mean"], row["stopped"]) == (2, pytest.approx(42.0), 1)
    assert rows_of(recs)[0]["n"] == 3  # no max_epochs given: status is taken as recorded


# ---------------------------------------------------------------------------------------------
# grouping

def test_grid_two_params_two_seeds_gives_four_cells_of_two(tmp_path):
    values = {("leoclr", 4096): (50.0, 52.0), ("leoclr", 16384): (55.0, 59.0),
              ("moco_v2", 4096): (45.0, 41.0), ("moco_v2", 16384): (48.0, 48.0)}
    recs = [run(f"{s}-{q}-{seed}", s, v[seed], seed=seed, queue_size=q)
            for seed in (0, 1) for (s, q), v in values.items()]
    rep = build_report(recs, searched=["attraction_strategy", "queue_size", "seed"], grid=True,
                       title="grid", out_dir=tmp_path)
    assert rep.group_columns == ["attraction_strategy", "queue_size"]  # seed is not a group key
    assert len(rep.rows) == 4 and all(r["n"] == 2 for r in rep.rows)
    cells = {(r["attraction_strategy"], r["queue_size"]): r for r in rep.rows}
    assert cells[("leoclr", 16384)]["mean"] == pytest.approx(57.0)
    assert cells[("leoclr", 16384)]["std"] == pytest.approx(math.sqrt(8))
    assert cells[("moco_v2", 16384)]["std"] == pytest.approx(0.0)
    assert cells[("moco_v2", 4096)]["best_trial"] == "moco_v2-4096-0"
    assert [(r["attraction_strategy"], r["queue_size"]) for r in rep.rows] == [
        ("leoclr", 16384), ("leoclr", 4096), ("moco_v2", 16384), ("moco_v2", 4096)]
    # every grid param is a group column, so nothing is left for "best hyperparameters"
    assert all(r["best_params"] == "" for r in rep.rows)


def test_search_mode_groups_by_strategy_only(search_report):
    assert search_report.group_columns == ["attraction_strategy"]
    assert len(search_report.rows) == 4


def test_mechanism_is_a_group_key_when_it_varies():
    recs = [run("a", "leoclr", 40.0), run("b", "leoclr", 50.0, mechanism="end_to_end"),
            run("c", "leoclr", 44.0)]
    cols, rows = R.ablation_rows(recs, searched=SEARCHED)
    assert cols == ["attraction_strategy", "mechanism"]
    assert {(r["mechanism"], r["n"]) for r in rows} == {("momentum", 2), ("end_to_end", 1)}
    assert R.ablation_rows(recs[:1] + recs[2:], searched=SEARCHED)[0] == ["attraction_strategy"]


# ---------------------------------------------------------------------------------------------
# files

def test_files_written(search_report, report_dir):
    assert set(search_report.files) == {"ablation.md", "ablation.html", "ablation.csv", "runs.csv",
                                        "learning_curves.png", "objective_vs_params.png"}
    for path in search_report.files.values():
        assert path.parent == report_dir and path.is_file() and path.stat().st_size > 0


def test_ablation_csv_parses_back_to_the_table(search_report):
    rows = read_csv(search_report.files["ablation.csv"])
    assert list(rows[0]) == search_report.columns + ["ci_low", "ci_high", "boot_low", "boot_high", "interval"]
    assert search_report.columns == ["attraction_strategy"] + R.TABLE_STATS
    assert [r["attraction_strategy"] for r in rows] == [
        "leoclr", "attract_all", "moco_v2", "leoclr_random_original"]
    leo = rows[0]
    assert (int(leo["n"]), float(leo["mean"]), float(leo["std"])) == (3, 43.0, pytest.approx(math.sqrt(13)))
    assert (leo["best_trial"], int(leo["stopped"]), int(leo["failed"])) == ("t2", 1, 1)
    assert rows[1]["std"] == ""                        # n = 1
    assert rows[3]["n"] == "0" and rows[3]["mean"] == ""
    # the t-interval of 40, 42, 47: 43 +- t(0.975, 2) * sqrt(13) / sqrt(3), t = 4.302653
    half = 4.302652729911275 * math.sqrt(13) / math.sqrt(3)
    assert float(leo["ci_low"]) == pytest.approx(43 - half) and float(leo["ci_high"]) == pytest.approx(43 + half)
    assert leo["interval"] == "t" and leo["boot_low"] == ""      # n = 3 < 5: no bootstrap


def test_markdown_has_title_summary_exact_rows_and_images(search_report):
    md = search_report.files["ablation.md"].read_text(encoding="utf-8")
    assert md == search_report.markdown
    lines = md.splitlines()
    assert lines[0] == "# demo sweep"
    summary = next(l for l in lines if l.startswith("Compared"))
    assert "`val_knn_top1`" in summary and "higher is better" in summary and "9 runs" in summary
    assert "6 finished" in summary and "2 stopped early" in summary and "1 failed" in summary
    first = lines.index(next(l for l in lines if l.startswith("|")))
    table = []
    for l in lines[first:]:
        if not l.startswith("|"):
            break
        table.append(l)
    assert len(table) == 2 + 4                          # header, rule, one line per group
    body = [[c.strip() for c in l.strip("|").split("|")] for l in table[2:]]
    assert [b[0] for b in body] == ["leoclr", "attract_all", "moco_v2", "leoclr_random_original"]
    assert body[0][1:5] == ["3", "43.00", "3.61", "43.00 ± 3.61"]
    assert body[0][5] == f"[{43 - 4.302653 * math.sqrt(13 / 3):.2f}, {43 + 4.302653 * math.sqrt(13 / 3):.2f}]"
    assert body[0][6] == "-"                            # no bootstrap at n = 3
    assert body[1][3] == "-"                            # n = 1: no std
    assert body[3][1:5] == ["0", "-", "-", "-"]
    assert "![learning curves](learning_curves.png)" in md
    assert "(objective_vs_params.png)" in md


def test_runs_csv_one_row_per_run(search_report):
    search_records = make_search_records()
    rows = read_csv(search_report.files["runs.csv"])
    assert len(rows) == len(search_records)
    assert sorted(r["trial_id"] for r in rows) == sorted(r.trial_id for r in search_records)
    for col in ("trial_id", "status", "attraction_strategy", "epochs", "val_knn_top1", "temperature",
                "key_momentum", "queue_size"):
        assert col in rows[0]
    byid = {r["trial_id"]: r for r in rows}
    assert byid["t4"]["status"] == "KILLED" and byid["t4"]["epochs"] == "2"
    assert float(byid["t4"]["val_knn_top1"]) == 60.0
    assert byid["t5"]["status"] == "FAILED" and byid["t5"]["val_knn_top1"] == ""
    assert float(byid["t2"]["key_momentum"]) == 0.996


def test_pngs_are_images_and_html_embeds_them(search_report):
    for name in ("learning_curves.png", "objective_vs_params.png"):
        with Image.open(search_report.files[name]) as im:
            im.verify()
        with Image.open(search_report.files[name]) as im:
            assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100
    page = search_report.files["ablation.html"].read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 2
    assert ".png\"" not in page                          # no link to a file beside it
    first = page.split("data:image/png;base64,")[1].split('"')[0]
    assert base64.b64decode(first) == search_report.files["learning_curves.png"].read_bytes()
    first_table = page.split("<table>")[1].split("</table>")[0]
    assert first_table.count("<tr>") == 1 + 4 and "<td class=\"num\">43.00 ± 3.61</td>" in page


def test_report_is_deterministic(search_report, tmp_path):
    again = build_report(make_search_records(), metric="val_knn_top1", mode="max", searched=SEARCHED,
                         grid=False, title="demo sweep", out_dir=tmp_path, max_epochs=4)
    for name, path in search_report.files.items():
        assert again.files[name].read_bytes() == path.read_bytes(), name


# ---------------------------------------------------------------------------------------------
# plots

def run_lines(ax):
    return [line for line in ax.get_lines() if str(line.get_gid()).startswith("run:")]


def test_learning_curves_one_line_per_run_styled_by_status(search_records):
    fig = R.plot_learning_curves(search_records, "val_knn_top1")
    ax = fig.axes[0]
    lines = run_lines(ax)
    with_history = [r for r in search_records if r.history]
    assert len(lines) == len(with_history) == 8         # the FAILED run has no history
    assert [line.get_gid() for line in lines] == [f"run:{r.trial_id}" for r in with_history]
    styles = {r.trial_id: line.get_linestyle() for r, line in zip(with_history, lines)}
    assert styles["t4"] == "--" and styles["t9"] == "--" and styles["t1"] == "-"
    # stopped runs carry a marker at every point, so a run stopped after one epoch is visible
    markers = {r.trial_id: line.get_marker() for r, line in zip(with_history, lines)}
    assert markers["t9"] == "o" and markers["t4"] == "o" and markers["t1"] in ("None", None, "")
    colors = {r.trial_id: line.get_color() for r, line in zip(with_history, lines)}
    assert colors["t1"] == colors["t2"] == R.STRATEGY_COLORS["leoclr"]
    assert colors["t6"] == R.STRATEGY_COLORS["moco_v2"] != colors["t1"]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    for s in ("moco_v2", "leoclr", "leoclr_random_original", "attract_all"):
        assert labels.count(s) == 1                     # one legend entry per strategy
    assert "stopped early (ASHA)" in labels and "95 % CI of the mean (t)" in labels
    stopped = ax.get_legend().legend_handles[labels.index("stopped early (ASHA)")]
    assert stopped.get_linestyle() == "--" and stopped.get_marker() == "o"
    # a failed run with a history is dotted
    failed = run("f", "leoclr", 10.0, "FAILED")
    assert run_lines(R.plot_learning_curves([failed], "val_knn_top1").axes[0])[0].get_linestyle() == ":"


def test_learning_curves_mean_and_band_per_strategy_from_the_first_epoch():
    # two moco_v2 runs over epochs 2..4: (10, 20) at epoch 2, mean 15; (30, 60) at epoch 4, mean 45,
    # sd 15 sqrt 2, band 45 +- t(0.975, 1) * 15 = 45 +- 12.706 * 15 (the widest: the band's lowest point)
    recs = [run("a", "moco_v2", 30.0, epochs=3), run("b", "moco_v2", 60.0, epochs=3)]
    for r in recs:
        r.history["val_knn_top1"] = [(e + 1, v) for e, v in r.history["val_knn_top1"]]
    ax = R.plot_learning_curves(recs, "val_knn_top1", max_epochs=4).axes[0]
    mean = next(line for line in ax.get_lines() if line.get_gid() == "mean:moco_v2")
    assert list(mean.get_xdata()) == [2, 3, 4] and mean.get_ydata()[0] == pytest.approx(15.0)
    (band,) = [c for c in ax.collections if c.get_gid() == "band:moco_v2"]
    ys = band.get_paths()[0].vertices[:, 1]
    assert min(ys) == pytest.approx(45.0 - 12.706204736 * 15.0, rel=1e-6)
    assert max(ys) == pytest.approx(45.0 + 12.706204736 * 15.0, rel=1e-6)
    assert ax.get_xlim() == (2.0, 4.0)                  # no empty epoch 0 or 1
    assert ax.get_ylabel() == "val_knn_top1 (%)" and ax.get_xlabel() == "epoch"


def test_a_single_epoch_axis_is_not_empty():
    ax = R.plot_learning_curves([run("a", "leoclr", 40.0, "KILLED", epochs=1)], "val_knn_top1").axes[0]
    assert ax.get_xlim() == (0.5, 1.5)
    ax.figure.canvas.draw()
    assert [t for t in ax.get_xticks() if 0.5 <= t <= 1.5] == [1.0]  # no fractional epochs
    assert run_lines(ax)[0].get_marker() == "o" and run_lines(ax)[0].get_linestyle() == "--"


def test_objective_vs_params_axes(search_records):
    fig = R.plot_objective_vs_params(search_records, "val_knn_top1", searched=SEARCHED + ["seed"])
    axes = [ax for ax in fig.axes if ax.get_xlabel()]
    assert [ax.get_xlabel() for ax in axes] == [
        "temperature (log scale)", "1 - key_momentum (log scale)", "queue_size (log2 scale)"]
    temp, mom, queue = axes
    assert temp.get_xscale() == mom.get_xscale() == queue.get_xscale() == "log"
    assert queue.xaxis.get_transform().base == 2
    xs = sorted(x for coll in mom.collections for x, _ in coll.get_offsets())
    assert xs[-1] == pytest.approx(0.01) and xs[0] == pytest.approx(0.004)  # 1 - 0.99, 1 - 0.996
    # finished runs are filled, stopped ones hollow
    fills = [coll.get_facecolors() for coll in temp.collections]
    assert any(len(f) and f[0][3] > 0 for f in fills)
    assert any(len(f) == 0 or f[0][3] == 0 for f in fills)


def test_wide_param_on_log_axis_narrow_on_linear():
    recs = [run("a", "leoclr", 40.0, lr=0.001, wd=1.0), run("b", "moco_v2", 42.0, lr=0.05, wd=2.0)]
    fig = R.plot_objective_vs_params(recs, "val_knn_top1", searched=["lr", "wd", "attraction_strategy"])
    scales = {ax.get_xlabel(): ax.get_xscale() for ax in fig.axes if ax.get_xlabel()}
    assert scales == {"lr (log scale)": "log", "wd": "linear"}


def test_no_numeric_param_draws_one_panel(tmp_path):
    recs = [run("a", "leoclr", 40.0), run("b", "moco_v2", 42.0)]
    fig = R.plot_objective_vs_params(recs, "val_knn_top1", searched=["attraction_strategy", "seed"])
    assert len(fig.axes) == 1
    assert "no numeric parameter" in fig.axes[0].texts[0].get_text()
    rep = build_report(recs, searched=["attraction_strategy"], grid=True, title="t", out_dir=tmp_path)
    with Image.open(rep.files["objective_vs_params.png"]) as im:
        assert im.size[0] > 100 and im.size[1] > 100


# ---------------------------------------------------------------------------------------------
# edge cases

def test_no_records_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no runs"):
        build_report([], searched=SEARCHED, grid=False, title="t", out_dir=tmp_path)
    assert not any(tmp_path.iterdir())


def test_bad_mode_is_an_error(search_records, tmp_path):
    with pytest.raises(ValueError, match="mode"):
        build_report(search_records, mode="maximize", searched=SEARCHED, grid=False, title="t",
                     out_dir=tmp_path)


def test_no_finished_runs(tmp_path):
    recs = [run("a", "leoclr", 30.0, "KILLED", epochs=1), run("b", "moco_v2", None, "FAILED"),
            run("c", "moco_v2", 20.0, "RUNNING", epochs=2)]
    rep = build_report(recs, searched=SEARCHED, grid=False, title="t", out_dir=tmp_path)
    assert {r["attraction_strategy"]: (r["n"], r["mean"], r["stopped"], r["failed"])
            for r in rep.rows} == {"leoclr": (0, None, 1, 0), "moco_v2": (0, None, 0, 1)}
    assert "No finished run has a value" in rep.markdown and "1 still running" in rep.markdown
    assert len(read_csv(rep.files["ablation.csv"])) == 2
    for name in ("learning_curves.png", "objective_vs_params.png"):
        with Image.open(rep.files[name]) as im:
            assert im.size[0] > 100


def test_run_without_history_uses_final_metric(tmp_path):
    recs = [run("a", "leoclr", 40.0), run("b", "leoclr", 44.0, history=False)]
    rep = build_report(recs, searched=SEARCHED, grid=False, title="t", out_dir=tmp_path)
    assert (rep.rows[0]["n"], rep.rows[0]["mean"]) == (2, pytest.approx(42.0))
    ax = R.plot_learning_curves(recs, "val_knn_top1").axes[0]
    assert len(run_lines(ax)) == 1 and "1 run without history" in ax.get_title()
    runs = read_csv(rep.files["runs.csv"])
    assert len(runs) == 2 and {r["epochs"] for r in runs} == {"4"}
    # and a run with only a history (no final metrics) takes its last point
    only_hist = run("c", "leoclr", 50.0)
    only_hist.metrics = {}
    assert R.ablation_rows([only_hist], searched=SEARCHED)[1][0]["mean"] == pytest.approx(50.0)


def test_no_run_has_any_history():
    recs = [run("a", "leoclr", 40.0, history=False)]
    ax = R.plot_learning_curves(recs, "val_knn_top1").axes[0]
    assert len(ax.get_lines()) == 0 and "no run has a history" in ax.texts[0].get_text()
    assert rows_of(recs)[0]["n"] == 1


def test_module_imports_neither_mlflow_nor_ray():
    code = ("import sys; import leoclr_platform.report, leoclr_platform.report.stats; "
            "bad = [m for m in ('mlflow', 'ray', 'torch') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
