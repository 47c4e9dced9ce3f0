"""A sweep's MLflow runs: one parent run per sweep, one child run per trial.

What lands where (docs/tracking.md has the full picture):
  parent run  named after the sweep; params and tags from `sweep_record` (budget, resources,
              objective; commit, versions, hardware); artifacts: the space YAML and sweep.json
  child run   one per Tune trial, named `leoclr t=0.17 m=0.947 #99e6ea60` (run_text.py), tag
              mlflow.parentRunId; params = the trial's resolved TrainConfig (flattened, floats
              rounded for display; full values in the config.json artifact) plus lr_scaled; tags
              sweep, trial_id, strategy, mechanism, seed, config_hash, a description and the
              parent's tags; its data as dataset inputs; metrics per epoch with step=epoch
              (system/* too, unless switched off); at the end the checkpoint folder, and for
              finished trials the encoder as an MLflow model
  times       start = when the trial started, end = its last result (or its failure), never
              when tracking caught up
  status      FINISHED (all epochs, or stopped early by ASHA: tag stopped_early and the reason in
              the description) or FAILED (tag failure_reason; also a trial lost with a killed driver
              that the resumed sweep could not continue); KILLED only for an interrupted sweep

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

from leoclr_platform.tracking.datasets import log_dataset_inputs, split_sizes
from leoclr_platform.tracking.logger import AsyncLogger
from leoclr_platform.tracking.models import CHECKPOINT_ARTIFACT, local_copy, log_encoder_model
from leoclr_platform.tracking.provenance import config_hash, flatten_params, scrub
from leoclr_platform.tracking.run_text import DESCRIPTION_TAG, stop_text, trial_description, \
    trial_run_name
from leoclr_platform.tracking.store import client, ensure_experiment, use_store
from leoclr_platform.tracking.sweep_record import SweepRecord
from leoclr_platform.tracking.trial_values import EPOCH_METRICS, METRIC_SOURCES, SYSTEM_PREFIX, \
    epoch_metrics, start_from_history, trial_params

__all__ = ["EPOCH_METRICS", "METRIC_SOURCES", "SYSTEM_PREFIX", "SweepTracker", "TrialRun", "ROLE_SWEEP",
           "ROLE_TRIAL", "STOPPED_TAG"]

ROLE_SWEEP, ROLE_TRIAL = "sweep", "trial"
#: The tag of a trial ASHA stopped early (read by the report and the UI filter).
STOPPED_TAG = "stopped_early"
#: failure_reason of a run whose trial the resumed sweep could not continue (fail_lost_runs).
LOST_REASON = ("lost: the sweep's driver was stopped while this trial ran, before Tune saved it in its "
               "experiment state, so the resumed sweep could not continue it (its epochs stay logged)")


@dataclass
class TrialRun:
    """What the tracker knows of one trial's run."""

    run_id: str | None = None
    logged_steps: set[int] = field(default_factory=set)
    config: dict[str, Any] | None = None
    last_checkpoint: str | None = None
    last_epoch: int | None = None
    has_model: bool = False
    start_time: float | None = None  # s since the epoch: when the trial started
    last_stamp: float | None = None  # s: the timestamp of its latest result
    ended_at: float | None = None  # s: its end, fixed by the first trial_ended
    has_data: bool = False  # dataset inputs logged
    has_config: bool = False  # params and the config.json artifact logged (for `config`)


