"""The Optuna study of a search sweep, in an RDB: opened before compute, tidied after.

The study lives in SQLite next to the results (`<root>/optuna.db`) unless `--study-storage`
names another database, so a sweep can be resumed or extended with the same TPE history.
"""

from __future__ import annotations

from pathlib import Path

from leoclr_platform.errors import SweepError, first_line
from leoclr_platform.sweep.paths import STUDY_FILE, is_uri


def open_study_storage(root: str, study_storage: str | None):
    """(URL, optuna RDBStorage) of the sweep's study; SweepError naming the flag if it cannot open."""
    import optuna

    from leoclr_platform.tracking import redact_uri

    url = study_storage or f"sqlite:///{Path(root) / STUDY_FILE}"
    if is_uri(root) and not study_storage:
        raise SweepError("is remote: pass --study-storage (an RDB URL for the Optuna study)", key="storage",
                         value=root, message=f"storage {root!r} is remote: pass --study-storage (an RDB URL "
                                             "for the Optuna study)")
    try:
        return url, optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}}
                                               if url.startswith("sqlite") else {})
    except Exception as exc:  # noqa: BLE001 - a bad URL, a missing driver, an unreachable server
        shown = redact_uri(url)
        where = f"--study-storage {shown!r}" if study_storage else f"study storage {shown!r}"
        reason = f"cannot open the Optuna study storage: {type(exc).__name__}: {first_line(exc, limit=10**6)}"
        raise SweepError(reason, key="--study-storage", value=shown, message=f"{where}: {reason}") from None


def fail_zombie_trials(rdb, study_name: str) -> int:
    """Mark study trials still RUNNING after the sweep ended (asked just before a driver was
    killed, then asked again on resume) as FAIL, so the study tells the truth. Returns how many."""
    import optuna
    from optuna.trial import TrialState

    study = optuna.load_study(study_name=study_name, storage=rdb)
    zombies = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for t in zombies:
        study.tell(t.number, state=TrialState.FAIL)
    return len(zombies)
