"""The ONE place the platform reaches into private Ray and Optuna attributes.

Each function below wraps an attribute that has no public equivalent in the versions the
platform was checked against (Ray 2.60.0, Optuna 5.0.0, MLflow 3.17.2); the comment on each
says which version, what it is for and what happens if it disappears. Everything else in the
platform uses public APIs. When upgrading Ray or Optuna, check these first
(tests/platform/sweep/test_compat.py exercises each one).
"""

from __future__ import annotations

import os
from typing import Any


def ray_num_cpus() -> int:
    """CPUs an in-process Ray runtime would offer, found without starting it.

    Ray 2.60.0: `ray._private.utils.get_num_cpus` is Ray's own count (cgroup and container
    limits included); no public function gives it before `ray.init`. Falls back to
    os.cpu_count() if the helper is gone."""
    try:
        from ray._private.utils import get_num_cpus

        return int(get_num_cpus())
    except Exception:  # noqa: BLE001 - a private helper: fall back to the OS count
        return os.cpu_count() or 1


def set_restored_callbacks(tuner: Any, callbacks: list) -> bool:
    """Put live callbacks into a Tuner made by `Tuner.restore` (whose pickled RunConfig holds
    the placeholders the callbacks pickle to). Returns whether it could.

    Ray 2.60.0: `Tuner.restore` takes no run_config, and the restored RunConfig is reachable
    only through `tuner._local_tuner.get_run_config()` (ray-project/ray#41364 asks for a public
    way). If it is gone, the resumed sweep runs without tracking callbacks; `leoclr sync`
    replays what they would have logged."""
    local = getattr(tuner, "_local_tuner", None)
    if local is None or not hasattr(local, "get_run_config"):
        return False
    local.get_run_config().callbacks = callbacks
    return True


def optuna_trial_of(searcher: Any, trial_id: str) -> Any | None:
    """The live `optuna.Trial` an OptunaSearch holds for a Tune trial, or None when the searcher
    does not own it (already completed, or restored without it).

    Ray 2.60.0: `OptunaSearch._ot_trials` ({tune trial id: optuna.Trial}) and
    `_completed_trials` (a set of tune trial ids) are the only record of that mapping."""
    if trial_id in getattr(searcher, "_completed_trials", ()):
        return None
    return getattr(searcher, "_ot_trials", {}).get(trial_id)


def dashboard_url() -> str:
    """host:port of the connected Ray runtime's dashboard (for the State API of *this* runtime,
    not another one on the same machine).

    Ray 2.60.0: `ray._private.worker.get_dashboard_url`; the public `RayContext.dashboard_url`
    exists only on the value `ray.init` returned to whoever started the runtime."""
    import ray._private.worker

    return ray._private.worker.get_dashboard_url()


def asha_rung_cutoff(scheduler: Any, trial_id: str, cur_iter: float) -> tuple[float, float | None] | None:
    """(rung milestone, cutoff in the metric's own sign) that an ASHA result of `trial_id` at
    `cur_iter` is judged against, computed as the scheduler is about to (call it before
    `on_trial_result`); None when not at a new rung or if the internals moved.

    Ray 2.60.0: `AsyncHyperBandScheduler._trial_info` ({trial id: _Bracket}), `_Bracket._rungs`
    ([(milestone, {trial id: signed value})], highest milestone first), `_Bracket.cutoff(recorded)`
    and `_metric_op` (+1 max, -1 min) mirror `_Bracket.on_result`; no public API exposes the
    cutoff (only `debug_string`'s text). If they disappear the description says the epoch only."""
    try:
        bracket = scheduler._trial_info[trial_id]
        for milestone, recorded in bracket._rungs:
            if cur_iter < milestone or trial_id in recorded:
                continue
            cutoff = bracket.cutoff(recorded)
            return float(milestone), None if cutoff is None else float(cutoff) * scheduler._metric_op
    except Exception:  # noqa: BLE001 - private internals: the reason is best effort
        return None
    return None
