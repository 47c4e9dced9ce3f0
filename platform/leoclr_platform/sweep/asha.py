"""ASHA that says why it stopped a trial: the rung, its cutoff and the trial's value.

`RecordingASHA` is Ray Tune's ASHAScheduler; each STOP decision is kept in this driver process
(`results.STOP_DECISIONS`, read by `results.stop_reason`)
as {"epoch", "rung", "metric", "mode", "value", "cutoff"}, which the tracking callback turns into
the stopped run's description ("stopped by ASHA at epoch 1 of 2: val_knn_top1 39.8 < rung
cutoff 41.8") and `summarize` writes into the trial's row of summary.json (so `leoclr sync`
says the same). Imports Ray: loaded only when a search sweep builds its Tuner.
"""

from __future__ import annotations

from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from leoclr_platform.sweep.compat import asha_rung_cutoff
from leoclr_platform.sweep.results import STOP_DECISIONS


class RecordingASHA(ASHAScheduler):
    """ASHAScheduler keeping each STOP decision with the rung's cutoff (`results.stop_reason`)."""

    def __init__(self, *, time_attr: str = "epoch", **kwargs):
        super().__init__(time_attr=time_attr, **kwargs)
        self.rung_attr = time_attr
        self.objective_mode = kwargs.get("mode")

    def set_search_properties(self, metric, mode, **spec) -> bool:
        if mode:
            self.objective_mode = mode
        return super().set_search_properties(metric, mode, **spec)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        epoch = result.get(self.rung_attr)
        rung = asha_rung_cutoff(self, trial.trial_id, epoch) if epoch is not None else None
        action = super().on_trial_result(tune_controller, trial, result)
        if action == TrialScheduler.STOP and self.metric in result:
            STOP_DECISIONS[trial.trial_id] = {
                "epoch": epoch, "metric": self.metric, "mode": self.objective_mode or "max",
                "value": float(result[self.metric]), "rung": rung[0] if rung else None,
                "cutoff": rung[1] if rung else None}
        return action
