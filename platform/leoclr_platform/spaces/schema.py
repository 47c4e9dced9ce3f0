"""What a search-space file may say: the constants of the schema and the loaded spec.

`ParamSpec` is one searched `TrainConfig` key, `SweepSpec` a whole loaded space (the schema is
documented in search_spaces/README.md). The TrainConfig facts the loader and the validator
share (its fields, defaults, types, enumerated values) are read here from the dataclass, so a
new config key is searchable without touching the platform.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from trainables.config import TrainConfig

MODES = ("search", "grid")
TOP_LEVEL_KEYS = ("name", "description", "mode", "base", "space", "objective", "budget",
                  "resources", "seeds")
OBJECTIVE_KEYS = ("metric", "mode")
BUDGET_KEYS = ("trials", "max_epochs", "grace_period", "reduction_factor", "max_concurrent", "startup_trials",
               "confirm")
#: budget.confirm: re-run the best `top` configurations of each strategy on `seeds` fresh seeds.
CONFIRM_KEYS = ("top", "seeds")
RESOURCE_KEYS = ("workers", "cpus_per_worker", "gpus_per_worker", "launcher")
LAUNCHERS = ("auto", "ray_train")
#: Distribution kinds. `choice` and `grid` are categorical (a list of values); the rest are
#: numeric ranges `[low, high]`. `one_minus_log` takes the range of m and searches log(1 - m).
CATEGORICAL_KINDS = ("choice", "grid")
RANGE_KINDS = ("uniform", "loguniform", "int", "log_int", "one_minus_log")
KINDS = CATEGORICAL_KINDS + RANGE_KINDS
PARAM_KEYS = KINDS + ("step", "when")
#: Metrics the per-worker loop reports every epoch, and the direction that makes sense for each.
METRICS = {"val_knn_top1": "max", "val_knn_top5": "max", "rankme": "max", "loss": "min"}
#: Metrics the per-epoch monitor measures (at knn_every / knn_epochs / the last epoch, not every
#: epoch): a search whose objective is one of them evaluates at ASHA's rung epochs too.
MONITOR_METRICS = ("val_knn_top1", "val_knn_top5", "rankme")
#: Objective names refused with the reason: they read the test split, which selection never reads.
RENAMED_METRICS = {
    "knn_top1": "val_knn_top1", "knn_top5": "val_knn_top5",
    "test_knn_top1": "val_knn_top1", "test_knn_top5": "val_knn_top5",
}
#: Datasets read from files under `data_root` (photo_patches and digits need nothing).
FILE_DATASETS = ("cifar10", "cifar100", "stl10", "imagefolder", "parquet")
#: Keys that are not set in `base` or `space` because another part of the file sets them.
RESERVED_KEYS = {
    "seed": "set by the top-level `seeds` list",
    "epochs": "set by budget.max_epochs (every trial trains that many epochs; ASHA may stop it earlier)",
}
#: Suffix of the Optuna parameter that carries 1 - m for a `one_minus_log` key.
ONE_MINUS_SUFFIX = "__one_minus"
#: Above this many corners, validation checks each parameter on its own instead.
CORNER_LIMIT = 4096
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

#: TrainConfig's fields by name.
CONFIG_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_HINTS = typing.get_type_hints(TrainConfig)
#: TrainConfig's enumerated string keys -> the name of the tuple of allowed values in trainables.config.
_ENUMS = {
    "attraction_strategy": "ATTRACTION_STRATEGIES", "mechanism": "MECHANISMS",
    "backbone": "BACKBONES", "head": "HEADS", "augmentation": "AUGMENTATIONS",
    "enqueue": "ENQUEUE", "dataset": "DATASETS",
}


@dataclass
class ParamSpec:
    """One searched TrainConfig key.

    kind: one of KINDS. args: the list of values (choice/grid) or [low, high] (ranges; for
    one_minus_log the range of m itself). step: optional grid step for `int` / `uniform`.
    when: {key: [allowed values]}: the parameter is asked only if every key's value is listed.
    """

    name: str
    kind: str
    args: list
    step: int | float | None = None
    when: dict[str, list] = field(default_factory=dict)

    @property
    def categorical(self) -> bool:
        return self.kind in CATEGORICAL_KINDS

    @property
    def optuna_name(self) -> str:
        """The name Optuna (and the Tune trial config) sees for this parameter."""
        return self.name + ONE_MINUS_SUFFIX if self.kind == "one_minus_log" else self.name

    def applies(self, values: Mapping[str, Any]) -> bool:
        """Whether this parameter is asked, given the trial's values of the `when` keys."""
        return all(values.get(key) in allowed for key, allowed in self.when.items())

    def corner_values(self) -> list:
        """The values validation tries: every choice, or both ends of a range."""
        if self.categorical:
            return list(self.args)
        low, high = self.args
        return [low, high]


