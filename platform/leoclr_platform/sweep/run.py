"""`run_sweep(SweepRequest(...))`: validate everything, then run (or resume) a sweep.

The steps, in the order a user's mistakes are caught: the space (new) or sweep.json (resume);
where it will run (a cluster address that answers, or local resources enough for one trial);
the tracking store; the storage folder; the Optuna study. Only then is sweep.json written, Ray
started, the parent MLflow run opened and the Tuner run. Afterwards the outcome table is made
and MLflow brought in line with the results on disk.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leoclr_platform.errors import SweepError, TrackingError
from leoclr_platform.spaces import SweepSpec, load_space, validate_space
from leoclr_platform.sweep.analysis import analyse_sweep
from leoclr_platform.sweep.confirm import run_confirmation, track_confirm_rows, trial_stage_tags, with_confirm_flag
from leoclr_platform.sweep.meta import new_meta, read_meta, resumed_spec, write_meta
from leoclr_platform.sweep.paths import SWEEP_META, TRAIN_DIR, default_storage, is_uri, sweep_root
from leoclr_platform.sweep.results import SweepOutcome, disk_history, error_line, stop_reason, summarize
from leoclr_platform.sweep.runtime import check_reachable, check_resources, cluster_resources, connect_ray, \
    local_resources
from leoclr_platform.sweep.storage_check import check_shared_storage
from leoclr_platform.sweep.study import fail_zombie_trials, open_study_storage
from leoclr_platform.sweep.sync import finish_tracking
from leoclr_platform.sweep.trial import SweepContext, resolved_config, uses_ray_train
from leoclr_platform.sweep.tuner import build_tuner, objective_checking


@dataclass
class SweepRequest:
    """What to run: a new sweep of `space` (a shipped name, a YAML path or a SweepSpec), or with
    `resume` the existing sweep `name`. Each field is the `leoclr sweep` flag of that name."""

    space: str | SweepSpec | None = None
    name: str | None = None  # default for a new sweep: <space>-<time>
    resume: bool = False
    storage: str | None = None  # results root (default: ./runs or $LEOCLR_STORAGE); a URI works
    study_storage: str | None = None  # RDB URL of the Optuna study (default: SQLite in the results)
    address: str | None = None  # Ray cluster (default: $RAY_ADDRESS, else an in-process runtime)
    num_cpus: int | None = None  # CPUs of the in-process runtime
    trials: int | None = None  # overrides budget.trials
    max_epochs: int | None = None  # overrides budget.max_epochs
    confirm: dict[str, int] | None = None  # overrides budget.confirm ({} turns it off; confirm.parse_confirm_flag)
    tracking_uri: str | None = None  # default: $MLFLOW_TRACKING_URI, else the project's SQLite
    experiment: str | None = None  # default: leoclr/<space name>
    track: bool = True
    tracking_timeout: float = 300.0  # how long the end waits for an unreachable store
    system_metrics: bool = True  # trials measure CPU/memory/GPU; tracked as system/* metrics
    verbose: int = 1  # Tune's verbosity


@dataclass
class _Plan:
    """What a request resolved to before any compute."""

    spec: SweepSpec
    name: str
    root: str
    meta: dict[str, Any]
    tracking_arg: str | None  # --tracking-uri, or the store the sweep was started with
    tracked: bool
    experiment: str
    study_storage: str | None
    uri: str | None = None  # the tracking store, resolved and checked before compute


def run_sweep(request: SweepRequest) -> SweepOutcome:
    """Validate everything, then run (or resume) the sweep. Returns the outcome table."""
    plan = _resumed(request) if request.resume else _new(request)
    validate_space(plan.spec)  # again on resume: data present, config still valid with this code
    _check_before_compute(plan, request)
    study_url, rdb = open_study_storage(plan.root, plan.study_storage)
    if not request.resume:
        plan.meta = new_meta(plan.spec, plan.name, study_url=study_url, study_storage_arg=request.study_storage,
                             tracking_uri=plan.uri, experiment=plan.experiment,
                             launcher="ray_train" if uses_ray_train(plan.spec, plan.root) else "in_trial")
        write_meta(plan.root, plan.meta)
    connect_ray(request.address, num_cpus=request.num_cpus)
    check_shared_storage(plan.root)  # a multi-node cluster: every node must see --storage
    concurrency = check_resources(plan.spec, cluster_resources())
    _record_environment(plan)
    tracker = _open_tracker(plan, request.system_metrics) if plan.uri else None
    return _fit(plan, rdb, concurrency, request, tracker)


def _resumed(request: SweepRequest) -> _Plan:
    if not request.name:
        raise SweepError("--resume needs the sweep name", key="--resume", message="--resume needs the sweep name")
    root = sweep_root(request.storage, request.name)
    meta = read_meta(root)
    spec = resumed_spec(meta)
    tracked = request.track and meta.get("tracking_uri") is not None
    return _Plan(spec=spec, name=request.name, root=root, meta=meta,
                 tracking_arg=request.tracking_uri or meta.get("tracking_uri"), tracked=tracked,
                 experiment=request.experiment or meta.get("experiment") or f"leoclr/{spec.name}",
                 study_storage=request.study_storage or meta.get("study_storage_arg"))


def _new(request: SweepRequest) -> _Plan:
    space = request.space
    spec = space if isinstance(space, SweepSpec) else load_space(space)
    changes: dict[str, Any] = {}
    if request.trials is not None:
        changes["trials"] = request.trials
    if request.max_epochs is not None:
        changes["max_epochs"] = request.max_epochs
        changes["base"] = {**spec.base, "epochs": request.max_epochs} if "epochs" in spec.base else spec.base
    if request.confirm is not None:
        changes["confirm"] = with_confirm_flag(spec, request.confirm or None)
    if changes:
        spec = dataclasses.replace(spec, **changes)
        validate_space(spec)
    name = request.name or f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    base = request.storage or str(default_storage())
    root = sweep_root(base, name)
    if not is_uri(root) and (Path(root) / SWEEP_META).exists():
        raise SweepError(f"already exists under {base}: use --resume {name} to continue it, or another --name",
                         key="--name", value=name,
                         message=f"sweep {name!r} already exists under {base}: use --resume {name} "
                                 "to continue it, or another --name")
    return _Plan(spec=spec, name=name, root=root, meta={}, tracking_arg=request.tracking_uri,
                 tracked=request.track, experiment=request.experiment or f"leoclr/{spec.name}", study_storage=request.study_storage)


def _check_before_compute(plan: _Plan, request: SweepRequest) -> None:
    """Where it will run, the tracking store and the storage folder, before anything is written
    or started (a runtime already initialised in this process is used as it is, and checked
    after connect_ray)."""
    import ray

    from leoclr_platform.tracking import check_store, resolve_tracking_uri

    target = request.address or os.environ.get("RAY_ADDRESS")
    if not ray.is_initialized():
        if target:
            check_reachable(target)
        else:
            check_resources(plan.spec, local_resources(request.num_cpus))
    if plan.tracked:
        plan.uri = resolve_tracking_uri(plan.tracking_arg)
        check_store(plan.uri)  # an unreachable server or unwritable store fails here, before compute
    if is_uri(plan.root):
        return
    try:
        Path(plan.root).mkdir(parents=True, exist_ok=True)
        probe = Path(plan.root) / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise SweepError(f"is not writable: {exc.strerror}", key="--storage", value=plan.root,
                         message=f"storage path {plan.root!r} is not writable: {exc.strerror}") from None


def _record_environment(plan: _Plan) -> None:
    """Keep the code's provenance and the cluster's hardware in sweep.json (once), so the live
    parent run and a later `leoclr sync` record the same (tracking/sweep_record.py)."""
    import ray

    from leoclr_platform.tracking import environment

    if plan.meta.get("provenance") and plan.meta.get("hardware"):
        return
    plan.meta.update(environment(plan.spec, {**ray.cluster_resources(), **cluster_resources()}))
    write_meta(plan.root, plan.meta)


def _open_tracker(plan: _Plan, system_metrics: bool = True):
    """The sweep's parent run (created, or found again on --resume) and its tracker."""
    from leoclr_platform import tracking

    if plan.uri.startswith(("http://", "https://")):
        # fail a call in seconds and let the tracker's own backoff retry it (MLflow's default
        # retries one call for minutes, holding up everything queued behind it)
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    tracker = tracking.SweepTracker(plan.uri, plan.experiment, plan.name, max_epochs=plan.spec.max_epochs,
                                    system_metrics=system_metrics)
    try:
        tracker.open(tracking.sweep_record(plan.spec, plan.meta, plan.root))
    except TrackingError:
        raise
    except Exception as exc:  # noqa: BLE001 - any store error, reported with its cause
        shown = tracking.redact_uri(plan.uri)
        reason = f"cannot open the sweep's run: {type(exc).__name__}: {exc}"
        raise SweepError(reason, source=shown, message=f"tracking store {shown}: {reason}") from None
    return tracker


