"""MLflow tracking of sweeps: one parent run per sweep, one child run per trial.

What lands where (docs/tracking.md has the full picture):
  experiment  "leoclr/<space name>" (or --experiment); artifact root next to a local store
  parent run  named after the sweep; tags role=sweep, sweep, space, mode, objective, git commit,
              versions, hardware; params = the sweep's budget and resources; artifacts: the
              search-space YAML and sweep.json
  child run   one per Tune trial ("trial_<id>", tag mlflow.parentRunId); params = the trial's
              full resolved TrainConfig (flattened: `photo_patches.train_per_class`); tags
              sweep, trial_id, strategy, mechanism, seed, config_hash, versions, hardware;
              metrics per epoch with step=epoch (rank 0's values, as Ray Train forwards them);
              at the end (finished trials) the encoder backbone as an MLflow PyTorch model
              (`encoder`, with an input example) and the final checkpoint folder (`checkpoint/`)
  status      FINISHED, KILLED (stopped early by ASHA) or FAILED (tag failure_reason)

One writer: everything is written by the sweep driver (a Ray Tune callback), never by the
training workers. A single SQLite file is safe with one writer, a tracking server sees one
client, and a worker crash cannot leave half-written runs. Calls go through `AsyncLogger`: one
background thread delivers them in order and retries with backoff while the store is away, so
training never waits for tracking; whatever is still undelivered when the sweep ends can be
replayed from the results on disk with `leoclr sync NAME` (same code path, idempotent).

Idempotency (a retried, resumed or re-synced trial never duplicates anything): runs are found
by tags (sweep + trial_id) before one is created; an epoch is logged only if that step is not in
the run's history yet; params are logged with the same values again (MLflow accepts that); the
model is logged only if the run has no `model_uri` tag yet.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform as _stdlib_platform
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

# metrics the loop reports each epoch that are logged to MLflow (everything else Tune adds,
# such as time_total_s or checkpoint_path, is bookkeeping)
EPOCH_METRICS = (
    "loss", "knn_top1", "knn_top5", "lr", "images_per_s", "epoch_time_s", "train_time_s",
    "knn_time_s", "steps", "knn_top1_init", "knn_top5_init",
)
ROLE_SWEEP, ROLE_TRIAL, ROLE_EVALUATION = "sweep", "trial", "evaluation"
MODEL_ARTIFACT = "encoder"
CHECKPOINT_ARTIFACT = "checkpoint"
DEFAULT_MODEL_NAME = "leoclr-encoder"
_SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|PRIVATE|API_KEY|ACCESS_KEY|AUTH", re.I)


class TrackingError(RuntimeError):
    """The tracking store cannot be used (unreachable server, unwritable path, bad URI...)."""


# ---------------------------------------------------------------------------------------------
# Where things are stored
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


def resolve_tracking_uri(arg: str | None = None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else the project's SQLite store.

    Local stores are made absolute (Ray trials and workers run in other directories); a bare
    path ending in .db means a SQLite file. The plain file store (./mlruns) is refused: MLflow 3
    deprecates it and it does not support the model registry well.
    """
    uri = (arg or os.environ.get("MLFLOW_TRACKING_URI") or "").strip() or default_tracking_uri()
    source = "--tracking-uri" if arg else ("MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI") else "default")
    if uri.lower().startswith("file:"):  # file:///abs/mlruns, and file:mlruns / file:./mlruns too
        raise TrackingError(f"{source}: {uri!r}: the plain file store is not supported (MLflow 3 deprecates "
                            "it); use sqlite:///<dir>/mlflow.db or an MLflow server")
    if "://" not in uri:
        if uri.endswith(".db"):
            return f"sqlite:///{Path(uri).expanduser().absolute()}"
        raise TrackingError(f"{source}: {uri!r} is not a tracking URI: use sqlite:///path/mlflow.db, "
                            "http://host:port (an MLflow server) or a database URL")
    scheme = uri.split("://", 1)[0].lower()
    if scheme == "sqlite":
        path = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else ""
        if not path or path == ":memory:":
            raise TrackingError(f"{source}: {uri!r}: give a SQLite file, e.g. sqlite:////abs/path/mlflow.db")
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
    shown = redact_uri(uri)
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as resp:
                if resp.status != 200:
                    raise TrackingError(f"MLflow tracking server {shown} answered /health with HTTP {resp.status}")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            # name the environment when the URI came from it: a forgotten export is easy to miss
            fix = ("fix or unset MLFLOW_TRACKING_URI (set in the environment to this URI)"
                   if os.environ.get("MLFLOW_TRACKING_URI", "").strip() == uri else
                   "fix --tracking-uri / MLFLOW_TRACKING_URI")
            raise TrackingError(
                f"MLflow tracking server {shown} is not reachable ({reason}); start it (`leoclr ui` serves the "
                f"default store) or {fix}") from None
        return
    db = sqlite_path(uri)
    if db is not None:
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrackingError(f"tracking store {shown}: cannot create {db.parent}: {exc.strerror}") from None
        if not os.access(db.parent, os.W_OK) or (db.exists() and not os.access(db, os.W_OK)):
            raise TrackingError(f"tracking store {shown}: {db if db.exists() else db.parent} is not writable")
    try:
        # creates/migrates the schema once, here in the driver: several processes creating a
        # fresh SQLite schema at the same time corrupt it for good
        client(uri).search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 - every backend raises its own types
        raise TrackingError(f"tracking store {shown} cannot be used: {type(exc).__name__}: {_first_line(exc)}") from None


