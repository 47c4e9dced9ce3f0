"""ImageFolder (trainables.data.imagefolder): the ImageNet layout, streaming and in memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from trainables.data import (
    DatasetError,
    ImageFileDataset,
    TensorImageDataset,
    dataset_class_counts,
    iterate_batches,
    load_data,
)

#: 3 images per class: round(0.34 * 3) = 1 validation image, 2 training images per class.
VAL = 0.34


def write_image_folder(root, splits=("train", "val")) -> None:
    rng = np.random.default_rng(7)
    sizes = [(40, 25), (17, 33), (64, 64)]  # (width, height): non-square on purpose
    for split in splits:
        for c, cls in enumerate(["cat", "dog"]):
            (root / split / cls).mkdir(parents=True)
            for i, size in enumerate(sizes):
                arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                img = Image.fromarray(arr)
                if i == 1:
                    img.convert("L").save(root / split / cls / f"{i}.png")
                else:
                    img.save(root / split / cls / f"{i}.{'jpg' if c == 0 else 'png'}")


def test_imagefolder_streaming_and_in_memory(tmp_path):
    write_image_folder(tmp_path)
    bundle = load_data("imagefolder", root=str(tmp_path), image_size=24, val_fraction=VAL)
    assert isinstance(bundle.pretrain, ImageFileDataset) and isinstance(bundle.val, ImageFileDataset)
    assert bundle.classes == ["cat", "dog"]
    # train/ + val/ (the ImageNet layout): test = val/, validation carved from train/
    assert len(bundle.pretrain) == 4 and len(bundle.val) == 2 and len(bundle.test) == 6
    assert bundle.val.labels.tolist() == [0, 1]
    assert sorted(bundle.pretrain.samples + bundle.val.samples) == sorted(
        load_data("imagefolder", root=str(tmp_path), image_size=24, val_fraction=0.5).pretrain.samples
        + load_data("imagefolder", root=str(tmp_path), image_size=24, val_fraction=0.5).val.samples)
    assert all("/val/" in p for p, _ in bundle.test.samples)
    assert bundle.splits["val_from"] == "carved 34% per class, val_seed 0"
    gray = next(i for i, (p, _) in enumerate(bundle.pretrain.samples) if p.endswith("/1.png"))
    image, label = bundle.pretrain[gray]
    assert image.shape == (3, 24, 24) and image.dtype == torch.uint8
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])  # gray -> 3 ch
    # squashed, not cropped: equals PIL's antialiased bilinear resize of the whole image
    path = bundle.pretrain.samples[0][0]
    expected = np.array(Image.open(path).convert("RGB").resize((24, 24), Image.BILINEAR))
    assert torch.equal(bundle.pretrain[0][0], torch.from_numpy(expected).permute(2, 0, 1))

    mem = load_data("imagefolder", root=str(tmp_path), image_size=24, in_memory=True, val_fraction=VAL)
    assert isinstance(mem.pretrain, TensorImageDataset) and isinstance(mem.val, TensorImageDataset)
    assert mem.pretrain.images.shape == (4, 3, 24, 24)
    assert mem.pretrain.labels.tolist() == [0, 0, 1, 1]
    assert all(torch.equal(mem.val[i][0], bundle.val[i][0]) for i in range(2))
    assert all(torch.equal(mem.test[i][0], bundle.test[i][0]) for i in range(6))


def test_imagefolder_accepts_test_dir(tmp_path):
    write_image_folder(tmp_path, splits=("train", "test"))
    bundle = load_data("imagefolder", root=str(tmp_path), image_size=8, val_fraction=VAL)
    assert len(bundle.test) == 6 and len(bundle.val) == 2 and len(bundle.memory) == 4
    assert dataset_class_counts("imagefolder", root=str(tmp_path)) == {"cat": 3, "dog": 3}


def test_imagefolder_train_val_and_test_folders(tmp_path):
    """With val/ and test/ both given, val/ is the validation split and nothing is carved."""
    write_image_folder(tmp_path, splits=("train", "val", "test"))
    bundle = load_data("imagefolder", root=str(tmp_path), image_size=8)  # 0.1 of 3: not carved
    assert len(bundle.pretrain) == 6 and len(bundle.val) == 6 and len(bundle.test) == 6
    assert all("/val/" in p for p, _ in bundle.val.samples)
    assert all("/test/" in p for p, _ in bundle.test.samples)
    assert bundle.splits["val_from"] == "val/ folder"
    assert dataset_class_counts("imagefolder", root=str(tmp_path)) is None


def test_imagefolder_val_fraction_leaving_a_class_empty_is_refused(tmp_path):
    write_image_folder(tmp_path)
    with pytest.raises(DatasetError) as err:
        load_data("imagefolder", root=str(tmp_path), image_size=8, val_fraction=0.1)
    assert (err.value.key, err.value.value, err.value.source) == ("val_fraction", 0.1, "imagefolder")
    assert err.value.reason.startswith("class 'cat' has 3 training image(s): 0.1 of them rounds to 0")


def test_imagefolder_corrupt_file_names_it(tmp_path):
    write_image_folder(tmp_path)
    bad = tmp_path / "train" / "dog" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 this is not a jpeg")
    bundle = load_data("imagefolder", root=str(tmp_path), image_size=16, val_fraction=0.5)
    split = bundle.pretrain if any(p == str(bad) for p, _ in bundle.pretrain.samples) else bundle.val
    with pytest.raises(DatasetError, match="broken.jpg") as err:
        list(iterate_batches(split, 4, shuffle=False, seed=0, epoch=0, drop_last=False))
    assert str(bad) in str(err.value)


def test_imagefolder_errors(tmp_path):
    with pytest.raises(DatasetError, match=str(tmp_path / "missing")):
        load_data("imagefolder", root=str(tmp_path / "missing"), image_size=16)
    (tmp_path / "train" / "cat").mkdir(parents=True)
    with pytest.raises(DatasetError, match="val"):
        load_data("imagefolder", root=str(tmp_path), image_size=16)
    write_image_folder(tmp_path / "mismatch")
    (tmp_path / "mismatch" / "val" / "dog").rename(tmp_path / "mismatch" / "val" / "wolf")
    with pytest.raises(DatasetError) as err:
        load_data("imagefolder", root=str(tmp_path / "mismatch"), image_size=16)
    assert str(tmp_path / "mismatch" / "train") in str(err.value)
    assert str(tmp_path / "mismatch" / "val") in str(err.value)
