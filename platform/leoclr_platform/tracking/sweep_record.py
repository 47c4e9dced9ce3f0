"""THE record of a sweep's parent run: its params, tags and artifacts, built in one place.

Both the live sweep (`sweep/run.py`, when it opens the parent run) and `leoclr sync` (which
rebuilds it from the files on disk) call `sweep_record(spec, meta, root)`, so a synced parent
run carries the same params and tags as a live one. What depends on the moment and the machine
(the code's commit and versions, the cluster's hardware) is measured once, when the sweep
starts (`environment`), and kept in sweep.json; both paths read it from there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from leoclr_platform.spaces import SweepSpec, describe
from leoclr_platform.tracking.provenance import code_version, hardware_tags, package_versions
from leoclr_platform.tracking.run_text import sweep_description


@dataclass(frozen=True)
class SweepRecord:
    """What the parent run of a sweep holds (besides its status and later artifacts)."""

    sweep: str                  # the run's name and the `sweep` tag
    space_name: str             # the `space` tag
    space_text: str             # logged as space/<space_file>
    space_file: str
    params: dict[str, Any]      # the sweep's budget, resources, objective, results folder
    tags: dict[str, str]        # mode, objective, provenance, hardware (trial runs share them)
    meta: dict[str, Any]        # sweep.json without the space text, logged as sweep.json
    description: str = ""       # the run's description (mlflow.note.content): the space described


def environment(spec: SweepSpec, cluster: Mapping[str, float] | None) -> dict[str, dict[str, str]]:
    """What the sweep ran with, measured when it starts: {"provenance": {git_commit, code_hash,
    versions.*}, "hardware": {hardware.*}}. Kept in sweep.json."""
    return {"provenance": {**code_version(), **package_versions()},
            "hardware": hardware_tags(spec.workers, spec.cpus_per_worker, spec.gpus_per_worker, cluster)}


def sweep_record(spec: SweepSpec, meta: Mapping[str, Any], root: str) -> SweepRecord:
    """The parent run's record of the sweep `meta["name"]` whose results are in `root`.

    A sweep.json written before the environment was kept there gets this machine's (the best
    that can be said after the fact)."""
    params: dict[str, Any] = {
        "space": spec.name, "mode": spec.mode, "objective": f"{spec.metric} ({spec.metric_mode})",
        "trials": spec.total_trials(), "max_epochs": spec.max_epochs, "seeds": list(spec.seeds),
        "searched": [p.name for p in spec.params], "workers": spec.workers,
        "cpus_per_worker": spec.cpus_per_worker, "gpus_per_worker": spec.gpus_per_worker, "results": root,
    }
    if spec.mode == "search":
        params.update(grace_period=spec.grace_period, reduction_factor=spec.reduction_factor)
    measured = environment(spec, None) if not meta.get("provenance") or not meta.get("hardware") else {}
    tags = {**(meta.get("provenance") or measured["provenance"]), **(meta.get("hardware") or measured["hardware"]),
            "mode": spec.mode, "objective": spec.metric}
    return SweepRecord(
        sweep=meta["name"], space_name=spec.name, space_text=spec.text,
        space_file=spec.path.name if spec.path else f"{spec.name}.yaml",
        params=params, tags=tags, meta={k: v for k, v in meta.items() if k != "space_text"},
        description=sweep_description(describe(spec)))
