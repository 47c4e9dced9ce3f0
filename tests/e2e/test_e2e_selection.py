"""Selection never reads test labels (issue 12): a sweep whose TEST labels are permuted makes the
same decisions as the same sweep on the true labels, and its confirmation stage runs with the
contract's tags; a resumed finished sweep runs nothing again.

Each sweep is `leoclr sweep` in its own process with its own in-process Ray runtime, because the
permutation is switched on by an environment variable of the training processes
(`LEOCLR_TEST_ONLY_PERMUTE_TEST_LABELS`, trainables/data/load.py): a Ray runtime's workers take
the environment of the process that started it. Trials run one at a time (max_concurrent 1), so
ASHA sees the results in the same order in both sweeps; TPE's random start-up draws (more than
the budget) make the configurations depend on the sampler seed only, so any difference in the
decisions would come from the values the trials report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from leoclr_platform import tracking
from leoclr_platform.sweep.results import creation_index
from trainables.data.load import PERMUTE_TEST_LABELS_ENV

ROOT = Path(__file__).resolve().parents[2]

SPACE = """\
name: selection
mode: search
base:
  dataset: photo_patches
  image_size: 16
  photo_patches: {train_per_class: 16, test_per_class: 8}
  backbone: small_cnn
  batch_size: 32
  queue_size: 64
  bn_splits: 2
  knn_k: 10
  max_steps_per_epoch: 2
space:
  attraction_strategy: {choice: [leoclr, moco_v2]}
  temperature: {loguniform: [0.05, 0.5]}
objective: {metric: val_knn_top1, mode: max}
budget: {trials: 5, max_epochs: 2, grace_period: 1, reduction_factor: 2, max_concurrent: 1,
         confirm: {top: 1, seeds: 2}}
