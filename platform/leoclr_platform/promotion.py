"""`leoclr promote` and `leoclr evaluate`: the MLflow Model Registry side of the platform.

promote  picks the best finished trial of a sweep by its objective (or a given run), registers
         that run's encoder under a model name (default `leoclr-encoder`), records the lineage on
         the model version (sweep, trial, run, config hash, objective) and points an alias
         (default `candidate`) at it. Promoting again moves the alias; registering the same run
         twice reuses its version.
evaluate loads `models:/<name>@<alias>` (or `/<version>`) through the safe path: the run's
         `checkpoint/encoder.pt` with torch.load(weights_only=True), never an unpickled model;
         runs linear evaluation, kNN and the random-crop test (evaluate.py) on the labelled data;
         logs an evaluation run (experiment `leoclr/evaluation`) tagged with the model version,
         links the metrics to the logged model, and tags the version with the results.
"""

from __future__ import annotations

import dataclasses
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from leoclr_platform import tracking as T

EVALUATION_EXPERIMENT = "leoclr/evaluation"


class RegistryError(RuntimeError):
    """Nothing to promote, unknown model/alias/run, ... (the message says which and why)."""


def _all_experiment_ids(c) -> list[str]:
    return [e.experiment_id for e in c.search_experiments(max_results=50000)]


def find_sweep_run(c, sweep: str):
    runs = c.search_runs(_all_experiment_ids(c), f"tags.role = '{T.ROLE_SWEEP}' AND tags.sweep = '{sweep}'",
                         max_results=5)
    if not runs:
        raise RegistryError(f"no sweep named {sweep!r} in the tracking store {T.redact_uri(c.tracking_uri)} "
                            "(check the name, or --tracking-uri / MLFLOW_TRACKING_URI)")
    return runs[0]


def sweep_objective(parent) -> tuple[str, str]:
    """(metric, mode) of the sweep, from its parent run."""
    text = parent.data.params.get("objective", "knn_top1 (max)")
    match = re.match(r"(\S+) \((max|min)\)", text)
    return (match.group(1), match.group(2)) if match else ("knn_top1", "max")


def trial_runs(c, parent) -> list:
    return c.search_runs([parent.info.experiment_id],
                         f"tags.sweep = '{parent.data.tags['sweep']}' AND tags.role = '{T.ROLE_TRIAL}'",
                         max_results=50000)


