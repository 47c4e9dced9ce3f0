"""The validation split (trainables.data.splits): counts, the check before compute, the carve."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainables.data import DatasetError, TensorImageDataset, carve_validation, check_val_split, val_count
from trainables.data.splits import UNLABELLED, IndexedSubset, class_counts, take


def test_val_count_rounds_halves_up():
    assert val_count(5000, 0.1) == 500  # CIFAR-10: 45k / 5k
    assert val_count(144, 0.1) == 14  # photo_patches' default: 14.4
    assert val_count(45, 0.1) == 5  # 4.5 rounds up (Python's round() would give 4)
    assert val_count(4, 0.1) == 0


def test_check_val_split_names_the_class_and_its_count():
    check_val_split({"cat": 10, "dog": 5}, 0.1)  # 1 and 1 (0.5 rounds up)
    with pytest.raises(DatasetError) as err:
        check_val_split({"cat": 10, "dog": 4}, 0.1, source="my.yaml")
    assert (err.value.source, err.value.key, err.value.value) == ("my.yaml", "val_fraction", 0.1)
    assert err.value.reason == ("class 'dog' has 4 training image(s): 0.1 of them rounds to 0 validation "
                                "images; use val_fraction >= 0.125 or give the class more images")
    assert str(err.value).startswith("my.yaml: val_fraction=0.1: class 'dog'")
    assert val_count(4, 0.125) == 1  # the advice works
    with pytest.raises(DatasetError) as err:
        check_val_split({"cat": 10, "dog": 2}, 0.75)  # round(1.5) = 2 of 2
    assert err.value.reason.startswith("class 'dog' has 2 training image(s): 0.75 of them (2) leaves it "
                                       "no training image")


def test_carve_is_stratified_deterministic_and_ignores_the_training_seed():
    labels = np.repeat(np.arange(3), [20, 10, 5])
    carve = carve_validation(labels, ["a", "b", "c"], 0.2, seed=7)
    assert np.bincount(labels[carve.val]).tolist() == [4, 2, 1]
    assert np.array_equal(carve.pretrain, carve.memory)
    assert sorted(np.concatenate([carve.pretrain, carve.val]).tolist()) == list(range(35))
    assert np.all(np.diff(carve.val) > 0) and np.all(np.diff(carve.pretrain) > 0)  # ascending
    again = carve_validation(torch.from_numpy(labels), ["a", "b", "c"], 0.2, seed=7)
    assert np.array_equal(again.val, carve.val)
    # by hand: one default_rng(seed) permutes each class's indices in label order
    rng = np.random.default_rng(7)
    expected = np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:n]
                                       for c, n in ((0, 4), (1, 2), (2, 1))]))
    assert np.array_equal(carve.val, expected)
    assert not np.array_equal(carve_validation(labels, ["a", "b", "c"], 0.2, seed=8).val, carve.val)


def test_unlabelled_images_never_enter_val_or_memory():
    labels = np.array([0, -1, 0, 1, -1, 1, 0, 1, -1, 0])
    carve = carve_validation(labels, ["a", "b"], 0.5, seed=0)
    assert (labels[carve.val] >= 0).all() and (labels[carve.memory] >= 0).all()
    assert set(np.flatnonzero(labels < 0)) <= set(carve.pretrain)
    assert np.bincount(labels[carve.val]).tolist() == [2, 2]  # round(0.5 * 4), round(0.5 * 3) = 2
    assert class_counts(labels, ["a", "b"]) == {"a": 4, "b": 3}
    # no label at all: a random held-out sample (for RankMe), memory empty
    unlabelled = carve_validation(np.full(10, -1), [], 0.3, seed=0)
    assert unlabelled.val.size == 3 and unlabelled.memory.size == 0 and unlabelled.pretrain.size == 7
    assert class_counts(np.full(10, -1), []) == {UNLABELLED: 10}


def test_take_keeps_rows_of_every_dataset_kind():
    images = torch.arange(5 * 3 * 2 * 2, dtype=torch.uint8).reshape(5, 3, 2, 2)
    ds = TensorImageDataset(images, torch.tensor([0, 1, 0, 1, 0]), ["a", "b"])
    sub = take(ds, np.array([4, 1]))
    assert torch.equal(sub.images, images[[4, 1]]) and sub.labels.tolist() == [0, 1]

    class Streaming(torch.utils.data.Dataset):
        labels, classes, image_size = ds.labels, ds.classes, 2

        def __len__(self):
            return 5

        def __getitem__(self, i):
            return ds[i]

    wrapped = take(Streaming(), np.array([3, 0]))
    assert isinstance(wrapped, IndexedSubset) and len(wrapped) == 2
    assert torch.equal(wrapped[0][0], images[3]) and wrapped.labels.tolist() == [1, 0]
