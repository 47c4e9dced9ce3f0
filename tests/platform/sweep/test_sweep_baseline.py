"""The sweep's baseline row and what the driver adds after the trials (importance, baseline)."""

from __future__ import annotations

import dataclasses
import json

import optuna
import pytest

from leoclr_platform import cli, spaces
from leoclr_platform.sweep import analysis, baseline as B


def tiny(**changes):
    return dataclasses.replace(cli.smoke_space(spaces.load_space("smoke")), **changes)


def test_headline_seeds_are_the_confirmation_seeds_when_there_are_some():
    spec = tiny(seeds=[0, 1])
    assert B.headline_seeds(spec, None) == [0, 1]
    assert B.headline_seeds(spec, {"seeds": [1000, 1001, 1002]}) == [1000, 1001, 1002]


def test_baseline_per_seed_and_mean(tmp_path):
    result = B.sweep_baseline(tiny(), [1000, 1001])
    assert result["what"] == "random weights, BatchNorm recalibrated" and result["seeds"] == [1000, 1001]
    assert set(result["per_seed"]) == {"1000", "1001"}
    for metrics in result["per_seed"].values():
        assert {"val_knn_top1", "test_knn_top1", "rankme"} <= set(metrics)
        assert 0.0 <= metrics["val_knn_top1"] <= 100.0
    # different seeds: different random weights, so different numbers; the mean is their mean
    a, b = result["per_seed"]["1000"], result["per_seed"]["1001"]
    assert a["rankme"] != b["rankme"]
    assert result["mean"]["rankme"] == pytest.approx((a["rankme"] + b["rankme"]) / 2)
    logged = B.parent_metrics(result)
    assert set(logged) == {"baseline_val_knn_top1", "baseline_test_knn_top1", "baseline_rankme"}
    path = B.write_baseline(result, tmp_path)
    assert json.loads(path.read_text())["mean"] == result["mean"]


def test_analysis_records_failures_instead_of_raising(tmp_path):
    """A baseline that cannot load its data and a study with one trial: reasons, no exception."""
    spec = tiny(base={**tiny().base, "dataset": "imagefolder", "data_root": str(tmp_path / "missing")})
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    study.optimize(lambda t: t.suggest_float("temperature", 0.1, 0.5), n_trials=1)
    notes = []
    extras = analysis.analyse_sweep(spec, "s", str(tmp_path), storage, None, out=notes.append)
    assert "baseline_error" in extras["tags"] and extras["tags"]["baseline_error"]
    assert [p.name for p in extras["artifacts"]] == ["importance.json"]
    assert json.loads((tmp_path / "importance.json").read_text())["n_trials"] == 1
    assert not any(k.startswith("baseline_") for k in extras["metrics"])
    assert len(notes) == 3  # two importance methods, the baseline
