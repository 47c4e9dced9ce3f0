"""True image geometry for file-backed data: the geometric views are cut in the loader workers.

In-memory sets (photo_patches, CIFAR, STL-10, digits) are stored square, and ``ViewMaker`` cuts
their views on the device. A file-backed set (ImageFolder, streaming Parquet) holds photos of
any aspect ratio; squashing them to a square first would distort every crop. So, for them, each
loader worker decodes an image once, at its own size (torchvision's decoders), and cuts every
view the step needs from it, as uint8 ``R x R`` with torchvision's tensor transforms (the uint8
antialiased kernels ``ViewMaker`` uses for the original view on CPU). The batch that reaches the training process
is ``B x V x 3 x R x R`` uint8; the photometric stage (colour jitter, grayscale, blur, flip,
normalisation) stays batched on the device (``ViewMaker.photometric``).

View kinds (docs/method.md, "Views"):

``"original"``
    The whole image resized to ``R x R`` (``Resize((R, R))``, bilinear, antialiased): LeOCLR's
    query, "X is not cropped (NC), but is resized to 224x224" (Fig. 3).
``"crop"``
    ``RandomResizedCrop(R, scale, ratio)`` of the image as it is: the box is torchvision's
    ``get_params`` (area fraction uniform in ``scale``, aspect ratio log-uniform in ``ratio``, 10
    tries, centre-crop fallback; ``random_resized_crop_box``, the algorithm
    ``trainables.views.sample_crop_boxes`` vectorises) in source pixels, then cropped and resized
    bilinearly with antialiasing (torchvision's ``resized_crop``).
``"eval"``
    ``Resize(round(R * 256 / 224))`` of the shorter side (bicubic) + ``CenterCrop(R)``: the
    paper's centre-crop test, "resized to 256 pixels along the shorter side using bicubic
    resampling, followed by a 224x224 center crop" (Sec. 5.3), scaled to R.
``"random_crop"``
    The paper's random-crop test (Table 7): "resized to 256x256 and then randomly cropped and
    resized to 224x224": ``Resize((T, T))`` with ``T = round(R * 256 / 224)``, then
    ``RandomResizedCrop(R, scale, ratio)`` of that square.

Randomness: sample ``i`` of epoch ``e`` draws its boxes from a generator seeded by
``(seed, e, i)`` alone, so the views do not depend on the number of loader workers, on the
batch a sample lands in, or on the rank that reads it. The epoch reaches persistent workers
with each index: ``iterate_view_batches`` feeds the DataLoader ``(index, epoch)`` keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import contextlib
import math
import random

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from trainables.data.batching import _loader_for, shard_indices
from trainables.data.datasets import TensorImageDataset
from trainables.views import centre_crop_fallback

__all__ = [
    "EVAL_RESIZE_RATIO",
    "GEOMETRY_KINDS",
    "GeometricViews",
    "GeometryConfig",
    "crop_boxes",
    "cut_views",
    "eval_resize_size",
    "geometric_views",
    "iterate_view_batches",
    "random_resized_crop_box",
    "supports_geometry",
]

GEOMETRY_KINDS = ("original", "crop", "eval", "random_crop")
#: ImageNet's evaluation resize: 256 for 224 px views (Resize(256) + CenterCrop(224)).
EVAL_RESIZE_RATIO = 256 / 224


def eval_resize_size(size: int) -> int:
    """The resize before the centre / random crop of the eval views: ``round(size * 256 / 224)``
    (224 -> 256, 96 -> 110, 32 -> 37)."""
    return int(round(size * EVAL_RESIZE_RATIO))


@dataclass(frozen=True)
class GeometryConfig:
    """What the workers cut: ``kinds`` (one ``R x R`` view per entry, in order) at ``size`` R;
    ``crop_scale`` / ``crop_ratio``: the RandomResizedCrop ranges of the ``crop`` and
    ``random_crop`` kinds; ``seed``: with (epoch, index), all the randomness."""

    size: int
    kinds: tuple[str, ...]
    crop_scale: tuple[float, float] = (0.2, 1.0)
    crop_ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    seed: int = 0

    def __post_init__(self) -> None:
        # size and the ranges come validated (TrainConfig, the protocols' settings); the kinds
        # are the engine's own choice
        object.__setattr__(self, "kinds", tuple(self.kinds))
        bad = [k for k in self.kinds if k not in GEOMETRY_KINDS]
        if bad or not self.kinds:
            raise ValueError(f"kinds must be a non-empty list of {', '.join(GEOMETRY_KINDS)}; got {self.kinds}")


def _rng(seed: int, epoch: int, index: int) -> random.Random:
    """The random stream of sample ``index`` in ``epoch``: seeded by (seed, epoch, index) alone."""
    mixed = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch) & 0xFFFFFFFF,
                                    int(index) & 0xFFFFFFFF]).generate_state(2, np.uint32)
    return random.Random(int(mixed[0]) << 32 | int(mixed[1]))


def random_resized_crop_box(rng: random.Random, height: int, width: int, scale: tuple[float, float],
                            ratio: tuple[float, float]) -> tuple[int, int, int, int]:
    """One RandomResizedCrop box ``(x0, y0, x1, y1)`` of a ``height x width`` image:
    torchvision's ``RandomResizedCrop.get_params`` line for line (10 tries of an area fraction
    uniform in ``scale`` and a log-uniform aspect ratio in ``ratio``, the first that fits placed
    uniformly; else the centre crop with the ratio clamped), drawing from ``rng`` instead of
    torch's global generator. ``trainables.views.sample_crop_boxes`` is the same algorithm
    vectorised over a batch (plain Python is the faster of the two for one image)."""
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            y0 = rng.randint(0, height - h)
            x0 = rng.randint(0, width - w)
            return x0, y0, x0 + w, y0 + h
    return centre_crop_fallback(height, width, ratio)


def crop_boxes(cfg: GeometryConfig, width: int, height: int, epoch: int, index: int) -> list:
    """The boxes ``(x0, y0, x1, y1)`` (integer pixels, right/bottom exclusive) that ``cut_views``
    cuts for each kind of ``cfg`` from a ``width x height`` image: the whole image for
    ``original``; the RandomResizedCrop box in source pixels for ``crop``; for ``eval`` the
    centre box in the coordinates of the shorter-side resize; for ``random_crop`` the box in the
    ``T x T`` square it crops from."""
    rng = _rng(cfg.seed, epoch, index)
    target = eval_resize_size(cfg.size)
    boxes = []
    for kind in cfg.kinds:
        if kind == "original":
            boxes.append((0, 0, width, height))
        elif kind == "eval":
            # torchvision's Resize(int): the shorter side to T, the other to int(T * long / short)
            rw, rh = ((target, int(target * height / width)) if width <= height
                      else (int(target * width / height), target))
            top, left = int(round((rh - cfg.size) / 2.0)), int(round((rw - cfg.size) / 2.0))
            boxes.append((left, top, left + cfg.size, top + cfg.size))
        else:
            h, w = (height, width) if kind == "crop" else (target, target)
            boxes.append(random_resized_crop_box(rng, h, w, cfg.crop_scale, cfg.crop_ratio))
    return boxes


def _resize(image: torch.Tensor, height: int, width: int, mode: str = "bilinear") -> torch.Tensor:
    """torchvision's tensor Resize (antialiased; uint8 in, uint8 out): 3 x h x w -> 3 x H x W."""
    out = F.interpolate(image[None], size=(height, width), mode=mode, align_corners=False, antialias=True)
    return out[0]


