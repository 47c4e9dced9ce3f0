"""The Optuna study's storage: opened before compute, zombies closed after a driver was killed."""

from __future__ import annotations

import optuna
import pytest

from leoclr_platform.errors import SweepError
from leoclr_platform.sweep.study import fail_zombie_trials, open_study_storage


def test_the_study_lives_next_to_the_results_by_default(tmp_path):
    url, rdb = open_study_storage(str(tmp_path), None)
    assert url == f"sqlite:///{tmp_path / 'optuna.db'}"
    assert isinstance(rdb, optuna.storages.RDBStorage)


def test_a_bad_study_storage_names_the_flag():
    with pytest.raises(SweepError) as err:
        open_study_storage("/tmp/x", "notaurl")
    assert str(err.value).startswith("--study-storage 'notaurl': cannot open the Optuna study storage: ")
    assert (err.value.key, err.value.value) == ("--study-storage", "notaurl")
    with pytest.raises(SweepError, match=r"storage 's3://b/r' is remote: pass --study-storage"):
        open_study_storage("s3://b/r", None)


def test_trials_left_running_by_a_killed_driver_are_failed(tmp_path):
    _, rdb = open_study_storage(str(tmp_path), None)
    study = optuna.create_study(study_name="s", storage=rdb, direction="maximize")
    done = study.ask()
    study.tell(done, 1.0)
    study.ask()
    study.ask()  # two asked, never told: the driver died
    assert fail_zombie_trials(rdb, "s") == 2
    states = [t.state for t in optuna.load_study(study_name="s", storage=rdb).trials]
    assert states == [optuna.trial.TrialState.COMPLETE] + [optuna.trial.TrialState.FAIL] * 2
    assert fail_zombie_trials(rdb, "s") == 0
