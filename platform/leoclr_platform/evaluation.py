"""`leoclr evaluate`: the paper's evaluation protocols on a registered encoder or a checkpoint,
beside the recalibrated random baseline, logged to MLflow.

`evaluate_model(uri, "models:/<name>@<alias>" | "models:/<name>/<version>", protocols=...)`
loads the version's encoder through the safe path (the source run's `checkpoint/encoder.pt`
with torch.load(weights_only=True), never an unpickled model); `evaluate_model(uri,
checkpoint=PATH)` reads a `leoclr train` output folder (its newest checkpoint) without the
registry. The protocols (`trainables.eval.parse_protocols`: knn, linear, random_crop,
semi_1pct, semi_10pct, transfer:<dataset>) and their settings are validated before the store is
opened or anything is downloaded; the compute (`evaluation_compute.evaluate_files`) runs here or
as a Ray task (`address`, or inside a Ray job: on one GPU when the cluster has one); the results
are logged as one evaluation run with a child run per protocol (`evaluation_runs`) and printed
(`evaluation_format`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

from leoclr_platform import tracking
from leoclr_platform.errors import RegistryError, first_line
from leoclr_platform.evaluation_compute import DEFAULT_PROTOCOLS, evaluate_files
from leoclr_platform.evaluation_format import format_results, format_settings, format_table
from leoclr_platform.evaluation_runs import EVALUATION_EXPERIMENT, ROLE_EVALUATION, log_evaluation
from leoclr_platform.registry import parse_model_uri, resolve_model_version

__all__ = ["DEFAULT_PROTOCOLS", "EVALUATION_EXPERIMENT", "ROLE_EVALUATION", "check_request", "download_encoder",
           "evaluate_files", "evaluate_model", "format_results", "format_table", "read_checkpoint"]


def check_request(protocols: str, settings: Mapping[str, Any] | None = None,
                  protocol_overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The request the compute gets: {"protocols", "settings", "baseline"}, every protocol name,
    field and value checked (``ProtocolError`` before any store or compute); settings for a
    protocol that is not run are refused. `protocol_overrides`: linear-protocol fields (the
    older flat form)."""
    from trainables.eval import ProtocolError, parse_protocols

    merged = {str(k): dict(v) if isinstance(v, Mapping) else v for k, v in (settings or {}).items()}
    if protocol_overrides:
        merged["linear"] = {**dict(protocol_overrides), **merged.get("linear", {})}
    specs = parse_protocols(protocols, merged)
    used = {s.name for s in specs} | {s.kind for s in specs}
    for key in merged:
        if key not in used:
            raise ProtocolError(f"settings for a protocol that is not run (--protocols {protocols}); add it to "
                                "--protocols or drop the setting", source="--set", key="protocol", value=key)
    return {"protocols": ",".join(s.name for s in specs), "settings": merged, "baseline": True}


def evaluate_model(uri: str, model_uri: str | None = None, *, checkpoint: str | None = None,
                   protocols: str = DEFAULT_PROTOCOLS, settings: Mapping[str, Any] | None = None,
                   protocol_overrides: Mapping[str, Any] | None = None, dataset: str | None = None,
                   data_root: str | None = None, device: str | None = None, address: str | None = None,
                   out: Callable[[str], None] = print) -> dict[str, Any]:
    """Evaluate a registered encoder (`model_uri`) or a checkpoint folder and log the results
    (see the module docstring). Returns {"run_id", "version", "source_run_id", ...outcome}."""
    if bool(model_uri) == bool(checkpoint):
        raise RegistryError("give exactly one of MODEL_URI (models:/<name>@<alias>) or --checkpoint PATH",
                            source="evaluate")
    request = check_request(protocols, settings, protocol_overrides)
    if checkpoint:
        return _evaluate_checkpoint(uri, checkpoint, request, dataset, data_root, device, address, out)
    parse_model_uri(model_uri)  # a malformed model URI fails before the store is opened (or created)
    tracking.check_store(uri)
    tracking.use_store(uri)
    c = tracking.client(uri)
    mv, alias = resolve_model_version(c, model_uri)
    with tempfile.TemporaryDirectory(prefix="leoclr_model_") as tmp:
        files = download_encoder(c, mv, Path(tmp))
    outcome = _run_where_the_compute_is(files, request, dataset, data_root, device, address, out,
                                        announce=lambda where: out(f"evaluating {model_uri} (version "
                                                                   f"{mv.version}) in {where} ..."))
    run_id = log_evaluation(c, uri, outcome, mv=mv, alias=alias, model_uri=model_uri)
    _print(outcome, out)
    out(f"logged evaluation run {run_id} (experiment {EVALUATION_EXPERIMENT!r}, a child run per protocol); "
        f"model version {mv.name} v{mv.version} tagged with the results")
    if alias == "candidate":
        out(f"  make it the champion: leoclr promote --run-id {mv.run_id} --alias champion")
    return {"run_id": run_id, "model_name": mv.name, "version": str(mv.version), "alias": alias,
            "source_run_id": mv.run_id, **outcome}


