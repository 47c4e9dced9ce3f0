"""The baseline every gain is shown against: random weights with recalibrated BatchNorm statistics.

A random backbone evaluated with its BatchNorm running statistics as initialised (mean 0, var 1)
is a straw man: its activations are badly scaled, and a few training steps gain 20 points by
re-estimating BN statistics alone (docs/method.md, "What a short CPU run shows"). The honest
baseline is the same backbone, same random weights, with those statistics recalibrated on the
pre-training images, measured under the monitor's exact protocol (``trainables.monitor``:
same eval view, kNN k and t, RankMe sample). A trained encoder that does not beat it learned
nothing the architecture did not already give.

``recalibrated_random_backbone``: the configured backbone, initialised from ``seed`` exactly as
a training run's query encoder is (``torch.manual_seed(seed)``, then the backbone is built
first), its BN running statistics recalibrated (``recalibrate_batchnorm``), in eval mode.
``baseline_metrics``: its monitor numbers {val_knn_top1, val_knn_top5, test_knn_top1,
test_knn_top5, rankme}.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
import torch.nn as nn

from trainables.config import TrainConfig
from trainables.data import DataBundle
from trainables.models import build_backbone
from trainables.monitor import Monitor


def recalibrate_batchnorm(module: nn.Module, batches: Iterable[Any],
                          forward: Callable[[Any], Any] | None = None) -> nn.Module:
    """Re-estimate every BatchNorm layer's running statistics of ``module`` over ``batches``.

    Every BN layer's running statistics are reset (mean 0, var 1, count 0) and its momentum set
    to None (cumulative average), the module is put in train mode and ``forward(batch)``
    (default ``module(batch)``) runs on every batch without gradient; then momenta are
    restored and the module is left in eval mode. For each layer, with per-batch statistics of
    its inputs over batch, height and width (the unbiased variance, as BN keeps):

        running_mean = mean over batches of the batch means
        running_var  = mean over batches of the unbiased batch variances

    With one batch these are the mean and unbiased variance of the layer's inputs over all the
    images; with several equal batches the mean still is, and the variance leaves out the
    spread of the batch means (what ``torch.optim.swa_utils.update_bn`` computes). Weights are
    never touched. Returns ``module``.
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    module.train()
    run = forward or module
    try:
        with torch.no_grad():
            for batch in batches:
                run(batch)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        module.eval()
    return module


def recalibrated_random_backbone(cfg: TrainConfig, data: DataBundle, device: torch.device | str,
                                 seed: int | None = None, batch_size: int = 256) -> nn.Module:
    """The configured backbone (B x 3 x R x R -> B x D) with random weights and recalibrated BN.

    Weights: ``build_backbone(cfg.backbone)`` right after ``torch.manual_seed(seed)`` (default
    ``cfg.seed``), i.e. the backbone a training run with that seed starts from; the global RNG
    is saved and restored. BN statistics: ``recalibrate_batchnorm`` over ``data.pretrain`` in
    order, in batches of ``batch_size``, under the monitor's eval view (whole image resized to
    R, normalised). Returned on ``device``, in eval mode.
    """
    device = torch.device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed if seed is None else seed)
        backbone, _ = build_backbone(cfg.backbone)
    monitor = Monitor.for_config(cfg, data, device)
    backbone = backbone.to(device, memory_format=torch.channels_last if monitor.channels_last
                           else torch.preserve_format)
    images = (x for x, _ in monitor.batches(data.pretrain, batch_size))
    return recalibrate_batchnorm(backbone, images, lambda x: monitor.forward(backbone, x))


def baseline_metrics(cfg: TrainConfig, data: DataBundle, device: torch.device | str,
                     seed: int | None = None) -> dict[str, float]:
    """The recalibrated random baseline under the monitor's protocol: {val_knn_top1,
    val_knn_top5, test_knn_top1, test_knn_top5, rankme} (kNN in percent; top-5 only with more
    than 5 classes; kNN left out for a dataset without labels), what a run's last epoch reports
    for its trained encoder."""
    device = torch.device(device)
    backbone = recalibrated_random_backbone(cfg, data, device, seed)
    return Monitor.for_config(cfg, data, device)(backbone, test=True)
