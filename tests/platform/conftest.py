"""Fixtures of the platform's unit tests: a fresh MLflow SQLite store per test (a copy of one
schema built once) and a real tiny training run of the engine (checkpoints with history)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def store_schema(tmp_path_factory) -> Path:
    """An empty MLflow SQLite store (schema only), built once and copied by `mlflow_uri`."""
    from leoclr_platform.tracking import check_store

    db = tmp_path_factory.mktemp("store_schema") / "mlflow.db"
    check_store(f"sqlite:///{db}")
    return db


@pytest.fixture
def mlflow_uri(tmp_path, store_schema) -> str:
    """This test's own tracking store (artifacts go to tmp_path/mlartifacts)."""
    shutil.copyfile(store_schema, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A run folder written by the engine (`run_training`): epoch_0001/ and epoch_0002/, each with
    checkpoint.pt, encoder.pt, config.json, metrics.json and history.json."""
    from platform_fakes import TINY_CONFIG
    from trainables.config import TrainConfig
    from trainables.loop import run_training

    out = tmp_path_factory.mktemp("tiny_run")
    run_training(TrainConfig.from_dict(TINY_CONFIG), checkpoint_dir=str(out))
    return out


@pytest.fixture(scope="session")
def recorded_sweep_template(tmp_path_factory, store_schema, tiny_run) -> dict:
    """Sweep "s1" recorded once (see platform_fakes.record_sweep) into a store of its own."""
    from platform_fakes import record_sweep

    folder = tmp_path_factory.mktemp("recorded_sweep")
    shutil.copyfile(store_schema, folder / "mlflow.db")
    return {**record_sweep(f"sqlite:///{folder / 'mlflow.db'}", tiny_run), "db": folder / "mlflow.db"}


@pytest.fixture
def recorded_sweep(tmp_path, recorded_sweep_template) -> dict:
    """This test's own copy of the recorded sweep's store: t2 best, t1, t3 stopped. (The runs'
    artifacts stay in the template's folder, read by every copy; what a test adds to a new
    experiment goes next to its own copy.)"""
    shutil.copyfile(recorded_sweep_template["db"], tmp_path / "mlflow.db")
    return {**recorded_sweep_template, "uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}
