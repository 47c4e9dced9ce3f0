"""A search spec as Optuna sees it: the define-by-run function, the sampler, sampled configs.

`OptunaSearch(space=define_by_run(spec), sampler=make_sampler(spec), ...)` asks the parameters
in file order, each only when its `when` holds; `decode_sampled` turns what a Tune trial config
holds back into TrainConfig keys. Optuna is imported only where a study is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from leoclr_platform.errors import SpaceError
from leoclr_platform.spaces.schema import CONFIG_FIELDS, ONE_MINUS_SUFFIX, ParamSpec, SweepSpec
from leoclr_platform.spaces.trials import grid_configs

if TYPE_CHECKING:  # pragma: no cover
    import optuna


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
    raise SpaceError(f"unknown distribution {p.kind!r}", key=p.name)  # pragma: no cover


def decode_sampled(spec: SweepSpec, config: Mapping[str, Any]) -> dict[str, Any]:
    """A Tune trial config from OptunaSearch (asked params + returned constants) -> TrainConfig keys.

    "<key>__one_minus" helpers are dropped (m is derived from them if the constant is missing);
    keys that are not TrainConfig fields (anything the driver added) are left out.
    """
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key.endswith(ONE_MINUS_SUFFIX):
            name = key[: -len(ONE_MINUS_SUFFIX)]
            if name not in config and name in CONFIG_FIELDS:
                out[name] = 1.0 - value
        elif key in CONFIG_FIELDS and value is not None:
            out[key] = value
    order = {p.name: i for i, p in enumerate(spec.params)}
    return dict(sorted(out.items(), key=lambda kv: order.get(kv[0], len(order))))


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
        study = optuna.create_study(direction="maximize" if spec.metric_mode == "max" else "minimize",
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
