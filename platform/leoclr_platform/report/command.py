"""`leoclr report NAME`: read a sweep back from MLflow and write its ablation report.

The records come from the tracking store (the parent run's params say what was searched, each
child run holds its resolved config, final metrics and per-epoch history); `build.py` turns
them into the table and plots. The files go to `<out>` (default `<storage>/<sweep>/report/`)
and are logged as artifacts of the sweep's parent run under `report/`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from leoclr_platform import tracking
from leoclr_platform.errors import TrackingError
from leoclr_platform.registry import find_sweep_run, sweep_objective, trial_runs
from leoclr_platform.report.build import Report, build_report
from leoclr_platform.report.records import RunRecord


def typed(value: str) -> Any:
    """An MLflow param string back to the value it was logged from."""
    if value in ("None", ""):
        return None
    if value in ("True", "False"):
        return value == "True"
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    if value.startswith("["):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            pass
    return value


def sweep_records(uri: str, sweep: str):
    """(parent run, [RunRecord]) of a sweep, from the tracking store."""
    c = tracking.client(uri)
    parent = find_sweep_run(c, sweep)
    metric, _ = sweep_objective(parent)
    records = []
    for run in trial_runs(c, parent):
        params = {k: typed(v) for k, v in run.data.params.items()}
        history = {}
        for key in {metric, "loss"}:
            points = sorted((int(m.step), float(m.value)) for m in c.get_metric_history(run.info.run_id, key))
            if points:
                history[key] = points
        epochs = max((step for step, _ in history.get("loss", [])), default=None)
        records.append(RunRecord(run_id=run.info.run_id, trial_id=run.data.tags.get("trial_id", run.info.run_name),
                                 status=run.info.status, params=params, metrics=dict(run.data.metrics),
                                 history=history, seed=params.get("seed"), epochs=epochs))
    return parent, records


def report_sweep(uri: str, sweep: str, out_dir: str | Path | None = None,
                 out: Callable[[str], None] = print) -> Report:
    """Write the report of sweep `sweep` from store `uri`, log it to the sweep's run, print the table."""
    tracking.check_store(uri)
    tracking.use_store(uri)
    parent, records = sweep_records(uri, sweep)
    if not records:
        shown = tracking.redact_uri(uri)
        raise TrackingError(f"has no trial runs in {shown} yet", key="sweep", value=sweep,
                            message=f"sweep {sweep!r} has no trial runs in {shown} yet")
    metric, mode = sweep_objective(parent)
    params = parent.data.params
    if out_dir is None:
        results = params.get("results")
        out_dir = Path(results) / "report" if results and "://" not in results else Path.cwd() / f"report-{sweep}"
    report = build_report(records, metric=metric, mode=mode, searched=typed(params.get("searched", "[]")) or [],
                          grid=params.get("mode") == "grid", title=f"Ablation report: sweep {sweep}",
                          out_dir=out_dir, max_epochs=typed(params.get("max_epochs", "None")))
    c = tracking.client(uri)
    for path in report.files.values():
        c.log_artifact(parent.info.run_id, str(path), "report")
    out(report.markdown.split("\n![", 1)[0].rstrip())
    out(f"\nreport: {Path(out_dir).resolve()} ({', '.join(sorted(p.name for p in report.files.values()))}); "
        f"also logged to the sweep's run {parent.info.run_id} under report/")
    return report
