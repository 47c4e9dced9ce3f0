"""``load_data(name, ...)``: the one entry point from a dataset name to its ``DataBundle``."""

from __future__ import annotations

from trainables.data.datasets import DataBundle
from trainables.data.digits import load_digits
from trainables.data.errors import DatasetError
from trainables.data.folders import dataset_root
from trainables.data.imagefolder import load_imagefolder
from trainables.data.parquet import load_parquet
from trainables.data.photo_patches import load_photo_patches
from trainables.data.torchvision_sets import load_cifar, load_stl10
from trainables.validation import is_int

DATASETS = ("photo_patches", "digits", "cifar10", "cifar100", "stl10", "imagefolder", "parquet")


def load_data(dataset: str, *, root: str | None, image_size: int, download: bool = False,
              cache_dir: str | None = None, photo_patches: dict | None = None,
              in_memory: bool | None = None) -> DataBundle:
    """Load ``dataset`` (one of ``DATASETS``) at image_size x image_size -> DataBundle.

    root: the dataset's folder (unused by photo_patches and digits). download: let torchvision
    fetch CIFAR/STL files. cache_dir: where photo_patches caches its Parquet set (default
    ``$LEOCLR_CACHE`` or ``~/.cache/leoclr``). photo_patches: options (train_per_class,
    test_per_class, scale, seed; ignored by other datasets). in_memory: None = the dataset's
    default (in memory for all but imagefolder, and parquet sets over ~2 GB decoded);
    True/False forces it for imagefolder/parquet/photo_patches (CIFAR/STL are always in memory).
    """
    if dataset not in DATASETS:
        raise DatasetError(f"valid names: {', '.join(DATASETS)}", key="dataset", value=dataset,
                           message=f"unknown dataset {dataset!r}; valid names: {', '.join(DATASETS)}")
    if not is_int(image_size) or image_size < 1:
        raise DatasetError("must be a positive integer", key="image_size", value=image_size)
    if dataset == "photo_patches":
        return load_photo_patches(image_size, photo_patches, cache_dir, in_memory)
    if dataset == "digits":
        return load_digits(image_size)
    if dataset in ("cifar10", "cifar100"):
        return load_cifar(dataset, root, image_size, download)
    if dataset == "stl10":
        return load_stl10(root, image_size, download)
    if dataset == "imagefolder":
        return load_imagefolder(root, image_size, in_memory)
    return load_parquet(dataset_root(root, "parquet"), image_size, in_memory)
