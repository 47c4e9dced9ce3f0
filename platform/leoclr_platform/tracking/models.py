"""A trial's encoder in MLflow: the backbone as a logged PyTorch model, from its checkpoint.

The logged model is the copy other tools load. The platform itself loads encoders through the
engine's safe path (`trainables.checkpoint.load_encoder`: `encoder.pt` with weights_only=True),
never by unpickling a model.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

MODEL_ARTIFACT = "encoder"
CHECKPOINT_ARTIFACT = "checkpoint"
DEFAULT_MODEL_NAME = "leoclr-encoder"


def log_encoder_model(run_id: str, checkpoint_dir: str | Path):
    """Log the checkpoint's backbone under run `run_id` as an MLflow PyTorch model (pt2 format,
    with an input example float32 N x 3 x R x R). Returns MLflow's ModelInfo."""
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


class local_copy:
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
