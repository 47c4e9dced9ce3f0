"""What a run carries besides its results: params as strings, where the code and machine came
from, and no secrets.

`flatten_params` turns a nested config into MLflow params; `code_version`, `package_versions`
and `hardware_tags` say which commit, libraries and resources produced a run; `scrub` replaces
any secret from the environment (and URI credentials) before a value is logged.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform as _stdlib_platform
import re
import subprocess
from pathlib import Path
from typing import Any, Mapping

from leoclr_platform.tracking.store import redact_uri

_SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|PRIVATE|API_KEY|ACCESS_KEY|AUTH", re.I)
_SOURCE_ROOT = Path(__file__).resolve().parents[3]


def flatten_params(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """{"photo_patches": {"train_per_class": 32}} -> {"photo_patches.train_per_class": "32"}."""
    out: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_params(value, prefix=f"{name}."))
        elif isinstance(value, (list, tuple)):
            out[name] = json.dumps(list(value))
        else:
            out[name] = "None" if value is None else str(value)
    return out


def config_hash(config: Mapping[str, Any]) -> str:
    """16 hex digits that identify a resolved config (same config, same hash)."""
    return hashlib.sha256(json.dumps(dict(config), sort_keys=True, default=str).encode()).hexdigest()[:16]


def scrub(values: Mapping[str, str]) -> dict[str, str]:
    """Replace any secret from the environment (names like *SECRET*, *TOKEN*, *PASSWORD*...) and
    URI credentials by *** in values about to be logged."""
    secrets = [v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= 6]
    out = {}
    for key, value in values.items():
        value = redact_uri(str(value))
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, "***")
        out[key] = value
    return out


def code_version() -> dict[str, str]:
    """git commit (if this is a checkout; $LEOCLR_GIT_COMMIT otherwise) and a hash of the code."""
    out = {}
    commit = os.environ.get("LEOCLR_GIT_COMMIT")
    if not commit and (_SOURCE_ROOT / ".git").exists():
        commit, dirty = _git_state()
        if commit and dirty:
            out["git_dirty"] = "true"
    out["git_commit"] = commit or "unknown"
    if commit:
        out["mlflow.source.git.commit"] = commit
    out["code_hash"] = _code_hash()
    return out


def _git_state() -> tuple[str | None, bool]:
    """(HEAD commit, whether tracked files differ from it) of the source checkout."""
    try:
        commit = subprocess.run(["git", "-C", str(_SOURCE_ROOT), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(_SOURCE_ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None, False
    return commit or None, bool(dirty)


def _code_hash() -> str:
    """A hash of every .py file of the engine and the platform (names and bytes)."""
    import leoclr_platform
    import trainables

    digest = hashlib.sha256()
    for package in (Path(trainables.__file__).parent, Path(leoclr_platform.__file__).parent):
        for file in sorted(package.rglob("*.py")):
            digest.update(file.relative_to(package).as_posix().encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def package_versions() -> dict[str, str]:
    """versions.<distribution> of Python and the libraries a result depends on."""
    from importlib import metadata

    out = {"versions.python": _stdlib_platform.python_version()}
    for dist in ("leoclr-platform", "torch", "torchvision", "ray", "optuna", "mlflow", "pyarrow"):
        try:
            out[f"versions.{dist}"] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def hardware_tags(workers: int, cpus_per_worker: float, gpus_per_worker: float,
                  cluster: Mapping[str, float] | None = None) -> dict[str, str]:
    """hardware.* tags: what one trial holds, the accelerator, the driver machine, the cluster."""
    accelerators = sorted(k.split(":", 1)[1] for k in (cluster or {}) if k.startswith("accelerator_type:"))
    tags = {
        "hardware.per_trial": f"{workers} worker(s) x ({cpus_per_worker:g} CPU, {gpus_per_worker:g} GPU)",
        "hardware.accelerator": ",".join(accelerators) or ("GPU" if gpus_per_worker else "CPU"),
        "hardware.driver": f"{_stdlib_platform.machine()} {os.cpu_count()} CPUs, {_stdlib_platform.system()}",
    }
    if cluster:
        tags["hardware.cluster"] = f"{cluster.get('CPU', 0):g} CPU, {cluster.get('GPU', 0):g} GPU"
    return tags
