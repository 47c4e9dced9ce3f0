"""`leoclr sweep`: Ray Tune (Optuna TPE + ASHA, or a grid) over Ray Train trials of the loop.

Three names, as in Ray's train/tune interop example:
- `train_fn_per_worker(loop_config)`: runs on every Ray Train worker; calls the pure-PyTorch
  loop (`trainables.loop.run_training`) with a `report` hook that forwards each epoch's
  metrics and checkpoint to `ray.train.report`.
- `train_driver_fn(config, sweep)`: the Tune function trainable (one per trial). It builds a
  `TorchTrainer` whose run is named after the trial id, so a retried or resumed trial finds its
  own latest checkpoint; `TuneReportCallback` forwards every epoch to Tune, so ASHA sees them.
- `Tuner`: built by `run_sweep` with `OptunaSearch` (study in an RDB next to the results) and
  `ASHAScheduler` for `mode: search`, or every grid cell x seed for `mode: grid`.

Layout of one sweep under the storage path:
  <storage>/<sweep>/            Tune experiment (resumable with `leoclr sweep --resume <sweep>`)
  <storage>/<sweep>/train/      one Ray Train run (checkpoints) per trial: trial_<trial id>/
  <storage>/<sweep>/optuna.db   the Optuna study (SQLite) unless --study-storage is given
  <storage>/<sweep>/sweep.json  what was run: space, study, names (read by --resume)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leoclr_platform.spaces import (
    SpaceError,
    SweepSpec,
    decode_sampled,
    define_by_run,
    grid_configs,
    load_space,
    make_sampler,
    parse_space,
    trial_config,
    validate_space,
)

SWEEP_META = "sweep.json"
TRAIN_DIR = "train"
STUDY_FILE = "optuna.db"
STRICT_METRIC_ENV = "TUNE_DISABLE_STRICT_METRIC_CHECKING"


class SweepError(RuntimeError):
    """A sweep could not run (bad storage, unknown sweep to resume, impossible resources...)."""


class TrialDiverged(RuntimeError):
    """Raised by the trial driver when the loop stopped on a non-finite loss."""


# ---------------------------------------------------------------------------------------------
@dataclass
class SweepContext:
    """Everything a trial needs besides its sampled config (sent to trials by with_parameters)."""

    name: str
    spec: SweepSpec
    root: str  # absolute (or URI) folder of this sweep
    train_storage: str  # where the Ray Train runs (checkpoints) of the trials live
    worker_max_failures: int = 2  # restarts of a trial's workers (from its checkpoint)
    keep_checkpoints: int = 2

    @property
    def in_trial(self) -> bool:
        """Whether trials run the loop in the Tune trial's own process (see `uses_ray_train`)."""
        return not uses_ray_train(self.spec, self.root)


def uses_ray_train(spec: SweepSpec, root: str) -> bool:
    """A trial trains through a Ray Train TorchTrainer (DDP over `workers` worker actors) when it
    has several workers, when the space asks for it (`resources.launcher: ray_train`), or when
    the sweep's storage is a URI (Train's persistence uploads the checkpoints). A one-worker trial
    otherwise runs the same loop inside its Tune trial actor: no Train controller, placement
    group, worker actor or process group to create, which took 20-40 s per trial on a 2-core
    machine (docs/performance-sweeps.md); worker faults are then retried by Tune."""
    return spec.needs_ray_train or _is_uri(root)


def default_storage() -> Path:
    """`./runs` normally; inside a `ray job submit` working dir (a temporary copy), ~/leoclr/runs."""
    env = os.environ.get("LEOCLR_STORAGE")
    if env:
        return Path(env).expanduser().absolute()
    cwd = Path.cwd()
    if "runtime_resources" in cwd.parts or os.environ.get("RAY_JOB_ID"):
        return Path.home() / "leoclr" / "runs"
    return cwd / "runs"


def _is_uri(path: str) -> bool:
    return "://" in path