class SweepTracker:
    """The MLflow side of one sweep (used by the Tune callback, by `run_sweep` and by `sync`).

    The parent run is opened synchronously (the store must work before any compute); every
    per-trial call goes through an `AsyncLogger` unless `synchronous` (sync, tests).
    `system_metrics=False` leaves out the system/* values trials report.
    """

    def __init__(self, uri: str, experiment: str, sweep: str, *, max_epochs: int,
                 synchronous: bool = False, log_checkpoints: bool = True, system_metrics: bool = True):
        self.uri = uri
        self.experiment = experiment
        self.sweep = sweep
        self.max_epochs = max_epochs
        self.log_checkpoints = log_checkpoints
        self.system_metrics = system_metrics
        self.client = client(uri)
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self.trials: dict[str, TrialRun] = {}
        self.common_tags: dict[str, str] = {}
        self.searched: list[str] = []
        self.show_seed = False
        self.logger = None if synchronous else AsyncLogger(name=f"sweep-{sweep}")

    # -- the parent run ----------------------------------------------------------------------
    def open(self, record: SweepRecord) -> str:
        """Find the sweep's parent run (reopened) or create it from `record`; returns its id."""
        use_store(self.uri)
        self.experiment_id = ensure_experiment(self.client, self.experiment, self.uri)
        self.common_tags = scrub(record.tags)
        self.searched = [str(k) for k in record.params.get("searched", [])]
        self.show_seed = len(record.params.get("seeds", [])) > 1
        existing = self._find_runs(ROLE_SWEEP)
        if existing:
            run = existing[0]
            self.parent_run_id = run.info.run_id
            if run.info.status != "RUNNING":
                self.client.update_run(self.parent_run_id, status="RUNNING")
            return self.parent_run_id
        tags = {**self.common_tags, "role": ROLE_SWEEP, "sweep": self.sweep, "space": record.space_name}
        if record.description:
            tags[DESCRIPTION_TAG] = record.description
        run = self.client.create_run(self.experiment_id, run_name=self.sweep, tags=scrub(tags))
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

    def log_summary(self, metrics: Mapping[str, float], tags: Mapping[str, str]) -> None:
        """The sweep's result on its parent run (best value, best trial, per-strategy metrics);
        a value already there is not logged again."""
        def deliver() -> None:
            from mlflow.entities import Metric

            have = self.client.get_run(self.parent_run_id).data.metrics
            stamp = int(time.time() * 1000)
            new = [Metric(k, float(v), stamp, 0) for k, v in metrics.items() if have.get(k) != float(v)]
            if new:
                self.client.log_batch(self.parent_run_id, metrics=new)
            for key, value in scrub(tags).items():
                self.client.set_tag(self.parent_run_id, key, value)

        self._submit(deliver, f"sweep {self.sweep}: summary")

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
                      history: Mapping[int, Mapping[str, Any]] | None = None,
                      start_time: float | None = None) -> None:
        """A trial (re)starts: find or create its run (started at `start_time`, else its first
        result on disk, else now), mark it RUNNING, and log any epochs of `history` (what is on
        disk from before a restart) that the run does not have yet."""
        state = self.trials.setdefault(trial_id, TrialRun())
        state.config = dict(config)
        state.ended_at = None
        state.start_time = start_time or start_from_history(history or {}) or state.start_time or time.time()
        self._submit(lambda: self._ensure_run(trial_id, tags, reopen=True), f"trial {trial_id}: open run")
        self.backfill(trial_id, history or {})

    def backfill(self, trial_id: str, history: Mapping[int, Mapping[str, Any]]) -> None:
        """Log the epochs of `history` ({epoch: metrics}) that the run lacks, in order."""
        for step in sorted(history):
            self.epoch(trial_id, {**history[step], "epoch": step})

    def _ensure_run(self, trial_id: str, tags: Mapping[str, str] | None = None, reopen: bool = False) -> str:
        state = self.trials.setdefault(trial_id, TrialRun())
        if state.run_id is None:
            found = self._find_runs(ROLE_TRIAL, trial_id)
            if found:
                self._adopt_run(state, found[0], reopen)
            else:
                state.run_id = self._create_trial_run(trial_id, state, tags)
        if state.config and not state.has_config:
            # here, not at creation: if the store goes away between creating the run and this,
            # the retried call finds the run (state.run_id) and still logs what it lacks
            self._log_params(state.run_id, trial_params(state.config))
            self._log_config(state.run_id, state.config)
            state.has_config = True
        return state.run_id

    def _log_config(self, run_id: str, config: Mapping[str, Any]) -> None:
        """The full values (params are rounded for display) as the artifact config.json."""
        if any(a.path == "config.json" for a in self.client.list_artifacts(run_id)):
            return
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "config.json"
            path.write_text(json.dumps(config, indent=2, sort_keys=True, default=str))
            self.client.log_artifact(run_id, str(path))

    def _adopt_run(self, state: TrialRun, run, reopen: bool) -> None:
        """Continue an existing run: what it has logged is not logged again."""
        state.run_id = run.info.run_id
        state.has_model = "model_uri" in run.data.tags
        state.has_data = bool(run.inputs and run.inputs.dataset_inputs)
        state.logged_steps = {int(m.step) for m in self.client.get_metric_history(state.run_id, "loss")}
        if reopen and run.info.status != "RUNNING" and not state.has_model:
            self.client.update_run(state.run_id, status="RUNNING")

    def _create_trial_run(self, trial_id: str, state: TrialRun, tags: Mapping[str, str] | None) -> str:
        config = state.config or {}
        run_tags = {**self.common_tags, "stage": "search", **(tags or {}), "role": ROLE_TRIAL, "sweep": self.sweep,
                    "trial_id": trial_id, "mlflow.parentRunId": self.parent_run_id}
        if config:
            run_tags.update({"strategy": str(config.get("attraction_strategy")),
                             "mechanism": str(config.get("mechanism")), "seed": str(config.get("seed")),
                             "config_hash": config_hash(config),
                             DESCRIPTION_TAG: trial_description(self.sweep, config, self.searched, self.max_epochs)})
        name = trial_run_name(config, self.searched, trial_id, self.show_seed) if config else f"trial #{trial_id}"
        start = int((state.start_time or time.time()) * 1000)
        return self.client.create_run(self.experiment_id, run_name=name, tags=scrub(run_tags),
                                      start_time=start).info.run_id

    def epoch(self, trial_id: str, result: Mapping[str, Any]) -> None:
        """One reported epoch of a trial (a Tune result): logged once, with step=epoch."""
        if result.get("epoch") is None:
            return
        state = self.trials.setdefault(trial_id, TrialRun())
        step = int(result["epoch"])
        state.last_epoch = max(step, state.last_epoch or 0)
        if result.get("checkpoint_path"):
            state.last_checkpoint = str(result["checkpoint_path"])
        metrics = epoch_metrics(result, self.system_metrics)
        when = float(result.get("timestamp", time.time()))
        state.last_stamp = max(when, state.last_stamp or 0.0)
        sizes = split_sizes(result)
        self._submit(lambda: self._log_epoch(trial_id, step, metrics, int(when * 1000), sizes),
                     f"trial {trial_id}: epoch {step}")

    def _log_epoch(self, trial_id: str, step: int, metrics: Mapping[str, float], stamp: int,
                   sizes: Mapping[str, int]) -> None:
        from mlflow.entities import Metric

        run_id = self._ensure_run(trial_id)
        state = self.trials[trial_id]
        if sizes and not state.has_data and state.config:
            log_dataset_inputs(self.client, run_id, state.config, sizes)
            state.has_data = True
        if step in state.logged_steps or not metrics:
            return
        self.client.log_batch(run_id, metrics=[Metric(k, v, stamp, step) for k, v in metrics.items()])
        state.logged_steps.add(step)

    def trial_ended(self, trial_id: str, *, status: str, reason: str | None = None,
                    checkpoint: str | None = None, end_time: float | None = None,
                    stop: Mapping[str, Any] | None = None) -> None:
        """status: FINISHED (log the encoder first), KILLED (stopped early by ASHA: `stop` is the
        scheduler's decision, see stop_text; recorded as FINISHED with the tag stopped_early) or
        FAILED (reason). The run ends at `end_time`, else the trial's last result (its failure:
        now), fixed by the first call: ending a trial again later does not move it."""
        state = self.trials.setdefault(trial_id, TrialRun())
        checkpoint = checkpoint or state.last_checkpoint
        if state.ended_at is None or end_time is not None:
            fallback = state.last_stamp if status != "FAILED" else None
            state.ended_at = end_time or fallback or time.time()
        end = int(state.ended_at * 1000)
        if status == "FINISHED" and checkpoint:
            self._submit(lambda: self._log_model(trial_id, checkpoint), f"trial {trial_id}: log encoder")
        elif status == "KILLED" and checkpoint and self.log_checkpoints:
            self._submit(lambda: self._log_checkpoint(trial_id, checkpoint), f"trial {trial_id}: checkpoint")
        stopped = None
        if status == "KILLED":
            stopped = (stop_text(stop, state.last_epoch, self.max_epochs), (stop or {}).get("epoch") or state.last_epoch)
        self._submit(lambda: self._set_status(trial_id, status, reason, end, stopped), f"trial {trial_id}: {status}")

    def _set_status(self, trial_id: str, status: str, reason: str | None, end: int,
                    stopped: tuple[str, int | None] | None) -> None:
        run_id = self._ensure_run(trial_id)
        tags = {}
        if stopped:
            tags.update(self._stopped_marks(run_id, *stopped))
        if reason:
            tags["failure_reason"] = reason[:5000]
        for key, value in scrub(tags).items():
            self.client.set_tag(run_id, key, value)
        self.client.set_terminated(run_id, "FINISHED" if status == "KILLED" else status, end_time=end)

    def _stopped_marks(self, run_id: str, text: str, epoch: int | None) -> dict[str, str]:
        """A stopped trial is marked where every view shows it: its name gets "[stopped@N]"
        (comparison charts), its description starts with the reason, the tag stopped_early."""
        run = self.client.get_run(run_id)
        name = run.info.run_name or ""
        if "[stopped@" not in name:
            self.client.update_run(run_id, name=f"{name} [stopped@{epoch}]")
        note = run.data.tags.get(DESCRIPTION_TAG, "")
        base = note.split("\n\n", 1)[-1] if note.startswith("**Stopped") else note
        return {STOPPED_TAG: text, DESCRIPTION_TAG: f"**{text[0].upper()}{text[1:]}** (not a failure).\n\n{base}".strip()}

    def _log_checkpoint(self, trial_id: str, checkpoint: str) -> None:
        run_id = self._ensure_run(trial_id)
        have = {a.path for a in self.client.list_artifacts(run_id)}
        if CHECKPOINT_ARTIFACT in have:
            return
        with local_copy(checkpoint) as local:
            self.client.log_artifacts(run_id, str(local), CHECKPOINT_ARTIFACT)

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

    def fail_lost_runs(self, kept: Iterable[str]) -> None:
        """End as FAILED, with the reason, every trial run of this sweep still RUNNING whose trial
        is neither in `kept` nor known to this tracker: a trial started just before a driver was
        killed, after Tune last saved its experiment state, is not in the restored experiment and
        is never continued (its Optuna trial is failed likewise, sweep/study.py). Its epochs stay
        logged. Queued behind everything else, so the runs of known trials are ended first."""
        def deliver() -> None:
            known = set(kept) | set(self.trials)
            query = f"tags.sweep = '{self.sweep}' AND tags.role = '{ROLE_TRIAL}' AND attributes.status = 'RUNNING'"
            for run in self.client.search_runs([self.experiment_id], query, max_results=1000):
                if run.data.tags.get("trial_id") in known:
                    continue
                self.client.set_tag(run.info.run_id, "failure_reason", LOST_REASON)
                self.client.set_terminated(run.info.run_id, "FAILED")

        self._submit(deliver, f"sweep {self.sweep}: runs of lost trials")

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
