"""The contract's `stage` tags on trial runs, confirm runs tracked from their rows, and the
parent run's own results (log_parent): on a real SQLite store, without Ray."""

from __future__ import annotations

from leoclr_platform import tracking
from leoclr_platform.sweep.confirm import track_confirm_rows, trial_stage_tags
from leoclr_platform.sweep.results import error_line
from leoclr_platform.sweep.trial import resolved_config
from leoclr_platform.tracking.tune_callback import MlflowTrialCallback
from mlflow_checks import tracked_runs
from platform_fakes import FakeTrial, smoke_record


def test_search_and_confirm_runs_carry_their_stage(mlflow_uri, tmp_path):
    spec, meta, record = smoke_record()
    tracker = tracking.SweepTracker(mlflow_uri, meta["experiment"], "s1", max_epochs=spec.max_epochs,
                                    synchronous=True)
    tracker.open(record)
    callback = MlflowTrialCallback(tracker, resolve_config=lambda config: resolved_config(spec, config).to_dict(),
                                   disk_history=lambda trial_id: {}, error_line=error_line,
                                   trial_tags=trial_stage_tags)
    callback.on_trial_start(0, [], FakeTrial("search1"))
    cell = {"attraction_strategy": "moco_v2", "temperature": 0.3, "key_momentum": 0.95, "seed": 1000,
            "confirm_of": "search1"}
    callback.on_trial_start(0, [], FakeTrial("conf1", config={"cell": cell}))
    # a confirm run the live callback never opened (the store was away) is created from its row
    row = {"trial_id": "conf2", "status": "ERROR", "params": {k: v for k, v in cell.items()
                                                              if k not in ("seed", "confirm_of")},
           "seed": 1001, "confirm_of": "search1", "error": "boom"}
    track_confirm_rows(tracker, spec, str(tmp_path), [row])
    (tmp_path / "importance.json").write_text("{}")
    tracker.log_parent(artifacts=[tmp_path / "importance.json"], metrics={"baseline_val_knn_top1": 12.5},
                       tags={"baseline_error": "none"})
    tracker.close()
    client, parent, runs = tracked_runs(mlflow_uri, "s1")
    assert runs["search1"].data.tags["stage"] == "search" and "confirm_of" not in runs["search1"].data.tags
    for trial_id, seed in (("conf1", "1000"), ("conf2", "1001")):
        tags = runs[trial_id].data.tags
        assert (tags["stage"], tags["confirm_of"], tags["seed"], tags["strategy"]) == \
            ("confirm", "search1", seed, "moco_v2")
    assert runs["conf2"].info.status == "FAILED" and runs["conf2"].data.tags["failure_reason"] == "boom"
    assert parent.data.metrics["baseline_val_knn_top1"] == 12.5 and parent.data.tags["baseline_error"] == "none"
    assert "importance.json" in {a.path for a in client.list_artifacts(parent.info.run_id)}
