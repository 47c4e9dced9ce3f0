"""`leoclr evaluate MODEL`: the paper's evaluations of a registered encoder, logged to MLflow.

It loads `models:/<name>@<alias>` (or `/<version>`) through the safe path: the source run's
`checkpoint/encoder.pt` with torch.load(weights_only=True), never an unpickled model; runs
linear evaluation, kNN and the random-crop test (the engine's `trainables.eval`) on the
labelled data, here or as a Ray task (on a GPU when the cluster has one); logs an evaluation
run (experiment `leoclr/evaluation`) tagged with the model version, links the metrics to the
logged model, and tags the version with the results.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from leoclr_platform import tracking
from leoclr_platform.errors import RegistryError, first_line
from leoclr_platform.registry import parse_model_uri, resolve_model_version

EVALUATION_EXPERIMENT = "leoclr/evaluation"
ROLE_EVALUATION = "evaluation"
#: Results copied onto the model version as tags eval.<dataset>.<key>.
VERSION_TAGS = ("linear_top1", "linear_top5", "knn_top1", "random_crop_top1", "random_crop_drop")


def evaluate_model(uri: str, model_uri: str, *, dataset: str | None = None, data_root: str | None = None,
                   protocol_overrides: dict[str, Any] | None = None, device: str | None = None,
                   address: str | None = None, out: Callable[[str], None] = print) -> dict[str, Any]:
    """Evaluate a registered encoder and log the results (see the module docstring)."""
    from trainables.eval import LinearProtocol

    overrides = dict(protocol_overrides or {})
    LinearProtocol.from_dict(overrides, source="evaluate")  # bad protocol settings fail before any download
    parse_model_uri(model_uri)  # and a malformed model URI before the store is opened (or created)
    tracking.check_store(uri)
    tracking.use_store(uri)
    c = tracking.client(uri)
    mv, alias = resolve_model_version(c, model_uri)
    with tempfile.TemporaryDirectory(prefix="leoclr_model_") as tmp:
        files = download_encoder(c, mv, Path(tmp))
    outcome = _run_where_the_compute_is(files, overrides, dataset, data_root, device, address,
                                        announce=lambda where: out(f"evaluating {model_uri} (version "
                                                                   f"{mv.version}) in {where} ..."))
    run_id = _log_evaluation(c, uri, mv, alias, model_uri, outcome)
    out(format_results(outcome["results"], outcome))
    out(f"logged evaluation run {run_id} (experiment {EVALUATION_EXPERIMENT!r}); model version "
        f"{mv.name} v{mv.version} tagged with the results")
    if alias == "candidate":
        out(f"  make it the champion: leoclr promote --run-id {mv.run_id} --alias champion")
    return {"run_id": run_id, "model_name": mv.name, "version": str(mv.version), "alias": alias,
            "source_run_id": mv.run_id, **outcome}


def download_encoder(c, mv, dst: Path) -> dict[str, bytes]:
    """The version's source run's checkpoint files (encoder.pt, config.json), as bytes."""
    import mlflow

    from trainables.checkpoint import CONFIG_FILE, ENCODER_FILE

    files = {}
    for name in (ENCODER_FILE, CONFIG_FILE):
        artifact = f"{tracking.CHECKPOINT_ARTIFACT}/{name}"
        try:
            local = mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path=artifact,
                                                        dst_path=str(dst), tracking_uri=c.tracking_uri)
            files[name] = Path(local).read_bytes()
        except Exception as exc:  # noqa: BLE001
            raise RegistryError(f"cannot fetch {artifact} of run {mv.run_id}: {first_line(exc)}",
                                source=f"model {mv.name} version {mv.version}") from None
    return files


def _run_where_the_compute_is(files, overrides, dataset, data_root, device, address,
                              announce: Callable[[str], None]) -> dict[str, Any]:
    """`evaluate_files` in this process, or as a Ray task with `address` (or inside a Ray job,
    where RAY_ADDRESS is set): on one GPU when the cluster has one."""
    if not (address or os.environ.get("RAY_ADDRESS")):
        announce("this process")
        return evaluate_files(files, overrides, dataset, data_root, device)
    import ray

    from leoclr_platform.sweep import connect_ray

    connect_ray(address)
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    task = ray.remote(num_cpus=1, num_gpus=gpus)(evaluate_files)
    announce(f"a Ray task ({'1 GPU' if gpus else 'CPU'})")
    return ray.get(task.remote(files, overrides, dataset, data_root, device))


def evaluate_files(files: dict[str, bytes], protocol_overrides: dict[str, Any], dataset: str | None,
                   data_root: str | None, device: str | None) -> dict[str, Any]:
    """Runs where the compute is (this process, or a Ray task on a GPU node): the encoder's
    files arrive as bytes, so no node needs access to the tracking store's artifacts."""
    from trainables.checkpoint import load_encoder
    from trainables.data import load_data
    from trainables.eval import LinearProtocol, evaluate_encoder

    with tempfile.TemporaryDirectory(prefix="leoclr_eval_") as tmp:
        for name, blob in files.items():
            (Path(tmp) / name).write_bytes(blob)
        encoder = load_encoder(tmp)
    cfg = encoder.config
    name = dataset or cfg.dataset
    root = data_root if dataset else (data_root or cfg.data_root)
    data = load_data(name, root=root, image_size=cfg.image_size, download=cfg.download,
                     photo_patches=cfg.photo_patches, val_fraction=cfg.val_fraction, val_seed=cfg.val_seed)
    protocol = LinearProtocol.for_dataset_size(len(data.memory), **protocol_overrides)
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    start = time.perf_counter()
    results = evaluate_encoder(encoder.backbone, data, protocol, image_size=cfg.resolved_view_size,
                               device=device, knn_k=cfg.knn_k, knn_temperature=cfg.knn_temperature)
    return {"results": results, "protocol": protocol.to_dict(), "dataset": name, "device": str(device),
            "wall_s": time.perf_counter() - start, "train_config": cfg.to_dict()}


