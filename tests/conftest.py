"""Shared test settings: nothing a test does may touch the user's own stores."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _isolated_stores(tmp_path_factory):
    """Default MLflow store and results root inside a temporary folder, never the repo."""
    home = tmp_path_factory.mktemp("leoclr_home")
    saved = {k: os.environ.get(k) for k in ("LEOCLR_HOME", "MLFLOW_TRACKING_URI")}
    os.environ["LEOCLR_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield home
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def pytest_collection_modifyitems(session, config, items):
    """End-to-end tests (tests/e2e/: real Ray runtimes and sweeps, minutes) run after every fast
    test, whatever order the folders sort in: a broken unit fails first, and the in-process Ray
    runtime they share is started only after the tests that must run without one."""
    e2e = [item for item in items if "e2e" in item.path.parts]
    items[:] = [item for item in items if "e2e" not in item.path.parts] + e2e
