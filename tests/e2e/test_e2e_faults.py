"""Faults injected for real into running sweeps (docs/reliability.md lists them):

- a real `mlflow server` on 127.0.0.1 (started with `leoclr ui`) killed in the middle of a sweep
  and started again once an epoch was trained without it: training goes on, the logger catches
  up, nothing is lost; then `leoclr sync` replays the same sweep from disk into a fresh store
  and gets the same record, the parent run included;
- the process that trains killed mid-run (the Tune trial actor, or a Ray Train worker): the
  trial resumes from its checkpoint and ends with the metrics of an uninterrupted run; its
  MLflow run has every epoch exactly once; a planted secret never reaches a param or tag;
- the sweep driver killed (`leoclr sweep` in a process of its own), then `--resume`: the same
  study and runs are continued.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import torch

from leoclr_platform import spaces
from leoclr_platform.sweep import SweepRequest, run_sweep, sync_sweep
from mlflow_checks import assert_runs_match_outcome, metric_steps, tracked_runs
from processes import free_port, in_this_runtime, kill_processes_working_under, listening_addresses

pytestmark = pytest.mark.slow
LEOCLR = [sys.executable, "-m", "leoclr_platform"]


def smoke(**changes) -> spaces.SweepSpec:
    spec = dataclasses.replace(spaces.load_space("smoke"), **changes)
    spaces.validate_space(spec)
    return spec


# ---------------------------------------------------------------------------------------------
# a real tracking server that goes away in the middle of a sweep
class Server:
    """`leoclr ui` on a SQLite store: the tracking server users start."""

    def __init__(self, home: Path, port: int):
        self.home, self.port = home, port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 180) -> None:
        env = {**os.environ, "LEOCLR_HOME": str(self.home)}
        env.pop("MLFLOW_TRACKING_URI", None)
        self.log = open(self.home / f"server-{time.time():.0f}.log", "w")
        self.proc = subprocess.Popen(LEOCLR + ["ui", "--port", str(self.port)], env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.proc.poll() is None, (self.home / self.log.name).read_text()[-2000:]
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(1)
        raise TimeoutError(f"mlflow server did not answer on {self.url}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log.close()


@pytest.fixture
def server(tmp_path):
    srv = Server(tmp_path, free_port())
    srv.start()
    yield srv
    srv.stop()


def parent_run_logged(server: Server) -> bool:
    """The sweep's run is in the server's store (the store was in use before it went away)."""
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(server.url)
        return bool(client.search_runs([e.experiment_id for e in client.search_experiments()],
                                       "tags.role = 'sweep'"))
    except Exception:  # noqa: BLE001 - not yet
        return False


def checkpointed_epochs(root: Path) -> dict[str, float]:
    """{checkpoint folder: when its metrics.json was written} of the trial's epochs on disk. The
    loop checkpoints every epoch straight to the storage path (Tune copies its own result files
    there only now and then, so they cannot tell when an epoch ended)."""
    epochs = {}
    for metrics in root.glob("train/trial_*/epoch_*/metrics.json"):
        try:
            epochs[metrics.parent.name] = metrics.stat().st_mtime
        except OSError:  # pruned meanwhile
            pass
    return epochs


def test_sweep_survives_a_tracking_server_outage_and_sync_replays_it(ray_runtime, server, tmp_path):
    # the UI/server binds this machine only
    assert listening_addresses(server.port) == {"127.0.0.1"}
    root = tmp_path / "runs" / "outage"
    outage = {}

    def take_the_server_down_while_an_epoch_trains():
        """Down as soon as the first epoch is checkpointed (the sweep's run is already in the
        store, and four epochs are left to train); up again only once an epoch ended while the
        server was down, however long that takes under load."""
        deadline = time.time() + 300
        while time.time() < deadline and not parent_run_logged(server):
            time.sleep(0.5)
        while time.time() < deadline and not checkpointed_epochs(root):
            time.sleep(0.1)
        outage["down"] = time.time()
        server.stop()  # the store goes away while the trial trains on
        while time.time() < deadline and "during" not in outage:
            after = [when for when in checkpointed_epochs(root).values() if when > outage["down"]]
            if after:
                outage["during"] = after[0]
            time.sleep(0.2)
        server.start()
        outage["up"] = time.time()

    chaos = threading.Thread(target=take_the_server_down_while_an_epoch_trains, daemon=True)
    chaos.start()
    # five epochs: the server goes down in epoch 2 or 3 and there are epochs left to train without it
    spec = smoke(trials=1, max_epochs=5, base={**spaces.load_space("smoke").base, "max_steps_per_epoch": 6})
    outcome = run_sweep(SweepRequest(spec, name="outage", storage=str(tmp_path / "runs"), tracking_uri=server.url))
    chaos.join(timeout=300)
    assert "up" in outage, "the server was never taken down"
    assert "during" in outage, ("no epoch was trained during the outage", outage)
    (row,) = outcome.trials
    assert row["status"] == "COMPLETED" and outcome.tracking["undelivered"] == 0
    # training did not wait: the trial ran on while the server was down, and the epoch it
    # trained then reached MLflow once the server was back
    client, parent, runs = assert_runs_match_outcome(server.url, outcome)
    run = runs[row["trial_id"]]
    logged = client.get_metric_history(run.info.run_id, "loss")
    # a metric's timestamp is the end of its epoch (Tune's result timestamp, in whole seconds)
    assert any(outage["down"] - 1 < m.timestamp / 1000 < outage["up"] for m in logged), \
        ("the epoch trained during the outage is missing", outage, [m.timestamp for m in logged])
    assert "model_uri" in run.data.tags

    # `leoclr sync` replays the same sweep from the files on disk into another store
    fresh = f"sqlite:///{tmp_path / 'replay.db'}"
    sync_sweep("outage", storage=str(tmp_path / "runs"), tracking_uri=fresh, out=lambda *a: None)
    replay_client, replay_parent, replay_runs = tracked_runs(fresh, "outage")
    assert set(replay_runs) == set(runs) and replay_parent.info.status == "FINISHED"
    # the same parent run: one record (tracking/sweep_record.py), the environment from sweep.json
    assert replay_parent.data.params == parent.data.params
    assert replay_parent.data.tags == parent.data.tags
    replayed = replay_runs[row["trial_id"]]
    assert replayed.info.status == "FINISHED" and "model_uri" in replayed.data.tags
    for key in ("loss", "val_knn_top1", "lr_actual"):
        live = {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}
        again = {m.step: m.value for m in replay_client.get_metric_history(replayed.info.run_id, key)}
        assert again == live, key
    assert replayed.data.params == run.data.params
    # and a second sync adds nothing (idempotent)
    sync_sweep("outage", storage=str(tmp_path / "runs"), tracking_uri=fresh, out=lambda *a: None)
    replay_client, _, again = tracked_runs(fresh, "outage")
    assert metric_steps(replay_client, again[row["trial_id"]]) == [1, 2, 3, 4, 5]


# ---------------------------------------------------------------------------------------------
# launcher -> (process title, actor class) of the process that runs the training loop
TRAINING_PROCESS = {
    "auto": ("ray::ImplicitFunc", "ImplicitFunc"),  # one worker: the Tune trial actor trains
    "ray_train": ("ray::RayTrainWorker", "RayTrainWorker"),  # a Ray Train worker actor
}


@pytest.mark.parametrize("launcher", ["auto", "ray_train"])
def test_a_killed_training_worker_resumes_from_its_checkpoint_and_loses_nothing(
        ray_runtime, tmp_path, monkeypatch, launcher):
    """SIGKILL the process that trains (the Tune trial actor for a one-worker trial, the Ray
    Train worker with launcher: ray_train) during epoch 2: Tune, or Ray Train, restarts it from
    the epoch-1 checkpoint; the final metrics equal an uninterrupted run of the same config (the
    loop resumes bit-exactly) and the MLflow run has epochs 1, 2, 3 exactly once. A planted secret
    in the environment (and in the results path) never reaches a logged param or tag."""
    from ray.util.state import list_actors

    from leoclr_platform.sweep.compat import dashboard_url
    from leoclr_platform.sweep.paths import latest_checkpoint
    from leoclr_platform.sweep.trial import resolved_config
    from trainables.checkpoint import read_history
    from trainables.loop import run_training

    title, actor_class = TRAINING_PROCESS[launcher]
    secret = "planted-s3cr3t-4c2f9"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    storage = tmp_path / f"runs-{secret}"
    # 16 steps per epoch (epochs of a second or two): room to kill the worker inside epoch 2
    base = {**spaces.load_space("smoke").base, "photo_patches": {"train_per_class": 32, "test_per_class": 4}}
    spec = smoke(trials=1, max_epochs=3, base=base, launcher=launcher)
    killed = {}

    def kill_worker_in_epoch_two():
        deadline = time.time() + 300
        while time.time() < deadline:
            if list(storage.glob("*/train/trial_*/*/metrics.json")):  # epoch 1 is saved
                # the process itself (pgrep: no State API round trip under load); tests run one
                # at a time, so the only training process alive is this trial's
                pids = [pid for pid in subprocess.run(["pgrep", "-f", f"^{title}"], capture_output=True,
                                                      text=True).stdout.split() if in_this_runtime(pid)]
                if pids:
                    killed["pid"] = int(pids[0])
                    os.kill(killed["pid"], signal.SIGKILL)
                    return
            time.sleep(0.05)

    chaos = threading.Thread(target=kill_worker_in_epoch_two, daemon=True)
    chaos.start()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    outcome = run_sweep(SweepRequest(spec, name="workerkill", storage=str(storage), tracking_uri=uri))
    chaos.join(timeout=60)
    assert killed.get("pid"), "the worker was never killed"
    (row,) = outcome.trials
    assert row["status"] == "COMPLETED" and row["epochs"] == 3, row
    actors = list_actors(address="http://" + dashboard_url(), filters=[("class_name", "=", actor_class)],
                         limit=1000)  # this runtime's State API, not another one's
    assert killed["pid"] in {a.pid for a in actors if a.state == "DEAD"}
    # the trial went on in a new process, from the epoch-1 checkpoint
    assert {a.pid for a in actors} - {killed["pid"]}
    history = read_history(latest_checkpoint(outcome.root, row["trial_id"]))
    assert [h["epoch"] for h in history] == [1, 2, 3]
    # resumed, not restarted: no epoch was reported to Tune twice
    (result_file,) = Path(row["path"]).glob("result.json")
    reported = [json.loads(line)["epoch"] for line in result_file.read_text().splitlines() if line.strip()]
    assert len(reported) == len(set(reported)) and reported[-1] == 3, reported

    # the same config trained without interruption, in this process
    reports = []
    config = resolved_config(spec, {**row["params"], "seed": row["seed"]})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the Ray worker (OMP_NUM_THREADS=1): same float summation order
    try:
        reference = run_training(config, lambda m, c: reports.append(m), checkpoint_dir=str(tmp_path / "ref"))
    finally:
        torch.set_num_threads(threads)
    # stated tolerance: losses to 1e-4 relative; kNN top-1 within 2 of the 64 test images (a
    # last-bit difference between processes can flip a vote on data this small)
    assert row["val_knn_top1"] == pytest.approx(reference["val_knn_top1"], abs=2 * 100 / 64 + 1e-9)
    client, parent, runs = assert_runs_match_outcome(uri, outcome)
    run = runs[row["trial_id"]]
    losses = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "loss")}
    assert losses == pytest.approx({m["epoch"]: m["loss"] for m in reports}, rel=1e-4)

    for r in [parent, *runs.values()]:
        for value in [*r.data.params.values(), *r.data.tags.values()]:
            assert secret not in value, value


# ---------------------------------------------------------------------------------------------
def study_trials(root: Path, name: str):
    storage = optuna.storages.RDBStorage(f"sqlite:///{root / 'optuna.db'}")
    return optuna.load_study(study_name=name, storage=storage).trials


def test_resume_after_the_driver_is_killed(ray_runtime, tmp_path):
    """Kill `leoclr sweep` (its own process and Ray runtime) once a trial is complete; resuming
    it (here, in this test's runtime; the CLI's --resume wiring is tests/platform/test_cli.py's)
    finishes it in the same study."""
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
    kill_processes_working_under(tmp_path)  # Ray processes of the killed driver that left its group
    before = study_trials(tmp_path / "killed", "killed")
    completed_before = [t for t in before if t.state == optuna.trial.TrialState.COMPLETE]
    assert 1 <= len(completed_before) < 3

    resumed = run_sweep(SweepRequest(name="killed", storage=str(tmp_path), resume=True))
    assert resumed.best is not None and resumed.tracking["uri"] == uri  # the store came from sweep.json
    after = study_trials(tmp_path / "killed", "killed")
    # the same study was continued: trials completed before the kill are kept, unchanged
    for t in completed_before:
        assert after[t.number].state == optuna.trial.TrialState.COMPLETE and after[t.number].value == t.value
    # nothing is left RUNNING (trials cut by the kill are closed as FAIL; see docs/sweeps.md)
    assert not [t for t in after if t.state == optuna.trial.TrialState.RUNNING]
    # and Tune finished every trial of the budget, with a result
    summary = json.loads((tmp_path / "killed" / "summary.json").read_text())
    finished = [r for r in summary["trials"] if r["status"] in ("COMPLETED", "STOPPED")]
    assert len(finished) >= 3 and all(r["val_knn_top1"] is not None for r in finished)
    # MLflow (the store came from sweep.json): the same parent run, one run per trial, every
    # epoch exactly once (trials cut by the kill were continued, not duplicated); a trial started
    # after Tune last saved its state cannot be continued: its run ends FAILED, saying why
    assert_runs_match_outcome(uri, SimpleNamespace(name="killed", trials=summary["trials"]), lost_ok=True)
