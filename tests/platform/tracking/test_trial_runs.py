"""What a trial run shows in MLflow, on a real SQLite store: its own start and end times, a
readable name and description, rounded params with config.json, dataset inputs, system metrics,
and an ASHA-stopped trial told apart from a failure."""

from __future__ import annotations

import json
import time

from leoclr_platform import tracking
from leoclr_platform.tracking.run_text import display_value
from mlflow_checks import tracked_runs
from platform_fakes import result, smoke_record, trial_config_dict

SIZES = {"data_pretrain_images": 112, "data_memory_images": 112, "data_val_images": 16, "data_test_images": 64}


def open_tracker(uri, **changes):
    spec, meta, record = smoke_record("s1", **changes)
    tracker = tracking.SweepTracker(uri, meta["experiment"], "s1", max_epochs=spec.max_epochs, synchronous=True)
    tracker.open(record)
    return spec, record, tracker


def test_a_run_spans_the_trial_not_the_tracking(mlflow_uri):
    spec, _, tracker = open_tracker(mlflow_uri, max_epochs=2)
    tracker.trial_started("t1", trial_config_dict(spec), start_time=1_699_999_990.0)
    for epoch in (1, 2):
        tracker.epoch("t1", result(epoch, 40.0 + epoch))  # timestamps 1_700_000_001, ..._002
    tracker.trial_ended("t1", status="FINISHED")
    tracker.trial_started("t2", trial_config_dict(spec), start_time=1_699_999_995.0)
    before = time.time()
    tracker.trial_ended("t2", status="FAILED", reason="boom")
    after = time.time()
    tracker.trial_ended("t1", status="FINISHED")  # the sweep's end (finish_tracking) catches up later
    tracker.close()
    _, _, runs = tracked_runs(mlflow_uri, "s1")
    assert runs["t1"].info.start_time == 1_699_999_990_000 and runs["t1"].info.end_time == 1_700_000_002_000
    assert runs["t2"].info.start_time == 1_699_999_995_000
    assert before * 1000 - 1 <= runs["t2"].info.end_time <= after * 1000 + 1  # a failure ends when it fails


def test_a_replayed_trial_starts_and_ends_as_its_results_say(mlflow_uri):
    spec, _, tracker = open_tracker(mlflow_uri, max_epochs=2)
    history = {1: result(1, 41.0, time_total_s=11.0), 2: result(2, 42.0, time_total_s=12.0)}
    tracker.trial_started("t1", trial_config_dict(spec), history=history)
    tracker.trial_ended("t1", status="FINISHED")
    tracker.close()
    _, _, runs = tracked_runs(mlflow_uri, "s1")
    assert runs["t1"].info.start_time == 1_699_999_990_000  # timestamp 1_700_000_001 - 11 s
    assert runs["t1"].info.end_time == 1_700_000_002_000


def test_a_trial_run_has_a_name_a_description_rounded_params_and_its_full_config(mlflow_uri):
    spec, _, tracker = open_tracker(mlflow_uri, max_epochs=2)
    config = trial_config_dict(spec, {"attraction_strategy": "leoclr", "temperature": 0.172345678,
                                      "key_momentum": 0.99873421, "enqueue": "both"})
    tracker.trial_started("99e6ea60", config)
    tracker.close()
    client, parent, runs = tracked_runs(mlflow_uri, "s1")
    run = runs["99e6ea60"]
    assert run.info.run_name == "leoclr t=0.1723 m=0.998734 enq=both #99e6ea60"
    assert run.data.params["temperature"] == "0.1723" and run.data.params["key_momentum"] == "0.998734"
    # lr: per 256 images (the config's); lr_scaled: what the optimizer starts from
    assert run.data.params["lr"] == str(config["lr"])
    assert run.data.params["lr_scaled"] == display_value(config["lr"] * config["batch_size"] / 256)
    description = run.data.tags["mlflow.note.content"]
    assert "leoclr" in description and "temperature = 0.1723" in description and "seed: 0" in description
    saved = json.loads(open(client.download_artifacts(run.info.run_id, "config.json")).read())
    assert saved["temperature"] == 0.172345678 and saved == json.loads(json.dumps(config))
    assert "temperature" in parent.data.tags["mlflow.note.content"]  # the space, described


def test_datasets_are_inputs_and_system_metrics_are_logged_unless_switched_off(mlflow_uri):
    spec, _, tracker = open_tracker(mlflow_uri, max_epochs=2)
    tracker.trial_started("t1", trial_config_dict(spec))
    tracker.epoch("t1", result(1, 41.0, **SIZES, **{"system/cpu_percent": 93.0, "system/memory_rss_mb": 512.0}))
    tracker.epoch("t1", result(2, 42.0, **SIZES))  # the data again: not logged twice
    tracker.system_metrics = False
    tracker.trial_started("t2", trial_config_dict(spec))
    tracker.epoch("t2", result(1, 41.0, **{"system/cpu_percent": 93.0}))
    tracker.close()
    client, _, runs = tracked_runs(mlflow_uri, "s1")
    inputs = client.get_run(runs["t1"].info.run_id).inputs.dataset_inputs
    by_name = {i.dataset.name: i for i in inputs}
    assert set(by_name) == {"photo_patches:train", "photo_patches:val", "photo_patches:test"}
    train = by_name["photo_patches:train"]
    assert json.loads(train.dataset.profile)["num_images"] == 112 and len(train.dataset.digest) == 16
    assert {t.key: t.value for t in train.tags} == {"mlflow.data.context": "train"}
    assert json.loads(by_name["photo_patches:val"].dataset.profile)["num_images"] == 16
    assert "scikit-image" in json.loads(train.dataset.source)["uri"]
    assert runs["t1"].data.metrics["system/cpu_percent"] == 93.0
    assert not any(k.startswith("system/") for k in runs["t2"].data.metrics)


def test_an_asha_stopped_trial_says_why_and_keeps_its_checkpoint(mlflow_uri, tiny_run):
    spec, _, tracker = open_tracker(mlflow_uri, max_epochs=4)
    tracker.trial_started("t1", trial_config_dict(spec))
    tracker.epoch("t1", result(1, 39.8))
    stop = {"epoch": 1, "rung": 1.0, "metric": "val_knn_top1", "mode": "max", "value": 39.8, "cutoff": 41.8}
    tracker.trial_ended("t1", status="KILLED", stop=stop, checkpoint=str(tiny_run / "epoch_0001"))
    tracker.close()
    client, _, runs = tracked_runs(mlflow_uri, "s1")
    run = runs["t1"]
    assert run.info.status == "FINISHED" and "model_uri" not in run.data.tags
    assert run.data.tags["stopped_early"] == "stopped by ASHA at epoch 1 of 4: val_knn_top1 39.8 < rung cutoff " \
                                             "41.8 (rung at epoch 1.0)"
    assert run.data.tags["mlflow.note.content"].startswith("**Stopped by ASHA at epoch 1 of 4")
    assert "seed: 0" in run.data.tags["mlflow.note.content"]  # then the trial's own description
    assert run.info.run_name.endswith(" [stopped@1]")  # marked in comparison charts too
    assert run.info.end_time == 1_700_000_001_000
    files = {a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")}
    assert "checkpoint/checkpoint.pt" in files
