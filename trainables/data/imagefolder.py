"""ImageNet layout ``root/{train,val,test}/<class>/<image>``, decoded per item (streaming).

Splits (``folders.split_layout``): train/ + val/ + test/ -> val = val/, test = test/;
train/ + val/ (the ImageNet layout) -> test = val/, validation carved from train/;
train/ + test/ -> validation carved from train/ (``splits.carve_validation``).
"""

from __future__ import annotations

from pathlib import Path

from trainables.data.codecs import IMAGE_EXTENSIONS
from trainables.data.datasets import DataBundle, ImageFileDataset, materialize
from trainables.data.errors import DatasetError
from trainables.data.folders import dataset_root, split_layout, val_description
from trainables.data.splits import carve_validation, class_counts, take

_HINT = ("use the ImageNet layout root/train/<class>/*.JPEG and root/val/<class>/*.JPEG "
         "(val/ must hold class folders: reorganise the flat ImageNet val set first), optionally "
         "with root/test/<class>/ (then val/ is the validation split and test/ the test split)")


def _image_folder_split(split_path: Path, image_size: int) -> ImageFileDataset:
    """List one split's ``<class>/<image>`` files (decoded later, per item)."""
    from torchvision.datasets import ImageFolder

    try:
        folder = ImageFolder(str(split_path), loader=lambda p: p)  # listing only; we decode
    except FileNotFoundError as exc:
        raise DatasetError(
            f"{split_path} has no usable class folders ({exc}); expected "
            f"{split_path}/<class>/<image>{{{','.join(IMAGE_EXTENSIONS)}}}", source="imagefolder"
        ) from exc
    return ImageFileDataset(folder.samples, folder.classes, image_size)


def _layout(root: str | None) -> tuple[Path, Path | None, Path]:
    path = dataset_root(root, "imagefolder")
    if not path.is_dir():
        raise DatasetError(f"data root {path} does not exist; {_HINT}", source="imagefolder")
    return split_layout(path, "imagefolder", _HINT)


def imagefolder_class_counts(root: str | None) -> dict[str, int] | None:
    """Images per class of train/ (listing only, nothing decoded), what validation is carved
    from; None when the root has its own val/ and test/ folders (nothing is carved)."""
    train_dir, val_dir, _ = _layout(root)
    if val_dir is not None:
        return None
    train = _image_folder_split(train_dir, 1)
    return class_counts(train.labels.numpy(), train.classes)


def load_imagefolder(root: str | None, image_size: int, in_memory: bool | None,
                     val_fraction: float = 0.1, val_seed: int = 0) -> DataBundle:
    """The splits above, with the same class folders; streaming unless ``in_memory``."""
    train_dir, val_dir, test_dir = _layout(root)
    train = _image_folder_split(train_dir, image_size)
    test = _image_folder_split(test_dir, image_size)
    val = _image_folder_split(val_dir, image_size) if val_dir is not None else None
    for other_dir, other in ((test_dir, test), (val_dir, val)):
        if other is not None and train.classes != other.classes:
            only_train = sorted(set(train.classes) - set(other.classes))
            only_other = sorted(set(other.classes) - set(train.classes))
            raise DatasetError(
                f"the class folders of {train_dir} and {other_dir} differ "
                f"(only in train: {only_train[:10]}, only in {other_dir.name}: {only_other[:10]}); "
                "all splits need the same class folders", source="imagefolder"
            )
    if val is None:
        carve = carve_validation(train.labels, train.classes, val_fraction, val_seed,
                                 source="imagefolder")
        train, val = take(train, carve.pretrain), take(train, carve.val)
    if in_memory:
        train, val, test = materialize(train), materialize(val), materialize(test)
    return DataBundle(train, train, val, test, list(train.classes), image_size,
                      val_description(val_dir, val_fraction, val_seed))
