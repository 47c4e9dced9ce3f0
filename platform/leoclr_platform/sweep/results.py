"""A finished (or stopped) sweep as a table: one row per trial, the best trial, summary.json.

Also what is on disk of one trial (`disk_history`): the epochs its checkpoint's history and
Tune's result.json hold, which tracking replays after a restart and `leoclr sync` from scratch.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from leoclr_platform.spaces import SweepSpec, decode_sampled
from leoclr_platform.sweep.paths import SUMMARY_FILE, is_uri, latest_checkpoint, trial_id_from_path

#: A row's status: COMPLETED (every epoch), STOPPED (by ASHA, after `epochs`), ERROR.
ROW_STATUSES = ("COMPLETED", "STOPPED", "ERROR")
#: ASHA's stop decisions taken in this driver process ({trial id: decision}, see sweep/asha.py).
STOP_DECISIONS: dict[str, dict[str, Any]] = {}


def stop_reason(trial_id: str) -> dict[str, Any] | None:
    """ASHA's decision to stop `trial_id` (taken in this process: rung, cutoff, value), or None."""
    decision = STOP_DECISIONS.get(trial_id)
    return dict(decision) if decision else None


@dataclass
class SweepOutcome:
    name: str
    root: str
    best: dict[str, Any] | None  # trial_id, config, metric value, checkpoint
    trials: list[dict[str, Any]]  # one row per trial: id, status, epochs, metric, params
    errors: int
    tracking: dict[str, Any] | None = None  # uri, experiment, parent run id, undelivered calls
    metric: str = "val_knn_top1"  # the objective the rows and the best trial are ranked by
    mode: str = "max"  # the objective's direction
    confirm: dict[str, Any] | None = None  # the confirmation stage (sweep/confirm.py), if any


def summarize(spec: SweepSpec, name: str, root: str, results: Iterable) -> SweepOutcome:
    """Tune's results (`ray.tune.ResultGrid`, or objects with config/metrics/error/path) ->
    the outcome table; written to `<root>/summary.json` for a local root."""
    # Tune's creation order, not the result grid's (which a restored experiment may reorder):
    # ties for the best trial then go to the same trial before and after --resume
    rows = sorted((_row(spec, r) for r in results), key=creation_index)
    best = best_trial(spec, rows)
    if best is not None:
        # the checkpoint of the value reported above (the trial's last epoch), which is also
        # the encoder the tracking logs for it (not the trial's best-scoring epoch)
        best["checkpoint"] = latest_checkpoint(root, best["trial_id"])
    outcome = SweepOutcome(name=name, root=root, best=best, trials=rows,
                           errors=sum(r["status"] == "ERROR" for r in rows), metric=spec.metric,
                           mode=spec.metric_mode)
    if not is_uri(root):
        (Path(root) / SUMMARY_FILE).write_text(json.dumps(dataclasses.asdict(outcome), indent=2, default=str))
    return outcome


def _row(spec: SweepSpec, result) -> dict[str, Any]:
    config = result.config or {}
    sampled = decode_sampled(spec, config.get("cell", config))
    seed = sampled.pop("seed", None)
    metrics = result.metrics or {}
    epochs = metrics.get("epoch")
    if result.error:
        status = "ERROR"
    elif epochs is not None and epochs < spec.max_epochs:
        status = "STOPPED"  # by ASHA, after `epochs` epochs
    else:
        status = "COMPLETED"
    trial_id = metrics.get("trial_id") or trial_id_from_path(result.path)
    strategy = sampled.get("attraction_strategy") or spec.fixed_values().get("attraction_strategy")
    return {"trial_id": trial_id, "status": status, "epochs": epochs, spec.metric: metrics.get(spec.metric),
            "params": sampled, "seed": seed, "strategy": strategy, "error": error_line(result.error),
            "path": result.path, "stop": stop_reason(trial_id) if status == "STOPPED" else None}


def creation_index(row: dict[str, Any]) -> int:
    """The order Tune created a trial in, from its folder name `<trainable>_<trial id>_<index>_...`
    (trial ids are random); rows without one sort last, in their given order."""
    name = os.path.basename(str(row.get("path") or ""))
    found = re.search(re.escape(str(row.get("trial_id"))) + r"_(\d+)_", name)
    return int(found.group(1)) if found else 1 << 30


