"""MlflowTrialCallback driven by Tune-like events (fake Trial objects): no Ray runtime needed."""

from __future__ import annotations

import pickle

from leoclr_platform import tracking
from leoclr_platform.sweep.results import error_line
from leoclr_platform.sweep.trial import resolved_config
from leoclr_platform.tracking.tune_callback import MlflowTrialCallback, NullCallback
from mlflow_checks import metric_steps, tracked_runs
from platform_fakes import FakeTrial, result, smoke_record


def make_callback(uri, history=None):
    spec, meta, record = smoke_record()
    tracker = tracking.SweepTracker(uri, meta["experiment"], "s1", max_epochs=spec.max_epochs, synchronous=True)
    tracker.open(record)
    callback = MlflowTrialCallback(tracker, resolve_config=lambda config: resolved_config(spec, config).to_dict(),
                                   disk_history=lambda trial_id: dict((history or {}).get(trial_id, {})),
                                   error_line=error_line)
    return callback, tracker


def test_trial_events_become_runs_with_their_status(mlflow_uri, tiny_run):
    callback, tracker = make_callback(mlflow_uri)
    done = FakeTrial("done")
    stopped = FakeTrial("stopped", config={"attraction_strategy": "moco_v2", "temperature": 0.3,
                                           "key_momentum": 0.95, "enqueue": None})
    failed = FakeTrial("failed", error=RuntimeError("Traceback ...\nloss is not finite at epoch 1"))
    for trial in (done, stopped, failed):
        callback.on_trial_start(0, [], trial)
    for epoch in (1, 2):
        done.last_result = result(epoch, 50.0 + epoch, checkpoint_path=str(tiny_run / f"epoch_000{epoch}"))
        callback.on_trial_result(0, [], done, done.last_result)
    stopped.last_result = result(1, 30.0)
    callback.on_trial_result(0, [], stopped, stopped.last_result)
    for trial in (done, stopped):
        callback.on_trial_complete(0, [], trial)
    callback.on_trial_error(0, [], failed)
    tracker.close()
    client, _, runs = tracked_runs(mlflow_uri, "s1")
    assert runs["done"].info.status == "FINISHED" and "model_uri" in runs["done"].data.tags
    assert runs["done"].data.tags["checkpoint_path"] == str(tiny_run / "epoch_0002")  # the last one
    assert metric_steps(client, runs["done"]) == [1, 2]
    assert runs["stopped"].info.status == "FINISHED" and runs["stopped"].data.tags["strategy"] == "moco_v2"
    assert runs["stopped"].data.tags["stopped_early"].startswith("stopped by ASHA after epoch 1")
    assert runs["stopped"].data.params["key_momentum"] == "0.95"
    assert runs["failed"].info.status == "FAILED"
    assert runs["failed"].data.tags["failure_reason"] == "loss is not finite at epoch 1"


def test_a_restarted_trial_logs_the_epochs_on_disk_first(mlflow_uri):
    callback, tracker = make_callback(mlflow_uri, history={"t1": {1: result(1, 41.0), 2: result(2, 42.0)}})
    trial = FakeTrial("t1")
    callback.on_trial_start(0, [], trial)
    tracker.close()
    client, _, runs = tracked_runs(mlflow_uri, "s1")
    assert metric_steps(client, runs["t1"]) == [1, 2]


def test_an_error_without_a_readable_cause_still_fails_the_run(mlflow_uri):
    callback, tracker = make_callback(mlflow_uri)
    trial = FakeTrial("t1")
    callback.on_trial_start(0, [], trial)
    callback.on_trial_error(0, [], trial)  # no error object at all
    tracker.close()
    _, _, runs = tracked_runs(mlflow_uri, "s1")
    assert runs["t1"].data.tags["failure_reason"] == "trial failed (see the Tune error file)"


def test_the_pickled_callback_is_a_placeholder(mlflow_uri):
    """Tune pickles its RunConfig into tuner.pkl: the callback's thread and client stay out."""
    callback, tracker = make_callback(mlflow_uri)
    assert isinstance(pickle.loads(pickle.dumps(callback)), NullCallback)
    tracker.close()
