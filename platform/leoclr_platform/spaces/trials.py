"""From a spec to the configs its trials train: grid cells, ASHA's rungs, the resolved TrainConfig.

`trial_config` is where a trial's config is validated: base + what was sampled (or the grid
cell) + epochs + seed become a `TrainConfig`, and a problem is a `SpaceError` naming the file.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from trainables.config import ConfigError, TrainConfig

from leoclr_platform.errors import SpaceError
from leoclr_platform.spaces.schema import MONITOR_METRICS, ONE_MINUS_SUFFIX, SweepSpec


def asha_rungs(spec: SweepSpec) -> list[int]:
    """The epochs at which the sweep's ASHAScheduler judges trials, computed as Ray's
    AsyncHyperBandScheduler does for its one bracket (max_t = max_epochs + 1, see
    sweep/tuner.py): milestones grace * rf**k for k < int(log(max_t / grace) / log(rf) + 1),
    each reached at the first epoch >= it; those past max_epochs are never reached."""
    max_t = spec.max_epochs + 1
    count = int(math.log(max_t / spec.grace_period) / math.log(spec.reduction_factor) + 1)
    milestones = (spec.grace_period * spec.reduction_factor ** k for k in range(count))
    return sorted({math.ceil(m) for m in milestones if math.ceil(m) <= spec.max_epochs})


def trial_config(spec: SweepSpec, sampled: Mapping[str, Any], seed: int | None = None) -> TrainConfig:
    """base + sampled + epochs=max_epochs + seed -> a validated TrainConfig.

    `seed` wins over `sampled["seed"]`, which wins over seeds[0].
    """
    sampled = dict(sampled)
    for key in [k for k in sampled if k.endswith(ONE_MINUS_SUFFIX)]:  # raw Tune configs work too
        one_minus = sampled.pop(key)
        sampled.setdefault(key[: -len(ONE_MINUS_SUFFIX)], 1.0 - one_minus)
    values = {**spec.base, **sampled, "epochs": spec.max_epochs}
    if seed is not None:
        values["seed"] = seed
    values.setdefault("seed", spec.seeds[0])
    if spec.mode == "search" and spec.metric in MONITOR_METRICS and values.get("knn_every", 1) != 1:
        # ASHA judges a trial at the first result with the objective at or past each rung, and
        # Optuna records the objective of every epoch that has it: evaluate exactly at the rungs
        extra = values.get("knn_epochs") or []
        if isinstance(extra, (list, tuple)):
            values["knn_epochs"] = sorted({*extra, *asha_rungs(spec)})
    try:
        return TrainConfig.from_dict(values, source=spec.label)
    except ConfigError as exc:
        raise SpaceError.from_input_error(exc) from None


def grid_configs(spec: SweepSpec) -> list[dict[str, Any]]:
    """Grid mode: every cell x every seed as {key: value, ..., "seed": s}.

    Seeds are the outer loop: all cells with seeds[0] come first, so a grid cut short still has
    one complete row per cell.
    """
    if spec.mode != "grid":
        raise SpaceError(f"grid_configs needs mode grid, this space is {spec.mode!r}", source=spec.label,
                         key="mode")
    cells = spec.cells()
    return [{**cell, "seed": s} for s in spec.seeds for cell in cells]
