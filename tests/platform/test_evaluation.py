"""`leoclr evaluate` of a registered encoder in a real SQLite store (no Ray): loaded through the
safe path, evaluated with the engine's protocol, logged to an evaluation run linked to the
model version."""

from __future__ import annotations

import pytest

from leoclr_platform.errors import RegistryError
from leoclr_platform.evaluation import EVALUATION_EXPERIMENT, evaluate_model, format_results
from leoclr_platform.registry import promote
from mlflow_checks import tracked_runs

PROTOCOL = {"epochs": 2, "augment": "none"}


def test_an_evaluation_is_logged_and_tags_the_version(recorded_sweep, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    uri = recorded_sweep["uri"]
    c, _, runs = tracked_runs(uri, "s1")
    source = runs["t1"]
    promoted = promote(uri, run_id=source.info.run_id, out=lambda line: None)
    printed = []
    result = evaluate_model(uri, "models:/leoclr-encoder@candidate", protocol_overrides=PROTOCOL,
                            out=printed.append)
    assert printed[0] == "evaluating models:/leoclr-encoder@candidate (version 1) in this process ..."
    assert printed[-1] == f"  make it the champion: leoclr promote --run-id {source.info.run_id} --alias champion"
    assert result["source_run_id"] == source.info.run_id and result["version"] == promoted["version"]
    assert result["dataset"] == "digits" and result["protocol"]["epochs"] == 2
    run = c.get_run(result["run_id"])
    assert c.get_experiment(run.info.experiment_id).name == EVALUATION_EXPERIMENT
    assert run.data.tags["model_version"] == "1" and run.data.tags["model_alias"] == "candidate"
    assert run.data.tags["source_run_id"] == source.info.run_id and run.data.tags["trial_id"] == "t1"
    assert run.data.params["protocol.augment"] == "none" and run.data.params["backbone"] == "small_cnn"
    for key in ("linear_top1", "linear_top5", "knn_top1", "random_crop_top1", "random_crop_drop"):
        assert key in run.data.metrics, key
    # the evaluation's kNN (test split) is the protocol of the trial's last-epoch test_knn_top1
    assert run.data.metrics["knn_top1"] == pytest.approx(source.data.metrics["test_knn_top1"], abs=1e-6)
    tagged = c.get_model_version("leoclr-encoder", "1").tags
    assert tagged["eval.digits.run_id"] == result["run_id"]
    assert float(tagged["eval.digits.linear_top1"]) == pytest.approx(run.data.metrics["linear_top1"], abs=0.01)


def test_a_missing_alias_fails_before_any_download(recorded_sweep, monkeypatch):
    import leoclr_platform.evaluation as evaluation

    monkeypatch.setattr(evaluation, "download_encoder", lambda *a: pytest.fail("downloaded"))
    promote(recorded_sweep["uri"], sweep="s1", out=lambda line: None)
    with pytest.raises(RegistryError, match=r"no alias @champion"):
        evaluate_model(recorded_sweep["uri"], "models:/leoclr-encoder@champion", out=lambda line: None)


def test_the_printed_table_has_the_three_evaluations():
    results = {"n_train": 100, "n_test": 50, "num_classes": 10, "linear_top1": 80.0, "linear_top5": 99.0,
               "knn_top1": 75.5, "knn_top5": 98.0, "random_crop_top1": 60.0, "random_crop_top5": 90.0,
               "random_crop_drop": 20.0}
    text = format_results(results, {"dataset": "digits", "protocol": {"epochs": 2, "batch_size": 64, "lr": 30.0,
                                                                      "augment": "none"}})
    assert text.splitlines() == [
        "digits: 100 train / 50 test images, 10 classes; linear protocol: 2 epochs, batch 64, lr 30, augment=none",
        "                           top-1   top-5",
        "  linear (center view)     80.00   99.00",
        "  kNN                      75.50   98.00",
        "  linear (random crops)    60.00   90.00",
        "  random-crop drop (Table 7): 20.00 points",
    ]
