"""OptunaSearch that survives a restored sweep.

Its own module because Tune pickles the searcher (the class must be importable by name) and
importing it pulls in Ray: the rest of the platform imports it only when a search is built.
"""

from __future__ import annotations

import optuna
from ray.tune.search.optuna import OptunaSearch

from leoclr_platform.sweep.compat import optuna_trial_of


class SafeOptunaSearch(OptunaSearch):
    """Tune's saved searcher state lags the study in the database by a few seconds, so after a
    driver is killed a restored searcher may report to Optuna trials that the database already
    marks finished (UpdateFinishedTrialError), and `training_iteration` restarts at 1 after a
    restore. Report intermediate values by our own `epoch` and skip what is already recorded.
    """

    def on_trial_result(self, trial_id, result):
        ot_trial = optuna_trial_of(self, trial_id)
        value = result.get(self.metric)
        if ot_trial is None or value is None:
            return
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        try:
            if step not in recorded_steps(ot_trial):
                ot_trial.report(value, step)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass


def recorded_steps(ot_trial: optuna.Trial) -> dict[int, float]:
    """The intermediate values the study's storage holds for a live trial (public storage API:
    the trial is found by its study's name and its number)."""
    storage = ot_trial.storage
    study_id = storage.get_study_id_from_name(ot_trial.study.study_name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, ot_trial.number)
    return storage.get_trial(trial_id).intermediate_values
