"""CIFAR-10, CIFAR-100 and STL-10 through torchvision's classes, held in memory.

The official files are read (``download=True`` fetches them when the machine is online) and
resized to the load size; errors name the folder, the missing files and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from trainables.data.codecs import resize_uint8
from trainables.data.datasets import DataBundle, TensorImageDataset
from trainables.data.errors import DatasetError
from trainables.data.folders import dataset_root
from trainables.data.splits import carve_validation, carved_description, take

#: Labelled training images per class (what validation is carved from), without reading a file.
TRAIN_IMAGES_PER_CLASS = {"cifar10": 5000, "cifar100": 500, "stl10": 500}
#: Number of classes of each set.
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "stl10": 10}
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                   "truck")
STL10_CLASSES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")


def torchvision_class_counts(name: str) -> dict[str, int]:
    """Labelled training images per class of cifar10 / cifar100 / stl10 (constants: the official
    splits are balanced); CIFAR-100's classes are named by index."""
    names = {"cifar10": CIFAR10_CLASSES, "stl10": STL10_CLASSES}.get(
        name, [str(i) for i in range(NUM_CLASSES[name])])
    return {n: TRAIN_IMAGES_PER_CLASS[name] for n in names}


def _torchvision_dataset(cls: type, root: Path, what: str, expected: Sequence[str], howto: str,
                         download: bool, **kwargs: Any):
    """Construct a torchvision dataset; rewrap its 'not found or corrupted' errors."""
    folder = root / cls.base_folder
    try:
        return cls(str(root), download=download, **kwargs)
    except RuntimeError as exc:
        if "not found or corrupted" not in str(exc):
            raise
        missing = [name for name in expected if not (folder / name).is_file()]
        if missing:
            problem = f"{what} not found under {folder} (missing: {', '.join(missing)})"
        else:
            problem = (f"{what} files under {folder} failed torchvision's md5 check (corrupted or "
                       "partial); delete them and download again")
        reason = f"{problem}; set download: true on a machine with internet, or {howto}"
        raise DatasetError(reason, source=str(folder), message=reason) from exc
    except OSError as exc:  # download attempted without network, or unreadable files
        raise DatasetError(f"could not read or download into {folder}: {exc}; {howto}",
                           source=what) from exc


def _verified(cls: type) -> type:
    """A subclass that skips the md5 pass: used once a first split has verified every file
    (torchvision checks all files of every split on each construction)."""
    return type(cls.__name__, (cls,), {"_check_integrity": lambda self: True})


def load_cifar(name: str, root: str | None, image_size: int, download: bool,
               val_fraction: float = 0.1, val_seed: int = 0) -> DataBundle:
    """CIFAR-10 / CIFAR-100 (python version) in memory; validation carved from the train split
    (CIFAR-10 at 0.1: 45k / 5k), pretrain = memory = the rest of it."""
    from torchvision import datasets

    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    what = "CIFAR-10" if name == "cifar10" else "CIFAR-100"
    path = dataset_root(root, name, cls.base_folder)
    expected = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    howto = f"place the extracted python version ({cls.filename}) there"
    splits = {}
    for train in (True, False):
        ds = _torchvision_dataset(cls, path, what, expected, howto, download, train=train)
        cls = _verified(cls)  # the first construction checked every file
        download = False
        # ds.data: N x 32 x 32 x 3 (HWC) -> N x 3 x 32 x 32
        images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2)
        splits[train] = TensorImageDataset(resize_uint8(images, image_size),
                                           torch.tensor(ds.targets, dtype=torch.int64),
                                           list(ds.classes))
    train = splits[True]
    carve = carve_validation(train.labels, train.classes, val_fraction, val_seed, source=name)
    kept = take(train, carve.pretrain)
    return DataBundle(kept, kept, take(train, carve.val), splits[False], train.classes, image_size,
                      carved_description(val_fraction, val_seed))


def load_stl10(root: str | None, image_size: int, download: bool, val_fraction: float = 0.1,
               val_seed: int = 0) -> DataBundle:
    """STL-10 in memory: validation carved from the labelled train split (5k) only; memory =
    train minus val; pretrain = memory + unlabeled (100k, label -1, never in val or memory).

    The unlabeled split is 100k x 3 x 96 x 96 uint8 = 2.8 GB; it is copied (and resized, if
    image_size != 96) chunk by chunk into one preallocated tensor whose first rows are the
    kept train images, so ``memory`` is a view of ``pretrain`` and costs nothing extra.
    """
    from torchvision.datasets import STL10

    cls = STL10
    path = dataset_root(root, "stl10", cls.base_folder)
    expected = [f for f, _ in cls.train_list + cls.test_list]
    howto = f"place the extracted binary version ({cls.filename}) there"
    test = _torchvision_dataset(cls, path, "STL-10", expected, howto, download, split="test")
    cls = _verified(cls)  # the first construction checked (and downloaded) every file
    classes = list(getattr(test, "classes", [str(i) for i in range(10)]))

    def as_tensor(data: np.ndarray) -> torch.Tensor:  # N x 3 x 96 x 96 (a transposed view)
        return torch.from_numpy(data)

    test_ds = TensorImageDataset(resize_uint8(as_tensor(test.data), image_size),
                                 torch.from_numpy(test.labels.astype(np.int64)), classes)
    del test
    train = _torchvision_dataset(cls, path, "STL-10", expected, howto, False, split="train")
    train_labels = torch.from_numpy(train.labels.astype(np.int64))
    carve = carve_validation(train_labels, classes, val_fraction, val_seed, source="stl10")
    train_images = resize_uint8(as_tensor(train.data), image_size)
    val = TensorImageDataset(train_images[torch.from_numpy(carve.val)],
                             train_labels[torch.from_numpy(carve.val)], classes)
    keep = torch.from_numpy(carve.pretrain)
    unlabeled = _torchvision_dataset(cls, path, "STL-10", expected, howto, False, split="unlabeled")
    n_train, n_unlabeled = len(keep), len(unlabeled.data)
    images = torch.empty((n_train + n_unlabeled, 3, image_size, image_size), dtype=torch.uint8)
    images[:n_train] = train_images[keep]
    del train_images
    chunk = 8192
    for start in range(0, n_unlabeled, chunk):
        images[n_train + start:n_train + start + chunk] = resize_uint8(
            as_tensor(unlabeled.data[start:start + chunk]), image_size)
    del unlabeled
    labels = torch.cat([train_labels[keep], torch.full((n_unlabeled,), -1, dtype=torch.int64)])
    pretrain = TensorImageDataset(images, labels, classes)
    memory = TensorImageDataset(images[:n_train], labels[:n_train], classes)  # a view
    return DataBundle(pretrain, memory, val, test_ds, classes, image_size,
                      carved_description(val_fraction, val_seed) + " of the labelled train split")
