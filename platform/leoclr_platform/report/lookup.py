"""Which sweeps a tracking store holds, answered fast: `leoclr report NAME` checks the name first.

A sweep is a parent run tagged role=sweep (its name in the tag `sweep`). For a SQLite store the
tags are read with Python's sqlite3 (MLflow's `runs` and `tags` tables, unchanged since MLflow
1.x; checked with MLflow 3.17), so an unknown name is answered without importing MLflow and
without creating or migrating the database; any other store (an MLflow server) is asked through
MLflow's client. Imports nothing heavy at import time.
"""

from __future__ import annotations

import sqlite3
from typing import Callable

from leoclr_platform.errors import RegistryError
from leoclr_platform.tracking.store import redact_uri, sqlite_path

_SQL = """SELECT s.value FROM tags AS s
JOIN tags AS r ON r.run_uuid = s.run_uuid AND r.key = 'role' AND r.value = 'sweep'
JOIN runs ON runs.run_uuid = s.run_uuid
WHERE s.key = 'sweep' AND runs.lifecycle_stage = 'active'
ORDER BY runs.start_time DESC"""


def _sqlite_sweeps(uri: str) -> list[str] | None:
    """Sweep names in a SQLite store, newest first; [] when the file does not exist; None when
    the file is not an MLflow store this code can read (then MLflow is asked)."""
    db = sqlite_path(uri)
    if not db.exists():
        return []
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5.0)
        try:
            names = [row[0] for row in con.execute(_SQL)]
        finally:
            con.close()
    except sqlite3.Error:
        return None
    return list(dict.fromkeys(names))


def _mlflow_sweeps(uri: str) -> list[str]:
    from leoclr_platform import tracking

    c = tracking.client(uri)
    experiments = [e.experiment_id for e in c.search_experiments(max_results=50000)]
    runs = c.search_runs(experiments, "tags.role = 'sweep'", max_results=50000, order_by=["attributes.start_time DESC"])
    return list(dict.fromkeys(r.data.tags.get("sweep", "") for r in runs if r.data.tags.get("sweep")))


def list_sweeps(uri: str) -> list[str]:
    """Names of the sweeps in the store `uri`, newest first."""
    if sqlite_path(uri) is not None:
        names = _sqlite_sweeps(uri)
        if names is not None:
            return names
    return _mlflow_sweeps(uri)


def check_sweep(uri: str, sweep: str, lister: Callable[[str], list[str]] = list_sweeps) -> None:
    """RegistryError naming the sweeps that exist when `sweep` is not one of them."""
    names = lister(uri)
    if sweep in names:
        return
    shown = redact_uri(uri)
    if names:
        listed = ", ".join(names[:20]) + (f" (and {len(names) - 20} more)" if len(names) > 20 else "")
        there = f"sweeps there, newest first: {listed}"
    else:
        there = "it holds no sweep yet (run one: leoclr sweep SPACE)"
    raise RegistryError(f"not in the tracking store {shown}", key="sweep", value=sweep,
                        message=f"no sweep named {sweep!r} in the tracking store {shown} (check the name, "
                                f"or --tracking-uri / MLFLOW_TRACKING_URI); {there}")
