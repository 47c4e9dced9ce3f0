"""An honest learning test: a short run on real photographs vs the same backbone's random weights.

ResNet-18 (CIFAR stem) on photo_patches (16 classes cut from scikit-image's photographs,
disjoint train/test regions), one epoch of 16 steps, for leoclr and for moco_v2.

The baseline is measured twice. As initialised (BN running statistics 0/1), random weights
score ~22 % kNN top-1; the trained encoder must beat that by >= 8 points (the engine issue's
criterion; measured: +21). But with its BatchNorm statistics recalibrated on the training
images, the same random backbone scores ~45 %, and short runs here reach the same level
(1 epoch: 43-44 %, 4 epochs: 43-45 %, measured; see docs/method.md): on this data most of the
short-run gain is BN statistics, and random conv features with calibrated BN are a strong
baseline. So the test also asserts that training never falls more than 5 points below that
recalibrated baseline (a collapsing or feature-destroying loop fails here), and prints both.
"""

import pytest
import torch

from trainables.config import TrainConfig
from trainables.loop import Trainer

pytestmark = pytest.mark.slow

SETTINGS = dict(
    dataset="photo_patches",
    photo_patches={"train_per_class": 64, "test_per_class": 32},
    image_size=32,
    backbone="resnet18_cifar",
    batch_size=64,
    queue_size=1024,
    epochs=1,
    lr=0.06,
    key_momentum=0.99,  # the settings docs/method.md measured with (the defaults were the
    weight_decay=5e-4,  # MoCo CIFAR demo's then; m 0.999 barely moves a key encoder in 16 steps)
    temperature=0.2,
    seed=0,
)


@torch.no_grad()
def recalibrated_bn_knn(trainer: Trainer) -> float:
    """kNN of the random-init backbone after re-estimating BN statistics on the train images."""
    encoder = trainer.query_encoder
    bns = [m for m in encoder.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches
    encoder.train()
    for images, _ in trainer._eval_batches(trainer.data.memory, batch_size=128):
        encoder.features(trainer.views.eval_view(images))
    for m, momentum in zip(bns, saved):
        m.momentum = momentum
    return trainer.knn_eval()["knn_top1"]


@pytest.mark.parametrize("strategy", ["leoclr", "moco_v2"])
def test_short_run_beats_random_weights(strategy, tmp_path, monkeypatch):
    monkeypatch.setenv("LEOCLR_CACHE", str(tmp_path / "cache"))
    cfg = TrainConfig.from_dict({**SETTINGS, "attraction_strategy": strategy})
    baseline = Trainer(cfg)
    random_init = baseline.knn_eval()["knn_top1"]
    random_recalibrated = recalibrated_bn_knn(baseline)

    trainer = Trainer(cfg)
    final = trainer.fit(checkpoint_dir=tmp_path / "ckpt")
    trained = final["knn_top1"]
    print(f"{strategy}: random init {random_init:.2f}, random + BN recalibrated {random_recalibrated:.2f}, "
          f"trained {trained:.2f}")
    assert trained >= random_init + 8.0
    assert trained >= random_recalibrated - 5.0
