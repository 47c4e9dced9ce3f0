"""SweepTracker on a real SQLite store, without Ray: the parent run from its record, one child
run per trial, epochs once each, statuses, the encoder of finished trials, idempotency."""

from __future__ import annotations

import pytest

from leoclr_platform import tracking
from mlflow_checks import metric_steps, tracked_runs
from platform_fakes import result, smoke_record, trial_config_dict


def open_tracker(uri, name="s1", synchronous=True, **changes):
    spec, meta, record = smoke_record(name, **changes)
    tracker = tracking.SweepTracker(uri, meta["experiment"], name, max_epochs=spec.max_epochs,
                                    synchronous=synchronous)
    tracker.open(record)
    return spec, record, tracker


def test_the_parent_run_holds_the_record(mlflow_uri):
    spec, record, tracker = open_tracker(mlflow_uri)
    tracker.close("FINISHED")
    client, parent, runs = tracked_runs(mlflow_uri, "s1")
    assert runs == {} and parent.info.status == "FINISHED" and parent.info.run_name == "s1"
    assert parent.data.params == tracking.scrub(tracking.flatten_params(record.params))
    assert parent.data.params["seeds"] == "[0]" and parent.data.params["grace_period"] == "1"
    assert {k: parent.data.tags[k] for k in record.tags} == record.tags
    assert parent.data.tags["role"] == "sweep" and parent.data.tags["space"] == "smoke"
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"space", "sweep.json"} <= artifacts
    assert [a.path for a in client.list_artifacts(parent.info.run_id, "space")] == ["space/smoke.yaml"]


def test_a_trial_logs_its_config_epochs_and_status_once(mlflow_uri, tiny_run):
    spec, _, tracker = open_tracker(mlflow_uri, max_epochs=2)
    config = trial_config_dict(spec)
    tracker.trial_started("t1", config)
    for epoch in (1, 2, 2):  # a repeated epoch (a retry) is logged once
        tracker.epoch("t1", result(epoch, 40.0 + epoch))
    tracker.trial_ended("t1", status="FINISHED", checkpoint=str(tiny_run / "epoch_0002"))
    tracker.trial_started("t2", {**config, "seed": 1})
    tracker.epoch("t2", result(1, 30.0))
    tracker.trial_ended("t2", status="KILLED")
    tracker.trial_started("t3", config)
    tracker.trial_ended("t3", status="FAILED", reason="loss is not finite")
    tracker.close()
    client, parent, runs = tracked_runs(mlflow_uri, "s1")
    t1, t2, t3 = runs["t1"], runs["t2"], runs["t3"]
    # stopped by ASHA is not a failure: FINISHED, told apart by the stopped_early tag
    assert (t1.info.status, t2.info.status, t3.info.status) == ("FINISHED", "FINISHED", "FAILED")
    assert metric_steps(client, t1) == [1, 2] and metric_steps(client, t2) == [1]
    assert t1.data.metrics["val_knn_top1"] == 42.0 and "time_total_s" not in t1.data.metrics
    assert t1.data.params["attraction_strategy"] == "leoclr" and t1.data.params["epochs"] == "2"
    assert "lr_actual" in t1.data.metrics and "lr" not in t1.data.metrics  # the param lr is per 256 images
    assert t1.data.tags["strategy"] == "leoclr" and t2.data.tags["seed"] == "1"
    assert t1.data.tags["config_hash"] == tracking.config_hash(config)
    assert t1.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert t1.data.tags["git_commit"] == parent.data.tags["git_commit"]  # the parent's tags, shared
    assert t1.data.tags["checkpoint_path"] == str(tiny_run / "epoch_0002") and "model_uri" in t1.data.tags
    files = {a.path for a in client.list_artifacts(t1.info.run_id, "checkpoint")}
    assert {"checkpoint/encoder.pt", "checkpoint/config.json", "checkpoint/history.json"} <= files
    assert t2.data.tags["stopped_early"] == "stopped by ASHA after epoch 1 of 2" and "model_uri" not in t2.data.tags
    assert "stopped_early" not in t1.data.tags and "stopped_early" not in t3.data.tags
    assert t3.data.tags["failure_reason"] == "loss is not finite"


def test_a_restarted_trial_continues_its_run_and_backfills_what_it_lacks(mlflow_uri):
    """A retried or resumed trial: the same run, reopened; epochs on disk that the run lacks are
    logged (in order), those it has are not logged again."""
    spec, _, tracker = open_tracker(mlflow_uri, max_epochs=3)
    tracker.trial_started("t1", trial_config_dict(spec))
    tracker.epoch("t1", result(1, 41.0))
    tracker.trial_ended("t1", status="KILLED")
    tracker.close("KILLED")
    _, _, again = open_tracker(mlflow_uri, max_epochs=3)  # a new driver process
    history = {1: result(1, 99.0), 2: result(2, 42.0)}
    again.trial_started("t1", trial_config_dict(spec), history=history)
    again.epoch("t1", result(3, 43.0))
    again.close()
    client, parent, runs = tracked_runs(mlflow_uri, "s1")
    assert parent.info.status == "FINISHED"
    run = runs["t1"]
    assert run.info.status == "RUNNING"  # reopened: nothing ended it this time
    values = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val_knn_top1")}
    assert values == {1: 41.0, 2: 42.0, 3: 43.0}


