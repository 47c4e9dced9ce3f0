"""OptunaSearch that survives a restored sweep (its own module: Tune pickles the searcher, so
the class must be importable; importing it pulls in Ray, so sweep.py imports it lazily)."""

from __future__ import annotations

import optuna
from ray.tune.search.optuna import OptunaSearch


class SafeOptunaSearch(OptunaSearch):
    """Tune's saved searcher state lags the study in the database by a few seconds, so after a
    driver is killed a restored searcher may report to Optuna trials that the database already
    marks finished (UpdateFinishedTrialError), and `training_iteration` restarts at 1 after a
    restore. Report intermediate values by our own `epoch` and skip what is already recorded.
    """

    def on_trial_result(self, trial_id, result):
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        value = result.get(self.metric)
        if value is None:
            return
        try:
            recorded = ot_trial.storage.get_trial(ot_trial._trial_id).intermediate_values
            if step not in recorded:
                ot_trial.report(value, step)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass
