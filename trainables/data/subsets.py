"""Class-balanced label subsets (the semi-supervised protocols' 1 % / 10 % splits) and subsets of
any dataset.

``class_balanced_indices(labels, fraction, seed)`` keeps, of every class c with n_c labelled
images, ``max(1, round(fraction * n_c))`` of them (rounded half up), chosen by a permutation of
the class's images seeded by (seed, c): the same seed gives the same subset, whatever the other
classes hold, and for one seed a smaller fraction's subset lies inside a larger one's (the 1 %
images are among the 10 %). SimCLR's ImageNet 1 % / 10 % are fixed published lists; a
class-balanced draw by seed is the same design for any labelled set (docs/method.md).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from trainables.data.datasets import TensorImageDataset
from trainables.validation import is_int, is_number

__all__ = ["class_balanced_indices", "dataset_labels", "subset"]


def dataset_labels(ds: Dataset) -> torch.Tensor:
    """The int64 labels of ``ds`` (its ``labels`` attribute; else read item by item)."""
    labels = getattr(ds, "labels", None)
    if labels is None:
        labels = [int(ds[i][1]) for i in range(len(ds))]
    return torch.as_tensor(labels, dtype=torch.int64)


def class_balanced_indices(labels: torch.Tensor | Sequence[int], fraction: float, seed: int) -> torch.Tensor:
    """Indices (int64, sorted) of a class-balanced subset: per class c (labels >= 0; -1 marks
    unlabelled images, never chosen) the first ``max(1, round(fraction * n_c))`` images of a
    permutation seeded by (seed, c). ``fraction`` must be in (0, 1]."""
    if not (is_number(fraction) and 0 < fraction <= 1):
        raise ValueError(f"fraction={fraction!r}: must be in (0, 1]")
    if not is_int(seed) or seed < 0:
        raise ValueError(f"seed={seed!r}: must be an integer >= 0")
    labels = torch.as_tensor(labels, dtype=torch.int64)
    chosen = []
    for c in torch.unique(labels[labels >= 0]).tolist():
        members = torch.nonzero(labels == c).squeeze(1)
        keep = max(1, int(math.floor(fraction * members.numel() + 0.5)))
        mixed = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(c) & 0xFFFFFFFF]).generate_state(1, np.uint32)
        order = torch.randperm(members.numel(), generator=torch.Generator().manual_seed(int(mixed[0])))
        chosen.append(members[order[:keep]])
    if not chosen:
        return torch.zeros(0, dtype=torch.int64)
    return torch.cat(chosen).sort().values


class _Subset(Dataset):
    """Items ``indices`` of ``source`` (with its labels, classes and image size)."""

    def __init__(self, source: Dataset, indices: torch.Tensor):
        self.source = source
        self.indices = indices
        self.labels = dataset_labels(source)[indices]
        self.classes = list(getattr(source, "classes", []))
        self.image_size = getattr(source, "image_size", None)

    def __len__(self) -> int:
        return int(self.indices.numel())

    def __getitem__(self, i: int):
        return self.source[int(self.indices[i])]


class _FileSubset(_Subset):
    """A subset of a file-backed set: keeps ``full_image`` (its true geometry, data/geometry.py)."""

    def full_image(self, i: int) -> torch.Tensor:
        return self.source.full_image(int(self.indices[i]))


def subset(ds: Dataset, indices: torch.Tensor | Sequence[int]) -> Dataset:
    """The items ``indices`` of ``ds`` as a dataset of the same kind: an in-memory set stays an
    in-memory ``TensorImageDataset`` (a copy), a file-backed one stays file-backed."""
    indices = torch.as_tensor(indices, dtype=torch.int64)
    if isinstance(ds, TensorImageDataset):
        return TensorImageDataset(ds.images[indices], ds.labels[indices], ds.classes)
    if callable(getattr(ds, "full_image", None)):
        return _FileSubset(ds, indices)
    return _Subset(ds, indices)