def test_a_store_lost_between_creating_a_run_and_its_params_still_gets_the_params(mlflow_uri):
    """The store goes away right after a trial's run is created (its params and config.json not
    yet logged): the retried call (the logger retries the same operation) finds the run and logs
    what it lacks. Found under load in the tracking-server outage test (a run with no params)."""
    spec, _, tracker = open_tracker(mlflow_uri, max_epochs=2)
    real = tracker.client
    failed = []

    class StoreGoneOnce:  # the real client, but the first log_batch meets a store that is away
        def __getattr__(self, name):
            if name == "log_batch" and not failed:
                def gone(*args, **kwargs):
                    failed.append(name)
                    raise ConnectionError("the store went away")
                return gone
            return getattr(real, name)

    tracker.client = StoreGoneOnce()
    config = trial_config_dict(spec)
    with pytest.raises(ConnectionError):
        tracker.trial_started("t1", config)  # the run is created, its params fail
    tracker.epoch("t1", result(1, 40.0))  # the next call on the run (a retry does the same)
    tracker.client = real
    tracker.close()
    client, _, runs = tracked_runs(mlflow_uri, "s1")
    run = runs["t1"]  # one run, not two
    assert failed and run.data.params["attraction_strategy"] == "leoclr" and run.data.params["epochs"] == "2"
    assert "config.json" in {a.path for a in client.list_artifacts(run.info.run_id)}
    assert metric_steps(client, run) == [1]


def test_a_trial_lost_with_a_killed_driver_ends_failed_with_the_reason(mlflow_uri):
    """The killed driver had started t2 (its run is RUNNING with an epoch logged) after Tune last
    saved its state; the resumed driver knows t1 only. Its end fails t2's run, saying why, keeps
    its epoch, and leaves the runs of known trials alone (t3: known to this driver, still open)."""
    from leoclr_platform.tracking.sweep_runs import LOST_REASON

    spec, _, first = open_tracker(mlflow_uri, max_epochs=2)
    for trial_id in ("t1", "t2", "t3"):
        first.trial_started(trial_id, trial_config_dict(spec))
        first.epoch(trial_id, result(1, 40.0))
    first.close("KILLED")
    _, _, resumed = open_tracker(mlflow_uri, max_epochs=2)
    resumed.trial_started("t3", trial_config_dict(spec))
    resumed.trial_ended("t1", status="FINISHED")
    resumed.fail_lost_runs(["t1"])
    resumed.close()
    client, _, runs = tracked_runs(mlflow_uri, "s1")
    assert runs["t1"].info.status == "FINISHED" and "failure_reason" not in runs["t1"].data.tags
    assert runs["t2"].info.status == "FAILED" and runs["t2"].data.tags["failure_reason"] == LOST_REASON
    assert metric_steps(client, runs["t2"]) == [1]  # what it logged stays
    assert runs["t3"].info.status == "RUNNING"


def test_the_background_logger_delivers_everything_before_close_returns(mlflow_uri):
    spec, _, tracker = open_tracker(mlflow_uri, synchronous=False)
    tracker.trial_started("t1", trial_config_dict(spec))
    for epoch in (1, 2):
        tracker.epoch("t1", result(epoch, 40.0))
    tracker.trial_ended("t1", status="KILLED")
    assert tracker.close(timeout=60) is True and tracker.logger.pending == 0
    client, _, runs = tracked_runs(mlflow_uri, "s1")
    assert metric_steps(client, runs["t1"]) == [1, 2]


def test_a_planted_secret_never_reaches_a_param_or_tag(mlflow_uri, monkeypatch):
    secret = "planted-s3cr3t-4c2f9"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    spec, _, record = smoke_record(root=f"/runs-{secret}/s1")
    tracker = tracking.SweepTracker(mlflow_uri, "leoclr/smoke", "s1", max_epochs=2, synchronous=True)
    tracker.open(record)
    tracker.trial_started("t1", {**trial_config_dict(spec), "data_root": f"/data/{secret}"})
    tracker.trial_ended("t1", status="FAILED", reason=f"cannot read /data/{secret}")
    tracker.close()
    _, parent, runs = tracked_runs(mlflow_uri, "s1")
    for run in (parent, runs["t1"]):
        for value in [*run.data.params.values(), *run.data.tags.values()]:
            assert secret not in value, value
    assert parent.data.params["results"] == "/runs-***/s1"


@pytest.mark.parametrize("status", ["FINISHED", "KILLED"])
def test_a_trial_without_checkpoint_logs_no_model(mlflow_uri, status):
    spec, _, tracker = open_tracker(mlflow_uri)
    tracker.trial_started("t1", trial_config_dict(spec))
    tracker.epoch("t1", result(1, 40.0))
    tracker.trial_ended("t1", status=status)
    tracker.close()
    _, _, runs = tracked_runs(mlflow_uri, "s1")
    assert runs["t1"].info.status == "FINISHED" and "model_uri" not in runs["t1"].data.tags
