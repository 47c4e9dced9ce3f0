"""Sweeps on a real in-process Ray runtime (one per module), real Optuna study in SQLite."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from leoclr_platform import spaces
from leoclr_platform.sweep import SweepError, run_sweep
from mlflow_checks import assert_runs_match_outcome, metric_steps, tracked_runs

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
LEOCLR = [sys.executable, "-m", "leoclr_platform"]


def smoke(**changes) -> spaces.SweepSpec:
    spec = spaces.load_space("smoke")
    spec = dataclasses.replace(spec, **changes)
    spaces.validate_space(spec)
    return spec


def study_trials(root: Path, name: str):
    storage = optuna.storages.RDBStorage(f"sqlite:///{root / 'optuna.db'}")
    return optuna.load_study(study_name=name, storage=storage).trials


@pytest.fixture(scope="module")
def tiny_sweep(ray_runtime, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("tiny")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = smoke(workers=2, trials=3, max_epochs=2, max_concurrent=2)
    outcome = run_sweep(spec, name="tiny", storage=str(tmp_path), tracking_uri=uri)
    return tmp_path, uri, outcome


def test_tiny_sweep_end_to_end_with_two_workers_per_trial(tiny_sweep):
    tmp_path, uri, outcome = tiny_sweep
    assert len(outcome.trials) == 3 and outcome.errors == 0
    root = tmp_path / "tiny"
    # per-epoch metrics reached Tune for every trial (ASHA may stop some after epoch 1)
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(str(root))
    frames, configs = analysis.trial_dataframes, analysis.get_all_configs()
    assert len(frames) == 3
    for path, frame in frames.items():
        epochs = list(frame["epoch"])
        assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) >= 1
        assert {"knn_top1", "loss", "lr", "images_per_s", "epoch_time_s"} <= set(frame.columns)
        # conditional parameter: enqueue only for the LeOCLR family
        config = configs[path]
        assert (config.get("enqueue") is not None) == (config["attraction_strategy"] != "moco_v2")
    assert max(len(f) for f in frames.values()) == 2
    # the Optuna study persisted every trial with its value
    trials = study_trials(root, "tiny")
    assert len(trials) == 3 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    best = outcome.best
    assert best["knn_top1"] == max(t.value for t in trials)
    assert best["checkpoint"] and (Path(best["checkpoint"]) / "checkpoint.pt").exists()
    summary = json.loads((root / "summary.json").read_text())
    assert summary["best"]["trial_id"] == best["trial_id"]


def test_tiny_sweep_is_tracked_in_mlflow(tiny_sweep):
    tmp_path, uri, outcome = tiny_sweep
    client, parent, runs = assert_runs_match_outcome(uri, outcome)
    assert outcome.tracking["parent_run_id"] == parent.info.run_id and outcome.tracking["undelivered"] == 0
    # the parent: the space file, the budget, the objective
    assert [a.path for a in client.list_artifacts(parent.info.run_id, "space")] == ["space/smoke.yaml"]
    assert parent.data.params["objective"] == "knn_top1 (max)" and parent.data.params["trials"] == "3"
    assert parent.data.tags["git_commit"] and parent.data.tags["versions.torch"]
    for row in outcome.trials:
        run = runs[row["trial_id"]]
        params, tags = run.data.params, run.data.tags
        # the full resolved config, under readable names, with the sampled values
        assert params["attraction_strategy"] == row["params"]["attraction_strategy"] == tags["strategy"]
        assert float(params["temperature"]) == pytest.approx(row["params"]["temperature"])
        assert float(params["key_momentum"]) == pytest.approx(row["params"]["key_momentum"])
        assert params["queue_size"] == "64" and params["photo_patches.train_per_class"] == "8"
        assert tags["sweep"] == "tiny" and tags["seed"] == "0" and tags["mechanism"] == "momentum"
        assert tags["mlflow.parentRunId"] == parent.info.run_id and len(tags["config_hash"]) == 16
        for key in ("loss", "knn_top1", "lr", "images_per_s", "epoch_time_s"):
            assert len(client.get_metric_history(run.info.run_id, key)) == row["epochs"], key
    finished = [runs[r["trial_id"]] for r in outcome.trials if r["status"] == "COMPLETED"]
    assert finished
    import mlflow
    import torch

    from trainables.checkpoint import load_encoder

    for run in finished:
        files = {a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")}
        assert {"checkpoint/encoder.pt", "checkpoint/config.json", "checkpoint/checkpoint.pt"} <= files
        model = mlflow.pytorch.load_model(run.data.tags["model_uri"])  # pt2: no pickle involved
        safe = load_encoder(run.data.tags["checkpoint_path"])  # encoder.pt, weights_only
        x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            assert torch.allclose(model(x), safe.backbone(x), atol=1e-5)


def test_promote_evaluate_and_report(tiny_sweep, tmp_path):
    from leoclr_platform.promotion import RegistryError, evaluate_model, promote
    from leoclr_platform.reporting import report_sweep

    _, uri, outcome = tiny_sweep
    client, parent, runs = tracked_runs(uri, "tiny")
    finished = {t: r for t, r in runs.items() if r.info.status == "FINISHED"}
    first = promote(uri, sweep="tiny", out=lambda *a: None)
    best = client.get_run(first["run_id"])  # the best value (ties: the earliest run)
    assert best.data.metrics["knn_top1"] == max(r.data.metrics["knn_top1"] for r in finished.values())
    assert first["alias"] == "candidate"
    version = client.get_model_version_by_alias("leoclr-encoder", "candidate")
    assert version.run_id == best.info.run_id
    assert version.tags["sweep"] == "tiny" and version.tags["config_hash"] == best.data.tags["config_hash"]
    assert float(version.tags["objective_value"]) == pytest.approx(best.data.metrics["knn_top1"], abs=1e-3)
    # promoting the same run again reuses its version; another run moves the alias
    assert promote(uri, sweep="tiny", out=lambda *a: None)["version"] == first["version"]
    other = next((r for r in finished.values() if r.info.run_id != best.info.run_id), None)
    if other is not None:
        moved = promote(uri, run_id=other.info.run_id, out=lambda *a: None)
        assert moved["previous_version"] == first["version"] != moved["version"]
        assert client.get_model_version_by_alias("leoclr-encoder", "candidate").run_id == other.info.run_id
        promote(uri, sweep="tiny", out=lambda *a: None)  # back to the best
    stopped = [r for r in runs.values() if r.info.status == "KILLED"]
    if stopped:
        with pytest.raises(RegistryError, match="has no logged encoder"):
            promote(uri, run_id=stopped[0].info.run_id, out=lambda *a: None)
    with pytest.raises(RegistryError, match="no alias @champion"):
        evaluate_model(uri, "models:/leoclr-encoder@champion", out=lambda *a: None)

    result = evaluate_model(uri, "models:/leoclr-encoder@candidate", protocol_overrides={"epochs": 3},
                            out=lambda *a: None)
    assert result["source_run_id"] == best.info.run_id and result["version"] == first["version"]
    run = client.get_run(result["run_id"])
    assert run.data.tags["model_version"] == first["version"] and run.data.tags["model_alias"] == "candidate"
    assert run.data.tags["source_run_id"] == best.info.run_id
    for key in ("linear_top1", "linear_top5", "knn_top1", "random_crop_top1", "random_crop_drop"):
        assert key in run.data.metrics, key
    # the kNN of the evaluation is the same protocol as the sweep's last-epoch monitor
    assert run.data.metrics["knn_top1"] == pytest.approx(best.data.metrics["knn_top1"], abs=1e-6)
    tagged = client.get_model_version("leoclr-encoder", first["version"]).tags
    assert tagged["eval.photo_patches.run_id"] == result["run_id"]
    assert float(tagged["eval.photo_patches.linear_top1"]) == pytest.approx(run.data.metrics["linear_top1"], abs=0.01)
    # the same evaluation as a Ray task (what `leoclr evaluate --address` / a Ray job does)
    printed = []
    remote = evaluate_model(uri, "models:/leoclr-encoder@candidate", protocol_overrides={"epochs": 3},
                            address="auto", out=printed.append)
    assert any("in a Ray task" in line for line in printed), printed
    assert remote["results"]["knn_top1"] == result["results"]["knn_top1"]
    assert remote["results"]["linear_top1"] == pytest.approx(result["results"]["linear_top1"])

    report = report_sweep(uri, "tiny", tmp_path / "report", out=lambda *a: None)
    strategies = {t["params"]["attraction_strategy"] for t in outcome.trials}
    assert {row["attraction_strategy"] for row in report.rows} == strategies
    for row in report.rows:
        done = [t for t in outcome.trials if t["params"]["attraction_strategy"] == row["attraction_strategy"]
                and t["status"] == "COMPLETED"]
        assert row["n"] == len(done)
        if done:
            assert row["best"] == pytest.approx(max(t["knn_top1"] for t in done))
    assert {"ablation.md", "ablation.html", "learning_curves.png", "objective_vs_params.png"} <= \
        {p.name for p in report.files.values()}
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert "report/ablation.html" in logged and "report/learning_curves.png" in logged


def test_asha_stops_a_clearly_worse_trial(ray_runtime, tmp_path):
    # The objective differs wildly by construction: kNN top-1 on sklearn's digits (~90 %) vs on
    # photo_patches (~40 %). Trials run one at a time, so from the second trial on ASHA compares
    # each trial's epoch-1 result with the earlier ones and stops photo_patches trials.
    text = (ROOT / "search_spaces" / "smoke.yaml").read_text()
    text = text.replace("  dataset: photo_patches\n", "  max_steps_per_epoch: 4\n")
    text = text.replace("space:\n", "space:\n  dataset: {choice: [digits, photo_patches]}\n")
    path = tmp_path / "asha.yaml"
    path.write_text(text.replace("trials: 3", "trials: 4"))
    spec = spaces.load_space(str(path))
    # pick the sampler seed whose first draw is a good trial, so a bad one always comes later
    seed = next(s for s in range(50)
                if spaces.sample_configs(dataclasses.replace(spec, seeds=[s]), 1)[0]["dataset"] == "digits")
    spec = dataclasses.replace(spec, seeds=[seed], max_concurrent=1)
    spaces.validate_space(spec)
    outcome = run_sweep(spec, name="asha", storage=str(tmp_path))
    bad = [t for t in outcome.trials if t["params"]["dataset"] == "photo_patches"]
    good = [t for t in outcome.trials if t["params"]["dataset"] == "digits"]
    assert bad and good, outcome.trials
    assert all(t["knn_top1"] < min(g["knn_top1"] for g in good) for t in bad), outcome.trials
    # the first photo_patches trial meets a better digits result at rung 1 and is stopped
    # (later ones may tie with it at the median, so ASHA may let them pass)
    assert any(t["epochs"] == 1 and t["status"] == "STOPPED" for t in bad), outcome.trials
    assert outcome.best["params"]["dataset"] == "digits" and outcome.best["epochs"] == 2


def test_grid_runs_every_cell_and_seed(ray_runtime, tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text((ROOT / "search_spaces" / "smoke.yaml").read_text()
                    .replace("mode: search", "mode: grid")
                    .replace("  temperature: {loguniform: [0.1, 0.5]}\n", "")
                    .replace("  key_momentum: {one_minus_log: [0.9, 0.99]}\n", "")
                    .replace("  enqueue: {choice: [both, first], when: {attraction_strategy: [leoclr, leoclr_random_original, attract_all]}}\n", "")
                    # a grid needs the objective only at the end: epoch 1 reports no kNN (Tune
                    # must not insist on the metric in every result)
                    .replace("  knn_k: 10\n", "  knn_k: 10\n  knn_every: 2\n")
                    .replace("seeds: [0]", "seeds: [0, 1]"))
    spec = spaces.load_space(str(path))
    assert spec.total_trials() == 4 and spec.max_epochs == 2
    outcome = run_sweep(spec, name="grid", storage=str(tmp_path))
    cells = sorted((t["params"]["attraction_strategy"], t["seed"]) for t in outcome.trials)
    assert cells == [("leoclr", 0), ("leoclr", 1), ("moco_v2", 0), ("moco_v2", 1)]
    assert all(t["status"] == "COMPLETED" and t["epochs"] == 2 and t["knn_top1"] is not None
               for t in outcome.trials)
    for t in outcome.trials:
        results = [json.loads(line) for line in Path(t["path"], "result.json").read_text().splitlines()]
        assert [("knn_top1" in r) for r in results] == [False, True]


def test_a_search_with_knn_every_runs_knn_at_the_asha_rungs_only(ray_runtime, tmp_path):
    """knn_every: 3 over 3 epochs with grace 2: kNN at the rung (2) and the end (3), not at epoch 1;
    Tune accepts the results without the objective, ASHA and Optuna use the ones with it."""
    spec = smoke(trials=2, max_epochs=3, grace_period=2, base={**spaces.load_space("smoke").base, "knn_every": 3})
    outcome = run_sweep(spec, name="sparse", storage=str(tmp_path))
    assert outcome.errors == 0 and len(outcome.trials) == 2
    for t in outcome.trials:
        results = [json.loads(line) for line in Path(t["path"], "result.json").read_text().splitlines()]
        assert [r["epoch"] for r in results if "knn_top1" in r] == [e for e in (2, 3) if e <= t["epochs"]]
        assert t["knn_top1"] is not None and t["epochs"] >= 2  # ASHA never stops before its first rung
    finished = [t for t in study_trials(tmp_path / "sparse", "sparse") if t.state.name == "COMPLETE"]
    assert len(finished) == 2 and all(t.value is not None for t in finished)
    import os

    assert "TUNE_DISABLE_STRICT_METRIC_CHECKING" not in os.environ  # restored after the sweep


def test_existing_name_and_missing_resume_are_refused(ray_runtime, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "sweep.json").write_text("{}")
    with pytest.raises(SweepError, match="already exists .* use --resume taken"):
        run_sweep(smoke(), name="taken", storage=str(tmp_path))
    with pytest.raises(SweepError, match="no sweep to resume"):
        run_sweep(None, name="nothing", storage=str(tmp_path), resume=True)


def test_impossible_resources_are_refused_before_trials(ray_runtime, tmp_path):
    spec = smoke(workers=2, cpus_per_worker=3)
    with pytest.raises(SweepError, match=r"resources: one trial needs 2 worker\(s\) .* = 6 CPU.*cluster has 4 CPU"):
        run_sweep(spec, name="big", storage=str(tmp_path))


def test_bad_space_fails_before_ray_starts(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nbase: {temperature: -1}\nspace: {lr: {uniform: [0.1, 0.01]}}\n")
    start = time.time()
    proc = subprocess.run(LEOCLR + ["sweep", str(bad), "--storage", str(tmp_path)], capture_output=True,
                          text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert f"{bad}: " in proc.stderr and "leoclr: error:" in proc.stderr
    assert "Started a local Ray instance" not in proc.stdout + proc.stderr
    assert not (tmp_path / "bad").exists()
    assert time.time() - start < 60


def test_resume_after_the_driver_is_killed(tmp_path):
    """Kill `leoclr sweep` once a trial is complete; --resume finishes it in the same study."""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "LEOCLR_CACHE": str(tmp_path / "cache")}
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["sweep", "smoke", "--name", "killed", "--storage", str(tmp_path), "--num-cpus", "2",
            "--trials", "3", "--tracking-uri", uri]
    log = open(tmp_path / "first_driver.log", "w")
    proc = subprocess.Popen(LEOCLR + args, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    db = tmp_path / "killed" / "optuna.db"
    deadline = time.time() + 720
    tail = lambda: (tmp_path / "first_driver.log").read_text()[-3000:]  # noqa: E731
    try:
        while time.time() < deadline:
            if db.exists():
                try:
                    with sqlite3.connect(db) as con:
                        done = con.execute("select count(*) from trials where state = 'COMPLETE'").fetchone()[0]
                except sqlite3.Error:
                    done = 0
                if done >= 1:
                    break
            assert proc.poll() is None, "the sweep ended before it could be interrupted:\n" + tail()
            time.sleep(1)
        else:
            pytest.fail("no trial completed in time:\n" + tail())
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything it started
        proc.wait()
        log.close()
    subprocess.run(["pkill", "-9", "-f", "killed/train"], check=False)
    before = study_trials(tmp_path / "killed", "killed")
    completed_before = [t for t in before if t.state == optuna.trial.TrialState.COMPLETE]
    assert 1 <= len(completed_before) < 3

    resumed = subprocess.run(LEOCLR + ["sweep", "--resume", "killed", "--storage", str(tmp_path),
                                       "--num-cpus", "2"], env=env, cwd=tmp_path, capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    after = study_trials(tmp_path / "killed", "killed")
    # the same study was continued: trials completed before the kill are kept, unchanged
    for t in completed_before:
        assert after[t.number].state == optuna.trial.TrialState.COMPLETE and after[t.number].value == t.value
    # nothing is left RUNNING (trials cut by the kill are closed as FAIL; see docs/sweeps.md)
    assert not [t for t in after if t.state == optuna.trial.TrialState.RUNNING]
    # and Tune finished every trial of the budget, with a result
    summary = json.loads((tmp_path / "killed" / "summary.json").read_text())
    finished = [r for r in summary["trials"] if r["status"] in ("COMPLETED", "STOPPED")]
    assert len(finished) >= 3 and all(r["knn_top1"] is not None for r in finished)
    # MLflow (the store came from sweep.json): the same parent run, one run per trial, every
    # epoch exactly once (trials cut by the kill were continued, not duplicated)
    from types import SimpleNamespace

    assert_runs_match_outcome(uri, SimpleNamespace(name="killed", trials=summary["trials"]))


def test_a_diverging_trial_fails_with_its_reason_and_the_sweep_goes_on(ray_runtime, tmp_path):
    text = (ROOT / "search_spaces" / "smoke.yaml").read_text()
    text = text.replace("  knn_k: 10\n", "  knn_k: 10\n  finite_check_every: 1\n")
    text = text.replace("space:\n", "space:\n  lr: {choice: [0.06, 1.0e+12]}\n")
    path = tmp_path / "diverge.yaml"
    path.write_text(text.replace("trials: 3", "trials: 4"))
    spec = spaces.load_space(str(path))
    outcome = run_sweep(spec, name="diverge", storage=str(tmp_path))
    diverged = [t for t in outcome.trials if t["params"]["lr"] == 1e12]
    fine = [t for t in outcome.trials if t["params"]["lr"] == 0.06]
    assert diverged and fine, outcome.trials
    for t in diverged:
        assert t["status"] == "ERROR" and "loss is not finite" in t["error"], t
        assert t["epochs"] is None  # stopped in its first epoch, not retried to the end
    assert all(t["status"] == "COMPLETED" and t["epochs"] == 2 for t in fine)
    states = {t.params["lr"]: t.state for t in study_trials(tmp_path / "diverge", "diverge")}
    assert states[1e12] == optuna.trial.TrialState.FAIL
    # MLflow: the diverged run is FAILED with the reason as a tag; the others went on
    client, _, runs = assert_runs_match_outcome(outcome.tracking["uri"], outcome)
    for t in diverged:
        assert "loss is not finite" in runs[t["trial_id"]].data.tags["failure_reason"]


def test_the_best_trial_is_one_that_ran_every_epoch(tmp_path):
    """A trial ASHA stopped after epoch 1 may report a higher kNN than the finished ones (an
    earlier epoch's value): the sweep's best is the best finished trial; with no finished trial,
    the best stopped one."""
    from types import SimpleNamespace

    from leoclr_platform.sweep import summarize

    spec = smoke(max_epochs=2)

    def result(trial_id, epoch, knn, error=None):
        return SimpleNamespace(config={"attraction_strategy": "moco_v2", "temperature": 0.2, "key_momentum": 0.99},
                               metrics={"trial_id": trial_id, "epoch": epoch, "knn_top1": knn}, error=error,
                               path=str(tmp_path / trial_id))

    results = [result("stopped", 1, 60.0), result("done_lo", 2, 40.0), result("done_hi", 2, 45.0),
               result("failed", 2, 99.0, error=RuntimeError("x"))]
    outcome = summarize(spec, "s", str(tmp_path), results)
    assert [t["status"] for t in outcome.trials] == ["STOPPED", "COMPLETED", "COMPLETED", "ERROR"]
    assert outcome.best["trial_id"] == "done_hi" and outcome.best["knn_top1"] == 45.0
    only_stopped = summarize(spec, "s", str(tmp_path), [result("a", 1, 30.0), result("b", 1, 35.0)])
    assert only_stopped.best["trial_id"] == "b"


def test_a_sweep_started_before_in_trial_runs_resumes_with_ray_train():
    from leoclr_platform.sweep import resumed_spec, uses_ray_train

    spec = smoke()
    meta = {"space_text": spec.text, "space_source": spec.label, "spec_changes": {}}
    assert resumed_spec(meta).launcher == "ray_train"  # old sweep.json: no "launcher"
    assert resumed_spec({**meta, "launcher": "in_trial"}).launcher == "auto"
    assert not uses_ray_train(spec, "/tmp/runs/x") and uses_ray_train(spec, "s3://bucket/runs/x")
