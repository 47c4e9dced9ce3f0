"""The validation split: how it is carved from the training images, and the check before compute.

Roles (docs/method.md, "Train / validation / test"): self-supervised training iterates
``pretrain``; the kNN bank and the linear probe's training set are ``memory``; everything that
selects (the kNN monitor's objective, ASHA, TPE, the best trial, promotion) reads ``val``; the
``test`` split only reports. ``val`` is never in ``pretrain`` or ``memory``.

Carving (every dataset without its own validation folder): stratified per class, deterministic
from ``val_seed``. Class c with n_c labelled training images gives ``val_count(n_c, f)`` =
round(f * n_c) (halves rounded up) of them, drawn by one ``numpy.random.default_rng(val_seed)``
that visits the classes in label order; a fraction that leaves a class with 0 validation or 0
training images is refused (``check_val_split``), before any image is decoded. Unlabelled images
(label -1) stay in ``pretrain`` and never enter ``val`` or ``memory``; a dataset with no labelled
training image at all holds out a random ``val_count(n, f)`` of its images instead (unlabelled,
for RankMe), and its ``memory`` is empty.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from trainables.data.datasets import ImageFileDataset, TensorImageDataset
from trainables.data.errors import DatasetError

#: The stratum name ``check_val_split`` reports for a dataset without labels.
UNLABELLED = "(unlabelled images)"


def val_count(n: int, fraction: float) -> int:
    """Validation images taken from a class of ``n`` images: round(fraction * n), halves up."""
    return int(math.floor(fraction * n + 0.5))


def check_val_split(counts_by_class: Mapping[str, int], fraction: float, *,
                    source: str | None = None) -> None:
    """Refuse a ``val_fraction`` that leaves a class with no validation or no training image.

    counts_by_class: class name -> labelled training images the split is carved from (as
    ``dataset_class_counts`` gives them, without decoding an image). Raises ``DatasetError``
    with ``key="val_fraction"``, ``value=fraction`` and a reason naming the class and its count.
    """
    for name, n in counts_by_class.items():
        n_val = val_count(n, fraction)
        if n_val < 1:
            smallest = math.ceil(0.5 / n * 1e4) / 1e4 if n else 1.0  # rounded up: it works
            raise DatasetError(
                f"class {name!r} has {n} training image(s): {fraction:g} of them rounds to 0 "
                f"validation images; use val_fraction >= {smallest:g} or give the class more images",
                source=source, key="val_fraction", value=fraction)
        if n_val >= n:
            raise DatasetError(
                f"class {name!r} has {n} training image(s): {fraction:g} of them ({n_val}) leaves "
                "it no training image; lower val_fraction or give the class more images",
                source=source, key="val_fraction", value=fraction)


def class_counts(labels: np.ndarray, classes: Sequence[str]) -> dict[str, int]:
    """Labelled images per class name (labels: N ints, -1 = unlabelled and not counted); a
    dataset with no labelled image counts all its images under ``UNLABELLED``."""
    labels = np.asarray(labels)
    labelled = labels[labels >= 0]
    if labelled.size == 0:
        return {UNLABELLED: int(labels.size)}
    counts = np.bincount(labelled, minlength=len(classes))
    return {str(classes[c]) if c < len(classes) else str(c): int(counts[c])
            for c in np.flatnonzero(counts)}


@dataclass
class Carve:
    """Indices (int64, ascending) into the pool a split was carved from: ``pretrain`` = all but
    ``val``; ``memory`` = the labelled ones among them; ``val`` = the held-out images."""

    pretrain: np.ndarray
    memory: np.ndarray
    val: np.ndarray


def carve_validation(labels: np.ndarray | torch.Tensor, classes: Sequence[str], fraction: float,
                     seed: int, *, source: str | None = None) -> Carve:
    """Carve the validation split from a training pool with these labels (see module docstring).

    labels: N ints (-1 = unlabelled). Checks the fraction first (``check_val_split``), so a bad
    one is refused before any image is read.
    """
    labels = np.asarray(labels.numpy() if torch.is_tensor(labels) else labels, dtype=np.int64)
    check_val_split(class_counts(labels, classes), fraction, source=source)
    rng = np.random.default_rng(seed)
    labelled = labels >= 0
    if labelled.any():
        strata = [np.flatnonzero(labels == c) for c in np.unique(labels[labelled])]
    else:
        strata = [np.arange(labels.size)]
    is_val = np.zeros(labels.size, dtype=bool)
    for idx in strata:
        is_val[rng.permutation(idx)[:val_count(idx.size, fraction)]] = True
    return Carve(pretrain=np.flatnonzero(~is_val), memory=np.flatnonzero(~is_val & labelled),
                 val=np.flatnonzero(is_val))


def carved_description(fraction: float, seed: int) -> str:
    """The ``DataBundle.val_from`` text of a carved split, e.g. "carved 10% per class, val_seed 0"."""
    return f"carved {100 * fraction:g}% per class, val_seed {seed}"


class IndexedSubset(Dataset):
    """Rows ``indices`` of a streaming dataset, with its ``labels``, ``classes`` and
    ``image_size``; ``__getitem__(i)`` -> ``dataset[indices[i]]`` (uint8 3 x S x S, int)."""

    def __init__(self, dataset: Dataset, indices: np.ndarray):
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)
        self.labels = torch.as_tensor(dataset.labels)[torch.from_numpy(self.indices)]
        self.classes = list(dataset.classes)
        self.image_size = dataset.image_size

    def __len__(self) -> int:
        return int(self.indices.size)

    def __getitem__(self, index: int):
        return self.dataset[int(self.indices[index])]

    @property
    def full_image(self):
        """The underlying set's ``full_image`` (a file-backed photo at its own size) re-indexed,
        or None: a subset of a file-backed set keeps its true geometry (data/geometry.py)."""
        inner = getattr(self.dataset, "full_image", None)
        return None if inner is None else functools.partial(_full_image, self.dataset, self.indices)


def _full_image(dataset: Dataset, indices: np.ndarray, index: int) -> torch.Tensor:
    return dataset.full_image(int(indices[index]))


def take(ds: Dataset, indices: np.ndarray) -> Dataset:
    """The rows ``indices`` of a dataset: a ``TensorImageDataset`` is indexed (a copy), an
    ``ImageFileDataset`` keeps those files, any other dataset is wrapped (``IndexedSubset``)."""
    idx = torch.from_numpy(np.asarray(indices, dtype=np.int64))
    if isinstance(ds, TensorImageDataset):
        return TensorImageDataset(ds.images.index_select(0, idx), ds.labels.index_select(0, idx),
                                  ds.classes)
    if isinstance(ds, ImageFileDataset):
        return ImageFileDataset([ds.samples[i] for i in idx.tolist()], ds.classes, ds.image_size)
    return IndexedSubset(ds, indices)
