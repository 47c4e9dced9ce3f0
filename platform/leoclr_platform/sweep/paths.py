"""Where a sweep's files live under its storage root, and how to find a trial's checkpoints.

  <storage>/<sweep>/               the Tune experiment (resumable with `leoclr sweep --resume`)
  <storage>/<sweep>/train/         one run folder (checkpoints) per trial: trial_<trial id>/
  <storage>/<sweep>/optuna.db      the Optuna study (SQLite) unless --study-storage is given
  <storage>/<sweep>/sweep.json     what was run: space, study, names, environment (meta.py)
  <storage>/<sweep>/summary.json   the outcome table (results.py)
The storage root may be a URI (s3://...), read and written through pyarrow.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

SWEEP_META = "sweep.json"
SUMMARY_FILE = "summary.json"
TRAIN_DIR = "train"
STUDY_FILE = "optuna.db"


def default_storage() -> Path:
    """`./runs` normally; inside a `ray job submit` working dir (a temporary copy), ~/leoclr/runs."""
    env = os.environ.get("LEOCLR_STORAGE")
    if env:
        return Path(env).expanduser().absolute()
    cwd = Path.cwd()
    if "runtime_resources" in cwd.parts or os.environ.get("RAY_JOB_ID"):
        return Path.home() / "leoclr" / "runs"
    return cwd / "runs"


def sweep_root(storage: str | None, name: str) -> str:
    """The folder (or URI) of sweep `name` under `storage` (default: `default_storage()`)."""
    return os.path.join(storage or str(default_storage()), name)


def is_uri(path: str) -> bool:
    return "://" in path


def trial_run_dir(root: str, trial_id: str) -> Path:
    """Where a trial's checkpoints go (a Ray Train run or an in-trial run alike)."""
    return Path(root) / TRAIN_DIR / f"trial_{trial_id}"


def latest_checkpoint(root: str, trial_id: str) -> str | None:
    """The trial's checkpoint with the highest epoch (the final encoder of a finished trial)."""
    from trainables.checkpoint import checkpoints_newest_first

    run = trial_run_dir(root, trial_id)
    if is_uri(root) or not run.is_dir():
        return None
    found = checkpoints_newest_first(run)  # temp dirs and folders without checkpoint.pt skipped
    return str(found[0]) if found else None


def trial_id_from_path(path: str) -> str:
    """Tune names trial folders `<trainable>_<trial id>_<index>_<params>_<time>`."""
    match = re.search(r"_([0-9a-f]{5,8}(?:_[0-9]{5})?)_\d+_", os.path.basename(path))
    return match.group(1) if match else os.path.basename(path)
