"""The views every evaluation protocol feeds a backbone, for in-memory and file-backed data alike.

Three kinds of batches, each ``B x 3 x R x R`` normalised float views on the device with their
int64 labels (docs/method.md, "Evaluation"):

* ``eval_batches``: the deterministic test view, every image once, in order. In-memory square
  sets: the whole image resized to R (or its central ``crop_fraction``, then resized). File-backed
  sets (ImageFolder, streaming Parquet): the paper's centre crop, shorter side resized to
  ``round(R * 256 / 224)`` (bicubic) + ``CenterCrop(R)``, cut by the loader workers.
* ``train_batches``: RandomResizedCrop(R, scale) + horizontal flip, a seeded order per epoch, the
  protocols' training views (linear classifier, fine-tuning). No colour augmentation.
* ``random_crop_batches``: the paper's random-crop test (Table 7): resize to ``T x T``,
  ``T = round(R * 256 / 224)``, then RandomResizedCrop(R, scale), no flip.

In-memory sets are cut by ``ViewMaker`` on the device; file-backed sets in the loader workers
(``trainables.data.geometry``, uint8), and only flip + normalisation run on the device. An
``Inputs`` object holds one evaluation's loaders; ``close()`` ends the worker processes it
started.
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset

from trainables.data import TensorImageDataset, has_open_loaders, iterate_batches, release_loaders
from trainables.data.geometry import (
    GeometricViews,
    GeometryConfig,
    eval_resize_size,
    iterate_view_batches,
    supports_geometry,
)
from trainables.eval.frozen import eval_device, frozen
from trainables.views import ViewConfig, ViewMaker, ViewParams

__all__ = ["Inputs", "centre_view", "derive_seed", "geometry_view_config", "session"]

Batches = Iterator[tuple[torch.Tensor, torch.Tensor]]


def derive_seed(seed: int, purpose: str) -> int:
    """An independent 63-bit seed per purpose, so adding one stream never shifts another."""
    digest = hashlib.sha256(f"leoclr-eval/{seed}/{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def geometry_view_config(size: int, crop_scale: tuple[float, float], flip_prob: float) -> ViewConfig:
    """RandomResizedCrop(size, crop_scale) + flip + normalise, no colour jitter / grayscale / blur."""
    return ViewConfig(size=size, crop_scale=crop_scale, jitter=(0.0, 0.0, 0.0, 0.0), jitter_prob=0.0,
                      grayscale_prob=0.0, blur_prob=0.0, flip_prob=flip_prob)


def centre_view(maker: ViewMaker, images: torch.Tensor, fraction: float) -> torch.Tensor:
    """Eval view of square in-memory images, B x 3 x S x S uint8 -> B x 3 x R x R normalised.

    fraction 1: ``maker.eval_view`` (antialiased resize of the whole image). fraction < 1: the
    central ``round(fraction * S)`` square (torchvision CenterCrop's placement) resized to R with
    the crop path's bilinear sampling (exact when the crop is R pixels wide).
    """
    if fraction >= 1.0:
        return maker.eval_view(images)
    n, _, height, width = images.shape
    ch, cw = max(1, int(round(fraction * height))), max(1, int(round(fraction * width)))
    top, left = int(round((height - ch) / 2.0)), int(round((width - cw) / 2.0))
    boxes = torch.zeros(n, 4, device=images.device)  # filled from Python scalars: no host -> device copy
    boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3] = left, top, left + cw, top + ch
    return maker.render(images, [ViewParams.geometry_only("crop", boxes)])[0]


@contextlib.contextmanager
def session(backbone: nn.Module, device: str | torch.device | None, size: int, *, freeze: bool,
            batch_size: int = 512, loader_workers: int = 0) -> Iterator["Inputs"]:
    """One protocol's run: the global RNG saved and restored (all randomness comes from the
    protocol's seed), the backbone frozen (``freeze``; ``frozen`` in eval/frozen.py) on the
    device, and an ``Inputs`` whose loaders are released at the end."""
    dev = eval_device(backbone, device)
    rng_devices = [dev] if dev.type == "cuda" else []
    with (torch.random.fork_rng(devices=rng_devices), frozen(backbone, dev) if freeze else contextlib.nullcontext(),
          Inputs(size, dev, batch_size=batch_size, loader_workers=loader_workers) as inputs):
        yield inputs
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


class Inputs:
    """The view batches of one evaluation at resolution ``size`` on ``device``.

    batch_size: of the eval / random-crop passes (no effect on results); loader_workers:
    DataLoader processes for file-backed sets. Use as a context manager (or call ``close``): the
    loaders this object opened are released at the end.
    """

    def __init__(self, size: int, device: torch.device, *, batch_size: int = 512, loader_workers: int = 0):
        self.size = size
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.workers = loader_workers
        self.pin = self.device.type == "cuda"
        self._eval_maker = ViewMaker(ViewConfig(size=size))
        self._wrappers: dict[tuple[int, GeometryConfig], GeometricViews] = {}
        self._opened: list[Dataset] = []

    def __enter__(self) -> "Inputs":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """End the DataLoader workers this object started."""
        for ds in [*self._opened, *self._wrappers.values()]:
            release_loaders(ds)
        self._opened.clear()
        self._wrappers.clear()

    # -- iteration ------------------------------------------------------------------------------

    def _views_of(self, ds: Dataset, cfg: GeometryConfig) -> GeometricViews:
        key = (id(ds), cfg)
        if key not in self._wrappers:
            self._wrappers[key] = GeometricViews(ds, cfg)
        return self._wrappers[key]

    def _images(self, ds: Dataset, batch_size: int, *, shuffle: bool, seed: int, epoch: int,
                drop_last: bool = False) -> Batches:
        """uint8 batches of a square dataset (its stored images), on the device."""
        if not isinstance(ds, TensorImageDataset) and not has_open_loaders(ds):
            self._opened.append(ds)
        for images, y in iterate_batches(ds, batch_size, shuffle=shuffle, seed=seed, epoch=epoch,
                                         drop_last=drop_last, num_workers=self.workers, pin_memory=self.pin):
            yield images.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def _cut(self, ds: Dataset, cfg: GeometryConfig, batch_size: int, *, shuffle: bool, epoch: int,
             drop_last: bool = False) -> Batches:
        """Worker-cut uint8 views (B x 3 x R x R, the first kind of ``cfg``), on the device."""
        for views, y in iterate_view_batches(self._views_of(ds, cfg), batch_size, shuffle=shuffle,
                                             seed=cfg.seed, epoch=epoch, drop_last=drop_last,
                                             num_workers=self.workers, pin_memory=self.pin):
            yield views.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def eval_batches(self, ds: Dataset, crop_fraction: float = 1.0) -> Batches:
        """The test view of every image of ``ds``, in order (see the module docstring)."""
        if supports_geometry(ds):
            for views, y in self._cut(ds, GeometryConfig(self.size, ("eval",)), self.batch_size,
                                      shuffle=False, epoch=0):
                yield self._eval_maker.eval_view(views[:, 0]), y
            return
        for images, y in self._images(ds, self.batch_size, shuffle=False, seed=0, epoch=0):
            yield centre_view(self._eval_maker, images, crop_fraction), y

    def train_batches(self, ds: Dataset, batch_size: int, *, crop_scale: tuple[float, float],
                      flip_prob: float, seed: int, epoch: int, generator: torch.Generator,
                      drop_last: bool = False) -> Batches:
        """RandomResizedCrop + flip views of ``ds`` in a seeded order for ``epoch``; ``generator``
        (on the device) draws the device-side parameters."""
        maker = ViewMaker(geometry_view_config(self.size, crop_scale, flip_prob))
        if supports_geometry(ds):
            cfg = GeometryConfig(self.size, ("crop",), crop_scale=crop_scale, seed=seed)
            for views, y in self._cut(ds, cfg, batch_size, shuffle=True, epoch=epoch, drop_last=drop_last):
                yield maker.photometric(views, generator)[0], y
            return
        for images, y in self._images(ds, batch_size, shuffle=True, seed=seed, epoch=epoch, drop_last=drop_last):
            yield maker(images, ["crop"], generator)[0], y

    def random_crop_batches(self, ds: Dataset, *, crop_scale: tuple[float, float], seed: int,
                            repeat: int, generator: torch.Generator) -> Batches:
        """The random-crop test's views of every image of ``ds`` (pass ``repeat`` of several)."""
        if supports_geometry(ds):
            cfg = GeometryConfig(self.size, ("random_crop",), crop_scale=crop_scale, seed=seed)
            for views, y in self._cut(ds, cfg, self.batch_size, shuffle=False, epoch=repeat):
                yield self._eval_maker.eval_view(views[:, 0]), y
            return
        maker = ViewMaker(geometry_view_config(self.size, crop_scale, flip_prob=0.0))
        square = eval_resize_size(self.size)
        for images, y in self._images(ds, self.batch_size, shuffle=False, seed=0, epoch=0):
            if images.shape[-2:] != (square, square):  # Resize((T, T)), antialiased
                if images.device.type != "cpu":  # the uint8 kernel is CPU-only
                    images = images.float().div_(255.0)
                images = F.interpolate(images, size=(square, square), mode="bilinear",
                                       align_corners=False, antialias=True)
            yield maker(images, ["crop"], generator)[0], y
