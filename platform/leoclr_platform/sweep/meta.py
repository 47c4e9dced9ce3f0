"""sweep.json: what a sweep ran, kept next to its results so it can be resumed and replayed.

It holds the space's YAML text and what differed from it (`--trials`, `--max-epochs`,
`--smoke-test`, a spec changed in code), the study, the tracking store and experiment, how
trials trained (`launcher`) and the environment measured at the start (provenance, hardware;
see tracking/sweep_record.py). `leoclr sweep --resume` and `leoclr sync` rebuild the spec that
really ran from it, not the file's.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from leoclr_platform.errors import SweepError
from leoclr_platform.spaces import ParamSpec, SweepSpec, parse_space
from leoclr_platform.sweep.paths import SWEEP_META, is_uri

#: SweepSpec fields that may differ from the YAML text and are kept in "spec_changes".
SPEC_FIELDS = ("mode", "base", "params", "metric", "metric_mode", "trials", "max_epochs", "grace_period",
               "reduction_factor", "startup_trials", "max_concurrent", "workers", "cpus_per_worker",
               "gpus_per_worker", "launcher", "seeds", "confirm")


def new_meta(spec: SweepSpec, name: str, *, study_url: str, study_storage_arg: str | None,
             tracking_uri: str | None, experiment: str, launcher: str) -> dict[str, Any]:
    """The sweep.json of a new sweep (the environment is added once Ray is up)."""
    return {"name": name, "space_name": spec.name, "space_source": spec.label,
            "space_path": str(spec.path) if spec.path else None, "space_text": spec.text,
            "spec_changes": spec_changes(spec), "study_name": name, "study_storage": study_url,
            "study_storage_arg": study_storage_arg, "tracking_uri": tracking_uri, "experiment": experiment,
            "launcher": launcher, "created": time.time()}


def spec_changes(spec: SweepSpec) -> dict[str, Any]:
    """What differs between the spec that runs and its YAML text."""
    parsed = parse_space(spec.text, source=spec.label)
    changes = {}
    for name in SPEC_FIELDS:
        value = getattr(spec, name)
        if value != getattr(parsed, name):
            changes[name] = [dataclasses.asdict(p) for p in value] if name == "params" else value
    return changes


def spec_from_meta(meta: dict[str, Any]) -> SweepSpec:
    """The spec that ran: the YAML text of sweep.json with its recorded changes."""
    spec = parse_space(meta["space_text"], source=meta["space_source"])
    changes = dict(meta.get("spec_changes") or {})
    if "params" in changes:
        changes["params"] = [ParamSpec(**p) for p in changes["params"]]
    return dataclasses.replace(spec, path=Path(meta["space_path"]) if meta.get("space_path") else None, **changes)


def resumed_spec(meta: dict[str, Any]) -> SweepSpec:
    """The spec a resumed sweep goes on with. A sweep started before one-worker trials could
    train in the trial itself (its sweep.json has no "launcher") goes on with Ray Train: its
    restored trials hold a Train driver's resources ({"CPU": 0}) and no Tune retries."""
    spec = spec_from_meta(meta)
    if "launcher" not in meta:
        spec = dataclasses.replace(spec, launcher="ray_train")
    return spec


def write_meta(root: str, meta: dict[str, Any]) -> None:
    """Write `<root>/sweep.json` (root may be a pyarrow URI)."""
    text = json.dumps(meta, indent=2)
    if not is_uri(root):
        (Path(root) / SWEEP_META).write_text(text)
        return
    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(root)
    fs.create_dir(path, recursive=True)
    with fs.open_output_stream(f"{path}/{SWEEP_META}") as f:
        f.write(text.encode())


def read_meta(root: str, action: str = "resume") -> dict[str, Any]:
    """`<root>/sweep.json`; SweepError "no sweep to <action> at <root>" if there is none."""
    try:
        if not is_uri(root):
            return json.loads((Path(root) / SWEEP_META).read_text())
        import pyarrow.fs as pafs

        fs, path = pafs.FileSystem.from_uri(root)
        with fs.open_input_stream(f"{path}/{SWEEP_META}") as f:
            return json.loads(f.read())
    except (FileNotFoundError, OSError):
        reason = f"no sweep to {action} at {root} ({SWEEP_META} not found); check the name and --storage"
        raise SweepError(reason, source=root, message=reason) from None
