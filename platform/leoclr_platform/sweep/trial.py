"""The code that runs inside Ray: one trial of a sweep.

Three names, as in Ray's train/tune interop example:
- `train_driver_fn(config, sweep)`: the Tune function trainable (one per trial). It resolves
  the trial's TrainConfig, then trains either right here (a one-worker trial, see
  `uses_ray_train`) or through a `TorchTrainer` whose run is named after the trial id, so a
  retried or resumed trial finds its own latest checkpoint; `TuneReportCallback` forwards every
  epoch to Tune, so ASHA sees them.
- `train_fn_per_worker(loop_config)`: runs on every Ray Train worker; calls the engine's loop
  (`trainables.loop.run_training`) with a `report` hook that forwards each epoch's metrics and
  checkpoint to `ray.train.report`.
- the `Tuner` is built by `tuner.py`.
The engine's loop knows nothing of Ray: it gets a `report(metrics, checkpoint_dir)` function.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from leoclr_platform.spaces import SweepSpec, decode_sampled, trial_config
from leoclr_platform.sweep.paths import is_uri, trial_run_dir

DIVERGED_MARKER = "diverged.txt"


class TrialDiverged(RuntimeError):
    """Raised by the trial driver when the loop stopped on a non-finite loss."""


@dataclass
class SweepContext:
    """Everything a trial needs besides its sampled config (sent to trials by with_parameters)."""

    name: str
    spec: SweepSpec
    root: str  # absolute (or URI) folder of this sweep
    train_storage: str  # where the Ray Train runs (checkpoints) of the trials live
    worker_max_failures: int = 2  # restarts of a trial's workers (from its checkpoint)
    keep_checkpoints: int = 2
    system_metrics: bool = True  # add system/* values to each report (sweep/system_metrics.py)

    @property
    def in_trial(self) -> bool:
        """Whether trials run the loop in the Tune trial's own process (see `uses_ray_train`)."""
        return not uses_ray_train(self.spec, self.root)


def uses_ray_train(spec: SweepSpec, root: str) -> bool:
    """A trial trains through a Ray Train TorchTrainer (DDP over `workers` worker actors) when it
    has several workers, when the space asks for it (`resources.launcher: ray_train`), or when
    the sweep's storage is a URI (Train's persistence uploads the checkpoints). A one-worker trial
    otherwise runs the same loop inside its Tune trial actor: no Train controller, placement
    group, worker actor or process group to create (docs/performance-sweeps.md measures what
    that saves); worker faults are then retried by Tune."""
    return spec.needs_ray_train or is_uri(root)


def resolved_config(spec: SweepSpec, config: dict[str, Any]):
    """A Tune trial config -> the validated TrainConfig the trial trains."""
    sampled = config.get("cell", config)  # grid: {"cell": {...}}; search: what Optuna produced
    return trial_config(spec, decode_sampled(spec, sampled), seed=sampled.get("seed"))


# ---------------------------------------------------------------------------------------------
# The Tune trainable
def train_driver_fn(config: dict[str, Any], sweep: SweepContext) -> None:
    """The Tune trainable of one trial: the loop itself for a one-worker trial, else a
    TorchTrainer over `train_fn_per_worker` (see `uses_ray_train`)."""
    import ray
    import ray.tune

    trial_id = ray.tune.get_context().get_trial_id()
    cfg = resolved_config(sweep.spec, config)
    if sweep.in_trial:
        _train_in_trial(cfg, sweep, trial_id)
        return
    status = _status_actor()
    try:
        result = _torch_trainer(cfg, sweep, trial_id, status).fit()
        state = ray.get(status.get.remote())
    finally:
        ray.kill(status)
    if "diverged" in state:
        raise TrialDiverged(state["diverged"])
    if result.error is not None:
        raise result.error


