"""The Ray Tune `Tuner` of a sweep: the trainable with its resources, the searcher and
scheduler (OptunaSearch + ASHA for a search, every cell x seed for a grid), the reporter, the
callbacks; or the experiment restored for `--resume`.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator
from unittest import mock

from leoclr_platform.spaces import SweepSpec, define_by_run, grid_configs, make_sampler
from leoclr_platform.sweep import trial
from leoclr_platform.sweep.compat import set_restored_callbacks

STRICT_METRIC_ENV = "TUNE_DISABLE_STRICT_METRIC_CHECKING"


def build_tuner(ctx: trial.SweepContext, rdb, concurrency: int, *, resume: bool, verbose: int,
                callbacks: list):
    """The Tuner that runs (or, with `resume` and a restorable experiment, continues) the sweep."""
    import ray.tune as tune

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the classic table reporter
    trainable = tune.with_resources(tune.with_parameters(trial.train_driver_fn, sweep=ctx), _trial_resources(ctx))
    if resume and tune.Tuner.can_restore(ctx.root):
        tuner = tune.Tuner.restore(ctx.root, trainable=trainable, resume_unfinished=True, resume_errored=True)
        # the pickled RunConfig holds a placeholder for the tracking callback: put the live one back
        set_restored_callbacks(tuner, callbacks)
        return tuner
    spec = ctx.spec
    run_config = tune.RunConfig(
        name=os.path.basename(ctx.root.rstrip("/")),
        storage_path=os.path.dirname(ctx.root.rstrip("/")),
        # worker faults: retried by Ray Train for Train runs, by Tune for in-trial runs
        failure_config=tune.FailureConfig(max_failures=ctx.worker_max_failures if ctx.in_trial else 0),
        progress_reporter=progress_reporter(spec, spec.total_trials()),
        callbacks=callbacks,
        verbose=verbose,
    )
    if spec.mode == "grid":
        param_space, tune_config = _grid(spec, concurrency, reuse_actors(ctx))
    else:
        param_space, tune_config = _search(spec, ctx.name, rdb, concurrency, reuse_actors(ctx))
    return tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config)


def build_confirm_tuner(ctx: trial.SweepContext, cells: list[dict], concurrency: int, *, resume: bool,
                        verbose: int, callbacks: list):
    """The confirmation stage's Tuner (sweep/confirm.py): every cell (config x seed) once, at the
    full budget (FIFO, no ASHA), as the experiment `<sweep>/confirm/`; restored with its
    finished trials kept when a stopped driver left one."""
    import ray.tune as tune
    from ray.tune.schedulers import FIFOScheduler

    from leoclr_platform.sweep.confirm import CONFIRM_DIR, confirm_root

    trainable = tune.with_resources(tune.with_parameters(trial.train_driver_fn, sweep=ctx), _trial_resources(ctx))
    if resume and tune.Tuner.can_restore(confirm_root(ctx.root)):
        tuner = tune.Tuner.restore(confirm_root(ctx.root), trainable=trainable, resume_unfinished=True,
                                   resume_errored=True)
        set_restored_callbacks(tuner, callbacks)
        return tuner
    run_config = tune.RunConfig(name=CONFIRM_DIR, storage_path=ctx.root.rstrip("/"),
                                failure_config=tune.FailureConfig(max_failures=ctx.worker_max_failures
                                                                  if ctx.in_trial else 0),
                                progress_reporter=progress_reporter(ctx.spec, len(cells), cells=True),
                                callbacks=callbacks, verbose=verbose)
    tune_config = tune.TuneConfig(num_samples=1, max_concurrent_trials=concurrency, scheduler=FIFOScheduler(),
                                  reuse_actors=reuse_actors(ctx))
    return tune.Tuner(trainable, param_space={"cell": tune.grid_search(cells)}, tune_config=tune_config,
                      run_config=run_config)


def reuse_actors(ctx: trial.SweepContext) -> bool:
    """Whether a finished trial's actor process runs the next trial.

    Yes where the trial trains in its own actor (`trial.uses_ray_train` is false): the process
    has already imported torch, the engine and MLflow (seconds of CPU per trial, more than a
    short trial's training) and the trainable holds nothing between trials (the loop's state
    lives in the Trainer of one call; Tune waits for the stopped training thread before reusing
    the actor, and starts a new one if it does not end). No for a Ray Train trial: its actor owns
    the Train controller, whose workers' placement group is only released when that owner dies."""
    return ctx.in_trial


