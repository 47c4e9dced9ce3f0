"""The citable parts of a report, with hand-computed numbers: intervals per group, paired
comparisons on shared seeds (a 2-strategy x 3-seed grid), confirmation runs as the headline,
the random-weights baseline row with gains, parameter importance, RankMe's correlation with the
validation kNN, the header's scale and the evaluations of promoted versions."""

from __future__ import annotations

import math

import pytest
from PIL import Image

from leoclr_platform.report import RunRecord, build_report
from leoclr_platform.report import compare, stats
from leoclr_platform.report.records import SweepContext

T_975_2 = 4.302652729911275  # Student t quantile, 2 degrees of freedom


def rec(trial, strategy, value, seed, *, stage="search", confirm_of=None, status="FINISHED", epochs=3,
        rankme=None, **params):
    p = {"attraction_strategy": strategy, "temperature": 0.2, "seed": seed, **params}
    metrics = {"val_knn_top1": value}
    if rankme is not None:
        metrics["rankme"] = rankme
    hist = {"val_knn_top1": [(e, value - (epochs - e)) for e in range(1, epochs + 1)]}
    return RunRecord(run_id=f"r-{trial}", trial_id=trial, status=status, params=p, metrics=metrics,
                     history=hist, seed=seed, epochs=epochs, stage=stage, confirm_of=confirm_of)


# leoclr - moco_v2 per seed: 2, 4, 3 -> mean 3, sd 1
GRID = {("leoclr", 0): 52.0, ("leoclr", 1): 55.0, ("leoclr", 2): 54.0,
        ("moco_v2", 0): 50.0, ("moco_v2", 1): 51.0, ("moco_v2", 2): 51.0}


@pytest.fixture(scope="module")
def grid_report(tmp_path_factory):
    records = [rec(f"{s}-{seed}", s, v, seed) for (s, seed), v in GRID.items()]
    return build_report(records, searched=["attraction_strategy", "seed"], grid=True, title="grid",
                        out_dir=tmp_path_factory.mktemp("grid"), max_epochs=3)


def test_a_grid_with_seeds_pairs_on_seed(grid_report):
    (c,) = grid_report.comparisons
    assert (c.group, c.reference, c.seeds, c.n) == ("leoclr", "moco_v2", (0, 1, 2), 3)
    half = T_975_2 * 1.0 / math.sqrt(3)
    assert c.mean_diff == pytest.approx(3.0)
    assert c.ci == pytest.approx((3.0 - half, 3.0 + half))
    # t = 3 / (1 / sqrt 3) = 5.196 on 2 df: two-sided p = 0.0351 (tables)
    assert c.p_value == pytest.approx(0.0351, abs=5e-4)
    assert c.verdict.startswith("leoclr higher than moco_v2 by 3.00 points (better")
    md = grid_report.markdown
    assert "| leoclr vs moco_v2 | 0, 1, 2 | 3 | +3.00 |" in md and "baseline strategy `moco_v2`" in md


def test_paired_numbers_match_scipy_where_installed(grid_report):
    scipy_stats = pytest.importorskip("scipy.stats")
    a = [GRID[("leoclr", s)] for s in range(3)]
    b = [GRID[("moco_v2", s)] for s in range(3)]
    assert grid_report.comparisons[0].p_value == pytest.approx(scipy_stats.ttest_rel(a, b).pvalue, rel=1e-6)


def test_group_intervals_are_t_intervals(grid_report):
    leo = next(r for r in grid_report.rows if r["attraction_strategy"] == "leoclr")
    sd = stats.sample_std([52.0, 55.0, 54.0])
    half = T_975_2 * sd / math.sqrt(3)
    assert (leo["ci_low"], leo["ci_high"]) == (pytest.approx(53.6667 - half, abs=1e-3),
                                               pytest.approx(53.6667 + half, abs=1e-3))
    assert leo["interval"] == "t" and leo["boot_low"] is None


def test_a_crossing_interval_is_not_distinguishable():
    p = stats.paired({0: 50.0, 1: 52.0, 2: 49.0}, {0: 51.0, 1: 50.0, 2: 50.0}, names=("a", "b"))
    assert compare.verdict_of(p, "max", "points") == stats.NOT_DISTINGUISHABLE


def test_bootstrap_from_five_runs_and_min_mode_wording():
    row = compare.group_stats([1.0, 2.0, 3.0, 4.0, 5.0])
    assert row["interval"] == "t; bootstrap" and row["boot_low"] < 3.0 < row["boot_high"]
    p = stats.paired({0: 1.0, 1: 1.1, 2: 1.2}, {0: 2.0, 1: 2.2, 2: 2.1}, names=("a", "b"))
    assert compare.verdict_of(p, "min", "").startswith("a lower than b by 1.00 (better")


