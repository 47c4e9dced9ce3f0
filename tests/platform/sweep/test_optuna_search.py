"""SafeOptunaSearch with a real Optuna study in SQLite (no Ray runtime): intermediate values by
our own `epoch`, nothing recorded twice, nothing reported to a trial the study already closed."""

from __future__ import annotations

import optuna

from leoclr_platform import spaces
from leoclr_platform.sweep.compat import optuna_trial_of
from leoclr_platform.sweep.optuna_search import SafeOptunaSearch, recorded_steps
from leoclr_platform.sweep.study import open_study_storage


def searcher(tmp_path, name="s1"):
    spec = spaces.load_space("smoke")
    _, rdb = open_study_storage(str(tmp_path), None)
    search = SafeOptunaSearch(space=spaces.define_by_run(spec), metric="val_knn_top1", mode="max",
                              sampler=spaces.make_sampler(spec), storage=rdb, study_name=name)
    return search, rdb


def test_results_are_reported_by_epoch_once(tmp_path):
    search, rdb = searcher(tmp_path)
    config = search.suggest("t1")
    assert {"attraction_strategy", "temperature", "key_momentum__one_minus", "seed"} <= set(config)
    ot_trial = optuna_trial_of(search, "t1")
    search.on_trial_result("t1", {"epoch": 1, "training_iteration": 1, "val_knn_top1": 40.0})
    search.on_trial_result("t1", {"epoch": 1, "training_iteration": 1, "val_knn_top1": 41.0})  # a restored trial
    search.on_trial_result("t1", {"epoch": 2, "training_iteration": 1, "val_knn_top1": 45.0})
    search.on_trial_result("t1", {"epoch": 3, "training_iteration": 3})  # no objective this epoch
    assert recorded_steps(ot_trial) == {1: 40.0, 2: 45.0}
    search.on_trial_complete("t1", {"epoch": 2, "val_knn_top1": 45.0})
    assert optuna_trial_of(search, "t1") is None
    search.on_trial_result("t1", {"epoch": 3, "val_knn_top1": 50.0})  # after the end: ignored
    (trial,) = optuna.load_study(study_name="s1", storage=rdb).trials
    assert trial.state == optuna.trial.TrialState.COMPLETE and trial.value == 45.0
    assert trial.intermediate_values == {1: 40.0, 2: 45.0}


def test_a_trial_the_database_already_closed_is_left_alone(tmp_path):
    """After a driver is killed, the restored searcher may still hold a trial the study marks
    finished: reporting to it must not fail the sweep."""
    search, rdb = searcher(tmp_path)
    search.suggest("t1")
    study = optuna.load_study(study_name="s1", storage=rdb)
    study.tell(optuna_trial_of(search, "t1").number, 1.0)
    search.on_trial_result("t1", {"epoch": 2, "val_knn_top1": 45.0})
    assert study.trials[0].intermediate_values == {}


def test_an_unknown_trial_is_ignored(tmp_path):
    search, _ = searcher(tmp_path)
    search.on_trial_result("never-suggested", {"epoch": 1, "val_knn_top1": 1.0})
