"""`leoclr report` on a sweep recorded in a real SQLite store (no Ray): the records read back,
the files written and logged to the sweep's run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from leoclr_platform.errors import RegistryError
from leoclr_platform.report.command import report_sweep, sweep_records, typed
from leoclr_platform.report.lookup import check_sweep
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


# ---------------------------------------------------------------------------------------------
# what the report reads besides the trials (made by hand, as the sweep and `leoclr evaluate` write them)
IMPORTANCE = {"n_trials": 5, "metric": "val_knn_top1", "errors": {"ped_anova": "too few trials"},
              "methods": {"fanova": {"temperature": 0.8, "attraction_strategy": 0.2}}}
BASELINE = {"what": "random weights, BatchNorm recalibrated", "seeds": [100, 101],
            "per_seed": {"100": {"val_knn_top1": 5.0}, "101": {"val_knn_top1": 6.0}},
            "mean": {"val_knn_top1": 5.5}}


def _log_json(client, run_id, name, doc, folder):
    path = folder / name
    path.write_text(json.dumps(doc), encoding="utf-8")
    client.log_artifact(run_id, str(path))


def _confirm_run(client, parent, strategy, seed, value, epochs):
    from mlflow.entities import Metric, Param

    tags = {"sweep": parent.data.tags["sweep"], "stage": "confirm", "seed": str(seed), "strategy": strategy,
            "confirm_of": "t2" if strategy == "moco_v2" else "t1", "trial_id": f"c-{strategy}-{seed}",
            "mlflow.parentRunId": parent.info.run_id}
    run_id = client.create_run(parent.info.experiment_id, tags=tags).info.run_id
    client.log_batch(run_id, params=[Param("attraction_strategy", strategy), Param("seed", str(seed))],
                     metrics=[Metric(k, v, 0, e) for e in range(1, epochs + 1)
                              for k, v in (("val_knn_top1", value - epochs + e), ("loss", 9.0 - e))])
    client.set_terminated(run_id, "FINISHED")


def _evaluation(client, sweep):
    exp = client.create_experiment("leoclr/evaluation")
    tags = {"role": "evaluation", "sweep": sweep, "model_name": "leoclr-encoder", "model_version": "1",
            "model_alias": "candidate", "strategy": "moco_v2", "trial_id": "t2", "dataset": "digits"}
    parent = client.create_run(exp, tags=tags).info.run_id
    client.log_metric(parent, "knn_top1", 55.5)
    child = client.create_run(exp, tags={"protocol": "linear", "mlflow.parentRunId": parent}).info.run_id
    client.log_metric(child, "linear_top1", 60.25)


def test_confirm_runs_importance_baseline_and_evaluations_reach_the_report(mlflow_uri, tiny_run, tmp_path):
    from platform_fakes import record_sweep

    from leoclr_platform import tracking

    recorded = record_sweep(mlflow_uri, tiny_run, name="c1")
    client = tracking.client(mlflow_uri)
    parent = client.get_run(recorded["parent_run_id"])
    _log_json(client, parent.info.run_id, "importance.json", IMPORTANCE, tmp_path)
    _log_json(client, parent.info.run_id, "baseline.json", BASELINE, tmp_path)
    epochs = int(parent.data.params["max_epochs"])
    for strategy, values in (("leoclr", (40.0, 44.0)), ("moco_v2", (30.0, 31.0))):
        for seed, value in zip((100, 101), values):
            _confirm_run(client, parent, strategy, seed, value, epochs)
    _evaluation(client, "c1")

    report = report_sweep(mlflow_uri, "c1", tmp_path / "report", out=lambda line: None)
    assert report.stage == "confirm" and {r["n"] for r in report.rows} == {2}
    (c,) = report.comparisons
    assert (c.group, c.reference, c.seeds, c.mean_diff) == ("leoclr", "moco_v2", (100, 101), 11.5)
    assert {r["attraction_strategy"] for r in report.search_rows} == {"leoclr", "moco_v2"}
    md = report.markdown
    assert "resting on 5 completed trials" in md and "PED-ANOVA could not be computed: too few trials." in md
    assert "| random weights (baseline) | 5.50 |" in md and "paired on seeds 100, 101" in md
    assert "| leoclr-encoder v1 @candidate | moco_v2 | t2 | digits | 55.50 | 60.25 |" in md
    assert f"**Scale.** epochs: {epochs}; image size: 16 px" in md
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/importance.png", "report/learning_curves_search.png", "report/ablation.html"} <= logged


def test_an_unknown_sweep_lists_the_sweeps_without_importing_mlflow(recorded_sweep):
    code = ("import sys, time; t = time.time()\n"
            "from leoclr_platform.report.lookup import check_sweep\n"
            "from leoclr_platform.errors import RegistryError\n"
            f"try:\n    check_sweep({recorded_sweep['uri']!r}, 'nosuch')\n"
            "except RegistryError as exc:\n    print(exc)\n"
            "print(sorted(m for m in ('mlflow', 'matplotlib', 'torch', 'ray') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    message, loaded = done.stdout.strip().splitlines()
    assert message.startswith("no sweep named 'nosuch' in the tracking store sqlite:///")
    assert "sweeps there, newest first: s1" in message
    assert loaded == "[]"


def test_a_missing_store_has_no_sweep_and_is_not_created(tmp_path):
    uri = f"sqlite:///{tmp_path / 'none.db'}"
    with pytest.raises(RegistryError, match="it holds no sweep yet"):
        check_sweep(uri, "any")
    assert not (tmp_path / "none.db").exists()


def test_a_run_tagged_stopped_early_counts_as_stopped(mlflow_uri):
    from leoclr_platform import tracking
    from leoclr_platform.report.command import record_of

    client = tracking.client(mlflow_uri)
    exp = client.create_experiment("x")
    tags = {"trial_id": "a", "stopped_early": "stopped by ASHA at epoch 1 of 2", "stage": "search"}
    run_id = client.create_run(exp, tags=tags).info.run_id
    client.log_metric(run_id, "val_knn_top1", 30.0, step=1)
    client.set_terminated(run_id, "FINISHED")
    from mlflow.entities import Dataset, DatasetInput

    client.log_inputs(run_id, datasets=[
        DatasetInput(Dataset(name=f"digits:{split}", digest=split, source_type="code", source="{}",
                             profile=json.dumps({"split": split, "num_images": n})))
        for split, n in (("train", 1400), ("val", 160), ("test", 237))])
    (run,) = client.search_runs([exp], "tags.trial_id = 'a'")  # as the report reads runs
    record = record_of(client, run, "val_knn_top1")
    assert (record.status, record.stage, record.history["val_knn_top1"]) == ("KILLED", "search", [(1, 30.0)])
    # the split sizes of the run's dataset inputs reach the report's header
    assert (record.params["train_images"], record.params["val_images"], record.params["test_images"]) == \
        (1400, 160, 237)
    finished = client.create_run(exp, tags={"trial_id": "b"}).info.run_id
    client.set_terminated(finished, "FINISHED")
    assert record_of(client, client.get_run(finished), "val_knn_top1").status == "FINISHED"
