"""Validation of a search space: everything that can be checked before compute.

`validate_space` runs named checks in a fixed order (identity, seeds, budget, resources,
objective, base, each searched parameter, how trials run, every corner of the space, the data)
and raises the first problem as a `SpaceError` naming the file, the key path and the reason. It
uses the project's one did-you-mean and the shared predicates of `trainables.validation`, and
reads the engine's errors by their fields (`key`, `reason`), never by their text.
"""

from __future__ import annotations

import math
from pathlib import Path

from trainables.validation import did_you_mean, is_int, is_number

from leoclr_platform.errors import SpaceError
from leoclr_platform.spaces.corners import check_corners
from leoclr_platform.spaces.schema import (
    CONFIG_FIELDS,
    CONFIRM_KEYS,
    FILE_DATASETS,
    KINDS,
    LAUNCHERS,
    METRICS,
    MODES,
    MONITOR_METRICS,
    RENAMED_METRICS,
    NAME_RE,
    RESERVED_KEYS,
    ParamSpec,
    SweepSpec,
    enum_values,
    field_type,
    type_name,
)


def validate_space(spec: SweepSpec, *, check_data: bool = True) -> None:
    """Check everything that can be checked before compute; raise SpaceError naming file, key, reason.

    Safe to call again after changing a spec in code (e.g. `dataclasses.replace(spec, trials=2)`).
    """
    for check in (_check_identity, _check_seeds, _check_budget, _check_confirm, _check_asha, _check_concurrency,
                  _check_resources, _check_objective, _check_base, _check_params, _check_device):
        check(spec)
    check_corners(spec)
    if check_data:
        _check_data(spec)


def _fail(spec: SweepSpec, key: str, reason: str) -> SpaceError:
    return SpaceError(reason, source=spec.label, key=key)


def _require_int(spec: SweepSpec, key: str, value, minimum: int) -> None:
    if not is_int(value) or value < minimum:
        raise _fail(spec, key, f"must be an integer >= {minimum}, got {value!r}")


# ---------------------------------------------------------------------------------------------
# The sweep's own fields
def _check_identity(spec: SweepSpec) -> None:
    if not isinstance(spec.name, str) or not NAME_RE.match(spec.name):
        raise _fail(spec, "name", "must be a word of letters, digits, '_', '-' or '.' (it names the MLflow "
                                  f"experiment and folders), got {spec.name!r}")
    if not isinstance(spec.description, str):
        raise _fail(spec, "description", f"must be a string, got {type_name(spec.description)}")
    if spec.mode not in MODES:
        raise _fail(spec, "mode", f"must be one of {', '.join(MODES)}, got {spec.mode!r}")


def _check_seeds(spec: SweepSpec) -> None:
    if not isinstance(spec.seeds, list) or not spec.seeds:
        raise _fail(spec, "seeds", f"must be a non-empty list of integers like [0, 1, 2], got {spec.seeds!r}")
    for i, s in enumerate(spec.seeds):
        if not is_int(s) or not 0 <= s < 2**32:
            raise _fail(spec, f"seeds[{i}]", f"must be an integer in [0, 2**32), got {s!r}")
    if len(set(spec.seeds)) != len(spec.seeds):
        raise _fail(spec, "seeds", f"has repeated values: {spec.seeds}")


def _check_budget(spec: SweepSpec) -> None:
    if spec.mode == "search" or spec.trials is not None:
        if spec.trials is None:
            raise _fail(spec, "budget.trials", "is required in search mode (how many configurations TPE proposes)")
        _require_int(spec, "budget.trials", spec.trials, 1)
    if "epochs" in spec.base:
        _require_int(spec, "base.epochs", spec.base["epochs"], 1)
    _require_int(spec, "budget.max_epochs", spec.max_epochs, 1)
    if "epochs" in spec.base and spec.base["epochs"] != spec.max_epochs:
        raise _fail(spec, "budget.max_epochs", f"{spec.max_epochs} disagrees with base.epochs "
                                               f"({spec.base['epochs']!r}); give only one (max_epochs sets the "
                                               "epochs of every trial)")