def _evaluate_checkpoint(uri, checkpoint, request, dataset, data_root, device, address, out) -> dict[str, Any]:
    """A `leoclr train` output (no registry): logged as an evaluation run without version tags."""
    folder, files = read_checkpoint(checkpoint)
    tracking.check_store(uri)
    tracking.use_store(uri)
    c = tracking.client(uri)
    outcome = _run_where_the_compute_is(files, request, dataset, data_root, device, address, out,
                                        announce=lambda where: out(f"evaluating checkpoint {folder} in {where} ..."))
    run_id = log_evaluation(c, uri, outcome, checkpoint=str(folder))
    _print(outcome, out)
    out(f"logged evaluation run {run_id} (experiment {EVALUATION_EXPERIMENT!r}, a child run per protocol)")
    return {"run_id": run_id, "model_name": None, "version": None, "alias": None, "source_run_id": None,
            "checkpoint": str(folder), **outcome}


def _print(outcome: dict[str, Any], out: Callable[[str], None]) -> None:
    if not outcome.get("settings_shown"):  # a Ray task's: shown after its compute
        out(format_settings(outcome["protocols"]))
    out(format_table(outcome))


def read_checkpoint(path: str) -> tuple[Path, dict[str, bytes]]:
    """(folder, {encoder.pt, config.json bytes}) of a checkpoint: a checkpoint folder
    (`epoch_NNNN/`), its `encoder.pt`, or a folder of checkpoints (a `leoclr train` output or its
    `checkpoints/`), whose newest one is taken. Problems are a CheckpointError naming the path."""
    from trainables.checkpoint import CONFIG_FILE, ENCODER_FILE, CheckpointError, checkpoints_newest_first

    given = Path(path).expanduser()
    folder = given.parent if given.is_file() and given.name == ENCODER_FILE else given
    if not folder.is_dir():
        raise CheckpointError("no such checkpoint folder (give a `leoclr train` output folder or one of its "
                              "checkpoints/epoch_NNNN folders)", source=str(path))
    if not (folder / ENCODER_FILE).is_file():
        for candidate in (folder / "checkpoints", folder):
            newest = [p for p in (checkpoints_newest_first(candidate) if candidate.is_dir() else [])
                      if (p / ENCODER_FILE).is_file()]
            if newest:
                folder = newest[0]
                break
        else:
            raise CheckpointError(f"holds no {ENCODER_FILE} and no checkpoint folder with one (checkpoints/"
                                  "epoch_NNNN/, as `leoclr train` writes)", source=str(path))
    from trainables.checkpoint import load_encoder

    load_encoder(folder)  # a foreign or truncated file, or a backbone that does not match, fails here
    files = {}
    for name in (ENCODER_FILE, CONFIG_FILE):
        try:
            files[name] = (folder / name).read_bytes()
        except OSError as exc:
            raise CheckpointError(f"cannot read it: {exc.strerror or exc}", source=str(folder / name)) from None
    return folder.resolve(), files


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


def _run_where_the_compute_is(files, request, dataset, data_root, device, address, out: Callable[[str], None],
                              announce: Callable[[str], None]) -> dict[str, Any]:
    """`evaluate_files` in this process, or as a Ray task with `address` (or inside a Ray job,
    where RAY_ADDRESS is set): on one GPU when the cluster has one."""
    if not (address or os.environ.get("RAY_ADDRESS")):
        announce("this process")
        return evaluate_files(files, request, dataset, data_root, device, out=out)
    import ray

    from leoclr_platform.sweep import connect_ray

    connect_ray(address)
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    task = ray.remote(num_cpus=1, num_gpus=gpus)(evaluate_files)
    announce(f"a Ray task ({'1 GPU' if gpus else 'CPU'})")
    return ray.get(task.remote(files, request, dataset, data_root, device))
