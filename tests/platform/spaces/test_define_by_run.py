"""Optuna define-by-run: conditional parameters, one_minus_log, constants, seeded TPE."""

from __future__ import annotations

import dataclasses
import math
import pickle

import optuna
import pytest

from leoclr_platform import spaces as S
from leoclr_platform.spaces import load_space
from space_files import run_study, write


def test_enqueue_is_only_asked_for_the_leoclr_family():
    spec = load_space("smoke")
    study = run_study(spec, 30)
    strategies = set()
    for trial in study.trials:
        strategy = trial.params["attraction_strategy"]
        strategies.add(strategy)
        assert ("enqueue" in trial.params) == (strategy != "moco_v2"), trial.params
        constants = trial.user_attrs["constants"]
        assert constants["seed"] == spec.seeds[0]
        assert constants["key_momentum"] == pytest.approx(1 - trial.params["key_momentum__one_minus"])
    assert strategies == {"leoclr", "moco_v2"}


def test_queue_size_is_never_asked_for_end_to_end(tmp_path):
    data = {
        "base": {"dataset": "digits", "backbone": "small_cnn", "batch_size": 64},
        "space": {
            "mechanism": {"choice": ["momentum", "end_to_end"]},
            "queue_size": {"log_int": [128, 4096], "when": {"mechanism": ["momentum"]}},
            "temperature": {"loguniform": [0.05, 0.5]},
        },
        "budget": {"trials": 30, "max_epochs": 2},
    }
    spec = load_space(write(tmp_path, data))
    study = run_study(spec, 30)
    seen = set()
    for trial in study.trials:
        mech = trial.params["mechanism"]
        seen.add(mech)
        assert ("queue_size" in trial.params) == (mech == "momentum")
        if mech == "momentum":
            assert 128 <= trial.params["queue_size"] <= 4096
    assert seen == {"momentum", "end_to_end"}


def test_one_minus_log_samples_m_in_range_and_log_uniform_in_one_minus_m():
    spec = load_space("leoclr_ablation", check_data=False)  # key_momentum: [0.99, 0.9999]
    fn = S.define_by_run(spec)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    ms = []
    for _ in range(300):
        trial = study.ask()
        constants = fn(trial)
        m = constants["key_momentum"]
        assert "key_momentum" not in trial.params  # Optuna only sees 1 - m
        assert m == pytest.approx(1 - trial.params["key_momentum__one_minus"])
        assert 0.99 - 1e-12 <= m <= 0.9999 + 1e-12
        ms.append(m)
    # log10(1 - m) uniform on [-4, -2]: half the draws have m > 0.999 (uniform-in-m: ~9 %),
    # and each of the four quarter-decades holds about a quarter of them.
    logs = [math.log10(1 - m) for m in ms]
    assert 0.4 < sum(m > 0.999 for m in ms) / len(ms) < 0.6
    for lo in (-4.0, -3.5, -3.0, -2.5):
        share = sum(lo <= v < lo + 0.5 for v in logs) / len(logs)
        assert 0.17 < share < 0.33, (lo, share)


def test_define_by_run_returns_constants_and_is_picklable():
    spec = load_space("demo")
    fn = pickle.loads(pickle.dumps(S.define_by_run(spec)))  # Tune pickles the searcher state
    trial = optuna.create_study().ask()
    constants = fn(trial)
    assert set(constants) == {"key_momentum", "seed"}
    assert set(trial.params) == {"attraction_strategy", "temperature", "key_momentum__one_minus"}
    decoded = S.decode_sampled(spec, {**trial.params, **constants, "extra_driver_key": 1})
    assert set(decoded) == {"attraction_strategy", "temperature", "key_momentum", "seed"}
    # Without the returned constant, m is rebuilt from the helper.
    rebuilt = S.decode_sampled(spec, trial.params)
    assert rebuilt["key_momentum"] == pytest.approx(constants["key_momentum"])
    cfg = S.trial_config(spec, {**trial.params, **constants})  # raw Tune configs work as well
    assert cfg.key_momentum == pytest.approx(constants["key_momentum"])
    assert cfg.seed == spec.seeds[0] and cfg.epochs == spec.max_epochs
    assert S.trial_config(spec, decoded, seed=11).seed == 11


def test_tpe_sampling_is_reproducible_with_the_same_seed():
    spec = load_space("leoclr_ablation", check_data=False)
    first, again = S.sample_configs(spec, 6), S.sample_configs(spec, 6)
    assert first == again
    other = S.sample_configs(dataclasses.replace(spec, seeds=[1]), 6)
    assert other != first
    # Past TPE's 10 start-up trials too (the model is fitted on the told values).
    smoke = load_space("smoke")
    a = [t.params for t in run_study(smoke, 12).trials]
    b = [t.params for t in run_study(smoke, 12).trials]
    assert a == b


def test_the_sampler_is_multivariate_tpe_with_the_budget_s_startup_trials():
    spec = dataclasses.replace(S.load_space("smoke"), startup_trials=5)
    sampler = S.make_sampler(spec)
    assert isinstance(sampler, optuna.samplers.TPESampler)
    assert sampler._n_startup_trials == 5 and sampler._multivariate is True
    assert S.make_sampler(S.load_space("smoke"))._n_startup_trials == 10  # Optuna's own default