def _log_evaluation(c, uri: str, mv, alias: str | None, model_uri: str, outcome: dict[str, Any]) -> str:
    """The evaluation run (params, metrics linked to the logged model) and the version's tags."""
    from mlflow.entities import Metric, Param

    source = c.get_run(mv.run_id).data.tags
    tags = tracking.scrub({
        **tracking.code_version(), **tracking.package_versions(),
        "role": ROLE_EVALUATION, "model_name": mv.name, "model_version": str(mv.version),
        "model_alias": alias or "", "model_uri": model_uri, "source_run_id": mv.run_id,
        "sweep": source.get("sweep", ""), "trial_id": source.get("trial_id", ""),
        "strategy": source.get("strategy", ""), "dataset": outcome["dataset"], "device": outcome["device"],
    })
    experiment_id = tracking.ensure_experiment(c, EVALUATION_EXPERIMENT, uri)
    run_id = c.create_run(experiment_id, run_name=f"eval {mv.name} v{mv.version} on {outcome['dataset']}",
                          tags=tags).info.run_id
    params = tracking.flatten_params({**{f"protocol.{k}": v for k, v in outcome["protocol"].items()},
                                      "dataset": outcome["dataset"], "backbone": outcome["train_config"]["backbone"]})
    c.log_batch(run_id, params=[Param(k, v) for k, v in tracking.scrub(params).items()])
    stamp = int(time.time() * 1000)
    logged_model = mv.source.split("/")[-1] if str(mv.source).startswith("models:/m-") else None
    numeric = {k: float(v) for k, v in outcome["results"].items() if isinstance(v, (int, float))}
    c.log_batch(run_id, metrics=[Metric(k, v, stamp, 0, model_id=logged_model) for k, v in numeric.items()])
    c.set_terminated(run_id, "FINISHED")
    prefix = f"eval.{outcome['dataset']}"
    for key in VERSION_TAGS:
        if key in numeric:
            c.set_model_version_tag(mv.name, mv.version, f"{prefix}.{key}", f"{numeric[key]:.2f}")
    c.set_model_version_tag(mv.name, mv.version, f"{prefix}.run_id", run_id)
    return run_id


def format_results(results: dict[str, Any], outcome: dict[str, Any]) -> str:
    """The printed table: linear (center view), kNN, linear on random crops; the crop drop."""
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
