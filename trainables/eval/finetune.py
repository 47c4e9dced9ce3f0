"""Fine-tuning the whole network: the ``semi_1pct`` / ``semi_10pct`` protocols and the fine-tune
half of ``transfer``.

The paper: "we fine-tuned the network for 60 epochs using 1% labeled data and 30 epochs using
10% labeled data" (Sec. 4), "following the semi-supervised protocol introduced in SimCLR". What
runs here (docs/method.md, "Evaluation", lists each choice and where it departs from SimCLR):

* **Labels**: a class-balanced subset of the labelled train split, per class
  ``max(1, round(fraction * n_c))`` images, fixed by ``subset_seed``
  (``trainables.data.subsets``). SimCLR uses fixed published ImageNet lists.
* **Network**: a copy of the pre-trained backbone (the caller's is never touched) plus a new
  linear head ``nn.Linear(D, C)`` (weight ~ N(0, 0.01^2), bias 0, as the linear protocol's);
  *everything* is trained, BatchNorm in train mode (batch statistics, running statistics
  updated), as in SimCLR's fine-tuning.
* **Optimiser**: SGD, Nesterov momentum 0.9, no weight decay (SimCLR: "We do not use any
  regularization (including weight decay)"), batch 256, backbone lr 0.05 (SimCLR's
  ``0.05 x batch / 256``), head lr 0.5 (our choice: a freshly initialised head learns 10x faster
  than the pre-trained trunk, the ratio of SwAV's / PIRL's semi-supervised recipes), cosine decay
  to 0 over all steps, no warm-up (SimCLR: "without warmup").
* **Views**: RandomResizedCrop(R, scale 0.08-1) + horizontal flip, nothing else (SimCLR: "Only
  random cropping (with random left-to-right flipping and resizing ...) is used"); tested on
  the eval view (``eval/inputs.py``), top-1 / top-5 on the test split after the last epoch.
* **Small data** (``for_dataset_size``): the paper's epochs are kept; the batch shrinks to the
  largest power of two giving at least 8 steps per epoch (at least 2 images, for BatchNorm), and
  both learning rates scale linearly with it (the rule of ``LinearProtocol.for_dataset_size``).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from trainables.data import DataBundle
from trainables.data.subsets import class_balanced_indices, dataset_labels, subset
from trainables.eval.inputs import Inputs, derive_seed, session
from trainables.eval.knn import check_labels
from trainables.eval.linear import make_linear_classifier
from trainables.eval.metrics import ProgressFn, recorder, topk_accuracy
from trainables.eval.settings import EvaluationError, ProtocolError, RunSettings

__all__ = ["FineTuned", "FinetuneProtocol", "FinetuneResult", "run_finetune", "semi_supervised_epochs"]

def semi_supervised_epochs(fraction: float) -> int:
    """The paper's epochs: 60 for 1 % of the labels, 30 for 10 %; other fractions take the
    nearer rule (60 below 10 %, 30 from 10 % up)."""
    return 60 if fraction < 0.1 else 30


@dataclass(frozen=True)
class FinetuneProtocol(RunSettings):
    """Settings of whole-network fine-tuning (see the module docstring for every default).

    ``label_fraction``: the class-balanced share of the labelled train split used, in (0, 1];
    ``subset_seed``: which images (fixed per seed); ``seed``: head init, batch order and views.
    ``lr`` / ``head_lr``: the backbone's / head's learning rates at ``batch_size``.
    ``test_crop_fraction``: as ``KnnProtocol``; ``eval_batch_size``, ``amp``, ``loader_workers``:
    see ``RunSettings``. ``for_dataset_size`` scales ``lr`` and ``head_lr`` (0.05 and 0.5 per 256
    images) with the batch, which stays >= 2.
    """

    label_fraction: float = 1.0
    epochs: int = 30
    batch_size: int = 256
    lr: float = 0.05
    head_lr: float = 0.5
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 0.0
    train_crop_scale: tuple[float, float] = (0.08, 1.0)
    flip_prob: float = 0.5
    test_crop_fraction: float = 1.0
    subset_seed: int = 0

    #: ``for_dataset_size`` (``RunSettings``): both learning rates scale with the batch, which
    #: stays >= 2 (BatchNorm in train mode).
    SCALED_WITH_BATCH = ("lr", "head_lr")
    MIN_BATCH = 2

    @classmethod
    def semi_supervised(cls, fraction: float, labels: torch.Tensor | None = None, **overrides: Any) -> "FinetuneProtocol":
        """``semi:<fraction>``: the paper's epochs for ``fraction`` (``semi_supervised_epochs``),
        scaled to the subset ``labels`` gives (None: the paper's full-size settings)."""
        if not (isinstance(fraction, (int, float)) and 0 < fraction <= 1):
            raise ProtocolError("must be in (0, 1] (the share of the labelled images used)",
                                key="FinetuneProtocol.label_fraction", value=fraction)
        values = {"label_fraction": fraction, "epochs": semi_supervised_epochs(fraction), **overrides}
        if labels is None:
            return cls(**values)
        n = int(class_balanced_indices(labels, values["label_fraction"], values.get("subset_seed", 0)).numel())
        return cls.for_dataset_size(n, **values)

    def lr_factor(self, step: int, total_steps: int) -> float:
        """Cosine decay from 1 to 0 over ``total_steps`` (no warm-up)."""
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(1, total_steps)))

    def validate(self) -> None:
        self._require_numbers(("label_fraction",), low=0, high=1, low_open=True,
                              reason="must be in (0, 1] (the share of the labelled images used)")
        self._require_ints(("epochs", "batch_size"), 1)
        if self.batch_size < 2:
            raise self._bad("batch_size", "must be >= 2 (BatchNorm in train mode needs two images)")
        self._require_numbers(("lr", "head_lr"), low=0, low_open=True, reason="must be a finite number > 0")
        self._require_numbers(("momentum",), low=0, high=1, high_open=True)
        if not isinstance(self.nesterov, bool):
            raise self._bad("nesterov", "must be true or false")
        if self.nesterov and self.momentum == 0:
            raise self._bad("nesterov", "needs momentum > 0")
        self._require_numbers(("weight_decay",), low=0, reason="must be a finite number >= 0")
        self._require_range("train_crop_scale", "must be two numbers 0 < min <= max <= 1 (RandomResizedCrop area fractions)")
        self._require_numbers(("flip_prob",), low=0, high=1, reason="must be a probability in [0, 1]")
        self._require_numbers(("test_crop_fraction",), low=0, high=1, low_open=True,
                              reason="must be in (0, 1] (1 = whole image, 0.875 = ImageNet's 224/256)")
        self._require_ints(("subset_seed",), 0)
        self._require_runtime()