def cut_views(image: torch.Tensor, cfg: GeometryConfig, epoch: int, index: int) -> torch.Tensor:
    """Every view of one decoded image (uint8 ``3 x H x W``, any H and W) -> uint8
    ``V x 3 x R x R`` (V = len(cfg.kinds)), randomness from (cfg.seed, epoch, index).

    torchvision's transforms v2 on uint8 tensors (antialiased bilinear; bicubic for ``eval``):
    ``original`` = ``Resize((R, R))``, ``crop`` = ``RandomResizedCrop(R)`` (its ``resized_crop``),
    ``eval`` = ``Resize(T)`` + ``CenterCrop(R)``, ``random_crop`` = ``Resize((T, T))`` then
    ``RandomResizedCrop(R)``, T = ``round(R * 256 / 224)``.
    """
    _, height, width = image.shape
    size, target = cfg.size, eval_resize_size(cfg.size)
    out = torch.empty((len(cfg.kinds), 3, size, size), dtype=torch.uint8)
    square = None
    for v, (kind, (x0, y0, x1, y1)) in enumerate(zip(cfg.kinds, crop_boxes(cfg, width, height, epoch, index))):
        if kind == "original":
            out[v] = _resize(image, size, size)
        elif kind == "crop":
            out[v] = _resize(image[:, y0:y1, x0:x1], size, size)
        elif kind == "eval":
            rh, rw = (int(target * height / width), target) if width <= height else (target, int(target * width / height))
            out[v] = _resize(image, rh, rw, "bicubic")[:, y0:y1, x0:x1]
        else:  # random_crop
            if square is None:
                square = _resize(image, target, target)
            out[v] = _resize(square[:, y0:y1, x0:x1], size, size)
    return out


