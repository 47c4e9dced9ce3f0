"""`leoclr report` on a sweep recorded in a real SQLite store (no Ray): the records read back,
the files written and logged to the sweep's run."""

from __future__ import annotations

from pathlib import Path

import pytest

from leoclr_platform.errors import RegistryError
from leoclr_platform.report.command import report_sweep, sweep_records, typed
from mlflow_checks import tracked_runs


def test_params_come_back_as_the_values_they_were():
    assert [typed(v) for v in ("None", "True", "3", "0.5", '["a", 1]', "leoclr", "[oops")] == \
        [None, True, 3, 0.5, ["a", 1], "leoclr", "[oops"]


def test_the_records_of_a_sweep_are_its_trial_runs(recorded_sweep):
    parent, records = sweep_records(recorded_sweep["uri"], "s1")
    assert parent.info.run_id == recorded_sweep["parent_run_id"]
    by_trial = {r.trial_id: r for r in records}
    assert set(by_trial) == {"t1", "t2", "t3"}
    assert by_trial["t2"].params["attraction_strategy"] == "moco_v2" and by_trial["t2"].params["temperature"] == 0.2
    # stopped by ASHA: FINISHED in MLflow, with the stopped_early tag (docs/tracking.md)
    assert by_trial["t3"].status in ("KILLED", "FINISHED") and by_trial["t3"].epochs == 1
    assert [e for e, _ in by_trial["t1"].history["val_knn_top1"]] == [1, 2] and by_trial["t1"].seed == 0


def test_the_report_is_written_and_logged_to_the_sweep_s_run(recorded_sweep, tmp_path):
    printed = []
    report = report_sweep(recorded_sweep["uri"], "s1", tmp_path / "report", out=printed.append)
    rows = {r["attraction_strategy"]: r for r in report.rows}
    assert rows["moco_v2"]["n"] == 1 and rows["leoclr"]["n"] == 1 and rows["leoclr"]["stopped"] == 1
    assert rows["moco_v2"]["best"] > rows["leoclr"]["best"]
    assert report.rows[0]["attraction_strategy"] == "moco_v2"  # best mean first
    assert (tmp_path / "report" / "ablation.html").exists()
    assert printed[0].startswith("# Ablation report: sweep s1") and "report/ablation" not in printed[0]
    client, parent, _ = tracked_runs(recorded_sweep["uri"], "s1")
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/ablation.md", "report/ablation.html", "report/learning_curves.png"} <= logged


def test_the_default_folder_is_the_sweep_s_results(recorded_sweep):
    report = report_sweep(recorded_sweep["uri"], "s1", out=lambda line: None)
    results = recorded_sweep["record"].params["results"]
    assert {p.parent for p in report.files.values()} == {Path(results) / "report"}


def test_an_unknown_sweep_is_named(recorded_sweep):
    with pytest.raises(RegistryError, match=r"^no sweep named 'nosuch' in the tracking store sqlite:///"):
        report_sweep(recorded_sweep["uri"], "nosuch", out=lambda line: None)