class FineTuned(nn.Module):
    """backbone (``B x 3 x R x R -> B x D``) + head ``nn.Linear(D, C)``: class scores ``B x C``."""

    def __init__(self, backbone: nn.Module, head: nn.Linear):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x).flatten(1))


@dataclass
class FinetuneResult:
    """The fine-tuned network (on the evaluation device), its metrics (``top1`` / ``top5`` on the
    test split, ``train_loss`` / ``train_top1`` of the last epoch, ``n_labelled``, ...), every
    epoch's progress dict, and the indices of the labelled images used."""

    model: FineTuned
    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    indices: torch.Tensor | None = None


def run_finetune(backbone: nn.Module, data: DataBundle, settings: FinetuneProtocol | None = None, *,
                 image_size: int, device: str | torch.device | None = None,
                 progress: ProgressFn | None = None) -> FinetuneResult:
    """Fine-tune a copy of ``backbone`` with a new linear head on the class-balanced
    ``settings.label_fraction`` of ``data.memory``; test on ``data.test`` (eval view, resolution
    ``image_size``). ``backbone`` itself is left exactly as it was.

    settings: None = ``FinetuneProtocol.for_dataset_size`` of the whole labelled split.
    progress: called after every epoch with {"epoch", "lr", "head_lr", "train_loss",
    "train_top1"} (the learning rates of the epoch's last step).
    """
    start = time.perf_counter()
    labels = dataset_labels(data.memory)
    num_classes = len(data.classes)
    p = settings or FinetuneProtocol.for_dataset_size(int((labels >= 0).sum()))
    indices = class_balanced_indices(labels, p.label_fraction, p.subset_seed)
    if indices.numel() < p.batch_size:
        raise EvaluationError(
            f"the {p.label_fraction:g} label subset holds {indices.numel()} images, fewer than one batch "
            f"(FinetuneProtocol.batch_size={p.batch_size}); use FinetuneProtocol.for_dataset_size or a smaller batch")
    check_labels(labels[indices], num_classes, "train (memory)")
    train = subset(data.memory, indices)
    history: list[dict[str, float]] = []
    with session(backbone, device, image_size, freeze=False, batch_size=p.eval_batch_size,
                 loader_workers=p.loader_workers) as inputs:
        with torch.no_grad():
            net = copy.deepcopy(backbone).to(inputs.device).eval()
            dim = net(torch.zeros(2, 3, image_size, image_size, device=inputs.device)).flatten(1).shape[1]
        init_gen = torch.Generator().manual_seed(derive_seed(p.seed, "finetune_head"))
        model = FineTuned(net, make_linear_classifier(dim, num_classes, init_gen).to(inputs.device))
        stats = _fit(model, train, inputs, p, recorder(history, progress))
        top1, top5, n_test = _test(model, data.test, inputs, p, num_classes)
    counts = torch.bincount(labels[indices], minlength=num_classes)
    metrics = {"top1": top1, "top5": top5, "train_loss": stats["train_loss"], "train_top1": stats["train_top1"],
               "label_fraction": p.label_fraction, "n_labelled": int(indices.numel()),
               "n_train": int((labels >= 0).sum()), "n_test": n_test, "num_classes": num_classes,
               "per_class_min": int(counts.min()), "per_class_max": int(counts.max()),
               "feature_dim": dim, "eval_time_s": time.perf_counter() - start}
    return FinetuneResult(model, metrics, history, indices)


