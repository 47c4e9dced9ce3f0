"""MLflow in line with a sweep's results on disk, without Ray: `leoclr sync` replays a sweep
folder into a store, and a replayed sweep equals the one the live callback recorded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from leoclr_platform import tracking
from leoclr_platform.sweep.meta import write_meta
from leoclr_platform.sweep.results import SweepOutcome, error_line
from leoclr_platform.sweep.sync import finish_tracking, sync_sweep
from leoclr_platform.sweep.trial import resolved_config
from leoclr_platform.tracking.tune_callback import MlflowTrialCallback
from mlflow_checks import metric_steps, tracked_runs
from platform_fakes import SAMPLED, FakeTrial, result, smoke_record
from trainables.checkpoint import read_history

ERROR = "loss is not finite at epoch 1, step 1"
#: ASHA's decision on the stopped trial, as RecordingASHA keeps it and summary.json holds it
STOP = {"epoch": 1, "rung": 1.0, "metric": "val_knn_top1", "mode": "max", "value": 41.0, "cutoff": 41.5}
#: trial id -> (sampled config, epochs reported, summary row status or None if unfinished)
TRIALS = {
    "a0001_00000": (SAMPLED, 2, "COMPLETED"),
    "a0002_00001": ({**SAMPLED, "attraction_strategy": "moco_v2", "enqueue": None}, 1, "STOPPED"),
    "a0003_00002": ({**SAMPLED, "temperature": 0.4}, 0, "ERROR"),
    "a0004_00003": ({**SAMPLED, "temperature": 0.3}, 1, None),
}


def reported(tiny_run: Path, trial_id: str, epochs: int) -> list[dict]:
    """The results a trial reported: the engine's real history for the one with checkpoints."""
    if TRIALS[trial_id][2] == "COMPLETED":
        return [{**result(h["epoch"], 0.0), **h} for h in read_history(tiny_run / "epoch_0002")]
    return [result(e, 40.0 + e) for e in range(1, epochs + 1)]


def sweep_folder(tmp_path: Path, tiny_run: Path, store: str):
    """A sweep as Tune, the engine and run_sweep leave it on disk: sweep.json, one Tune trial
    folder per trial (params.json, result.json, error.txt), checkpoints, summary.json."""
    root = tmp_path / "runs" / "s1"
    root.mkdir(parents=True)
    spec, meta, _ = smoke_record("s1", str(root))
    write_meta(str(root), {**meta, "tracking_uri": store})
    rows = []
    for index, (trial_id, (config, epochs, status)) in enumerate(TRIALS.items()):
        folder = root / f"train_driver_fn_{trial_id}_{index}_t=0.2_2026-01-01"
        folder.mkdir()
        (folder / "params.json").write_text(json.dumps(config))
        lines = [json.dumps({**r, "trial_id": trial_id}) for r in reported(tiny_run, trial_id, epochs)]
        (folder / "result.json").write_text("\n".join(lines))
        if status == "ERROR":
            (folder / "error.txt").write_text(f"Traceback (most recent call last):\n...\n{ERROR}")
        if status == "COMPLETED":
            shutil.copytree(tiny_run, root / "train" / f"trial_{trial_id}")
        if status:
            rows.append({"trial_id": trial_id, "status": status, "epochs": epochs or None,
                         "val_knn_top1": 40.0 + epochs if epochs else None, "params": {}, "seed": 0,
                         "error": ERROR if status == "ERROR" else None, "path": str(folder),
                         "stop": STOP if status == "STOPPED" else None})
    (root / "summary.json").write_text(json.dumps({"name": "s1", "trials": rows}))
    return spec, json.loads((root / "sweep.json").read_text()), root, rows


def live_record(spec, meta, root: Path, rows, uri: str, tiny_run: Path) -> None:
    """What the live sweep logs for the same trials: Tune's events through the callback, then
    finish_tracking."""
    tracker = tracking.SweepTracker(uri, meta["experiment"], "s1", max_epochs=spec.max_epochs, synchronous=True)
    tracker.open(tracking.sweep_record(spec, meta, str(root)))
    callback = MlflowTrialCallback(tracker, resolve_config=lambda c: resolved_config(spec, c).to_dict(),
                                   disk_history=lambda trial_id: {}, error_line=error_line,
                                   stop_reason=lambda trial_id: STOP if TRIALS[trial_id][2] == "STOPPED" else None)
    for trial_id, (config, epochs, status) in TRIALS.items():
        if status is None:
            continue
        trial = FakeTrial(trial_id, config=dict(config), error=RuntimeError(ERROR) if status == "ERROR" else None)
        callback.on_trial_start(0, [], trial)
        for trial.last_result in reported(tiny_run, trial_id, epochs):
            callback.on_trial_result(0, [], trial, trial.last_result)
        if status == "ERROR":
            callback.on_trial_error(0, [], trial)
        else:
            callback.on_trial_complete(0, [], trial)
    finish_tracking(tracker, SweepOutcome("s1", str(root), None, rows, 1))