# ---------------------------------------------------------------------------------------------
# Runs inside Ray (workers and trial drivers)
def train_fn_per_worker(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker: resume from this run's latest checkpoint, train, report each epoch."""
    import ray.train
    import ray.train.torch

    from trainables.config import TrainConfig
    from trainables.loop import DivergenceError
    from trainables.loop import run_training as loop

    cfg = TrainConfig.from_dict(loop_config["train"])
    device = ray.train.torch.get_device() if loop_config.get("use_gpu") else None
    status = loop_config.get("status")

    def report(metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=checkpoint)

    checkpoint = ray.train.get_checkpoint()
    try:
        if checkpoint is None:
            loop(cfg, report, keep_checkpoints=1, device=device)
        else:
            with checkpoint.as_directory() as resume_dir:
                # the latest registered checkpoint first, then older ones of this run (a corrupt
                # or truncated latest costs an epoch, not the trial)
                older = []
                if "://" not in checkpoint.path and os.path.isdir(os.path.dirname(checkpoint.path)):
                    from trainables.checkpoint import checkpoint_epoch, checkpoints_newest_first

                    epoch = checkpoint_epoch(resume_dir)
                    older = [str(c) for c in checkpoints_newest_first(os.path.dirname(checkpoint.path), epoch)
                             if str(c) != checkpoint.path]
                loop(cfg, report, resume_from=[resume_dir, *older], keep_checkpoints=1, device=device)
    except DivergenceError as exc:
        # Deterministic: retrying from the last checkpoint would diverge again. Tell the driver
        # and end the workers normally so Ray Train does not restart them.
        if status is not None and ray.train.get_context().get_world_rank() == 0:
            import ray as _ray

            _ray.get(status.set.remote("diverged", str(exc)))


def fail_zombie_trials(rdb, study_name: str) -> int:
    """Mark study trials still RUNNING after the sweep ended (asked just before a driver was
    killed, then asked again on resume) as FAIL, so the study tells the truth."""
    import optuna
    from optuna.trial import TrialState

    study = optuna.load_study(study_name=study_name, storage=rdb)
    zombies = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for t in zombies:
        rdb.set_trial_state_values(t._trial_id, TrialState.FAIL)
    return len(zombies)


def resolved_config(spec: SweepSpec, config: dict[str, Any]):
    """A Tune trial config -> the validated TrainConfig the trial trains."""
    sampled = config.get("cell", config)  # grid: {"cell": {...}}; search: what Optuna produced
    return trial_config(spec, decode_sampled(spec, sampled), seed=sampled.get("seed"))


def _status_actor():
    import ray

    @ray.remote(num_cpus=0)
    class TrialStatus:
        """A mailbox from the trial's workers to its driver (works across nodes)."""

        def __init__(self):
            self.state: dict[str, str] = {}

        def set(self, key: str, value: str) -> None:
            self.state[key] = value

        def get(self) -> dict[str, str]:
            return dict(self.state)

    return TrialStatus.remote()


DIVERGED_MARKER = "diverged.txt"


def _train_in_trial(cfg, sweep: SweepContext, trial_id: str) -> None:
    """A one-worker trial, trained in this Tune trial actor (see `uses_ray_train`).

    Checkpoints go to the same place as a Train run's (<sweep>/train/trial_<id>/), so resuming,
    the best-checkpoint lookup and tracking read them alike. A retried trial (worker fault, driver
    restore) resumes from the newest good checkpoint there. A diverged trial leaves a marker, so
    a retry fails at once instead of training into the same divergence again."""
    import ray.tune

    from trainables.checkpoint import checkpoints_newest_first, prune_checkpoints, remove_partial_writes
    from trainables.loop import DivergenceError
    from trainables.loop import run_training as loop

    spec = sweep.spec
    run_dir = Path(sweep.train_storage) / f"trial_{trial_id}"
    run_dir.mkdir(parents=True, exist_ok=True)
    marker = run_dir / DIVERGED_MARKER
    if marker.exists():
        raise TrialDiverged(marker.read_text())
    remove_partial_writes(run_dir)  # a save cut by a kill or an ASHA stop

    def report(metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        if checkpoint_dir:
            prune_checkpoints(run_dir, spec.metric, spec.metric_mode, sweep.keep_checkpoints)
        ray.tune.report(metrics)

    has_checkpoint = bool(checkpoints_newest_first(run_dir))
    try:
        loop(cfg, report, resume_from=[str(run_dir)] if has_checkpoint else None,
             checkpoint_dir=str(run_dir), keep_checkpoints=None)
    except DivergenceError as exc:
        marker.write_text(str(exc))
        raise TrialDiverged(str(exc)) from None


def train_driver_fn(config: dict[str, Any], sweep: SweepContext) -> None:
    """The Tune trainable of one trial: the loop itself for a one-worker trial, else a
    TorchTrainer over `train_fn_per_worker` (see `uses_ray_train`)."""
    import ray
    import ray.train
    import ray.tune

    spec = sweep.spec
    trial_id = ray.tune.get_context().get_trial_id()
    cfg = resolved_config(spec, config)
    if sweep.in_trial:
        _train_in_trial(cfg, sweep, trial_id)
        return

    from ray.train import CheckpointConfig, FailureConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    use_gpu = spec.gpus_per_worker > 0
    resources = {"CPU": spec.cpus_per_worker}
    if use_gpu:
        resources["GPU"] = spec.gpus_per_worker
    status = _status_actor()
    trainer = TorchTrainer(
        train_fn_per_worker,
        train_loop_config={"train": cfg.to_dict(), "use_gpu": use_gpu, "status": status,
                           "trial_id": trial_id, "sweep": sweep.name},
        scaling_config=ScalingConfig(num_workers=spec.workers, use_gpu=use_gpu,
                                     resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=f"trial_{trial_id}",  # a retried/resumed trial finds its own checkpoints
            storage_path=sweep.train_storage,
            failure_config=FailureConfig(max_failures=sweep.worker_max_failures),
            checkpoint_config=CheckpointConfig(
                num_to_keep=sweep.keep_checkpoints,
                checkpoint_score_attribute=spec.metric,
                checkpoint_score_order=spec.metric_mode,
            ),
            callbacks=[TuneReportCallback()],
        ),
    )
    try:
        result = trainer.fit()
        state = ray.get(status.get.remote())
    finally:
        ray.kill(status)
    if "diverged" in state:
        raise TrialDiverged(state["diverged"])
    if result.error is not None:
        raise result.error


# ---------------------------------------------------------------------------------------------
# The driver side
@dataclass
class SweepOutcome:
    name: str
    root: str
    best: dict[str, Any] | None  # trial_id, config, metric value, checkpoint
    trials: list[dict[str, Any]]  # one row per trial: id, status, epochs, metric, params
    errors: int
    tracking: dict[str, Any] | None = None  # uri, experiment, parent run id, undelivered calls


def _cluster_resources() -> dict[str, float]:
    import ray

    return {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")}


def check_resources(spec: SweepSpec, resources: dict[str, float]) -> int:
    """Refuse what the cluster can never run; return how many trials fit at once."""
    need_cpu = spec.workers * spec.cpus_per_worker
    need_gpu = spec.workers * spec.gpus_per_worker
    have_cpu, have_gpu = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    if need_cpu > have_cpu or need_gpu > have_gpu:
        raise SweepError(
            f"{spec.label}: resources: one trial needs {spec.workers} worker(s) x "
            f"({spec.cpus_per_worker:g} CPU, {spec.gpus_per_worker:g} GPU) = {need_cpu:g} CPU, "
            f"{need_gpu:g} GPU, but the Ray cluster has {have_cpu:g} CPU, {have_gpu:g} GPU"
        )
    fits = [math.floor(have_cpu / need_cpu)]
    if need_gpu:
        fits.append(math.floor(have_gpu / need_gpu))
    fit = max(1, min(fits))
    return min(fit, spec.max_concurrent) if spec.max_concurrent else fit


def connect_ray(address: str | None, num_cpus: int | None = None) -> None:
    """Connect to `address` / RAY_ADDRESS, else start an in-process runtime (usage stats off)."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        _check_reachable(address)
        try:
            ray.init(address=address, log_to_driver=True)
        except Exception as exc:  # ConnectionError, TimeoutError, ...
            raise SweepError(f"cannot connect to the Ray cluster at {address!r}: {exc}") from None
    else:
        start_local_ray(num_cpus)


def start_local_ray(num_cpus: int | None = None) -> str:
    """An in-process Ray runtime that other Ray instances on this machine cannot confuse.

    Ray Train's PlacementGroupCleaner polls the State API (served by the dashboard) to free a
    finished trial's worker placement group; its client finds the cluster by auto-detection,
    which fails when several Ray instances run on one machine, and then the placement groups
    leak and the next trial waits forever. So: the dashboard runs (bound to 127.0.0.1), the GCS
    port is chosen here, and every worker gets RAY_ADDRESS pointing at this runtime.
    """
    import socket

    import ray

    last_error: Exception | None = None
    for _ in range(2):  # a port taken in between, or a dashboard slow to start under load
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        address = f"127.0.0.1:{port}"
        os.environ["RAY_GCS_SERVER_PORT"] = str(port)
        try:
            # "local": always a fresh in-process runtime, never some other `ray start` cluster
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1",
                     log_to_driver=True,
                     runtime_env={"env_vars": {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ADDRESS": address,
                                               **_passthrough_env()}})
            return address
        except Exception as exc:  # noqa: BLE001 - reported below with its cause
            last_error = exc
            ray.shutdown()
        finally:
            os.environ.pop("RAY_GCS_SERVER_PORT", None)
    raise SweepError(f"could not start a local Ray runtime: {type(last_error).__name__}: {last_error}")


def _local_resources(num_cpus: int | None = None) -> dict[str, float]:
    """What `start_local_ray(num_cpus)` will offer, found without starting it."""
    if num_cpus is None:
        try:
            from ray._private.utils import get_num_cpus  # Ray's own count (cgroup limits...)

            num_cpus = get_num_cpus()
        except Exception:  # noqa: BLE001 - a private helper: fall back to the OS count
            num_cpus = os.cpu_count() or 1
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return {"CPU": float(num_cpus), "GPU": float(gpus)}


def _passthrough_env() -> dict[str, str]:
    """Settings of this process that trials must see too (cache and storage locations)."""
    return {k: os.environ[k] for k in ("LEOCLR_CACHE", "LEOCLR_STORAGE") if k in os.environ}


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds, not minutes, when nothing listens at a host:port address."""
    import socket

    target = address.split("://", 1)[-1]
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or address in ("auto", "local"):
        return
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise SweepError(f"cannot connect to the Ray cluster at {address!r}: {exc.strerror or exc} "
                         "(is `ray start --head` running there? check --address / RAY_ADDRESS)") from None


def _progress_reporter(spec: SweepSpec, total: int):
    from ray.tune import CLIReporter

    if spec.mode == "grid":  # grid trials' configs are {"cell": {...}}
        params = {f"cell/{p.name}": p.name for p in spec.params}
        params["cell/seed"] = "seed"
    else:
        params = {p.name: p.name for p in spec.params}
    return CLIReporter(
        metric_columns={"epoch": "epoch", spec.metric: spec.metric, "loss": "loss",
                        "images_per_s": "img/s"},
        parameter_columns=params,
        total_samples=total,
        max_report_frequency=30,
        # a grid's TuneConfig has no metric (see _fit): the reporter is told here (Tune refuses both)
        metric=spec.metric if spec.mode == "grid" else None,
        mode=spec.metric_mode if spec.mode == "grid" else None,
        sort_by_metric=True,
        max_column_length=16,
    )


def _study_storage(root: str, study_storage: str | None):
    import optuna

    url = study_storage or f"sqlite:///{Path(root) / STUDY_FILE}"
    if _is_uri(root) and not study_storage:
        raise SweepError(f"storage {root!r} is remote: pass --study-storage (an RDB URL for the Optuna study)")
    try:
        return url, optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}}
                                               if url.startswith("sqlite") else {})
    except Exception as exc:  # noqa: BLE001 - a bad URL, a missing driver, an unreachable server
        from leoclr_platform.tracking import redact_uri

        shown = redact_uri(url)
        where = f"--study-storage {shown!r}" if study_storage else f"study storage {shown!r}"
        first = (str(exc).strip().splitlines() or [""])[0]
        raise SweepError(f"{where}: cannot open the Optuna study storage: {type(exc).__name__}: {first}") from None


