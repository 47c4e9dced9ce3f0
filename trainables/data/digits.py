"""scikit-learn's 8x8 digits, upscaled: smoke tests only (raw pixels already reach 97.8 % kNN)."""

from __future__ import annotations

import numpy as np
import torch

from trainables.data.codecs import resize_uint8
from trainables.data.datasets import DataBundle, TensorImageDataset
from trainables.data.splits import carve_validation, carved_description, class_counts, take

#: Fraction of each class in the train part (the rest is the test split), split by ``_SPLIT_SEED``.
_TRAIN_FRACTION = 0.8
_SPLIT_SEED = 0


def _digits() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(images N x 8 x 8 in 0..16, targets N, class names) from scikit-learn."""
    from sklearn import datasets as sklearn_datasets

    digits = sklearn_datasets.load_digits()
    return digits.images, digits.target, [str(c) for c in digits.target_names.tolist()]


def _train_mask(targets: np.ndarray) -> np.ndarray:
    """The train part: per class, round(0.8 n) images drawn with ``_SPLIT_SEED`` (bool N)."""
    rng = np.random.default_rng(_SPLIT_SEED)
    is_train = np.zeros(len(targets), dtype=bool)
    for c in np.unique(targets):
        idx = rng.permutation(np.flatnonzero(targets == c))
        is_train[idx[: int(round(_TRAIN_FRACTION * len(idx)))]] = True
    return is_train


def digits_class_counts() -> dict[str, int]:
    """Images per class of the train part (what validation is carved from); nothing resized."""
    _, targets, classes = _digits()
    return class_counts(targets[_train_mask(targets)], classes)


def load_digits(image_size: int, val_fraction: float = 0.1, val_seed: int = 0) -> DataBundle:
    """sklearn digits (8x8, values 0..16) -> uint8, upscaled; a fixed per-class 80/20
    train/test split, then validation carved from the train part (``splits.carve_validation``)."""
    raw, targets, classes = _digits()
    is_train = _train_mask(targets)
    carve = carve_validation(targets[is_train], classes, val_fraction, val_seed, source="digits")
    gray = torch.from_numpy(np.rint(raw * (255.0 / 16.0)).astype(np.uint8))  # N x 8 x 8
    images = resize_uint8(gray[:, None].expand(-1, 3, -1, -1), image_size)
    labels = torch.from_numpy(targets.astype(np.int64))
    train_mask, test_mask = torch.from_numpy(is_train), torch.from_numpy(~is_train)
    train = TensorImageDataset(images[train_mask], labels[train_mask], classes)
    test = TensorImageDataset(images[test_mask], labels[test_mask], classes)
    kept = take(train, carve.pretrain)
    return DataBundle(kept, kept, take(train, carve.val), test, classes, image_size,
                      carved_description(val_fraction, val_seed))
