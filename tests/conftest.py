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


#: The slow modules, the longest first (minutes each on 2 cores). Under `make test`'s two
#: pytest-xdist workers (whole modules, in this order) the longest start first, so the two
#: workers end close together.
SLOW_MODULES = ("test_e2e_faults.py", "test_e2e_sweeps.py", "test_e2e_selection.py", "test_learning.py",
                "test_e2e_cluster.py", "test_e2e_multinode.py", "test_e2e_browser.py")


def pytest_collection_modifyitems(session, config, items):
    """Every fast test first, then the slow modules, longest first (tests/e2e/: real Ray runtimes
    and sweeps): a broken unit fails first, and the in-process Ray runtime the end-to-end tests
    share (session-wide, per xdist worker) starts only after the tests that must run without one
    (xdist hands each worker its modules in this order)."""
    def rank(item) -> int:
        name = item.path.name
        if name in SLOW_MODULES:
            return 1 + SLOW_MODULES.index(name)
        return len(SLOW_MODULES) + 1 if "e2e" in item.path.parts else 0

    items.sort(key=rank)  # stable: the order within a module is kept
