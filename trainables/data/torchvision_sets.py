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


def load_cifar(name: str, root: str | None, image_size: int, download: bool) -> DataBundle:
    """CIFAR-10 / CIFAR-100 (python version) in memory; pretrain = memory = the train split."""
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
    return DataBundle(splits[True], splits[True], splits[False], splits[True].classes, image_size)


def load_stl10(root: str | None, image_size: int, download: bool) -> DataBundle:
    """STL-10 in memory: pretrain = train (5k) + unlabeled (100k, label -1); memory = train.

    The unlabeled split is 100k x 3 x 96 x 96 uint8 = 2.8 GB; it is copied (and resized, if
    image_size != 96) chunk by chunk into one preallocated tensor whose first 5k rows are the
    train split, so ``memory`` is a view of ``pretrain`` and costs nothing extra.
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
    unlabeled = _torchvision_dataset(cls, path, "STL-10", expected, howto, False, split="unlabeled")
    n_train, n_unlabeled = len(train.data), len(unlabeled.data)
    images = torch.empty((n_train + n_unlabeled, 3, image_size, image_size), dtype=torch.uint8)
    images[:n_train] = resize_uint8(as_tensor(train.data), image_size)
    chunk = 8192
    for start in range(0, n_unlabeled, chunk):
        images[n_train + start:n_train + start + chunk] = resize_uint8(
            as_tensor(unlabeled.data[start:start + chunk]), image_size)
    del unlabeled
    labels = torch.cat([torch.from_numpy(train.labels.astype(np.int64)),
                        torch.full((n_unlabeled,), -1, dtype=torch.int64)])
    pretrain = TensorImageDataset(images, labels, classes)
    memory = TensorImageDataset(images[:n_train], labels[:n_train], classes)  # a view
    return DataBundle(pretrain, memory, test_ds, classes, image_size)
