"""Search spaces as data: one YAML file per sweep, validated before any compute.

A search-space file says what every trial fixes (`base`), what is searched (`space`, one
distribution per `TrainConfig` key, in file order, optionally conditional with `when`), what is
optimised (`objective`), how much is spent (`budget`), what one trial holds (`resources`) and
which seeds run (`seeds`). The schema is documented in `search_spaces/README.md`; the files
shipped with the platform live in the `search_spaces` package and load by name
(`load_space("demo")`), any other file by path.

Two modes:
- `search`: Optuna TPE (seeded with `seeds[0]`) proposes `budget.trials` configurations through
  the define-by-run function `define_by_run(spec)` (for `ray.tune.search.optuna.OptunaSearch`);
  ASHA stops weak trials early on the objective.
- `grid`: every cell of the categorical `space` (honouring `when`) runs once per seed
  (`grid_configs(spec)`), to build tables such as the paper's Table 8 with mean +- std.

Every error is a `SpaceError` whose message is "<file>: <key.path>: <reason>", raised by
`load_space` before Ray, Optuna or torch do anything. Each searched value is checked by building
the `TrainConfig`s at the corners of the space (every categorical value x both ends of every
numeric range, `when` honoured), so a bad choice, a too-small queue for the largest batch or a
temperature range reaching 0 fails here, not hours into a sweep.

This module imports neither ray nor torch (torch only lazily, to check `photo_patches` options
when `check_data=True`); optuna only where a study is built (`sample_configs`).
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import math
import re
import textwrap
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

import yaml

from trainables.config import ConfigError, TrainConfig, read_yaml
from trainables.validation import did_you_mean

if TYPE_CHECKING:  # pragma: no cover
    import optuna

__all__ = [
    "SpaceError",
    "ParamSpec",
    "SweepSpec",
    "DefineByRun",
    "named_spaces",
    "load_space",
    "parse_space",
    "validate_space",
    "trial_config",
    "define_by_run",
    "decode_sampled",
    "grid_configs",
    "sample_configs",
    "make_sampler",
    "describe",
    "ONE_MINUS_SUFFIX",
]

# ---------------------------------------------------------------------------------------------
# Schema constants
# ---------------------------------------------------------------------------------------------
MODES = ("search", "grid")
TOP_LEVEL_KEYS = ("name", "description", "mode", "base", "space", "objective", "budget",
                  "resources", "seeds")
OBJECTIVE_KEYS = ("metric", "mode")
BUDGET_KEYS = ("trials", "max_epochs", "grace_period", "reduction_factor", "max_concurrent", "startup_trials")
RESOURCE_KEYS = ("workers", "cpus_per_worker", "gpus_per_worker", "launcher")
LAUNCHERS = ("auto", "ray_train")
#: Distribution kinds. `choice` and `grid` are categorical (a list of values); the rest are
#: numeric ranges `[low, high]`. `one_minus_log` takes the range of m and searches log(1 - m).
CATEGORICAL_KINDS = ("choice", "grid")
RANGE_KINDS = ("uniform", "loguniform", "int", "log_int", "one_minus_log")
KINDS = CATEGORICAL_KINDS + RANGE_KINDS
PARAM_KEYS = KINDS + ("step", "when")
#: Metrics the per-worker loop reports every epoch, and the direction that makes sense for each.
METRICS = {"knn_top1": "max", "knn_top5": "max", "loss": "min"}
#: Datasets read from files under `data_root` (photo_patches and digits need nothing).
FILE_DATASETS = ("cifar10", "cifar100", "stl10", "imagefolder", "parquet")
#: Keys that are not set in `base` or `space` because another part of the file sets them.
RESERVED_KEYS = {
    "seed": "set by the top-level `seeds` list",
    "epochs": "set by budget.max_epochs (every trial trains that many epochs; ASHA may stop it earlier)",
}
#: Suffix of the Optuna parameter that carries 1 - m for a `one_minus_log` key.
ONE_MINUS_SUFFIX = "__one_minus"
#: Above this many corners, validation checks each parameter on its own instead (see below).
CORNER_LIMIT = 4096
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_HINTS = typing.get_type_hints(TrainConfig)
#: Allowed values of TrainConfig's enumerated string keys (used to check `when` lists).
_ENUMS = {
    "attraction_strategy": "ATTRACTION_STRATEGIES", "mechanism": "MECHANISMS",
    "backbone": "BACKBONES", "head": "HEADS", "augmentation": "AUGMENTATIONS",
    "enqueue": "ENQUEUE", "dataset": "DATASETS",
}


class SpaceError(ValueError):
    """A bad search-space file. The message is "<file>: <key.path>: <reason>"."""


# ---------------------------------------------------------------------------------------------
# Data model
# ---------------------------------------------------------------------------------------------
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

    def describe(self) -> str:
        if self.categorical:
            text = f"{self.kind} [{', '.join(_fmt(v) for v in self.args)}]"
        else:
            low, high = self.args
            text = f"{self.kind} [{_fmt(low)}, {_fmt(high)}]"
            if self.step is not None:
                text += f" step {_fmt(self.step)}"
            if self.kind == "one_minus_log":
                text += f"  (1 - m log-uniform in [{_fmt(1 - high)}, {_fmt(1 - low)}])"
        if self.when:
            conds = "; ".join(f"{k} in [{', '.join(_fmt(v) for v in vals)}]"
                              for k, vals in self.when.items())
            text += f"  when {conds}"
        return text


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
    metric: str = "knn_top1"
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
    source: str = ""  # how errors name the file ("demo.yaml" or the path given)

    @property
    def label(self) -> str:
        return self.source or (str(self.path) if self.path else f"{self.name}.yaml")

    @property
    def needs_ray_train(self) -> bool:
        """Several workers (DDP) or `launcher: ray_train`; else a trial may train in its Tune
        trial (sweep.uses_ray_train adds the storage rule)."""
        return self.workers > 1 or self.launcher == "ray_train"

    @property
    def sampler_seed(self) -> int:
        """The TPE sampler seed (and, in search mode, every trial's training seed)."""
        return self.seeds[0]

    def param(self, name: str) -> ParamSpec | None:
        return next((p for p in self.params if p.name == name), None)

    def fixed_values(self) -> dict[str, Any]:
        """What every trial starts from: TrainConfig defaults, then base, then epochs/seed."""
        return {**_defaults(), **self.base, "epochs": self.max_epochs, "seed": self.seeds[0]}

    def cells(self) -> list[dict[str, Any]]:
        """Grid cells (searched keys only, no seed), in file order, honouring `when`."""
        return list(_enumerate(self.params, self.fixed_values(), lambda p: list(p.args)))

    def total_trials(self) -> int:
        """search: budget.trials; grid: number of cells x number of seeds."""
        if self.mode == "grid":
            return len(self.cells()) * len(self.seeds)
        return int(self.trials or 0)


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------
def named_spaces() -> list[str]:
    """Names of the YAML files shipped in the `search_spaces` package (works from a wheel)."""
    root = importlib.resources.files("search_spaces")
    return sorted(entry.name[: -len(".yaml")] for entry in root.iterdir()
                  if entry.name.endswith(".yaml") and entry.is_file())


def load_space(name_or_path: str | Path, *, check_data: bool = True) -> SweepSpec:
    """Load and fully validate a search space: a shipped name ("demo") or a path to a file.

    A bare name without a folder resolves to the shipped file of that name; a name ending in
    .yaml/.yml that is not an existing file but names a shipped space also resolves to it.
    """
    raw = str(name_or_path)
    path = Path(raw).expanduser()
    shipped = named_spaces()
    looks_like_path = isinstance(name_or_path, Path) or any(s in raw for s in ("/", "\\")) \
        or raw.endswith((".yaml", ".yml"))
    if looks_like_path and path.is_file():
        try:
            text = path.read_text()
        except OSError as exc:
            raise SpaceError(f"{raw}: cannot read the file: {exc.strerror}") from None
        spec = parse_space(text, source=raw, path=path.resolve())
    else:
        name = path.stem if (looks_like_path and path.parent == Path(".")) else raw
        if looks_like_path and (path.parent != Path(".") or name not in shipped):
            raise SpaceError(f"{raw}: file not found (shipped spaces: {', '.join(shipped)})")
        if name not in shipped:
            raise SpaceError(f"{raw}: no such search space{did_you_mean(name, shipped)}; shipped spaces: "
                             f"{', '.join(shipped)}; or give the path to a YAML file")
        resource = importlib.resources.files("search_spaces").joinpath(f"{name}.yaml")
        real = Path(str(resource)) if isinstance(resource, Path) else None
        spec = parse_space(resource.read_text(), source=f"{name}.yaml", path=real)
    validate_space(spec, check_data=check_data)
    return spec


def _read_yaml(text: str, source: str) -> Any:
    try:
        return read_yaml(text, source)
    except ConfigError as exc:
        raise SpaceError(str(exc)) from None


def parse_space(text: str, *, source: str = "space.yaml", path: Path | None = None) -> SweepSpec:
    """YAML text -> SweepSpec (shape only: mappings, known keys, one distribution per key).

    Values are checked by `validate_space`, which `load_space` calls.
    """
    data = _read_yaml(text, source)
    if data is None:
        raise SpaceError(f"{source}: (top level): the file is empty; it needs at least `space`")
    if not isinstance(data, dict):
        raise SpaceError(f"{source}: (top level): must be a mapping of keys "
                         f"({', '.join(TOP_LEVEL_KEYS)}), got {_type(data)}")
    _refuse_unknown(source, "", data, TOP_LEVEL_KEYS)

    def section(key: str, allowed: tuple[str, ...] | None) -> dict:
        value = data.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise SpaceError(f"{source}: {key}: must be a mapping, got {_type(value)}")
        if allowed is not None:
            _refuse_unknown(source, key + ".", value, allowed)
        return value

    base = dict(section("base", None))
    space = section("space", None)
    objective = section("objective", OBJECTIVE_KEYS)
    budget = section("budget", BUDGET_KEYS)
    resources = section("resources", RESOURCE_KEYS)

    for key in base:
        if not isinstance(key, str):
            raise SpaceError(f"{source}: base: keys must be strings, got {key!r}")
    root = base.get("data_root")
    if isinstance(root, str) and root and not Path(root).expanduser().is_absolute():
        # Trials chdir into their own folders: a relative data_root is resolved here, once.
        base["data_root"] = str(Path(root).expanduser().resolve())

    params = [_parse_param(source, key, value) for key, value in space.items()]
    metric = objective.get("metric", "knn_top1")
    stem = path.stem if path is not None else Path(source).stem
    name = data.get("name", stem)
    max_epochs = budget.get("max_epochs")
    if max_epochs is None:
        max_epochs = base.get("epochs", _defaults()["epochs"])
    return SweepSpec(
        name=name,
        path=path,
        text=text,
        mode=data.get("mode", "search"),
        description="" if data.get("description") is None else data["description"],
        base=base,
        params=params,
        metric=metric,
        metric_mode=objective.get("mode", METRICS.get(metric, "max") if isinstance(metric, str) else "max"),
        trials=budget.get("trials"),
        max_epochs=max_epochs,
        grace_period=budget.get("grace_period", 1),
        reduction_factor=budget.get("reduction_factor", 2),
        startup_trials=budget.get("startup_trials", 10),
        max_concurrent=budget.get("max_concurrent"),
        workers=resources.get("workers", 1),
        cpus_per_worker=resources.get("cpus_per_worker", 1),
        gpus_per_worker=resources.get("gpus_per_worker", 0),
        launcher=resources.get("launcher", "auto"),
        seeds=data.get("seeds", [0]),
        source=source,
    )


def _parse_param(source: str, key: Any, value: Any) -> ParamSpec:
    where = f"{source}: space.{key}"
    if not isinstance(key, str):
        raise SpaceError(f"{source}: space: keys must be TrainConfig key names, got {key!r}")
    if not isinstance(value, dict):
        hint = (f"; did you mean {{choice: {value!r}}}?" if isinstance(value, list)
                else "; a fixed value belongs in base")
        raise SpaceError(f"{where}: expected a mapping with one distribution, e.g. "
                         f"{{loguniform: [low, high]}} or {{choice: [a, b]}}, got {_type(value)}{hint}")
    for k in value:
        if k not in PARAM_KEYS:
            raise SpaceError(f"{where}.{k}: unknown distribution{did_you_mean(str(k), PARAM_KEYS)}; "
                             f"use one of {', '.join(KINDS)} (plus optional step, when)")
    kinds = [k for k in value if k in KINDS]
    if len(kinds) != 1:
        got = f", got {' and '.join(kinds)}" if kinds else ""
        raise SpaceError(f"{where}: needs exactly one distribution ({', '.join(KINDS)}){got}")
    when = value.get("when") or {}
    if not isinstance(when, dict):
        raise SpaceError(f"{where}.when: must be a mapping {{key: [values]}}, got {_type(when)}")
    when = {k: (list(v) if isinstance(v, (list, tuple)) else [v]) for k, v in when.items()}
    return ParamSpec(name=key, kind=kinds[0], args=value[kinds[0]], step=value.get("step"),
                     when=when)


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------
def validate_space(spec: SweepSpec, *, check_data: bool = True) -> None:
    """Check everything that can be checked before compute; raise SpaceError naming file, key, reason.

    Safe to call again after changing a spec in code (e.g. `dataclasses.replace(spec, trials=2)`).
    """
    src = spec.label

    def fail(path: str, reason: str) -> typing.NoReturn:
        raise SpaceError(f"{src}: {path}: {reason}")

    # ---- identity and mode ------------------------------------------------------------------
    if not isinstance(spec.name, str) or not _NAME_RE.match(spec.name):
        fail("name", f"must be a word of letters, digits, '_', '-' or '.' (it names the MLflow "
                     f"experiment and folders), got {spec.name!r}")
    if not isinstance(spec.description, str):
        fail("description", f"must be a string, got {_type(spec.description)}")
    if spec.mode not in MODES:
        fail("mode", f"must be one of {', '.join(MODES)}, got {spec.mode!r}")

    # ---- seeds -----------------------------------------------------------------------------
    if not isinstance(spec.seeds, list) or not spec.seeds:
        fail("seeds", f"must be a non-empty list of integers like [0, 1, 2], got {spec.seeds!r}")
    for i, s in enumerate(spec.seeds):
        if not _is_int(s) or not 0 <= s < 2**32:
            fail(f"seeds[{i}]", f"must be an integer in [0, 2**32), got {s!r}")
    if len(set(spec.seeds)) != len(spec.seeds):
        fail("seeds", f"has repeated values: {spec.seeds}")

    # ---- budget ----------------------------------------------------------------------------
    if spec.mode == "search" or spec.trials is not None:
        if spec.trials is None:
            fail("budget.trials", "is required in search mode (how many configurations TPE proposes)")
        if not _is_int(spec.trials) or spec.trials < 1:
            fail("budget.trials", f"must be an integer >= 1, got {spec.trials!r}")
    if "epochs" in spec.base and (not _is_int(spec.base["epochs"]) or spec.base["epochs"] < 1):
        fail("base.epochs", f"must be an integer >= 1, got {spec.base['epochs']!r}")
    if not _is_int(spec.max_epochs) or spec.max_epochs < 1:
        fail("budget.max_epochs", f"must be an integer >= 1, got {spec.max_epochs!r}")
    if "epochs" in spec.base and spec.base["epochs"] != spec.max_epochs:
        fail("budget.max_epochs", f"{spec.max_epochs} disagrees with base.epochs "
                                  f"({spec.base['epochs']!r}); give only one (max_epochs sets the "
                                  "epochs of every trial)")
    if not _is_int(spec.grace_period) or spec.grace_period < 1:
        fail("budget.grace_period", f"must be an integer >= 1, got {spec.grace_period!r}")
    if spec.grace_period > spec.max_epochs:
        fail("budget.grace_period", f"{spec.grace_period} must be <= budget.max_epochs "
                                    f"({spec.max_epochs}): no trial would ever reach the first ASHA rung")
    if not _is_num(spec.reduction_factor) or spec.reduction_factor < 2:
        fail("budget.reduction_factor", f"must be a number >= 2, got {spec.reduction_factor!r}")
    if not _is_int(spec.startup_trials) or spec.startup_trials < 1:
        fail("budget.startup_trials", f"must be an integer >= 1, got {spec.startup_trials!r}")
    if spec.max_concurrent is not None and (not _is_int(spec.max_concurrent) or spec.max_concurrent < 1):
        fail("budget.max_concurrent", f"must be an integer >= 1 or null (derived from the cluster), "
                                      f"got {spec.max_concurrent!r}")

    # ---- resources --------------------------------------------------------------------------
    if not _is_int(spec.workers) or spec.workers < 1:
        fail("resources.workers", f"must be an integer >= 1, got {spec.workers!r}")
    if not _is_num(spec.cpus_per_worker) or spec.cpus_per_worker <= 0:
        fail("resources.cpus_per_worker", f"must be a number > 0, got {spec.cpus_per_worker!r}")
    if not _is_num(spec.gpus_per_worker) or spec.gpus_per_worker < 0:
        fail("resources.gpus_per_worker", f"must be a number >= 0, got {spec.gpus_per_worker!r}")
    if spec.launcher not in LAUNCHERS:
        fail("resources.launcher", f"must be one of {', '.join(LAUNCHERS)}, got {spec.launcher!r}")

    # ---- objective -------------------------------------------------------------------------
    if spec.metric not in METRICS:
        hint = did_you_mean(spec.metric, METRICS) if isinstance(spec.metric, str) else ""
        fail("objective.metric", f"{spec.metric!r} is not reported by the training loop{hint}; "
                                 f"use one of {', '.join(METRICS)}")
    if spec.metric_mode not in ("max", "min"):
        fail("objective.mode", f"must be max or min, got {spec.metric_mode!r}")
    if spec.metric_mode != METRICS[spec.metric]:
        fail("objective.mode", f"{spec.metric} should be {METRICS[spec.metric]}imised, not "
                               f"{spec.metric_mode}imised")

    # ---- base ------------------------------------------------------------------------------
    if not isinstance(spec.base, dict):
        fail("base", f"must be a mapping, got {_type(spec.base)}")
    for key in spec.base:
        if key == "seed":
            fail("base.seed", RESERVED_KEYS["seed"] + "; remove it from base")
        if key not in _FIELDS:
            fail(f"base.{key}", f"unknown TrainConfig key{did_you_mean(key, _FIELDS)}")

    # ---- params ----------------------------------------------------------------------------
    names = [p.name for p in spec.params]
    for p in spec.params:
        if names.count(p.name) > 1:
            fail(f"space.{p.name}", "is given twice")
    if spec.mode == "search" and not spec.params:
        fail("space", "search mode needs at least one searched key (or use mode: grid with seeds)")
    for index, p in enumerate(spec.params):
        _validate_param(spec, p, index, fail)

    # ---- how trials run ----------------------------------------------------------------------
    fixed = spec.fixed_values()
    searched = {p.name for p in spec.params}
    # knn_every > 1 in a search: the trials evaluate kNN at ASHA's rung epochs too (trial_config)
    if spec.mode == "search" and "knn_every" in searched and spec.metric.startswith("knn"):
        fail("space.knn_every", f"cannot be searched when the objective is {spec.metric}")
    device = fixed.get("device")
    if "device" not in searched and device == "cpu" and spec.gpus_per_worker > 0:
        fail("resources.gpus_per_worker", f"is {spec.gpus_per_worker} but base.device is cpu: "
                                          "trials would hold GPUs they never use")
    if "device" not in searched and device == "cuda" and spec.gpus_per_worker == 0:
        fail("resources.gpus_per_worker", "is 0 but base.device is cuda: request GPUs "
                                          "(e.g. gpus_per_worker: 1) or use device: auto")

    # ---- every corner of the space must be a valid TrainConfig --------------------------------
    _check_corners(spec, fail)

    if check_data:
        _check_data(spec, fail)


def _validate_param(spec: SweepSpec, p: ParamSpec, index: int, fail) -> None:
    path = f"space.{p.name}"
    if not isinstance(p.name, str) or p.name not in _FIELDS:
        fail(path, f"unknown TrainConfig key{did_you_mean(str(p.name), _FIELDS)}")
    if p.name in RESERVED_KEYS:
        fail(path, f"cannot be searched: {RESERVED_KEYS[p.name]}")
    if p.name in spec.base:
        fail(path, f"is also fixed in base (base.{p.name}={spec.base[p.name]!r}); a key is either "
                   "fixed or searched: remove one")
    if p.kind not in KINDS:
        fail(path, f"unknown distribution {p.kind!r}{did_you_mean(str(p.kind), KINDS)}; "
                   f"use one of {', '.join(KINDS)}")
    kpath = f"{path}.{p.kind}"
    ftype = _field_type(p.name)
    if ftype in (tuple, dict):
        fail(path, f"{p.name} is a {'pair' if ftype is tuple else 'mapping'} and cannot be searched; "
                   "fix it in base")
    if spec.mode == "grid" and not p.categorical:
        fail(kpath, "grid mode needs a list of values: use choice: [...] or grid: [...]")

    if p.categorical:
        if not isinstance(p.args, list) or len(p.args) < 2:
            fail(kpath, f"needs a list of at least 2 values (a single value belongs in base), "
                        f"got {p.args!r}")
        seen = []
        for v in p.args:
            if v is not None and not isinstance(v, (bool, int, float, str)):
                fail(kpath, f"values must be scalars (string, number, true/false, null), got {v!r}")
            if isinstance(v, float) and not math.isfinite(v):
                fail(kpath, f"values must be finite, got {v!r}")
            ident = (type(v), v)
            if ident in seen:
                fail(kpath, f"value {v!r} is listed twice")
            seen.append(ident)
        if p.step is not None:
            fail(f"{path}.step", f"only applies to int and uniform, not {p.kind}")
    else:
        if ftype in (str, bool):
            fail(kpath, f"{p.name} is a {'string' if ftype is str else 'true/false'} key: "
                        "use choice: [...]")
        if ftype is int and p.kind not in ("int", "log_int"):
            fail(kpath, f"{p.name} is an integer: use int, log_int or choice")
        if not isinstance(p.args, list) or len(p.args) != 2:
            fail(kpath, f"needs [low, high], got {p.args!r}")
        low, high = p.args
        integral = p.kind in ("int", "log_int")
        for what, v in (("low", low), ("high", high)):
            if integral and not _is_int(v):
                fail(kpath, f"{what} must be an integer, got {v!r}")
            if not _is_num(v):
                fail(kpath, f"{what} must be a finite number, got {v!r}")
        if low >= high:
            fail(kpath, f"low must be < high, got [{low}, {high}]")
        if p.kind in ("loguniform",) and low <= 0:
            fail(kpath, f"low must be > 0, got {low} (a log scale)")
        if p.kind == "log_int" and low < 1:
            fail(kpath, f"low must be >= 1, got {low} (a log scale)")
        if p.kind == "one_minus_log" and not 0 < low < high < 1:
            fail(kpath, f"[low, high] is the range of m and must lie inside (0, 1), got [{low}, {high}]")
        if p.step is not None:
            spath = f"{path}.step"
            if p.kind not in ("int", "uniform"):
                fail(spath, f"only applies to int and uniform, not {p.kind} (a log scale has no step)")
            if p.kind == "int":
                if not _is_int(p.step) or p.step < 1:
                    fail(spath, f"must be an integer >= 1, got {p.step!r}")
                if (high - low) % p.step:
                    fail(spath, f"high - low ({high - low}) must be a multiple of step {p.step}")
            else:
                if not _is_num(p.step) or p.step <= 0:
                    fail(spath, f"must be a number > 0, got {p.step!r}")
                n = (high - low) / p.step
                if abs(n - round(n)) > 1e-9 * max(1.0, abs(n)):
                    fail(spath, f"high - low ({high - low:g}) must be a multiple of step {p.step}")

    # ---- when ------------------------------------------------------------------------------
    earlier = {q.name: q for q in spec.params[:index]}
    later = {q.name for q in spec.params[index + 1:]}
    fixed = spec.fixed_values()
    if not isinstance(p.when, dict):
        fail(f"{path}.when", f"must be a mapping {{key: [values]}}, got {_type(p.when)}")
    for key, allowed in p.when.items():
        wpath = f"{path}.when.{key}"
        if key == p.name:
            fail(wpath, "a parameter cannot be conditional on itself")
        if not isinstance(key, str) or key not in _FIELDS:
            fail(wpath, f"unknown TrainConfig key{did_you_mean(str(key), _FIELDS)}")
        if key in later:
            fail(wpath, f"{key} is searched later in space: conditions may only refer to keys that "
                        f"are fixed or searched earlier (move {key} above {p.name})")
        if not isinstance(allowed, list) or not allowed:
            fail(wpath, f"must be a non-empty list of values, got {allowed!r}")
        enum = _enum_values(key)
        for v in allowed:
            if enum is not None and v not in enum:
                fail(wpath, f"{v!r} is not a valid {key}{did_you_mean(str(v), enum)}; "
                            f"valid: {', '.join(enum)}")
        if key in earlier:
            cond = earlier[key]
            if not cond.categorical:
                fail(wpath, f"{key} is a numeric range ({cond.kind}); conditions may only refer to "
                            "choice/grid parameters or fixed keys")
            if not any(v in cond.args for v in allowed):
                fail(wpath, f"none of {allowed} is ever sampled for {key} (choices: {cond.args}): "
                            f"{p.name} would never be asked")
        elif fixed.get(key) not in allowed:
            where = "base" if key in spec.base else "the TrainConfig default"
            fail(wpath, f"{key} is fixed to {fixed.get(key)!r} ({where}), not in {allowed}: "
                        f"{p.name} would never be asked")


def _enumerate(params: list[ParamSpec], fixed: Mapping[str, Any],
               values_of: Callable[[ParamSpec], list]) -> Iterator[dict[str, Any]]:
    """Every combination of `values_of(p)` over params in file order, honouring `when`."""

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


def _config_problem(spec: SweepSpec, applied: Mapping[str, Any]) -> tuple[str, str] | None:
    """(key, "key=value: reason") if base + applied is not a trial config that can run, else None."""
    values = {**spec.base, "epochs": spec.max_epochs, "seed": spec.seeds[0], **applied}
    try:
        cfg = TrainConfig.from_dict(values)
    except ConfigError as exc:
        msg = exc.detail  # "key=value: reason", without the source
        if "expected a string, got bool" in msg and "quote the value" not in msg:
            msg += " (YAML reads on/off/yes/no as true/false: quote the value)"
        return exc.key or "?", msg
    # Checks that need the trial's resources, not only the config.
    divisor = spec.workers
    bn_note = ""
    if spec.workers == 1 and cfg.mechanism == "momentum" and cfg.shuffle_bn:
        splits = cfg.bn_splits or 8
        if splits > 1:
            divisor = splits
            bn_note = (f" by bn_splits={splits}" + (" (0 means 8 on one worker)" if not cfg.bn_splits else "")
                       + ": SplitBatchNorm needs equal groups")
    if cfg.batch_size % divisor:
        reason = bn_note or f" by resources.workers={spec.workers} (it is the global batch)"
        return "batch_size", f"batch_size={cfg.batch_size}: must be divisible{reason}"
    batch = spec.param("batch_size")
    if batch is not None and "batch_size" in applied and batch.kind in ("int", "log_int"):
        step = batch.step or 1
        if step % divisor:
            reason = bn_note or f" by resources.workers={spec.workers}"
            return "batch_size", (f"batch_size: every value in [{batch.args[0]}, {batch.args[1]}] "
                                  f"step {step} must be divisible{reason}; use a step that is a "
                                  f"multiple of {divisor} (or a choice list)")
    return None


def _check_corners(spec: SweepSpec, fail) -> None:
    """Build the TrainConfig at every corner of the space; blame the first bad one precisely."""
    fixed = spec.fixed_values()
    corners = _enumerate(spec.params, fixed, ParamSpec.corner_values)
    checked = 0
    for corner in corners:
        checked += 1
        if checked > CORNER_LIMIT:
            break
        problem = _config_problem(spec, corner)
        if problem is not None:
            _blame(spec, corner, problem, fail)
    else:
        return
    # Too many corners to try them all: each parameter's values on their own (conditions met by
    # the first allowed value), then the one interaction that matters most: queue vs batch.
    for p in spec.params:
        for v in p.corner_values():
            corner = {}
            for key, allowed in p.when.items():
                cond = spec.param(key)
                if cond is not None:
                    corner[key] = next(a for a in allowed if a in cond.args)
            corner[p.name] = v
            problem = _config_problem(spec, corner)
            if problem is not None:
                _blame(spec, corner, problem, fail)
    queue, batch = spec.param("queue_size"), spec.param("batch_size")
    if queue is not None or batch is not None:
        q_min = min(queue.corner_values()) if queue else fixed["queue_size"]
        b_max = max(batch.corner_values()) if batch else fixed["batch_size"]
        mech = spec.param("mechanism")
        momentum = "momentum" in (mech.args if mech else [fixed["mechanism"]])
        if momentum and q_min < b_max:
            at = f"space.queue_size.{queue.kind}" if queue else f"space.batch_size.{batch.kind}"
            fail(at, f"the smallest queue_size that can be sampled ({q_min}) must be >= the largest "
                     f"batch_size ({b_max}) for momentum trials")


def _blame(spec: SweepSpec, corner: dict[str, Any], problem: tuple[str, str], fail) -> typing.NoReturn:
    """Name the searched parameter(s) that make `corner` fail, as precisely as possible."""
    key, msg = problem
    own = key in corner  # the failing key is itself searched and applied here
    # Another searched key takes part if one of its other values would have avoided the problem.
    keep = []
    for k in corner:
        if k == key:
            continue
        p = spec.param(k)
        for alt in p.corner_values():
            if alt != corner[k]:
                again = _config_problem(spec, {**corner, k: alt})
                if again is None or again[0] != key:
                    keep.append(k)
                    break
    combo = ", ".join(f"{k}={corner[k]!r}" for k in keep)
    if own:
        p = spec.param(key)
        fail(f"space.{key}.{p.kind}", msg + (f" (with {combo})" if combo else ""))
    if keep:
        p = spec.param(keep[0])
        origin = "from base" if key in spec.base else "the TrainConfig default"
        fail(f"space.{p.name}.{p.kind}", f"with {combo}: {msg} ({key} is {origin})")
    if key == "epochs":
        fail("budget.max_epochs", msg)
    if key in spec.base:
        fail(f"base.{key}", msg)
    fail("base", f"{msg} ({key} is the TrainConfig default: set it in base)")


def _check_data(spec: SweepSpec, fail) -> None:
    fixed = spec.fixed_values()
    dataset_p, root_p = spec.param("dataset"), spec.param("data_root")
    datasets = list(dataset_p.args) if dataset_p else [fixed["dataset"]]
    roots = list(root_p.args) if root_p else [fixed["data_root"]]
    at = f"space.data_root.{root_p.kind}" if root_p else "base.data_root"
    for ds in datasets:
        if ds not in FILE_DATASETS:
            continue
        for root in roots:
            if root is None:
                continue
            if not Path(str(root)).expanduser().exists():
                fail(at, f"{root} does not exist (dataset {ds} reads its files from there); fix the "
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
            fail(f"base.{exc.key or 'photo_patches'}", exc.reason)


# ---------------------------------------------------------------------------------------------
# Turning a spec into trials
# ---------------------------------------------------------------------------------------------
def asha_rungs(spec: SweepSpec) -> list[int]:
    """The epochs at which the sweep's ASHAScheduler judges trials, computed as Ray's
    AsyncHyperBandScheduler does for its one bracket (max_t = max_epochs + 1, see sweep._fit):
    milestones grace * rf**k for k < int(log(max_t / grace) / log(rf) + 1), each reached at the
    first epoch >= it; those past max_epochs are never reached."""
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
    if spec.mode == "search" and spec.metric.startswith("knn") and values.get("knn_every", 1) != 1:
        # ASHA judges a trial at the first result with the objective at or past each rung, and
        # Optuna records the objective of every epoch that has it: evaluate exactly at the rungs
        extra = values.get("knn_epochs") or []
        if isinstance(extra, (list, tuple)):
            values["knn_epochs"] = sorted({*extra, *asha_rungs(spec)})
    try:
        return TrainConfig.from_dict(values, source=spec.label)
    except ConfigError as exc:
        raise SpaceError(str(exc)) from None


class DefineByRun:
    """The Optuna define-by-run function of a spec (picklable, so Tune can checkpoint the searcher).

    Asks the parameters in file order, each only when its `when` holds for the values so far
    (searched earlier, or fixed). A `one_minus_log` key is asked as "<key>__one_minus" = 1 - m on
    a log scale; m itself is returned as a constant, with {"seed": seeds[0]}, which OptunaSearch
    merges into the trial config.
    """

    def __init__(self, spec: SweepSpec):
        self.spec = spec
        self._fixed = spec.fixed_values()

    def __call__(self, trial: "optuna.trial.Trial") -> dict[str, Any]:
        values: dict[str, Any] = dict(self._fixed)
        constants: dict[str, Any] = {}
        for p in self.spec.params:
            if not p.applies(values):
                # present as None so every trial config has every column (Tune's reporter
                # looks each one up); decode_sampled drops it
                constants[p.name] = None
                continue
            values[p.name] = v = _suggest(trial, p)
            if p.kind == "one_minus_log":
                constants[p.name] = v
        constants["seed"] = self.spec.seeds[0]
        return constants

    def __repr__(self) -> str:
        return f"DefineByRun({self.spec.name!r})"


def define_by_run(spec: SweepSpec) -> DefineByRun:
    """For `OptunaSearch(space=define_by_run(spec), metric=spec.metric, mode=spec.metric_mode)`."""
    return DefineByRun(spec)


def _suggest(trial: Any, p: ParamSpec) -> Any:
    if p.categorical:
        return trial.suggest_categorical(p.name, list(p.args))
    low, high = p.args
    if p.kind == "uniform":
        return trial.suggest_float(p.name, low, high, step=p.step)
    if p.kind == "loguniform":
        return trial.suggest_float(p.name, low, high, log=True)
    if p.kind == "int":
        return trial.suggest_int(p.name, low, high, step=p.step or 1)
    if p.kind == "log_int":
        return trial.suggest_int(p.name, low, high, log=True)
    if p.kind == "one_minus_log":
        one_minus = trial.suggest_float(p.optuna_name, 1.0 - high, 1.0 - low, log=True)
        return 1.0 - one_minus
    raise SpaceError(f"{p.name}: unknown distribution {p.kind!r}")  # pragma: no cover


def decode_sampled(spec: SweepSpec, config: Mapping[str, Any]) -> dict[str, Any]:
    """A Tune trial config from OptunaSearch (asked params + returned constants) -> TrainConfig keys.

    "<key>__one_minus" helpers are dropped (m is derived from them if the constant is missing);
    keys that are not TrainConfig fields (anything the driver added) are left out.
    """
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key.endswith(ONE_MINUS_SUFFIX):
            name = key[: -len(ONE_MINUS_SUFFIX)]
            if name not in config and name in _FIELDS:
                out[name] = 1.0 - value
        elif key in _FIELDS and value is not None:
            out[key] = value
    order = {p.name: i for i, p in enumerate(spec.params)}
    return dict(sorted(out.items(), key=lambda kv: order.get(kv[0], len(order))))


def grid_configs(spec: SweepSpec) -> list[dict[str, Any]]:
    """Grid mode: every cell x every seed as {key: value, ..., "seed": s}.

    Seeds are the outer loop: all cells with seeds[0] come first, so a grid cut short still has
    one complete row per cell.
    """
    if spec.mode != "grid":
        raise SpaceError(f"{spec.label}: mode: grid_configs needs mode grid, this space is {spec.mode!r}")
    cells = spec.cells()
    return [{**cell, "seed": s} for s in spec.seeds for cell in cells]


def make_sampler(spec: SweepSpec) -> "optuna.samplers.BaseSampler":
    """The sampler a search sweep uses: TPE seeded with seeds[0], `budget.startup_trials` random
    draws first, multivariate (one joint density over the parameters: Optuna 5's default, given
    explicitly so another Optuna version cannot change it silently; it beat independent TPE in
    benchmarks/search_efficiency.py)."""
    import warnings

    import optuna

    with warnings.catch_warnings():  # multivariate is marked experimental in older Optuna
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=spec.sampler_seed, n_startup_trials=spec.startup_trials,
                                          multivariate=True)


def sample_configs(spec: SweepSpec, n: int) -> list[dict[str, Any]]:
    """n trial configs as the sweep would draw them first (for --dry-run), as TrainConfig keys.

    search: an in-memory Optuna study with make_sampler(spec) asked n times through
    define_by_run (nothing is told back, so these are TPE's start-up draws); grid: the first n cells.
    """
    if spec.mode == "grid":
        return grid_configs(spec)[:n]
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(
            direction="maximize" if spec.metric_mode == "max" else "minimize",
            sampler=make_sampler(spec))
        fn = define_by_run(spec)
        out = []
        for _ in range(n):
            trial = study.ask()
            constants = fn(trial)
            out.append(decode_sampled(spec, {**trial.params, **constants}))
        return out
    finally:
        optuna.logging.set_verbosity(verbosity)


def describe(spec: SweepSpec) -> str:
    """A readable, resolved summary (for `leoclr sweep --dry-run`)."""
    lines = [f"sweep {spec.name!r} ({spec.mode}) from {spec.path or spec.label}"]
    if spec.description:
        lines += textwrap.wrap(" ".join(spec.description.split()), width=96,
                               initial_indent="  ", subsequent_indent="  ")
    lines.append(f"objective: {METRICS_VERB[spec.metric_mode]} {spec.metric}")
    if spec.mode == "search":
        lines.append(f"budget: {spec.trials} trials (TPE, sampler seed {spec.sampler_seed}, "
                     f"{spec.startup_trials} random start-up trials) x up to "
                     f"{spec.max_epochs} epochs; ASHA grace {spec.grace_period}, "
                     f"reduction factor {_fmt(spec.reduction_factor)}")
        knn_every = spec.fixed_values().get("knn_every", 1)
        if spec.metric.startswith("knn") and knn_every != 1:
            lines.append(f"kNN monitor: every {knn_every} epochs, at the ASHA rungs {asha_rungs(spec)} "
                         f"and at epoch {spec.max_epochs}")
    else:
        cells = len(spec.cells())
        ignored = f" (budget.trials={spec.trials} ignored)" if spec.trials is not None else ""
        lines.append(f"budget: {cells} cells x {len(spec.seeds)} seeds = {spec.total_trials()} "
                     f"trials x {spec.max_epochs} epochs, no early stopping{ignored}")
    lines.append(f"max concurrent trials: {spec.max_concurrent if spec.max_concurrent else 'auto (cluster)'}")
    launcher = ("Ray Train (DDP)" if spec.needs_ray_train
                else "in the Tune trial (local storage) or Ray Train (URI storage)")
    lines.append(f"resources per trial: {spec.workers} worker(s) x ({_fmt(spec.cpus_per_worker)} CPU, "
                 f"{_fmt(spec.gpus_per_worker)} GPU), trained {launcher}")
    if spec.mode == "search":
        lines.append(f"seeds: {spec.seeds} (every trial trains with seed {spec.sampler_seed})")
    else:
        lines.append(f"seeds: {spec.seeds} (each cell once per seed)")
    lines.append("fixed (base):")
    width = max([len(k) for k in spec.base] + [len(p.name) for p in spec.params] + [6])
    for key, value in spec.base.items():
        if key != "epochs":
            lines.append(f"  {key:<{width}} = {_fmt(value)}")
    lines.append(f"  {'epochs':<{width}} = {spec.max_epochs}  (budget.max_epochs)")
    lines.append("searched (file order):")
    for p in spec.params:
        lines.append(f"  {p.name:<{width}}   {p.describe()}")
    if spec.metric == "loss":
        lines.append("note: the loss scale depends on temperature and strategy; comparing trials by "
                     "loss is only fair when neither is searched")
    return "\n".join(lines)


METRICS_VERB = {"max": "maximise", "min": "minimise"}


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------
def _defaults() -> dict[str, Any]:
    out = {}
    for f in _FIELDS.values():
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            out[f.name] = f.default_factory()  # type: ignore[misc]
    return out


def _field_type(name: str) -> type:
    hint = _HINTS[name]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    return origin if origin is not None else hint


def _enum_values(key: str) -> tuple[str, ...] | None:
    attr = _ENUMS.get(key)
    if attr is None:
        return None
    from trainables import config as config_module

    return tuple(getattr(config_module, attr))


def _refuse_unknown(source: str, prefix: str, mapping: Mapping, allowed: tuple[str, ...]) -> None:
    for key in mapping:
        if key not in allowed:
            hint = did_you_mean(str(key), allowed)
            raise SpaceError(f"{source}: {prefix}{key}: unknown key{hint}; valid keys: "
                             f"{', '.join(allowed)}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _type(v: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "true/false",
            type(None): "null"}.get(type(v), type(v).__name__)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_fmt(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v)
