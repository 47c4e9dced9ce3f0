"""scikit-learn digits (trainables.data.digits): smoke-test data."""

from __future__ import annotations

import torch

from trainables.data import dataset_class_counts, load_data


def test_digits():
    bundle = load_data("digits", root=None, image_size=16)
    assert bundle.classes == [str(i) for i in range(10)]
    n_train, n_val, n_test = len(bundle.memory), len(bundle.val), len(bundle.test)
    assert n_train + n_val + n_test == 1797 and abs((n_train + n_val) / 1797 - 0.8) < 0.01
    assert bundle.pretrain is bundle.memory
    assert bundle.memory.images.shape == (n_train, 3, 16, 16)
    assert bundle.memory.images.max() > 200
    again = load_data("digits", root=None, image_size=16)
    assert torch.equal(bundle.test.labels, again.test.labels)
    assert torch.equal(bundle.val.images, again.val.images)


def test_digits_validation_is_carved_from_the_train_part():
    counts = dataset_class_counts("digits")  # the train part: round(0.8 n_c) per class
    bundle = load_data("digits", root=None, image_size=8, val_fraction=0.1, val_seed=0)
    assert sum(counts.values()) == len(bundle.memory) + len(bundle.val) == 1438
    for c, name in enumerate(bundle.classes):
        n_val = int((bundle.val.labels == c).sum())
        assert n_val == int(counts[name] * 0.1 + 0.5)  # round(0.1 n_c), halves up
    # the test split does not depend on the validation carve; another val_seed carves others
    other = load_data("digits", root=None, image_size=8, val_fraction=0.1, val_seed=1)
    assert torch.equal(bundle.test.images, other.test.images)
    assert not torch.equal(bundle.val.images, other.val.images)
    assert bundle.splits["val_from"] == "carved 10% per class, val_seed 0"
