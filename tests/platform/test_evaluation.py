"""`leoclr evaluate` of a registered encoder or a checkpoint in a real SQLite store (no Ray):
loaded through the safe path, evaluated with the engine's protocols beside the recalibrated
random baseline, logged as one parent run with a child run per protocol, linked to the model
version and its MLflow 3 LoggedModel."""

from __future__ import annotations

import pytest

from leoclr_platform.errors import RegistryError
from leoclr_platform.evaluation import EVALUATION_EXPERIMENT, check_request, evaluate_model, format_table
from leoclr_platform.registry import promote
from mlflow_checks import tracked_runs
from trainables.eval import ProtocolError

SETTINGS = {"linear": {"epochs": 2, "augment": "none"}, "semi_10pct": {"epochs": 2}}


def test_an_evaluation_logs_a_run_per_protocol_with_the_baseline_and_tags_the_version(recorded_sweep, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    uri = recorded_sweep["uri"]
    c, _, runs = tracked_runs(uri, "s1")
    source = runs["t1"]
    promoted = promote(uri, run_id=source.info.run_id, out=lambda line: None)
    printed = []
    result = evaluate_model(uri, "models:/leoclr-encoder@candidate", protocols="knn,linear,random_crop,semi_10pct",
                            settings=SETTINGS, out=printed.append)
    assert printed[0] == "evaluating models:/leoclr-encoder@candidate (version 1) in this process ..."
    assert printed[-1] == f"  make it the champion: leoclr promote --run-id {source.info.run_id} --alias champion"
    assert "  semi_10pct (semi): label_fraction=0.1, epochs=2, " in "\n".join(printed)
    assert result["source_run_id"] == source.info.run_id and result["version"] == promoted["version"]
    assert result["dataset"] == "digits" and result["protocols"]["linear"]["settings"]["epochs"] == 2
    parent = c.get_run(result["run_id"])
    assert c.get_experiment(parent.info.experiment_id).name == EVALUATION_EXPERIMENT
    tags, params, metrics = parent.data.tags, parent.data.params, parent.data.metrics
    assert tags["model_version"] == "1" and tags["model_alias"] == "candidate" and tags["role"] == "evaluation"
    assert tags["source_run_id"] == source.info.run_id and tags["trial_id"] == "t1"
    assert params["linear.augment"] == "none" and params["backbone"] == "small_cnn"
    assert params["semi_10pct.label_fraction"] == "0.1" and params["knn.k"] == "10"
    for key in ("linear_top1", "linear_top5", "knn_top1", "random_crop_top1", "random_crop_drop", "semi_10pct_top1",
                "baseline_knn_top1", "baseline_linear_top1", "baseline_semi_10pct_top1", "baseline_random_crop_drop"):
        assert key in metrics, key
    # the evaluation's kNN (test split) is the protocol of the trial's last-epoch test_knn_top1
    assert metrics["knn_top1"] == pytest.approx(source.data.metrics["test_knn_top1"], abs=1e-6)
    # the compute's own times, not the logging's
    assert parent.info.start_time == result["start_ms"] and parent.info.end_time == result["end_ms"]
    _check_children(c, parent, result)
    _check_logged_model_link(c, parent, promoted)
    tagged = c.get_model_version("leoclr-encoder", "1").tags
    assert tagged["eval.digits.run_id"] == result["run_id"]
    assert float(tagged["eval.digits.linear_top1"]) == pytest.approx(metrics["linear_top1"], abs=0.01)
    assert float(tagged["eval.digits.semi_10pct_top1"]) == pytest.approx(metrics["semi_10pct_top1"], abs=0.01)


def _check_children(c, parent, result) -> None:
    children = c.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    by_protocol = {r.data.tags["protocol"]: r for r in children}
    assert set(by_protocol) == {"knn", "linear", "random_crop", "semi_10pct"}
    semi = by_protocol["semi_10pct"]
    assert semi.data.params["epochs"] == "2" and semi.data.tags["role"] == "evaluation_protocol"
    assert semi.data.metrics["gain_semi_10pct_top1"] == pytest.approx(
        semi.data.metrics["semi_10pct_top1"] - semi.data.metrics["baseline_semi_10pct_top1"])
    history = c.get_metric_history(semi.info.run_id, "semi_10pct_train_loss")
    assert sorted(m.step for m in history) == [1, 2]  # one point per fine-tuning epoch
    entry = result["protocols"]["semi_10pct"]
    assert semi.info.start_time == entry["start_ms"] and semi.info.end_time == entry["end_ms"]
    assert all(entry["start_ms"] <= m.timestamp <= entry["end_ms"] for m in history)
    linear, crop = by_protocol["linear"], by_protocol["random_crop"]
    assert linear.info.end_time <= crop.info.start_time  # the two share a pass, split at the crop test
    assert [m.step for m in c.get_metric_history(linear.info.run_id, "linear_lr")] == [1, 2]


def _check_logged_model_link(c, parent, promoted) -> None:
    from leoclr_platform.evaluation_runs import logged_model_id

    model_id = logged_model_id(c.get_model_version("leoclr-encoder", promoted["version"]))
    assert model_id and c.get_logged_model(model_id).source_run_id == promoted["run_id"]
    linked = {m.key for m in c.get_logged_model(model_id).metrics or [] if m.run_id == parent.info.run_id}
    assert {"knn_top1", "linear_top1", "baseline_knn_top1"} <= linked  # the model's page lists them
    assert [m.model_id for m in parent.inputs.model_inputs] == [model_id]


def test_a_checkpoint_is_evaluated_without_the_registry(mlflow_uri, tiny_run, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    printed = []
    transfer = {"modes": ["linear"], "linear": {"epochs": 2, "augment": "none"}}
    result = evaluate_model(mlflow_uri, checkpoint=str(tiny_run), protocols="knn,transfer:digits",
                            settings={"transfer:digits": transfer}, out=printed.append)
    assert result["checkpoint"].endswith("epoch_0002")  # the newest checkpoint of the folder
    assert printed[0].startswith("evaluating checkpoint ") and "epoch_0002 in this process" in printed[0]
    # the resolved settings come before the compute (here: the run's own kNN k and t)
    assert printed[1].splitlines()[1].startswith("  knn (knn): k=10, temperature=0.1, ")
    from leoclr_platform import tracking

    c = tracking.client(mlflow_uri)
    parent = c.get_run(result["run_id"])
    assert parent.data.tags["checkpoint"] == result["checkpoint"] and parent.data.tags["model_version"] == ""
    assert parent.data.metrics["knn_top1"] == result["results"]["knn_top1"]
    assert "baseline_knn_top1" in parent.data.metrics
    assert parent.data.metrics["transfer_digits_linear_top1"] == parent.data.metrics["transfer_digits_top1"]
    assert "baseline_transfer_digits_linear_top1" in parent.data.metrics
    child = c.search_runs([parent.info.experiment_id], "tags.protocol = 'transfer:digits'")[0]
    steps = [m.step for m in c.get_metric_history(child.info.run_id, "transfer_digits_linear_train_loss")]
    assert steps == [1, 2]  # the transfer's linear half, per epoch
    assert c.search_registered_models() == []


def test_a_missing_alias_fails_before_any_download(recorded_sweep, monkeypatch):
    import leoclr_platform.evaluation as evaluation

    monkeypatch.setattr(evaluation, "download_encoder", lambda *a: pytest.fail("downloaded"))
    promote(recorded_sweep["uri"], sweep="s1", out=lambda line: None)
    with pytest.raises(RegistryError, match=r"no alias @champion"):
        evaluate_model(recorded_sweep["uri"], "models:/leoclr-encoder@champion", out=lambda line: None)


@pytest.mark.parametrize("protocols, settings, message", [
    ("knn,linaer", {}, r"--protocols: protocol='linaer': unknown protocol \(did you mean 'linear'\?\)"),
    ("semi:1.5", {}, r"the label fraction 1.5 must be in \(0, 1\]"),
    ("knn", {"knn": {"kk": 3}}, r"knn: unknown field\(s\) 'kk' \(did you mean 'k'\?\) of KnnProtocol"),
    ("knn", {"semi_10pct": {"epochs": 3}}, r"--set: protocol='semi_10pct': settings for a protocol that is not run"),
    ("semi_10pct", {"semi": {"epochs": 0}}, r"semi_10pct: FinetuneProtocol\.epochs=0: must be an integer >= 1"),
])
def test_bad_protocols_and_settings_are_refused_before_anything_runs(protocols, settings, message):
    with pytest.raises(ProtocolError, match=message):
        check_request(protocols, settings)


def test_the_request_names_the_protocols_in_their_run_order():
    request = check_request("random_crop,knn", {"linear": {"epochs": 3}})
    assert request["protocols"] == "linear,random_crop,knn" and request["baseline"] is True


def test_the_printed_table_shows_the_baseline_and_the_gain():
    outcome = {"dataset": "digits", "device": "cpu", "wall_s": 1.0, "baseline": {"knn_top1": 50.0},
               "protocols": {
                   "knn": {"kind": "knn", "metrics": {"top1": 75.5, "top5": 98.0},
                           "baseline": {"metrics": {"top1": 50.0, "top5": 90.0}}},
                   "random_crop": {"kind": "random_crop", "metrics": {"top1": 60.0, "top5": 90.0, "drop": 20.0},
                                   "baseline": {"metrics": {"top1": 30.0, "top5": 80.0, "drop": 10.0}}}}}
    lines = format_table(outcome).splitlines()
    assert lines[0] == "digits on cpu (1.0 s); baseline: random weights, BatchNorm recalibrated (same backbone and seed)"
    assert lines[2:] == [
        "  kNN                                    75.50   98.00   50.00  +25.50",
        "  linear (random crops)                  60.00   90.00   30.00  +30.00",
        "    drop from centre view (Table 7)      20.00           10.00",
    ]
