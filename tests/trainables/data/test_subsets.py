"""Class-balanced label subsets (trainables.data.subsets), on real labels (photo_patches-like
imbalanced counts and the digits set)."""

from __future__ import annotations

import pytest
import torch

from trainables.data import TensorImageDataset, load_data
from trainables.data.subsets import class_balanced_indices, dataset_labels, subset


def imbalanced_labels() -> torch.Tensor:
    """Class c has 30 + 17 c images, shuffled, plus 5 unlabelled (-1)."""
    labels = torch.cat([torch.full((30 + 17 * c,), c) for c in range(5)] + [torch.full((5,), -1)])
    return labels[torch.randperm(labels.numel(), generator=torch.Generator().manual_seed(0))]


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.5, 1.0])
def test_subsets_are_class_balanced(fraction):
    labels = imbalanced_labels()
    idx = class_balanced_indices(labels, fraction, seed=0)
    counts = torch.bincount(labels[idx], minlength=5)
    for c in range(5):
        n_c = 30 + 17 * c
        assert counts[c] == max(1, int(fraction * n_c + 0.5)), (c, counts)
    assert (labels[idx] >= 0).all()  # unlabelled images are never chosen
    assert idx.unique().numel() == idx.numel() and torch.equal(idx, idx.sort().values)


def test_same_seed_same_subset_other_seed_other_subset_and_nested():
    labels = imbalanced_labels()
    a = class_balanced_indices(labels, 0.1, seed=3)
    assert torch.equal(a, class_balanced_indices(labels, 0.1, seed=3))
    b = class_balanced_indices(labels, 0.1, seed=4)
    assert a.numel() == b.numel() and not torch.equal(a, b)
    small = class_balanced_indices(labels, 0.02, seed=3)
    assert set(small.tolist()) <= set(a.tolist())  # the 2 % images are among the 10 %
    # a class's choice does not depend on the other classes
    other = labels.clone()
    other[other == 4] = -1
    keep = labels[a] != 4
    assert torch.equal(class_balanced_indices(other, 0.1, seed=3), a[keep])


def test_bad_fractions_are_refused():
    for bad in (0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="must be in \\(0, 1\\]"):
            class_balanced_indices(torch.tensor([0, 1]), bad, seed=0)


def test_subset_of_real_digits_keeps_the_kind_and_the_labels():
    digits = load_data("digits", root=None, image_size=8).memory
    idx = class_balanced_indices(dataset_labels(digits), 0.1, seed=0)
    part = subset(digits, idx)
    assert isinstance(part, TensorImageDataset) and len(part) == idx.numel()
    assert torch.equal(part.labels, digits.labels[idx]) and torch.equal(part.images[3], digits.images[idx[3]])
    assert torch.bincount(part.labels).tolist() == [max(1, int(0.1 * n + 0.5)) for n in torch.bincount(digits.labels).tolist()]
