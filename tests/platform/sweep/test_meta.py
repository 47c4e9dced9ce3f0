"""sweep.json: the spec that really ran is rebuilt from it (resume, sync)."""

from __future__ import annotations

import dataclasses

import pytest

from leoclr_platform import spaces
from leoclr_platform.errors import SweepError
from leoclr_platform.sweep.meta import new_meta, read_meta, resumed_spec, spec_changes, spec_from_meta, write_meta


def meta_of(spec, name="s1"):
    return new_meta(spec, name, study_url="sqlite:///x/optuna.db", study_storage_arg=None,
                    tracking_uri=None, experiment="leoclr/smoke", launcher="in_trial")


def test_the_spec_that_ran_comes_back_from_sweep_json(tmp_path):
    smoke = spaces.load_space("smoke")
    changed = dataclasses.replace(smoke, trials=7, max_epochs=5, seeds=[3],
                                  params=[*smoke.params, spaces.ParamSpec("lr", "loguniform", [0.01, 0.1])])
    assert set(spec_changes(changed)) == {"trials", "max_epochs", "seeds", "params"}
    assert spec_changes(smoke) == {}
    write_meta(str(tmp_path), meta_of(changed))
    again = spec_from_meta(read_meta(str(tmp_path)))
    for field in ("trials", "max_epochs", "seeds", "params", "base", "metric", "path", "text"):
        assert getattr(again, field) == getattr(changed, field), field


def test_a_missing_sweep_json_names_the_action_and_the_folder(tmp_path):
    with pytest.raises(SweepError) as err:
        read_meta(str(tmp_path / "nothing"), action="sync")
    assert str(err.value) == (f"no sweep to sync at {tmp_path / 'nothing'} (sweep.json not found); "
                              "check the name and --storage")
    assert err.value.source == str(tmp_path / "nothing")


def test_a_sweep_started_before_in_trial_runs_resumes_with_ray_train():
    spec = spaces.load_space("smoke")
    meta = {"space_text": spec.text, "space_source": spec.label, "spec_changes": {}}
    assert resumed_spec(meta).launcher == "ray_train"  # old sweep.json: no "launcher"
    assert resumed_spec({**meta, "launcher": "in_trial"}).launcher == "auto"
