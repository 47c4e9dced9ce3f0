"""CIFAR-10/100 and STL-10 (trainables.data.torchvision_sets), written in their real on-disk
formats into tmp_path. No network.

torchvision verifies the md5 of the official CIFAR / STL-10 files. Our tiny stand-in files
cannot match those checksums, so the tests that load them monkeypatch the module-level
``check_integrity`` function that torchvision's cifar.py / stl10.py imported (it backs both the
datasets' ``_check_integrity`` and CIFAR's metadata check) with an "is it a file" check. That
skips only the checksum, not any loading code: the files are still parsed by torchvision.
"""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from trainables.data import DatasetError, TensorImageDataset, carve_validation, dataset_class_counts, load_data


def _skip_md5(monkeypatch, module_name: str) -> None:
    """Replace torchvision's md5 check for one dataset module by a file-exists check."""
    import importlib

    module = importlib.import_module(f"torchvision.datasets.{module_name}")
    monkeypatch.setattr(module, "check_integrity",
                        lambda fpath, md5=None: os.path.isfile(fpath))


def _random_images(n: int, h: int, w: int, seed: int) -> np.ndarray:
    """uint8 n x h x w x 3 (HWC, as image files hold them)."""
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


# ------------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100 (python pickle batches)
# ------------------------------------------------------------------------------------------------


def _pickle(path, obj) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def _cifar_rows(images_hwc: np.ndarray) -> np.ndarray:
    """N x 32 x 32 x 3 -> N x 3072 (the CIFAR row layout: all R, then G, then B)."""
    return images_hwc.transpose(0, 3, 1, 2).reshape(len(images_hwc), -1)


def write_cifar10(root, per_batch: int = 4) -> tuple[np.ndarray, list[int], np.ndarray, list[int]]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    n = 5 * per_batch
    train_x, train_y = _random_images(n, 32, 32, 1), [i % 10 for i in range(n)]
    for b in range(5):
        sl = slice(b * per_batch, (b + 1) * per_batch)
        _pickle(folder / f"data_batch_{b + 1}",
                {"batch_label": f"training batch {b + 1} of 5", "data": _cifar_rows(train_x[sl]),
                 "labels": train_y[sl]})
    test_x, test_y = _random_images(4, 32, 32, 2), [9, 0, 1, 2]
    _pickle(folder / "test_batch", {"data": _cifar_rows(test_x), "labels": test_y})
    _pickle(folder / "batches.meta", {"label_names": [f"c{i}" for i in range(10)]})
    return train_x, train_y, test_x, test_y


def test_cifar10_loads_official_layout(tmp_path, monkeypatch):
    _skip_md5(monkeypatch, "cifar")
    train_x, train_y, test_x, test_y = write_cifar10(tmp_path)  # 2 images per class
    bundle = load_data("cifar10", root=str(tmp_path), image_size=32, val_fraction=0.5, val_seed=3)
    assert isinstance(bundle.pretrain, TensorImageDataset)
    assert bundle.pretrain is bundle.memory
    assert bundle.classes == [f"c{i}" for i in range(10)] and bundle.image_size == 32
    carve = carve_validation(np.array(train_y), bundle.classes, 0.5, 3)
    train_chw = torch.from_numpy(train_x).permute(0, 3, 1, 2)
    assert torch.equal(bundle.memory.images, train_chw[carve.pretrain])
    assert torch.equal(bundle.val.images, train_chw[carve.val])
    assert sorted(bundle.memory.labels.tolist()) == sorted(bundle.val.labels.tolist()) == list(range(10))
    assert torch.equal(bundle.test.images, torch.from_numpy(test_x).permute(0, 3, 1, 2))
    assert bundle.test.labels.tolist() == test_y
    assert bundle.test.images.is_contiguous()
    assert bundle.splits == {"pretrain": 10, "memory": 10, "val": 10, "test": 4,
                             "val_from": "carved 50% per class, val_seed 3"}
    # a different load size resizes (and the folder itself is accepted as root)
    small = load_data("cifar10", root=str(tmp_path / "cifar-10-batches-py"), image_size=16,
                      val_fraction=0.5)
    assert small.memory.images.shape == (10, 3, 16, 16) and small.memory.images.dtype == torch.uint8
    # the default fraction leaves these 2-image classes without a validation image
    with pytest.raises(DatasetError) as err:
        load_data("cifar10", root=str(tmp_path), image_size=32)
    assert (err.value.key, err.value.source) == ("val_fraction", "cifar10")
    assert err.value.reason.startswith("class 'c0' has 2 training image(s)")


def test_cifar_and_stl_counts_need_no_files():
    """The official splits are balanced: the check before compute reads constants (CIFAR-10 at
    0.1: 500 of 5000 per class, i.e. 45k / 5k)."""
    counts = dataset_class_counts("cifar10")
    assert sum(counts.values()) == 50000 and counts["airplane"] == 5000
    assert set(dataset_class_counts("cifar100").values()) == {500}
    assert len(dataset_class_counts("stl10")) == 10 and dataset_class_counts("stl10")["monkey"] == 500


