"""scikit-learn digits (trainables.data.digits): smoke-test data."""

from __future__ import annotations

import torch

from trainables.data import load_data


def test_digits():
    bundle = load_data("digits", root=None, image_size=16)
    assert bundle.classes == [str(i) for i in range(10)]
    n_train, n_test = len(bundle.memory), len(bundle.test)
    assert n_train + n_test == 1797 and abs(n_train / 1797 - 0.8) < 0.01
    assert bundle.memory.images.shape == (n_train, 3, 16, 16)
    assert bundle.memory.images.max() > 200
    again = load_data("digits", root=None, image_size=16)
    assert torch.equal(bundle.test.labels, again.test.labels)
