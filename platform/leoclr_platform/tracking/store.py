"""Where tracking goes: the MLflow store's URI, its check before compute, client and experiment.

Default: an absolute `sqlite:///<project>/mlflow.db` with artifacts in `mlartifacts/` next to
it (Ray trials run in other directories, so nothing is relative); a server when
`--tracking-uri` / `MLFLOW_TRACKING_URI` says so. MLflow 3's plain file store is refused.
"""

from __future__ import annotations

import os
import re
import urllib.error
import urllib.request
from pathlib import Path

from leoclr_platform.errors import TrackingError, first_line


def project_home() -> Path:
    """The folder that holds the default stores: $LEOCLR_HOME, else the current directory, or
    ~/leoclr inside a `ray job submit` working dir (a temporary copy that is deleted)."""
    env = os.environ.get("LEOCLR_HOME")
    if env:
        return Path(env).expanduser().absolute()
    cwd = Path.cwd()
    if "runtime_resources" in cwd.parts or os.environ.get("RAY_JOB_ID"):
        return Path.home() / "leoclr"
    return cwd


def default_tracking_uri() -> str:
    return f"sqlite:///{project_home() / 'mlflow.db'}"


def _uri_error(source: str, uri: str, reason: str, joint: str = ": ") -> TrackingError:
    return TrackingError(reason, source=source, value=uri, message=f"{source}: {uri!r}{joint}{reason}")


def resolve_tracking_uri(arg: str | None = None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else the project's SQLite store.

    Local stores are made absolute (Ray trials and workers run in other directories); a bare
    path ending in .db means a SQLite file. The plain file store (./mlruns) is refused: MLflow 3
    deprecates it and it does not support the model registry well.
    """
    from_env = os.environ.get("MLFLOW_TRACKING_URI")
    uri = (arg or from_env or "").strip() or default_tracking_uri()
    source = "--tracking-uri" if arg else ("MLFLOW_TRACKING_URI" if from_env else "default")
    if uri.lower().startswith("file:"):  # file:///abs/mlruns, and file:mlruns / file:./mlruns too
        raise _uri_error(source, uri, "the plain file store is not supported (MLflow 3 deprecates it); use "
                                      "sqlite:///<dir>/mlflow.db or an MLflow server")
    if "://" not in uri:
        if uri.endswith(".db"):
            return f"sqlite:///{Path(uri).expanduser().absolute()}"
        raise _uri_error(source, uri, "is not a tracking URI: use sqlite:///path/mlflow.db, http://host:port "
                                      "(an MLflow server) or a database URL", joint=" ")
    if uri.split("://", 1)[0].lower() == "sqlite":
        path = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else ""
        if not path or path == ":memory:":
            raise _uri_error(source, uri, "give a SQLite file, e.g. sqlite:////abs/path/mlflow.db")
        if not os.path.isabs(path):
            return f"sqlite:///{Path(path).absolute()}"
    return uri


def is_local_store(uri: str) -> bool:
    return uri.startswith("sqlite:")


def sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def artifact_root_for(uri: str) -> str | None:
    """Artifact location for experiments we create in a local store: `mlartifacts/` next to the
    database (MLflow's own default would be ./mlruns relative to whatever the cwd is)."""
    db = sqlite_path(uri)
    return (db.parent / "mlartifacts").as_uri() if db else None


def redact_uri(uri: str) -> str:
    """Drop user:password from a URI before it is printed or logged."""
    return re.sub(r"://[^/@]+@", "://***@", uri)


def check_store(uri: str, timeout: float = 10.0) -> None:
    """Fail now, with the reason, if the store cannot be used (called before any compute)."""
    if uri.startswith(("http://", "https://")):
        _check_server(uri, timeout)
        return
    db = sqlite_path(uri)
    if db is not None:
        _check_sqlite_folder(uri, db)
    try:
        # creates/migrates the schema once, here in the driver: several processes creating a
        # fresh SQLite schema at the same time corrupt it for good
        client(uri).search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 - every backend raises its own types
        shown = redact_uri(uri)
        raise TrackingError(f"cannot be used: {type(exc).__name__}: {first_line(exc)}", source=shown,
                            message=f"tracking store {shown} cannot be used: {type(exc).__name__}: "
                                    f"{first_line(exc)}") from None


def _check_server(uri: str, timeout: float) -> None:
    shown = redact_uri(uri)
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as resp:
            if resp.status != 200:
                raise TrackingError(f"answered /health with HTTP {resp.status}", source=shown,
                                    message=f"MLflow tracking server {shown} answered /health with HTTP {resp.status}")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        cause = getattr(exc, "reason", None) or exc
        # name the environment when the URI came from it: a forgotten export is easy to miss
        fix = ("fix or unset MLFLOW_TRACKING_URI (set in the environment to this URI)"
               if os.environ.get("MLFLOW_TRACKING_URI", "").strip() == uri else
               "fix --tracking-uri / MLFLOW_TRACKING_URI")
        reason = f"is not reachable ({cause}); start it (`leoclr ui` serves the default store) or {fix}"
        raise TrackingError(reason, source=shown, message=f"MLflow tracking server {shown} {reason}") from None


def _check_sqlite_folder(uri: str, db: Path) -> None:
    shown = redact_uri(uri)

    def error(reason: str) -> TrackingError:
        return TrackingError(reason, source=shown, message=f"tracking store {shown}: {reason}")

    try:
        db.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise error(f"cannot create {db.parent}: {exc.strerror}") from None
    if not os.access(db.parent, os.W_OK) or (db.exists() and not os.access(db, os.W_OK)):
        raise error(f"{db if db.exists() else db.parent} is not writable")


def client(uri: str):
    """An MlflowClient for tracking and registry at `uri`."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def use_store(uri: str) -> None:
    """Point MLflow's module-level helpers (log_model, register_model, artifacts) at `uri`."""
    import mlflow

    before = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    for key, value in before.items():  # MLflow exports the URI; keep our environment as it was
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


#: MLflow 3's UI opens an experiment in its model-training view (not GenAI traces) with this tag.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def ensure_experiment(c, name: str, uri: str) -> str:
    """The id of experiment `name`, created (artifacts next to a local store, marked as model
    training for MLflow's UI) if missing."""
    exp = c.get_experiment_by_name(name)
    if exp is None:
        root = artifact_root_for(uri)
        location = f"{root}/{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}" if root else None
        try:
            return c.create_experiment(name, artifact_location=location, tags=dict(EXPERIMENT_KIND))
        except Exception:  # noqa: BLE001 - created meanwhile by another process
            exp = c.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.lifecycle_stage != "active":
        raise TrackingError("is deleted: restore it in the UI or pass another --experiment", key="experiment",
                            value=name, message=f"MLflow experiment {name!r} is deleted: restore it in the UI "
                                                "or pass another --experiment")
    return exp.experiment_id
