"""End-to-end sweeps on a real in-process Ray runtime, with a real Optuna study in SQLite and a
real MLflow store: three sweeps, each serving several checks.

- a two-worker search (Ray Train DDP trials), tracked, then promoted, evaluated (here and as a
  Ray task) and reported: the whole main job;
- one search that holds a clearly worse data set, a diverging learning rate and a sparse kNN
  monitor: ASHA stops the worse trials at its rung, the diverged trial fails with its reason
  while the others go on, and kNN runs only at the rungs and the end;
- a grid: every cell x seed, the objective only at the end.
The pieces are unit-tested without Ray in tests/platform/.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import optuna
import pytest

from leoclr_platform import spaces
from leoclr_platform.sweep import SweepRequest, run_sweep
from mlflow_checks import assert_runs_match_outcome, tracked_runs

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def smoke(**changes) -> spaces.SweepSpec:
    spec = spaces.load_space("smoke")
    spec = dataclasses.replace(spec, **changes)
    spaces.validate_space(spec)
    return spec


def study_trials(root: Path, name: str):
    storage = optuna.storages.RDBStorage(f"sqlite:///{root / 'optuna.db'}")
    return optuna.load_study(study_name=name, storage=storage).trials


def results_of(trial_row) -> list[dict]:
    return [json.loads(line) for line in Path(trial_row["path"], "result.json").read_text().splitlines()]


# ---------------------------------------------------------------------------------------------
# The main job: a two-worker search, tracked, promoted, evaluated, reported
@pytest.fixture(scope="module")
def tiny_sweep(ray_runtime, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("tiny")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = smoke(workers=2, trials=2, max_epochs=2, max_concurrent=2)
    outcome = run_sweep(SweepRequest(spec, name="tiny", storage=str(tmp_path), tracking_uri=uri))
    return tmp_path, uri, outcome


def test_tiny_sweep_end_to_end_with_two_workers_per_trial(tiny_sweep):
    tmp_path, uri, outcome = tiny_sweep
    assert len(outcome.trials) == 2 and outcome.errors == 0
    root = tmp_path / "tiny"
    # per-epoch metrics reached Tune for every trial (ASHA may stop one after epoch 1)
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(str(root))
    frames, configs = analysis.trial_dataframes, analysis.get_all_configs()
    assert len(frames) == 2
    for path, frame in frames.items():
        epochs = list(frame["epoch"])
        assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) >= 1
        assert {"val_knn_top1", "loss", "lr", "images_per_s", "epoch_time_s"} <= set(frame.columns)
        # conditional parameter: enqueue only for the LeOCLR family
        config = configs[path]
        assert (config.get("enqueue") is not None) == (config["attraction_strategy"] != "moco_v2")
    assert max(len(f) for f in frames.values()) == 2
    # the Optuna study persisted every trial with its value
    trials = study_trials(root, "tiny")
    assert len(trials) == 2 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    best = outcome.best
    assert best["val_knn_top1"] == max(t.value for t in trials)
    assert best["checkpoint"] and (Path(best["checkpoint"]) / "checkpoint.pt").exists()
    summary = json.loads((root / "summary.json").read_text())
    assert summary["best"]["trial_id"] == best["trial_id"]
    # sweep.json keeps what ran with: the environment the parent run and `leoclr sync` record
    meta = json.loads((root / "sweep.json").read_text())
    assert meta["hardware"]["hardware.cluster"] == "4 CPU, 0 GPU" and meta["provenance"]["code_hash"]


def test_tiny_sweep_is_tracked_in_mlflow(tiny_sweep):
    tmp_path, uri, outcome = tiny_sweep
    client, parent, runs = assert_runs_match_outcome(uri, outcome)
    assert outcome.tracking["parent_run_id"] == parent.info.run_id and outcome.tracking["undelivered"] == 0
    # the parent: the space file, the budget, the objective, the environment of sweep.json
    assert [a.path for a in client.list_artifacts(parent.info.run_id, "space")] == ["space/smoke.yaml"]
    assert parent.data.params["objective"] == "val_knn_top1 (max)" and parent.data.params["trials"] == "2"
    assert parent.data.params["workers"] == "2" and parent.data.params["seeds"] == "[0]"
    assert parent.data.tags["git_commit"] and parent.data.tags["versions.torch"]
    assert parent.data.tags["hardware.per_trial"] == "2 worker(s) x (1 CPU, 0 GPU)"
    for row in outcome.trials:
        run = runs[row["trial_id"]]
        params, tags = run.data.params, run.data.tags
        # the full resolved config, under readable names, with the sampled values
        assert params["attraction_strategy"] == row["params"]["attraction_strategy"] == tags["strategy"]
        # params are rounded for display (4 significant digits); config.json holds the full values
        assert float(params["temperature"]) == pytest.approx(row["params"]["temperature"], rel=1e-3)
        assert float(params["key_momentum"]) == pytest.approx(row["params"]["key_momentum"], rel=1e-4)
        assert params["queue_size"] == "64" and params["photo_patches.train_per_class"] == "8"
        assert tags["sweep"] == "tiny" and tags["seed"] == "0" and tags["mechanism"] == "momentum"
        assert tags["mlflow.parentRunId"] == parent.info.run_id and len(tags["config_hash"]) == 16
        for key in ("loss", "val_knn_top1", "lr_actual", "images_per_s", "epoch_time_s"):
            assert len(client.get_metric_history(run.info.run_id, key)) == row["epochs"], key
    finished = [runs[r["trial_id"]] for r in outcome.trials if r["status"] == "COMPLETED"]
    assert finished
    import mlflow
    import torch

    from trainables.checkpoint import load_encoder

    # what a researcher sees first: names, the parent's summary, datasets, system metrics, times
    assert parent.data.metrics["best_val_knn_top1"] == pytest.approx(outcome.best["val_knn_top1"])
    assert parent.data.tags["best_trial"] == outcome.best["trial_id"]
    for row in outcome.trials:
        run = client.get_run(runs[row["trial_id"]].info.run_id)
        assert run.info.run_name.startswith(row["params"]["attraction_strategy"] + " ")
        name = run.info.run_name.split(" [stopped@")[0]  # a stopped trial's name says so
        assert name.endswith(" #" + row["trial_id"][:8]) or "_" in row["trial_id"], name
        assert ("[stopped@" in run.info.run_name) == (row["status"] == "STOPPED")
        assert {i.dataset.name for i in run.inputs.dataset_inputs} == \
            {"photo_patches:train", "photo_patches:val", "photo_patches:test"}
        assert run.data.metrics["system/memory_rss_mb"] > 0  # rank 0 of the Ray Train workers
        last = max(m.timestamp for m in client.get_metric_history(run.info.run_id, "loss"))
        assert run.info.end_time == last and run.info.start_time < last  # the trial's own end
    for run in finished:
        files = {a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")}
        assert {"checkpoint/encoder.pt", "checkpoint/config.json", "checkpoint/checkpoint.pt"} <= files
        model = mlflow.pytorch.load_model(run.data.tags["model_uri"])  # pt2: no pickle involved
        safe = load_encoder(run.data.tags["checkpoint_path"])  # encoder.pt, weights_only
        x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            assert torch.allclose(model(x), safe.backbone(x), atol=1e-5)


def test_promote_evaluate_here_and_as_a_ray_task_and_report(tiny_sweep, tmp_path):
    from leoclr_platform.evaluation import evaluate_model
    from leoclr_platform.registry import promote
    from leoclr_platform.report.command import report_sweep

    _, uri, outcome = tiny_sweep
    client, parent, runs = tracked_runs(uri, "tiny")
    finished = {t: r for t, r in runs.items() if r.info.status == "FINISHED"}
    first = promote(uri, sweep="tiny", out=lambda *a: None)
    best = client.get_run(first["run_id"])  # the best value (ties: the earliest run)
    assert best.data.metrics["val_knn_top1"] == max(r.data.metrics["val_knn_top1"] for r in finished.values())
    assert client.get_model_version_by_alias("leoclr-encoder", "candidate").run_id == best.info.run_id

    result = evaluate_model(uri, "models:/leoclr-encoder@candidate", protocol_overrides={"epochs": 3},
                            out=lambda *a: None)
    assert result["source_run_id"] == best.info.run_id and result["version"] == first["version"]
    run = client.get_run(result["run_id"])
    # the evaluation's kNN (test split) is the protocol of the trial's last-epoch test_knn_top1
    assert run.data.metrics["knn_top1"] == pytest.approx(best.data.metrics["test_knn_top1"], abs=1e-6)
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
            assert row["best"] == pytest.approx(max(t["val_knn_top1"] for t in done))
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert "report/ablation.html" in logged and "report/learning_curves.png" in logged


def test_the_local_ray_runtime_serves_its_dashboard_on_127_0_0_1_only(ray_runtime):
    from leoclr_platform.sweep.compat import dashboard_url
    from processes import listening_addresses

    host, port = dashboard_url().split("://")[-1].rsplit(":", 1)
    assert host == "127.0.0.1"
    assert listening_addresses(int(port)) == {"127.0.0.1"}


def test_the_local_runtime_prestarts_no_workers_its_jobs_cannot_use(ray_runtime):
    """start_local_ray hands the raylet RAY_prestart_worker_first_driver=0 (prestarted workers
    lack the job's runtime_env and never run its work) and leaves the driver's environment as it
    was."""
    import ray

    from leoclr_platform.sweep.runtime import PRESTART_ENV
    from processes import processes

    gcs_port = ray.get_runtime_context().gcs_address.rsplit(":", 1)[1]
    (raylet,) = [pid for pid, _, args in processes()
                 if args.split(" ", 1)[0].endswith("/raylet") and f":{gcs_port} " in args + " "]
    environ = Path(f"/proc/{raylet}/environ").read_bytes().split(b"\0")
    assert f"{PRESTART_ENV}=0".encode() in environ
    assert PRESTART_ENV not in os.environ and "RAY_GCS_SERVER_PORT" not in os.environ


# ---------------------------------------------------------------------------------------------
# ASHA, divergence and a sparse kNN monitor in one search
def mixed_space(tmp_path: Path) -> spaces.SweepSpec:
    """smoke + a data set choice (kNN on scikit-learn's digits ~90 %, on photo_patches ~40 %: a
    difference no noise hides), a learning rate that diverges at once (1e12, finite check every
    step), and kNN every 3 epochs over 3 with ASHA's first rung at 2. The sampler seed is the
    first whose first draw is a good trial (digits, lr 0.06) and whose next draws hold a worse
    and a diverging one; trials run one at a time, so ASHA meets the worse ones after a good one."""
    text = (ROOT / "search_spaces" / "smoke.yaml").read_text()
    text = text.replace("  dataset: photo_patches\n", "  max_steps_per_epoch: 4\n  finite_check_every: 1\n"
                                                      "  knn_every: 3\n")
    text = text.replace("space:\n", "space:\n  dataset: {choice: [digits, photo_patches]}\n"
                                    "  lr: {choice: [0.06, 1.0e+12]}\n")
    text = text.replace("trials: 3", "trials: 4").replace("max_epochs: 2", "max_epochs: 3")
    path = tmp_path / "mixed.yaml"
    path.write_text(text.replace("grace_period: 1", "grace_period: 2"))
    spec = spaces.load_space(str(path))

    def fits(seed: int) -> bool:
        draws = spaces.sample_configs(dataclasses.replace(spec, seeds=[seed]), spec.trials)
        good = [(d["dataset"], d["lr"]) for d in draws]
        return (good[0] == ("digits", 0.06) and ("photo_patches", 0.06) in good[1:4]
                and any(lr == 1e12 for _, lr in good[1:4]))

    spec = dataclasses.replace(spec, seeds=[next(s for s in range(200) if fits(s))], max_concurrent=1)
    spaces.validate_space(spec)
    return spec


@pytest.fixture(scope="module")
def mixed_sweep(ray_runtime, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("mixed")
    spec = mixed_space(tmp_path)
    assert spaces.asha_rungs(spec) == [2]
    outcome = run_sweep(SweepRequest(spec, name="mixed", storage=str(tmp_path),
                                     tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"))
    return tmp_path, outcome


def test_asha_stops_a_clearly_worse_trial_at_its_rung(mixed_sweep):
    _, outcome = mixed_sweep
    trained = [t for t in outcome.trials if t["params"]["lr"] == 0.06]
    bad = [t for t in trained if t["params"]["dataset"] == "photo_patches"]
    good = [t for t in trained if t["params"]["dataset"] == "digits"]
    assert bad and good, outcome.trials
    assert all(t["val_knn_top1"] < min(g["val_knn_top1"] for g in good) for t in bad), outcome.trials
    # the first photo_patches trial meets a better digits result at the rung (epoch 2) and is
    # stopped (later ones may tie with it at the median, so ASHA may let them pass)
    assert any(t["epochs"] == 2 and t["status"] == "STOPPED" for t in bad), outcome.trials
    assert outcome.best["params"]["dataset"] == "digits" and outcome.best["epochs"] == 3
    # in MLflow: FINISHED (not a failure), the reason with ASHA's rung cutoff, the checkpoint
    tmp_path, _ = mixed_sweep
    client, _, runs = tracked_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "mixed")
    for row in (t for t in outcome.trials if t["status"] == "STOPPED"):
        run = runs[row["trial_id"]]
        assert run.info.status == "FINISHED" and "model_uri" not in run.data.tags
        reason = run.data.tags["stopped_early"]
        assert reason.startswith(f"stopped by ASHA at epoch {row['epochs']} of 3: val_knn_top1 ") and \
            " < rung cutoff " in reason, reason
        assert row["stop"]["cutoff"] > row["val_knn_top1"]  # kept in summary.json for `leoclr sync`
        assert "checkpoint/checkpoint.pt" in {a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")}


def test_a_diverging_trial_fails_with_its_reason_and_the_sweep_goes_on(mixed_sweep):
    tmp_path, outcome = mixed_sweep
    diverged = [t for t in outcome.trials if t["params"]["lr"] == 1e12]
    fine = [t for t in outcome.trials if t["params"]["lr"] == 0.06]
    assert diverged and fine, outcome.trials
    for t in diverged:
        assert t["status"] == "ERROR" and "loss is not finite" in t["error"], t
        assert t["epochs"] is None  # stopped in its first epoch, not retried to the end
    assert all(t["status"] in ("COMPLETED", "STOPPED") for t in fine)
    states = [t.state for t in study_trials(tmp_path / "mixed", "mixed") if t.params["lr"] == 1e12]
    assert states and all(s == optuna.trial.TrialState.FAIL for s in states)
    # MLflow: the diverged run is FAILED with the reason as a tag; the others went on
    client, _, runs = assert_runs_match_outcome(outcome.tracking["uri"], outcome)
    for t in diverged:
        assert "loss is not finite" in runs[t["trial_id"]].data.tags["failure_reason"]


def test_a_sparse_knn_monitor_runs_at_the_asha_rung_and_the_end_only(mixed_sweep):
    """knn_every: 3 over 3 epochs with grace 2: kNN at the rung (2) and the end (3), not at epoch 1;
    Tune accepts the results without the objective, ASHA and Optuna use the ones with it."""
    tmp_path, outcome = mixed_sweep
    trained = [t for t in outcome.trials if t["params"]["lr"] == 0.06]
    for t in trained:
        assert [r["epoch"] for r in results_of(t) if "val_knn_top1" in r] == [e for e in (2, 3) if e <= t["epochs"]]
        assert t["val_knn_top1"] is not None and t["epochs"] >= 2  # ASHA never stops before its first rung
    finished = [t for t in study_trials(tmp_path / "mixed", "mixed") if t.state.name == "COMPLETE"]
    assert len(finished) == len(trained) and all(t.value is not None for t in finished)
    assert "TUNE_DISABLE_STRICT_METRIC_CHECKING" not in os.environ  # restored after the sweep


# ---------------------------------------------------------------------------------------------
# A grid
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
                    .replace("seeds: [0]", "seeds: [0, 1, 2]"))
    spec = spaces.load_space(str(path))
    assert spec.total_trials() == 6 and spec.max_epochs == 2
    uri = f"sqlite:///{tmp_path / 'grid.db'}"
    outcome = run_sweep(SweepRequest(spec, name="grid", storage=str(tmp_path), tracking_uri=uri))
    cells = sorted((t["params"]["attraction_strategy"], t["seed"]) for t in outcome.trials)
    assert cells == [(s, seed) for s in ("leoclr", "moco_v2") for seed in (0, 1, 2)]
    # a 2-strategy x 3-seed grid gives the report's paired table: leoclr vs moco_v2 on seeds 0, 1, 2
    from leoclr_platform.report.command import report_sweep

    report = report_sweep(uri, "grid", tmp_path / "report", out=lambda *a: None)
    [comparison] = report.comparisons
    assert (comparison.group, comparison.reference) == ("leoclr", "moco_v2")
    assert sorted(map(int, comparison.seeds)) == [0, 1, 2] and comparison.n == 3 and comparison.ci is not None
    value = {(t["params"]["attraction_strategy"], t["seed"]): t["val_knn_top1"] for t in outcome.trials}
    diffs = [value[("leoclr", s)] - value[("moco_v2", s)] for s in (0, 1, 2)]
    assert comparison.mean_diff == pytest.approx(sum(diffs) / 3)
    assert "Paired comparisons" in report.markdown
    assert all(t["status"] == "COMPLETED" and t["epochs"] == 2 and t["val_knn_top1"] is not None
               for t in outcome.trials)
    for t in outcome.trials:
        assert [("val_knn_top1" in r) for r in results_of(t)] == [False, True]
