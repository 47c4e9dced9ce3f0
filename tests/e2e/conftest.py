"""End-to-end tests: real Ray runtimes, real sweeps. They are the only proof that the pieces work
together, and the slowest tests of the suite (tests/conftest.py runs them last). One in-process
Ray runtime serves every test here that needs one."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def ray_runtime(tmp_path_factory):
    import ray

    from leoclr_platform.sweep import start_local_ray

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["LEOCLR_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    start_local_ray(num_cpus=4)
    yield
    ray.shutdown()
