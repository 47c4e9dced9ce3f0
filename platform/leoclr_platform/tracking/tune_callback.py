"""The Ray Tune callback that mirrors a sweep's trials into MLflow through a `SweepTracker`.

It runs in the sweep driver, so MLflow has one writer; metrics are rank 0's (Ray Train forwards
rank 0's `ray.train.report` to Tune). All calls go through the tracker's background logger:
Tune's event loop never waits for the tracking store. Importing this module imports Ray (for
`ray.tune.Callback`), which is why the tracking package does not import it eagerly.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping

from ray.tune import Callback

from leoclr_platform.tracking.sweep_runs import SweepTracker


class NullCallback(Callback):
    """What a pickled MlflowTrialCallback becomes: Tune pickles its RunConfig (callbacks
    included) into tuner.pkl; the live callback, with its thread and client, is re-attached
    after `Tuner.restore`."""


class MlflowTrialCallback(Callback):
    """Tune's trial events -> the tracker: start (with the epochs already on disk), each result,
    the end (FINISHED when every epoch ran, KILLED when ASHA stopped it, with the scheduler's
    reason; FAILED with the error's).

    resolve_config(trial.config) -> the trial's resolved TrainConfig as a dict;
    disk_history(trial_id) -> {epoch: metrics} on disk (non-empty for a restarted trial);
    error_line(error) -> the one-line reason of a trial's error;
    stop_reason(trial_id) -> the scheduler's decision to stop it early, or None (see
    tracking.run_text.stop_text for its keys);
    trial_tags(trial.config) -> extra tags of a new trial run (the `stage`, `confirm_of`).
    """

    def __init__(self, tracker: SweepTracker, *, resolve_config: Callable[[Mapping[str, Any]], dict[str, Any]],
                 disk_history: Callable[[str], dict[int, dict[str, Any]]], error_line: Callable[[Any], str | None],
                 stop_reason: Callable[[str], Mapping[str, Any] | None] | None = None,
                 trial_tags: Callable[[Mapping[str, Any]], dict[str, str]] | None = None):
        self.tracker = tracker
        self._trial_tags = trial_tags or (lambda config: {})
        self._resolve_config = resolve_config
        self._disk_history = disk_history
        self._error_line = error_line
        self._stop_reason = stop_reason or (lambda trial_id: None)

    def __reduce__(self):
        return (NullCallback, ())

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        history = self._disk_history(trial.trial_id)  # a restarted trial started before
        self.tracker.trial_started(trial.trial_id, self._resolve_config(trial.config),
                                   tags=self._trial_tags(trial.config), history=history,
                                   start_time=None if history else time.time())

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        self.tracker.epoch(trial.trial_id, result)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        last = trial.last_result or {}
        epoch = last.get("epoch")
        finished = epoch is not None and epoch >= self.tracker.max_epochs
        self.tracker.trial_ended(trial.trial_id, status="FINISHED" if finished else "KILLED",
                                 checkpoint=last.get("checkpoint_path"),
                                 stop=None if finished else self._stop_reason(trial.trial_id))

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        try:
            error = trial.get_pickled_error() or trial.get_error()
        except Exception:  # noqa: BLE001 - the reason is best effort; the status is not
            error = None
        self.tracker.trial_ended(trial.trial_id, status="FAILED",
                                 reason=self._error_line(error) or "trial failed (see the Tune error file)")
