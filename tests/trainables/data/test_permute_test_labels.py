"""The test-only seam that permutes the TEST split's labels (tests/e2e/test_e2e_selection.py)."""

from __future__ import annotations

import torch

from trainables.data import load_data
from trainables.data.load import PERMUTE_TEST_LABELS_ENV


def test_only_the_test_labels_are_permuted(monkeypatch, tmp_path):
    opts = {"train_per_class": 8, "test_per_class": 4}
    monkeypatch.delenv(PERMUTE_TEST_LABELS_ENV, raising=False)
    plain = load_data("photo_patches", root=None, image_size=16, photo_patches=opts, cache_dir=str(tmp_path))
    monkeypatch.setenv(PERMUTE_TEST_LABELS_ENV, "7")
    permuted = load_data("photo_patches", root=None, image_size=16, photo_patches=opts, cache_dir=str(tmp_path))
    again = load_data("photo_patches", root=None, image_size=16, photo_patches=opts, cache_dir=str(tmp_path))
    a, b = plain.test.labels, permuted.test.labels
    assert not torch.equal(a, b) and torch.equal(a.sort().values, b.sort().values)
    assert torch.equal(b, again.test.labels)  # deterministic
    assert [permuted.test[i][1] for i in range(len(b))] == b.tolist()  # what the loaders read
    assert torch.equal(plain.test[0][0], permuted.test[0][0])  # images untouched
    for split in ("pretrain", "memory", "val"):
        assert torch.equal(getattr(plain, split).labels, getattr(permuted, split).labels)
    digits = load_data("digits", root=None, image_size=8)
    monkeypatch.delenv(PERMUTE_TEST_LABELS_ENV)
    assert not torch.equal(digits.test.labels, load_data("digits", root=None, image_size=8).test.labels)
