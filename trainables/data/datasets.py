"""The dataset classes every loader returns, and the bundle of splits one trial reads.

Every dataset yields ``(image, label)``: ``image`` uint8 ``3 x S x S`` at the load size ``S``,
``label`` an int (-1 = unlabelled). ``TensorImageDataset`` holds a whole split in memory (batched
by indexing whole tensors); ``ImageFileDataset`` decodes files per item (streaming);
``materialize`` turns any of them into a ``TensorImageDataset``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from trainables.data.codecs import decode_full, load_image_file, read_file
from trainables.data.errors import DatasetError


class TensorImageDataset(Dataset):
    """In-memory dataset: ``images`` uint8 N x 3 x S x S (contiguous), ``labels`` int64 N.

    ``__getitem__(i)`` -> (uint8 3 x S x S tensor, int). ``iterate_batches`` indexes the tensors
    directly (no per-item Python loop). Unlabelled samples (STL-10 unlabeled) carry label -1.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: Sequence[str]):
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be uint8 N x 3 x S x S, got {images.dtype} "
                             f"{tuple(images.shape)}")
        if images.shape[2] != images.shape[3]:
            raise ValueError(f"images must be square, got {tuple(images.shape)}")
        labels = torch.as_tensor(labels, dtype=torch.int64)
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape ({images.shape[0]},), got "
                             f"{tuple(labels.shape)}")
        self.images = images.contiguous()
        self.labels = labels.contiguous()
        self.classes = list(classes)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])

    def __repr__(self) -> str:
        return (f"TensorImageDataset(n={len(self)}, size={self.image_size}, "
                f"classes={len(self.classes)})")


class ImageFileDataset(Dataset):
    """Streaming dataset over image files: decodes with PIL on each ``__getitem__``.

    samples: list of (path, label); ``__getitem__(i)`` -> (uint8 3 x S x S, int).
    An unreadable file raises ``DatasetError`` naming it.
    """

    def __init__(self, samples: Sequence[tuple[str, int]], classes: Sequence[str], image_size: int):
        self.samples = [(str(p), int(y)) for p, y in samples]
        self.labels = torch.tensor([y for _, y in self.samples], dtype=torch.int64)
        self.classes = list(classes)
        self.image_size = int(image_size)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        return load_image_file(path, self.image_size), label

    def full_image(self, index: int) -> torch.Tensor:
        """File ``index`` decoded at its own size, uint8 ``3 x H x W``: what the loader workers
        cut views from (trainables/data/geometry.py)."""
        path = self.samples[index][0]
        return decode_full(read_file(path), source=path, from_file=True)


@dataclass
class DataBundle:
    """The splits one trial reads (roles: docs/method.md, "Train / validation / test").

    pretrain: what self-supervised training iterates (labels ignored): the training images
              minus ``val``; STL-10: its labelled train minus ``val``, plus the unlabeled split.
    memory:   the labelled training images minus ``val``: the kNN bank, the linear probe's
              training set (empty for a dataset without labels).
    val:      the labelled validation split every selection reads (kNN monitor, objective,
              ASHA, TPE, best trial, promotion); never in ``pretrain`` or ``memory``.
    test:     the labelled test split: reported, never used for a decision.
    classes:  class names (label c is ``classes[c]``; -1 = unlabelled).
    image_size: S, every image is uint8 3 x S x S.
    val_from: how ``val`` was made, e.g. "carved 10% per class, val_seed 0" or "val/ folder".
    """

    pretrain: Dataset
    memory: Dataset
    val: Dataset
    test: Dataset
    classes: list[str]
    image_size: int
    val_from: str = ""

    @property
    def splits(self) -> dict[str, int | str]:
        """Provenance: the size of every split and how ``val`` was made."""
        return {"pretrain": len(self.pretrain), "memory": len(self.memory), "val": len(self.val),
                "test": len(self.test), "val_from": self.val_from}


def materialize(ds: Dataset, *, num_workers: int | None = None,
                batch_size: int = 256) -> TensorImageDataset:
    """Decode a whole (streaming) dataset into memory -> TensorImageDataset (N x 3 x S x S).

    Fills one preallocated tensor batch by batch (no second copy). num_workers: DataLoader
    decode workers; None = 0 for small sets, else up to 8 (one per core).
    """
    if isinstance(ds, TensorImageDataset):
        return ds
    n = len(ds)
    if num_workers is None:
        num_workers = 0 if n < 16384 else min(8, os.cpu_count() or 1)
    size = getattr(ds, "image_size", None)
    images = (torch.empty((n, 3, size, size), dtype=torch.uint8) if size is not None else None)
    labels = torch.empty(n, dtype=torch.int64)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=collate_uint8)
    start = 0
    for x, y in loader:
        if images is None:
            images = torch.empty((n, *x.shape[1:]), dtype=torch.uint8)
        images[start:start + len(x)] = x
        labels[start:start + len(y)] = y
        start += len(x)
    if images is None:
        raise DatasetError("cannot load an empty dataset of unknown image size into memory")
    return TensorImageDataset(images, labels, getattr(ds, "classes", []))


def collate_uint8(batch: Sequence[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """[(uint8 3xSxS, int)] * B -> (uint8 B x 3 x S x S, int64 B)."""
    images = torch.stack([b[0] for b in batch])
    labels = torch.tensor([int(b[1]) for b in batch], dtype=torch.int64)
    return images, labels
