"""The Ray runtime checks that run before anything starts."""

from __future__ import annotations

import dataclasses
import socket

import pytest

from leoclr_platform import spaces
from leoclr_platform.errors import SweepError
from leoclr_platform.sweep.runtime import check_reachable, check_resources, local_resources


def test_one_trial_must_fit_and_concurrency_is_what_fits():
    spec = spaces.load_space("smoke")
    assert check_resources(spec, {"CPU": 4.0}) == 4
    assert check_resources(dataclasses.replace(spec, max_concurrent=2), {"CPU": 4.0}) == 2
    gpu = dataclasses.replace(spec, workers=2, gpus_per_worker=0.5, cpus_per_worker=2)
    assert check_resources(gpu, {"CPU": 16.0, "GPU": 2.0}) == 2  # GPUs bound it
    with pytest.raises(SweepError) as err:
        check_resources(dataclasses.replace(spec, workers=2, cpus_per_worker=3), {"CPU": 4.0})
    assert str(err.value) == ("smoke.yaml: resources: one trial needs 2 worker(s) x (3 CPU, 0 GPU) = 6 CPU, "
                              "0 GPU, but the Ray cluster has 4 CPU, 0 GPU")
    assert (err.value.source, err.value.key) == ("smoke.yaml", "resources")


def test_an_address_where_nothing_listens_fails_at_once():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(SweepError, match=rf"^cannot connect to the Ray cluster at '127.0.0.1:{port}': .*"
                                         r"\(is `ray start --head` running there"):
        check_reachable(f"127.0.0.1:{port}")
    check_reachable("auto")  # not a host:port: left to Ray


def test_local_resources_are_known_without_starting_ray():
    import ray

    assert local_resources(3)["CPU"] == 3.0
    assert local_resources()["CPU"] >= 1.0 and not ray.is_initialized()