@dataclass
class SweepSpec:
    """A loaded, validated search space (see `search_spaces/README.md`)."""

    name: str
    path: Path | None = None
    text: str = ""  # the YAML text, to log as an artifact
    mode: str = "search"
    description: str = ""
    base: dict[str, Any] = field(default_factory=dict)
    params: list[ParamSpec] = field(default_factory=list)
    metric: str = "val_knn_top1"
    metric_mode: str = "max"
    trials: int | None = None
    max_epochs: int = 10
    grace_period: int = 1
    reduction_factor: float = 2
    startup_trials: int = 10  # TPE: random draws before the model is used (Optuna's n_startup_trials)
    max_concurrent: int | None = None
    workers: int = 1
    cpus_per_worker: float = 1
    gpus_per_worker: float = 0
    launcher: str = "auto"  # auto: Ray Train for workers > 1, the Tune trial itself for 1; ray_train: always
    seeds: list[int] = field(default_factory=lambda: [0])
    confirm: dict[str, Any] | None = None  # budget.confirm {top: K, seeds: N} (search mode; sweep/confirm.py)
    source: str = ""  # how errors name the file ("demo.yaml" or the path given)

    @property
    def label(self) -> str:
        return self.source or (str(self.path) if self.path else f"{self.name}.yaml")

    @property
    def needs_ray_train(self) -> bool:
        """Several workers (DDP) or `launcher: ray_train`; else a trial may train in its Tune
        trial (`leoclr_platform.sweep.trial.uses_ray_train` adds the storage rule)."""
        return self.workers > 1 or self.launcher == "ray_train"

    @property
    def sampler_seed(self) -> int:
        """The TPE sampler seed (and, in search mode, every trial's training seed)."""
        return self.seeds[0]

    def param(self, name: str) -> ParamSpec | None:
        return next((p for p in self.params if p.name == name), None)

    def fixed_values(self) -> dict[str, Any]:
        """What every trial starts from: TrainConfig defaults, then base's preset, then base, then epochs/seed."""
        return {**config_defaults(), **preset_fill(self.base), **self.base, "epochs": self.max_epochs,
                "seed": self.seeds[0]}

    def cells(self) -> list[dict[str, Any]]:
        """Grid cells (searched keys only, no seed), in file order, honouring `when`."""
        return list(combinations(self.params, self.fixed_values(), lambda p: list(p.args)))

    def total_trials(self) -> int:
        """search: budget.trials; grid: number of cells x number of seeds."""
        if self.mode == "grid":
            return len(self.cells()) * len(self.seeds)
        return int(self.trials or 0)


def combinations(params: list[ParamSpec], fixed: Mapping[str, Any],
                 values_of: Callable[[ParamSpec], list]) -> Iterator[dict[str, Any]]:
    """Every combination of `values_of(p)` over params in file order, honouring `when` (a
    parameter whose condition fails is left out of the combination)."""

    def rec(i: int, cell: dict[str, Any]) -> Iterator[dict[str, Any]]:
        if i == len(params):
            yield dict(cell)
            return
        p = params[i]
        if p.applies({**fixed, **cell}):
            for v in values_of(p):
                cell[p.name] = v
                yield from rec(i + 1, cell)
                del cell[p.name]
        else:
            yield from rec(i + 1, cell)

    yield from rec(0, {})


# ---------------------------------------------------------------------------------------------
# TrainConfig facts
def config_defaults() -> dict[str, Any]:
    """TrainConfig's default value of every field."""
    out = {}
    for f in CONFIG_FIELDS.values():
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            out[f.name] = f.default_factory()  # type: ignore[misc]
    return out


def preset_fill(base: Mapping[str, Any]) -> dict[str, Any]:
    """The keys `base`'s `preset` fills (trainables/presets.py; {} without one, or for an unknown
    name, which validation refuses with a did-you-mean)."""
    from trainables.presets import PRESETS

    name = base.get("preset")
    return dict(PRESETS[name]) if isinstance(name, str) and name in PRESETS else {}


def field_type(name: str) -> type:
    """The plain type of a TrainConfig field (`int | None` -> int, `tuple[float, float]` -> tuple)."""
    hint = _HINTS[name]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    return origin if origin is not None else hint


def enum_values(key: str) -> tuple[str, ...] | None:
    """The allowed values of an enumerated string key (None for any other key)."""
    attr = _ENUMS.get(key)
    if attr is None:
        return None
    from trainables import config as config_module

    return tuple(getattr(config_module, attr))


# ---------------------------------------------------------------------------------------------
# How values are named in messages and descriptions
def type_name(v: Any) -> str:
    """"a mapping", "a list", "true/false"... as a YAML user would call the value's type."""
    return {dict: "a mapping", list: "a list", str: "a string", bool: "true/false",
            type(None): "null"}.get(type(v), type(v).__name__)


def fmt(v: Any) -> str:
    """A value as YAML shows it, floats short (0.5, 1e-05)."""
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {fmt(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(fmt(x) for x in v) + "]"
    return str(v)