def supports_geometry(ds: Dataset) -> bool:
    """Whether ``ds`` decodes images at their own size (``full_image``): file-backed, streaming
    sets (``ImageFileDataset``, ``ParquetImageDataset``, subsets of them). In-memory sets are
    stored square and keep the device path."""
    return not isinstance(ds, TensorImageDataset) and callable(getattr(ds, "full_image", None))


class GeometricViews(Dataset):
    """A file-backed dataset seen through ``cfg``: item ``(index, epoch)`` (or ``index`` =
    epoch 0) -> (uint8 ``V x 3 x R x R`` views of image ``index``, int label).

    ``source`` must have ``full_image(i)`` (-> uint8 ``3 x H x W``), ``labels`` (int64 N) and
    ``classes``."""

    def __init__(self, source: Dataset, cfg: GeometryConfig):
        if not supports_geometry(source):
            raise TypeError(f"{type(source).__name__} does not decode images at their own size "
                            "(no full_image): in-memory sets use the device path")
        self.source = source
        self.cfg = cfg
        self.labels = source.labels
        self.classes = source.classes

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key) -> tuple[torch.Tensor, int]:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        with _one_thread():
            views = cut_views(self.source.full_image(index), self.cfg, epoch, index)
        return views, int(self.labels[index])


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Per-image ops on one thread, as in a DataLoader worker: read in the training process
    (``loader_workers: 0``), an OpenMP team would wait at every small op's barrier. The
    setting is the calling thread's and is restored afterwards."""
    saved = torch.get_num_threads()
    if saved == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def geometric_views(ds: Dataset, cfg: GeometryConfig) -> GeometricViews | None:
    """``GeometricViews(ds, cfg)`` for a file-backed set, None for an in-memory one."""
    return GeometricViews(ds, cfg) if supports_geometry(ds) else None


def iterate_view_batches(ds: GeometricViews, batch_size: int, *, shuffle: bool, seed: int, epoch: int,
                         rank: int = 0, world_size: int = 1, drop_last: bool, num_workers: int = 0,
                         pin_memory: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's batches of one epoch, as ``iterate_batches`` shards them:
    (uint8 ``B x V x 3 x R x R``, int64 ``B``).

    A DataLoader with ``num_workers`` persistent workers (``release_loaders(ds)`` ends them)
    decodes and cuts; the epoch travels with every index, so views depend on (seed, epoch,
    index) only, whatever the number of workers.
    """
    indices = shard_indices(len(ds), batch_size, shuffle=shuffle, seed=seed, epoch=epoch,
                            rank=rank, world_size=world_size, drop_last=drop_last)
    loader, sampler = _loader_for(ds, batch_size, num_workers, pin_memory and torch.cuda.is_available())
    sampler.indices = [(i, epoch) for i in indices.tolist()]
    yield from loader