def run_sweep(
    space: str | SweepSpec,
    *,
    name: str | None = None,
    storage: str | None = None,
    study_storage: str | None = None,
    address: str | None = None,
    resume: bool = False,
    num_cpus: int | None = None,
    trials: int | None = None,
    max_epochs: int | None = None,
    verbose: int = 1,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    track: bool = True,
    tracking_timeout: float = 300.0,
) -> SweepOutcome:
    """Validate everything, then run (or resume) a sweep. Returns the outcome table.

    Tracking (MLflow) is checked before any compute: `tracking_uri` (else $MLFLOW_TRACKING_URI,
    else the project's SQLite store), experiment `experiment` (default "leoclr/<space name>").
    """
    from leoclr_platform import tracking as T

    root_base = storage or str(default_storage())
    meta: dict[str, Any] = {}
    if resume:
        if not name:
            raise SweepError("--resume needs the sweep name")
        root = os.path.join(root_base, name)
        meta = _read_meta(root)
        spec = resumed_spec(meta)
        study_storage = study_storage or meta.get("study_storage_arg")
        tracking_uri = tracking_uri or meta.get("tracking_uri")
        experiment = experiment or meta.get("experiment")
        track = track and meta.get("tracking_uri") is not None
    else:
        spec = space if isinstance(space, SweepSpec) else load_space(space)
        changes = {}
        if trials is not None:
            changes["trials"] = trials
        if max_epochs is not None:
            changes["max_epochs"] = max_epochs
            changes["base"] = {**spec.base, "epochs": max_epochs} if "epochs" in spec.base else spec.base
        if changes:
            spec = dataclasses.replace(spec, **changes)
            validate_space(spec)
        name = name or f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        root = os.path.join(root_base, name)
        if not _is_uri(root) and (Path(root) / SWEEP_META).exists():
            raise SweepError(f"sweep {name!r} already exists under {root_base}: use --resume {name} "
                             "to continue it, or another --name")
    validate_space(spec)  # again on resume: data present, config still valid with this code
    # where it will run, checked before anything is written or started (a runtime already
    # initialised in this process is used as it is, and checked after connect_ray below)
    import ray

    target = address or os.environ.get("RAY_ADDRESS")
    if not ray.is_initialized():
        if target:
            _check_reachable(target)
        else:
            check_resources(spec, _local_resources(num_cpus))
    uri = T.resolve_tracking_uri(tracking_uri) if track else None
    experiment = experiment or f"leoclr/{spec.name}"
    if uri:
        T.check_store(uri)  # an unreachable server or unwritable store fails here, before compute
    if not _is_uri(root):
        try:
            Path(root).mkdir(parents=True, exist_ok=True)
            probe = Path(root) / ".write_test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise SweepError(f"storage path {root!r} is not writable: {exc.strerror}") from None
    study_url, rdb = _study_storage(root, study_storage)
    if not resume:
        meta = {"name": name, "space_name": spec.name, "space_source": spec.label,
                "space_path": str(spec.path) if spec.path else None, "space_text": spec.text,
                "spec_changes": spec_changes(spec), "study_name": name, "study_storage": study_url,
                "study_storage_arg": study_storage, "tracking_uri": uri, "experiment": experiment,
                "launcher": "ray_train" if uses_ray_train(spec, root) else "in_trial",
                "created": time.time()}
        _write_meta(root, meta)

    connect_ray(address, num_cpus=num_cpus)
    cluster = _cluster_resources()
    concurrency = check_resources(spec, cluster)
    tracker = None
    if uri:
        tracker = _open_tracker(spec, name, root, uri, experiment, meta, cluster)
    return _fit(spec, name, root, rdb, concurrency, resume=resume, verbose=verbose, tracker=tracker,
                tracking_timeout=tracking_timeout)


