"""Helpers of the platform's unit tests: a tiny training config, a sweep's record without Ray,
Tune's Trial objects and results faked."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from leoclr_platform import spaces, tracking
from leoclr_platform.sweep.meta import new_meta
from leoclr_platform.sweep.trial import resolved_config

#: A two-epoch run small enough for unit tests: small CNN on scikit-learn's digits at 16 px.
TINY_CONFIG = dict(dataset="digits", image_size=16, backbone="small_cnn", batch_size=32, queue_size=64,
                   epochs=2, knn_k=10, bn_splits=2, max_steps_per_epoch=2, device="cpu")


def smoke_record(name: str = "s1", root: str = "/tmp/runs/s1", **changes):
    """(spec, meta, record) of the shipped smoke space as a sweep named `name`."""
    spec = dataclasses.replace(spaces.load_space("smoke"), **changes) if changes else spaces.load_space("smoke")
    meta = new_meta(spec, name, study_url="sqlite:///x.db", study_storage_arg=None, tracking_uri="sqlite:///m.db",
                    experiment=f"leoclr/{spec.name}", launcher="in_trial")
    meta.update(tracking.environment(spec, {"CPU": 4.0, "GPU": 0.0}))
    return spec, meta, tracking.sweep_record(spec, meta, root)


SAMPLED = {"attraction_strategy": "leoclr", "temperature": 0.2, "key_momentum": 0.99, "enqueue": "both"}


def trial_config_dict(spec, sampled=SAMPLED) -> dict[str, Any]:
    return resolved_config(spec, dict(sampled)).to_dict()


@dataclass
class FakeTrial:
    """What MlflowTrialCallback reads of a `ray.tune.experiment.Trial`."""

    trial_id: str
    config: dict[str, Any] = field(default_factory=lambda: dict(SAMPLED))
    last_result: dict[str, Any] = field(default_factory=dict)
    error: BaseException | None = None

    def get_pickled_error(self):
        return self.error

    def get_error(self):
        return None


def result(epoch: int, knn: float, **extra) -> dict[str, Any]:
    """A Tune result of one epoch as the loop reports it."""
    return {"epoch": epoch, "loss": 8.0 - epoch, "val_knn_top1": knn, "lr": 0.06, "images_per_s": 100.0,
            "epoch_time_s": 1.0, "timestamp": 1_700_000_000 + epoch, "time_total_s": 3.0, **extra}


def record_sweep(uri: str, tiny_run, name: str = "s1") -> dict[str, Any]:
    """A sweep in store `uri` as the live tracker records it, without Ray: trials
    t1 (leoclr, FINISHED, the engine's real metrics and encoder from `tiny_run`),
    t2 (moco_v2, FINISHED, the same encoder, kNN 10 points higher: the best),
    t3 (leoclr, KILLED by ASHA after epoch 1). Returns {"spec", "record", "parent_run_id"}."""
    from trainables.checkpoint import read_history

    spec, meta, record = smoke_record(name, root=str(tiny_run.parent / "runs" / name))
    tracker = tracking.SweepTracker(uri, meta["experiment"], name, max_epochs=spec.max_epochs, synchronous=True)
    tracker.open(record)
    history = read_history(tiny_run / "epoch_0002")
    moco = {**SAMPLED, "attraction_strategy": "moco_v2", "enqueue": None}
    for trial_id, sampled, bonus in (("t1", SAMPLED, 0.0), ("t2", moco, 10.0)):
        tracker.trial_started(trial_id, trial_config_dict(spec, sampled))
        for h in history:
            tracker.epoch(trial_id, {**h, "val_knn_top1": h["val_knn_top1"] + bonus})
        tracker.trial_ended(trial_id, status="FINISHED", checkpoint=str(tiny_run / "epoch_0002"))
    tracker.trial_started("t3", trial_config_dict(spec, {**SAMPLED, "temperature": 0.4}))
    tracker.epoch("t3", result(1, 20.0))
    tracker.trial_ended("t3", status="KILLED")
    tracker.close()
    return {"spec": spec, "record": record, "parent_run_id": tracker.parent_run_id}
