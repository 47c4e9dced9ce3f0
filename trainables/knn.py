"""Weighted kNN classifier on frozen features (the per-epoch monitor, docs/method.md).

Features of the frozen backbone are L2-normalised; the memory bank is the labelled training
split (``DataBundle.memory``, validation held out) under the eval view. For each query feature
(the validation split at every monitor epoch, the test split at the last one:
``trainables.monitor``), the k most cosine-similar bank features vote
for their labels with weight exp(sim / t) (k = 200, t = 0.1 by default, as in the official
MoCo CIFAR demo and InstDisc); the class with the largest summed weight is the prediction.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
import torch.nn.functional as F

from trainables import distributed as D


def knn_predict(
    features: torch.Tensor,
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    num_classes: int,
    k: int = 200,
    t: float = 0.1,
) -> torch.Tensor:
    """features: B x D and bank: M x D (both L2-normalised), bank_labels: M (int64).

    Returns B x num_classes class scores: score[b, c] = sum over the top-k neighbours j of b
    with label c of exp(sim(b, j) / t). argmax(dim=1) is the prediction.
    """
    k = min(k, bank.shape[0])
    sim = features @ bank.t()  # B x M
    sim_k, idx_k = sim.topk(k, dim=1)  # B x k
    labels_k = bank_labels[idx_k]  # B x k
    weights = (sim_k / t).exp()
    scores = torch.zeros(features.shape[0], num_classes, device=features.device, dtype=weights.dtype)
    scores.scatter_add_(1, labels_k, weights)
    return scores


@torch.no_grad()
def extract_features(
    fn: Callable[[torch.Tensor], torch.Tensor],
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    prepare: Callable[[torch.Tensor], torch.Tensor],
    normalize: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run `fn(prepare(images))` over batches; returns (float32 features N x D, L2-normalised
    unless `normalize` is False; labels N), gathered from all workers when distributed (each
    worker passes its own shard; rank 0's rows first, then rank 1's, ...)."""
    feats, labels = [], []
    for images, y in batches:
        out = fn(prepare(images)).float()
        feats.append(F.normalize(out, dim=1) if normalize else out)
        labels.append(y.to(feats[-1].device))
    f, y = torch.cat(feats), torch.cat(labels)
    return D.all_gather_variable(f), D.all_gather_variable(y)


def knn_accuracy(
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    num_classes: int,
    k: int = 200,
    t: float = 0.1,
    chunk: int = 1024,
) -> dict[str, float]:
    """Top-1 (and top-5 when there are > 5 classes) kNN accuracy in percent, as {"knn_top1",
    "knn_top5"}; test_features: B x D queries with test_labels: B; bank: M x D with bank_labels:
    M (all L2-normalised, labels >= 0). The monitor prefixes the keys with its split (val_/test_)."""
    top1 = top5 = 0
    for s in range(0, test_features.shape[0], chunk):
        scores = knn_predict(test_features[s : s + chunk], bank, bank_labels, num_classes, k, t)
        y = test_labels[s : s + chunk]
        ranked = scores.argsort(dim=1, descending=True)
        top1 += (ranked[:, 0] == y).sum().item()
        top5 += (ranked[:, :5] == y[:, None]).any(dim=1).sum().item()
    n = max(test_features.shape[0], 1)
    out = {"knn_top1": 100.0 * top1 / n}
    if num_classes > 5:
        out["knn_top5"] = 100.0 * top5 / n
    return out
