"""run_sweep refuses what it can before Ray starts: an existing name, a missing sweep to
resume, a trial bigger than this machine, an unwritable storage path."""

from __future__ import annotations

import dataclasses

import pytest
import ray

from leoclr_platform import spaces
from leoclr_platform.errors import SweepError
from leoclr_platform.sweep import SweepRequest, run_sweep


@pytest.fixture(autouse=True)
def no_ray(monkeypatch):
    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("ray.init was called"))


def test_an_existing_name_and_a_missing_resume_are_refused(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "sweep.json").write_text("{}")
    with pytest.raises(SweepError, match=r"^sweep 'taken' already exists under .*: use --resume taken") as err:
        run_sweep(SweepRequest("smoke", name="taken", storage=str(tmp_path)))
    assert (err.value.key, err.value.value) == ("--name", "taken")
    with pytest.raises(SweepError, match="no sweep to resume"):
        run_sweep(SweepRequest(name="nothing", storage=str(tmp_path), resume=True))
    with pytest.raises(SweepError, match="^--resume needs the sweep name$"):
        run_sweep(SweepRequest(resume=True, storage=str(tmp_path)))


def test_impossible_resources_are_refused_before_anything_is_written(tmp_path):
    spec = dataclasses.replace(spaces.load_space("smoke"), workers=2, cpus_per_worker=3)
    with pytest.raises(SweepError, match=r"resources: one trial needs 2 worker\(s\) .* = 6 CPU.*cluster has 4 CPU"):
        run_sweep(SweepRequest(spec, name="big", storage=str(tmp_path), num_cpus=4, track=False))
    assert not (tmp_path / "big").exists()


def test_an_unwritable_storage_path_is_refused(tmp_path):
    (tmp_path / "blocker").write_text("a file")
    with pytest.raises(SweepError, match=r"^storage path '.*/blocker/s1' is not writable: "):
        run_sweep(SweepRequest("smoke", name="s1", storage=str(tmp_path / "blocker"), num_cpus=4, track=False))
