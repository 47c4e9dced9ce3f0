"""The adapter for private Ray / Optuna attributes: each use still works with the installed
versions (when one of these fails after an upgrade, sweep/compat.py says what it was for)."""

from __future__ import annotations

import os

from leoclr_platform.sweep import compat


def test_ray_s_cpu_count_is_read_without_starting_ray():
    import ray

    assert 1 <= compat.ray_num_cpus() <= (os.cpu_count() or 1)
    assert not ray.is_initialized()


def test_callbacks_can_be_put_into_a_tuner(tmp_path):
    import ray.tune as tune

    tuner = tune.Tuner(lambda config: None, run_config=tune.RunConfig(name="x", storage_path=str(tmp_path)))
    marker = tune.Callback()
    assert compat.set_restored_callbacks(tuner, [marker]) is True
    assert compat.set_restored_callbacks(object(), [marker]) is False