def _check_confirm(spec: SweepSpec) -> None:
    """budget.confirm {top: K, seeds: N}: search mode only; K >= 1 and <= trials, N >= 2."""
    confirm = spec.confirm
    if confirm is None:
        return
    if not isinstance(confirm, dict):
        raise _fail(spec, "budget.confirm", f"must be a mapping {{top: K, seeds: N}}, got {type_name(confirm)}")
    for key in confirm:
        if key not in CONFIRM_KEYS:
            raise _fail(spec, f"budget.confirm.{key}", f"unknown key{did_you_mean(str(key), CONFIRM_KEYS)}; "
                                                       f"valid keys: {', '.join(CONFIRM_KEYS)}")
    if spec.mode != "search":
        raise _fail(spec, "budget.confirm", "only applies to mode: search (a grid already runs every cell on "
                                            "every seed of `seeds`)")
    if "seeds" not in confirm or not is_int(confirm["seeds"]) or confirm["seeds"] < 2:
        raise _fail(spec, "budget.confirm.seeds", "must be an integer >= 2 (an interval needs at least 2 seeds), "
                                                  f"got {confirm.get('seeds')!r}")
    top = confirm.get("top", 1)
    _require_int(spec, "budget.confirm.top", top, 1)
    if is_int(spec.trials) and top > spec.trials:
        raise _fail(spec, "budget.confirm.top", f"{top} must be <= budget.trials ({spec.trials}): the search "
                                                "proposes no more configurations than that")


def _check_asha(spec: SweepSpec) -> None:
    """ASHA's and TPE's settings (checked in every mode: the file may state them either way)."""
    _require_int(spec, "budget.grace_period", spec.grace_period, 1)
    if spec.grace_period > spec.max_epochs:
        raise _fail(spec, "budget.grace_period", f"{spec.grace_period} must be <= budget.max_epochs "
                                                 f"({spec.max_epochs}): no trial would ever reach the first ASHA rung")
    if not is_number(spec.reduction_factor) or spec.reduction_factor < 2:
        raise _fail(spec, "budget.reduction_factor", f"must be a number >= 2, got {spec.reduction_factor!r}")
    _require_int(spec, "budget.startup_trials", spec.startup_trials, 1)


def _check_concurrency(spec: SweepSpec) -> None:
    if spec.max_concurrent is not None and (not is_int(spec.max_concurrent) or spec.max_concurrent < 1):
        raise _fail(spec, "budget.max_concurrent", "must be an integer >= 1 or null (derived from the "
                                                   f"cluster), got {spec.max_concurrent!r}")


def _check_resources(spec: SweepSpec) -> None:
    _require_int(spec, "resources.workers", spec.workers, 1)
    if not is_number(spec.cpus_per_worker) or spec.cpus_per_worker <= 0:
        raise _fail(spec, "resources.cpus_per_worker", f"must be a number > 0, got {spec.cpus_per_worker!r}")
    if not is_number(spec.gpus_per_worker) or spec.gpus_per_worker < 0:
        raise _fail(spec, "resources.gpus_per_worker", f"must be a number >= 0, got {spec.gpus_per_worker!r}")
    if spec.launcher not in LAUNCHERS:
        raise _fail(spec, "resources.launcher", f"must be one of {', '.join(LAUNCHERS)}, got {spec.launcher!r}")


def _check_objective(spec: SweepSpec) -> None:
    if spec.metric in RENAMED_METRICS:
        raise _fail(spec, "objective.metric",
                    f"{spec.metric!r} is measured on the test split, which never selects: use "
                    f"{RENAMED_METRICS[spec.metric]!r} (the same kNN on the validation split; the test "
                    "split is reported at each trial's last epoch as test_knn_top1/5)")
    if spec.metric not in METRICS:
        hint = did_you_mean(spec.metric, METRICS) if isinstance(spec.metric, str) else ""
        raise _fail(spec, "objective.metric", f"{spec.metric!r} is not reported by the training loop{hint}; "
                                              f"use one of {', '.join(METRICS)}")
    if spec.metric_mode not in ("max", "min"):
        raise _fail(spec, "objective.mode", f"must be max or min, got {spec.metric_mode!r}")
    if spec.metric_mode != METRICS[spec.metric]:
        raise _fail(spec, "objective.mode", f"{spec.metric} should be {METRICS[spec.metric]}imised, not "
                                            f"{spec.metric_mode}imised")


def _check_base(spec: SweepSpec) -> None:
    if not isinstance(spec.base, dict):
        raise _fail(spec, "base", f"must be a mapping, got {type_name(spec.base)}")
    for key in spec.base:
        if key == "seed":
            raise _fail(spec, "base.seed", RESERVED_KEYS["seed"] + "; remove it from base")
        if key not in CONFIG_FIELDS:
            raise _fail(spec, f"base.{key}", f"unknown TrainConfig key{did_you_mean(key, CONFIG_FIELDS)}")


def _check_device(spec: SweepSpec) -> None:
    """How trials run: the objective can be computed, and GPUs are held only if used."""
    searched = {p.name for p in spec.params}
    # knn_every > 1 in a search: the trials evaluate kNN at ASHA's rung epochs too (trial_config)
    if spec.mode == "search" and "knn_every" in searched and spec.metric in MONITOR_METRICS:
        raise _fail(spec, "space.knn_every", f"cannot be searched when the objective is {spec.metric}")
    if "device" in searched:
        return
    device = spec.fixed_values().get("device")
    if device == "cpu" and spec.gpus_per_worker > 0:
        raise _fail(spec, "resources.gpus_per_worker", f"is {spec.gpus_per_worker} but base.device is cpu: "
                                                       "trials would hold GPUs they never use")
    if device == "cuda" and spec.gpus_per_worker == 0:
        raise _fail(spec, "resources.gpus_per_worker", "is 0 but base.device is cuda: request GPUs "
                                                       "(e.g. gpus_per_worker: 1) or use device: auto")