def promote(uri: str, *, sweep: str | None = None, run_id: str | None = None, metric: str | None = None,
            mode: str | None = None, alias: str = "candidate", model_name: str = T.DEFAULT_MODEL_NAME,
            out=print) -> dict[str, Any]:
    """Register the chosen run's encoder and point `alias` at its version. Returns the lineage."""
    import mlflow

    if bool(sweep) == bool(run_id):
        raise RegistryError("promote: give exactly one of --sweep NAME or --run-id ID")
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", alias) or re.fullmatch(r"v\d+", alias) or alias == "latest":
        raise RegistryError(f"--alias {alias!r}: an alias is a name like candidate or champion "
                            "(letters, digits, _ and -; not 'latest' or v<number>)")
    T.check_store(uri)
    T.use_store(uri)
    c = T.client(uri)
    if run_id:
        try:
            run = c.get_run(run_id)
        except Exception:  # noqa: BLE001 - RESOURCE_DOES_NOT_EXIST or a bad id
            raise RegistryError(f"--run-id {run_id}: no such run in {T.redact_uri(uri)}") from None
        metric = metric or run.data.tags.get("objective") or "knn_top1"
        if "model_uri" not in run.data.tags:
            raise RegistryError(f"run {run_id} ({run.info.run_name}, {run.info.status}) has no logged encoder: "
                                "only trials that finished all their epochs have one")
    else:
        parent = find_sweep_run(c, sweep)
        own_metric, own_mode = sweep_objective(parent)
        metric, mode = metric or own_metric, mode or own_mode
        runs = trial_runs(c, parent)
        ready = [r for r in runs if r.info.status == "FINISHED" and "model_uri" in r.data.tags
                 and r.data.metrics.get(metric) is not None]
        if not ready:
            counts = {}
            for r in runs:
                counts[r.info.status] = counts.get(r.info.status, 0) + 1
            raise RegistryError(f"sweep {sweep!r}: no finished trial with a logged encoder and a {metric!r} value "
                                f"to promote (trial runs by status: {counts or 'none'})")
        sign = 1 if (mode or "max") == "max" else -1
        run = max(ready, key=lambda r: (sign * r.data.metrics[metric], -r.info.start_time))
    value = run.data.metrics.get(metric)
    tags = run.data.tags
    lineage = {
        "sweep": tags.get("sweep", ""), "trial_id": tags.get("trial_id", ""), "run_id": run.info.run_id,
        "config_hash": tags.get("config_hash", ""), "objective": metric,
        "objective_value": "" if value is None else f"{value:.4f}", "strategy": tags.get("strategy", ""),
        "checkpoint_path": tags.get("checkpoint_path", ""), "git_commit": tags.get("git_commit", ""),
        "code_hash": tags.get("code_hash", ""),
    }
    try:
        c.get_registered_model(model_name)
    except Exception:  # noqa: BLE001 - does not exist yet
        c.create_registered_model(model_name, description="LeOCLR / MoCo-v2 encoders (backbones) promoted by leoclr")
    existing = c.search_model_versions(f"name = '{model_name}' AND run_id = '{run.info.run_id}'")
    if existing:
        version = existing[0]
    else:
        version = mlflow.register_model(tags["model_uri"], model_name, tags=lineage)
    for key, val in lineage.items():
        c.set_model_version_tag(model_name, version.version, key, val)
    c.update_model_version(model_name, version.version, description=(
        f"sweep {lineage['sweep']}, trial {lineage['trial_id']} ({lineage['strategy']}): "
        f"{metric}={lineage['objective_value']}; run {run.info.run_id}"))
    previous = None
    try:
        previous = str(c.get_model_version_by_alias(model_name, alias).version)
    except Exception:  # noqa: BLE001 - alias not set yet
        pass
    c.set_registered_model_alias(model_name, alias, version.version)
    moved = f" (was version {previous})" if previous and previous != str(version.version) else ""
    out(f"promoted run {run.info.run_id} (trial {lineage['trial_id']}, {lineage['strategy']}, "
        f"{metric}={lineage['objective_value']}) -> {model_name} version {version.version}; "
        f"alias @{alias} now points to it{moved}")
    out(f"  evaluate it: leoclr evaluate models:/{model_name}@{alias}")
    return {**lineage, "model_name": model_name, "version": str(version.version), "alias": alias,
            "model_uri": f"models:/{model_name}@{alias}", "previous_version": previous}


# ---------------------------------------------------------------------------------------------
_MODEL_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


def parse_model_uri(model_uri: str) -> tuple[str, str | None, str | None]:
    """models:/name@alias or models:/name/version -> (name, alias, version); no store needed."""
    match = _MODEL_URI.match(model_uri.strip())
    if not match:
        raise RegistryError(f"{model_uri!r} is not a registered model URI: use models:/<name>@<alias> "
                            "or models:/<name>/<version>")
    return match.group("name"), match.group("alias"), match.group("version")


def resolve_model_version(c, model_uri: str):
    """models:/name@alias or models:/name/version -> (ModelVersion, alias or None)."""
    name, alias, version = parse_model_uri(model_uri)
    try:
        model = c.get_registered_model(name)
    except Exception:  # noqa: BLE001
        names = [m.name for m in c.search_registered_models(max_results=100)]
        raise RegistryError(f"{model_uri}: no registered model named {name!r} "
                            f"(registered: {', '.join(names) or 'none'}; promote one with `leoclr promote`)") from None
    try:
        mv = c.get_model_version_by_alias(name, alias) if alias else c.get_model_version(name, version)
    except Exception:  # noqa: BLE001
        if alias:
            known = ", ".join(f"@{a}->v{v}" for a, v in sorted((model.aliases or {}).items())) or "none"
            raise RegistryError(f"{model_uri}: model {name!r} has no alias @{alias} (aliases: {known})") from None
        versions = sorted(int(v.version) for v in c.search_model_versions(f"name = '{name}'"))
        raise RegistryError(f"{model_uri}: model {name!r} has no version {version} "
                            f"(versions: {', '.join(map(str, versions)) or 'none'})") from None
    return mv, alias


