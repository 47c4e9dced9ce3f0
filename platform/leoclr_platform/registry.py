"""`leoclr promote`: the MLflow Model Registry side of the platform, and model URIs.

promote picks the best finished trial of a sweep by its objective (or a given run), registers
that run's encoder under a model name (default `leoclr-encoder`), records the lineage on the
model version (sweep, trial, run, config hash, objective, commit) and points an alias (default
`candidate`) at it. Promoting again moves the alias; registering the same run twice reuses its
version. `resolve_model_version` turns `models:/<name>@<alias>` or `models:/<name>/<version>`
into the version, for `leoclr evaluate`.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from leoclr_platform import tracking
from leoclr_platform.errors import RegistryError

_MODEL_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")
_LINEAGE_TAGS = ("sweep", "trial_id", "config_hash", "strategy", "checkpoint_path", "git_commit", "code_hash")


# ---------------------------------------------------------------------------------------------
# Finding a sweep's runs
def find_sweep_run(c, sweep: str):
    """The parent run of sweep `sweep`, in any experiment of the store."""
    experiments = [e.experiment_id for e in c.search_experiments(max_results=50000)]
    runs = c.search_runs(experiments, f"tags.role = '{tracking.ROLE_SWEEP}' AND tags.sweep = '{sweep}'",
                         max_results=5)
    if not runs:
        shown = tracking.redact_uri(c.tracking_uri)
        raise RegistryError(f"not in the tracking store {shown}", key="sweep", value=sweep,
                            message=f"no sweep named {sweep!r} in the tracking store {shown} "
                                    "(check the name, or --tracking-uri / MLFLOW_TRACKING_URI)")
    return runs[0]


def sweep_objective(parent) -> tuple[str, str]:
    """(metric, mode) of the sweep, from its parent run's `objective` param ("val_knn_top1 (max)")."""
    text = parent.data.params.get("objective", "val_knn_top1 (max)")
    match = re.match(r"(\S+) \((max|min)\)", text)
    return (match.group(1), match.group(2)) if match else ("val_knn_top1", "max")


def trial_runs(c, parent) -> list:
    """Every trial run of the sweep whose parent run is `parent`."""
    return c.search_runs([parent.info.experiment_id],
                         f"tags.sweep = '{parent.data.tags['sweep']}' AND tags.role = '{tracking.ROLE_TRIAL}'",
                         max_results=50000)


# ---------------------------------------------------------------------------------------------
# Promotion
def promote(uri: str, *, sweep: str | None = None, run_id: str | None = None, metric: str | None = None,
            mode: str | None = None, alias: str = "candidate", model_name: str = tracking.DEFAULT_MODEL_NAME,
            out: Callable[[str], None] = print) -> dict[str, Any]:
    """Register the chosen run's encoder and point `alias` at its version. Returns the lineage."""
    _check_request(sweep, run_id, alias)
    tracking.check_store(uri)
    tracking.use_store(uri)
    c = tracking.client(uri)
    if run_id:
        run, metric = _given_run(c, uri, run_id, metric)
    else:
        run, metric = _best_trial_run(c, sweep, metric, mode)
    lineage = _lineage(run, metric)
    version = _register(c, run, model_name, lineage)
    previous = _point_alias(c, model_name, alias, version)
    moved = f" (was version {previous})" if previous and previous != str(version) else ""
    out(f"promoted run {run.info.run_id} (trial {lineage['trial_id']}, {lineage['strategy']}, "
        f"{metric}={lineage['objective_value']}) -> {model_name} version {version}; "
        f"alias @{alias} now points to it{moved}")
    out(f"  evaluate it: leoclr evaluate models:/{model_name}@{alias}")
    return {**lineage, "model_name": model_name, "version": str(version), "alias": alias,
            "model_uri": f"models:/{model_name}@{alias}", "previous_version": previous}


def _check_request(sweep: str | None, run_id: str | None, alias: str) -> None:
    """Exactly one source, and an alias MLflow accepts (checked before the store is opened)."""
    if bool(sweep) == bool(run_id):
        raise RegistryError("give exactly one of --sweep NAME or --run-id ID", source="promote")
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", alias) or re.fullmatch(r"v\d+", alias) or alias == "latest":
        reason = "an alias is a name like candidate or champion (letters, digits, _ and -; not 'latest' or v<number>)"
        raise RegistryError(reason, key="--alias", value=alias, message=f"--alias {alias!r}: {reason}")


def _given_run(c, uri: str, run_id: str, metric: str | None):
    """(run, metric) for `--run-id`: the run must exist and hold a logged encoder."""
    try:
        run = c.get_run(run_id)
    except Exception:  # noqa: BLE001 - RESOURCE_DOES_NOT_EXIST or a bad id
        reason = f"no such run in {tracking.redact_uri(uri)}"
        raise RegistryError(reason, key="--run-id", value=run_id, message=f"--run-id {run_id}: {reason}") from None
    if "model_uri" not in run.data.tags:
        raise RegistryError("has no logged encoder: only trials that finished all their epochs have one",
                            key="--run-id", value=run_id,
                            message=f"run {run_id} ({run.info.run_name}, {run.info.status}) has no logged "
                                    "encoder: only trials that finished all their epochs have one")
    return run, metric or run.data.tags.get("objective") or "val_knn_top1"


