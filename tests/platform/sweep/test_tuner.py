"""The Tuner of a sweep, built without starting Ray: resources, searcher and scheduler, the
reporter's columns, Tune's metric check."""

from __future__ import annotations

import dataclasses
import os

import ray.tune as tune

from leoclr_platform import spaces
from leoclr_platform.sweep.optuna_search import SafeOptunaSearch
from leoclr_platform.sweep.study import open_study_storage
from leoclr_platform.sweep.trial import SweepContext
from leoclr_platform.sweep.tuner import STRICT_METRIC_ENV, _grid, _search, _trial_resources, build_tuner, \
    objective_checking, progress_reporter, reuse_actors


def grid_spec():
    return dataclasses.replace(spaces.load_space("smoke"), mode="grid", seeds=[0, 1], params=[
        spaces.ParamSpec("attraction_strategy", "grid", ["leoclr", "moco_v2"]),
        spaces.ParamSpec("enqueue", "grid", ["both", "first"], when={"attraction_strategy": ["leoclr"]})])


def test_a_search_is_tpe_and_asha_on_the_objective(tmp_path):
    spec = spaces.load_space("smoke")
    _, rdb = open_study_storage(str(tmp_path), None)
    param_space, config = _search(spec, "s1", rdb, concurrency=2, reuse=True)
    assert param_space == {} and isinstance(config.search_alg, SafeOptunaSearch)
    assert (config.metric, config.mode, config.num_samples, config.max_concurrent_trials) == ("val_knn_top1", "max", 3, 2)
    assert config.reuse_actors


def test_a_grid_runs_every_cell_and_seed_with_every_key(tmp_path):
    param_space, config = _grid(grid_spec(), concurrency=3, reuse=False)
    cells = param_space["cell"]["grid_search"]
    assert len(cells) == 6 and config.metric is None and config.max_concurrent_trials == 3
    assert all(set(c) == {"attraction_strategy", "enqueue", "seed"} for c in cells)  # None where `when` fails
    assert {c["enqueue"] for c in cells if c["attraction_strategy"] == "moco_v2"} == {None}


def test_a_trial_holds_the_worker_s_resources_only_when_it_trains_itself(tmp_path):
    spec = spaces.load_space("smoke")
    assert _trial_resources(SweepContext("s", spec, str(tmp_path), "")) == {"CPU": 1}
    gpu = dataclasses.replace(spec, gpus_per_worker=1)
    assert _trial_resources(SweepContext("s", gpu, str(tmp_path), "")) == {"CPU": 1, "GPU": 1}
    train = dataclasses.replace(spec, workers=2)
    assert _trial_resources(SweepContext("s", train, str(tmp_path), ""))["CPU"] == 0


def test_trial_actors_are_reused_only_when_the_trial_trains_in_its_own_actor(tmp_path):
    spec = spaces.load_space("smoke")
    assert reuse_actors(SweepContext("s", spec, str(tmp_path), ""))  # one worker: in the trial actor
    # a Ray Train trial's actor owns the Train controller (and its placement group): it must go
    assert not reuse_actors(SweepContext("s", dataclasses.replace(spec, workers=2), str(tmp_path), ""))
    assert not reuse_actors(SweepContext("s", spec, "s3://bucket/sweeps/s", ""))  # a URI storage: Ray Train
    root = tmp_path / "s1"
    root.mkdir()
    _, rdb = open_study_storage(str(root), None)
    for space, expected in ((spec, True), (dataclasses.replace(spec, workers=2), False)):
        tuner = build_tuner(SweepContext("s1", space, str(root), str(root / "train")), rdb, 1, resume=False,
                            verbose=0, callbacks=[])
        assert tuner._local_tuner._tune_config.reuse_actors is expected


def test_the_tuner_is_built_without_starting_ray(tmp_path):
    import ray

    root = tmp_path / "s1"
    root.mkdir()
    _, rdb = open_study_storage(str(root), None)
    ctx = SweepContext("s1", spaces.load_space("smoke"), str(root), str(root / "train"))
    tuner = build_tuner(ctx, rdb, 2, resume=False, verbose=0, callbacks=[])
    assert isinstance(tuner, tune.Tuner) and not ray.is_initialized()


def test_the_reporter_shows_the_searched_values():
    search = progress_reporter(spaces.load_space("smoke"), 3)
    assert "temperature" in search._parameter_columns
    grid = progress_reporter(grid_spec(), 6)
    assert grid._parameter_columns["cell/seed"] == "seed"


def test_tune_s_metric_check_is_off_only_while_a_sparse_objective_runs(monkeypatch):
    monkeypatch.delenv(STRICT_METRIC_ENV, raising=False)
    smoke = spaces.load_space("smoke")
    with objective_checking(smoke):
        assert STRICT_METRIC_ENV not in os.environ
    sparse = dataclasses.replace(smoke, base={**smoke.base, "knn_every": 2})
    with objective_checking(sparse):
        assert os.environ[STRICT_METRIC_ENV] == "1"
    assert STRICT_METRIC_ENV not in os.environ
    monkeypatch.setenv(STRICT_METRIC_ENV, "0")
    try:
        with objective_checking(sparse):
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert os.environ[STRICT_METRIC_ENV] == "0"