def test_cifar100_loads_official_layout(tmp_path, monkeypatch):
    _skip_md5(monkeypatch, "cifar")
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    train_x, test_x = _random_images(6, 32, 32, 3), _random_images(2, 32, 32, 4)
    _pickle(folder / "train", {"data": _cifar_rows(train_x), "fine_labels": [0, 99, 5, 5, 99, 0],
                               "coarse_labels": [0, 1, 2, 2, 1, 0]})
    _pickle(folder / "test", {"data": _cifar_rows(test_x), "fine_labels": [99, 0],
                              "coarse_labels": [1, 0]})
    _pickle(folder / "meta", {"fine_label_names": [f"f{i}" for i in range(100)],
                              "coarse_label_names": [f"g{i}" for i in range(20)]})
    bundle = load_data("cifar100", root=str(tmp_path), image_size=48, val_fraction=0.5)
    assert len(bundle.classes) == 100
    assert bundle.memory.images.shape == (3, 3, 48, 48) and len(bundle.val) == 3
    assert sorted(bundle.memory.labels.tolist()) == sorted(bundle.val.labels.tolist()) == [0, 5, 99]
    assert bundle.test.labels.tolist() == [99, 0]


def test_cifar_missing_names_path_and_fix(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_data("cifar10", root=str(tmp_path / "nowhere"), image_size=32)
    msg = str(err.value)
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in msg
    assert "download: true" in msg and "data_batch_1" in msg


def test_cifar_corrupt_files_are_reported(tmp_path):
    write_cifar10(tmp_path)  # real md5 check: our stand-in files fail it
    with pytest.raises(DatasetError, match="md5"):
        load_data("cifar10", root=str(tmp_path), image_size=32)



# ------------------------------------------------------------------------------------------------
# STL-10 (binary, column-major)
# ------------------------------------------------------------------------------------------------


def _stl_write_images(path, images_chw: np.ndarray) -> None:
    # STL-10 stores each image as 3 x 96 x 96 in column-major order (x before y).
    images_chw.transpose(0, 1, 3, 2).tofile(path)


def test_stl10_binary_format(tmp_path, monkeypatch):
    _skip_md5(monkeypatch, "stl10")
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    rng = np.random.default_rng(5)
    train = rng.integers(0, 256, (8, 3, 96, 96), dtype=np.uint8)
    train[0, :, :10, :] = 255  # a bright band at the TOP rows: catches a row/column mix-up
    train[0, :, 10:, :] = 0
    test = rng.integers(0, 256, (3, 3, 96, 96), dtype=np.uint8)
    unlabeled = rng.integers(0, 256, (6, 3, 96, 96), dtype=np.uint8)
    _stl_write_images(folder / "train_X.bin", train)
    _stl_write_images(folder / "test_X.bin", test)
    _stl_write_images(folder / "unlabeled_X.bin", unlabeled)
    np.array([1, 2, 10, 3] * 2, dtype=np.uint8).tofile(folder / "train_y.bin")  # 1-based
    np.array([10, 1, 5], dtype=np.uint8).tofile(folder / "test_y.bin")
    names = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    (folder / "class_names.txt").write_text("\n".join(names) + "\n")
    (folder / "fold_indices.txt").write_text("0 1\n2 3\n")

    # validation is carved from the labelled train split only: 1 of the 2 images of each class
    bundle = load_data("stl10", root=str(tmp_path), image_size=96, val_fraction=0.5)
    assert bundle.classes == names
    assert len(bundle.pretrain) == 4 + 6 and len(bundle.memory) == 4 and len(bundle.val) == 4
    assert len(bundle.test) == 3
    carve = carve_validation(np.array([0, 1, 9, 2] * 2), names, 0.5, 0)
    assert torch.equal(bundle.memory.images, torch.from_numpy(train[carve.pretrain]))
    assert torch.equal(bundle.val.images, torch.from_numpy(train[carve.val]))
    assert torch.equal(bundle.pretrain.images[4:], torch.from_numpy(unlabeled))
    assert torch.equal(bundle.test.images, torch.from_numpy(test))
    assert sorted(bundle.memory.labels.tolist()) == sorted(bundle.val.labels.tolist()) == [0, 1, 2, 9]
    assert bundle.test.labels.tolist() == [9, 0, 4]
    assert bundle.pretrain.labels[4:].eq(-1).all()  # unlabeled: pretrain only
    assert bundle.memory.images.data_ptr() == bundle.pretrain.images.data_ptr()  # a view

    small = load_data("stl10", root=str(tmp_path), image_size=32, val_fraction=0.5)
    assert small.pretrain.images.shape == (10, 3, 32, 32)
    banded = small.memory if 0 in carve.pretrain else small.val  # train[0] has the band
    band = banded.images[0].float()
    assert band[:, :3].mean() > 200 and band[:, 5:].mean() < 10


def test_stl10_missing(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_data("stl10", root=str(tmp_path), image_size=32)
    assert str(tmp_path / "stl10_binary") in str(err.value)
    assert "unlabeled_X.bin" in str(err.value)