def _best_trial_run(c, sweep: str, metric: str | None, mode: str | None):
    """(run, metric): the sweep's best FINISHED trial run with an encoder (ties: the earliest)."""
    parent = find_sweep_run(c, sweep)
    own_metric, own_mode = sweep_objective(parent)
    metric, mode = metric or own_metric, mode or own_mode
    runs = trial_runs(c, parent)
    ready = [r for r in runs if r.info.status == "FINISHED" and "model_uri" in r.data.tags
             and r.data.metrics.get(metric) is not None]
    if not ready:
        counts: dict[str, int] = {}
        for r in runs:
            counts[r.info.status] = counts.get(r.info.status, 0) + 1
        reason = (f"no finished trial with a logged encoder and a {metric!r} value to promote "
                  f"(trial runs by status: {counts or 'none'})")
        raise RegistryError(reason, key="--sweep", value=sweep, message=f"sweep {sweep!r}: {reason}")
    sign = 1 if mode == "max" else -1
    return max(ready, key=lambda r: (sign * r.data.metrics[metric], -r.info.start_time)), metric


def _lineage(run, metric: str) -> dict[str, str]:
    """What the model version records of where it came from."""
    tags = run.data.tags
    value = run.data.metrics.get(metric)
    lineage = {key: tags.get(key, "") for key in _LINEAGE_TAGS}
    lineage.update(run_id=run.info.run_id, objective=metric,
                   objective_value="" if value is None else f"{value:.4f}")
    return lineage


def _register(c, run, model_name: str, lineage: dict[str, str]) -> str:
    """The version of `model_name` holding the run's encoder (reused if registered already),
    tagged with the lineage. Returns the version number."""
    import mlflow

    try:
        c.get_registered_model(model_name)
    except Exception:  # noqa: BLE001 - does not exist yet
        c.create_registered_model(model_name, description="LeOCLR / MoCo-v2 encoders (backbones) promoted by leoclr")
    existing = c.search_model_versions(f"name = '{model_name}' AND run_id = '{run.info.run_id}'")
    version = existing[0] if existing else mlflow.register_model(run.data.tags["model_uri"], model_name,
                                                                  tags=lineage)
    for key, val in lineage.items():
        c.set_model_version_tag(model_name, version.version, key, val)
    c.update_model_version(model_name, version.version, description=(
        f"sweep {lineage['sweep']}, trial {lineage['trial_id']} ({lineage['strategy']}): "
        f"{lineage['objective']}={lineage['objective_value']}; run {run.info.run_id}"))
    return str(version.version)


def _point_alias(c, model_name: str, alias: str, version: str) -> str | None:
    """Point `alias` at `version`; returns the version it pointed at before (None if new)."""
    previous = None
    try:
        previous = str(c.get_model_version_by_alias(model_name, alias).version)
    except Exception:  # noqa: BLE001 - alias not set yet
        pass
    c.set_registered_model_alias(model_name, alias, version)
    return previous


# ---------------------------------------------------------------------------------------------
# Model URIs
def parse_model_uri(model_uri: str) -> tuple[str, str | None, str | None]:
    """models:/name@alias or models:/name/version -> (name, alias, version); no store needed."""
    match = _MODEL_URI.match(model_uri.strip())
    if not match:
        reason = "is not a registered model URI: use models:/<name>@<alias> or models:/<name>/<version>"
        raise RegistryError(reason, value=model_uri, message=f"{model_uri!r} {reason}")
    return match.group("name"), match.group("alias"), match.group("version")


def resolve_model_version(c, model_uri: str):
    """models:/name@alias or models:/name/version -> (ModelVersion, alias or None)."""
    name, alias, version = parse_model_uri(model_uri)
    try:
        model = c.get_registered_model(name)
    except Exception:  # noqa: BLE001
        names = [m.name for m in c.search_registered_models(max_results=100)]
        raise RegistryError(f"no registered model named {name!r} (registered: {', '.join(names) or 'none'}; "
                            "promote one with `leoclr promote`)", source=model_uri) from None
    try:
        return (c.get_model_version_by_alias(name, alias) if alias else c.get_model_version(name, version)), alias
    except Exception:  # noqa: BLE001
        pass
    if alias:
        known = ", ".join(f"@{a}->v{v}" for a, v in sorted((model.aliases or {}).items())) or "none"
        raise RegistryError(f"model {name!r} has no alias @{alias} (aliases: {known})", source=model_uri)
    versions = sorted(int(v.version) for v in c.search_model_versions(f"name = '{name}'"))
    raise RegistryError(f"model {name!r} has no version {version} "
                        f"(versions: {', '.join(map(str, versions)) or 'none'})", source=model_uri)
