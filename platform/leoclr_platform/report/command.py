"""`leoclr report NAME`: read a sweep back from MLflow and write its ablation report.

The records come from the tracking store (the parent run's params say what was searched, each
child run holds its resolved config, final metrics and per-epoch history); `build.py` turns
them into the table and plots; `sources.py` adds the parent run's importance and baseline, the
run's scale and the evaluations of promoted versions. Confirmation runs (tag stage=confirm) are
read with the trials. The files go to `--out` (default: `report/` in the sweep's results folder,
the `results` param of its parent run) and are logged as artifacts of the sweep's parent run
under `report/`. An unknown sweep name is refused first, fast, with the sweeps that exist.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from leoclr_platform import tracking
from leoclr_platform.errors import TrackingError
from leoclr_platform.registry import find_sweep_run, sweep_objective, trial_runs
from leoclr_platform.report.build import Report, build_report
from leoclr_platform.report.lookup import check_sweep
from leoclr_platform.report.records import RunRecord
from leoclr_platform.report.sources import read_context

#: Tag of a trial run that ASHA stopped early (its status is FINISHED: MLflow draws KILLED as a
#: failure); the report counts such a run as stopped.
STOPPED_TAG = "stopped_early"


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


def sweep_runs(c, parent) -> list:
    """The sweep's trial runs (role=trial) and its confirmation runs (stage=confirm), once each."""
    runs = {r.info.run_id: r for r in trial_runs(c, parent)}
    sweep = parent.data.tags["sweep"]
    for run in c.search_runs([parent.info.experiment_id], f"tags.sweep = '{sweep}' AND tags.stage = 'confirm'",
                             max_results=50000):
        runs.setdefault(run.info.run_id, run)
    return list(runs.values())


def split_sizes(run) -> dict[str, int]:
    """{"train_images": n, "val_images": n, "test_images": n} from the run's MLflow dataset inputs
    (a profile with `split` and `num_images`, as trial runs log them)."""
    out = {}
    for item in getattr(getattr(run, "inputs", None), "dataset_inputs", None) or []:
        try:
            profile = json.loads(item.dataset.profile or "{}")
        except (TypeError, ValueError):
            continue
        split, n = profile.get("split"), profile.get("num_images")
        if split in ("train", "val", "test") and isinstance(n, (int, float)):
            out[f"{split}_images"] = int(n)
    return out


def record_of(c, run, metric: str) -> RunRecord:
    """One run as the report reads it: typed params, final metrics, history of `metric` and loss."""
    params = {**split_sizes(run), **{k: typed(v) for k, v in run.data.params.items()}}
    tags = run.data.tags
    history = {}
    for key in {metric, "loss"}:
        points = sorted((int(m.step), float(m.value)) for m in c.get_metric_history(run.info.run_id, key))
        if points:
            history[key] = points
    epochs = max((step for step, _ in history.get("loss", [])), default=None)
    seed = typed(tags["seed"]) if "seed" in tags else params.get("seed")
    status = run.info.status
    if status == "FINISHED" and tags.get(STOPPED_TAG):  # ASHA-stopped trials end FINISHED, tagged
        status = "KILLED"
    return RunRecord(run_id=run.info.run_id, trial_id=tags.get("trial_id", run.info.run_name),
                     status=status, params=params, metrics=dict(run.data.metrics),
                     history=history, seed=seed, epochs=epochs,
                     stage=tags.get("stage") or "search", confirm_of=tags.get("confirm_of"))


def sweep_records(uri: str, sweep: str):
    """(parent run, [RunRecord]) of a sweep, from the tracking store."""
    c = tracking.client(uri)
    parent = find_sweep_run(c, sweep)
    metric, _ = sweep_objective(parent)
    return parent, [record_of(c, run, metric) for run in sweep_runs(c, parent)]


def default_out_dir(parent, sweep: str) -> Path:
    """The sweep's results folder + report/ when it is a local path, else ./report-<sweep>."""
    results = parent.data.params.get("results")
    return Path(results) / "report" if results and "://" not in results else Path.cwd() / f"report-{sweep}"


def report_sweep(uri: str, sweep: str, out_dir: str | Path | None = None,
                 out: Callable[[str], None] = print) -> Report:
    """Write the report of sweep `sweep` from store `uri`, log it to the sweep's run, print it."""
    check_sweep(uri, sweep)  # an unknown name is answered before MLflow is even imported
    tracking.check_store(uri)
    tracking.use_store(uri)
    parent, records = sweep_records(uri, sweep)
    if not records:
        shown = tracking.redact_uri(uri)
        raise TrackingError(f"has no trial runs in {shown} yet", key="sweep", value=sweep,
                            message=f"sweep {sweep!r} has no trial runs in {shown} yet")
    metric, mode = sweep_objective(parent)
    params = parent.data.params
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(parent, sweep)
    c = tracking.client(uri)
    report = build_report(records, metric=metric, mode=mode, searched=typed(params.get("searched", "[]")) or [],
                          grid=params.get("mode") == "grid", title=f"Ablation report: sweep {sweep}",
                          out_dir=out_dir, max_epochs=typed(params.get("max_epochs", "None")),
                          context=read_context(c, parent, records))
    for path in report.files.values():
        c.log_artifact(parent.info.run_id, str(path), "report")
    out("\n".join(line for line in report.markdown.splitlines() if not line.startswith("![")).rstrip())
    out(f"\nreport: {out_dir.resolve()} ({', '.join(sorted(p.name for p in report.files.values()))}); "
        f"also logged to the sweep's run {parent.info.run_id} under report/")
    return report
