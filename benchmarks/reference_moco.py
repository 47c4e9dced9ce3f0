"""A straightforward MoCo v2, written the way the official code (facebookresearch/moco) is.

This is the baseline that ``benchmarks/train_step.py`` measures the platform's engine against.
It deliberately keeps the official code's structure and costs, on one process (no DDP):

* data: a ``torch.utils.data.DataLoader`` over a dataset whose ``__getitem__`` turns one image
  into a PIL image and runs the MoCo v2 "aug+" torchvision pipeline on it twice
  (``TwoCropsTransform``; RandomResizedCrop(scale 0.2-1), RandomApply(ColorJitter(.4, .4, .4,
  .1), p=.8), RandomGrayscale(.2), RandomApply(PIL GaussianBlur(sigma .1-2), p=.5), flip,
  ToTensor, Normalize), then the default collate stacks the float views; with 0 workers the
  augmentation runs in the training process at one torch thread, as it would in a worker;
* model (``builder.py``): two encoders, the key encoder's parameters copied from the query
  encoder and frozen; the momentum update is a Python loop over the parameters
  (``k.mul_(m).add_(q.mul(1 - m))``, parameters only, at the start of each forward, as in the
  official code); the batch shuffle for BN is ``randperm`` + ``argsort`` on the one process
  (the official CIFAR-10 demo's single-GPU shuffle); logits by ``einsum`` against a *clone* of
  the queue, which is stored as dim x K; the positive is class 0; ``_dequeue_and_enqueue``
  writes ``keys.T`` at an integer pointer read back from a tensor and needs K % batch == 0;
* loop (``main_moco.py``): forward, ``CrossEntropyLoss``, ``zero_grad``, ``backward``,
  ``step``, and ``loss.item()`` after every step (the official loop logs it each step).

The encoders are the platform's ``trainables.models.Encoder`` (backbone + MoCo v2 MLP head), so
that a comparison with the platform measures the engine, not a different network; with
``bn_splits > 1`` every BatchNorm2d becomes the official CIFAR-10 demo's SplitBatchNorm (one
``batch_norm`` over the N/g x gC reshape, its output returned as a ``.view``; same statistics
as the platform's, which avoids that view). ``symmetric=True`` is the CIFAR-10
demo's symmetric loss (l(q1, k2) + l(q2, k1), both key sets enqueued).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision.transforms as T
from PIL import Image, ImageFilter
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainables.models import Encoder  # noqa: E402

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ------------------------------------------------------------------------------------------
# Data (moco/loader.py + main_moco.py's aug+)
class PILGaussianBlur:
    """Gaussian blur with a random sigma, with PIL's filter (the official loader's blur)."""

    def __init__(self, sigma=(0.1, 2.0)):
        self.sigma = sigma

    def __call__(self, img: Image.Image) -> Image.Image:
        return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.sigma)))


class TwoCropsTransform:
    """Two independent draws of the same augmentation: (query view, key view)."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, img):
        return [self.transform(img), self.transform(img)]


def moco_v2_augmentation(size: int, crop_scale=(0.2, 1.0)) -> T.Compose:
    return T.Compose([
        T.RandomResizedCrop(size, scale=crop_scale),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        T.RandomGrayscale(p=0.2),
        T.RandomApply([PILGaussianBlur((0.1, 2.0))], p=0.5),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


class PairDataset(Dataset):
    """uint8 N x 3 x S x S images -> (view_q, view_k) float tensors, one image at a time."""

    def __init__(self, images: torch.Tensor, transform):
        self.images = images
        self.transform = transform

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int):
        img = Image.fromarray(self.images[index].permute(1, 2, 0).numpy())
        return self.transform(img)


def make_loader(images: torch.Tensor, batch_size: int, size: int, num_workers: int = 0,
                crop_scale=(0.2, 1.0)) -> DataLoader:
    dataset = PairDataset(images, TwoCropsTransform(moco_v2_augmentation(size, crop_scale)))
    # persistent workers: the benchmark's data sets are a few thousand images, so an "epoch"
    # is a handful of batches; restarting the workers that often (an ImageNet epoch is ~5,000
    # batches) would charge the reference a start-up cost it does not pay in real training
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                      pin_memory=torch.cuda.is_available(), drop_last=True,
                      persistent_workers=num_workers > 0)


# ------------------------------------------------------------------------------------------
# Model (moco/builder.py, single process; SplitBatchNorm of the CIFAR-10 demo)
class DemoSplitBatchNorm(nn.BatchNorm2d):
    """BN statistics over `num_splits` groups of the batch, as the official CIFAR-10 demo."""

    def __init__(self, num_features: int, num_splits: int, **kw):
        super().__init__(num_features, **kw)
        self.num_splits = num_splits

    def forward(self, x):
        n, c, h, w = x.shape
        if not self.training:
            return super().forward(x)
        g = self.num_splits
        running_mean = self.running_mean.repeat(g)
        running_var = self.running_var.repeat(g)
        out = F.batch_norm(x.view(-1, c * g, h, w), running_mean, running_var,
                           self.weight.repeat(g), self.bias.repeat(g), True, self.momentum,
                           self.eps).view(n, c, h, w)
        self.running_mean.data.copy_(running_mean.view(g, c).mean(dim=0))
        self.running_var.data.copy_(running_var.view(g, c).mean(dim=0))
        return out


