"""The frozen backbone of an evaluation: eval mode, no gradient, nothing written.

``frozen(backbone, device)`` puts every submodule in eval mode (BatchNorm reads its running
statistics and leaves them alone) on ``device`` and restores modes and device afterwards;
``FrozenFeatures`` runs the forward (``B x 3 x R x R -> B x D`` float32) under ``no_grad``.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Iterator

import torch
import torch.nn as nn

from trainables.eval.protocol import EvaluationError


def module_device(module: nn.Module) -> torch.device | None:
    """The device of the module's first parameter (or buffer); None if it holds no tensors."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return None


def eval_device(module: nn.Module, device: str | torch.device | None) -> torch.device:
    """``device`` as a torch.device (``"cuda"`` -> the current CUDA device); None = the module's
    own device (CPU if it holds no tensors)."""
    if device is None:
        return module_device(module) or torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


@contextlib.contextmanager
def frozen(backbone: nn.Module, device: torch.device) -> Iterator[None]:
    """Put every submodule in eval mode and the module on ``device``; undo both afterwards.

    Parameters and buffers are never written: forwards run under ``torch.no_grad`` in eval mode
    (BatchNorm reads its running statistics and leaves them alone), and the optimizer only
    holds the classifier's parameters.
    """
    modes = [(m, m.training) for m in backbone.modules()]
    home = module_device(backbone)
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


class FrozenFeatures:
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
