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
* **Random-crop test** (LeOCLR Table 7): the *same* linear classifier evaluated on
  RandomResizedCrops of the test images instead of the eval view. ``random_crop_drop =
  linear_top1 - random_crop_top1`` measures how much of the accuracy depends on seeing the
  whole object (the paper: MoCo-v2 67.5 -> 63.2, LeOCLR 71.7 -> 68.9 at 200 epochs).

Views come from ``trainables.views.ViewMaker`` (batched, on the device, per-sample parameters
from a seeded ``torch.Generator``); linear evaluation uses geometry only (crop, resize, flip: no
colour jitter, grayscale or blur) and the same normalisation as pre-training.

Everything is deterministic given ``LinearProtocol.seed`` (own generators; the global RNG is
saved and restored around the call) and runs on CPU or CUDA. Single process. This module is
compute only: it imports neither mlflow nor ray (the registry / tracking wiring lives elsewhere).
"""

from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from trainables.checkpoint import load_encoder
from trainables.data import (
    DataBundle,
    TensorImageDataset,
    epoch_permutation,
    has_open_loaders,
    iterate_batches,
    load_data,
    release_loaders,
)
from trainables.eval.frozen import FrozenFeatures, frozen, module_device
from trainables.eval.protocol import EvaluationError, LinearProtocol
from trainables.knn import knn_accuracy
from trainables.validation import is_int
from trainables.views import ViewConfig, ViewMaker, ViewParams

#: Called after every classifier epoch with {"epoch", "lr", "train_loss", "train_top1"}.
ProgressFn = Callable[[dict[str, float]], None]


# ------------------------------------------------------------------------------------------------
# Small pieces
# ------------------------------------------------------------------------------------------------


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Percent of rows whose label is among the ``k`` highest scores.

    scores: N x C, labels: N (int64). With C <= k every class is among the top k and the result
    is 100 (that is how top-5 is defined for fewer than 5 classes here; ties are broken by
    ``torch.topk``).
    """
    n = scores.shape[0]
    if n == 0:
        raise EvaluationError("topk_accuracy: no samples")
    return 100.0 * _topk_correct(scores, labels, k) / n


def _topk_correct(scores: torch.Tensor, labels: torch.Tensor, k: int) -> int:
    k = min(k, scores.shape[1])
    top = scores.topk(k, dim=1).indices  # N x k
    return int((top == labels[:, None]).any(dim=1).sum().item())


def make_linear_classifier(feature_dim: int, num_classes: int, generator: torch.Generator) -> nn.Linear:
    """``nn.Linear(feature_dim, num_classes)`` initialised as MoCo's main_lincls: weight
    ~ N(0, 0.01^2) drawn from ``generator`` (a CPU generator), bias 0. The global RNG is not used."""
    layer = torch.nn.utils.skip_init(nn.Linear, feature_dim, num_classes)  # no default init
    with torch.no_grad():
        layer.weight.normal_(0.0, 0.01, generator=generator)
        layer.bias.zero_()
    return layer


def _derive_seed(seed: int, purpose: str) -> int:
    """An independent 63-bit seed per purpose, so adding one stream never shifts another."""
    digest = hashlib.sha256(f"leoclr-eval/{seed}/{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _geometry_view_config(size: int, crop_scale: tuple[float, float], flip_prob: float) -> ViewConfig:
    """RandomResizedCrop(size, crop_scale) + flip + normalise, no colour jitter / grayscale / blur."""
    return ViewConfig(size=size, crop_scale=crop_scale, jitter=(0.0, 0.0, 0.0, 0.0), jitter_prob=0.0,
                      grayscale_prob=0.0, blur_prob=0.0, flip_prob=flip_prob)


def _test_view(maker: ViewMaker, images: torch.Tensor, fraction: float) -> torch.Tensor:
    """Eval view, B x 3 x S x S uint8 -> B x 3 x R x R normalised float.

    fraction 1: ``maker.eval_view`` (antialiased resize of the whole image). fraction < 1: the
    central ``round(fraction * S)`` square (torchvision CenterCrop's placement) resized to R with
    the crop path's bilinear sampling (exact when the crop is R pixels wide).
    """
    if fraction >= 1.0:
        return maker.eval_view(images)
    n, _, height, width = images.shape
    dev = images.device
    ch, cw = max(1, int(round(fraction * height))), max(1, int(round(fraction * width)))
    top, left = int(round((height - ch) / 2.0)), int(round((width - cw) / 2.0))
    boxes = torch.zeros(n, 4, device=dev)  # filled from Python scalars: no host -> device copy
    boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3] = left, top, left + cw, top + ch
    return maker.render(images, [ViewParams.geometry_only("crop", boxes)])[0]


