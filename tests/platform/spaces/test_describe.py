"""`leoclr sweep --dry-run`'s description of a space."""

from __future__ import annotations

import dataclasses

from leoclr_platform.spaces import ParamSpec, describe, load_space
from leoclr_platform.spaces.describe import describe_param


def test_a_search_is_described_with_its_budget_resources_and_keys():
    text = describe(load_space("smoke"))
    assert text.startswith("sweep 'smoke' (search) from ")
    assert "objective: maximise val_knn_top1" in text
    assert "budget: 3 trials (TPE, sampler seed 0, 10 random start-up trials) x up to 2 epochs" in text
    assert "resources per trial: 1 worker(s) x (1 CPU, 0 GPU)" in text
    assert "epochs" in text and "(budget.max_epochs)" in text


def test_a_grid_is_described_as_cells_times_seeds():
    spec = load_space("table8", check_data=False)
    assert "budget: 4 cells x 3 seeds = 12 trials" in describe(spec)


def test_a_parameter_shows_its_range_step_and_condition():
    p = ParamSpec("key_momentum", "one_minus_log", [0.9, 0.99], when={"attraction_strategy": ["leoclr"]})
    assert describe_param(p) == ("one_minus_log [0.9, 0.99]  (1 - m log-uniform in [0.01, 0.1])  "
                                 "when attraction_strategy in [leoclr]")
    assert describe_param(ParamSpec("lr", "uniform", [0.1, 0.5], step=0.1)) == "uniform [0.1, 0.5] step 0.1"


def test_a_loss_objective_carries_the_fairness_note():
    spec = dataclasses.replace(load_space("smoke"), metric="loss", metric_mode="min")
    assert "comparing trials by loss is only fair" in describe(spec)