def _fit(plan: _Plan, rdb, concurrency: int, request: SweepRequest, tracker) -> SweepOutcome:
    """Run the Tuner; then the outcome table, the confirmation stage, the study tidied and MLflow
    brought in line."""
    spec, root = plan.spec, plan.root
    ctx = SweepContext(name=plan.name, spec=spec, root=root, train_storage=os.path.join(root, TRAIN_DIR),
                       system_metrics=request.system_metrics and tracker is not None)
    tuner = build_tuner(ctx, rdb, concurrency, resume=request.resume, verbose=request.verbose,
                        callbacks=_callbacks(tracker, spec, root))
    try:
        with objective_checking(spec):
            results = tuner.fit()
        if spec.mode == "search":
            fail_zombie_trials(rdb, plan.name)
        outcome = summarize(spec, plan.name, root, results)
        with objective_checking(spec):
            confirmed = run_confirmation(ctx, plan.meta, outcome, concurrency=concurrency, resume=request.resume,
                                         verbose=request.verbose, callbacks=_callbacks(tracker, spec, root))
    except BaseException:
        if tracker is not None:  # the parent run says the sweep stopped; --resume reopens it
            tracker.close("KILLED", timeout=30)
        raise
    extras = analyse_sweep(spec, plan.name, root, rdb, confirmed)
    if tracker is not None:
        if confirmed:
            track_confirm_rows(tracker, spec, root, confirmed["trials"])
        tracker.log_parent(**extras)
        outcome.tracking = finish_tracking(tracker, outcome, timeout=request.tracking_timeout)
    return outcome


def _callbacks(tracker, spec: SweepSpec, root: str) -> list:
    """The Tune callbacks of a stage: the MLflow mirror of its trials (none without tracking)."""
    if tracker is None:
        return []
    from leoclr_platform.tracking.tune_callback import MlflowTrialCallback

    return [MlflowTrialCallback(
        tracker, resolve_config=lambda config: resolved_config(spec, config).to_dict(),
        disk_history=lambda trial_id: disk_history(root, trial_id), error_line=error_line,
        stop_reason=stop_reason, trial_tags=trial_stage_tags)]
