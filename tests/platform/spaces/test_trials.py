"""From a spec to trial configs: grid cells x seeds, the validated TrainConfig, ASHA rungs."""

from __future__ import annotations

import dataclasses

import pytest

from leoclr_platform import spaces as S
from leoclr_platform.spaces import SpaceError, load_space


def test_table8_grid_is_four_strategies_by_three_seeds():
    spec = load_space("table8", check_data=False)
    cells = S.grid_configs(spec)
    assert spec.total_trials() == len(cells) == 12
    assert sorted({c["attraction_strategy"] for c in cells}) == sorted(
        ["leoclr", "leoclr_random_original", "attract_all", "moco_v2"])
    for strategy in {c["attraction_strategy"] for c in cells}:
        assert sorted(c["seed"] for c in cells if c["attraction_strategy"] == strategy) == [0, 1, 2]
    assert [c["seed"] for c in cells[:4]] == [0, 0, 0, 0]  # seeds are the outer loop
    assert S.sample_configs(spec, 3) == cells[:3]


def test_mechanism_grid_multiplies_queue_size_only_for_momentum():
    spec = load_space("mechanism", check_data=False)
    cells = S.grid_configs(spec)
    assert spec.total_trials() == len(cells) == (2 * 2 + 2) * 3
    for c in cells:
        assert ("queue_size" in c) == (c["mechanism"] == "momentum")
        S.trial_config(spec, c)
    assert len({tuple(sorted(c.items())) for c in cells}) == len(cells)


def test_grid_configs_refuses_a_search_space():
    with pytest.raises(SpaceError, match=r"^demo\.yaml: mode: grid_configs needs mode grid"):
        S.grid_configs(load_space("demo"))


def test_trial_config_errors_name_the_file():
    spec = load_space("demo")
    with pytest.raises(SpaceError, match=r"^demo\.yaml: temperature=-1\.0: must be a finite number > 0"):
        S.trial_config(spec, {"temperature": -1.0})


@pytest.mark.parametrize("max_epochs, grace, rf", [(2, 1, 2), (3, 2, 2), (10, 1, 3), (200, 20, 3), (30, 2, 2.5),
                                                   (9, 3, 3), (8, 1, 2)])
def test_asha_rungs_are_the_epochs_rays_scheduler_judges_at(max_epochs, grace, rf):
    """asha_rungs() against Ray's own AsyncHyperBandScheduler, configured as sweep/tuner.py does."""
    from ray.tune.schedulers import ASHAScheduler

    spec = dataclasses.replace(S.load_space("smoke"), max_epochs=max_epochs, grace_period=grace,
                               reduction_factor=rf)
    scheduler = ASHAScheduler(time_attr="epoch", metric="val_knn_top1", mode="max", max_t=max_epochs + 1,
                              grace_period=grace, reduction_factor=rf)
    (bracket,) = scheduler._brackets
    # the first whole epoch at or past each milestone, if a trial can reach it
    expected = sorted({next(e for e in range(1, max_epochs + 2) if e >= m) for m, _ in bracket._rungs} - {max_epochs + 1})
    assert S.asha_rungs(spec) == expected
    if (max_epochs, grace, rf) == (200, 20, 3):
        assert expected == [20, 60, 180]  # hand computation: 20 * 3**k below 201


def test_a_search_with_knn_every_evaluates_at_the_rungs_and_the_last_epoch():
    spec = dataclasses.replace(S.load_space("smoke"), max_epochs=12, grace_period=2, reduction_factor=2,
                               base={**S.load_space("smoke").base, "knn_every": 5})
    S.validate_space(spec)
    cfg = S.trial_config(spec, {"attraction_strategy": "moco_v2", "temperature": 0.2, "key_momentum": 0.99})
    assert cfg.knn_epochs == (2, 4, 8)  # rungs 2, 4, 8 (16 is past the last epoch)
    evaluated = [e for e in range(1, 13) if e % cfg.knn_every == 0 or e == cfg.epochs or e in cfg.knn_epochs]
    assert evaluated == [2, 4, 5, 8, 10, 12]
    grid = dataclasses.replace(spec, mode="grid", params=[S.ParamSpec("attraction_strategy", "grid",
                                                                           ["moco_v2", "leoclr"])])
    assert S.trial_config(grid, {"attraction_strategy": "leoclr"}).knn_epochs == ()  # nothing to judge
