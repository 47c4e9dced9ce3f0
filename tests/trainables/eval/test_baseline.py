"""The recalibrated random baseline (trainables.eval.baseline): BN statistics by hand, untouched
weights, and the monitor's protocol on small real data."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from trainables.config import TrainConfig
from trainables.eval import baseline_metrics, recalibrate_batchnorm, recalibrated_random_backbone
from trainables.loop import Trainer
from trainables.models import build_backbone
from trainables.monitor import Monitor

SMALL = dict(dataset="photo_patches", photo_patches={"train_per_class": 8, "test_per_class": 4},
             image_size=16, backbone="small_cnn", batch_size=32, queue_size=64, knn_k=10, bn_splits=2,
             device="cpu", seed=3)


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("LEOCLR_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def tiny_net() -> nn.Sequential:
    """conv 1x1 (3 -> 2) -> BN -> ReLU -> conv 1x1 (2 -> 2) -> BN, with fixed weights."""
    net = nn.Sequential(nn.Conv2d(3, 2, 1, bias=False), nn.BatchNorm2d(2), nn.ReLU(),
                        nn.Conv2d(2, 2, 1, bias=False), nn.BatchNorm2d(2))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -1.0, 0.5], [0.0, 2.0, 1.0]])[:, :, None, None])
        net[3].weight.copy_(torch.tensor([[1.0, 1.0], [-1.0, 0.5]])[:, :, None, None])
        net[1].running_mean.fill_(7.0)  # stale statistics: reset before recalibrating
    return net


def test_recalibrated_statistics_by_hand():
    x = torch.randn(6, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 + 1
    net = tiny_net()
    weights = {k: v.clone() for k, v in net.state_dict().items() if "weight" in k or "bias" in k}
    recalibrate_batchnorm(net, [x])  # one batch of all the images
    w = torch.tensor([[1.0, -1.0, 0.5], [0.0, 2.0, 1.0]])
    inputs = torch.einsum("oc,nchw->nohw", w, x)  # the first BN layer's input, by hand
    torch.testing.assert_close(net[1].running_mean, inputs.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(net[1].running_var, inputs.var(dim=(0, 2, 3), unbiased=True))
    assert net[1].momentum == 0.1 and not net.training  # momentum restored, eval mode
    for k, v in weights.items():
        assert torch.equal(net.state_dict()[k], v), k  # weights untouched

    # two equal batches: the mean of the batch means and of the unbiased batch variances
    two = tiny_net()
    recalibrate_batchnorm(two, [x[:3], x[3:]])
    halves = inputs[:3], inputs[3:]
    torch.testing.assert_close(two[1].running_mean, inputs.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(two[1].running_var,
                               sum(h.var(dim=(0, 2, 3), unbiased=True) for h in halves) / 2)
    assert int(two[1].num_batches_tracked) == 2


def test_random_backbone_is_a_seeded_init_with_bn_recalibrated_on_pretrain():
    cfg = TrainConfig.from_dict(SMALL)
    trainer = Trainer(cfg)  # its query encoder starts from torch.manual_seed(cfg.seed)
    data = trainer.data
    rng = torch.get_rng_state()
    backbone = recalibrated_random_backbone(cfg, data, "cpu", batch_size=len(data.pretrain))
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's random stream is untouched
    assert not backbone.training
    torch.manual_seed(cfg.seed)
    fresh, _ = build_backbone("small_cnn")
    start = trainer.query_encoder.backbone.state_dict()
    for name, p in backbone.named_parameters():  # weights: the fresh init, the run's start
        assert torch.equal(p, dict(fresh.named_parameters())[name]) and torch.equal(p, start[name]), name
    # the first BN layer: mean / unbiased variance of the first conv's outputs on every
    # pretraining image under the monitor's eval view (one batch of all of them)
    views = Monitor.for_config(cfg, data, torch.device("cpu")).views.eval_view(data.pretrain.images)
    with torch.no_grad():
        conv = fresh.features[0](views)
    bn = backbone.features[1]
    torch.testing.assert_close(bn.running_mean, conv.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bn.running_var, conv.var(dim=(0, 2, 3), unbiased=True), rtol=1e-4, atol=1e-5)
    assert not torch.equal(bn.running_var, fresh.features[1].running_var)


def test_baseline_metrics_follow_the_monitor_protocol():
    cfg = TrainConfig.from_dict(SMALL)
    trainer = Trainer(cfg)
    metrics = baseline_metrics(cfg, trainer.data, "cpu")
    assert set(metrics) == {"val_knn_top1", "val_knn_top5", "test_knn_top1", "test_knn_top5", "rankme"}
    assert all(0 <= metrics[k] <= 100 for k in metrics if "knn" in k) and 1 <= metrics["rankme"] <= 256
    # the same numbers as the training loop's own monitor on that backbone
    trainer.query_encoder.backbone.load_state_dict(
        recalibrated_random_backbone(cfg, trainer.data, "cpu").state_dict())
    assert trainer.knn_eval(test=True) == metrics
