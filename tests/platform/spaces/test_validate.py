"""Validation: every bad file fails before any compute, naming the file, the key path and the
reason; the corner checks."""

from __future__ import annotations

import copy
import dataclasses

import pytest

from leoclr_platform import spaces as S
from leoclr_platform.spaces import SpaceError, corners, load_space
from space_files import write

GOOD = {
    "name": "bad",
    "mode": "search",
    "base": {"dataset": "digits", "backbone": "small_cnn", "batch_size": 64, "queue_size": 256},
    "space": {
        "attraction_strategy": {"choice": ["leoclr", "moco_v2"]},
        "temperature": {"loguniform": [0.05, 0.5]},
        "key_momentum": {"one_minus_log": [0.9, 0.99]},
    },
    "objective": {"metric": "val_knn_top1", "mode": "max"},
    "budget": {"trials": 4, "max_epochs": 2, "grace_period": 1, "reduction_factor": 2},
    "resources": {"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 0},
    "seeds": [0],
}


def edit(fn):
    data = copy.deepcopy(GOOD)
    fn(data)
    return data


def _set(path: str, value):
    def apply(d):
        *parents, last = path.split(".")
        for p in parents:
            d = d.setdefault(p, {})
        d[last] = value
    return apply


def _del(path: str):
    def apply(d):
        *parents, last = path.split(".")
        for p in parents:
            d = d[p]
        del d[last]
    return apply


def _both(*fns):
    def apply(d):
        for fn in fns:
            fn(d)
    return apply


BAD = [
    ("yaml-syntax", "space:\n  temperature: {loguniform: [0.05, 0.5]\nseeds: [0]\n", False,
     "malformed YAML: line", "expected ','"),
    ("yaml-duplicate-key", "space:\n  lr: {uniform: [0.01, 0.1]}\n  lr: {uniform: [0.02, 0.1]}\n", False,
     "malformed YAML: line 3", "duplicate key 'lr'"),
    ("top-level-not-mapping", "- lr\n- temperature\n", False, "(top level)", "must be a mapping"),
    ("unknown-top-level", edit(_set("spaces", {})), False, "spaces", "did you mean 'space'"),
    ("unknown-budget-key", edit(_set("budget.trails", 3)), False, "budget.trails",
     "did you mean 'trials'"),
    ("unknown-objective-key", edit(_set("objective.direction", "max")), False,
     "objective.direction", "unknown key"),
    ("unknown-resources-key", edit(_set("resources.gpus", 1)), False, "resources.gpus",
     "did you mean 'gpus_per_worker'"),
    ("section-wrong-type", edit(_set("budget", [4, 2])), False, "budget", "must be a mapping"),
    ("unknown-base-key", edit(_set("base.batchsize", 64)), False, "base.batchsize",
     "did you mean 'batch_size'"),
    # the config's did-you-mean (trainables.validation): a prefix beats difflib's 'amp'
    ("unknown-base-key-prefix", edit(_set("base.warmup", 1)), False, "base.warmup",
     "did you mean 'warmup_epochs'"),
    ("base-wrong-type", edit(_set("base.lr", "fast")), False, "base.lr", "expected a number"),
    ("base-yaml-bool", "base: {amp: off}\nspace: {lr: {uniform: [0.01, 0.1]}}\nbudget: {trials: 2}\n",
     False, "base.amp", "quote the value"),
    ("base-seed", edit(_set("base.seed", 3)), False, "base.seed", "seeds"),
    ("space-unknown-key", edit(_set("space.temprature", {"uniform": [0.1, 0.2]})), False,
     "space.temprature", "did you mean 'temperature'"),
    ("space-also-in-base", edit(_set("base.temperature", 0.2)), False, "space.temperature",
     "also fixed in base"),
    ("space-epochs", edit(_set("space.epochs", {"choice": [1, 2]})), False, "space.epochs",
     "budget.max_epochs"),
    ("space-not-a-mapping", edit(_set("space.lr", [0.01, 0.1])), False, "space.lr",
     "did you mean {choice:"),
    ("unknown-distribution", edit(_set("space.temperature", {"normal": [0.1, 0.2]})), False,
     "space.temperature.normal", "unknown distribution"),
    ("two-distributions", edit(_set("space.temperature", {"uniform": [0.1, 0.2], "loguniform": [0.1, 0.2]})),
     False, "space.temperature", "exactly one distribution"),
    ("log-low-not-positive", edit(_set("space.temperature", {"loguniform": [-1, 0.5]})), False,
     "space.temperature.loguniform", "low must be > 0, got -1"),
    ("low-not-below-high", edit(_set("space.temperature", {"uniform": [0.5, 0.05]})), False,
     "space.temperature.uniform", "low must be < high"),
    ("range-not-a-pair", edit(_set("space.temperature", {"uniform": [0.1]})), False,
     "space.temperature.uniform", "needs [low, high]"),
    ("one-minus-log-outside", edit(_set("space.key_momentum", {"one_minus_log": [0.9, 1.0]})), False,
     "space.key_momentum.one_minus_log", "inside (0, 1)"),
    ("float-range-on-int-key", edit(_set("space.knn_k", {"uniform": [10, 200]})), False,
     "space.knn_k.uniform", "is an integer"),
    ("int-step-not-dividing", edit(_set("space.knn_k", {"int": [10, 200], "step": 25})), False,
     "space.knn_k.step", "multiple of step 25"),
    ("step-with-log", edit(_set("space.knn_k", {"log_int": [10, 200], "step": 10})), False,
     "space.knn_k.step", "only applies to int and uniform"),
    ("single-choice", edit(_set("space.attraction_strategy", {"choice": ["leoclr"]})), False,
     "space.attraction_strategy.choice", "at least 2 values"),
    ("choice-rejected-by-config", edit(_set("space.attraction_strategy", {"choice": ["leoclr", "simclr"]})),
     False, "space.attraction_strategy.choice", "attraction_strategy='simclr': must be one of"),
    ("choice-conflicts-with-base", edit(_both(_set("base.symmetric", True))), False,
     "space.attraction_strategy.choice", "with attraction_strategy='leoclr': symmetric=True: only applies"),
    ("range-extreme-rejected", edit(_set("space.temperature", {"uniform": [0.0, 0.5]})), False,
     "space.temperature.uniform", "temperature=0.0: must be a finite number > 0"),
    ("queue-below-largest-batch", edit(_both(_del("base.batch_size"), _del("base.queue_size"),
                                             _set("space.batch_size", {"choice": [64, 512]}),
                                             _set("space.queue_size", {"log_int": [256, 4096]}))),
     False, "space.queue_size.log_int", "queue_size=256: must be >= the global batch_size (512)"),
    ("batch-not-divisible-by-workers", edit(_set("resources.workers", 3)), False, "base.batch_size",
     "divisible by resources.workers=3"),
    ("batch-not-divisible-by-bn-splits", edit(_set("base.bn_splits", 5)), False, "base.batch_size",
     "divisible by bn_splits=5"),
    ("when-refers-to-later-key", edit(_set("space", {
        "enqueue": {"choice": ["both", "first"], "when": {"attraction_strategy": ["leoclr"]}},
        "attraction_strategy": {"choice": ["leoclr", "moco_v2"]}})), False,
     "space.enqueue.when.attraction_strategy", "searched later in space"),
    ("when-never-true", edit(_both(_del("base.queue_size"),
                                   _set("space.queue_size", {"log_int": [256, 1024],
                                                             "when": {"mechanism": ["end_to_end"]}}))), False,
     "space.queue_size.when.mechanism", "would never be asked"),
    ("when-typo", edit(_set("space.enqueue", {"choice": ["both", "first"],
                                              "when": {"attraction_strategy": ["leoclr_randm"]}})), False,
     "space.enqueue.when.attraction_strategy", "did you mean 'leoclr_random_original'"),
    ("grid-with-range", edit(_set("mode", "grid")), False, "space.temperature.loguniform",
     "grid mode needs a list of values"),
    ("bad-mode", edit(_set("mode", "random")), False, "mode", "must be one of search, grid"),
    ("search-without-space", edit(_del("space")), False, "space", "at least one searched key"),
    ("unknown-metric", edit(_set("objective.metric", "accuracy")), False, "objective.metric",
     "val_knn_top1, val_knn_top5, rankme, loss"),
    ("bad-metric-mode", edit(_set("objective.mode", "maximize")), False, "objective.mode",
     "must be max or min"),
    ("loss-maximised", edit(_set("objective", {"metric": "loss", "mode": "max"})), False,
     "objective.mode", "loss should be minimised"),
    ("trials-zero", edit(_set("budget.trials", 0)), False, "budget.trials", "integer >= 1"),
    ("reduction-factor-one", edit(_set("budget.reduction_factor", 1)), False,
     "budget.reduction_factor", ">= 2"),
    ("grace-beyond-max-epochs", edit(_set("budget.grace_period", 5)), False, "budget.grace_period",
     "must be <= budget.max_epochs (2)"),
    ("epochs-disagree", edit(_set("base.epochs", 3)), False, "budget.max_epochs",
     "disagrees with base.epochs"),
    ("knn-every-searched", edit(_set("space.knn_every", {"choice": [1, 2]})), False, "space.knn_every",
     "cannot be searched when the objective is val_knn_top1"),
    ("startup-trials-zero", edit(_set("budget.startup_trials", 0)), False, "budget.startup_trials",
     "must be an integer >= 1, got 0"),
    ("workers-zero", edit(_set("resources.workers", 0)), False, "resources.workers", "integer >= 1"),
    ("launcher-unknown", edit(_set("resources.launcher", "ray")), False, "resources.launcher",
     "must be one of auto, ray_train, got 'ray'"),
    ("cpus-zero", edit(_set("resources.cpus_per_worker", 0)), False, "resources.cpus_per_worker", "> 0"),
    ("gpus-on-cpu-device", edit(_both(_set("base.device", "cpu"), _set("resources.gpus_per_worker", 1))),
     False, "resources.gpus_per_worker", "base.device is cpu"),
    ("seeds-empty", edit(_set("seeds", [])), False, "seeds", "non-empty list"),
    ("seeds-not-ints", edit(_set("seeds", [0, "1"])), False, "seeds[1]", "must be an integer"),
    ("bad-name", edit(_set("name", "my sweep")), False, "name", "must be a word"),
    ("data-root-missing", edit(_both(_set("base.dataset", "cifar10"),
                                     _set("base.data_root", "/nonexistent/cifar10"))), True,
     "base.data_root", "/nonexistent/cifar10 does not exist"),
    ("photo-patches-option", edit(_both(_set("base.dataset", "photo_patches"),
                                        _set("base.photo_patches", {"train_per_klass": 8}))), True,
     "base.photo_patches", "unknown key"),
]


def test_bad_table_is_large_and_ids_unique():
    assert len(BAD) >= 15
    assert len({case[0] for case in BAD}) == len(BAD)


@pytest.mark.parametrize("contents,check_data,key_path,reason", [c[1:] for c in BAD],
                         ids=[c[0] for c in BAD])
def test_bad_space_fails_naming_file_key_and_reason(tmp_path, contents, check_data, key_path, reason):
    path = write(tmp_path, contents, "bad_space.yaml")
    with pytest.raises(SpaceError) as err:
        load_space(path, check_data=check_data)
    msg = str(err.value)
    assert msg.startswith(f"{path}: {key_path}"), msg
    assert reason in msg, msg


def test_the_good_template_is_good(tmp_path):
    spec = load_space(write(tmp_path, GOOD))
    assert spec.total_trials() == 4 and len(S.sample_configs(spec, 4)) == 4


def test_too_many_corners_still_checks_queue_against_batch(tmp_path, monkeypatch):
    monkeypatch.setattr(corners, "CORNER_LIMIT", 1)
    data = {"base": {"dataset": "digits"},
            "space": {"batch_size": {"choice": [64, 512]}, "queue_size": {"log_int": [256, 4096]}},
            "budget": {"trials": 2, "max_epochs": 1}}
    with pytest.raises(SpaceError, match=r"space\.queue_size\.log_int: the smallest queue_size .* \(256\)"):
        load_space(write(tmp_path, data))


def test_validate_space_rechecks_a_spec_changed_in_code():
    spec = load_space("demo")
    S.validate_space(dataclasses.replace(spec, trials=2))
    with pytest.raises(SpaceError, match=r"^demo\.yaml: budget\.trials: must be an integer >= 1"):
        S.validate_space(dataclasses.replace(spec, trials=0))


def test_a_space_error_carries_file_key_and_reason_as_fields(tmp_path):
    """Callers read the fields; the message is the one line they make."""
    path = write(tmp_path, edit(_set("budget.trials", 0)), "bad_space.yaml")
    with pytest.raises(SpaceError) as err:
        load_space(path)
    exc = err.value
    assert (exc.source, exc.key, exc.reason) == (str(path), "budget.trials", "must be an integer >= 1, got 0")
    assert str(exc) == f"{path}: budget.trials: must be an integer >= 1, got 0"
    assert isinstance(exc, ValueError)  # an InputError, like the engine's ConfigError


def test_a_trial_config_error_keeps_the_engine_s_fields():
    spec = load_space("demo")
    with pytest.raises(SpaceError) as err:
        S.trial_config(spec, {"temperature": -1.0})
    assert (err.value.source, err.value.key, err.value.value) == ("demo.yaml", "temperature", -1.0)


def test_a_corner_is_blamed_on_the_searched_key_that_breaks_it():
    spec = dataclasses.replace(load_space("smoke"), params=[
        S.ParamSpec("batch_size", "choice", [32, 128])])  # smoke's queue_size is 64
    problem = corners.config_problem(spec, {"batch_size": 128})
    assert problem[0] == "queue_size"
    error = corners.blame(spec, {"batch_size": 128}, problem)
    assert error.key == "space.batch_size.choice" and "with batch_size=128" in str(error)
    assert corners.config_problem(spec, {"batch_size": 32}) is None
