"""A trial's encoder as an MLflow model: the same function as the engine's safe load."""

from __future__ import annotations

import mlflow
import torch

from leoclr_platform import tracking
from leoclr_platform.tracking.models import local_copy
from trainables.checkpoint import load_encoder


def test_the_logged_model_computes_what_the_checkpoint_s_encoder_computes(mlflow_uri, tiny_run):
    checkpoint = tiny_run / "epoch_0002"
    tracking.use_store(mlflow_uri)
    c = tracking.client(mlflow_uri)
    run = c.create_run(tracking.ensure_experiment(c, "leoclr/test", mlflow_uri))
    info = tracking.log_encoder_model(run.info.run_id, checkpoint)
    model = mlflow.pytorch.load_model(info.model_uri)  # pt2: no pickle involved
    safe = load_encoder(checkpoint)  # encoder.pt, weights_only
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(model(x), safe.backbone(x), atol=1e-5)
    assert info.metadata["backbone"] == "small_cnn" and info.metadata["feature_dim"] == safe.feature_dim


def test_a_local_checkpoint_is_used_where_it_is(tiny_run):
    with local_copy(str(tiny_run / "epoch_0001")) as path:
        assert path == tiny_run / "epoch_0001"
