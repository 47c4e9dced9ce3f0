"""Search spaces: loading, validation (bad files fail early with file + key path + reason),
conditional define-by-run sampling, one_minus_log, grid enumeration, seeded reproducibility."""

from __future__ import annotations

import copy
import dataclasses
import math
import pickle
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from leoclr_platform import spaces as S
from leoclr_platform.spaces import SpaceError, load_space
from trainables.config import TrainConfig

REPO = Path(__file__).resolve().parents[2]
SHIPPED = ["demo", "leoclr_ablation", "mechanism", "smoke", "table8"]
LOCAL = {"demo", "smoke"}  # the others point at a cluster's /data/cifar10

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


# ------------------------------------------------------------------------------------------------
# Shipped spaces
# ------------------------------------------------------------------------------------------------
def test_named_spaces_lists_the_shipped_files():
    assert set(SHIPPED) <= set(S.named_spaces())


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_space_loads_and_yields_valid_configs(name):
    spec = load_space(name, check_data=name in LOCAL)
    assert spec.name == name and spec.text.lstrip().startswith("#")  # header comment
    assert spec.description
    configs = S.grid_configs(spec) if spec.mode == "grid" else S.sample_configs(spec, 8)
    assert configs
    for values in configs:
        cfg = S.trial_config(spec, values)
        assert isinstance(cfg, TrainConfig)
        assert cfg.epochs == spec.max_epochs
        for key, value in spec.base.items():
            if key not in ("crop_scale",):
                assert getattr(cfg, key) == value
    assert spec.total_trials() >= 1
    text = S.describe(spec)
    assert spec.name in text and spec.metric in text
    for p in spec.params:
        assert p.name in text


def test_cluster_spaces_refuse_a_missing_data_root():
    with pytest.raises(SpaceError, match=r"^table8\.yaml: base\.data_root: /data/cifar10 does not exist"):
        load_space("table8")


def test_demo_and_smoke_shapes():
    demo = load_space("demo")
    assert demo.mode == "search" and demo.base["dataset"] == "photo_patches"
    assert demo.base["backbone"] == "resnet18_cifar" and demo.base["image_size"] == 32
    assert {p.name for p in demo.params} >= {"attraction_strategy", "temperature", "key_momentum"}
    assert set(demo.param("attraction_strategy").args) == {"leoclr", "moco_v2"}
    assert demo.param("key_momentum").kind == "one_minus_log"
    assert demo.workers == 1 and demo.gpus_per_worker == 0
    smoke = load_space("smoke")
    assert smoke.total_trials() == 3 and smoke.max_epochs == 2
    assert smoke.base["photo_patches"] == {"train_per_class": 8, "test_per_class": 4}


# ------------------------------------------------------------------------------------------------
# Name and path resolution
# ------------------------------------------------------------------------------------------------
def test_name_and_path_resolve_to_the_same_space(tmp_path, monkeypatch):
    by_name = load_space("smoke")
    by_path = load_space(str(REPO / "search_spaces" / "smoke.yaml"))
    assert by_name.params == by_path.params and by_name.base == by_path.base
    assert by_name.source == "smoke.yaml"
    copy_path = write(tmp_path, by_name.text, "my_sweep.yaml")
    mine = load_space(copy_path)
    assert mine.name == "smoke"  # `name:` in the file wins over the file stem
    assert mine.path == copy_path.resolve() and mine.text == by_name.text
    monkeypatch.chdir(tmp_path)  # "smoke.yaml" is not a file here: falls back to the shipped one
    assert load_space("smoke.yaml").params == by_name.params
    assert load_space("my_sweep.yaml").path == copy_path.resolve()


def test_name_defaults_to_the_file_stem(tmp_path):
    spec = yaml.safe_load((REPO / "search_spaces" / "smoke.yaml").read_text())
    del spec["name"]
    assert load_space(write(tmp_path, spec, "tiny_run.yaml")).name == "tiny_run"


def test_unknown_name_lists_the_shipped_spaces(tmp_path):
    with pytest.raises(SpaceError) as err:
        load_space("smok")
    msg = str(err.value)
    assert msg.startswith("smok: no such search space") and "did you mean 'smoke'" in msg
    for name in SHIPPED:
        assert name in msg
    with pytest.raises(SpaceError, match="file not found"):
        load_space(str(tmp_path / "nope.yaml"))


# ------------------------------------------------------------------------------------------------
# define_by_run: conditions, one_minus_log, constants, reproducibility
# ------------------------------------------------------------------------------------------------
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


# ------------------------------------------------------------------------------------------------
# Grid mode
# ------------------------------------------------------------------------------------------------
def test_table8_grid_is_four_strategies_by_three_seeds():
    spec = load_space("table8", check_data=False)
    cells = S.grid_configs(spec)
    assert spec.total_trials() == len(cells) == 12
    assert sorted({c["attraction_strategy"] for c in cells}) == sorted(
        ["leoclr", "leoclr_random_original", "attract_all", "moco_v2"])
    for strategy in {c["attraction_strategy"] for c in cells}:
        assert sorted(c["seed"] for c in cells if c["attraction_strategy"] == strategy) == [0, 1, 2]
    assert [c["seed"] for c in cells[:4]] == [0, 0, 0, 0]  # seeds are the outer loop
    assert S.sample_configs(spec, 3) == cells[:3]


def test_mechanism_grid_multiplies_queue_size_only_for_momentum():
    spec = load_space("mechanism", check_data=False)
    cells = S.grid_configs(spec)
    assert spec.total_trials() == len(cells) == (2 * 2 + 2) * 3
    for c in cells:
        assert ("queue_size" in c) == (c["mechanism"] == "momentum")
        S.trial_config(spec, c)
    assert len({tuple(sorted(c.items())) for c in cells}) == len(cells)


