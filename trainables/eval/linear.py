"""Evaluation of a frozen pre-trained encoder: linear probe, kNN and the random-crop test.

The three measurements of docs/method.md ("Evaluation"), all on the *backbone* (the pooled
features, ``B x 3 x R x R -> B x D``; the projection head is discarded, as in MoCo and LeOCLR):

* **Linear evaluation** (MoCo's ``main_lincls.py``, the protocol of LeOCLR Tables 1, 5, 6 and 7):
  the backbone is frozen and kept in eval mode (BatchNorm uses, and keeps, its running
  statistics; no gradient reaches it); a linear classifier ``nn.Linear(D, C)`` (weight
  ~ N(0, 0.01^2), bias 0) is trained with SGD (lr 30, momentum 0.9, weight decay 0, batch 256,
  100 epochs, lr x 0.1 at 60 % and 80 % of the epochs) on RandomResizedCrop + horizontal flip
  views of the labelled train split, and tested on the deterministic eval view (resize, and an
  optional centre crop). Reported: top-1 / top-5 of the classifier after the last epoch (no
  choice of the best epoch on the test split, unlike the official script's ``best_acc1``).
* **kNN** (``trainables.knn``, the per-epoch monitor): L2-normalised eval-view features, memory
  bank = the train split, k = 200 cosine neighbours voting with weight exp(sim / 0.1).
* **Random-crop test** (LeOCLR Table 7, ``eval/random_crop.py``): the *same* linear classifier
  evaluated on RandomResizedCrops of the test images (resized to ``round(R * 256 / 224)``
  square first, the paper's definition) instead of the eval view. ``random_crop_drop =
  linear_top1 - random_crop_top1`` measures how much of the accuracy depends on seeing the
  whole object (the paper: MoCo-v2 67.5 -> 63.2, LeOCLR 71.7 -> 68.9 at 200 epochs).

``run_linear`` is the ``linear`` protocol alone (it returns the classifier the random-crop test
needs); ``evaluate_encoder`` runs the three together, sharing the eval-view features. Views come
from ``eval/inputs.py`` (in-memory sets cut by ``ViewMaker`` on the device, file-backed sets
with their true geometry in the loader workers); linear evaluation uses geometry only (crop,
resize, flip: no colour jitter, grayscale or blur) and the same normalisation as pre-training.

Everything is deterministic given ``LinearProtocol.seed`` (own generators; the global RNG is
saved and restored around the call) and runs on CPU or CUDA. Single process. This module is
compute only: it imports neither mlflow nor ray (the registry / tracking wiring lives elsewhere).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from trainables.checkpoint import load_encoder
from trainables.data import DataBundle, epoch_permutation, load_data
from trainables.eval.frozen import FrozenFeatures
from trainables.eval.inputs import Inputs, derive_seed, session
from trainables.eval.knn import eval_features, knn_scores
from trainables.eval.protocol import EvaluationError, LinearProtocol
from trainables.eval.metrics import ProgressFn, recorder, topk_accuracy
from trainables.eval.random_crop import RandomCropProtocol, random_crop_accuracy
from trainables.validation import is_int



# ------------------------------------------------------------------------------------------------
# Small pieces
# ------------------------------------------------------------------------------------------------


def make_linear_classifier(feature_dim: int, num_classes: int, generator: torch.Generator) -> nn.Linear:
    """``nn.Linear(feature_dim, num_classes)`` initialised as MoCo's main_lincls: weight
    ~ N(0, 0.01^2) drawn from ``generator`` (a CPU generator), bias 0. The global RNG is not used."""
    layer = torch.nn.utils.skip_init(nn.Linear, feature_dim, num_classes)  # no default init
    with torch.no_grad():
        layer.weight.normal_(0.0, 0.01, generator=generator)
        layer.bias.zero_()
    return layer


# ------------------------------------------------------------------------------------------------
# The evaluation
# ------------------------------------------------------------------------------------------------


@dataclass
class LinearProbe:
    """A trained linear classifier on frozen features, and what it scored.

    classifier: ``nn.Linear(D, C)`` on the evaluation device; metrics: ``top1`` / ``top5``
    (percent, test split, eval view), ``train_loss`` / ``train_top1`` (the last epoch's);
    history: every epoch's progress dict."""

    classifier: nn.Linear
    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)