def demo_split_bn(module: nn.Module, num_splits: int) -> nn.Module:
    if num_splits <= 1:
        return module
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            new = DemoSplitBatchNorm(child.num_features, num_splits, eps=child.eps,
                                     momentum=child.momentum)
            new.load_state_dict(child.state_dict())
            setattr(module, name, new)
        else:
            demo_split_bn(child, num_splits)
    return module


class ReferenceMoCo(nn.Module):
    def __init__(self, backbone: str, dim: int = 128, K: int = 4096, m: float = 0.99,
                 T: float = 0.2, bn_splits: int = 8, symmetric: bool = False):
        super().__init__()
        self.K, self.m, self.T, self.symmetric = K, m, T, symmetric
        self.encoder_q = demo_split_bn(Encoder(backbone, "mlp", dim), bn_splits)
        self.encoder_k = demo_split_bn(Encoder(backbone, "mlp", dim), bn_splits)
        for param_q, param_k in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
            param_k.data.copy_(param_q.data)
            param_k.requires_grad = False
        self.register_buffer("queue", F.normalize(torch.randn(dim, K), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    @torch.no_grad()
    def _momentum_update_key_encoder(self) -> None:
        for param_q, param_k in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
            param_k.mul_(self.m).add_(param_q.mul(1.0 - self.m))

    @torch.no_grad()
    def _dequeue_and_enqueue(self, keys: torch.Tensor) -> None:
        batch_size = keys.shape[0]
        ptr = int(self.queue_ptr)
        assert self.K % batch_size == 0
        self.queue[:, ptr:ptr + batch_size] = keys.T
        self.queue_ptr[0] = (ptr + batch_size) % self.K

    @torch.no_grad()
    def _batch_shuffle(self, x: torch.Tensor):
        idx_shuffle = torch.randperm(x.shape[0], device=x.device)
        return x[idx_shuffle], torch.argsort(idx_shuffle)

    def _contrastive_loss(self, im_q: torch.Tensor, im_k: torch.Tensor):
        q = F.normalize(self.encoder_q(im_q), dim=1)
        with torch.no_grad():
            im_k_, idx_unshuffle = self._batch_shuffle(im_k)
            k = F.normalize(self.encoder_k(im_k_), dim=1)
            k = k[idx_unshuffle]
        l_pos = torch.einsum("nc,nc->n", [q, k]).unsqueeze(-1)
        l_neg = torch.einsum("nc,ck->nk", [q, self.queue.clone().detach()])
        logits = torch.cat([l_pos, l_neg], dim=1) / self.T
        labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        return F.cross_entropy(logits, labels), k

    def forward(self, im_q: torch.Tensor, im_k: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            self._momentum_update_key_encoder()
        if self.symmetric:
            loss_12, k2 = self._contrastive_loss(im_q, im_k)
            loss_21, k1 = self._contrastive_loss(im_k, im_q)
            loss, k = loss_12 + loss_21, torch.cat([k1, k2], dim=0)
        else:
            loss, k = self._contrastive_loss(im_q, im_k)
        self._dequeue_and_enqueue(k)
        return loss


# ------------------------------------------------------------------------------------------
# Training loop (main_moco.py's train(), without the meters' printing)
class ReferenceTrainer:
    """Holds the model, optimizer and a running loader iterator; ``step()`` is one iteration."""

    def __init__(self, images: torch.Tensor, backbone: str, batch_size: int, size: int,
                 *, queue_size: int = 4096, bn_splits: int = 8, symmetric: bool = False,
                 lr: float = 0.06, num_workers: int = 0, seed: int = 0,
                 device: str | torch.device = "cpu"):
        torch.manual_seed(seed)
        random.seed(seed)
        self.device = torch.device(device)
        self.model = ReferenceMoCo(backbone, K=queue_size, bn_splits=bn_splits,
                                   symmetric=symmetric).to(self.device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=lr * batch_size / 256,
                                         momentum=0.9, weight_decay=5e-4)
        self.loader = make_loader(images, batch_size, size, num_workers)
        self._it: Iterator | None = None
        self.load_time = 0.0  # seconds spent waiting for batches (decode + augmentation)
        self.load_cpu_time = 0.0  # this process's CPU seconds in it (0 workers: all of it)
        self.model.train()

    def _next_batch(self):
        if self.loader.num_workers > 0:
            return self._fetch()
        # num_workers=0: the per-sample augmentation runs in this process. A DataLoader worker
        # runs it with one torch thread (torch sets that in every worker); here it would run
        # ToTensor / Normalize on the process's OpenMP team, whose every op waits at a barrier
        # for a thread that other processes may have descheduled (docs/performance.md, Views:
        # the per-sample pipeline fell to 2-25 img/s with 2 threads on the loaded 2-core
        # machine, against 20-300 img/s with 1). Run it as a worker would.
        saved = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self._fetch()
        finally:
            torch.set_num_threads(saved)

    def _fetch(self):
        if self._it is None:
            self._it = iter(self.loader)
        try:
            return next(self._it)
        except StopIteration:
            self._it = iter(self.loader)
            return next(self._it)

    def step(self) -> float:
        import time

        t0, c0 = time.perf_counter(), time.process_time()
        im_q, im_k = self._next_batch()
        self.load_time += time.perf_counter() - t0
        self.load_cpu_time += time.process_time() - c0
        im_q = im_q.to(self.device, non_blocking=True)
        im_k = im_k.to(self.device, non_blocking=True)
        loss = self.model(im_q, im_k)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return loss.item()
