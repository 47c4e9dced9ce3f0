"""The ``knn`` protocol: weighted k-nearest-neighbour accuracy of a frozen backbone's features.

docs/method.md ("Evaluation"): eval-view features (``eval/inputs.py``) of the labelled train
split (the memory bank) and of the test split, L2-normalised; each test feature's ``k`` most
cosine-similar bank features vote for their labels with weight ``exp(sim / temperature)``
(InstDisc's kNN, the official MoCo CIFAR demo's monitor: k 200, t 0.1). The per-epoch training
monitor (``trainables/knn.py``, ``Trainer.knn_eval``) computes the same vote; this module is the
protocol a finished encoder is evaluated with.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset

from trainables.data import DataBundle
from trainables.eval.frozen import FrozenFeatures
from trainables.eval.inputs import Inputs, session
from trainables.eval.settings import EvaluationError, RunSettings
from trainables.knn import knn_accuracy

__all__ = ["KnnProtocol", "check_labels", "eval_features", "knn_scores", "run_knn"]


@dataclass(frozen=True)
class KnnProtocol(RunSettings):
    """Settings of the ``knn`` protocol.

    ``k`` neighbours, votes weighted ``exp(sim / temperature)``; ``test_crop_fraction``: the
    eval view of in-memory square sets keeps this central fraction of the side (1 = the whole
    image; file-backed sets always get the paper's shorter-side 256/224 resize + centre crop);
    ``eval_batch_size``, ``amp``, ``loader_workers``: see ``RunSettings`` (``seed`` is unused:
    the kNN has no randomness).
    """

    k: int = 200
    temperature: float = 0.1
    test_crop_fraction: float = 1.0

    def validate(self) -> None:
        self._require_ints(("k",), 1)
        self._require_numbers(("temperature",), low=0, low_open=True, reason="must be a finite number > 0")
        self._require_numbers(("test_crop_fraction",), low=0, high=1, low_open=True,
                              reason="must be in (0, 1] (1 = whole image, 0.875 = ImageNet's 224/256)")
        self._require_runtime()


def check_labels(labels: torch.Tensor, num_classes: int, split: str) -> None:
    """Labels must index ``classes``: [0, C); -1 (unlabelled) cannot be evaluated."""
    lo, hi = int(labels.min().item()), int(labels.max().item())
    if lo < 0 or hi >= num_classes:
        raise EvaluationError(
            f"the {split} split has labels in [{lo}, {hi}] but data.classes lists {num_classes} "
            f"classes (labels must be in [0, {num_classes - 1}]; -1 marks unlabelled images, "
            "which linear evaluation cannot use)"
        )


def eval_features(features: FrozenFeatures, inputs: Inputs, ds: Dataset, num_classes: int, split: str,
                  crop_fraction: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen features of every image's eval view: (N x D float32, N int64), on the device."""
    feats, labels = [], []
    for views, y in inputs.eval_batches(ds, crop_fraction):
        feats.append(features(views))
        labels.append(y)
    if not feats:
        raise EvaluationError(f"the {split} split is empty")
    out_y = torch.cat(labels)
    check_labels(out_y, num_classes, split)
    return torch.cat(feats), out_y


def knn_scores(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
               num_classes: int, k: int, temperature: float) -> dict[str, float]:
    """kNN top-1 / top-5 (percent) from raw features (N x D bank, M x D queries); top-5 is 100
    when there are at most 5 classes."""
    knn = knn_accuracy(F.normalize(test_x, dim=1), test_y, F.normalize(train_x, dim=1), train_y,
                       num_classes, k=k, t=temperature)
    return {"top1": knn["knn_top1"], "top5": knn.get("knn_top5", 100.0)}


def run_knn(backbone: nn.Module, data: DataBundle, settings: KnnProtocol | None = None, *,
            image_size: int, device: str | torch.device | None = None) -> dict[str, float]:
    """The ``knn`` protocol on a frozen ``backbone`` (``B x 3 x R x R -> B x D``, left exactly as
    it was): bank = ``data.memory``, queries = ``data.test`` at resolution ``image_size`` (R).

    Returns percentages on the test split, ``top1`` / ``top5``, and ``n_train``, ``n_test``,
    ``num_classes``, ``feature_dim``, ``eval_time_s``.
    """
    p = settings or KnnProtocol()
    start = time.perf_counter()
    num_classes = len(data.classes)
    with session(backbone, device, image_size, freeze=True, batch_size=p.eval_batch_size,
                 loader_workers=p.loader_workers) as inputs:
        features = FrozenFeatures(backbone, inputs.device, p.amp)
        train_x, train_y = eval_features(features, inputs, data.memory, num_classes, "train (memory)",
                                         p.test_crop_fraction)
        test_x, test_y = eval_features(features, inputs, data.test, num_classes, "test", p.test_crop_fraction)
        result = knn_scores(train_x, train_y, test_x, test_y, num_classes, p.k, p.temperature)
    return {**result, "n_train": train_x.shape[0], "n_test": test_x.shape[0], "num_classes": num_classes,
            "feature_dim": train_x.shape[1], "eval_time_s": time.perf_counter() - start}