def _trial_resources(ctx: trial.SweepContext) -> dict[str, float]:
    if ctx.in_trial:  # the trial actor trains: it holds the worker's resources
        resources = {"CPU": ctx.spec.cpus_per_worker}
        if ctx.spec.gpus_per_worker:
            resources["GPU"] = ctx.spec.gpus_per_worker
        return resources
    # the trial actor only drives a TorchTrainer; {"CPU": 0} alone is refused ("empty bundle")
    return {"CPU": 0, "memory": 100 * 1024 * 1024}


def _grid(spec: SweepSpec, concurrency: int, reuse: bool):
    import ray.tune as tune
    from ray.tune.schedulers import FIFOScheduler

    # every cell carries every key (None where a `when` excludes it): the table looks them up
    cells = [{**{p.name: None for p in spec.params}, **cell} for cell in grid_configs(spec)]
    # no metric/mode here: Tune would then refuse every result without the objective, and a
    # grid with knn_every > 1 reports kNN only every few epochs (nothing here ranks trials by
    # it; summarize reads spec.metric)
    return {"cell": tune.grid_search(cells)}, tune.TuneConfig(
        num_samples=1, max_concurrent_trials=concurrency, scheduler=FIFOScheduler(), reuse_actors=reuse)


def _search(spec: SweepSpec, study_name: str, rdb, concurrency: int, reuse: bool):
    import ray.tune as tune

    from leoclr_platform.sweep.asha import RecordingASHA
    from leoclr_platform.sweep.optuna_search import SafeOptunaSearch

    searcher = SafeOptunaSearch(space=define_by_run(spec), metric=spec.metric, mode=spec.metric_mode,
                                sampler=make_sampler(spec), storage=rdb, study_name=study_name)
    # time_attr is our own `epoch` (training_iteration restarts after a retry/restore); max_t
    # one past the last epoch so a trial ends by itself instead of being stopped at max_t (a
    # stopped trial's driver never runs the code after fit()).
    scheduler = RecordingASHA(time_attr="epoch", max_t=spec.max_epochs + 1, grace_period=spec.grace_period,
                              reduction_factor=spec.reduction_factor)
    return {}, tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=spec.total_trials(),
                               metric=spec.metric, mode=spec.metric_mode, max_concurrent_trials=concurrency,
                               reuse_actors=reuse)


def progress_reporter(spec: SweepSpec, total: int, cells: bool | None = None):
    """Tune's table: epoch, objective, loss, images/s and the searched values of each trial.
    `cells`: the trials' configs are {"cell": {...}} (a grid, the confirmation stage)."""
    from ray.tune import CLIReporter

    cells = spec.mode == "grid" if cells is None else cells
    if cells:  # grid / confirm trials' configs are {"cell": {...}}
        params = {f"cell/{p.name}": p.name for p in spec.params}
        params["cell/seed"] = "seed"
    else:
        params = {p.name: p.name for p in spec.params}
    return CLIReporter(
        metric_columns={"epoch": "epoch", spec.metric: spec.metric, "loss": "loss", "images_per_s": "img/s"},
        parameter_columns=params,
        total_samples=total,
        max_report_frequency=30,
        # a grid's TuneConfig has no metric (see _grid): the reporter is told here (Tune refuses both)
        metric=spec.metric if cells else None,
        mode=spec.metric_mode if cells else None,
        sort_by_metric=True,
        max_column_length=16,
    )


@contextmanager
def objective_checking(spec: SweepSpec) -> Iterator[None]:
    """Tune's strict metric check off while the sweep runs if results may lack the objective.

    With knn_every > 1 a search reports the objective only at ASHA's rungs, the knn_every
    multiples and the last epoch (spaces.trial_config), a grid only at those multiples and the
    end: Tune must not insist on it in every result (a grid restored from before the grid's
    TuneConfig lost its metric still carries one). The environment is restored afterwards."""
    if spec.fixed_values().get("knn_every", 1) == 1:
        yield
        return
    with mock.patch.dict(os.environ, {STRICT_METRIC_ENV: "1"}):
        yield