def client(uri: str):
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


def ensure_experiment(c, name: str, uri: str) -> str:
    exp = c.get_experiment_by_name(name)
    if exp is None:
        root = artifact_root_for(uri)
        location = f"{root}/{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}" if root else None
        try:
            return c.create_experiment(name, artifact_location=location)
        except Exception:  # noqa: BLE001 - created meanwhile by another process
            exp = c.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.lifecycle_stage != "active":
        raise TrackingError(f"MLflow experiment {name!r} is deleted: restore it in the UI or pass another --experiment")
    return exp.experiment_id


# ---------------------------------------------------------------------------------------------
# What a run carries
def flatten_params(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """{"photo_patches": {"train_per_class": 32}} -> {"photo_patches.train_per_class": "32"}."""
    out: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_params(value, prefix=f"{name}."))
        elif isinstance(value, (list, tuple)):
            out[name] = json.dumps(list(value))
        else:
            out[name] = "None" if value is None else str(value)
    return out


def config_hash(config: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(dict(config), sort_keys=True, default=str).encode()).hexdigest()[:16]


def _secret_values() -> list[str]:
    return [v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= 6]


def scrub(values: Mapping[str, str]) -> dict[str, str]:
    """Replace any secret from the environment (names like *SECRET*, *TOKEN*, *PASSWORD*...) and
    URI credentials by *** in values about to be logged."""
    secrets = _secret_values()
    out = {}
    for key, value in values.items():
        value = redact_uri(str(value))
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, "***")
        out[key] = value
    return out


_SOURCE_ROOT = Path(__file__).resolve().parents[2]