# ---------------------------------------------------------------------------------------------
# a search sweep with confirmation runs, a baseline, importance, RankMe and an evaluation
CONFIRM = {("leoclr", 10): 60.0, ("leoclr", 11): 62.0, ("leoclr", 12): 61.0,
           ("moco_v2", 10): 58.0, ("moco_v2", 11): 63.0, ("moco_v2", 12): 59.0}
BASELINE = {"what": "random weights, BatchNorm recalibrated", "seeds": [10, 11, 12],
            "per_seed": {"10": {"val_knn_top1": 59.0, "rankme": 5.0}, "11": {"val_knn_top1": 60.0},
                         "12": {"val_knn_top1": 61.0}},
            "mean": {"val_knn_top1": 60.0}}
IMPORTANCE = {"n_trials": 7, "metric": "val_knn_top1",
              "methods": {"fanova": {"temperature": 0.7, "attraction_strategy": 0.3},
                          "ped_anova": {"temperature": 0.4, "attraction_strategy": 0.6}}, "errors": {}}


def confirm_records():
    search = [rec("s1", "leoclr", 70.0, 0, rankme=9.0), rec("s2", "leoclr", 50.0, 0, rankme=4.0),
              rec("s3", "moco_v2", 65.0, 0, rankme=8.0), rec("s4", "moco_v2", 40.0, 0, rankme=2.0),
              rec("s5", "leoclr", 45.0, 0, status="KILLED", epochs=1)]
    confirm = [rec(f"c-{s}-{seed}", s, v, seed, stage="confirm", confirm_of="s1" if s == "leoclr" else "s3")
               for (s, seed), v in CONFIRM.items()]
    return search + confirm


@pytest.fixture(scope="module")
def confirm_report(tmp_path_factory):
    context = SweepContext(
        scale={"epochs": "3", "image size": "32 px", "backbone": "resnet18_cifar",
               "seeds": "0 (search), 10, 11, 12 (confirm)"},
        baseline=BASELINE, importance=IMPORTANCE,
        evaluations=[{"model": "leoclr-encoder v1", "strategy": "leoclr", "trial_id": "s1", "dataset": "cifar10",
                      "metrics": {"knn_top1": 61.5, "linear_top1": 64.25, "baseline_knn_top1": 40.0}}])
    return build_report(confirm_records(), searched=["attraction_strategy", "temperature"], grid=False,
                        title="confirmed", out_dir=tmp_path_factory.mktemp("confirm"), max_epochs=3,
                        context=context)


def test_confirm_runs_are_the_headline(confirm_report):
    rep = confirm_report
    assert rep.stage == "confirm"
    rows = {r["attraction_strategy"]: r for r in rep.rows}
    assert rows["leoclr"]["n"] == 3 and rows["leoclr"]["mean"] == pytest.approx(61.0)  # search 70 not in it
    assert {r["attraction_strategy"]: r["n"] for r in rep.search_rows} == {"leoclr": 2, "moco_v2": 2}
    (c,) = rep.comparisons
    assert c.seeds == (10, 11, 12) and c.mean_diff == pytest.approx(1.0)  # 2, -1, 2
    assert c.verdict == stats.NOT_DISTINGUISHABLE
    md = rep.markdown
    assert md.index("## Headline: confirmation runs") < md.index("## Search runs (not the headline)")
    assert "`stage=confirm`" in md
    assert "learning_curves_search.png" in rep.files and rep.files["learning_curves_search.png"].is_file()
    runs = rep.files["runs.csv"].read_text(encoding="utf-8").splitlines()
    assert runs[0].startswith("trial_id,run_id,stage,status,counted_as,")
    assert sum(1 for line in runs if ",confirm,FINISHED," in line) == 6


def test_baseline_row_and_gains(confirm_report):
    rep = confirm_report
    assert rep.baseline_mean == pytest.approx(60.0)
    gains = {g["label"]: g for g in rep.gains}
    # leoclr 60, 62, 61 vs baseline 59, 60, 61: differences 1, 2, 0 -> mean 1, sd 1
    half = T_975_2 / math.sqrt(3)
    assert gains["leoclr"]["gain"] == pytest.approx(1.0)
    assert gains["leoclr"]["gain_ci"] == pytest.approx((1.0 - half, 1.0 + half))
    assert gains["leoclr"]["how"] == "paired on seeds 10, 11, 12"
    md = rep.markdown
    assert "| random weights (baseline) | 60.00 |" in md
    assert "| leoclr | 61.00 | +1.00 |" in md
    assert "leoclr's gain over the random-weights baseline (+1.00 points) is not distinguishable at this n." in md


