"""Encoders, projection heads, the momentum (EMA) key encoder, the key queue and SplitBatchNorm.

MoCo (He et al., 2020) / MoCo v2 (Chen et al., 2020) / LeOCLR (TMLR 2024):
- encoder f = backbone (pooled features, D dims) + projection head (D -> 128);
  v1 head: Linear(D, 128); v2 head: Linear(D, D) -> ReLU -> Linear(D, 128).
- key encoder f_k: a copy of the query encoder f_q updated after each optimizer step by
  theta_k <- m * theta_k + (1 - m) * theta_q   (LeOCLR Eq. 1), buffers included.
- queue: K x C L2-normalised keys, FIFO, any batch size (no K % batch constraint).
- SplitBatchNorm: single-process stand-in for per-GPU BN (official MoCo CIFAR demo).
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision


# ------------------------------------------------------------------------------------------
# Backbones: each returns (module mapping B x 3 x H x W -> B x D, D)
class SmallCNN(nn.Module):
    """Four conv-BN-ReLU blocks; fast on CPU, for smoke tests (too shallow to show much)."""

    def __init__(self, width: int = 32):
        super().__init__()
        layers, c_in = [], 3
        for i, c_out in enumerate((width, width * 2, width * 4, width * 8)):
            layers += [
                nn.Conv2d(c_in, c_out, 3, stride=1 if i == 0 else 2, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
            c_in = c_out
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out_dim = c_in

    def forward(self, x):
        return self.features(x)


def build_backbone(name: str) -> tuple[nn.Module, int]:
    """small_cnn | resnet18_cifar (3x3 stride-1 stem, no max-pool) | resnet18 | resnet50."""
    if name == "small_cnn":
        net = SmallCNN()
        return net, net.out_dim
    if name in ("resnet18", "resnet18_cifar"):
        net = torchvision.models.resnet18(weights=None)
    elif name == "resnet50":
        net = torchvision.models.resnet50(weights=None)
    else:
        raise ValueError(f"unknown backbone {name!r}")
    if name == "resnet18_cifar":
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    dim = net.fc.in_features
    net.fc = nn.Identity()
    return net, dim


def build_head(kind: str, in_dim: int, out_dim: int) -> nn.Module:
    if kind == "linear":  # MoCo v1
        return nn.Linear(in_dim, out_dim)
    if kind == "mlp":  # MoCo v2
        return nn.Sequential(nn.Linear(in_dim, in_dim), nn.ReLU(inplace=True), nn.Linear(in_dim, out_dim))
    raise ValueError(f"unknown head {kind!r}")


class Encoder(nn.Module):
    """f(x) = head(backbone(x)); `features(x)` gives the backbone's pooled features (B x D)."""

    def __init__(self, backbone: str, head: str = "mlp", embedding_dim: int = 128):
        super().__init__()
        self.backbone, self.feature_dim = build_backbone(backbone)
        self.head = build_head(head, self.feature_dim, embedding_dim)

    def forward(self, x):  # B x 3 x H x W -> B x C (not normalised)
        return self.head(self.backbone(x))

    def features(self, x):
        return self.backbone(x)


# ------------------------------------------------------------------------------------------
class SplitBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training-mode statistics are computed over `num_splits` equal groups
    of the batch, as if each group were on its own GPU (official MoCo CIFAR-10 demo). Group j
    holds samples j, j + g, j + 2g, ... (a free reshape N x C -> N/g x gC, no copy).
    Running statistics are the mean of the chunks' updates. Eval mode is plain BN."""

    def __init__(self, num_features: int, num_splits: int, **kw):
        super().__init__(num_features, **kw)
        self.num_splits = num_splits

    def forward(self, x):
        n, c, h, w = x.shape
        if not self.training or self.num_splits == 1:
            return super().forward(x)
        if n % self.num_splits:
            raise ValueError(f"SplitBatchNorm: batch {n} not divisible by {self.num_splits} splits")
        g = self.num_splits
        # momentum None = cumulative average, as in nn.BatchNorm2d
        factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked + 1)
        running_mean = self.running_mean.repeat(g)
        running_var = self.running_var.repeat(g)
        out = F.batch_norm(
            x.view(-1, c * g, h, w), running_mean, running_var,
            self.weight.repeat(g), self.bias.repeat(g), True, factor, self.eps,
        ).view(n, c, h, w)
        with torch.no_grad():
            self.running_mean.copy_(running_mean.view(g, c).mean(dim=0))
            self.running_var.copy_(running_var.view(g, c).mean(dim=0))
            self.num_batches_tracked.add_(1)
        return out


def convert_split_bn(module: nn.Module, num_splits: int) -> nn.Module:
    """Replace every BatchNorm2d in `module` by a SplitBatchNorm (weights and stats kept)."""
    if num_splits <= 1:
        return module
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, SplitBatchNorm):
            new = SplitBatchNorm(child.num_features, num_splits, eps=child.eps, momentum=child.momentum)
            new.load_state_dict(child.state_dict())
            setattr(module, name, new)
        else:
            convert_split_bn(child, num_splits)
    return module


# ------------------------------------------------------------------------------------------
def make_key_encoder(query_encoder: nn.Module) -> nn.Module:
    """f_k starts as an exact copy of f_q and never receives gradients."""
    key = copy.deepcopy(query_encoder)
    for p in key.parameters():
        p.requires_grad_(False)
    return key


@torch.no_grad()
def ema_update_(key_encoder: nn.Module, query_encoder: nn.Module, momentum: float) -> None:
    """theta_k <- m * theta_k + (1 - m) * theta_q  (LeOCLR Eq. 1), for parameters and float
    buffers (BN running stats) with fused foreach ops; integer buffers are copied."""
    k_params = list(key_encoder.parameters())
    q_params = list(query_encoder.parameters())
    k_float = [b for b in key_encoder.buffers() if b.is_floating_point()]
    q_float = [b for b in query_encoder.buffers() if b.is_floating_point()]
    torch._foreach_lerp_(k_params + k_float, q_params + q_float, 1.0 - momentum)
    for kb, qb in zip(key_encoder.buffers(), query_encoder.buffers()):
        if not kb.is_floating_point():
            kb.copy_(qb)


class KeyQueue(nn.Module):
    """FIFO dictionary of K L2-normalised keys (K x C), any batch size.

    `enqueue(keys)` writes the M new keys (already gathered from all workers, M x C) at the
    pointer, wrapping around; if M >= K only the last K keys are kept. Identical on all ranks.
    """

    def __init__(self, size: int, dim: int, generator: torch.Generator | None = None):
        super().__init__()
        init = torch.randn(size, dim, generator=generator)
        self.register_buffer("keys", F.normalize(init, dim=1))  # K x C
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return self.keys.shape[0]

    @torch.no_grad()
    def enqueue(self, new: torch.Tensor) -> None:
        k, m = self.size, new.shape[0]
        new = new.to(self.keys.dtype)
        if m >= k:
            self.keys.copy_(new[-k:])
            self.ptr.zero_()
            return
        idx = (self.ptr + torch.arange(m, device=self.keys.device)) % k
        self.keys.index_copy_(0, idx, new)
        self.ptr.copy_((self.ptr + m) % k)