def code_version() -> dict[str, str]:
    """git commit (if this is a checkout; $LEOCLR_GIT_COMMIT otherwise) and a hash of the code."""
    out = {}
    commit = os.environ.get("LEOCLR_GIT_COMMIT")
    if not commit and (_SOURCE_ROOT / ".git").exists():
        try:
            commit = subprocess.run(["git", "-C", str(_SOURCE_ROOT), "rev-parse", "HEAD"], capture_output=True,
                                    text=True, timeout=10).stdout.strip()
            dirty = subprocess.run(["git", "-C", str(_SOURCE_ROOT), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=10).stdout.strip()
            if commit and dirty:
                out["git_dirty"] = "true"
        except (OSError, subprocess.SubprocessError):
            commit = None
    out["git_commit"] = commit or "unknown"
    if commit:
        out["mlflow.source.git.commit"] = commit
    digest = hashlib.sha256()
    import leoclr_platform
    import trainables

    for package in (Path(trainables.__file__).parent, Path(leoclr_platform.__file__).parent):
        for file in sorted(package.glob("*.py")):
            digest.update(file.name.encode())
            digest.update(file.read_bytes())
    out["code_hash"] = digest.hexdigest()[:16]
    return out


def package_versions() -> dict[str, str]:
    from importlib import metadata

    out = {"versions.python": _stdlib_platform.python_version()}
    for dist in ("leoclr-platform", "torch", "torchvision", "ray", "optuna", "mlflow", "pyarrow"):
        try:
            out[f"versions.{dist}"] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def hardware_tags(workers: int, cpus_per_worker: float, gpus_per_worker: float,
                  cluster: Mapping[str, float] | None = None) -> dict[str, str]:
    accelerators = sorted(k.split(":", 1)[1] for k in (cluster or {}) if k.startswith("accelerator_type:"))
    tags = {
        "hardware.per_trial": f"{workers} worker(s) x ({cpus_per_worker:g} CPU, {gpus_per_worker:g} GPU)",
        "hardware.accelerator": ",".join(accelerators) or ("GPU" if gpus_per_worker else "CPU"),
        "hardware.driver": f"{_stdlib_platform.machine()} {os.cpu_count()} CPUs, {_stdlib_platform.system()}",
    }
    if cluster:
        tags["hardware.cluster"] = f"{cluster.get('CPU', 0):g} CPU, {cluster.get('GPU', 0):g} GPU"
    return tags


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


# ---------------------------------------------------------------------------------------------
# Delivery: in order, in the background, retried with backoff
def _is_permanent(exc: BaseException) -> bool:
    """Errors that retrying cannot fix (bad value, unknown run): report and drop the call."""
    code = getattr(exc, "error_code", None)
    return code in {"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS",
                    "INVALID_STATE", "BAD_REQUEST", "PERMISSION_DENIED", "UNAUTHENTICATED"}


@dataclass
class _Call:
    fn: Callable[[], Any]
    what: str


class AsyncLogger:
    """One background thread that runs tracking calls in submission order.

    A call that fails with a transient error (server down, database locked, timeout) is retried
    with exponential backoff (0.5 s doubling to `max_backoff`) and nothing behind it overtakes it;
    a permanent error is reported once and the call dropped. `flush(timeout)` waits until
    everything submitted so far is delivered and says whether it was.
    """

    def __init__(self, name: str = "mlflow", max_backoff: float = 30.0, warn: Callable[[str], None] | None = None):
        self._queue: deque[_Call] = deque()
        self._cv = threading.Condition()
        self._busy = False
        self._closed = False
        self._max_backoff = max_backoff
        self._warn = warn or (lambda msg: print(f"leoclr: tracking: {msg}", file=sys.stderr, flush=True))
        self.delivered = 0
        self.dropped: list[str] = []
        self.failures = 0  # transient failures seen (each retried)
        self.down_since: float | None = None
        self._thread = threading.Thread(target=self._run, name=f"leoclr-{name}-logger", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], Any], what: str) -> None:
        with self._cv:
            if self._closed:
                raise RuntimeError("AsyncLogger is closed")
            self._queue.append(_Call(fn, what))
            self._cv.notify_all()

    @property
    def pending(self) -> int:
        with self._cv:
            return len(self._queue)  # the call in flight stays queued until it is delivered

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closed:
                    self._cv.wait()
                if not self._queue:
                    return
                call = self._queue[0]
                self._busy = True
            backoff = 0.5
            while True:
                try:
                    call.fn()
                    break
                except Exception as exc:  # noqa: BLE001 - classified below
                    if _is_permanent(exc):
                        self._warn(f"{call.what}: {_first_line(exc)} (not retried)")
                        self.dropped.append(call.what)
                        break
                    self.failures += 1
                    if self.down_since is None:
                        self.down_since = time.monotonic()
                        self._warn(f"{call.what} failed ({type(exc).__name__}: {_first_line(exc)}); "
                                   "training goes on, retrying in the background")
                    with self._cv:
                        if self._closed and self._abandon:
                            return
                        self._cv.wait(timeout=backoff)
                    backoff = min(backoff * 2, self._max_backoff)
            if self.down_since is not None:
                self._warn(f"store reachable again after {time.monotonic() - self.down_since:.0f} s; catching up")
                self.down_since = None
            with self._cv:
                self._queue.popleft()
                self._busy = False
                self.delivered += 1
                self._cv.notify_all()

    _abandon = False

    def flush(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            while self._queue:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cv.wait(timeout=remaining)
            return True

    def close(self, timeout: float | None = None) -> bool:
        done = self.flush(timeout)
        with self._cv:
            self._closed = True
            self._abandon = not done
            self._cv.notify_all()
        if done:
            self._thread.join(timeout=5)
        return done


# ---------------------------------------------------------------------------------------------
# The sweep's runs
@dataclass
class TrialRun:
    run_id: str | None = None
    logged_steps: set[int] = field(default_factory=set)
    config: dict[str, Any] | None = None
    last_checkpoint: str | None = None
    last_epoch: int | None = None
    has_model: bool = False


class SweepTracker:
    """The MLflow side of one sweep (used by the Tune callback, by `run_sweep` and by `sync`)."""

    def __init__(self, uri: str, experiment: str, sweep: str, *, max_epochs: int, metric: str,
                 synchronous: bool = False, log_checkpoints: bool = True):
        self.uri = uri
        self.experiment = experiment
        self.sweep = sweep
        self.max_epochs = max_epochs
        self.metric = metric
        self.log_checkpoints = log_checkpoints
        self.client = client(uri)
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self.trials: dict[str, TrialRun] = {}
        self.common_tags: dict[str, str] = {}
        self.synchronous = synchronous
        self.logger = None if synchronous else AsyncLogger(name=f"sweep-{sweep}")

    # -- the parent run (synchronous: the store must work before any compute) -----------------
    def open(self, *, space_name: str, space_text: str, space_file: str, params: Mapping[str, Any],
             tags: Mapping[str, str], meta: Mapping[str, Any] | None = None) -> str:
        use_store(self.uri)
        self.experiment_id = ensure_experiment(self.client, self.experiment, self.uri)
        self.common_tags = scrub({**code_version(), **package_versions(), **tags})
        existing = self._find_runs(ROLE_SWEEP)
        if existing:
            run = existing[0]
            self.parent_run_id = run.info.run_id
            if run.info.status != "RUNNING":
                self.client.update_run(self.parent_run_id, status="RUNNING")
        else:
            run = self.client.create_run(
                self.experiment_id, run_name=self.sweep,
                tags=scrub({**self.common_tags, "role": ROLE_SWEEP, "sweep": self.sweep, "space": space_name}))
            self.parent_run_id = run.info.run_id
            self._log_params(self.parent_run_id, flatten_params(params))
            with tempfile.TemporaryDirectory() as tmp:
                space_path = Path(tmp) / space_file
                space_path.write_text(space_text)
                self.client.log_artifact(self.parent_run_id, str(space_path), "space")
                if meta is not None:
                    meta_path = Path(tmp) / "sweep.json"
                    meta_path.write_text(json.dumps(dict(meta), indent=2, default=str))
                    self.client.log_artifact(self.parent_run_id, str(meta_path))
        return self.parent_run_id

    def attach(self, experiment_id: str, parent_run_id: str, common_tags: Mapping[str, str]) -> None:
        """Reuse an opened parent run (sync, or a callback restored from a pickle)."""
        use_store(self.uri)
        self.experiment_id, self.parent_run_id = experiment_id, parent_run_id
        self.common_tags = dict(common_tags)

    def _find_runs(self, role: str, trial_id: str | None = None):
        query = f"tags.sweep = '{self.sweep}' AND tags.role = '{role}'"
        if trial_id is not None:
            query += f" AND tags.trial_id = '{trial_id}'"
        return self.client.search_runs([self.experiment_id], query, order_by=["attributes.start_time ASC"],
                                       max_results=10)

    def _log_params(self, run_id: str, params: Mapping[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v[:6000]) for k, v in scrub(params).items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[start:start + 100])

    # -- per trial (everything below goes through the logger) ---------------------------------
    def _submit(self, fn: Callable[[], Any], what: str) -> None:
        if self.logger is None:
            fn()
        else:
            self.logger.submit(fn, what)

    def trial_started(self, trial_id: str, config: Mapping[str, Any], tags: Mapping[str, str] | None = None,
                      history: Mapping[int, Mapping[str, Any]] | None = None) -> None:
        """A trial (re)starts: find or create its run, mark it RUNNING, and log any epochs of
        `history` (what is on disk from before a restart) that the run does not have yet."""
        state = self.trials.setdefault(trial_id, TrialRun())
        state.config = dict(config)
        self._submit(lambda: self._ensure_run(trial_id, tags, reopen=True), f"trial {trial_id}: open run")
        self.backfill(trial_id, history or {})

    def backfill(self, trial_id: str, history: Mapping[int, Mapping[str, Any]]) -> None:
        for step in sorted(history):
            self.epoch(trial_id, {**history[step], "epoch": step})

    def _ensure_run(self, trial_id: str, tags: Mapping[str, str] | None = None, reopen: bool = False) -> str:
        state = self.trials.setdefault(trial_id, TrialRun())
        if state.run_id is not None:
            return state.run_id
        found = self._find_runs(ROLE_TRIAL, trial_id)
        if found:
            run = found[0]
            state.run_id = run.info.run_id
            state.has_model = "model_uri" in run.data.tags
            state.logged_steps = {int(m.step) for m in self.client.get_metric_history(state.run_id, "loss")}
            if reopen and run.info.status != "RUNNING" and not state.has_model:
                self.client.update_run(state.run_id, status="RUNNING")
        else:
            config = state.config or {}
            run_tags = {**self.common_tags, **(tags or {}), "role": ROLE_TRIAL, "sweep": self.sweep,
                        "trial_id": trial_id, "mlflow.parentRunId": self.parent_run_id}
            if config:
                run_tags.update({"strategy": str(config.get("attraction_strategy")),
                                 "mechanism": str(config.get("mechanism")), "seed": str(config.get("seed")),
                                 "config_hash": config_hash(config)})
            run = self.client.create_run(self.experiment_id, run_name=f"trial_{trial_id}", tags=scrub(run_tags))
            state.run_id = run.info.run_id
        if state.config:
            self._log_params(state.run_id, flatten_params(state.config))
        return state.run_id

    def epoch(self, trial_id: str, result: Mapping[str, Any]) -> None:
        """One reported epoch of a trial (a Tune result): logged once, with step=epoch."""
        if result.get("epoch") is None:
            return
        state = self.trials.setdefault(trial_id, TrialRun())
        step = int(result["epoch"])
        state.last_epoch = max(step, state.last_epoch or 0)
        if result.get("checkpoint_path"):
            state.last_checkpoint = str(result["checkpoint_path"])
        metrics = {k: float(result[k]) for k in EPOCH_METRICS if isinstance(result.get(k), (int, float))}
        stamp = int(float(result.get("timestamp", time.time())) * 1000)
        self._submit(lambda: self._log_epoch(trial_id, step, metrics, stamp), f"trial {trial_id}: epoch {step}")

    def _log_epoch(self, trial_id: str, step: int, metrics: Mapping[str, float], stamp: int) -> None:
        from mlflow.entities import Metric

        run_id = self._ensure_run(trial_id)
        state = self.trials[trial_id]
        if step in state.logged_steps or not metrics:
            return
        self.client.log_batch(run_id, metrics=[Metric(k, v, stamp, step) for k, v in metrics.items()])
        state.logged_steps.add(step)

    def trial_ended(self, trial_id: str, *, status: str, reason: str | None = None,
                    checkpoint: str | None = None) -> None:
        """status: FINISHED (log the encoder first), KILLED (stopped early) or FAILED (reason)."""
        state = self.trials.setdefault(trial_id, TrialRun())
        checkpoint = checkpoint or state.last_checkpoint
        if status == "FINISHED" and checkpoint:
            self._submit(lambda: self._log_model(trial_id, checkpoint), f"trial {trial_id}: log encoder")
        self._submit(lambda: self._set_status(trial_id, status, reason), f"trial {trial_id}: {status}")

    def _set_status(self, trial_id: str, status: str, reason: str | None) -> None:
        run_id = self._ensure_run(trial_id)
        state = self.trials[trial_id]
        tags = {}
        if status == "KILLED":
            tags["stopped_early"] = f"after epoch {state.last_epoch} of {self.max_epochs} (ASHA)"
        if reason:
            tags["failure_reason"] = reason[:5000]
        for key, value in scrub(tags).items():
            self.client.set_tag(run_id, key, value)
        self.client.set_terminated(run_id, status)

    def _log_model(self, trial_id: str, checkpoint: str) -> None:
        run_id = self._ensure_run(trial_id)
        state = self.trials[trial_id]
        if state.has_model:
            return
        with _local_copy(checkpoint) as local:
            info = log_encoder_model(run_id, local)
            if self.log_checkpoints:
                self.client.log_artifacts(run_id, str(local), CHECKPOINT_ARTIFACT)
        for key, value in scrub({"model_uri": info.model_uri, "checkpoint_path": checkpoint}).items():
            self.client.set_tag(run_id, key, value)
        state.has_model = True

    # -- the end ---------------------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> bool:
        return True if self.logger is None else self.logger.flush(timeout)

    def close(self, status: str = "FINISHED", timeout: float | None = 120.0,
              artifacts: Iterable[Path] = ()) -> bool:
        """Deliver what is pending (up to `timeout` s), then end the parent run. False if the
        store stayed away: the caller tells the user to run `leoclr sync`."""
        for path in artifacts:
            self._submit(lambda p=path: self.client.log_artifact(self.parent_run_id, str(p)), f"artifact {path.name}")
        self._submit(lambda: self.client.set_terminated(self.parent_run_id, status), f"sweep {self.sweep}: {status}")
        if self.logger is None:
            return True
        return self.logger.close(timeout)


class _local_copy:
    """A checkpoint folder as a local path (downloaded first when the storage is remote)."""

    def __init__(self, path: str):
        self.path = path
        self._tmp: tempfile.TemporaryDirectory | None = None

    def __enter__(self) -> Path:
        if "://" not in self.path:
            return Path(self.path)
        import pyarrow.fs as pafs

        self._tmp = tempfile.TemporaryDirectory(prefix="leoclr_ckpt_")
        fs, src = pafs.FileSystem.from_uri(self.path)
        pafs.copy_files(src, self._tmp.name, source_filesystem=fs)
        return Path(self._tmp.name)

    def __exit__(self, *exc) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()


def log_encoder_model(run_id: str, checkpoint_dir: Path):
    """Log the checkpoint's backbone as an MLflow PyTorch model (pt2 format, input example).

    The copy other tools load. The platform itself loads encoders through the safe path
    (`encoder.pt` with weights_only=True, see `load_encoder`), never by unpickling a model.
    """
    import mlflow
    import numpy as np
    import torch

    from trainables.checkpoint import load_encoder

    loaded = load_encoder(checkpoint_dir)
    size = loaded.config.resolved_view_size
    example = np.random.default_rng(0).standard_normal((2, 3, size, size)).astype(np.float32)
    torch_version = torch.__version__.split("+")[0]
    # the run must be the active one (of this thread): MLflow files the LoggedModel under the
    # active run's experiment, else under "Default" (whose artifacts go to ./mlruns)
    with mlflow.start_run(run_id=run_id, log_system_metrics=False):
        return mlflow.pytorch.log_model(
            loaded.backbone.eval(), name=MODEL_ARTIFACT, input_example=example,
            pip_requirements=[f"torch=={torch_version}"],  # skips MLflow's slow requirement inference
            metadata={"backbone": loaded.config.backbone, "feature_dim": loaded.feature_dim,
                      "input": f"float32 N x 3 x {size} x {size}, normalised like the training views"},
        )