def _train_in_trial(cfg, sweep: SweepContext, trial_id: str) -> None:
    """A one-worker trial, trained in this Tune trial actor (see `uses_ray_train`).

    Checkpoints go to the same place as a Train run's (<sweep>/train/trial_<id>/), so resuming,
    the best-checkpoint lookup and tracking read them alike. A retried trial (worker fault, driver
    restore) resumes from the newest good checkpoint there. A diverged trial leaves a marker, so
    a retry fails at once instead of training into the same divergence again."""
    import ray
    import ray.tune

    from trainables.checkpoint import checkpoints_newest_first, prune_checkpoints, remove_partial_writes
    from trainables.loop import DivergenceError, resolve_device, run_training

    from leoclr_platform.sweep.system_metrics import SystemSampler, with_system_metrics

    spec = sweep.spec
    run_dir = trial_run_dir(sweep.root, trial_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    marker = run_dir / DIVERGED_MARKER
    if marker.exists():
        raise TrialDiverged(marker.read_text())
    remove_partial_writes(run_dir)  # a save cut by a kill or an ASHA stop
    sampler = SystemSampler(resolve_device(cfg)) if sweep.system_metrics else None

    node_id = current_node_id()  # which node trained each epoch (multi-node)

    def report(metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        if checkpoint_dir:
            prune_checkpoints(run_dir, spec.metric, spec.metric_mode, sweep.keep_checkpoints)
        where = {"node_id": node_id} if node_id else {}
        ray.tune.report({**with_system_metrics(metrics, sampler), **where})

    has_checkpoint = bool(checkpoints_newest_first(run_dir))
    try:
        run_training(cfg, report, resume_from=[str(run_dir)] if has_checkpoint else None,
                     checkpoint_dir=str(run_dir), keep_checkpoints=None)
    except DivergenceError as exc:
        marker.write_text(str(exc))
        raise TrialDiverged(str(exc)) from None


def _torch_trainer(cfg, sweep: SweepContext, trial_id: str, status):
    """A TorchTrainer of `sweep.spec.workers` workers training `cfg`, its run named after the trial."""
    import ray.train
    from ray.train import CheckpointConfig, FailureConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    spec = sweep.spec
    use_gpu = spec.gpus_per_worker > 0
    resources = {"CPU": spec.cpus_per_worker}
    if use_gpu:
        resources["GPU"] = spec.gpus_per_worker
    return TorchTrainer(
        train_fn_per_worker,
        train_loop_config={"train": cfg.to_dict(), "use_gpu": use_gpu, "status": status,
                           "trial_id": trial_id, "sweep": sweep.name, "system_metrics": sweep.system_metrics},
        scaling_config=ScalingConfig(num_workers=spec.workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=f"trial_{trial_id}",  # a retried/resumed trial finds its own checkpoints
            storage_path=sweep.train_storage,
            failure_config=FailureConfig(max_failures=sweep.worker_max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=sweep.keep_checkpoints,
                                               checkpoint_score_attribute=spec.metric,
                                               checkpoint_score_order=spec.metric_mode),
            callbacks=[TuneReportCallback()],
        ),
    )


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


# ---------------------------------------------------------------------------------------------
# One Ray Train worker
def current_node_id() -> str | None:
    """The Ray node this process runs on; None outside Ray (asking the runtime context there
    would start a local Ray instance)."""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None


def train_fn_per_worker(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker: resume from this run's latest checkpoint, train, report each epoch."""
    import ray
    import ray.train
    import ray.train.torch

    from trainables.config import TrainConfig
    from trainables.loop import DivergenceError, run_training

    from leoclr_platform.sweep.system_metrics import SystemSampler, with_system_metrics

    cfg = TrainConfig.from_dict(loop_config["train"])
    device = ray.train.torch.get_device() if loop_config.get("use_gpu") else None
    status = loop_config.get("status")
    rank0 = ray.train.get_context().get_world_rank() == 0  # only rank 0's report reaches Tune
    sampler = SystemSampler(device) if loop_config.get("system_metrics", True) and rank0 else None

    node_id = current_node_id()

    def report(metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        where = {"node_id": node_id} if node_id else {}
        ray.train.report({**with_system_metrics(metrics, sampler), **where}, checkpoint=checkpoint)

    checkpoint = ray.train.get_checkpoint()
    try:
        if checkpoint is None:
            run_training(cfg, report, keep_checkpoints=1, device=device)
        else:
            with checkpoint.as_directory() as resume_dir:
                run_training(cfg, report, resume_from=_resume_candidates(checkpoint.path, resume_dir),
                             keep_checkpoints=1, device=device)
    except DivergenceError as exc:
        # Deterministic: retrying from the last checkpoint would diverge again. Tell the driver
        # and end the workers normally so Ray Train does not restart them.
        if status is not None and ray.train.get_context().get_world_rank() == 0:
            ray.get(status.set.remote("diverged", str(exc)))


def _resume_candidates(registered: str, resume_dir: str) -> list[str]:
    """The latest registered checkpoint first, then older ones of this run (a corrupt or
    truncated latest costs an epoch, not the trial)."""
    from trainables.checkpoint import checkpoint_epoch, checkpoints_newest_first

    older: list[str] = []
    run = os.path.dirname(registered)
    if not is_uri(registered) and os.path.isdir(run):
        epoch = checkpoint_epoch(resume_dir)
        older = [str(c) for c in checkpoints_newest_first(run, epoch) if str(c) != registered]
    return [resume_dir, *older]
