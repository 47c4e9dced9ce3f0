"""Assertions on what a sweep left in MLflow, shared by the sweep and tracking tests."""

from __future__ import annotations

import pytest


def tracked_runs(uri: str, sweep: str):
    """(parent run, {trial_id: child run}) of a sweep, straight from the tracking API."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    parents = client.search_runs(exps, f"tags.sweep = '{sweep}' AND tags.role = 'sweep'")
    assert len(parents) == 1, [p.info.run_name for p in parents]
    children = client.search_runs(exps, f"tags.mlflow.parentRunId = '{parents[0].info.run_id}'")
    by_trial = {}
    for run in children:
        assert run.data.tags["trial_id"] not in by_trial, "a trial has two runs"
        by_trial[run.data.tags["trial_id"]] = run
    return client, parents[0], by_trial


def metric_steps(client, run, key: str = "loss") -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run.info.run_id, key))


def assert_runs_match_outcome(uri: str, outcome, lost_ok: bool = False) -> None:
    """One child run per trial; epochs 1..n logged once each; status and model as the outcome says.
    With `lost_ok` (a sweep resumed after its driver was killed) a run whose trial the outcome
    lacks is allowed if it ended FAILED with the lost-trial reason (SweepTracker.fail_lost_runs)."""
    from leoclr_platform.tracking.sweep_runs import LOST_REASON

    client, parent, runs = tracked_runs(uri, outcome.name)
    assert parent.info.status == "FINISHED"
    trials = {t["trial_id"] for t in outcome.trials}
    if lost_ok:
        for trial_id in set(runs) - trials:
            lost = runs.pop(trial_id)
            assert lost.info.status == "FAILED" and lost.data.tags["failure_reason"] == LOST_REASON, lost
    assert set(runs) == trials, {"runs without a trial": set(runs) - trials, "trials without a run": trials - set(runs)}
    for row in outcome.trials:
        run = runs[row["trial_id"]]
        # stopped by ASHA: FINISHED (not a failure), told apart by the stopped_early tag
        expected = {"COMPLETED": "FINISHED", "STOPPED": "FINISHED", "ERROR": "FAILED"}[row["status"]]
        assert run.info.status == expected, (row, run.info.status)
        assert ("stopped_early" in run.data.tags) == (row["status"] == "STOPPED"), run.data.tags
        steps = metric_steps(client, run)
        assert steps == list(range(1, (row["epochs"] or 0) + 1)), (row, steps)
        if row["epochs"]:
            assert run.data.metrics["val_knn_top1"] == pytest.approx(row["val_knn_top1"])
        assert ("model_uri" in run.data.tags) == (row["status"] == "COMPLETED"), run.data.tags
    return client, parent, runs
