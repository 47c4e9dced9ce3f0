"""Evaluation of a frozen pre-trained encoder: linear probe, kNN and the random-crop test.

The three measurements of SPEC.md "Evaluation protocols", all on the *backbone* (the pooled
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

Public API: ``EvaluationError``, ``ProtocolError``,
``LinearProtocol``, ``evaluate_encoder``, ``evaluate_checkpoint``, ``topk_accuracy``,
``make_linear_classifier``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from trainables.data import (
    DataBundle,
    TensorImageDataset,
    epoch_permutation,
    has_open_loaders,
    iterate_batches,
    load_data,
    release_loaders,
)
from trainables.knn import knn_accuracy
from trainables.checkpoint import load_encoder
from trainables.views import ViewConfig, ViewMaker, ViewParams

__all__ = [
    "AUGMENTS",
    "EvaluationError",
    "LinearProtocol",
    "ProtocolError",
    "evaluate_checkpoint",
    "evaluate_encoder",
    "make_linear_classifier",
    "topk_accuracy",
]

#: Training-view choices of the linear classifier (see ``LinearProtocol.augment``).
AUGMENTS = ("crop_flip", "none")
_AMP = ("auto", "bf16", "off")

#: Called after every classifier epoch with {"epoch", "lr", "train_loss", "train_top1"}.
ProgressFn = Callable[[dict[str, float]], None]


class EvaluationError(RuntimeError):
    """An evaluation cannot run; the message names the file or value and the reason."""


class ProtocolError(EvaluationError, ValueError):
    """A bad ``LinearProtocol`` value; the message names the field, the value and the rule."""


# ------------------------------------------------------------------------------------------------
# The protocol
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LinearProtocol:
    """Settings of the linear evaluation and the random-crop test.

    Defaults are the SPEC's (official MoCo ImageNet linear evaluation, ``main_lincls.py``):
    SGD lr 30, momentum 0.9, weight decay 0, batch 256, 100 epochs, lr x 0.1 at 60 % and 80 %
    of the epochs (epochs 60 and 80), train views RandomResizedCrop(R, scale 0.08-1, torchvision's
    default, as main_lincls) + horizontal flip.

    Fields beyond the SPEC:

    * ``augment``: ``"crop_flip"`` (the SPEC: fresh crop + flip views every epoch, one backbone
      forward per image per epoch) or ``"none"``: the eval-view features are computed once and
      the classifier trains on that cache (one backbone forward per image in all instead of one
      per image and epoch: on a CPU, seconds instead of tens of minutes; the numbers are then a
      "linear probe on fixed features", not the SPEC protocol - say so when reporting them).
    * ``lr_milestones`` are *fractions* of ``epochs`` (rounded to whole epochs), so an
      ``epochs`` override keeps the schedule's shape: epochs=10 steps the lr at 6 and 8.
    * ``test_crop_fraction``: the eval view keeps the central fraction of the stored image's side
      and resizes it to R. 1.0 (default) = the whole image resized, exactly
      ``ViewMaker.eval_view`` - the view the kNN monitor uses and the CIFAR / STL practice; 0.875
      = ImageNet's Resize(256) + CenterCrop(224) (with images stored at 256 and R = 224 the crop
      is exact, no resampling).
    * ``random_crop_scale``: area range of the random-crop test's RandomResizedCrop (default
      torchvision's 0.08-1, the crops a linear-eval classifier is trained on; the paper does not
      give it), no flip (a flip says nothing about crops); ``random_crop_repeats``: crops per
      test image (accuracy averaged over them; more = less noise).
    * ``seed``: all randomness (classifier init, batch order, views) derives from it.
    * ``eval_batch_size``: batch of the feature passes (no effect on results); ``amp``: "auto"
      runs backbone forwards under bf16 autocast on CUDA (fp32 on CPU), "bf16" / "off" force it;
      ``loader_workers``: DataLoader processes for file-backed (streaming) datasets.

    Scaling to small data: see ``for_dataset_size``; to cut compute, pass ``epochs`` (the
    schedule scales with it) and/or ``augment="none"``.
    """

    epochs: int = 100
    batch_size: int = 256
    lr: float = 30.0
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_milestones: tuple[float, ...] = (0.6, 0.8)
    lr_decay: float = 0.1
    augment: str = "crop_flip"
    train_crop_scale: tuple[float, float] = (0.08, 1.0)
    flip_prob: float = 0.5
    test_crop_fraction: float = 1.0
    random_crop_scale: tuple[float, float] = (0.08, 1.0)
    random_crop_repeats: int = 1
    seed: int = 0
    eval_batch_size: int = 512
    amp: str = "auto"
    loader_workers: int = 0

    #: Reference batch of ``lr`` (the linear scaling rule in ``for_dataset_size``).
    REFERENCE_BATCH = 256

    def __post_init__(self) -> None:
        for name in ("lr_milestones", "train_crop_scale", "random_crop_scale"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        self.validate()

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def for_dataset_size(cls, n_train: int, *, min_steps_per_epoch: int = 8,
                         **overrides: Any) -> "LinearProtocol":
        """The SPEC protocol adapted to a labelled train split of ``n_train`` images.

        The SPEC's settings are ImageNet's: 1.28M images make 5,005 steps of batch 256 per epoch.
        On a small split the same batch leaves few optimizer steps (1,437 digits: 6 per epoch;
        a split smaller than one batch: 1 per epoch, 100 in all). What defines the protocol is
        kept - 100 epochs, the step schedule at 60 % / 80 %, momentum, weight decay, the crop +
        flip augmentation - and only the batch shrinks: to the largest power of two that gives
        at least ``min_steps_per_epoch`` steps per epoch (at most 256, at least 1), with the
        learning rate scaled linearly, ``lr = 30 * batch / 256`` (Goyal et al., 2017; the rule
        ``TrainConfig.scaled_lr`` applies to pre-training). Splits of at least
        ``min_steps_per_epoch * 256`` = 2,048 images get the SPEC protocol unchanged; digits
        (1,437) gets batch 128 and lr 15; 128 images get batch 16 and lr 1.875.

        Epochs are not cut: a small split's epoch is cheap, and fewer epochs would change the
        protocol. Where compute matters (a CPU), pass ``epochs=...`` and/or ``augment="none"``
        as ``overrides``; any field can be overridden (an explicit ``batch_size`` keeps the
        default lr unless ``lr`` is given too).
        """
        if isinstance(n_train, bool) or not isinstance(n_train, int) or n_train < 1:
            raise ProtocolError(f"n_train={n_train!r}: must be a positive integer (the train split's size)")
        if isinstance(min_steps_per_epoch, bool) or not isinstance(min_steps_per_epoch, int) \
                or min_steps_per_epoch < 1:
            raise ProtocolError(f"min_steps_per_epoch={min_steps_per_epoch!r}: must be a positive integer")
        batch = cls.REFERENCE_BATCH
        while batch > 1 and n_train < min_steps_per_epoch * batch:
            batch //= 2
        scaled = {"batch_size": batch, "lr": cls.lr * batch / cls.REFERENCE_BATCH}
        if "batch_size" in overrides:
            scaled = {}
        return cls(**{**scaled, **overrides})

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "protocol") -> "LinearProtocol":
        """Build from a mapping (a YAML / JSON section or CLI overrides; missing fields keep their
        defaults); unknown keys are refused. ``source`` prefixes every error message."""
        if not isinstance(values, Mapping):
            raise ProtocolError(f"{source}: expected a mapping of protocol fields, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ProtocolError(
                f"{source}: unknown field(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(known))}"
            )
        try:
            return cls(**dict(values))
        except ProtocolError as exc:
            raise ProtocolError(f"{source}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """Plain values (tuples as lists), e.g. to log as parameters."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def replace(self, **changes: Any) -> "LinearProtocol":
        return dataclasses.replace(self, **changes)

    # -- the schedule ---------------------------------------------------------------------------

    def milestone_epochs(self) -> tuple[int, ...]:
        """0-based epochs from which the lr is multiplied by ``lr_decay`` (100 epochs: 60, 80)."""
        return tuple(int(round(f * self.epochs)) for f in self.lr_milestones)

    def lr_at(self, epoch: int) -> float:
        """lr of 0-based ``epoch``: ``lr * lr_decay ** (number of milestones <= epoch)``,
        as ``adjust_learning_rate`` in MoCo's main_lincls.py."""
        return self.lr * self.lr_decay ** sum(epoch >= m for m in self.milestone_epochs())

    # -- validation -----------------------------------------------------------------------------

    def validate(self) -> None:
        def bad(name: str, reason: str) -> ProtocolError:
            return ProtocolError(f"LinearProtocol.{name}={getattr(self, name)!r}: {reason}")

        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def is_num(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        for name in ("epochs", "batch_size", "random_crop_repeats", "eval_batch_size"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise bad(name, "must be an integer >= 1")
        for name in ("seed", "loader_workers"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 0:
                raise bad(name, "must be an integer >= 0")
        if not is_num(self.lr) or self.lr <= 0:
            raise bad("lr", "must be a finite number > 0")
        if not is_num(self.momentum) or not 0 <= self.momentum < 1:
            raise bad("momentum", "must be a number in [0, 1)")
        if not is_num(self.weight_decay) or self.weight_decay < 0:
            raise bad("weight_decay", "must be a finite number >= 0")
        if not is_num(self.lr_decay) or not 0 < self.lr_decay <= 1:
            raise bad("lr_decay", "must be a number in (0, 1] (the lr is multiplied by it at each milestone)")
        ms = self.lr_milestones
        if (not isinstance(ms, tuple) or not all(is_num(m) and 0 < m <= 1 for m in ms)
                or list(ms) != sorted(ms)):
            raise bad("lr_milestones", "must be increasing fractions of the epochs in (0, 1], e.g. [0.6, 0.8]")
        if self.augment not in AUGMENTS:
            raise bad("augment", f"must be one of {', '.join(AUGMENTS)}")
        for name in ("train_crop_scale", "random_crop_scale"):
            v = getattr(self, name)
            if not (isinstance(v, tuple) and len(v) == 2 and all(is_num(x) for x in v)
                    and 0 < v[0] <= v[1] <= 1):
                raise bad(name, "must be two numbers 0 < min <= max <= 1 (RandomResizedCrop area fractions)")
        if not is_num(self.flip_prob) or not 0 <= self.flip_prob <= 1:
            raise bad("flip_prob", "must be a probability in [0, 1]")
        if not is_num(self.test_crop_fraction) or not 0 < self.test_crop_fraction <= 1:
            raise bad("test_crop_fraction", "must be in (0, 1] (1 = whole image, 0.875 = ImageNet's 224/256)")
        if self.amp not in _AMP:
            raise bad("amp", f"must be one of {', '.join(_AMP)}")


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
    no = torch.zeros(n, dtype=torch.bool, device=dev)
    one = torch.ones(n, device=dev)
    params = ViewParams("crop", boxes, no, no, one, one, one, torch.zeros(n, device=dev),
                        torch.arange(4, device=dev).expand(n, 4), no, no, one,
                        enabled=(False, False, False, False), blur_enabled=False)
    return maker.render(images, [params])[0]


def _module_device(module: nn.Module) -> torch.device | None:
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return None


@contextlib.contextmanager
def _frozen(backbone: nn.Module, device: torch.device) -> Iterator[None]:
    """Put every submodule in eval mode and the module on ``device``; undo both afterwards.

    Parameters and buffers are never written: forwards run under ``torch.no_grad`` in eval mode
    (BatchNorm reads its running statistics and leaves them alone), and the optimizer only
    holds the classifier's parameters.
    """
    modes = [(m, m.training) for m in backbone.modules()]
    home = _module_device(backbone)
    backbone.eval()
    if home is not None and home != device:
        backbone.to(device)
    try:
        yield
    finally:
        if home is not None and home != device:
            backbone.to(home)
        for m, mode in modes:
            m.training = mode


class _Features:
    """Frozen-backbone forward: views B x 3 x R x R -> float32 features B x D (no gradient)."""

    def __init__(self, backbone: nn.Module, device: torch.device, amp: str):
        self.backbone = backbone
        self.device = device
        self.amp = amp == "bf16" or (amp == "auto" and device.type == "cuda")

    @torch.no_grad()
    def __call__(self, views: torch.Tensor) -> torch.Tensor:
        if self.backbone.training:  # a forward hook or the module itself switched modes
            raise EvaluationError("the backbone left eval mode during evaluation")
        ctx = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.amp else contextlib.nullcontext()
        with ctx:
            out = self.backbone(views)
        if not isinstance(out, torch.Tensor) or out.dim() < 2 or out.shape[0] != views.shape[0]:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise EvaluationError(f"the backbone must return B x D features for B images, got {got}")
        return out.flatten(1).float()

    def collect(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                prepare: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (N x D float32) and labels (N int64) of all batches, on the device."""
        feats, labels = [], []
        for images, y in batches:
            images = images.to(self.device, non_blocking=True)
            feats.append(self(prepare(images)))
            labels.append(y.to(self.device, non_blocking=True))
        return torch.cat(feats), torch.cat(labels)


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
    data: ``memory`` = labelled train split (classifier training, kNN bank), ``test`` = labelled
    test split, ``classes`` = class names (C = len(classes)); images are uint8 ``3 x S x S``,
    in memory (``TensorImageDataset``) or any map-style dataset (read through a DataLoader).
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
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise EvaluationError(f"image_size={image_size!r}: must be a positive integer (pixels)")
    if isinstance(knn_k, bool) or not isinstance(knn_k, int) or knn_k < 1:
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
        dev = _module_device(backbone) or torch.device("cpu")
    else:
        dev = torch.device(device)
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    fresh_loaders = [ds for ds in (data.memory, data.test)
                     if not isinstance(ds, TensorImageDataset) and not has_open_loaders(ds)]

    rng_devices = [dev] if dev.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=rng_devices), _frozen(backbone, dev):
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
    features = _Features(backbone, dev, p.amp)

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


def _train_classifier(classifier: nn.Linear, features: _Features, data: DataBundle,
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
    image_size, photo_patches). protocol: None = ``LinearProtocol.for_dataset_size(len(train
    split))``. device: None = CUDA if available, else CPU. The views are made at the run's
    ``resolved_view_size`` and the kNN uses its ``knn_k`` / ``knn_temperature``.
    """
    encoder = load_encoder(directory)
    cfg = encoder.config
    if data is None:
        data = load_data(cfg.dataset, root=cfg.data_root, image_size=cfg.image_size,
                         download=cfg.download, photo_patches=cfg.photo_patches)
    if protocol is None:
        protocol = LinearProtocol.for_dataset_size(len(data.memory))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return evaluate_encoder(encoder.backbone, data, protocol, image_size=cfg.resolved_view_size,
                            device=device, knn_k=cfg.knn_k, knn_temperature=cfg.knn_temperature,
                            progress=progress)
