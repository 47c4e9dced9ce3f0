"""A sweep's MLflow runs: one parent run per sweep, one child run per trial.

What lands where (docs/tracking.md has the full picture):
  parent run  named after the sweep; params and tags from `sweep_record` (budget, resources,
              objective; commit, versions, hardware); artifacts: the space YAML and sweep.json
  child run   one per Tune trial ("trial_<id>", tag mlflow.parentRunId); params = the trial's
              full resolved TrainConfig (flattened); tags sweep, trial_id, strategy, mechanism,
              seed, config_hash and the parent's tags; metrics per epoch with step=epoch; at the
              end (finished trials) the encoder as an MLflow model and the checkpoint folder
  status      FINISHED, KILLED (stopped early by ASHA) or FAILED (tag failure_reason)

One writer: the sweep driver (Tune callback, `run_sweep`, `leoclr sync`), never the training
workers. Idempotent, so a retried, resumed or re-synced trial never duplicates anything: runs
are found by tags (sweep + trial_id) before one is created; an epoch is logged only if its step
is not in the run's history yet; the model only if the run has no `model_uri` tag yet.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from leoclr_platform.tracking.logger import AsyncLogger
from leoclr_platform.tracking.models import CHECKPOINT_ARTIFACT, local_copy, log_encoder_model
from leoclr_platform.tracking.provenance import config_hash, flatten_params, scrub
from leoclr_platform.tracking.store import client, ensure_experiment, use_store
from leoclr_platform.tracking.sweep_record import SweepRecord

#: Metrics the loop reports each epoch that are logged (the rest of a Tune result, such as
#: time_total_s or checkpoint_path, is bookkeeping).
EPOCH_METRICS = (
    "loss", "val_knn_top1", "val_knn_top5", "rankme", "test_knn_top1", "test_knn_top5", "lr",
    "images_per_s", "epoch_time_s", "train_time_s", "knn_time_s", "steps", "val_knn_top1_init",
    "val_knn_top5_init", "rankme_init",
)
ROLE_SWEEP, ROLE_TRIAL = "sweep", "trial"


@dataclass
class TrialRun:
    """What the tracker knows of one trial's run."""

    run_id: str | None = None
    logged_steps: set[int] = field(default_factory=set)
    config: dict[str, Any] | None = None
    last_checkpoint: str | None = None
    last_epoch: int | None = None
    has_model: bool = False


