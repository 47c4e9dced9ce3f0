"""The kNN monitor (k nearest by cosine, votes weighted exp(sim / t)) against a hand computation."""

import math

import pytest
import torch
import torch.nn.functional as F

from trainables.knn import extract_features, knn_accuracy, knn_predict


def test_knn_predict_weighted_votes_by_hand():
    # 2-D unit vectors at angles; the query at angle 0
    ang = [0.1, 0.3, -0.2, 1.5, 2.0]
    bank = torch.tensor([[math.cos(a), math.sin(a)] for a in ang])
    labels = torch.tensor([0, 1, 1, 0, 2])
    q = torch.tensor([[1.0, 0.0]])
    t, k = 0.5, 3
    scores = knn_predict(q, bank, labels, num_classes=3, k=k, t=t)
    # the 3 most similar: angles 0.1 (label 0), -0.2 (1), 0.3 (1)
    expected = [math.exp(math.cos(0.1) / t), math.exp(math.cos(-0.2) / t) + math.exp(math.cos(0.3) / t), 0.0]
    assert scores[0].tolist() == pytest.approx(expected, rel=1e-5)
    assert scores.argmax(dim=1).item() == 1  # two weaker votes beat one stronger vote here
    # with k = 1 only the nearest neighbour counts
    assert knn_predict(q, bank, labels, 3, k=1, t=t).argmax(dim=1).item() == 0


def test_knn_accuracy_top1_top5_and_k_larger_than_bank():
    g = torch.Generator().manual_seed(0)
    centers = F.normalize(torch.randn(10, 16, generator=g), dim=1)
    bank_y = torch.arange(10).repeat_interleave(5)
    bank = F.normalize(centers[bank_y] + 0.05 * torch.randn(50, 16, generator=g), dim=1)
    test_y = torch.arange(10)
    test = F.normalize(centers + 0.05 * torch.randn(10, 16, generator=g), dim=1)
    acc = knn_accuracy(test, test_y, bank, bank_y, num_classes=10, k=200, t=0.1)  # k > bank size
    assert acc["knn_top1"] == 100.0 and acc["knn_top5"] == 100.0
    shuffled = knn_accuracy(test, test_y.roll(1), bank, bank_y, num_classes=10, k=5, t=0.1)
    assert shuffled["knn_top1"] == 0.0


def test_extract_features_normalises_and_keeps_order():
    batches = [(torch.ones(2, 3) * i, torch.tensor([i, i])) for i in (1, 2)]
    feats, labels = extract_features(lambda x: x, batches, prepare=lambda x: x * 2)
    torch.testing.assert_close(feats.norm(dim=1), torch.ones(4))
    assert labels.tolist() == [1, 1, 2, 2]