def _autocast(device: torch.device, amp: str):
    on = amp == "bf16" or (amp == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=on)


def _fit(model: FineTuned, train, inputs: Inputs, p: FinetuneProtocol, record: ProgressFn) -> dict[str, float]:
    """SGD over every parameter (BatchNorm in train mode) on crop + flip views; returns the
    last epoch's stats."""
    dev = inputs.device
    groups = [{"params": list(model.backbone.parameters()), "lr": p.lr, "base_lr": p.lr},
              {"params": list(model.head.parameters()), "lr": p.head_lr, "base_lr": p.head_lr}]
    optimizer = torch.optim.SGD(groups, lr=p.lr, momentum=p.momentum, nesterov=p.nesterov,
                                weight_decay=p.weight_decay)
    order_seed = derive_seed(p.seed, "finetune_order")
    view_gen = torch.Generator(dev).manual_seed(derive_seed(p.seed, "finetune_views"))
    steps_per_epoch = len(train) // p.batch_size  # drop_last: BatchNorm never sees a batch of 1
    total, step = p.epochs * steps_per_epoch, 0
    model.train()
    stats: dict[str, float] = {}
    for epoch in range(p.epochs):
        loss_sum = torch.zeros((), device=dev)
        correct = torch.zeros((), dtype=torch.long, device=dev)
        seen = 0
        for views, y in inputs.train_batches(train, p.batch_size, crop_scale=p.train_crop_scale,
                                             flip_prob=p.flip_prob, seed=order_seed, epoch=epoch,
                                             generator=view_gen, drop_last=True):
            factor = p.lr_factor(step, total)
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * factor
            with _autocast(dev, p.amp):
                logits = model(views)  # B x C
            loss = F.cross_entropy(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            loss_sum += loss.detach() * y.shape[0]
            correct += (logits.detach().argmax(dim=1) == y).sum()
            seen += y.shape[0]
        train_loss = loss_sum.item() / max(seen, 1)
        if not math.isfinite(train_loss):
            raise EvaluationError(f"fine-tuning diverged (train loss {train_loss}) in epoch {epoch + 1}; "
                                  "lower FinetuneProtocol.lr / head_lr")
        lrs = [g["lr"] for g in optimizer.param_groups]
        stats = {"epoch": epoch + 1, "lr": lrs[0], "head_lr": lrs[1], "train_loss": train_loss,
                 "train_top1": 100.0 * correct.item() / max(seen, 1)}
        record(stats)
    return stats


@torch.no_grad()
def _test(model: FineTuned, test, inputs: Inputs, p: FinetuneProtocol, num_classes: int) -> tuple[float, float, int]:
    """Top-1 / top-5 (percent) of the fine-tuned network (eval mode) on the test split's eval
    views, and the number of test images."""
    model.eval()
    logits, labels = [], []
    for views, y in inputs.eval_batches(test, p.test_crop_fraction):
        with _autocast(inputs.device, p.amp):
            logits.append(model(views).float())
        labels.append(y)
    scores, y = torch.cat(logits), torch.cat(labels)
    check_labels(y, num_classes, "test")
    return topk_accuracy(scores, y, 1), topk_accuracy(scores, y, 5), int(y.numel())
