"""Helpers of the search-space tests: the shipped names, writing a space file, a small study."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import yaml

from leoclr_platform import spaces as S

REPO = Path(__file__).resolve().parents[3]
SHIPPED = ["augmentation_removal", "demo", "leoclr_ablation", "mechanism", "smoke", "table8"]
LOCAL = {"demo", "smoke"}  # the others point at a cluster's /data/cifar10 (or /data/stl10)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def write(tmp_path: Path, data, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def run_study(spec, n_trials: int, seed: int = 0) -> optuna.Study:
    """Drive define_by_run through an in-memory TPE study with a deterministic fake objective."""
    fn = S.define_by_run(spec)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))

    def objective(trial):
        constants = fn(trial)
        trial.set_user_attr("constants", constants)
        cfg = S.trial_config(spec, S.decode_sampled(spec, {**trial.params, **constants}))
        return -abs(math.log(cfg.temperature / 0.2)) + (cfg.attraction_strategy == "leoclr")

    study.optimize(objective, n_trials=n_trials)
    return study
