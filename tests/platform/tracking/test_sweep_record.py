"""The parent run's record: one function for the live sweep and `leoclr sync`."""

from __future__ import annotations

import dataclasses

from leoclr_platform import spaces, tracking
from platform_fakes import smoke_record


def test_a_search_records_its_budget_resources_seeds_and_asha_settings():
    spec, meta, record = smoke_record()
    assert record.params == {
        "space": "smoke", "mode": "search", "objective": "val_knn_top1 (max)", "trials": 3, "max_epochs": 2,
        "seeds": [0], "searched": ["attraction_strategy", "temperature", "key_momentum", "enqueue"],
        "workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 0, "results": "/tmp/runs/s1",
        "grace_period": 1, "reduction_factor": 2}
    assert record.tags["mode"] == "search" and record.tags["objective"] == "val_knn_top1"
    assert record.tags["hardware.cluster"] == "4 CPU, 0 GPU" and record.tags["git_commit"]
    assert record.space_file == "smoke.yaml" and record.space_text == spec.text
    assert "space_text" not in record.meta and record.meta["name"] == "s1"


def test_a_grid_has_no_asha_settings():
    _, _, record = smoke_record(mode="grid", params=[spaces.ParamSpec("attraction_strategy", "grid",
                                                                      ["leoclr", "moco_v2"])])
    assert "grace_period" not in record.params and record.params["trials"] == 2


def test_the_environment_comes_from_sweep_json_not_from_the_machine_that_syncs():
    spec, meta, record = smoke_record()
    meta = {**meta, "provenance": {**meta["provenance"], "git_commit": "then"},
            "hardware": {**meta["hardware"], "hardware.driver": "the sweep's driver"}}
    again = tracking.sweep_record(spec, meta, "/tmp/runs/s1")
    assert again.tags["git_commit"] == "then" and again.tags["hardware.driver"] == "the sweep's driver"
    # a sweep.json from before the environment was kept: this machine's, measured now
    old = {k: v for k, v in meta.items() if k not in ("provenance", "hardware")}
    assert tracking.sweep_record(spec, old, "/tmp/runs/s1").tags["hardware.per_trial"] == \
        "1 worker(s) x (1 CPU, 0 GPU)"
    assert dataclasses.replace(record) == record  # a frozen value
