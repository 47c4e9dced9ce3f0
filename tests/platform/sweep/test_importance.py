"""Parameter importance from a real Optuna study in SQLite with one dominant parameter."""

from __future__ import annotations

import json
import math

import optuna
import pytest

from leoclr_platform.sweep import importance as I

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _study(tmp_path, n: int, *, name: str = "s"):
    """`lr` decides the objective; `temperature` and the one_minus_log momentum barely move it."""
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0))

    def objective(trial):
        lr = trial.suggest_float("lr", 1e-3, 1.0, log=True)
        t = trial.suggest_float("temperature", 0.1, 0.5)
        m = trial.suggest_float("key_momentum__one_minus", 0.01, 0.1, log=True)
        return 50.0 + 20.0 * math.log10(lr) + 0.05 * t + 0.01 * m

    study.optimize(objective, n_trials=n)
    return storage, study


def test_the_dominant_parameter_ranks_first_in_both_methods(tmp_path):
    storage, _ = _study(tmp_path, 30)
    result = I.sweep_importance(storage, "s", "val_knn_top1", seed=0)
    assert result["n_trials"] == 30 and result["metric"] == "val_knn_top1"
    assert result["errors"] == {}
    for method in I.METHODS:
        values = result["methods"][method]
        assert set(values) == {"lr", "temperature", "key_momentum"}  # one_minus_log under its key
        assert max(values, key=values.get) == "lr", (method, values)
        assert values["lr"] > 0.5, (method, values)
        assert sum(values.values()) == pytest.approx(1.0, abs=1e-6)
    metrics = I.importance_metrics(result)
    assert metrics["importance_fanova_lr"] == result["methods"]["fanova"]["lr"]
    assert "importance_ped_anova_key_momentum" in metrics
    written = I.write_importance(result, tmp_path)
    assert [p.name for p in written] == ["importance.json", "importance.png"]
    assert json.loads(written[0].read_text())["methods"]["fanova"]["lr"] == result["methods"]["fanova"]["lr"]
    assert written[1].stat().st_size > 1000


def test_too_few_trials_is_an_error_entry_not_a_crash(tmp_path):
    storage, _ = _study(tmp_path, 1)
    result = I.sweep_importance(storage, "s", "val_knn_top1")
    assert result["n_trials"] == 1 and result["methods"] == {}
    assert set(result["errors"]) == set(I.METHODS)
    assert "needs at least 2 completed trials, the study has 1" in result["errors"]["fanova"]
    assert [p.name for p in I.write_importance(result, tmp_path)] == ["importance.json"]
    missing = I.sweep_importance(storage, "nosuch", "val_knn_top1")
    assert missing["n_trials"] == 0 and "cannot load the study" in missing["errors"]["ped_anova"]
