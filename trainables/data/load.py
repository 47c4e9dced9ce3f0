"""``load_data(name, ...)``: the one entry point from a dataset name to its ``DataBundle``;
``check_val_fraction``: the validation split's check, before anything is loaded.

Test-only seam: with the environment variable ``LEOCLR_TEST_ONLY_PERMUTE_TEST_LABELS=<int>``
set in the training process, the TEST split's labels are permuted (a fixed permutation seeded
by that integer); nothing else changes. tests/e2e/test_e2e_selection.py sets it to prove that
selection never reads test labels (a sweep with permuted test labels makes the same decisions).
It has no flag or config key, so no run reaches it by accident; the trial's ``test_*`` metrics
are meaningless while it is set.
"""

from __future__ import annotations

import copy
import os

import torch

from trainables.data.datasets import DataBundle
from trainables.data.digits import digits_class_counts, load_digits
from trainables.data.errors import DatasetError
from trainables.data.folders import dataset_root
from trainables.data.imagefolder import imagefolder_class_counts, load_imagefolder
from trainables.data.parquet import load_parquet, parquet_class_counts
from trainables.data.photo_patches import load_photo_patches, photo_patches_class_counts
from trainables.data.splits import check_val_split
from trainables.data.torchvision_sets import load_cifar, load_stl10, torchvision_class_counts
from trainables.validation import is_int

DATASETS = ("photo_patches", "digits", "cifar10", "cifar100", "stl10", "imagefolder", "parquet")


def _check_name(dataset: str) -> None:
    if dataset not in DATASETS:
        raise DatasetError(f"valid names: {', '.join(DATASETS)}", key="dataset", value=dataset,
                           message=f"unknown dataset {dataset!r}; valid names: {', '.join(DATASETS)}")


def dataset_class_counts(dataset: str, *, root: str | None = None,
                         photo_patches: dict | None = None) -> dict[str, int] | None:
    """Labelled training images per class that validation would be carved from, without
    decoding an image: photo_patches from its options, CIFAR / STL-10 constants (5000 / 500 /
    500 per class), digits from scikit-learn's labels, ImageFolder by listing train/, Parquet
    from train/'s label column. None when the data brings its own val/ and test/ folders
    (nothing is carved). Missing folders raise the ``DatasetError`` loading would raise."""
    _check_name(dataset)
    if dataset == "photo_patches":
        return photo_patches_class_counts(photo_patches)
    if dataset == "digits":
        return digits_class_counts()
    if dataset in ("cifar10", "cifar100", "stl10"):
        return torchvision_class_counts(dataset)
    if dataset == "imagefolder":
        return imagefolder_class_counts(root)
    return parquet_class_counts(dataset_root(root, "parquet"))


def check_val_fraction(dataset: str, val_fraction: float, *, root: str | None = None,
                       photo_patches: dict | None = None) -> None:
    """Refuse, before compute, a ``val_fraction`` that leaves a class of ``dataset`` with no
    validation or no training image (``splits.check_val_split`` on ``dataset_class_counts``):
    a ``DatasetError`` with key ``val_fraction`` naming the class and its image count."""
    counts = dataset_class_counts(dataset, root=root, photo_patches=photo_patches)
    if counts is not None:
        check_val_split(counts, val_fraction, source=dataset)


PERMUTE_TEST_LABELS_ENV = "LEOCLR_TEST_ONLY_PERMUTE_TEST_LABELS"


def _permuted_test_labels(bundle: DataBundle) -> DataBundle:
    """The bundle with its test labels permuted when PERMUTE_TEST_LABELS_ENV is set (module doc)."""
    seed = os.environ.get(PERMUTE_TEST_LABELS_ENV)
    if not seed:
        return bundle
    test = copy.copy(bundle.test)  # the loaded (possibly shared) dataset is left as it is
    perm = torch.randperm(len(test.labels), generator=torch.Generator().manual_seed(int(seed)))
    test.labels = test.labels[perm].contiguous()
    if hasattr(test, "samples"):  # ImageFileDataset reads its labels from the samples
        test.samples = [(path, int(y)) for (path, _), y in zip(test.samples, test.labels)]
    bundle = copy.copy(bundle)
    bundle.test = test
    return bundle


def load_data(dataset: str, *, root: str | None, image_size: int, download: bool = False,
              cache_dir: str | None = None, photo_patches: dict | None = None,
              in_memory: bool | None = None, val_fraction: float = 0.1,
              val_seed: int = 0) -> DataBundle:
    """Load ``dataset`` (one of ``DATASETS``) at image_size x image_size -> DataBundle with its
    pretrain / memory / val / test splits (trainables.data.splits).

    root: the dataset's folder (unused by photo_patches and digits). download: let torchvision
    fetch CIFAR/STL files. cache_dir: where photo_patches caches its Parquet set (default
    ``$LEOCLR_CACHE`` or ``~/.cache/leoclr``). photo_patches: options (train_per_class,
    test_per_class, side_px or scale, seed; ignored by other datasets). in_memory: None = the
    dataset's default (in memory for all but imagefolder, and parquet sets over ~2 GB decoded);
    True/False forces it for imagefolder/parquet/photo_patches (CIFAR/STL are always in memory).
    val_fraction, val_seed: the validation split carved from the labelled training images (a
    fraction that leaves a class empty is refused before any image is decoded).
    """
    return _permuted_test_labels(_load(dataset, root, image_size, download, cache_dir, photo_patches, in_memory,
                                       val_fraction, val_seed))


def _load(dataset: str, root: str | None, image_size: int, download: bool, cache_dir: str | None,
          photo_patches: dict | None, in_memory: bool | None, val_fraction: float, val_seed: int) -> DataBundle:
    _check_name(dataset)
    if not is_int(image_size) or image_size < 1:
        raise DatasetError("must be a positive integer", key="image_size", value=image_size)
    if dataset == "photo_patches":
        return load_photo_patches(image_size, photo_patches, cache_dir, in_memory, val_fraction)
    if dataset == "digits":
        return load_digits(image_size, val_fraction, val_seed)
    if dataset in ("cifar10", "cifar100"):
        return load_cifar(dataset, root, image_size, download, val_fraction, val_seed)
    if dataset == "stl10":
        return load_stl10(root, image_size, download, val_fraction, val_seed)
    if dataset == "imagefolder":
        return load_imagefolder(root, image_size, in_memory, val_fraction, val_seed)
    return load_parquet(dataset_root(root, "parquet"), image_size, in_memory, val_fraction, val_seed)