def _check_labels(labels: torch.Tensor, num_classes: int, split: str) -> None:
    lo, hi = int(labels.min().item()), int(labels.max().item())
    if lo < 0 or hi >= num_classes:
        raise EvaluationError(
            f"the {split} split has labels in [{lo}, {hi}] but data.classes lists {num_classes} "
            f"classes (labels must be in [0, {num_classes - 1}]; -1 marks unlabelled images, "
            "which linear evaluation cannot use)"
        )


# ------------------------------------------------------------------------------------------------
# The evaluation
# ------------------------------------------------------------------------------------------------


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
    """Linear evaluation, kNN and the random-crop test of a frozen backbone (see module docstring).

    backbone: ``B x 3 x R x R`` normalised views -> ``B x D`` features (e.g.
    ``load_encoder(...).backbone``); it is kept in eval mode and never modified (parameters,
    BatchNorm running statistics and the train / eval flags of every submodule are as before
    the call; if ``device`` differs from the module's own it is moved there and back).
    data: ``memory`` = labelled train split minus validation (classifier training, kNN bank),
    ``test`` = labelled test split (``val`` is not read), ``classes`` = class names (C =
    len(classes)); images are uint8 ``3 x S x S``, in memory (``TensorImageDataset``) or any map-style dataset (read through a DataLoader).
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
    if not is_int(image_size) or image_size < 1:
        raise EvaluationError(f"image_size={image_size!r}: must be a positive integer (pixels)")
    if not is_int(knn_k) or knn_k < 1:
        raise EvaluationError(f"knn_k={knn_k!r}: must be a positive integer")
    if not (isinstance(knn_temperature, (int, float)) and knn_temperature > 0):
        raise EvaluationError(f"knn_temperature={knn_temperature!r}: must be > 0")
    num_classes = len(data.classes)
    n_train, n_test = len(data.memory), len(data.test)
    if num_classes < 1:
        raise EvaluationError("data.classes is empty: linear evaluation needs labelled classes")
    if n_train == 0 or n_test == 0:
        raise EvaluationError(f"empty split: {n_train} train (memory) and {n_test} test images")
    if device is None:
        dev = module_device(backbone) or torch.device("cpu")
    else:
        dev = torch.device(device)
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    fresh_loaders = [ds for ds in (data.memory, data.test)
                     if not isinstance(ds, TensorImageDataset) and not has_open_loaders(ds)]

    rng_devices = [dev] if dev.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=rng_devices), frozen(backbone, dev):
            result = _evaluate(backbone, data, protocol, image_size, dev, knn_k, knn_temperature, progress)
    finally:
        for ds in fresh_loaders:  # end DataLoader workers this call started
            release_loaders(ds)
    result.update(n_train=n_train, n_test=n_test, num_classes=num_classes)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    result["eval_time_s"] = time.perf_counter() - start
    return result


def _evaluate(backbone: nn.Module, data: DataBundle, protocol: LinearProtocol, image_size: int,
              dev: torch.device, knn_k: int, knn_temperature: float,
              progress: ProgressFn | None) -> dict[str, float]:
    p = protocol
    num_classes = len(data.classes)
    pin = dev.type == "cuda"
    features = FrozenFeatures(backbone, dev, p.amp)

    def in_order(ds):  # every image once, in index order
        return iterate_batches(ds, p.eval_batch_size, shuffle=False, seed=0, epoch=0, drop_last=False,
                               num_workers=p.loader_workers, pin_memory=pin)

    # 1. Eval-view features of both splits (the kNN bank / queries, the classifier's test inputs
    #    and, with augment="none", its training inputs). train_x: N x D, test_x: M x D.
    eval_maker = ViewMaker(ViewConfig(size=image_size))
    test_view = lambda x: _test_view(eval_maker, x, p.test_crop_fraction)  # noqa: E731
    train_x, train_y = features.collect(in_order(data.memory), test_view)
    test_x, test_y = features.collect(in_order(data.test), test_view)
    _check_labels(train_y, num_classes, "train (memory)")
    _check_labels(test_y, num_classes, "test")
    feature_dim = train_x.shape[1]

    # 2. kNN on the L2-normalised features (what trainables.knn.extract_features computes; the
    #    raw features are kept for the classifier, so they are normalised here).
    knn = knn_accuracy(F.normalize(test_x, dim=1), test_y, F.normalize(train_x, dim=1), train_y,
                       num_classes, k=knn_k, t=knn_temperature)
    knn.setdefault("knn_top5", 100.0)  # C <= 5: every class is in the top 5

    # 3. The linear classifier.
    init_gen = torch.Generator().manual_seed(_derive_seed(p.seed, "classifier_init"))
    classifier = make_linear_classifier(feature_dim, num_classes, init_gen).to(dev)
    train_stats = _train_classifier(classifier, features, data, p, image_size, dev, pin,
                                    train_x, train_y, progress)
    with torch.no_grad():
        test_logits = classifier(test_x)  # M x C
    linear_top1 = topk_accuracy(test_logits, test_y, 1)
    linear_top5 = topk_accuracy(test_logits, test_y, 5)

    # 4. Random-crop test (Table 7): the same classifier on RandomResizedCrops of the test images.
    crop_maker = ViewMaker(_geometry_view_config(image_size, p.random_crop_scale, flip_prob=0.0))
    crop_gen = torch.Generator(dev).manual_seed(_derive_seed(p.seed, "random_crop_test"))
    top1 = top5 = total = 0
    with torch.no_grad():
        for _ in range(p.random_crop_repeats):
            for images, y in in_order(data.test):
                images = images.to(dev, non_blocking=True)
                y = y.to(dev, non_blocking=True)
                logits = classifier(features(crop_maker(images, ["crop"], crop_gen)[0]))
                top1 += _topk_correct(logits, y, 1)
                top5 += _topk_correct(logits, y, 5)
                total += y.shape[0]
    crop_top1, crop_top5 = 100.0 * top1 / total, 100.0 * top5 / total

    return {
        "linear_top1": linear_top1,
        "linear_top5": linear_top5,
        "knn_top1": knn["knn_top1"],
        "knn_top5": knn["knn_top5"],
        "random_crop_top1": crop_top1,
        "random_crop_top5": crop_top5,
        "random_crop_drop": linear_top1 - crop_top1,
        "linear_train_loss": train_stats["train_loss"],
        "linear_train_top1": train_stats["train_top1"],
        "feature_dim": feature_dim,
    }


def _train_classifier(classifier: nn.Linear, features: FrozenFeatures, data: DataBundle,
                      p: LinearProtocol, image_size: int, dev: torch.device, pin: bool,
                      train_x: torch.Tensor, train_y: torch.Tensor,
                      progress: ProgressFn | None) -> dict[str, float]:
    """SGD on the cross-entropy of ``classifier(features)`` (MoCo main_lincls.py ``train``).

    augment="crop_flip": each batch (uint8 B x 3 x S x S) becomes RandomResizedCrop + flip views
    (B x 3 x R x R), then frozen features (B x D); augment="none": batches of the cached
    eval-view features ``train_x`` (N x D). Batch order: a seeded permutation per epoch, last
    partial batch kept (as a DataLoader with drop_last=False). Returns the last epoch's stats.
    """
    optimizer = torch.optim.SGD(classifier.parameters(), lr=p.lr, momentum=p.momentum,
                                weight_decay=p.weight_decay)
    order_seed = _derive_seed(p.seed, "train_order")
    view_gen = torch.Generator(dev).manual_seed(_derive_seed(p.seed, "train_views"))
    maker = ViewMaker(_geometry_view_config(image_size, p.train_crop_scale, p.flip_prob))
    n = train_x.shape[0]

    def batches(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if p.augment == "none":
            perm = epoch_permutation(n, seed=order_seed, epoch=epoch).to(dev)
            for idx in perm.split(p.batch_size):
                yield train_x[idx], train_y[idx]
            return
        for images, y in iterate_batches(data.memory, p.batch_size, shuffle=True, seed=order_seed,
                                         epoch=epoch, drop_last=False, num_workers=p.loader_workers,
                                         pin_memory=pin):
            images = images.to(dev, non_blocking=True)
            yield features(maker(images, ["crop"], view_gen)[0]), y.to(dev, non_blocking=True)

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
        if progress is not None:
            progress(dict(stats))
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
