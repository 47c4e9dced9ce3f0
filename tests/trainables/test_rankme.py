"""RankMe (trainables.rankme): hand computations of exp(-sum p log p), p = sigma / ||sigma||_1 + eps."""

from __future__ import annotations

import math

import pytest
import torch

from trainables.rankme import rankme


def test_singular_values_3_and_1_by_hand():
    # diag(3, 1): sigma = (3, 1) -> p = (0.75, 0.25) -> entropy 0.5623351446 -> exp = 1.7547654
    z = torch.tensor([[3.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    entropy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert entropy == pytest.approx(0.5623351446, abs=1e-9)
    assert rankme(z, eps=0.0) == pytest.approx(math.exp(entropy), rel=1e-12)
    assert rankme(z) == pytest.approx(1.7547654, abs=1e-5)
    # the same singular values in any rotation: U diag(3, 1) V^T
    u, _ = torch.linalg.qr(torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(2, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    assert rankme(u @ torch.diag(torch.tensor([3.0, 1.0], dtype=torch.float64)) @ v.T) == pytest.approx(
        math.exp(entropy), abs=1e-5)


def test_orthogonal_matrix_has_full_rank_and_rank_one_has_one():
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    assert rankme(q) == pytest.approx(16.0, rel=1e-5)  # 16 equal singular values: p = 1/16 each
    a = torch.randn(40, 1, generator=torch.Generator().manual_seed(1))
    b = torch.randn(1, 8, generator=torch.Generator().manual_seed(2))
    assert rankme(a @ b) == pytest.approx(1.0, abs=1e-4)  # one non-zero singular value


def test_no_centering_and_bad_shapes():
    # a constant non-zero feature is rank 1 (centering would make it rank 0)
    assert rankme(torch.ones(10, 4)) == pytest.approx(1.0, abs=1e-4)
    assert rankme(torch.zeros(3, 3)) == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(ValueError, match="N x D"):
        rankme(torch.ones(4))


def test_non_finite_features_have_no_rank():
    z = torch.eye(4)
    z[1, 2] = float("nan")
    assert math.isnan(rankme(z))