def _check_evaluation(data: DataBundle, image_size: int) -> None:
    if not is_int(image_size) or image_size < 1:
        raise EvaluationError(f"image_size={image_size!r}: must be a positive integer (pixels)")
    n_train, n_test = len(data.memory), len(data.test)
    if len(data.classes) < 1:
        raise EvaluationError("data.classes is empty: linear evaluation needs labelled classes")
    if n_train == 0 or n_test == 0:
        raise EvaluationError(f"empty split: {n_train} train (memory) and {n_test} test images")


def run_linear(backbone: nn.Module, data: DataBundle, protocol: LinearProtocol | None = None, *,
               image_size: int, device: str | torch.device | None = None,
               progress: ProgressFn | None = None) -> LinearProbe:
    """The ``linear`` protocol (MoCo's main_lincls, see the module docstring) on a frozen
    ``backbone``: classifier trained on ``data.memory``, tested on ``data.test`` (eval view).

    protocol: None = ``LinearProtocol.for_dataset_size(len(data.memory))``. The backbone is left
    exactly as it was. Returns the ``LinearProbe`` (its classifier is what ``random_crop`` tests);
    its metrics add ``n_train``, ``n_test``, ``num_classes``, ``feature_dim``, ``eval_time_s``.
    """
    start = time.perf_counter()
    _check_evaluation(data, image_size)
    p = protocol or LinearProtocol.for_dataset_size(len(data.memory))
    with session(backbone, device, image_size, freeze=True, batch_size=p.eval_batch_size,
                 loader_workers=p.loader_workers) as inputs:
        features = FrozenFeatures(backbone, inputs.device, p.amp)
        probe, train_x, _ = _fit_probe(features, inputs, data, p, progress)
    probe.metrics.update(n_train=len(data.memory), n_test=len(data.test), num_classes=len(data.classes),
                         feature_dim=train_x.shape[1], eval_time_s=time.perf_counter() - start)
    return probe