resources: {workers: 1, cpus_per_worker: 1, gpus_per_worker: 0}
seeds: [0]
"""


def _start(tmp_path: Path, name: str, *extra: str, permute: bool = False) -> tuple[list[str], subprocess.Popen]:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "LEOCLR_CACHE": str(tmp_path / f"cache-{name}"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "platform"), os.environ.get("PYTHONPATH", "")])}
    env.pop("RAY_ADDRESS", None)
    env.pop(PERMUTE_TEST_LABELS_ENV, None)
    if permute:
        env[PERMUTE_TEST_LABELS_ENV] = "12"
    argv = [sys.executable, "-m", "leoclr_platform", "sweep", *extra, "--storage", str(tmp_path / "runs"),
            "--num-cpus", "2", "--tracking-uri", f"sqlite:///{tmp_path / (name + '.db')}"]
    return argv, subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)


def _wait(started: tuple[list[str], subprocess.Popen]) -> None:
    argv, proc = started
    out, err = proc.communicate(timeout=1200)
    assert proc.returncode == 0, f"{argv}\n{out[-4000:]}\n{err[-6000:]}"


def _sweep(tmp_path: Path, name: str, *extra: str, permute: bool = False) -> None:
    _wait(_start(tmp_path, name, *extra, permute=permute))


def _decisions(summary: dict) -> dict:
    """What selection decided, with the trial ids (random per sweep) replaced by creation order."""
    rows = sorted(summary["trials"], key=creation_index)
    index = {r["trial_id"]: creation_index(r) for r in rows}
    confirm = summary["confirm"]
    return {
        "trials": [(r["params"], r["status"], r["epochs"], r["val_knn_top1"]) for r in rows],
        "best": (index[summary["best"]["trial_id"]], summary["best"]["params"], summary["best"]["val_knn_top1"]),
        "confirmed": [(index[s["confirm_of"]], s["strategy"], s["params"]) for s in confirm["selected"]],
        "confirm_seeds": confirm["seeds"],
        "confirm_val": sorted((index[r["confirm_of"]], r["seed"], r["val_knn_top1"]) for r in confirm["trials"]),
    }


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("selection")
    (tmp / "space.yaml").write_text(SPACE)
    # the two sweeps run side by side (each its own process, Ray runtime, store and study; each
    # runs its trials one at a time, so neither's decisions depend on the other's timing)
    started = [_start(tmp, "plain", "space.yaml", "--name", "plain"),
               _start(tmp, "permuted", "space.yaml", "--name", "permuted", permute=True)]
    for one in started:
        _wait(one)
    return tmp


def _summary(tmp: Path, name: str) -> dict:
    return json.loads((tmp / "runs" / name / "summary.json").read_text())


def test_permuted_test_labels_change_no_decision(sweeps):
    plain, permuted = _summary(sweeps, "plain"), _summary(sweeps, "permuted")
    assert _decisions(plain) == _decisions(permuted)
    assert len(plain["trials"]) == 5 and plain["best"] is not None
    # the permutation did reach the trials: the test metrics (reported only) differ
    tests = [sorted((creation_index(r), r["seed"], r["test_knn_top1"]) for r in s["confirm"]["trials"])
             for s in (plain, permuted)]
    assert all(v is not None for _, _, v in tests[0])
    assert tests[0] != tests[1]


def test_confirm_stage_runs_with_the_contract_tags(sweeps):
    summary = _summary(sweeps, "plain")
    confirm = summary["confirm"]
    # the best of EACH searched strategy (one ASHA stopped everywhere is confirmed too)
    strategies = {r["params"]["attraction_strategy"] for r in summary["trials"] if r["status"] != "ERROR"}
    assert {s["strategy"] for s in confirm["selected"]} == strategies
    assert confirm["seeds"] == [1000, 1001] and confirm["status"] == "done"
    assert len(confirm["trials"]) == 2 * len(confirm["selected"])
    assert all(r["status"] == "COMPLETED" and r["epochs"] == 2 for r in confirm["trials"])
    assert json.loads((sweeps / "runs" / "plain" / "sweep.json").read_text())["confirm"]["status"] == "done"

    c = tracking.client(f"sqlite:///{sweeps / 'plain.db'}")
    exp = c.get_experiment_by_name("leoclr/selection")
    runs = c.search_runs([exp.experiment_id], "tags.sweep = 'plain' AND tags.role = 'trial'", max_results=100)
    search = {r.data.tags["trial_id"]: r for r in runs if r.data.tags.get("stage") == "search"}
    confirm_runs = [r for r in runs if r.data.tags.get("stage") == "confirm"]
    assert len(search) == 5 and len(confirm_runs) == len(confirm["trials"]) and len(runs) == 5 + len(confirm_runs)
    parent = c.search_runs([exp.experiment_id], "tags.sweep = 'plain' AND tags.role = 'sweep'")[0]
    for run in confirm_runs:
        tags = run.data.tags
        assert tags["seed"] in ("1000", "1001") and tags["confirm_of"] in search
        assert tags["strategy"] == search[tags["confirm_of"]].data.tags["strategy"]
        assert tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.info.status == "FINISHED" and "model_uri" in tags
        assert run.data.params["epochs"] == "2"
    # after the search: importance and the baseline on the confirmation seeds, on the parent run
    names = {a.path for a in c.list_artifacts(parent.info.run_id)}
    assert {"importance.json", "baseline.json", "summary.json"} <= names
    baseline = json.loads((sweeps / "runs" / "plain" / "baseline.json").read_text())
    assert baseline["seeds"] == [1000, 1001]
    assert parent.data.metrics["baseline_val_knn_top1"] == pytest.approx(baseline["mean"]["val_knn_top1"])
    importance = json.loads((sweeps / "runs" / "plain" / "importance.json").read_text())
    # each method computed, or the reason why not (fANOVA refuses values without variance)
    assert importance["n_trials"] >= 2 and set(importance["methods"]) | set(importance["errors"]) == {"fanova", "ped_anova"}
    for method, values in importance["methods"].items():
        assert all(parent.data.metrics[f"importance_{method}_{p}"] == v for p, v in values.items())


def test_resuming_a_finished_sweep_runs_nothing_again(sweeps):
    before = _summary(sweeps, "plain")
    confirm_dirs = sorted(p.name for p in (sweeps / "runs" / "plain" / "confirm").glob("train_driver_fn_*"))
    _sweep(sweeps, "plain", "--resume", "plain")
    after = _summary(sweeps, "plain")
    assert sorted(p.name for p in (sweeps / "runs" / "plain" / "confirm").glob("train_driver_fn_*")) == confirm_dirs
    assert _decisions(after) == _decisions(before)
    c = tracking.client(f"sqlite:///{sweeps / 'plain.db'}")
    exp = c.get_experiment_by_name("leoclr/selection")
    runs = c.search_runs([exp.experiment_id], "tags.sweep = 'plain' AND tags.stage = 'confirm'", max_results=100)
    assert len(runs) == len(before["confirm"]["trials"])


def test_sync_replays_the_confirm_runs_and_the_parent_s_analysis(sweeps):
    """`leoclr sync` into a fresh store gives the same confirm runs and parent metrics as live."""
    from leoclr_platform.sweep import sync_sweep

    live_uri, synced_uri = f"sqlite:///{sweeps / 'plain.db'}", f"sqlite:///{sweeps / 'synced.db'}"
    sync_sweep("plain", storage=str(sweeps / "runs"), tracking_uri=synced_uri, out=lambda *a: None)
    seen = []
    for uri in (live_uri, synced_uri):
        c = tracking.client(uri)
        exp = c.get_experiment_by_name("leoclr/selection")
        runs = c.search_runs([exp.experiment_id], "tags.sweep = 'plain' AND tags.stage = 'confirm'", max_results=100)
        parent = c.search_runs([exp.experiment_id], "tags.sweep = 'plain' AND tags.role = 'sweep'")[0]
        confirm = sorted((r.data.tags["confirm_of"], r.data.tags["seed"], r.info.status,
                          r.data.metrics.get("val_knn_top1")) for r in runs)
        analysis = {k: v for k, v in parent.data.metrics.items() if k.startswith(("importance_", "baseline_"))}
        artifacts = {a.path for a in c.list_artifacts(parent.info.run_id)} & {"importance.json", "baseline.json"}
        seen.append((confirm, analysis, artifacts))
    assert seen[0][0] and seen[0][1] and seen[0][2] == {"importance.json", "baseline.json"}
    assert seen[1] == seen[0]
