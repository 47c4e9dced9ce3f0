"""ImageFolder (trainables.data.imagefolder): the ImageNet layout, streaming and in memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from trainables.data import DatasetError, ImageFileDataset, TensorImageDataset, iterate_batches, load_data


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
    bundle = load_data("imagefolder", root=str(tmp_path), image_size=24)
    assert isinstance(bundle.pretrain, ImageFileDataset)
    assert bundle.classes == ["cat", "dog"]
    assert len(bundle.pretrain) == 6 and len(bundle.test) == 6
    image, label = bundle.pretrain[1]
    assert image.shape == (3, 24, 24) and image.dtype == torch.uint8 and label == 0
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])  # gray -> 3 ch
    # squashed, not cropped: equals PIL's antialiased bilinear resize of the whole image
    path = bundle.pretrain.samples[0][0]
    expected = np.array(Image.open(path).convert("RGB").resize((24, 24), Image.BILINEAR))
    assert torch.equal(bundle.pretrain[0][0], torch.from_numpy(expected).permute(2, 0, 1))

    mem = load_data("imagefolder", root=str(tmp_path), image_size=24, in_memory=True)
    assert isinstance(mem.pretrain, TensorImageDataset)
    assert mem.pretrain.images.shape == (6, 3, 24, 24)
    assert mem.pretrain.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert all(torch.equal(mem.test[i][0], bundle.test[i][0]) for i in range(6))


def test_imagefolder_accepts_test_dir(tmp_path):
    write_image_folder(tmp_path, splits=("train", "test"))
    assert len(load_data("imagefolder", root=str(tmp_path), image_size=8).test) == 6


def test_imagefolder_corrupt_file_names_it(tmp_path):
    write_image_folder(tmp_path)
    bad = tmp_path / "train" / "dog" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 this is not a jpeg")
    bundle = load_data("imagefolder", root=str(tmp_path), image_size=16)
    with pytest.raises(DatasetError, match="broken.jpg") as err:
        list(iterate_batches(bundle.pretrain, 4, shuffle=False, seed=0, epoch=0, drop_last=False))
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