def evaluate_encoder(
    backbone: nn.Module,
    data: DataBundle,
    protocol: LinearProtocol,
    *,
    image_size: int,
    device: str | torch.device | None = None,
    knn_k: int = 200,
    knn_temperature: float = 0.1,
    progress: ProgressFn | None = None,
) -> dict[str, float]:
    """Linear evaluation, kNN and the random-crop test of a frozen backbone (see module docstring),
    sharing one pass of eval-view features between the kNN and the classifier's test.

    backbone: ``B x 3 x R x R`` normalised views -> ``B x D`` features (e.g.
    ``load_encoder(...).backbone``); it is kept in eval mode and never modified (parameters,
    BatchNorm running statistics and the train / eval flags of every submodule are as before
    the call; if ``device`` differs from the module's own it is moved there and back).
    data: ``memory`` = labelled train split minus validation (classifier training, kNN bank),
    ``test`` = labelled test split (``val`` is not read), ``classes`` = class names (C =
    len(classes)); images are uint8 ``3 x S x S``, in memory (``TensorImageDataset``) or any
    map-style dataset (read through a DataLoader); file-backed sets (ImageFolder, streaming
    Parquet) are viewed with their true geometry (eval/inputs.py).
    image_size: R, the resolution fed to the backbone (a run's ``config.resolved_view_size``).
    device: None = the backbone's device (CPU if it has no tensors).
    progress: called after every classifier epoch with {"epoch" (1-based), "lr", "train_loss",
    "train_top1"}.

    Returns percentages (0-100): ``linear_top1/5`` (eval view), ``knn_top1/5``,
    ``random_crop_top1/5``, ``random_crop_drop = linear_top1 - random_crop_top1``; the last
    classifier epoch's ``linear_train_loss`` / ``linear_train_top1``; and ``n_train``,
    ``n_test``, ``num_classes``, ``feature_dim``, ``eval_time_s``. Top-5 uses the top
    ``min(5, C)`` classes, so it is 100 when C <= 5.

    Cost: two eval-view passes (train + test), ``epochs`` passes over the train split with
    ``augment="crop_flip"`` (none with ``"none"``), ``random_crop_repeats`` passes over the test
    split; the kNN scores a test x train similarity matrix in chunks.
    """
    start = time.perf_counter()
    if not isinstance(protocol, LinearProtocol):
        raise TypeError(f"protocol must be a LinearProtocol, got {type(protocol).__name__}")
    _check_evaluation(data, image_size)
    if not is_int(knn_k) or knn_k < 1:
        raise EvaluationError(f"knn_k={knn_k!r}: must be a positive integer")
    if not (isinstance(knn_temperature, (int, float)) and knn_temperature > 0):
        raise EvaluationError(f"knn_temperature={knn_temperature!r}: must be > 0")
    p = protocol
    crop = RandomCropProtocol(crop_scale=p.random_crop_scale, repeats=p.random_crop_repeats, seed=p.seed,
                              eval_batch_size=p.eval_batch_size, amp=p.amp, loader_workers=p.loader_workers)
    with session(backbone, device, image_size, freeze=True, batch_size=p.eval_batch_size,
                 loader_workers=p.loader_workers) as inputs:
        features = FrozenFeatures(backbone, inputs.device, p.amp)
        probe, train_x, (train_y, test_x, test_y) = _fit_probe(features, inputs, data, p, progress)
        knn = knn_scores(train_x, train_y, test_x, test_y, len(data.classes), knn_k, knn_temperature)
        crop_top1, crop_top5 = random_crop_accuracy(probe.classifier, features, inputs, data.test, crop)
    m = probe.metrics
    return {
        "linear_top1": m["top1"],
        "linear_top5": m["top5"],
        "knn_top1": knn["top1"],
        "knn_top5": knn["top5"],
        "random_crop_top1": crop_top1,
        "random_crop_top5": crop_top5,
        "random_crop_drop": m["top1"] - crop_top1,
        "linear_train_loss": m["train_loss"],
        "linear_train_top1": m["train_top1"],
        "feature_dim": train_x.shape[1],
        "n_train": len(data.memory),
        "n_test": len(data.test),
        "num_classes": len(data.classes),
        "eval_time_s": time.perf_counter() - start,
    }


def _fit_probe(features: FrozenFeatures, inputs: Inputs, data: DataBundle, p: LinearProtocol,
               progress: ProgressFn | None):
    """Eval-view features of both splits (train_x: N x D, test_x: M x D), then the classifier
    (trained on crop + flip views, or on train_x with augment="none"), tested on test_x.
    Returns (probe, train_x, (train_y, test_x, test_y))."""
    num_classes = len(data.classes)
    train_x, train_y = eval_features(features, inputs, data.memory, num_classes, "train (memory)",
                                     p.test_crop_fraction)
    test_x, test_y = eval_features(features, inputs, data.test, num_classes, "test", p.test_crop_fraction)
    init_gen = torch.Generator().manual_seed(derive_seed(p.seed, "classifier_init"))
    classifier = make_linear_classifier(train_x.shape[1], num_classes, init_gen).to(inputs.device)
    history: list[dict[str, float]] = []
    stats = _train_classifier(classifier, features, inputs, data, p, train_x, train_y, recorder(history, progress))
    with torch.no_grad():
        test_logits = classifier(test_x)  # M x C
    metrics = {"top1": topk_accuracy(test_logits, test_y, 1), "top5": topk_accuracy(test_logits, test_y, 5),
               "train_loss": stats["train_loss"], "train_top1": stats["train_top1"]}
    return LinearProbe(classifier, metrics, history), train_x, (train_y, test_x, test_y)


