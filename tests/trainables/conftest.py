"""Fixtures shared by the engine's tests."""

from __future__ import annotations

import pytest

from trainables.config import TrainConfig
from trainables.loop import run_training


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory):
    """One tiny epoch of LeOCLR (small_cnn, SplitBatchNorm 2) on photo_patches at 16 px
    (8 + 4 patches per class) -> its checkpoint folder; the photo_patches cache stays set for
    the module's tests."""
    out = tmp_path_factory.mktemp("ckpt")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LEOCLR_CACHE", str(tmp_path_factory.mktemp("cache")))
        cfg = TrainConfig.from_dict(dict(
            dataset="photo_patches", photo_patches={"train_per_class": 8, "test_per_class": 4},
            image_size=16, backbone="small_cnn", batch_size=32, queue_size=64, epochs=1, knn_k=10,
            bn_splits=2, max_steps_per_epoch=2, device="cpu"))
        run_training(cfg, checkpoint_dir=str(out))
        yield out / "epoch_0001"
