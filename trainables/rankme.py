"""RankMe: the effective rank of a representation, a label-free quality measure.

Garrido et al., ICML 2023, "RankMe: Assessing the downstream performance of pretrained
self-supervised representations by their rank" (docs/method.md, equation table): for the
features z (N x D) of a fixed held-out sample with singular values sigma_1..sigma_min(N, D),

    p_k = sigma_k / ||sigma||_1 + eps,      RankMe(z) = exp(-sum_k p_k log p_k),

a smooth count of the directions the features use, between 1 (all features on one line) and
min(N, D). No centering (as in the paper). The monitor computes it on the raw backbone features
of the validation split's first ``rankme_samples`` images, the same features its kNN reads.
"""

from __future__ import annotations

import math

import torch


def rankme(z: torch.Tensor, eps: float = 1e-7) -> float:
    """RankMe of features z: N x D (any float dtype, any device) -> a float in ~[1, min(N, D)].

    Singular values are computed in float64 on z's device; an all-zero z gives p_k = eps for
    every k (sigma / 0 is taken as 0), i.e. a value close to 1. Non-finite features (a run that
    diverged) have no rank: NaN, so the loop's own divergence check names the cause.
    """
    if z.dim() != 2 or z.shape[0] == 0 or z.shape[1] == 0:
        raise ValueError(f"rankme needs an N x D matrix with N, D >= 1, got shape {tuple(z.shape)}")
    z = z.detach().to(torch.float64)
    if not bool(torch.isfinite(z).all()):
        return math.nan
    sigma = torch.linalg.svdvals(z)
    total = sigma.sum()
    p = (sigma / total if total > 0 else torch.zeros_like(sigma)) + eps
    return math.exp(-(p * p.log()).sum().item())
