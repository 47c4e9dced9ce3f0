"""What a report reads from MLflow besides the trial runs: the sweep parent run's
`importance.json` and `baseline.json` (or their metrics), the run's scale for the header, and
the evaluation runs of the sweep's promoted model versions (tags role=evaluation, sweep=<name>;
per-protocol child runs merged into their parent's row). Returns a `SweepContext`.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

from leoclr_platform.report.records import RunRecord, SweepContext, format_value

#: Params or metrics that give a split's size, by the header's wording (first found wins).
#: (train_images etc. also come from the runs' MLflow dataset inputs: command.split_sizes.)
SPLIT_KEYS = {"training images": ("train_images", "data_pretrain_images", "n_train", "num_train"),
              "validation images": ("val_images", "data_val_images", "n_val", "num_val"),
              "test images": ("test_images", "data_test_images", "n_test", "num_test")}


def _no_progress_bar():
    """MLflow draws a progress bar per download; a report reads two small files (the
    environment is restored afterwards)."""
    from unittest import mock

    return mock.patch.dict(os.environ, {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"})


def read_json_artifact(c, run_id: str, name: str) -> dict[str, Any] | None:
    """The parsed JSON artifact `name` of a run (at the root or one folder down); None if absent."""
    try:
        entries = c.list_artifacts(run_id)
        paths = [e.path for e in entries if not e.is_dir]
        for folder in (e.path for e in entries if e.is_dir):
            paths += [e.path for e in c.list_artifacts(run_id, folder) if not e.is_dir]
        path = next((p for p in paths if p == name or p.endswith("/" + name)), None)
        if path is None:
            return None
        with tempfile.TemporaryDirectory(prefix="leoclr_report_") as tmp, _no_progress_bar():
            local = c.download_artifacts(run_id, path, tmp)
            return json.loads(Path(local).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def importance_from_metrics(metrics: dict[str, float]) -> dict[str, Any] | None:
    """importance_<method>_<param> metrics as an importance.json document (trial count unknown
    unless an `importance_n_trials` metric says it)."""
    methods: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        for method in ("fanova", "ped_anova"):
            if key.startswith(f"importance_{method}_"):
                methods.setdefault(method, {})[key[len(f"importance_{method}_"):]] = value
    if not methods:
        return None
    n = metrics.get("importance_n_trials")
    return {"n_trials": int(n) if n is not None else None, "metric": "val_knn_top1", "methods": methods, "errors": {}}


def baseline_from_metrics(metrics: dict[str, float]) -> dict[str, Any] | None:
    mean = {k[len("baseline_"):]: v for k, v in metrics.items() if k.startswith("baseline_")}
    if not mean:
        return None
    return {"what": "random weights, BatchNorm recalibrated", "seeds": [], "per_seed": {}, "mean": mean}


def _distinct(records: Sequence[RunRecord], key: str) -> list[Any]:
    values = []
    for r in records:
        v = (r.params or {}).get(key)
        if v is None:
            v = (r.metrics or {}).get(key)
        if v is not None and v not in values:
            values.append(v)
    return values


def _listed(values: Sequence[Any], key: str = "") -> str:
    return ", ".join(format_value(key, int(v) if isinstance(v, float) and v.is_integer() else v) for v in values)


def scale_of(params: dict[str, str], records: Sequence[RunRecord]) -> dict[str, str]:
    """The header: epochs, image size, dataset and its splits, backbone, seeds, trials."""
    scale: dict[str, str] = {}
    if params.get("max_epochs") not in (None, "None"):
        scale["epochs"] = params["max_epochs"]
    sizes = _distinct(records, "image_size")
    if sizes:
        views = [v for v in _distinct(records, "view_size") if v not in sizes]
        scale["image size"] = _listed(sizes) + " px" + (f" (views {_listed(views)} px)" if views else "")
    for key, label in (("dataset", "dataset"), ("backbone", "backbone")):
        if _distinct(records, key):
            scale[label] = _listed(_distinct(records, key))
    for label, keys in SPLIT_KEYS.items():
        found = next((vs for vs in (_distinct(records, k) for k in keys) if vs), None)
        if found:
            scale[label] = _listed(found)
    search = [r for r in records if r.stage != "confirm"]
    confirm = [r for r in records if r.stage == "confirm"]

    def seeds(rs: Sequence[RunRecord]) -> str:
        return _listed(sorted({r.seed for r in rs if r.seed is not None}, key=str))

    if seeds(search):
        scale["seeds"] = seeds(search) + (f" (search); {seeds(confirm)} (confirmation)" if confirm else "")
    elif confirm:
        scale["seeds"] = seeds(confirm) + " (confirmation)"
    planned = params.get("trials")
    scale["trials"] = f"{len(search)} search run{'s' if len(search) != 1 else ''}" + (
        f" of {planned} planned" if planned and planned != str(len(search)) else "") + (
        f", {len(confirm)} confirmation run{'s' if len(confirm) != 1 else ''}" if confirm else "")
    return scale


def evaluations_of(c, sweep: str) -> list[dict[str, Any]]:
    """One row per evaluation run of a model version promoted from `sweep` (child runs merged)."""
    experiments = [e.experiment_id for e in c.search_experiments(max_results=50000)]
    runs = c.search_runs(experiments, f"tags.role = 'evaluation' AND tags.sweep = '{sweep}'",
                         max_results=1000, order_by=["attributes.start_time ASC"])
    rows = []
    for run in runs:
        tags = run.data.tags
        if tags.get("mlflow.parentRunId") in {r.info.run_id for r in runs}:
            continue  # a protocol child tagged like its parent: merged below
        metrics = dict(run.data.metrics)
        for child in c.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'"):
            metrics.update(child.data.metrics)
        alias = f" @{tags['model_alias']}" if tags.get("model_alias") else ""
        rows.append({"model": f"{tags.get('model_name', '?')} v{tags.get('model_version', '?')}{alias}",
                     "strategy": tags.get("strategy"), "trial_id": tags.get("trial_id"),
                     "dataset": tags.get("dataset"), "run_id": run.info.run_id, "metrics": metrics})
    return rows


def read_context(c, parent, records: Sequence[RunRecord]) -> SweepContext:
    """The report's context of sweep run `parent`, from the tracking store behind client `c`."""
    run_id, metrics, params = parent.info.run_id, dict(parent.data.metrics), parent.data.params
    ctx = SweepContext(scale=scale_of(params, records))
    ctx.importance = read_json_artifact(c, run_id, "importance.json") or importance_from_metrics(metrics)
    if ctx.importance is None:
        ctx.absent["importance"] = (
            "a grid sweep has no Optuna study to compute it from" if params.get("mode") == "grid" else
            "the sweep's run has no importance.json (it is computed from the sweep's Optuna study after the "
            "search; sweeps recorded before that have none)")
    ctx.baseline = read_json_artifact(c, run_id, "baseline.json") or baseline_from_metrics(metrics)
    if ctx.baseline is None:
        ctx.absent["baseline"] = ("the sweep's run has no baseline.json (the recalibrated random-weights "
                                  "baseline is measured when the sweep runs; sweeps recorded before that have none)")
    ctx.evaluations = evaluations_of(c, parent.data.tags.get("sweep", ""))
    return ctx
