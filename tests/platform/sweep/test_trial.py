"""What runs inside a Tune trial, run here without Ray: the resolved config, where a trial
trains, the in-trial loop with its checkpoints, and a diverged trial not trained again."""

from __future__ import annotations

import dataclasses

import pytest
import ray.tune

from platform_fakes import TINY_CONFIG
from leoclr_platform import spaces
from leoclr_platform.sweep.trial import (
    DIVERGED_MARKER,
    SweepContext,
    TrialDiverged,
    _train_in_trial,
    resolved_config,
    uses_ray_train,
)
from trainables.config import TrainConfig


def test_a_trial_config_is_resolved_from_a_search_or_a_grid_cell():
    spec = spaces.load_space("smoke")
    search = resolved_config(spec, {"attraction_strategy": "moco_v2", "temperature": 0.3,
                                    "key_momentum__one_minus": 0.05, "enqueue": None, "seed": 0})
    assert (search.attraction_strategy, search.key_momentum, search.epochs) == ("moco_v2", 0.95, spec.max_epochs)
    grid = resolved_config(spec, {"cell": {"attraction_strategy": "leoclr", "temperature": 0.2,
                                           "key_momentum": 0.99, "seed": 4}})
    assert (grid.attraction_strategy, grid.seed) == ("leoclr", 4)


def test_one_worker_trials_train_in_the_trial_unless_told_or_remote():
    spec = spaces.load_space("smoke")
    assert not uses_ray_train(spec, "/tmp/runs/x") and uses_ray_train(spec, "s3://bucket/runs/x")
    assert uses_ray_train(dataclasses.replace(spec, workers=2), "/tmp/runs/x")
    assert uses_ray_train(dataclasses.replace(spec, launcher="ray_train"), "/tmp/runs/x")
    assert SweepContext("x", spec, "/tmp/runs/x", "/tmp/runs/x/train").in_trial


def context(tmp_path, **spec_changes):
    spec = dataclasses.replace(spaces.load_space("smoke"), **spec_changes)
    return SweepContext("x", spec, str(tmp_path), str(tmp_path / "train"), keep_checkpoints=1)


def test_an_in_trial_run_reports_each_epoch_and_keeps_its_checkpoints(tmp_path, monkeypatch):
    reported = []
    monkeypatch.setattr(ray.tune, "report", lambda metrics: reported.append(metrics))
    cfg = TrainConfig.from_dict({**TINY_CONFIG, "epochs": 3})
    _train_in_trial(cfg, context(tmp_path, max_epochs=3), "t1")
    assert [m["epoch"] for m in reported] == [1, 2, 3]
    run = tmp_path / "train" / "trial_t1"
    # the best one (by the objective) and the newest are kept
    assert len(sorted(p.name for p in run.glob("epoch_*"))) <= 2 and (run / "epoch_0003").is_dir()
    reported.clear()
    _train_in_trial(TrainConfig.from_dict({**TINY_CONFIG, "epochs": 4}), context(tmp_path, max_epochs=4), "t1")
    assert [m["epoch"] for m in reported] == [4]  # a retried trial resumes from its checkpoint


def test_a_diverged_trial_is_not_trained_again(tmp_path, monkeypatch):
    monkeypatch.setattr(ray.tune, "report", lambda metrics: None)
    cfg = TrainConfig.from_dict({**TINY_CONFIG, "lr": 1e12, "finite_check_every": 1})
    with pytest.raises(TrialDiverged, match="loss is not finite"):
        _train_in_trial(cfg, context(tmp_path), "t1")
    assert (tmp_path / "train" / "trial_t1" / DIVERGED_MARKER).exists()

    def must_not_train(*args, **kwargs):
        raise AssertionError("a diverged trial was trained again")

    monkeypatch.setattr("trainables.loop.run_training", must_not_train)
    with pytest.raises(TrialDiverged, match="loss is not finite"):
        _train_in_trial(cfg, context(tmp_path), "t1")
