"""The monitor: what a training run measures at its monitor epochs, and the protocol's one owner.

At every monitor epoch (``knn_every``, ``knn_epochs``, the last epoch) the loop reports, for the
query encoder's backbone under the eval view (``monitor_views(...).eval_view``: the whole image
resized to R x R and normalised; docs/method.md, "Train / validation / test"):

- ``val_knn_top1`` / ``val_knn_top5``: weighted kNN (``trainables.knn``; k = ``knn_k``, t =
  ``knn_temperature``), bank = ``data.memory``, queries = ``data.val``. This is what every
  selection reads (objective, ASHA, TPE, best trial, promotion).
- ``rankme``: ``trainables.rankme.rankme`` of the raw backbone features of the validation
  split's first ``rankme_samples`` images (in split order; the same features the val kNN reads,
  so no extra pass).
- at the last epoch only, ``test_knn_top1`` / ``test_knn_top5``: bank = memory, queries =
  ``data.test``. Logged, never used for a decision.

A dataset without labels (empty ``memory``) gets ``rankme`` only; queries labelled -1 never
enter a kNN score. ``trainables.eval.baseline`` measures a recalibrated random backbone with
this same class, so trained and baseline numbers share one protocol.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset

from trainables.config import TrainConfig
from trainables.data import DataBundle, TensorImageDataset
from trainables.data.geometry import GeometricViews, GeometryConfig, supports_geometry
from trainables.knn import extract_features, knn_accuracy
from trainables.rankme import rankme
from trainables.views import ViewConfig, ViewMaker


def uses_amp(cfg: TrainConfig, device: torch.device) -> bool:
    """bf16 autocast: amp "bf16", or "auto" on CUDA."""
    return cfg.amp == "bf16" or (cfg.amp == "auto" and device.type == "cuda")


def uses_channels_last(cfg: TrainConfig) -> bool:
    """channels_last "auto" is on for every device: NHWC is what tensor cores want on CUDA, and
    oneDNN's NHWC convolutions are its fast path on CPU (figures: docs/performance.md)."""
    return cfg.channels_last != "off"


def monitor_views(cfg: TrainConfig, channels_last: bool) -> ViewMaker:
    """The ViewMaker of a run: its training views and the monitor's eval view
    (``eval_view``: B x 3 x S x S uint8 -> B x 3 x R x R normalised, R = resolved_view_size)."""
    return ViewMaker(ViewConfig.from_train_config(cfg), channels_last=channels_last)


class Monitor:
    """Measures a backbone (B x 3 x R x R -> B x D) on a run's splits (see module docstring).

    Under torch.distributed each rank passes its share (images rank, rank + W, ...), features
    are gathered, and the validation features are put back in split order before RankMe, so
    every rank reports the same numbers as one process would.
    """

    def __init__(self, cfg: TrainConfig, data: DataBundle, device: torch.device, *,
                 views: ViewMaker, channels_last: bool, amp: bool, rank: int = 0, world: int = 1):
        self.cfg, self.data, self.device = cfg, data, device
        self.views, self.channels_last, self.amp = views, channels_last, amp
        self.rank, self.world = rank, world

    @classmethod
    def for_config(cls, cfg: TrainConfig, data: DataBundle, device: torch.device) -> "Monitor":
        """A single-process monitor with the run's own settings (``uses_channels_last``,
        ``uses_amp``: as ``Trainer`` resolves them)."""
        channels_last = uses_channels_last(cfg)
        return cls(cfg, data, device, views=monitor_views(cfg, channels_last),
                   channels_last=channels_last, amp=uses_amp(cfg, device))

    def forward(self, backbone: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """backbone(eval view of images): uint8 B x 3 x S x S (any device) -> B x D, in the
        run's memory layout and autocast; the module's train/eval mode is the caller's."""
        x = self.views.eval_view(images.to(self.device, non_blocking=True))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16) if self.amp else nullcontext():
            return backbone(x)

    def batches(self, ds: Dataset, batch_size: int = 512) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's share of a split (images rank, rank + W, ...), in order, nothing dropped:
        uint8 B x 3 x S x S. File-backed photos (ImageFolder, streaming Parquet) come as the
        paper's centre crop, cut by the loader workers at the view size R (data/geometry.py), so
        the monitor sees them as every evaluation protocol does; eval_view then only normalises."""
        if isinstance(ds, TensorImageDataset):
            images, labels = ds.images[self.rank :: self.world], ds.labels[self.rank :: self.world]
            for s in range(0, images.shape[0], batch_size):
                yield images[s : s + batch_size], labels[s : s + batch_size]
            return
        if supports_geometry(ds):
            ds = GeometricViews(ds, GeometryConfig(self.cfg.resolved_view_size, ("eval",)))
        subset = torch.utils.data.Subset(ds, range(self.rank, len(ds), self.world))
        loader = torch.utils.data.DataLoader(subset, batch_size=batch_size, shuffle=False,
                                             num_workers=self.cfg.loader_workers)
        for images, labels in loader:  # geometry views: B x 1 x 3 x R x R
            yield (images[:, 0] if images.dim() == 5 else images), labels

    def features(self, backbone: nn.Module, ds: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw float32 eval-view features (N x D) and labels (N) of a whole split, in split
        order, on the device (gathered from all ranks)."""
        feats, labels = extract_features(lambda x: self.forward(backbone, x), self.batches(ds),
                                         prepare=lambda x: x, normalize=False)
        if self.world > 1:  # rank r held images r, r + W, ...: back to split order
            n = feats.shape[0]
            source = torch.cat([torch.arange(r, n, self.world) for r in range(self.world)])
            feats = torch.empty_like(feats).index_copy_(0, source.to(feats.device), feats)
            labels = torch.empty_like(labels).index_copy_(0, source.to(labels.device), labels)
        return feats, labels

    def _knn(self, queries: torch.Tensor, query_labels: torch.Tensor, bank: torch.Tensor,
             bank_labels: torch.Tensor, prefix: str) -> dict[str, float]:
        labelled = query_labels >= 0
        if not bool(labelled.any()):
            return {}
        acc = knn_accuracy(F.normalize(queries[labelled], dim=1), query_labels[labelled], bank,
                           bank_labels, len(self.data.classes), k=self.cfg.knn_k,
                           t=self.cfg.knn_temperature)
        return {f"{prefix}_{key}": value for key, value in acc.items()}

    @torch.no_grad()
    def __call__(self, backbone: nn.Module, *, test: bool = False) -> dict[str, float]:
        """{val_knn_top1, val_knn_top5, rankme} (+ test_knn_top1/5 with ``test``), percent for
        kNN; top-5 only with more than 5 classes; kNN left out for a dataset without labels.
        The backbone runs in eval mode; its train/eval flags are restored afterwards."""
        was_training = backbone.training
        backbone.eval()
        try:
            val, val_y = self.features(backbone, self.data.val)
            out: dict[str, float] = {}
            if len(self.data.memory) > 0:
                bank, bank_y = self.features(backbone, self.data.memory)
                bank = F.normalize(bank, dim=1)
                out.update(self._knn(val, val_y, bank, bank_y, "val"))
                if test:
                    out.update(self._knn(*self.features(backbone, self.data.test), bank, bank_y, "test"))
            if val.shape[0] > 0:
                out["rankme"] = rankme(val[: self.cfg.rankme_samples])
        finally:
            backbone.train(was_training)
        return out
