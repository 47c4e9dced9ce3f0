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