def _open_tracker(spec: SweepSpec, name: str, root: str, uri: str, experiment: str, meta: dict[str, Any],
                  cluster: dict[str, float]):
    """The sweep's parent run (created, or found again on --resume) and its tracker."""
    import ray

    from leoclr_platform import tracking as T

    if uri.startswith(("http://", "https://")):
        # fail a call in seconds and let the tracker's own backoff retry it (MLflow's default
        # retries one call for minutes, holding up everything queued behind it)
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    tracker = T.SweepTracker(uri, experiment, name, max_epochs=spec.max_epochs, metric=spec.metric)
    params = {"space": spec.name, "mode": spec.mode, "objective": f"{spec.metric} ({spec.metric_mode})",
              "trials": spec.total_trials(), "max_epochs": spec.max_epochs, "seeds": list(spec.seeds),
              "searched": [p.name for p in spec.params], "workers": spec.workers,
              "cpus_per_worker": spec.cpus_per_worker, "gpus_per_worker": spec.gpus_per_worker,
              "results": root}
    if spec.mode == "search":
        params.update(grace_period=spec.grace_period, reduction_factor=spec.reduction_factor)
    all_resources = {k: v for k, v in ray.cluster_resources().items()}
    tags = {"mode": spec.mode, "objective": spec.metric,
            **T.hardware_tags(spec.workers, spec.cpus_per_worker, spec.gpus_per_worker,
                              {**all_resources, **cluster})}
    logged_meta = {k: v for k, v in meta.items() if k != "space_text"}
    space_file = spec.path.name if spec.path else f"{spec.name}.yaml"
    try:
        tracker.open(space_name=spec.name, space_text=spec.text, space_file=space_file, params=params,
                     tags=tags, meta=logged_meta)
    except T.TrackingError:
        raise
    except Exception as exc:  # noqa: BLE001 - any store error, reported with its cause
        raise SweepError(f"tracking store {T.redact_uri(uri)}: cannot open the sweep's run: "
                         f"{type(exc).__name__}: {exc}") from None
    return tracker