# ---------------------------------------------------------------------------------------------
# Searched parameters
def _check_params(spec: SweepSpec) -> None:
    names = [p.name for p in spec.params]
    for p in spec.params:
        if names.count(p.name) > 1:
            raise _fail(spec, f"space.{p.name}", "is given twice")
    if spec.mode == "search" and not spec.params:
        raise _fail(spec, "space", "search mode needs at least one searched key (or use mode: grid with seeds)")
    for index, p in enumerate(spec.params):
        _check_param_key(spec, p)
        if p.categorical:
            _check_choices(spec, p)
        else:
            _check_range(spec, p)
            _check_step(spec, p)
        _check_when(spec, p, index)


def _check_param_key(spec: SweepSpec, p: ParamSpec) -> None:
    """The key exists, may be searched, and the distribution suits its type and the mode."""
    path = f"space.{p.name}"
    if not isinstance(p.name, str) or p.name not in CONFIG_FIELDS:
        raise _fail(spec, path, f"unknown TrainConfig key{did_you_mean(str(p.name), CONFIG_FIELDS)}")
    if p.name in RESERVED_KEYS:
        raise _fail(spec, path, f"cannot be searched: {RESERVED_KEYS[p.name]}")
    if p.name in spec.base:
        raise _fail(spec, path, f"is also fixed in base (base.{p.name}={spec.base[p.name]!r}); a key is either "
                                "fixed or searched: remove one")
    if p.kind not in KINDS:
        raise _fail(spec, path, f"unknown distribution {p.kind!r}{did_you_mean(str(p.kind), KINDS)}; "
                                f"use one of {', '.join(KINDS)}")
    ftype = field_type(p.name)
    if ftype in (tuple, dict):
        raise _fail(spec, path, f"{p.name} is a {'pair' if ftype is tuple else 'mapping'} and cannot be "
                                "searched; fix it in base")
    if spec.mode == "grid" and not p.categorical:
        raise _fail(spec, f"{path}.{p.kind}", "grid mode needs a list of values: use choice: [...] or grid: [...]")


def _check_choices(spec: SweepSpec, p: ParamSpec) -> None:
    kpath = f"space.{p.name}.{p.kind}"
    if not isinstance(p.args, list) or len(p.args) < 2:
        raise _fail(spec, kpath, f"needs a list of at least 2 values (a single value belongs in base), "
                                 f"got {p.args!r}")
    seen = []
    for v in p.args:
        if v is not None and not isinstance(v, (bool, int, float, str)):
            raise _fail(spec, kpath, f"values must be scalars (string, number, true/false, null), got {v!r}")
        if isinstance(v, float) and not math.isfinite(v):
            raise _fail(spec, kpath, f"values must be finite, got {v!r}")
        if (type(v), v) in seen:
            raise _fail(spec, kpath, f"value {v!r} is listed twice")
        seen.append((type(v), v))
    if p.step is not None:
        raise _fail(spec, f"space.{p.name}.step", f"only applies to int and uniform, not {p.kind}")


def _check_range(spec: SweepSpec, p: ParamSpec) -> None:
    kpath = f"space.{p.name}.{p.kind}"
    ftype = field_type(p.name)
    if ftype in (str, bool):
        raise _fail(spec, kpath, f"{p.name} is a {'string' if ftype is str else 'true/false'} key: "
                                 "use choice: [...]")
    if ftype is int and p.kind not in ("int", "log_int"):
        raise _fail(spec, kpath, f"{p.name} is an integer: use int, log_int or choice")
    if not isinstance(p.args, list) or len(p.args) != 2:
        raise _fail(spec, kpath, f"needs [low, high], got {p.args!r}")
    low, high = p.args
    for what, v in (("low", low), ("high", high)):
        if p.kind in ("int", "log_int") and not is_int(v):
            raise _fail(spec, kpath, f"{what} must be an integer, got {v!r}")
        if not is_number(v):
            raise _fail(spec, kpath, f"{what} must be a finite number, got {v!r}")
    if low >= high:
        raise _fail(spec, kpath, f"low must be < high, got [{low}, {high}]")
    if p.kind == "loguniform" and low <= 0:
        raise _fail(spec, kpath, f"low must be > 0, got {low} (a log scale)")
    if p.kind == "log_int" and low < 1:
        raise _fail(spec, kpath, f"low must be >= 1, got {low} (a log scale)")
    if p.kind == "one_minus_log" and not 0 < low < high < 1:
        raise _fail(spec, kpath, f"[low, high] is the range of m and must lie inside (0, 1), got [{low}, {high}]")