def test_a_mean_below_the_baseline_is_said_in_one_sentence():
    rows = [{"label": "moco_v2", "mean": 55.0, "values": [], "by_seed": {10: 54.0, 11: 56.0}}]
    _, gains = compare.baseline_gains(rows, BASELINE, "val_knn_top1", "max")
    assert gains[0]["sentence"] == ("moco_v2's mean val_knn_top1 (55.00) does not beat the random-weights "
                                    "baseline (60.00): at this scale training did not improve on random features.")
    assert gains[0]["gain"] == pytest.approx(-4.5)  # paired on 10, 11: (54 - 59 + 56 - 60) / 2


def test_importance_table_and_chart(confirm_report):
    md = confirm_report.markdown
    assert "resting on 7 completed trials" in md
    assert "| temperature | 0.700 | 0.400 |" in md
    assert md.index("| temperature |") < md.index("| attraction_strategy | 0.300")  # fANOVA order
    with Image.open(confirm_report.files["importance.png"]) as im:
        assert im.format == "PNG" and im.size[1] > 100
    assert "![parameter importance](importance.png)" in md


def test_importance_absent_says_why(grid_report):
    assert "Parameter importance is not available: the sweep's run has no importance.json." in grid_report.markdown
    assert "importance.png" not in grid_report.files


def test_rankme_correlation_over_finished_runs(confirm_report):
    # finished runs with both: s1 (9, 70), s2 (4, 50), s3 (8, 65), s4 (2, 40): same order -> rho 1
    assert confirm_report.rankme == (pytest.approx(1.0), 4)
    assert "over 4 finished runs: rho = +1.00" in confirm_report.markdown


def test_header_scale_and_evaluations(confirm_report):
    md = confirm_report.markdown
    assert md.splitlines()[2] == ("**Scale.** epochs: 3; image size: 32 px; backbone: resnet18_cifar; "
                                  "seeds: 0 (search), 10, 11, 12 (confirm).")
    assert "| leoclr-encoder v1 | leoclr | s1 | cifar10 | 61.50 (40.00) | 64.25 |" in md
    page = confirm_report.files["ablation.html"].read_text(encoding="utf-8")
    assert "<strong>Scale.</strong>" in page and page.count("data:image/png;base64,") == 4


def test_no_evaluation_says_so(grid_report):
    assert "No evaluation run of this sweep's promoted versions yet" in grid_report.markdown
    assert "No baseline row: the sweep's run has no baseline.json." in grid_report.markdown


def test_importance_that_failed_says_why():
    from leoclr_platform.report.importance import importance_lines

    doc = {"n_trials": 1, "metric": "val_knn_top1", "methods": {},
           "errors": {"fanova": "needs at least 2 completed trials", "ped_anova": "needs at least 2 completed trials"}}
    (line,) = importance_lines(doc, "")
    assert line == ("Parameter importance is not available: no method succeeded on the 1 completed trials "
                    "(fANOVA: needs at least 2 completed trials; PED-ANOVA: needs at least 2 completed trials).")


def test_two_confirmed_configs_per_strategy_are_rows_compared_with_the_best_baseline_config(tmp_path):
    values = {("leoclr", "a"): (60.0, 61.0), ("leoclr", "b"): (50.0, 52.0),
              ("moco_v2", "c"): (55.0, 57.0), ("moco_v2", "d"): (58.0, 59.0)}
    records = [rec(f"{s}-{cfg}-{seed}", s, v[i], seed, stage="confirm", confirm_of=cfg)
               for (s, cfg), v in values.items() for i, seed in enumerate((7, 8))]
    from leoclr_platform.report.build import _headline

    rep = _headline(records, "val_knn_top1", "max", ["attraction_strategy"], False, 3)
    assert rep.group_columns == ["attraction_strategy", "confirm_of"] and len(rep.rows) == 4
    assert {(c.group, c.reference) for c in rep.comparisons} == {
        ("leoclr, confirm_of=a", "moco_v2, confirm_of=d"), ("leoclr, confirm_of=b", "moco_v2, confirm_of=d")}
    best = next(c for c in rep.comparisons if c.group.endswith("=a"))
    assert best.mean_diff == pytest.approx(2.0) and best.seeds == (7, 8)


def test_the_scale_header_from_params_and_runs():
    from leoclr_platform.report.sources import scale_of

    records = [rec("s1", "leoclr", 50.0, 0, image_size=32, backbone="small_cnn", dataset="photo_patches",
                   train_images=1400, val_images=160),
               rec("s2", "moco_v2", 50.0, 1, image_size=32, backbone="small_cnn", dataset="photo_patches"),
               rec("c1", "leoclr", 50.0, 1000, stage="confirm", image_size=32)]
    scale = scale_of({"max_epochs": "5", "trials": "4"}, records)
    assert scale == {"epochs": "5", "image size": "32 px", "dataset": "photo_patches", "backbone": "small_cnn",
                     "training images": "1400", "validation images": "160",
                     "seeds": "0, 1 (search); 1000 (confirmation)",
                     "trials": "2 search runs of 4 planned, 1 confirmation run"}