def download_encoder(c, mv, dst: Path) -> dict[str, bytes]:
    """The version's source run's checkpoint files (encoder.pt, config.json), as bytes."""
    import mlflow

    from trainables.checkpoint import CONFIG_FILE, ENCODER_FILE

    files = {}
    for name in (ENCODER_FILE, CONFIG_FILE):
        try:
            local = mlflow.artifacts.download_artifacts(
                run_id=mv.run_id, artifact_path=f"{T.CHECKPOINT_ARTIFACT}/{name}", dst_path=str(dst),
                tracking_uri=c.tracking_uri)
            files[name] = Path(local).read_bytes()
        except Exception as exc:  # noqa: BLE001
            raise RegistryError(f"model {mv.name} version {mv.version}: cannot fetch "
                                f"{T.CHECKPOINT_ARTIFACT}/{name} of run {mv.run_id}: {T._first_line(exc)}") from None
    return files


def _evaluate_files(files: dict[str, bytes], protocol_overrides: dict[str, Any], dataset: str | None,
                    data_root: str | None, device: str | None) -> dict[str, Any]:
    """Runs where the compute is (this process, or a Ray task on a GPU node): the encoder's
    files arrive as bytes, so no node needs access to the tracking store's artifacts."""
    from trainables.data import load_data

    from trainables.checkpoint import load_encoder
    from trainables.eval import LinearProtocol, evaluate_encoder

    with tempfile.TemporaryDirectory(prefix="leoclr_eval_") as tmp:
        for name, blob in files.items():
            (Path(tmp) / name).write_bytes(blob)
        encoder = load_encoder(tmp)
    cfg = encoder.config
    name = dataset or cfg.dataset
    root = data_root if dataset else (data_root or cfg.data_root)
    data = load_data(name, root=root, image_size=cfg.image_size, download=cfg.download,
                     photo_patches=cfg.photo_patches)
    protocol = LinearProtocol.for_dataset_size(len(data.memory), **protocol_overrides)
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    start = time.perf_counter()
    results = evaluate_encoder(encoder.backbone, data, protocol, image_size=cfg.resolved_view_size,
                               device=device, knn_k=cfg.knn_k, knn_temperature=cfg.knn_temperature)
    return {"results": results, "protocol": protocol.to_dict(), "dataset": name, "device": str(device),
            "wall_s": time.perf_counter() - start, "train_config": cfg.to_dict()}