def best_trial(spec: SweepSpec, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The best row by the objective among trials that ran every epoch, if any (a trial ASHA
    stopped early reports an earlier epoch's value, not comparable with a finished one's; in
    benchmarks/search_efficiency.py's replays 15 % of sweeps would otherwise have named a
    stopped trial); else the best stopped one. A copy; ties go to the first row."""
    return best_row(rows, spec.metric, spec.metric_mode)


def best_row(rows: list[dict[str, Any]], metric: str, mode: str) -> dict[str, Any] | None:
    """`best_trial` by metric name and mode."""
    finished = [r for r in rows if r["status"] == "COMPLETED" and r.get(metric) is not None]
    candidates = finished or [r for r in rows if r["status"] != "ERROR" and r.get(metric) is not None]
    sign = 1 if mode == "max" else -1
    best = None
    for row in candidates:
        if best is None or sign * row[metric] > sign * best[metric]:
            best = row
    return dict(best) if best is not None else None


def summary_metrics(rows: list[dict[str, Any]], metric: str, mode: str,
                    strategies: dict[str, str | None] | None = None) -> tuple[dict[str, float], dict[str, str]]:
    """The sweep parent run's summary (docs/tracking.md): metrics best_<metric>,
    <strategy>_best_<metric> and <strategy>_mean_<metric> over each strategy's finished trials,
    trials_finished / trials_stopped / trials_failed; tag best_trial. A trial's strategy: from
    `strategies` ({trial id: strategy}, its resolved config), else its row. Selection reads only
    the objective (a val_* metric), like `best_trial`."""
    counts = {s: sum(r["status"] == s for r in rows) for s in ROW_STATUSES}
    metrics: dict[str, float] = {"trials_finished": counts["COMPLETED"], "trials_stopped": counts["STOPPED"],
                                 "trials_failed": counts["ERROR"]}
    tags: dict[str, str] = {}
    best = best_row(rows, metric, mode)
    if best is not None:
        metrics[f"best_{metric}"] = float(best[metric])
        tags["best_trial"] = str(best["trial_id"])
    by_strategy: dict[str, list[float]] = {}
    for row in rows:
        if row["status"] == "COMPLETED" and isinstance(row.get(metric), (int, float)):
            strategy = ((strategies or {}).get(row["trial_id"]) or row.get("strategy")
                        or (row.get("params") or {}).get("attraction_strategy"))
            by_strategy.setdefault(str(strategy), []).append(float(row[metric]))
    pick = max if mode == "max" else min
    for strategy, values in sorted(by_strategy.items()):
        metrics[f"{strategy}_best_{metric}"] = pick(values)
        metrics[f"{strategy}_mean_{metric}"] = sum(values) / len(values)
    return metrics, tags


def error_line(error: BaseException | None) -> str | None:
    """The one-line reason of a trial's error: the trial's own exception when Ray wrapped it
    (`RayTaskError.cause`), else the last line of the message (Ray puts the cause last)."""
    if error is None:
        return None
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException):
        error = cause
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def disk_history(root: str, trial_id: str) -> dict[int, dict[str, Any]]:
    """Every epoch of a trial that is on disk: the latest checkpoint's history, plus Tune's
    result.json lines (epochs reported without a checkpoint). Empty for a new trial."""
    history: dict[int, dict[str, Any]] = {}
    if is_uri(root):
        return history
    from trainables.checkpoint import read_history

    latest = latest_checkpoint(root, trial_id)
    for entry in read_history(latest) if latest else []:
        if entry.get("epoch") is not None:
            history[int(entry["epoch"])] = dict(entry)
    for result_file in Path(root).glob(f"*_{trial_id}_*/result.json"):
        for line in result_file.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill
                continue
            if entry.get("epoch") is not None:
                # the checkpoint's values win; Tune's keys it lacks (timestamp, time_total_s:
                # when the epoch ended) are added
                known = history.setdefault(int(entry["epoch"]), {})
                for key, value in entry.items():
                    known.setdefault(key, value)
    return history
