"""RecordingASHA: Ray Tune's ASHA deciding on fake trials (the scheduler itself is real), each
stop kept with the rung's cutoff for the stopped run's description."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from leoclr_platform.sweep.asha import RecordingASHA
from leoclr_platform.sweep.results import stop_reason


@dataclass
class Trial:
    trial_id: str


@pytest.mark.parametrize("mode", ["max", "min"])
def test_a_stopped_trial_keeps_its_value_and_the_rung_cutoff(mode):
    asha = RecordingASHA(time_attr="epoch", max_t=5, grace_period=1, reduction_factor=2)
    asha.set_search_properties("val_knn_top1", mode)
    sign = 1 if mode == "max" else -1
    trials = [Trial(f"asha-{mode}-{i}") for i in range(3)]
    for trial in trials:
        asha.on_trial_add(None, trial)
    values = [40.0, 44.0, 39.8]  # the third is below the median of the first two (42) when maximising
    actions = [asha.on_trial_result(None, t, {"epoch": 1, "val_knn_top1": sign * v}) for t, v in zip(trials, values)]
    assert actions[:2] == ["CONTINUE", "CONTINUE"] and actions[2] == "STOP"
    decision = stop_reason(trials[2].trial_id)
    assert decision == {"epoch": 1, "metric": "val_knn_top1", "mode": mode, "value": sign * 39.8, "rung": 1.0,
                        "cutoff": pytest.approx(sign * 42.0)}
    assert stop_reason(trials[0].trial_id) is None