def test_sync_replays_a_sweep_folder_and_a_second_sync_adds_nothing(tmp_path, tiny_run, mlflow_uri):
    spec, meta, root, _ = sweep_folder(tmp_path, tiny_run, mlflow_uri)
    said = []
    assert sync_sweep("s1", storage=str(root.parent), out=said.append)["trials"] == 4
    assert said[0].startswith(f"synced sweep s1: 4 trial(s) from {root} into {mlflow_uri}")
    client, parent, runs = tracked_runs(mlflow_uri, "s1")
    assert parent.info.status == "FINISHED"
    status = {t: r.info.status for t, r in runs.items()}
    assert status == {"a0001_00000": "FINISHED", "a0002_00001": "FINISHED", "a0003_00002": "FAILED",
                      "a0004_00003": "RUNNING"}  # unfinished: `leoclr sweep --resume` continues it
    assert "model_uri" in runs["a0001_00000"].data.tags
    assert runs["a0003_00002"].data.tags["failure_reason"] == ERROR
    # epochs: the checkpoint's history (the engine's real run) for the finished trial
    assert metric_steps(client, runs["a0001_00000"]) == [1, 2] and metric_steps(client, runs["a0002_00001"]) == [1]
    sync_sweep("s1", storage=str(root.parent), out=said.append)
    client, _, again = tracked_runs(mlflow_uri, "s1")
    assert {t: metric_steps(client, r) for t, r in again.items()} == {t: metric_steps(client, r) for t, r in runs.items()}


def test_a_synced_sweep_equals_the_live_record(tmp_path, tiny_run, mlflow_uri, store_schema):
    """The parent run (params, tags: one `sweep_record`), each trial run (params, tags, status,
    metrics per step) are the same whether written live or replayed by `leoclr sync`."""
    spec, meta, root, rows = sweep_folder(tmp_path, tiny_run, mlflow_uri)
    live = tmp_path / "live"
    live.mkdir()
    shutil.copyfile(store_schema, live / "mlflow.db")
    live_uri = f"sqlite:///{live / 'mlflow.db'}"
    live_record(spec, meta, root, rows, live_uri, tiny_run)
    (root / "train_driver_fn_a0004_00003_3_t=0.2_2026-01-01" / "params.json").unlink()  # not in the live one
    sync_sweep("s1", storage=str(root.parent), tracking_uri=mlflow_uri, out=lambda line: None)
    live_client, live_parent, live_runs = tracked_runs(live_uri, "s1")
    sync_client, sync_parent, sync_runs = tracked_runs(mlflow_uri, "s1")
    assert sync_parent.data.params == live_parent.data.params
    assert sync_parent.data.tags == live_parent.data.tags
    # the sweep's result on its parent run: best value and trial, per-strategy summary (finished
    # trials only: the stopped moco_v2 trial has no moco_v2_* summary)
    assert sync_parent.data.metrics == live_parent.data.metrics
    assert live_parent.data.metrics == {"best_val_knn_top1": 42.0, "leoclr_best_val_knn_top1": 42.0,
                                        "leoclr_mean_val_knn_top1": 42.0, "trials_finished": 1.0,
                                        "trials_stopped": 1.0, "trials_failed": 1.0}
    assert live_parent.data.tags["best_trial"] == "a0001_00000"
    assert "rung cutoff 41.5" in sync_runs["a0002_00001"].data.tags["stopped_early"]
    assert sync_parent.info.status == live_parent.info.status == "FINISHED"
    assert set(sync_runs) == set(live_runs)
    for trial_id, run in live_runs.items():
        synced = sync_runs[trial_id]
        assert synced.data.params == run.data.params, trial_id
        differ = {"mlflow.parentRunId", "model_uri"}  # run and model ids of each store
        assert {k: v for k, v in synced.data.tags.items() if k not in differ} == \
            {k: v for k, v in run.data.tags.items() if k not in differ}, trial_id
        assert synced.info.status == run.info.status, trial_id
        for key in ("loss", "val_knn_top1", "lr_actual"):
            values = [(m.step, m.value) for m in sync_client.get_metric_history(synced.info.run_id, key)]
            assert sorted(values) == sorted((m.step, m.value) for m in
                                            live_client.get_metric_history(run.info.run_id, key)), (trial_id, key)