def _train_classifier(classifier: nn.Linear, features: FrozenFeatures, inputs: Inputs, data: DataBundle,
                      p: LinearProtocol, train_x: torch.Tensor, train_y: torch.Tensor,
                      progress: ProgressFn) -> dict[str, float]:
    """SGD on the cross-entropy of ``classifier(features)`` (MoCo main_lincls.py ``train``).

    augment="crop_flip": each batch becomes RandomResizedCrop + flip views (B x 3 x R x R,
    ``Inputs.train_batches``), then frozen features (B x D); augment="none": batches of the
    cached eval-view features ``train_x`` (N x D). Batch order: a seeded permutation per epoch,
    last partial batch kept (as a DataLoader with drop_last=False). Returns the last epoch's
    stats.
    """
    dev = inputs.device
    optimizer = torch.optim.SGD(classifier.parameters(), lr=p.lr, momentum=p.momentum,
                                weight_decay=p.weight_decay)
    order_seed = derive_seed(p.seed, "train_order")
    view_gen = torch.Generator(dev).manual_seed(derive_seed(p.seed, "train_views"))
    n = train_x.shape[0]

    def batches(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if p.augment == "none":
            perm = epoch_permutation(n, seed=order_seed, epoch=epoch).to(dev)
            for idx in perm.split(p.batch_size):
                yield train_x[idx], train_y[idx]
            return
        for views, y in inputs.train_batches(data.memory, p.batch_size, crop_scale=p.train_crop_scale,
                                             flip_prob=p.flip_prob, seed=order_seed, epoch=epoch,
                                             generator=view_gen):
            yield features(views), y

    stats: dict[str, float] = {}
    for epoch in range(p.epochs):
        lr = p.lr_at(epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss_sum = torch.zeros((), device=dev)
        correct = torch.zeros((), dtype=torch.long, device=dev)
        for x, y in batches(epoch):  # x: B x D, y: B
            logits = classifier(x)  # B x C
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * y.shape[0]
            correct += (logits.detach().argmax(dim=1) == y).sum()
        train_loss = loss_sum.item() / n
        if not math.isfinite(train_loss):
            raise EvaluationError(
                f"the linear classifier diverged (train loss {train_loss}) in epoch {epoch + 1} at "
                f"lr={lr:g}; lower LinearProtocol.lr"
            )
        stats = {"epoch": epoch + 1, "lr": lr, "train_loss": train_loss,
                 "train_top1": 100.0 * correct.item() / n}
        progress(stats)
    return stats


def evaluate_checkpoint(
    directory: str | Path,
    protocol: LinearProtocol | None = None,
    *,
    data: DataBundle | None = None,
    device: str | torch.device | None = None,
    progress: ProgressFn | None = None,
) -> dict[str, float]:
    """``load_encoder(directory)`` then ``evaluate_encoder`` with the run's own settings.

    data: None = the run's dataset (``load_data`` with the run config's dataset, data_root,
    image_size, photo_patches, val_fraction, val_seed: the probe trains on the same memory
    split, validation held out). protocol: None = ``LinearProtocol.for_dataset_size(len(train
    split))``. device: None = CUDA if available, else CPU. The views are made at the run's
    ``resolved_view_size`` and the kNN uses its ``knn_k`` / ``knn_temperature``.
    """
    encoder = load_encoder(directory)
    cfg = encoder.config
    if data is None:
        data = load_data(cfg.dataset, root=cfg.data_root, image_size=cfg.image_size,
                         download=cfg.download, photo_patches=cfg.photo_patches,
                         val_fraction=cfg.val_fraction, val_seed=cfg.val_seed)
    if protocol is None:
        protocol = LinearProtocol.for_dataset_size(len(data.memory))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return evaluate_encoder(encoder.backbone, data, protocol, image_size=cfg.resolved_view_size,
                            device=device, knn_k=cfg.knn_k, knn_temperature=cfg.knn_temperature,
                            progress=progress)
