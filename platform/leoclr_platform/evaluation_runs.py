"""The tracking side of `leoclr evaluate`: one evaluation parent run, one child run per protocol.

Parent run (experiment `leoclr/evaluation`, tag role=evaluation): the model version's lineage
as tags (model_name, model_version, model_alias, model_uri, source_run_id, sweep, trial_id,
strategy; empty for a checkpoint evaluation, which has tag `checkpoint` instead), every
protocol's settings as params `<protocol>.<field>`, every protocol's final metrics
`<prefix>_<metric>` (knn_top1, linear_top1, random_crop_drop, semi_10pct_top1,
transfer_cifar100_linear_top1, ...) and the baseline's `baseline_<prefix>_<metric>`; start and
end time are those of the compute. Child runs (tag protocol=<name>, role=evaluation_protocol):
the protocol's settings as params, its metrics, the baseline's and the gain
(`gain_<prefix>_top1`), every epoch of its schedule at step = epoch (`<prefix>_<stat>`, stamped
when the engine reported it), its own compute's start and end time. Metrics are linked to the
evaluated MLflow LoggedModel (`model_id`) and the runs list it as an input. The model version
gets tags `eval.<dataset>.<metric>` and `eval.<dataset>.run_id`.
"""

from __future__ import annotations

from typing import Any

from leoclr_platform import tracking

EVALUATION_EXPERIMENT = "leoclr/evaluation"
ROLE_EVALUATION = "evaluation"
ROLE_PROTOCOL = "evaluation_protocol"
#: Metric suffixes copied onto the model version as tags eval.<dataset>.<prefix>_<suffix>.
VERSION_TAG_SUFFIXES = ("top1", "top5", "drop", "linear_top1", "finetune_top1")
#: History stats that are not metrics.
_NOT_METRICS = ("epoch", "protocol", "part", "time_ms", "mode")


def logged_model_id(mv) -> str | None:
    """The MLflow 3 LoggedModel a model version holds (its `model_id`, else from a models:/m-... source)."""
    if mv is None:
        return None
    model_id = getattr(mv, "model_id", None)
    if model_id:
        return model_id
    source = str(getattr(mv, "source", ""))
    return source.split("/")[-1] if source.startswith("models:/m-") else None


def log_evaluation(c, uri: str, outcome: dict[str, Any], *, mv=None, alias: str | None = None,
                   model_uri: str = "", checkpoint: str = "") -> str:
    """Log the parent run and its children; tag the version (if any). Returns the parent run id."""
    from mlflow.entities import LoggedModelInput

    model_id = logged_model_id(mv)
    experiment_id = tracking.ensure_experiment(c, EVALUATION_EXPERIMENT, uri)
    tags = _parent_tags(c, outcome, mv, alias, model_uri, checkpoint)
    what = f"{mv.name} v{mv.version}" if mv is not None else f"checkpoint {checkpoint}"
    parent = c.create_run(experiment_id, start_time=outcome["start_ms"], run_name=f"eval {what} on {outcome['dataset']}",
                          tags=tags).info.run_id
    params = {"dataset": outcome["dataset"], "backbone": outcome["train_config"]["backbone"],
              "protocols": ",".join(outcome["protocols"]), "train_preset": outcome["train_config"].get("preset")}
    for name, entry in outcome["protocols"].items():
        params.update({f"{name}.{k}": v for k, v in entry["settings"].items()})
    _log_params(c, parent, params)
    flat = {**outcome["results"], **{f"baseline_{k}": v for k, v in outcome["baseline"].items()}}
    _log_metrics(c, parent, flat, outcome["end_ms"], model_id)
    if model_id:
        c.log_inputs(parent, models=[LoggedModelInput(model_id)])
    for name, entry in outcome["protocols"].items():
        _log_protocol(c, experiment_id, parent, name, entry, {**tags, "mlflow.parentRunId": parent}, model_id)
    c.set_terminated(parent, "FINISHED", end_time=outcome["end_ms"])
    if mv is not None:
        tag_version(c, mv, outcome, parent)
    return parent


