"""The compute side of `leoclr evaluate`: runs where the compute is (this process, or a Ray task
on a GPU node) and returns plain data (picklable, no torch objects) for the tracking side.

`evaluate_files(files, request, ...)`: the encoder arrives as the bytes of its checkpoint files
(`encoder.pt`, `config.json`), so no node needs the tracking store. It loads the labelled data,
parses the protocols against it (defaults scaled to its size), loads every transfer dataset
(a missing one fails here, before any compute), then runs every protocol twice: on the encoder
and on the recalibrated random baseline (`trainables.eval.recalibrated_random_backbone`: the
same backbone, the encoder's seed, random weights, BatchNorm statistics re-estimated on the
training images; docs/method.md, "Evaluation"). Each protocol's compute is timed by wall-clock
stamps (ms since the epoch) taken around its own work, and every epoch of its schedule is
stamped when the engine reports it, so the runs logged later carry the compute's own times.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

#: Metrics of a protocol's result that measure accuracy (the baseline row repeats these).
ACCURACY_KEYS = ("top1", "top5", "drop", "linear_top1", "linear_top5", "finetune_top1", "finetune_top5")
DEFAULT_PROTOCOLS = "knn,linear,random_crop"


def metric_prefix(name: str) -> str:
    """A protocol's name as a metric prefix: transfer:cifar100 -> transfer_cifar100, semi:0.05 ->
    semi_0_05 (MLflow metric names; docs/tracking.md)."""
    return name.replace(":", "_").replace(".", "_").replace("/", "_")


def now_ms() -> int:
    return int(time.time() * 1000)


def load_files(files: Mapping[str, bytes]):
    """The encoder (`trainables.checkpoint.load_encoder`) from its files' bytes."""
    from trainables.checkpoint import load_encoder

    with tempfile.TemporaryDirectory(prefix="leoclr_eval_") as tmp:
        for name, blob in files.items():
            (Path(tmp) / name).write_bytes(blob)
        return load_encoder(tmp)


def evaluate_files(files: dict[str, bytes], request: dict[str, Any], dataset: str | None,
                   data_root: str | None, device: str | None, out: Callable[[str], None] | None = None
                   ) -> dict[str, Any]:
    """Evaluate the encoder in `files` by `request` ({"protocols": text, "settings": {name or
    kind: {field: value}}, "baseline": bool}); returns the outcome (see `_outcome`). `out`
    (in this process only): prints the resolved settings before the compute starts."""
    import torch

    from trainables.data import load_data
    from trainables.eval import load_transfer_data, parse_protocols

    encoder = load_files(files)
    cfg = encoder.config
    name = dataset or cfg.dataset
    root = data_root if dataset else (data_root or cfg.data_root)
    data = load_data(name, root=root, image_size=cfg.image_size, download=cfg.download,
                     photo_patches=cfg.photo_patches, val_fraction=cfg.val_fraction, val_seed=cfg.val_seed)
    specs = parse_protocols(request["protocols"], protocol_settings(cfg, request["settings"]), data=data)
    view = cfg.resolved_view_size
    transfer = {s.name: load_transfer_data(s.settings, view, source=s.name) for s in specs if s.kind == "transfer"}
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if out is not None:
        from leoclr_platform.evaluation_format import format_settings

        out(format_settings({s.name: {"kind": s.kind, "settings": s.settings.to_dict()} for s in specs}))
    start = now_ms()
    measured = run_timed(encoder.backbone, data, specs, transfer, view, device)
    baseline = None
    if request.get("baseline", True):
        from trainables.eval import recalibrated_random_backbone

        random = recalibrated_random_backbone(cfg, data, device)
        baseline = run_timed(random, data, specs, transfer, view, device)
    outcome = _outcome(specs, measured, baseline, name=name, device=device, cfg=cfg, start=start)
    return {**outcome, "settings_shown": out is not None}