def _fit(spec: SweepSpec, name: str, root: str, rdb, concurrency: int, *, resume: bool,
         verbose: int, tracker=None, tracking_timeout: float = 300.0) -> SweepOutcome:
    import ray.tune as tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the classic table reporter
    ctx = SweepContext(name=name, spec=spec, root=root, train_storage=os.path.join(root, TRAIN_DIR))
    if ctx.in_trial:  # the trial actor trains: it holds the worker's resources
        trial_resources = {"CPU": spec.cpus_per_worker}
        if spec.gpus_per_worker:
            trial_resources["GPU"] = spec.gpus_per_worker
    else:  # the trial actor only drives a TorchTrainer; {"CPU": 0} alone is refused ("empty bundle")
        trial_resources = {"CPU": 0, "memory": 100 * 1024 * 1024}
    trainable = tune.with_resources(tune.with_parameters(train_driver_fn, sweep=ctx), trial_resources)
    storage_path, exp_name = os.path.dirname(root.rstrip("/")), os.path.basename(root.rstrip("/"))
    total = spec.total_trials()
    callbacks = []
    if tracker is not None:
        from leoclr_platform.tune_tracking import MlflowTrialCallback

        callbacks.append(MlflowTrialCallback(
            tracker, resolve_config=lambda config: resolved_config(spec, config).to_dict(),
            disk_history=lambda trial_id: disk_history(root, trial_id), error_line=_error_line))
    run_config = tune.RunConfig(
        name=exp_name,
        storage_path=storage_path,
        # worker faults: retried by Ray Train for Train runs, by Tune for in-trial runs
        failure_config=tune.FailureConfig(max_failures=ctx.worker_max_failures if ctx.in_trial else 0),
        progress_reporter=_progress_reporter(spec, total),
        callbacks=callbacks,
        verbose=verbose,
    )
    if resume and tune.Tuner.can_restore(root):
        tuner = tune.Tuner.restore(root, trainable=trainable, resume_unfinished=True, resume_errored=True)
        # the pickled RunConfig holds a placeholder for the tracking callback: put the live one back
        restored_config = getattr(getattr(tuner, "_local_tuner", None), "_run_config", None)
        if restored_config is not None:
            restored_config.callbacks = callbacks
    else:
        if spec.mode == "grid":
            # every cell carries every key (None where a `when` excludes it): the table looks them up
            cells = [{**{p.name: None for p in spec.params}, **cell} for cell in grid_configs(spec)]
            param_space = {"cell": tune.grid_search(cells)}
            # no metric/mode here: Tune would then refuse every result without the objective,
            # and a grid with knn_every > 1 reports kNN only every few epochs (nothing here
            # ranks trials by it; summarize reads spec.metric)
            tune_config = tune.TuneConfig(num_samples=1, max_concurrent_trials=concurrency,
                                          scheduler=FIFOScheduler(), reuse_actors=False)
        else:
            from leoclr_platform.optuna_search import SafeOptunaSearch

            searcher = SafeOptunaSearch(
                space=define_by_run(spec), metric=spec.metric, mode=spec.metric_mode,
                sampler=make_sampler(spec), storage=rdb, study_name=name)
            # time_attr is our own `epoch` (training_iteration restarts after a retry/restore);
            # max_t one past the last epoch so a trial ends by itself instead of being stopped
            # at max_t (a stopped trial's driver never runs the code after fit()).
            scheduler = ASHAScheduler(time_attr="epoch", max_t=spec.max_epochs + 1,
                                      grace_period=spec.grace_period, reduction_factor=spec.reduction_factor)
            param_space = {}
            tune_config = tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=total,
                                          metric=spec.metric, mode=spec.metric_mode,
                                          max_concurrent_trials=concurrency,
                                          # a finished trial's actor must exit: the Train
                                          # controller it owns (and its workers' placement
                                          # group) is only released when its owner dies
                                          reuse_actors=False)
        tuner = tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config)
    # with knn_every > 1 a search reports the objective only at ASHA's rungs, the knn_every
    # multiples and the last epoch (trial_config), a grid only at those multiples and the end:
    # Tune must not insist on it in every result (a grid restored from before the grid's
    # TuneConfig lost its metric still carries one)
    sparse_objective = spec.fixed_values().get("knn_every", 1) != 1
    strict_before = os.environ.get(STRICT_METRIC_ENV)
    if sparse_objective:
        os.environ[STRICT_METRIC_ENV] = "1"
    try:
        results = tuner.fit()
    except BaseException:
        if tracker is not None:  # the parent run says the sweep stopped; --resume reopens it
            tracker.close("KILLED", timeout=30)
        raise
    finally:
        if sparse_objective:
            if strict_before is None:
                os.environ.pop(STRICT_METRIC_ENV, None)
            else:
                os.environ[STRICT_METRIC_ENV] = strict_before
    if spec.mode == "search":
        fail_zombie_trials(rdb, name)
    outcome = summarize(spec, name, root, results)
    if tracker is not None:
        outcome.tracking = finish_tracking(tracker, outcome, timeout=tracking_timeout)
    return outcome


