"""The outcome table: row statuses, the best trial, error reasons, what is on disk of a trial."""

from __future__ import annotations

import dataclasses
import json
import shutil
from types import SimpleNamespace

from leoclr_platform import spaces
from leoclr_platform.sweep.results import disk_history, error_line, summarize


def smoke(**changes):
    return dataclasses.replace(spaces.load_space("smoke"), **changes)


def result(tmp_path, trial_id, epoch, knn, error=None):
    return SimpleNamespace(config={"attraction_strategy": "moco_v2", "temperature": 0.2, "key_momentum": 0.99,
                                   "seed": 0},
                           metrics={"trial_id": trial_id, "epoch": epoch, "val_knn_top1": knn}, error=error,
                           path=str(tmp_path / trial_id))


def test_the_best_trial_is_one_that_ran_every_epoch(tmp_path):
    """A trial ASHA stopped after epoch 1 may report a higher kNN than the finished ones (an
    earlier epoch's value): the sweep's best is the best finished trial; with no finished trial,
    the best stopped one."""
    spec = smoke(max_epochs=2)
    results = [result(tmp_path, "stopped", 1, 60.0), result(tmp_path, "done_lo", 2, 40.0),
               result(tmp_path, "done_hi", 2, 45.0), result(tmp_path, "failed", 2, 99.0, error=RuntimeError("x"))]
    outcome = summarize(spec, "s", str(tmp_path), results)
    assert [t["status"] for t in outcome.trials] == ["STOPPED", "COMPLETED", "COMPLETED", "ERROR"]
    assert outcome.best["trial_id"] == "done_hi" and outcome.best["val_knn_top1"] == 45.0
    assert outcome.errors == 1 and outcome.metric == "val_knn_top1"
    only_stopped = summarize(spec, "s", str(tmp_path), [result(tmp_path, "a", 1, 30.0),
                                                        result(tmp_path, "b", 1, 35.0)])
    assert only_stopped.best["trial_id"] == "b"


def test_the_summary_is_written_and_the_best_names_its_last_checkpoint(tmp_path, tiny_run):
    shutil.copytree(tiny_run, tmp_path / "train" / "trial_done")
    outcome = summarize(smoke(max_epochs=2), "s", str(tmp_path), [result(tmp_path, "done", 2, 40.0)])
    assert outcome.best["checkpoint"] == str(tmp_path / "train" / "trial_done" / "epoch_0002")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["best"]["trial_id"] == "done" and summary["trials"][0]["params"] == {
        "attraction_strategy": "moco_v2", "temperature": 0.2, "key_momentum": 0.99}
    assert summary["trials"][0]["seed"] == 0


def test_a_trial_id_comes_from_the_folder_when_the_result_lacks_it(tmp_path):
    row = SimpleNamespace(config={}, metrics={"epoch": 2, "val_knn_top1": 1.0}, error=None,
                          path=str(tmp_path / "train_driver_fn_a1b2c_00003_3_attraction_strategy=leoclr_2026"))
    assert summarize(smoke(), "s", str(tmp_path), [row]).trials[0]["trial_id"] == "a1b2c_00003"


def test_an_error_is_its_cause_s_message():
    class Wrapped(RuntimeError):  # what Ray raises for an exception inside a task: .cause
        cause = ValueError("loss is not finite at epoch 1, step 1")

    assert error_line(Wrapped("ray::ImplicitFunc.train()\n  File ...\nTrialDiverged: ...")) == \
        "loss is not finite at epoch 1, step 1"
    assert error_line(RuntimeError("Traceback (most recent call last):\n  ...\nOSError: disk full")) == \
        "OSError: disk full"
    assert error_line(None) is None and error_line(KeyError()) == "KeyError"


def test_the_history_on_disk_joins_the_checkpoint_and_tune_s_results(tmp_path, tiny_run):
    shutil.copytree(tiny_run / "epoch_0001", tmp_path / "train" / "trial_t1" / "epoch_0001")
    folder = tmp_path / "train_driver_fn_t1_0_x_2026"
    folder.mkdir()
    lines = [{"epoch": 1, "val_knn_top1": -1.0}, {"epoch": 2, "val_knn_top1": 77.0}]
    (folder / "result.json").write_text("\n".join(json.dumps(r) for r in lines) + "\n{\"epoch\": 3, \"kn")
    history = disk_history(str(tmp_path), "t1")
    assert sorted(history) == [1, 2]  # the line cut by a kill is skipped
    assert history[1]["val_knn_top1"] != -1.0  # the checkpoint's record wins over Tune's
    assert history[2]["val_knn_top1"] == 77.0
    assert disk_history(str(tmp_path), "nobody") == {} and disk_history("s3://b/runs/s", "t1") == {}


def test_rows_carry_the_strategy_and_asha_s_decision_and_the_summary_reads_them(tmp_path, monkeypatch):
    from leoclr_platform.sweep import results as R

    decision = {"epoch": 1, "rung": 1.0, "metric": "val_knn_top1", "mode": "max", "value": 30.0, "cutoff": 41.0}
    monkeypatch.setitem(R.STOP_DECISIONS, "cut", decision)
    rows = summarize(smoke(max_epochs=2), "s", str(tmp_path), [
        result(tmp_path, "cut", 1, 30.0), result(tmp_path, "a", 2, 40.0), result(tmp_path, "b", 2, 44.0),
        result(tmp_path, "bad", 2, None, error=RuntimeError("x"))]).trials
    assert rows[0]["stop"] == decision and rows[1]["stop"] is None and rows[0]["strategy"] == "moco_v2"
    metrics, tags = R.summary_metrics(rows, "val_knn_top1", "max")
    assert tags == {"best_trial": "b"}
    assert metrics == {"best_val_knn_top1": 44.0, "moco_v2_best_val_knn_top1": 44.0, "moco_v2_mean_val_knn_top1": 42.0,
                       "trials_finished": 2, "trials_stopped": 1, "trials_failed": 1}
    low, _ = R.summary_metrics(rows, "val_knn_top1", "min", strategies={"a": "leoclr"})
    assert low["best_val_knn_top1"] == 40.0 and low["leoclr_best_val_knn_top1"] == 40.0
    assert low["moco_v2_mean_val_knn_top1"] == 44.0


def test_rows_follow_tune_s_creation_order_so_a_tie_survives_resume():
    """A restored experiment may list its results in another order; the rows (and so the tie
    for the best trial) follow the index Tune put in each trial's folder name."""
    from leoclr_platform.sweep.results import best_row, creation_index

    rows = [{"trial_id": "ffff0000", "path": "/r/train_driver_fn_ffff0000_4_t=0.2_2026", "v": 53.0, "status": "COMPLETED"},
            {"trial_id": "aaaa1111", "path": "/r/train_driver_fn_aaaa1111_1_t=0.1_2026", "v": 53.0, "status": "COMPLETED"},
            {"trial_id": "bbbb2222", "path": None, "v": 10.0, "status": "COMPLETED"}]
    assert [creation_index(r) for r in rows] == [4, 1, 1 << 30]
    ordered = sorted(rows, key=creation_index)
    assert [r["trial_id"] for r in ordered] == ["aaaa1111", "ffff0000", "bbbb2222"]
    for shuffled in (rows, rows[::-1]):
        assert best_row(sorted(shuffled, key=creation_index), "v", "max")["trial_id"] == "aaaa1111"
