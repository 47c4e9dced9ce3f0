"""ImageNet layout ``root/{train,val}/<class>/<image>``, decoded per item (streaming)."""

from __future__ import annotations

from pathlib import Path

from trainables.data.codecs import IMAGE_EXTENSIONS
from trainables.data.datasets import DataBundle, ImageFileDataset, materialize
from trainables.data.errors import DatasetError
from trainables.data.folders import dataset_root, split_dir


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


def load_imagefolder(root: str | None, image_size: int, in_memory: bool | None) -> DataBundle:
    """train/ and val/ (or test/) with the same class folders; streaming unless ``in_memory``."""
    path = dataset_root(root, "imagefolder")
    hint = ("use the ImageNet layout root/train/<class>/*.JPEG and root/val/<class>/*.JPEG "
            "(val/ must hold class folders: reorganise the flat ImageNet val set first)")
    if not path.is_dir():
        raise DatasetError(f"data root {path} does not exist; {hint}", source="imagefolder")
    train_dir = split_dir(path, ("train",), "imagefolder", hint)
    test_dir = split_dir(path, ("val", "test"), "imagefolder", hint)
    train = _image_folder_split(train_dir, image_size)
    test = _image_folder_split(test_dir, image_size)
    if train.classes != test.classes:
        only_train = sorted(set(train.classes) - set(test.classes))
        only_test = sorted(set(test.classes) - set(train.classes))
        raise DatasetError(
            f"the class folders of {train_dir} and {test_dir} differ "
            f"(only in train: {only_train[:10]}, only in {test_dir.name}: {only_test[:10]}); "
            "both splits need the same class folders", source="imagefolder"
        )
    if in_memory:
        train, test = materialize(train), materialize(test)
    return DataBundle(train, train, test, list(train.classes), image_size)