def protocol_settings(cfg, settings: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The request's settings, the kNN defaulting to the run's own k and temperature (so the
    evaluation's `knn` is the protocol of the run's test_knn_top1)."""
    out = {k: dict(v) for k, v in settings.items()}
    out["knn"] = {"k": cfg.knn_k, "temperature": cfg.knn_temperature, **out.get("knn", {})}
    return out


def _groups(specs: Sequence) -> list[list]:
    """Protocols run together: random_crop tests the classifier of the linear run just before it."""
    groups: list[list] = []
    for spec in specs:
        if spec.kind == "random_crop" and groups and groups[-1][-1].kind == "linear":
            groups[-1].append(spec)
        else:
            groups.append([spec])
    return groups


def run_timed(backbone, data, specs: Sequence, transfer: Mapping[str, Any], view: int,
              device: str) -> dict[str, dict[str, Any]]:
    """Every protocol of `specs` on `backbone`: {name: {"metrics", "history", "start_ms",
    "end_ms"}}; history: every epoch's stats with its wall-clock stamp `time_ms`."""
    from trainables.eval import run_protocols, run_transfer

    out: dict[str, dict[str, Any]] = {}
    for group in _groups(specs):
        events: list[dict[str, Any]] = []

        def progress(name: str, stats: dict[str, float]) -> None:
            protocol, _, part = name.partition("/")
            events.append({"protocol": protocol, "part": part, "time_ms": now_ms(), **stats})

        start = now_ms()
        if group[0].kind == "transfer":
            spec = group[0]
            metrics = run_transfer(backbone, spec.settings, image_size=view, device=device, data=transfer[spec.name],
                                   progress=lambda part, stats, n=spec.name: progress(f"{n}/{part}", stats))
            results = {spec.name: metrics}
        else:
            results = {n: r.metrics for n, r in run_protocols(backbone, data, group, image_size=view, device=device,
                                                               progress=progress).items()}
        end = now_ms()
        bounds = {group[0].name: (start, end)}
        if len(group) == 2:  # linear then random_crop: split at random_crop's own compute time
            split = end - int(1000 * float(results[group[1].name].get("eval_time_s", 0.0)))
            bounds = {group[0].name: (start, split), group[1].name: (split, end)}
        for spec in group:
            out[spec.name] = {"metrics": {k: float(v) for k, v in results[spec.name].items()
                                          if isinstance(v, (int, float))},
                              "history": [e for e in events if e["protocol"] == spec.name],
                              "start_ms": bounds[spec.name][0], "end_ms": bounds[spec.name][1]}
    return out


def _outcome(specs, measured, baseline, *, name: str, device: str, cfg, start: int) -> dict[str, Any]:
    """Plain data: `protocols` (name -> kind, settings, prefix, metrics, history, times, and the
    baseline's), `results` / `baseline` (flat `<prefix>_<metric>`), `protocol` (the linear
    settings, for older callers), dataset, device, train_config, start_ms / end_ms, wall_s."""
    protocols, results, base_flat = {}, {}, {}
    for spec in specs:
        prefix = metric_prefix(spec.name)
        entry = {"kind": spec.kind, "prefix": prefix, "settings": spec.settings.to_dict(), **measured[spec.name]}
        results.update({f"{prefix}_{k}": v for k, v in entry["metrics"].items()})
        if baseline is not None:
            entry["baseline"] = baseline[spec.name]
            base_flat.update({f"{prefix}_{k}": v for k, v in baseline[spec.name]["metrics"].items()
                              if k in ACCURACY_KEYS})
        protocols[spec.name] = entry
    end = now_ms()
    linear = protocols.get("linear", {}).get("settings", {})
    return {"protocols": protocols, "results": results, "baseline": base_flat, "protocol": linear,
            "dataset": name, "device": str(device), "train_config": cfg.to_dict(),
            "start_ms": start, "end_ms": end, "wall_s": (end - start) / 1000.0}
