"""The Ray runtime a sweep runs on: connect to a cluster or start one in-process, and check that
one trial fits in it before anything starts.
"""

from __future__ import annotations

import math
import os
import socket
from unittest import mock

from leoclr_platform.errors import SweepError
from leoclr_platform.spaces import SweepSpec
from leoclr_platform.sweep.compat import ray_num_cpus

#: Settings of the driver's environment that trials must see too (cache and storage locations).
PASSTHROUGH_ENV = ("LEOCLR_CACHE", "LEOCLR_STORAGE")
#: Ray's setting (RayConfig prestart_worker_first_driver, read by the raylet from its environment).
PRESTART_ENV = "RAY_prestart_worker_first_driver"


def connect_ray(address: str | None, num_cpus: int | None = None) -> None:
    """Connect to `address` / RAY_ADDRESS, else start an in-process runtime (usage stats off)."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        start_local_ray(num_cpus)
        return
    check_reachable(address)
    try:
        ray.init(address=address, log_to_driver=True)
    except Exception as exc:  # ConnectionError, TimeoutError, ...
        raise _unreachable(address, str(exc)) from None


def _unreachable(address: str, reason: str) -> SweepError:
    return SweepError(reason, key="address", value=address,
                      message=f"cannot connect to the Ray cluster at {address!r}: {reason}")


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds, not minutes, when nothing listens at a host:port address."""
    target = address.split("://", 1)[-1]
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or address in ("auto", "local"):
        return
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise _unreachable(address, f"{exc.strerror or exc} (is `ray start --head` running there? check "
                                    "--address / RAY_ADDRESS)") from None


def start_local_ray(num_cpus: int | None = None) -> str:
    """An in-process Ray runtime that other Ray instances on this machine cannot confuse; returns
    its GCS address.

    Ray Train's PlacementGroupCleaner polls the State API (served by the dashboard) to free a
    finished trial's worker placement group; its client finds the cluster by auto-detection,
    which fails when several Ray instances run on one machine, and then the placement groups
    leak and the next trial waits forever. So: the dashboard runs (bound to 127.0.0.1), the GCS
    port is chosen here, and every worker gets RAY_ADDRESS pointing at this runtime.
    """
    import ray

    last_error: Exception | None = None
    for _ in range(2):  # a port taken in between, or a dashboard slow to start under load
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        address = f"127.0.0.1:{port}"
        # read by the processes ray.init starts: the GCS port; no prestarted workers, since Ray
        # prestarts idle workers for the first driver but a job with a runtime_env (ours:
        # env_vars) never runs on them (each cost the CPU-seconds of its start); a user's own
        # setting of that wins
        settings = {"RAY_GCS_SERVER_PORT": str(port), PRESTART_ENV: os.environ.get(PRESTART_ENV, "0")}
        env = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ADDRESS": address,
               **{k: os.environ[k] for k in PASSTHROUGH_ENV if k in os.environ}}
        try:
            # "local": always a fresh in-process runtime, never some other `ray start` cluster
            with mock.patch.dict(os.environ, settings):
                ray.init(address="local", num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1",
                         log_to_driver=True, runtime_env={"env_vars": env})
            return address
        except Exception as exc:  # noqa: BLE001 - reported below with its cause
            last_error = exc
            ray.shutdown()
    raise SweepError(f"{type(last_error).__name__}: {last_error}",
                     message=f"could not start a local Ray runtime: {type(last_error).__name__}: {last_error}")


def local_resources(num_cpus: int | None = None) -> dict[str, float]:
    """What `start_local_ray(num_cpus)` will offer, found without starting it."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return {"CPU": float(num_cpus if num_cpus is not None else ray_num_cpus()), "GPU": float(gpus)}


def cluster_resources() -> dict[str, float]:
    """CPU and GPU of the connected Ray cluster."""
    import ray

    return {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")}


def check_resources(spec: SweepSpec, resources: dict[str, float]) -> int:
    """Refuse what the cluster can never run; return how many trials fit at once."""
    need_cpu = spec.workers * spec.cpus_per_worker
    need_gpu = spec.workers * spec.gpus_per_worker
    have_cpu, have_gpu = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    if need_cpu > have_cpu or need_gpu > have_gpu:
        raise SweepError(
            f"one trial needs {spec.workers} worker(s) x ({spec.cpus_per_worker:g} CPU, "
            f"{spec.gpus_per_worker:g} GPU) = {need_cpu:g} CPU, {need_gpu:g} GPU, but the Ray cluster has "
            f"{have_cpu:g} CPU, {have_gpu:g} GPU", source=spec.label, key="resources")
    fits = [math.floor(have_cpu / need_cpu)]
    if need_gpu:
        fits.append(math.floor(have_gpu / need_gpu))
    fit = max(1, min(fits))
    return min(fit, spec.max_concurrent) if spec.max_concurrent else fit