_ROW_STATUS = {"COMPLETED": "FINISHED", "STOPPED": "KILLED", "ERROR": "FAILED"}


def finish_tracking(tracker, outcome: SweepOutcome, timeout: float = 300.0) -> dict[str, Any]:
    """Bring every trial's run in line with the outcome (epochs from disk, final status, encoder
    of finished trials; all idempotent), then end the parent run. Returns where things went."""
    for row in outcome.trials:
        trial_id = row["trial_id"]
        history = disk_history(outcome.root, trial_id)
        if row["status"] == "STOPPED" and row["epochs"] is not None:
            # workers may finish an epoch after ASHA's stop; Tune (and the run) end where it stopped
            history = {e: h for e, h in history.items() if e <= row["epochs"]}
        tracker.backfill(trial_id, history)
        status = _ROW_STATUS[row["status"]]
        tracker.trial_ended(trial_id, status=status, reason=row["error"],
                            checkpoint=_latest_checkpoint(outcome.root, trial_id) if status == "FINISHED" else None)
    summary = Path(outcome.root) / "summary.json"
    delivered = tracker.close("FINISHED", timeout=timeout, artifacts=[summary] if summary.exists() else [])
    pending = 0 if delivered or tracker.logger is None else tracker.logger.pending
    return {"uri": tracker.uri, "experiment": tracker.experiment, "experiment_id": tracker.experiment_id,
            "parent_run_id": tracker.parent_run_id, "undelivered": pending}


def disk_history(root: str, trial_id: str) -> dict[int, dict[str, Any]]:
    """Every epoch of a trial that is on disk: the latest Train checkpoint's history.json, plus
    Tune's result.json lines (epochs reported without a checkpoint). Empty for a new trial."""
    history: dict[int, dict[str, Any]] = {}
    if _is_uri(root):
        return history
    from trainables.checkpoint import read_history

    latest = _latest_checkpoint(root, trial_id)
    for entry in read_history(latest) if latest else []:
        if entry.get("epoch") is not None:
            history[int(entry["epoch"])] = entry
    for result_file in Path(root).glob(f"*_{trial_id}_*/result.json"):
        for line in result_file.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill
                continue
            if entry.get("epoch") is not None:
                history.setdefault(int(entry["epoch"]), entry)
    return history


def _latest_checkpoint(root: str, trial_id: str) -> str | None:
    """The trial's checkpoint with the highest epoch (the final encoder of a finished trial)."""
    from trainables.checkpoint import checkpoints_newest_first

    run = Path(root) / TRAIN_DIR / f"trial_{trial_id}"
    if _is_uri(root) or not run.is_dir():
        return None
    found = checkpoints_newest_first(run)  # temp dirs and folders without checkpoint.pt skipped
    return str(found[0]) if found else None


