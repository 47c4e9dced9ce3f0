"""MLflow tracking of sweeps: the store, what runs carry, background delivery, the sweep's runs.

Modules: store (URI resolution, the check before compute, client, experiments), provenance
(params, commit, versions, hardware, secret scrubbing), logger (AsyncLogger), sweep_runs
(SweepTracker: parent + child runs), trial_values (a trial's params and epoch metrics),
run_text (run names, display values, descriptions), datasets (the data as MLflow dataset
inputs: `log_dataset_inputs` for trial and evaluation runs), sweep_record (THE parent run's
params and tags, shared by the live sweep and `leoclr sync`), models (the encoder as a logged
model), tune_callback
(MlflowTrialCallback: Tune's trial events -> the tracker; imports Ray, so it is loaded on
first use). Nothing here imports mlflow or ray at import time.
"""

from leoclr_platform.errors import TrackingError
from leoclr_platform.tracking.datasets import dataset_inputs, log_dataset_inputs, split_sizes
from leoclr_platform.tracking.logger import AsyncLogger
from leoclr_platform.tracking.models import CHECKPOINT_ARTIFACT, DEFAULT_MODEL_NAME, MODEL_ARTIFACT, log_encoder_model
from leoclr_platform.tracking.provenance import (
    code_version,
    config_hash,
    flatten_params,
    hardware_tags,
    package_versions,
    scrub,
)
from leoclr_platform.tracking.store import (
    EXPERIMENT_KIND,
    artifact_root_for,
    check_store,
    client,
    default_tracking_uri,
    ensure_experiment,
    is_local_store,
    project_home,
    redact_uri,
    resolve_tracking_uri,
    sqlite_path,
    use_store,
)
from leoclr_platform.tracking.sweep_record import SweepRecord, environment, sweep_record
from leoclr_platform.tracking.run_text import DESCRIPTION_TAG, display_value, trial_run_name
from leoclr_platform.tracking.sweep_runs import EPOCH_METRICS, ROLE_SWEEP, ROLE_TRIAL, STOPPED_TAG, SweepTracker, \
    TrialRun

__all__ = [
    "TrackingError", "AsyncLogger", "SweepTracker", "TrialRun", "SweepRecord", "sweep_record", "environment",
    "MlflowTrialCallback", "log_encoder_model", "check_store", "client", "use_store", "ensure_experiment",
    "resolve_tracking_uri", "default_tracking_uri", "project_home", "is_local_store", "sqlite_path",
    "artifact_root_for", "redact_uri", "flatten_params", "config_hash", "scrub", "code_version",
    "package_versions", "hardware_tags", "EPOCH_METRICS", "ROLE_SWEEP", "ROLE_TRIAL", "MODEL_ARTIFACT",
    "CHECKPOINT_ARTIFACT", "DEFAULT_MODEL_NAME", "dataset_inputs", "log_dataset_inputs", "split_sizes",
    "EXPERIMENT_KIND", "DESCRIPTION_TAG", "STOPPED_TAG", "display_value", "trial_run_name",
]


def __getattr__(name: str):
    if name == "MlflowTrialCallback":  # imports ray.tune: only when asked for
        from leoclr_platform.tracking.tune_callback import MlflowTrialCallback

        return MlflowTrialCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