def evaluate_model(uri: str, model_uri: str, *, dataset: str | None = None, data_root: str | None = None,
                   protocol_overrides: dict[str, Any] | None = None, device: str | None = None,
                   address: str | None = None, out=print) -> dict[str, Any]:
    """Evaluate a registered encoder and log the results (see module docstring)."""
    import mlflow
    from mlflow.entities import Metric, Param

    from trainables.eval import LinearProtocol

    overrides = dict(protocol_overrides or {})
    LinearProtocol.from_dict(overrides, source="evaluate")  # bad protocol settings fail before any download
    parse_model_uri(model_uri)  # and a malformed model URI before the store is opened (or created)
    T.check_store(uri)
    T.use_store(uri)
    c = T.client(uri)
    mv, alias = resolve_model_version(c, model_uri)
    with tempfile.TemporaryDirectory(prefix="leoclr_model_") as tmp:
        files = download_encoder(c, mv, Path(tmp))
    where = "this process"
    if address or _ray_address_from_env():
        import ray

        from leoclr_platform.sweep import connect_ray

        connect_ray(address)
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        task = ray.remote(num_cpus=1, num_gpus=gpus)(_evaluate_files)
        where = f"a Ray task ({'1 GPU' if gpus else 'CPU'})"
        out(f"evaluating {model_uri} (version {mv.version}) in {where} ...")
        outcome = ray.get(task.remote(files, overrides, dataset, data_root, device))
    else:
        out(f"evaluating {model_uri} (version {mv.version}) in {where} ...")
        outcome = _evaluate_files(files, overrides, dataset, data_root, device)
    results = outcome["results"]

    experiment_id = T.ensure_experiment(c, EVALUATION_EXPERIMENT, uri)
    source = c.get_run(mv.run_id)
    tags = T.scrub({
        **T.code_version(), **T.package_versions(),
        "role": T.ROLE_EVALUATION, "model_name": mv.name, "model_version": str(mv.version),
        "model_alias": alias or "", "model_uri": model_uri, "source_run_id": mv.run_id,
        "sweep": source.data.tags.get("sweep", ""), "trial_id": source.data.tags.get("trial_id", ""),
        "strategy": source.data.tags.get("strategy", ""), "dataset": outcome["dataset"],
        "device": outcome["device"],
    })
    run = c.create_run(experiment_id, run_name=f"eval {mv.name} v{mv.version} on {outcome['dataset']}", tags=tags)
    run_id = run.info.run_id
    params = T.flatten_params({**{f"protocol.{k}": v for k, v in outcome["protocol"].items()},
                               "dataset": outcome["dataset"], "backbone": outcome["train_config"]["backbone"]})
    c.log_batch(run_id, params=[Param(k, v) for k, v in T.scrub(params).items()])
    stamp = int(time.time() * 1000)
    logged_model = mv.source.split("/")[-1] if str(mv.source).startswith("models:/m-") else None
    numeric = {k: float(v) for k, v in results.items() if isinstance(v, (int, float))}
    c.log_batch(run_id, metrics=[Metric(k, v, stamp, 0, model_id=logged_model) for k, v in numeric.items()])
    c.set_terminated(run_id, "FINISHED")
    prefix = f"eval.{outcome['dataset']}"
    for key in ("linear_top1", "linear_top5", "knn_top1", "random_crop_top1", "random_crop_drop"):
        if key in numeric:
            c.set_model_version_tag(mv.name, mv.version, f"{prefix}.{key}", f"{numeric[key]:.2f}")
    c.set_model_version_tag(mv.name, mv.version, f"{prefix}.run_id", run_id)
    out(format_results(results, outcome))
    out(f"logged evaluation run {run_id} (experiment {EVALUATION_EXPERIMENT!r}); model version "
        f"{mv.name} v{mv.version} tagged with the results")
    if alias == "candidate":
        out(f"  make it the champion: leoclr promote --run-id {mv.run_id} --alias champion")
    return {"run_id": run_id, "model_name": mv.name, "version": str(mv.version), "alias": alias,
            "source_run_id": mv.run_id, **outcome}


def _ray_address_from_env() -> bool:
    import os

    return bool(os.environ.get("RAY_ADDRESS"))


def format_results(results: dict[str, Any], outcome: dict[str, Any]) -> str:
    p = outcome["protocol"]
    lines = [f"{outcome['dataset']}: {int(results.get('n_train', 0))} train / {int(results.get('n_test', 0))} test "
             f"images, {int(results.get('num_classes', 0))} classes; linear protocol: {p['epochs']} epochs, "
             f"batch {p['batch_size']}, lr {p['lr']:g}, augment={p['augment']}",
             f"  {'':<22}{'top-1':>8}{'top-5':>8}"]
    for label, key in (("linear (center view)", "linear"), ("kNN", "knn"), ("linear (random crops)", "random_crop")):
        lines.append(f"  {label:<22}{results.get(key + '_top1', float('nan')):8.2f}"
                     f"{results.get(key + '_top5', float('nan')):8.2f}")
    lines.append(f"  random-crop drop (Table 7): {results.get('random_crop_drop', float('nan')):.2f} points")
    return "\n".join(lines)