def summarize(spec: SweepSpec, name: str, root: str, results) -> SweepOutcome:
    rows, best = [], None
    sign = 1 if spec.metric_mode == "max" else -1
    for r in results:
        config = r.config or {}
        sampled = decode_sampled(spec, config.get("cell", config))
        seed = sampled.pop("seed", None)
        metrics = r.metrics or {}
        value = metrics.get(spec.metric)
        epochs = metrics.get("epoch")
        if r.error:
            status = "ERROR"
        elif epochs is not None and epochs < spec.max_epochs:
            status = "STOPPED"  # by ASHA, after `epochs` epochs
        else:
            status = "COMPLETED"
        row = {"trial_id": metrics.get("trial_id") or _trial_id_from_path(r.path),
               "status": status, "epochs": epochs, spec.metric: value,
               "params": sampled, "seed": seed,
               "error": _error_line(r.error), "path": r.path}
        rows.append(row)
    # the best trial: among those that ran every epoch, if any (a trial ASHA stopped early reports
    # an earlier epoch's value, not comparable with a finished one's; in benchmarks/
    # search_efficiency.py's replays 15 % of sweeps would otherwise have named a stopped trial)
    finished = [r for r in rows if r["status"] == "COMPLETED" and r[spec.metric] is not None]
    candidates = finished or [r for r in rows if r["status"] != "ERROR" and r[spec.metric] is not None]
    for row in candidates:
        if best is None or sign * row[spec.metric] > sign * best[spec.metric]:
            best = dict(row)
    if best is not None:
        # the checkpoint of the value reported above (the trial's last epoch), which is also
        # the encoder the tracking logs for it (not the trial's best-scoring epoch)
        best["checkpoint"] = _latest_checkpoint(root, best["trial_id"])
    outcome = SweepOutcome(name=name, root=root, best=best, trials=rows,
                           errors=sum(r["status"] == "ERROR" for r in rows))
    if not _is_uri(root):
        (Path(root) / "summary.json").write_text(json.dumps(dataclasses.asdict(outcome), indent=2, default=str))
    return outcome


def _error_line(error: BaseException | None) -> str | None:
    """The exception's own message (Ray wraps it in a traceback; its last line is the cause)."""
    if error is None:
        return None
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def _trial_id_from_path(path: str) -> str:
    """Tune names trial folders `<trainable>_<trial id>_<index>_<params>_<time>`."""
    match = re.search(r"_([0-9a-f]{5,8}(?:_[0-9]{5})?)_\d+_", os.path.basename(path))
    return match.group(1) if match else os.path.basename(path)


_SPEC_FIELDS = ("mode", "base", "params", "metric", "metric_mode", "trials", "max_epochs", "grace_period",
                "reduction_factor", "startup_trials", "max_concurrent", "workers", "cpus_per_worker",
                "gpus_per_worker", "launcher", "seeds")


def spec_changes(spec: SweepSpec) -> dict[str, Any]:
    """What differs between the spec that runs and its YAML text (--trials, --max-epochs,
    --smoke-test, or a spec changed in code): kept in sweep.json so --resume and sync rebuild the
    spec that really ran, not the file's."""
    parsed = parse_space(spec.text, source=spec.label)
    changes = {}
    for name in _SPEC_FIELDS:
        value = getattr(spec, name)
        if value != getattr(parsed, name):
            changes[name] = [dataclasses.asdict(p) for p in value] if name == "params" else value
    return changes


def spec_from_meta(meta: dict[str, Any]) -> SweepSpec:
    from leoclr_platform.spaces import ParamSpec

    spec = parse_space(meta["space_text"], source=meta["space_source"])
    changes = dict(meta.get("spec_changes") or {})
    if "params" in changes:
        changes["params"] = [ParamSpec(**p) for p in changes["params"]]
    return dataclasses.replace(spec, path=Path(meta["space_path"]) if meta.get("space_path") else None, **changes)


def resumed_spec(meta: dict[str, Any]) -> SweepSpec:
    """The spec a resumed sweep goes on with. A sweep started before one-worker trials could
    train in the trial itself (its sweep.json has no "launcher") goes on with Ray Train: its
    restored trials hold a Train driver's resources ({"CPU": 0}) and no Tune retries."""
    spec = spec_from_meta(meta)
    if "launcher" not in meta:
        spec = dataclasses.replace(spec, launcher="ray_train")
    return spec


def _write_meta(root: str, meta: dict[str, Any]) -> None:
    if _is_uri(root):
        import pyarrow.fs as pafs

        fs, path = pafs.FileSystem.from_uri(root)
        fs.create_dir(path, recursive=True)
        with fs.open_output_stream(f"{path}/{SWEEP_META}") as f:
            f.write(json.dumps(meta, indent=2).encode())
        return
    (Path(root) / SWEEP_META).write_text(json.dumps(meta, indent=2))


def _read_meta(root: str, action: str = "resume") -> dict[str, Any]:
    try:
        if _is_uri(root):
            import pyarrow.fs as pafs

            fs, path = pafs.FileSystem.from_uri(root)
            with fs.open_input_stream(f"{path}/{SWEEP_META}") as f:
                return json.loads(f.read())
        return json.loads((Path(root) / SWEEP_META).read_text())
    except (FileNotFoundError, OSError):
        raise SweepError(f"no sweep to {action} at {root} ({SWEEP_META} not found); "
                         "check the name and --storage") from None


