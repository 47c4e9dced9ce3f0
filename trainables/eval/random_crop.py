"""The ``random_crop`` protocol: the paper's random-crop test (LeOCLR Table 7).

"images are resized to 256x256 and then randomly cropped and resized to 224x224" (Sec. 5.3): at
resolution R every test image is resized to ``T x T``, ``T = round(R * 256 / 224)``, then a
``RandomResizedCrop(R, crop_scale)`` (torchvision's sampling; no flip) is cut from it
(``Inputs.random_crop_batches``). The classifier is the *same* one the ``linear`` protocol trained
on the frozen backbone, so the protocol runs after it and reports the drop from its centre-view
accuracy: ``drop = linear_top1 - top1`` (the paper at 200 epochs: MoCo-v2 67.5 -> 63.2, a drop
of 4.3; LeOCLR 71.7 -> 68.9, 2.8).

The paper does not give the crops' area range: ``crop_scale`` defaults to torchvision's
RandomResizedCrop default (0.08, 1), the crops the linear classifier is trained on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
from torch.utils.data import Dataset

from trainables.data import DataBundle
from trainables.eval.frozen import FrozenFeatures
from trainables.eval.inputs import Inputs, derive_seed, session
from trainables.eval.metrics import topk_correct
from trainables.eval.settings import RunSettings

if TYPE_CHECKING:
    from trainables.eval.linear import LinearProbe

__all__ = ["RandomCropProtocol", "random_crop_accuracy", "run_random_crop"]


@dataclass(frozen=True)
class RandomCropProtocol(RunSettings):
    """Settings of the random-crop test: ``crop_scale`` (RandomResizedCrop area range),
    ``repeats`` (crops per test image; accuracy averaged over them, more = less noise),
    ``seed`` (the crops), ``eval_batch_size``, ``amp``, ``loader_workers`` (``RunSettings``)."""

    crop_scale: tuple[float, float] = (0.08, 1.0)
    repeats: int = 1

    def validate(self) -> None:
        self._require_range("crop_scale", "must be two numbers 0 < min <= max <= 1 (RandomResizedCrop area fractions)")
        self._require_ints(("repeats",), 1)
        self._require_runtime()


@torch.no_grad()
def random_crop_accuracy(classifier: nn.Module, features: FrozenFeatures, inputs: Inputs, test: Dataset,
                         p: RandomCropProtocol) -> tuple[float, float]:
    """Top-1 / top-5 (percent) of ``classifier(features(view))`` over ``p.repeats`` random-crop
    views of every test image."""
    generator = torch.Generator(inputs.device).manual_seed(derive_seed(p.seed, "random_crop_test"))
    top1 = top5 = total = 0
    for repeat in range(p.repeats):
        for views, y in inputs.random_crop_batches(test, crop_scale=p.crop_scale, seed=p.seed,
                                                   repeat=repeat, generator=generator):
            logits = classifier(features(views))
            top1 += topk_correct(logits, y, 1)
            top5 += topk_correct(logits, y, 5)
            total += y.shape[0]
    return 100.0 * top1 / total, 100.0 * top5 / total


def run_random_crop(backbone: nn.Module, data: DataBundle, probe: "LinearProbe",
                    settings: RandomCropProtocol | None = None, *, image_size: int,
                    device: str | torch.device | None = None) -> dict[str, float]:
    """The random-crop test of ``probe`` (the ``linear`` protocol's result on the same frozen
    ``backbone``, left as it was) on ``data.test`` at resolution ``image_size``.

    Returns percentages on the test split: ``top1`` / ``top5`` on random crops, ``linear_top1``
    (the probe's centre-view accuracy) and ``drop = linear_top1 - top1``; ``eval_time_s``.
    """
    p = settings or RandomCropProtocol()
    start = time.perf_counter()
    with session(backbone, device, image_size, freeze=True, batch_size=p.eval_batch_size,
                 loader_workers=p.loader_workers) as inputs:
        features = FrozenFeatures(backbone, inputs.device, p.amp)
        classifier = probe.classifier.to(inputs.device)
        top1, top5 = random_crop_accuracy(classifier, features, inputs, data.test, p)
    linear_top1 = probe.metrics["top1"]
    return {"top1": top1, "top5": top5, "linear_top1": linear_top1, "drop": linear_top1 - top1,
            "eval_time_s": time.perf_counter() - start}