class SweepTracker:
    """The MLflow side of one sweep (used by the Tune callback, by `run_sweep` and by `sync`).

    The parent run is opened synchronously (the store must work before any compute); every
    per-trial call goes through an `AsyncLogger` unless `synchronous` (sync, tests).
    """

    def __init__(self, uri: str, experiment: str, sweep: str, *, max_epochs: int,
                 synchronous: bool = False, log_checkpoints: bool = True):
        self.uri = uri
        self.experiment = experiment
        self.sweep = sweep
        self.max_epochs = max_epochs
        self.log_checkpoints = log_checkpoints
        self.client = client(uri)
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self.trials: dict[str, TrialRun] = {}
        self.common_tags: dict[str, str] = {}
        self.logger = None if synchronous else AsyncLogger(name=f"sweep-{sweep}")

    # -- the parent run ----------------------------------------------------------------------
    def open(self, record: SweepRecord) -> str:
        """Find the sweep's parent run (reopened) or create it from `record`; returns its id."""
        use_store(self.uri)
        self.experiment_id = ensure_experiment(self.client, self.experiment, self.uri)
        self.common_tags = scrub(record.tags)
        existing = self._find_runs(ROLE_SWEEP)
        if existing:
            run = existing[0]
            self.parent_run_id = run.info.run_id
            if run.info.status != "RUNNING":
                self.client.update_run(self.parent_run_id, status="RUNNING")
            return self.parent_run_id
        run = self.client.create_run(
            self.experiment_id, run_name=self.sweep,
            tags=scrub({**self.common_tags, "role": ROLE_SWEEP, "sweep": self.sweep, "space": record.space_name}))
        self.parent_run_id = run.info.run_id
        self._log_params(self.parent_run_id, flatten_params(record.params))
        with tempfile.TemporaryDirectory() as tmp:
            space_path = Path(tmp) / record.space_file
            space_path.write_text(record.space_text)
            self.client.log_artifact(self.parent_run_id, str(space_path), "space")
            meta_path = Path(tmp) / "sweep.json"
            meta_path.write_text(json.dumps(record.meta, indent=2, default=str))
            self.client.log_artifact(self.parent_run_id, str(meta_path))
        return self.parent_run_id

    def _find_runs(self, role: str, trial_id: str | None = None):
        query = f"tags.sweep = '{self.sweep}' AND tags.role = '{role}'"
        if trial_id is not None:
            query += f" AND tags.trial_id = '{trial_id}'"
        return self.client.search_runs([self.experiment_id], query, order_by=["attributes.start_time ASC"],
                                       max_results=10)

    def _log_params(self, run_id: str, params: Mapping[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v[:6000]) for k, v in scrub(params).items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[start:start + 100])

    # -- per trial (everything below goes through the logger) ---------------------------------
    def _submit(self, fn: Callable[[], Any], what: str) -> None:
        if self.logger is None:
            fn()
        else:
            self.logger.submit(fn, what)

    def trial_started(self, trial_id: str, config: Mapping[str, Any], tags: Mapping[str, str] | None = None,
                      history: Mapping[int, Mapping[str, Any]] | None = None) -> None:
        """A trial (re)starts: find or create its run, mark it RUNNING, and log any epochs of
        `history` (what is on disk from before a restart) that the run does not have yet."""
        state = self.trials.setdefault(trial_id, TrialRun())
        state.config = dict(config)
        self._submit(lambda: self._ensure_run(trial_id, tags, reopen=True), f"trial {trial_id}: open run")
        self.backfill(trial_id, history or {})

    def backfill(self, trial_id: str, history: Mapping[int, Mapping[str, Any]]) -> None:
        """Log the epochs of `history` ({epoch: metrics}) that the run lacks, in order."""
        for step in sorted(history):
            self.epoch(trial_id, {**history[step], "epoch": step})

    def _ensure_run(self, trial_id: str, tags: Mapping[str, str] | None = None, reopen: bool = False) -> str:
        state = self.trials.setdefault(trial_id, TrialRun())
        if state.run_id is not None:
            return state.run_id
        found = self._find_runs(ROLE_TRIAL, trial_id)
        if found:
            self._adopt_run(state, found[0], reopen)
        else:
            state.run_id = self._create_trial_run(trial_id, state.config or {}, tags)
        if state.config:
            self._log_params(state.run_id, flatten_params(state.config))
        return state.run_id

    def _adopt_run(self, state: TrialRun, run, reopen: bool) -> None:
        """Continue an existing run: what it has logged is not logged again."""
        state.run_id = run.info.run_id
        state.has_model = "model_uri" in run.data.tags
        state.logged_steps = {int(m.step) for m in self.client.get_metric_history(state.run_id, "loss")}
        if reopen and run.info.status != "RUNNING" and not state.has_model:
            self.client.update_run(state.run_id, status="RUNNING")

    def _create_trial_run(self, trial_id: str, config: Mapping[str, Any], tags: Mapping[str, str] | None) -> str:
        run_tags = {**self.common_tags, "stage": "search", **(tags or {}), "role": ROLE_TRIAL, "sweep": self.sweep,
                    "trial_id": trial_id, "mlflow.parentRunId": self.parent_run_id}
        if config:
            run_tags.update({"strategy": str(config.get("attraction_strategy")),
                             "mechanism": str(config.get("mechanism")), "seed": str(config.get("seed")),
                             "config_hash": config_hash(config)})
        run = self.client.create_run(self.experiment_id, run_name=f"trial_{trial_id}", tags=scrub(run_tags))
        return run.info.run_id

    def epoch(self, trial_id: str, result: Mapping[str, Any]) -> None:
        """One reported epoch of a trial (a Tune result): logged once, with step=epoch."""
        if result.get("epoch") is None:
            return
        state = self.trials.setdefault(trial_id, TrialRun())
        step = int(result["epoch"])
        state.last_epoch = max(step, state.last_epoch or 0)
        if result.get("checkpoint_path"):
            state.last_checkpoint = str(result["checkpoint_path"])
        metrics = {k: float(result[k]) for k in EPOCH_METRICS if isinstance(result.get(k), (int, float))}
        stamp = int(float(result.get("timestamp", time.time())) * 1000)
        self._submit(lambda: self._log_epoch(trial_id, step, metrics, stamp), f"trial {trial_id}: epoch {step}")

    def _log_epoch(self, trial_id: str, step: int, metrics: Mapping[str, float], stamp: int) -> None:
        from mlflow.entities import Metric

        run_id = self._ensure_run(trial_id)
        state = self.trials[trial_id]
        if step in state.logged_steps or not metrics:
            return
        self.client.log_batch(run_id, metrics=[Metric(k, v, stamp, step) for k, v in metrics.items()])
        state.logged_steps.add(step)

    def trial_ended(self, trial_id: str, *, status: str, reason: str | None = None,
                    checkpoint: str | None = None) -> None:
        """status: FINISHED (log the encoder first), KILLED (stopped early) or FAILED (reason)."""
        state = self.trials.setdefault(trial_id, TrialRun())
        checkpoint = checkpoint or state.last_checkpoint
        if status == "FINISHED" and checkpoint:
            self._submit(lambda: self._log_model(trial_id, checkpoint), f"trial {trial_id}: log encoder")
        self._submit(lambda: self._set_status(trial_id, status, reason), f"trial {trial_id}: {status}")

    def _set_status(self, trial_id: str, status: str, reason: str | None) -> None:
        run_id = self._ensure_run(trial_id)
        state = self.trials[trial_id]
        tags = {}
        if status == "KILLED":
            tags["stopped_early"] = f"after epoch {state.last_epoch} of {self.max_epochs} (ASHA)"
        if reason:
            tags["failure_reason"] = reason[:5000]
        for key, value in scrub(tags).items():
            self.client.set_tag(run_id, key, value)
        self.client.set_terminated(run_id, status)

    def _log_model(self, trial_id: str, checkpoint: str) -> None:
        run_id = self._ensure_run(trial_id)
        state = self.trials[trial_id]
        if state.has_model:
            return
        with local_copy(checkpoint) as local:
            info = log_encoder_model(run_id, local)
            if self.log_checkpoints:
                self.client.log_artifacts(run_id, str(local), CHECKPOINT_ARTIFACT)
        for key, value in scrub({"model_uri": info.model_uri, "checkpoint_path": checkpoint}).items():
            self.client.set_tag(run_id, key, value)
        state.has_model = True

    def log_parent(self, artifacts: Iterable[Path] = (), metrics: Mapping[str, float] | None = None,
                   tags: Mapping[str, str] | None = None) -> None:
        """Files, metrics and tags of the sweep's own run (importance, baseline), through the logger."""
        from mlflow.entities import Metric

        def log() -> None:
            stamp = int(time.time() * 1000)
            items = [Metric(k, float(v), stamp, 0) for k, v in (metrics or {}).items()]
            for start in range(0, len(items), 500):
                self.client.log_batch(self.parent_run_id, metrics=items[start:start + 500])
            for key, value in scrub(dict(tags or {})).items():
                self.client.set_tag(self.parent_run_id, key, value)
            for path in artifacts:
                self.client.log_artifact(self.parent_run_id, str(path))

        self._submit(log, f"sweep {self.sweep}: results of the sweep")

    # -- the end ---------------------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> bool:
        return True if self.logger is None else self.logger.flush(timeout)

    def close(self, status: str = "FINISHED", timeout: float | None = 120.0,
              artifacts: Iterable[Path] = ()) -> bool:
        """Deliver what is pending (up to `timeout` s), then end the parent run. False if the
        store stayed away: the caller tells the user to run `leoclr sync`."""
        for path in artifacts:
            self._submit(lambda p=path: self.client.log_artifact(self.parent_run_id, str(p)), f"artifact {path.name}")
        self._submit(lambda: self.client.set_terminated(self.parent_run_id, status), f"sweep {self.sweep}: {status}")
        if self.logger is None:
            return True
        return self.logger.close(timeout)