def print_outcome(outcome: SweepOutcome, spec_metric: str, file=sys.stdout) -> None:
    print(f"\nsweep {outcome.name}: {len(outcome.trials)} trials, {outcome.errors} failed; results in {outcome.root}",
          file=file)
    for row in sorted(outcome.trials, key=lambda r: (r[spec_metric] is None, -(r[spec_metric] or 0))):
        value = row[spec_metric]
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in row["params"].items())
        shown = f"{value:.2f}" if isinstance(value, (int, float)) else "-"
        extra = f"  [{row['error']}]" if row["error"] else ""
        print(f"  {row['trial_id']:>10} {row['status']:<10} epochs={row['epochs']} {spec_metric}={shown}  {params}{extra}",
              file=file)
    best = outcome.best
    if best is None:
        print("no trial finished with a result", file=file)
        return
    print(f"\nbest trial {best['trial_id']}: {spec_metric}={best[spec_metric]:.2f}", file=file)
    print(f"  config: {json.dumps(best['params'])} seed={best['seed']}", file=file)
    print(f"  checkpoint: {best['checkpoint']}", file=file)
    if best["checkpoint"]:
        ckpt = best["checkpoint"]
        print(f"  train it further: leoclr train --config {ckpt}/config.json --set epochs=<N> --resume {ckpt}",
              file=file)
    tracking = outcome.tracking
    if tracking:
        from leoclr_platform.tracking import redact_uri

        print(f"\nMLflow: experiment {tracking['experiment']!r}, sweep run {tracking['parent_run_id']} "
              f"in {redact_uri(tracking['uri'])}", file=file)
        if tracking.get("undelivered"):
            print(f"  WARNING: {tracking['undelivered']} tracking call(s) could not be delivered (store "
                  f"unreachable); when it is back: leoclr sync {outcome.name}", file=file)
        print(f"  promote the best encoder: leoclr promote --sweep {outcome.name}", file=file)
        print(f"  ablation report:          leoclr report {outcome.name}", file=file)
        print("  browse it:                leoclr ui", file=file)


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


# ---------------------------------------------------------------------------------------------
def sync_sweep(name: str, *, storage: str | None = None, tracking_uri: str | None = None, out=print) -> dict[str, Any]:
    """`leoclr sync NAME`: replay a sweep's results on disk into MLflow (after the tracking store
    was away, or to another store). Idempotent: what is there already is not logged twice."""
    from leoclr_platform import tracking as T

    root = os.path.join(storage or str(default_storage()), name)
    meta = _read_meta(root, action="sync")
    uri = T.resolve_tracking_uri(tracking_uri or meta.get("tracking_uri"))
    T.check_store(uri)
    spec = spec_from_meta(meta)
    experiment = meta.get("experiment") or f"leoclr/{spec.name}"
    tracker = T.SweepTracker(uri, experiment, name, max_epochs=spec.max_epochs, metric=spec.metric, synchronous=True)
    space_file = Path(meta["space_path"]).name if meta.get("space_path") else f"{spec.name}.yaml"
    tracker.open(space_name=spec.name, space_text=spec.text, space_file=space_file,
                 params={"space": spec.name, "mode": spec.mode, "objective": f"{spec.metric} ({spec.metric_mode})",
                         "trials": spec.total_trials(), "max_epochs": spec.max_epochs,
                         "searched": [p.name for p in spec.params], "results": root},
                 tags={"mode": spec.mode, "objective": spec.metric},
                 meta={k: v for k, v in meta.items() if k != "space_text"})
    summary_file = Path(root) / "summary.json"
    rows = {r["trial_id"]: r for r in json.loads(summary_file.read_text())["trials"]} if summary_file.exists() else {}
    trials = 0
    for trial_dir in sorted(p for p in Path(root).iterdir() if (p / "params.json").exists()):
        trial_id = _trial_id_from_path(str(trial_dir))
        config = json.loads((trial_dir / "params.json").read_text())
        history = disk_history(root, trial_id)
        tracker.trial_started(trial_id, resolved_config(spec, config).to_dict(), history=history)
        row = rows.get(trial_id)
        last_epoch = max(history, default=0)
        if row is not None:
            status, reason = _ROW_STATUS[row["status"]], row["error"]
        elif (trial_dir / "error.txt").exists():
            status, reason = "FAILED", _error_line(Exception((trial_dir / "error.txt").read_text()))
        elif last_epoch >= spec.max_epochs:
            status, reason = "FINISHED", None
        else:
            status = None  # unfinished: `leoclr sweep --resume` will continue it
        if status:
            checkpoint = _latest_checkpoint(root, trial_id) if status == "FINISHED" else None
            tracker.trial_ended(trial_id, status=status, reason=reason, checkpoint=checkpoint)
        trials += 1
    tracker.close("FINISHED" if summary_file.exists() else "KILLED",
                  artifacts=[summary_file] if summary_file.exists() else [])
    out(f"synced sweep {name}: {trials} trial(s) from {root} into {T.redact_uri(uri)} "
        f"(experiment {experiment!r}, run {tracker.parent_run_id})")
    return {"trials": trials, "parent_run_id": tracker.parent_run_id, "uri": uri}