def test_grid_configs_refuses_a_search_space():
    with pytest.raises(SpaceError, match=r"^demo\.yaml: mode: grid_configs needs mode grid"):
        S.grid_configs(load_space("demo"))


# ------------------------------------------------------------------------------------------------
# Validation details
# ------------------------------------------------------------------------------------------------
def test_yaml_exponent_floats_and_relative_data_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cifar").mkdir()
    text = ("base: {dataset: cifar10, data_root: cifar, weight_decay: 1e-4}\n"
            "space: {lr: {loguniform: [1e-3, 1e-1]}}\nbudget: {trials: 2, max_epochs: 1}\n")
    spec = load_space(write(tmp_path, text))
    assert spec.base["weight_decay"] == 1e-4 and spec.param("lr").args == [1e-3, 1e-1]
    assert spec.base["data_root"] == str((tmp_path / "cifar").resolve())  # trials chdir: absolute


def test_too_many_corners_still_checks_queue_against_batch(tmp_path, monkeypatch):
    monkeypatch.setattr(S, "CORNER_LIMIT", 1)
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


def test_trial_config_errors_name_the_file():
    spec = load_space("demo")
    with pytest.raises(SpaceError, match=r"^demo\.yaml: temperature=-1\.0: must be a finite number > 0"):
        S.trial_config(spec, {"temperature": -1.0})


def test_spaces_module_imports_neither_ray_nor_torch():
    code = ("import sys, leoclr_platform.spaces as s; s.load_space('demo', check_data=False); "
            "bad = [m for m in ('ray', 'torch') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=60)


# ------------------------------------------------------------------------------------------------
# Bad files: each fails before any compute, naming the file, the key path and the reason
# ------------------------------------------------------------------------------------------------
GOOD = {
    "name": "bad",
    "mode": "search",
    "base": {"dataset": "digits", "backbone": "small_cnn", "batch_size": 64, "queue_size": 256},
    "space": {
        "attraction_strategy": {"choice": ["leoclr", "moco_v2"]},
        "temperature": {"loguniform": [0.05, 0.5]},
        "key_momentum": {"one_minus_log": [0.9, 0.99]},
    },
    "objective": {"metric": "knn_top1", "mode": "max"},
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


# (id, file contents (raw text or an edit of GOOD), check_data, key path, reason fragment)
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
     "knn_top1, knn_top5, loss"),
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
     "cannot be searched when the objective is knn_top1"),
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


def test_the_readme_example_is_a_valid_space(tmp_path):
    import re

    text = (REPO / "search_spaces" / "README.md").read_text()
    block = re.search(r"## A complete file\n\n```yaml\n(.*?)```", text, re.S).group(1)
    spec = load_space(write(tmp_path, block, "demo.yaml"))
    assert [p.name for p in spec.params][:2] == ["attraction_strategy", "temperature"]
    assert spec.param("queue_size").when == {"mechanism": ["momentum"]}


@pytest.mark.parametrize("max_epochs, grace, rf", [(2, 1, 2), (3, 2, 2), (10, 1, 3), (200, 20, 3), (30, 2, 2.5),
                                                   (9, 3, 3), (8, 1, 2)])
def test_asha_rungs_are_the_epochs_rays_scheduler_judges_at(max_epochs, grace, rf):
    """asha_rungs() against Ray's own AsyncHyperBandScheduler, configured as sweep._fit does."""
    from ray.tune.schedulers import ASHAScheduler

    spec = dataclasses.replace(S.load_space("smoke"), max_epochs=max_epochs, grace_period=grace,
                               reduction_factor=rf)
    scheduler = ASHAScheduler(time_attr="epoch", metric="knn_top1", mode="max", max_t=max_epochs + 1,
                              grace_period=grace, reduction_factor=rf)
    (bracket,) = scheduler._brackets
    # the first whole epoch at or past each milestone, if a trial can reach it
    expected = sorted({next(e for e in range(1, max_epochs + 2) if e >= m) for m, _ in bracket._rungs} - {max_epochs + 1})
    assert S.asha_rungs(spec) == expected
    if (max_epochs, grace, rf) == (200, 20, 3):
        assert expected == [20, 60, 180]  # hand computation: 20 * 3**k below 201


def test_a_search_with_knn_every_evaluates_at_the_rungs_and_the_last_epoch():
    spec = dataclasses.replace(S.load_space("smoke"), max_epochs=12, grace_period=2, reduction_factor=2,
                               base={**S.load_space("smoke").base, "knn_every": 5})
    S.validate_space(spec)
    cfg = S.trial_config(spec, {"attraction_strategy": "moco_v2", "temperature": 0.2, "key_momentum": 0.99})
    assert cfg.knn_epochs == (2, 4, 8)  # rungs 2, 4, 8 (16 is past the last epoch)
    evaluated = [e for e in range(1, 13) if e % cfg.knn_every == 0 or e == cfg.epochs or e in cfg.knn_epochs]
    assert evaluated == [2, 4, 5, 8, 10, 12]
    grid = dataclasses.replace(spec, mode="grid", params=[S.ParamSpec("attraction_strategy", "grid",
                                                                           ["moco_v2", "leoclr"])])
    assert S.trial_config(grid, {"attraction_strategy": "leoclr"}).knn_epochs == ()  # nothing to judge


def test_the_sampler_is_multivariate_tpe_with_the_budget_s_startup_trials():
    spec = dataclasses.replace(S.load_space("smoke"), startup_trials=5)
    sampler = S.make_sampler(spec)
    assert isinstance(sampler, optuna.samplers.TPESampler)
    assert sampler._n_startup_trials == 5 and sampler._multivariate is True
    assert S.make_sampler(S.load_space("smoke"))._n_startup_trials == 10  # Optuna's own default
