"""What a trial run's params and metrics are made of: its config as display params, a Tune
result as MLflow metrics (renamed where the loop's names would mislead), when it started.

Pure functions, shared by the live tracker and `leoclr sync` (tracking/sweep_runs.py).
"""

from __future__ import annotations

from typing import Any, Mapping

from leoclr_platform.tracking.provenance import flatten_params
from leoclr_platform.tracking.run_text import display_params

#: Metrics logged each epoch, by their MLflow name (the rest of a Tune result, such as
#: time_total_s or checkpoint_path, is bookkeeping). `lr_actual` is the loop's `lr`: the learning
#: rate the optimizer used at the epoch's last step (scaled by batch / 256, warm-up and cosine
#: applied), named apart from the param `lr` (the config's lr per 256 images).
EPOCH_METRICS = (
    "loss", "val_knn_top1", "val_knn_top5", "rankme", "test_knn_top1", "test_knn_top5", "lr_actual",
    "images_per_s", "epoch_time_s", "train_time_s", "knn_time_s", "steps", "val_knn_top1_init",
    "val_knn_top5_init", "rankme_init",
)
#: MLflow name -> the key of the loop's result it comes from, where they differ.
METRIC_SOURCES = {"lr_actual": "lr"}
#: Prefix of the system metrics a trial reports (sweep/trial.py) and the driver logs.
SYSTEM_PREFIX = "system/"


def epoch_metrics(result: Mapping[str, Any], system: bool = True) -> dict[str, float]:
    """The MLflow metrics of one result: EPOCH_METRICS (renamed from the loop's keys) and, with
    `system`, the system/* values the trial measured."""
    out = {}
    for name in EPOCH_METRICS:
        value = result.get(METRIC_SOURCES.get(name, name))
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    if system:
        out.update({k: float(v) for k, v in result.items()
                    if k.startswith(SYSTEM_PREFIX) and isinstance(v, (int, float)) and not isinstance(v, bool)})
    return out


def trial_params(config: Mapping[str, Any]) -> dict[str, str]:
    """A trial's params: its config flattened and rounded for display, plus `lr_scaled` (the
    peak lr the optimizer uses: lr x batch_size / 256)."""
    params = display_params(_flat_values(config))
    lr, batch = config.get("lr"), config.get("batch_size")
    if isinstance(lr, (int, float)) and isinstance(batch, int):
        params["lr_scaled"] = display_params({"x": float(lr) * batch / 256})["x"]
    return params


def _flat_values(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            out.update(_flat_values(value, f"{prefix}{key}."))
        elif isinstance(value, (list, tuple)):
            out[f"{prefix}{key}"] = flatten_params({"x": value})["x"]
        else:
            out[f"{prefix}{key}"] = value
    return out


def start_from_history(history: Mapping[int, Mapping[str, Any]]) -> float | None:
    """When a trial started, from its first result on disk: its timestamp minus Tune's
    time_total_s (None without both)."""
    if not history:
        return None
    first = history[min(history)]
    stamp, total = first.get("timestamp"), first.get("time_total_s")
    if isinstance(stamp, (int, float)) and isinstance(total, (int, float)):
        return float(stamp) - float(total)
    return None
