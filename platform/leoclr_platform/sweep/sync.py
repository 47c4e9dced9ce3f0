"""Bringing MLflow in line with a sweep's results on disk.

Two callers, one code path: the end of a live sweep (`finish_tracking`: every trial's epochs
from disk, its final status, the encoder of finished trials) and `leoclr sync NAME`
(`sync_sweep`: the whole sweep replayed from `<storage>/<sweep>/` after the store was away, or
into another store). Everything is idempotent (see tracking/sweep_runs.py): what is there
already is not logged twice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from leoclr_platform.spaces import SweepSpec
from leoclr_platform.sweep.meta import read_meta, spec_from_meta
from leoclr_platform.sweep.paths import SUMMARY_FILE, latest_checkpoint, sweep_root, trial_id_from_path
from leoclr_platform.sweep.results import SweepOutcome, disk_history, error_line, summary_metrics
from leoclr_platform.sweep.trial import resolved_config

#: A row's status in the outcome table -> the trial run's MLflow status.
RUN_STATUS = {"COMPLETED": "FINISHED", "STOPPED": "KILLED", "ERROR": "FAILED"}


def finish_tracking(tracker, outcome: SweepOutcome, timeout: float = 300.0) -> dict[str, Any]:
    """Bring every trial's run in line with the outcome (epochs from disk, final status, encoder
    of finished trials), then end the parent run. Returns where things went."""
    for row in outcome.trials:
        trial_id = row["trial_id"]
        history = disk_history(outcome.root, trial_id)
        if row["status"] == "STOPPED" and row["epochs"] is not None:
            # workers may finish an epoch after ASHA's stop; Tune (and the run) end where it stopped
            history = {e: h for e, h in history.items() if e <= row["epochs"]}
        tracker.backfill(trial_id, history)
        _end_trial(tracker, outcome.root, trial_id, row)
    tracker.fail_lost_runs(row["trial_id"] for row in outcome.trials)
    tracker.log_summary(*summary_metrics(outcome.trials, outcome.metric, outcome.mode, _strategies(tracker)))
    summary = Path(outcome.root) / SUMMARY_FILE
    delivered = tracker.close("FINISHED", timeout=timeout, artifacts=[summary] if summary.exists() else [])
    pending = 0 if delivered or tracker.logger is None else tracker.logger.pending
    return {"uri": tracker.uri, "experiment": tracker.experiment, "experiment_id": tracker.experiment_id,
            "parent_run_id": tracker.parent_run_id, "undelivered": pending}


def _strategies(tracker) -> dict[str, str | None]:
    """{trial id: attraction strategy} of the trials whose config the tracker holds."""
    return {tid: (state.config or {}).get("attraction_strategy") for tid, state in tracker.trials.items()}


def _end_trial(tracker, root: str, trial_id: str, row: dict[str, Any], end_time: float | None = None) -> None:
    """A trial's end as its summary row says: status, reason, ASHA's decision (row "stop"), the
    checkpoint (encoder of a finished trial; the folder of a stopped one)."""
    status = RUN_STATUS[row["status"]]
    checkpoint = latest_checkpoint(root, trial_id) if status != "FAILED" else None
    tracker.trial_ended(trial_id, status=status, reason=row.get("error"), checkpoint=checkpoint,
                        stop=row.get("stop"), end_time=end_time)


def sync_sweep(name: str, *, storage: str | None = None, tracking_uri: str | None = None,
               out: Callable[[str], None] = print) -> dict[str, Any]:
    """`leoclr sync NAME`: replay a sweep's results on disk into MLflow (after the tracking store
    was away, or to another store). The parent run gets the same record as the live one."""
    from leoclr_platform import tracking

    root = sweep_root(storage, name)
    meta = read_meta(root, action="sync")
    uri = tracking.resolve_tracking_uri(tracking_uri or meta.get("tracking_uri"))
    tracking.check_store(uri)
    spec = spec_from_meta(meta)
    experiment = meta.get("experiment") or f"leoclr/{spec.name}"
    tracker = tracking.SweepTracker(uri, experiment, name, max_epochs=spec.max_epochs, synchronous=True)
    tracker.open(tracking.sweep_record(spec, meta, root))
    summary_file = Path(root) / SUMMARY_FILE
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    rows = {r["trial_id"]: r for r in summary.get("trials", [])}
    trial_dirs = sorted(p for p in Path(root).iterdir() if (p / "params.json").exists())
    for trial_dir in trial_dirs:
        _replay_trial(tracker, spec, root, trial_dir, rows)
    _replay_confirm_and_analysis(tracker, spec, root, summary)
    if rows:  # the sweep ended: the same end as the live sweep's (finish_tracking)
        tracker.fail_lost_runs(rows)
        tracker.log_summary(*summary_metrics(list(rows.values()), spec.metric, spec.metric_mode,
                                             _strategies(tracker)))
    tracker.close("FINISHED" if summary_file.exists() else "KILLED",
                  artifacts=[summary_file] if summary_file.exists() else [])
    out(f"synced sweep {name}: {len(trial_dirs)} trial(s) from {root} into {tracking.redact_uri(uri)} "
        f"(experiment {experiment!r}, run {tracker.parent_run_id})")
    return {"trials": len(trial_dirs), "parent_run_id": tracker.parent_run_id, "uri": uri}


def _replay_confirm_and_analysis(tracker, spec: SweepSpec, root: str, summary: dict[str, Any]) -> None:
    """The confirmation runs and the parent run's importance / baseline, as the live sweep
    logged them (run.py `_fit`), from what it wrote to disk."""
    from leoclr_platform.sweep.analysis import replayed_analysis
    from leoclr_platform.sweep.confirm import track_confirm_rows

    confirm_rows = (summary.get("confirm") or {}).get("trials") or []
    if confirm_rows:
        track_confirm_rows(tracker, spec, root, confirm_rows)
    tracker.log_parent(**replayed_analysis(root))


def _replay_trial(tracker, spec: SweepSpec, root: str, trial_dir: Path, rows: dict[str, dict]) -> None:
    """One Tune trial folder -> its run: config, every epoch on disk, and its end if it ended
    (an unfinished trial stays RUNNING: `leoclr sweep --resume` will continue it)."""
    trial_id = trial_id_from_path(str(trial_dir))
    config = json.loads((trial_dir / "params.json").read_text())
    history = disk_history(root, trial_id)
    tracker.trial_started(trial_id, resolved_config(spec, config).to_dict(), history=history)
    row = rows.get(trial_id)
    error_file = trial_dir / "error.txt"
    failed_at = error_file.stat().st_mtime if error_file.exists() else None  # when the trial failed
    if row is not None:
        _end_trial(tracker, root, trial_id, row, end_time=failed_at if row["status"] == "ERROR" else None)
    elif failed_at is not None:
        reason = error_line(Exception(error_file.read_text()))
        _end_trial(tracker, root, trial_id, {"status": "ERROR", "error": reason}, end_time=failed_at)
    elif max(history, default=0) >= spec.max_epochs:
        _end_trial(tracker, root, trial_id, {"status": "COMPLETED"})