def _parent_tags(c, outcome, mv, alias, model_uri, checkpoint) -> dict[str, str]:
    source = c.get_run(mv.run_id).data.tags if mv is not None else {}
    return tracking.scrub({
        **tracking.code_version(), **tracking.package_versions(),
        "role": ROLE_EVALUATION, "model_name": getattr(mv, "name", ""), "model_version": str(getattr(mv, "version", "")),
        "model_alias": alias or "", "model_uri": model_uri, "source_run_id": getattr(mv, "run_id", "") or "",
        "sweep": source.get("sweep", ""), "trial_id": source.get("trial_id", ""),
        "strategy": source.get("strategy", outcome["train_config"].get("attraction_strategy", "")),
        "dataset": outcome["dataset"], "device": outcome["device"], "checkpoint": checkpoint,
        "baseline": "random weights, BatchNorm recalibrated" if outcome["baseline"] else "none",
    })


def _log_protocol(c, experiment_id: str, parent: str, name: str, entry: dict[str, Any], tags: dict[str, str],
                  model_id: str | None) -> None:
    """The protocol's child run: settings, final metrics, baseline and gain, per-epoch history."""
    from mlflow.entities import LoggedModelInput, Metric

    tags = {**tags, "role": ROLE_PROTOCOL, "protocol": name, "protocol_kind": entry["kind"]}
    run = c.create_run(experiment_id, start_time=entry["start_ms"], run_name=f"{name}", tags=tags).info.run_id
    _log_params(c, run, {"protocol": name, **entry["settings"]})
    prefix = entry["prefix"]
    flat = {f"{prefix}_{k}": v for k, v in entry["metrics"].items()}
    base = entry.get("baseline")
    if base is not None:
        flat.update({f"baseline_{prefix}_{k}": v for k, v in base["metrics"].items()})
        flat.update({f"gain_{prefix}_{k}": entry["metrics"][k] - v for k, v in base["metrics"].items()
                     if k in ("top1", "top5") and k in entry["metrics"]})
        flat[f"baseline_{prefix}_eval_time_s"] = (base["end_ms"] - base["start_ms"]) / 1000.0
    history = [Metric(f"{_history_key(prefix, e, k)}", float(v), int(e["time_ms"]), int(e.get("epoch", 0)),
                      model_id=model_id)
               for e in entry["history"] for k, v in e.items()
               if k not in _NOT_METRICS and isinstance(v, (int, float))]
    per_epoch = {m.key for m in history}  # its last epoch is the final value: not logged twice
    _log_metrics(c, run, {k: v for k, v in flat.items() if k not in per_epoch}, entry["end_ms"], model_id)
    for i in range(0, len(history), 900):  # MLflow's batch limit is 1000 metrics
        c.log_batch(run, metrics=history[i:i + 900])
    if model_id:
        c.log_inputs(run, models=[LoggedModelInput(model_id)])
    c.set_terminated(run, "FINISHED", end_time=entry["end_ms"])


def _history_key(prefix: str, event: dict[str, Any], stat: str) -> str:
    """linear_train_loss; a transfer's halves: transfer_cifar100_finetune_train_loss."""
    part = event.get("part") or ""
    return f"{prefix}_{part}_{stat}" if part else f"{prefix}_{stat}"


def _log_params(c, run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    flat = tracking.scrub(tracking.flatten_params(params))
    items = [Param(k, v) for k, v in flat.items()]
    for i in range(0, len(items), 90):  # MLflow's batch limit is 100 params
        c.log_batch(run_id, params=items[i:i + 90])


def _log_metrics(c, run_id: str, metrics: dict[str, float], stamp: int, model_id: str | None) -> None:
    from mlflow.entities import Metric

    items = [Metric(k, float(v), stamp, 0, model_id=model_id) for k, v in metrics.items()]
    for i in range(0, len(items), 900):
        c.log_batch(run_id, metrics=items[i:i + 900])


def tag_version(c, mv, outcome: dict[str, Any], run_id: str) -> None:
    """eval.<dataset>.<metric> (two decimals) for every protocol's accuracies, eval.<dataset>.run_id."""
    prefix = f"eval.{outcome['dataset']}"
    for entry in outcome["protocols"].values():
        for suffix in VERSION_TAG_SUFFIXES:
            value = entry["metrics"].get(suffix)
            if value is not None:
                c.set_model_version_tag(mv.name, mv.version, f"{prefix}.{entry['prefix']}_{suffix}", f"{value:.2f}")
    c.set_model_version_tag(mv.name, mv.version, f"{prefix}.run_id", run_id)
