"""The sweep's baseline row: its base config's backbone with random weights and recalibrated
BatchNorm statistics (`trainables.eval.baseline.baseline_metrics`, docs/method.md), measured
under the trials' own monitor protocol on every seed the headline uses: the confirmation seeds
when the sweep has a confirmation stage, else the sweep's `seeds`.

The config is the space's base with TrainConfig defaults for the searched keys (the baseline
depends only on the backbone, the data and the monitor settings, which a space normally fixes).
It runs in the sweep driver after the search (seconds on the CPU: one pass over the training
images per seed, then the kNN). The result is `baseline.json` and `baseline_*` metrics on the
parent run (contract in docs/tracking.md); a failure is recorded with its reason (the parent
run's `baseline_error` tag) and never stops the sweep.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from leoclr_platform.spaces import SweepSpec, trial_config

BASELINE_FILE = "baseline.json"
WHAT = "random weights, BatchNorm recalibrated"
#: Metrics of the baseline row (what a trial's last epoch reports for its trained encoder).
BASELINE_METRICS = ("val_knn_top1", "val_knn_top5", "test_knn_top1", "test_knn_top5", "rankme")
#: The means logged on the parent run as baseline_<metric>.
PARENT_METRICS = ("val_knn_top1", "test_knn_top1", "rankme")


def headline_seeds(spec: SweepSpec, confirm: dict[str, Any] | None) -> list[int]:
    """The seeds the report's headline rests on: the confirmation seeds, else the sweep's seeds."""
    if confirm and confirm.get("seeds"):
        return [int(s) for s in confirm["seeds"]]
    return list(spec.seeds)


def sweep_baseline(spec: SweepSpec, seeds: list[int]) -> dict[str, Any]:
    """{"what", "seeds", "per_seed": {seed: {metric: value}}, "mean": {metric: value}, "config"}."""
    import torch

    from trainables.data import load_data
    from trainables.eval.baseline import baseline_metrics

    cfg = trial_config(spec, {}, seed=seeds[0])
    device = torch.device("cuda" if cfg.device != "cpu" and torch.cuda.is_available() else "cpu")
    data = load_data(cfg.dataset, root=cfg.data_root, image_size=cfg.image_size, download=cfg.download,
                     photo_patches=cfg.photo_patches, val_fraction=cfg.val_fraction, val_seed=cfg.val_seed)
    per_seed: dict[str, dict[str, float]] = {}
    for seed in seeds:
        measured = baseline_metrics(trial_config(spec, {}, seed=seed), data, device, seed=seed)
        per_seed[str(seed)] = {k: float(measured[k]) for k in BASELINE_METRICS if k in measured}
    mean = {}
    for key in BASELINE_METRICS:
        values = [m[key] for m in per_seed.values() if key in m and math.isfinite(m[key])]
        if values:
            mean[key] = sum(values) / len(values)
    return {"what": WHAT, "seeds": list(seeds), "per_seed": per_seed, "mean": mean,
            "config": {"backbone": cfg.backbone, "dataset": cfg.dataset, "image_size": cfg.image_size,
                       "knn_k": cfg.knn_k}}


def parent_metrics(result: dict[str, Any]) -> dict[str, float]:
    """baseline_<metric> (means over the seeds) for the parent run."""
    return {f"baseline_{k}": v for k, v in result.get("mean", {}).items() if k in PARENT_METRICS}


def write_baseline(result: dict[str, Any], folder: str | Path) -> Path:
    path = Path(folder) / BASELINE_FILE
    path.write_text(json.dumps(result, indent=2))
    return path