def _check_step(spec: SweepSpec, p: ParamSpec) -> None:
    if p.step is None:
        return
    spath = f"space.{p.name}.step"
    low, high = p.args
    if p.kind not in ("int", "uniform"):
        raise _fail(spec, spath, f"only applies to int and uniform, not {p.kind} (a log scale has no step)")
    if p.kind == "int":
        _require_int(spec, spath, p.step, 1)
        if (high - low) % p.step:
            raise _fail(spec, spath, f"high - low ({high - low}) must be a multiple of step {p.step}")
        return
    if not is_number(p.step) or p.step <= 0:
        raise _fail(spec, spath, f"must be a number > 0, got {p.step!r}")
    n = (high - low) / p.step
    if abs(n - round(n)) > 1e-9 * max(1.0, abs(n)):
        raise _fail(spec, spath, f"high - low ({high - low:g}) must be a multiple of step {p.step}")


def _check_when(spec: SweepSpec, p: ParamSpec, index: int) -> None:
    """Each condition names a known key fixed or searched earlier, with values that occur."""
    path = f"space.{p.name}.when"
    if not isinstance(p.when, dict):
        raise _fail(spec, path, f"must be a mapping {{key: [values]}}, got {type_name(p.when)}")
    later = {q.name for q in spec.params[index + 1:]}
    for key, allowed in p.when.items():
        wpath = f"{path}.{key}"
        if key == p.name:
            raise _fail(spec, wpath, "a parameter cannot be conditional on itself")
        if not isinstance(key, str) or key not in CONFIG_FIELDS:
            raise _fail(spec, wpath, f"unknown TrainConfig key{did_you_mean(str(key), CONFIG_FIELDS)}")
        if key in later:
            raise _fail(spec, wpath, f"{key} is searched later in space: conditions may only refer to keys that "
                                     f"are fixed or searched earlier (move {key} above {p.name})")
        if not isinstance(allowed, list) or not allowed:
            raise _fail(spec, wpath, f"must be a non-empty list of values, got {allowed!r}")
        enum = enum_values(key)
        for v in allowed:
            if enum is not None and v not in enum:
                raise _fail(spec, wpath, f"{v!r} is not a valid {key}{did_you_mean(str(v), enum)}; "
                                         f"valid: {', '.join(enum)}")
        _check_condition_can_hold(spec, p, index, key, allowed)


def _check_condition_can_hold(spec: SweepSpec, p: ParamSpec, index: int, key: str, allowed: list) -> None:
    wpath = f"space.{p.name}.when.{key}"
    earlier = {q.name: q for q in spec.params[:index]}
    if key not in earlier:
        fixed = spec.fixed_values().get(key)
        if fixed not in allowed:
            where = "base" if key in spec.base else "the TrainConfig default"
            raise _fail(spec, wpath, f"{key} is fixed to {fixed!r} ({where}), not in {allowed}: "
                                     f"{p.name} would never be asked")
        return
    cond = earlier[key]
    if not cond.categorical:
        raise _fail(spec, wpath, f"{key} is a numeric range ({cond.kind}); conditions may only refer to "
                                 "choice/grid parameters or fixed keys")
    if not any(v in cond.args for v in allowed):
        raise _fail(spec, wpath, f"none of {allowed} is ever sampled for {key} (choices: {cond.args}): "
                                 f"{p.name} would never be asked")


# ---------------------------------------------------------------------------------------------
# The data
def _check_data(spec: SweepSpec) -> None:
    """Data folders exist for file datasets; photo_patches options are valid."""
    fixed = spec.fixed_values()
    dataset_p, root_p = spec.param("dataset"), spec.param("data_root")
    datasets = list(dataset_p.args) if dataset_p else [fixed["dataset"]]
    roots = list(root_p.args) if root_p else [fixed["data_root"]]
    at = f"space.data_root.{root_p.kind}" if root_p else "base.data_root"
    for ds in datasets:
        if ds not in FILE_DATASETS:
            continue
        for root in roots:
            if root is not None and not Path(str(root)).expanduser().exists():
                raise _fail(spec, at, f"{root} does not exist (dataset {ds} reads its files from there); fix the "
                                      "path, or validate with check_data=False on a machine without the data")
    options = spec.base.get("photo_patches")
    if "photo_patches" in datasets and options:
        try:
            from trainables.data import DatasetError, resolve_photo_patches_options
        except ImportError:  # pragma: no cover - torch missing: the trial will say so
            return
        try:
            resolve_photo_patches_options(options)
        except DatasetError as exc:
            raise _fail(spec, f"base.{exc.key or 'photo_patches'}", exc.reason) from None
