"""Where a sweep's files live."""

from __future__ import annotations

import shutil
from pathlib import Path

from leoclr_platform.sweep.paths import default_storage, latest_checkpoint, sweep_root, trial_id_from_path


def test_the_storage_root_is_runs_here_or_the_environment_s(tmp_path, monkeypatch):
    monkeypatch.delenv("LEOCLR_STORAGE", raising=False)
    monkeypatch.delenv("RAY_JOB_ID", raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_storage() == tmp_path / "runs"
    monkeypatch.setenv("LEOCLR_STORAGE", str(tmp_path / "elsewhere"))
    assert sweep_root(None, "s1") == str(tmp_path / "elsewhere" / "s1")
    assert sweep_root("s3://bucket/runs", "s1") == "s3://bucket/runs/s1"
    monkeypatch.delenv("LEOCLR_STORAGE")
    monkeypatch.setenv("RAY_JOB_ID", "02000000")  # inside `ray job submit`: a temporary working dir
    assert default_storage() == Path.home() / "leoclr" / "runs"


def test_the_latest_checkpoint_is_the_highest_epoch(tmp_path, tiny_run):
    assert latest_checkpoint(str(tmp_path), "t1") is None
    shutil.copytree(tiny_run, tmp_path / "train" / "trial_t1")
    (tmp_path / "train" / "trial_t1" / ".tmp_epoch_0003_x").mkdir()  # a save cut by a kill
    assert latest_checkpoint(str(tmp_path), "t1") == str(tmp_path / "train" / "trial_t1" / "epoch_0002")


def test_trial_ids_are_read_from_tune_s_folder_names():
    assert trial_id_from_path("/r/train_driver_fn_3f2a1_00002_2_temperature=0.2_2026-01-01") == "3f2a1_00002"
    assert trial_id_from_path("/r/train_driver_fn_3f2a1b2c_1_x") == "3f2a1b2c"
    assert trial_id_from_path("/r/odd") == "odd"
