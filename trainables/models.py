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
    # imported here: `import torchvision` pulls in torch._dynamo (through torchvision.ops), several
    # CPU-seconds per process that a small_cnn trial never needs
    import torchvision

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
    of the batch, as if each group were on its own GPU (official MoCo CIFAR-10 demo).
    Running statistics are the mean of the groups' updates. Eval mode is plain BN.

    Which samples share a group depends on the memory layout, so that neither costs a copy:
    - contiguous (NCHW) input: group j holds samples j, j + g, j + 2g, ... (the official demo's
      layout: one batch_norm over the free reshape N x C -> N/g x gC);
    - channels_last input (the GPU default): group j is the j-th contiguous block of N/g
      samples (one batch_norm per block, concatenated).
    Either way the groups partition a batch drawn in random order (and key batches are
    shuffled before the key encoder), so the two are statistically the same split BN.

    The output is never an autograd view of a temporary: the official demo's `.view(N, C, H, W)`
    makes every following in-place op (ResNet's ReLU(inplace=True), `out += identity`) go
    through autograd's as_strided/CopySlices path, a full extra copy in the backward pass.
    """

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
        if x.is_contiguous():
            out = F.batch_norm(
                x.view(-1, c * g, h, w), running_mean, running_var,
                self.weight.repeat(g), self.bias.repeat(g), True, factor, self.eps,
            )
            # same storage, but not an autograd view (see the class docstring)
            out = torch.ops.aten._unsafe_view(out, (n, c, h, w))
        else:
            rm, rv = running_mean.view(g, c), running_var.view(g, c)
            if self.affine and not torch.jit.is_scripting():
                out = _BlockBatchNorm.apply(x, self.weight, self.bias, rm, rv, g, factor, self.eps)
            else:
                out = torch.cat([
                    F.batch_norm(part, rm[j], rv[j], self.weight, self.bias, True, factor, self.eps)
                    for j, part in enumerate(x.chunk(g, dim=0))
                ], dim=0)
        with torch.no_grad():
            self.running_mean.copy_(running_mean.view(g, c).mean(dim=0))
            self.running_var.copy_(running_var.view(g, c).mean(dim=0))
            self.num_batches_tracked.add_(1)
        return out


class _BlockBatchNorm(torch.autograd.Function):
    """Training-mode batch norm with separate statistics for each of `groups` contiguous
    blocks of the batch, every block written straight into its slice of one output tensor
    (and, backwards, of one input-gradient tensor) with the `.out` forms of ATen's own
    batch-norm kernels. Per-block `F.batch_norm` + `torch.cat` computes the same thing with one
    more activation-sized allocation and copy per layer in each direction (on CPU every fresh
    large tensor is also page-faulted in).

    running_mean / running_var: groups x C, updated in place (row j by block j).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, groups, momentum, eps):
        out = torch.empty_like(x)  # keeps channels_last; a block along N is contiguous in it
        stat_dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
        c = x.shape[1]
        means = torch.empty(groups, c, dtype=stat_dtype, device=x.device)
        invstds = torch.empty(groups, c, dtype=stat_dtype, device=x.device)
        for j, (xj, oj) in enumerate(zip(x.chunk(groups), out.chunk(groups))):
            torch.ops.aten.native_batch_norm.out(
                xj, weight, bias, running_mean[j], running_var[j], True, momentum, eps,
                out=oj, save_mean=means[j], save_invstd=invstds[j])
        ctx.save_for_backward(x, weight, means, invstds)
        ctx.groups, ctx.eps = groups, eps
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        x, weight, means, invstds = ctx.saved_tensors
        groups = ctx.groups
        fmt = (torch.channels_last if x.is_contiguous(memory_format=torch.channels_last)
               and not x.is_contiguous() else torch.contiguous_format)
        grad_out = grad_out.contiguous(memory_format=fmt)
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_x = torch.empty_like(x) if need_x else None
        grad_w = torch.empty(groups, *weight.shape, dtype=weight.dtype, device=weight.device)
        grad_b = torch.empty_like(grad_w)
        gx_parts = grad_x.chunk(groups) if need_x else [torch.empty(0, device=x.device, dtype=x.dtype)] * groups
        for j, (gj, xj) in enumerate(zip(grad_out.chunk(groups), x.chunk(groups))):
            torch.ops.aten.native_batch_norm_backward.out(
                gj, xj, weight, None, None, means[j], invstds[j], True, ctx.eps,
                [need_x, need_w, need_b], out0=gx_parts[j], out1=grad_w[j], out2=grad_b[j])
        return (grad_x, grad_w.sum(0) if need_w else None, grad_b.sum(0) if need_b else None,
                None, None, None, None, None)


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


class EmaUpdater:
    """theta_k <- m * theta_k + (1 - m) * theta_q  (LeOCLR Eq. 1) for a fixed pair of encoders.

    Parameters and float buffers (BN running stats) are updated with one fused foreach lerp
    (a few kernels for the whole model, not one Python-level op per tensor as in the official
    code's loop); integer buffers (num_batches_tracked) are copied with one foreach copy. The
    tensor lists are collected once: loading a state dict copies into the same tensors, so they
    stay valid for the life of the modules.
    """

    def __init__(self, key_encoder: nn.Module, query_encoder: nn.Module):
        k_params, q_params = list(key_encoder.parameters()), list(query_encoder.parameters())
        k_bufs, q_bufs = list(key_encoder.buffers()), list(query_encoder.buffers())
        if len(k_params) != len(q_params) or len(k_bufs) != len(q_bufs):
            raise ValueError("key and query encoders must have the same parameters and buffers")
        self.k_float = k_params + [b for b in k_bufs if b.is_floating_point()]
        self.q_float = q_params + [b for b in q_bufs if b.is_floating_point()]
        self.k_other = [b for b in k_bufs if not b.is_floating_point()]
        self.q_other = [b for b in q_bufs if not b.is_floating_point()]

    @torch.no_grad()
    def __call__(self, momentum: float) -> None:
        if self.k_float:
            torch._foreach_lerp_(self.k_float, self.q_float, 1.0 - momentum)
        if self.k_other:
            torch._foreach_copy_(self.k_other, self.q_other)


@torch.no_grad()
def ema_update_(key_encoder: nn.Module, query_encoder: nn.Module, momentum: float) -> None:
    """theta_k <- m * theta_k + (1 - m) * theta_q  (LeOCLR Eq. 1), for parameters and float
    buffers (BN running stats) with fused foreach ops; integer buffers are copied.
    (One-off form of `EmaUpdater`; a training loop keeps an `EmaUpdater`.)"""
    EmaUpdater(key_encoder, query_encoder)(momentum)


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
