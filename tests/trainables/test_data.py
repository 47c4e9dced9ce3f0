"""Tests for trainables.data: every dataset format, written in its real on-disk format into
tmp_path, plus sharded batching. No network; the whole file runs in well under 30 s on 2 cores.

torchvision verifies the md5 of the official CIFAR / STL-10 files. Our tiny stand-in files
cannot match those checksums, so the CIFAR/STL tests monkeypatch the module-level
``check_integrity`` function that torchvision's cifar.py / stl10.py imported (it backs both the
datasets' ``_check_integrity`` and CIFAR's metadata check) with an "is it a file" check. That
skips only the checksum, not any loading code: the files are still parsed by torchvision.
"""

from __future__ import annotations

import io
import json
import os
import pickle

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from trainables import data as D
from trainables.data import (DATASETS, DataBundle, DatasetError, ImageFileDataset,
                             ParquetImageDataset, TensorImageDataset, iterate_batches, load_data,
                             num_batches)

SMALL_PATCHES = {"train_per_class": 6, "test_per_class": 3}


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


def write_cifar10(root, per_batch: int = 3) -> tuple[np.ndarray, list[int], np.ndarray, list[int]]:
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
    train_x, train_y, test_x, test_y = write_cifar10(tmp_path)
    bundle = load_data("cifar10", root=str(tmp_path), image_size=32)
    assert isinstance(bundle.pretrain, TensorImageDataset)
    assert bundle.pretrain is bundle.memory
    assert bundle.classes == [f"c{i}" for i in range(10)] and bundle.image_size == 32
    assert torch.equal(bundle.memory.images, torch.from_numpy(train_x).permute(0, 3, 1, 2))
    assert bundle.memory.labels.tolist() == train_y
    assert torch.equal(bundle.test.images, torch.from_numpy(test_x).permute(0, 3, 1, 2))
    assert bundle.test.labels.tolist() == test_y
    assert bundle.test.images.is_contiguous()
    # a different load size resizes (and the folder itself is accepted as root)
    small = load_data("cifar10", root=str(tmp_path / "cifar-10-batches-py"), image_size=16)
    assert small.memory.images.shape == (15, 3, 16, 16) and small.memory.images.dtype == torch.uint8


def test_cifar100_loads_official_layout(tmp_path, monkeypatch):
    _skip_md5(monkeypatch, "cifar")
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    train_x, test_x = _random_images(5, 32, 32, 3), _random_images(2, 32, 32, 4)
    _pickle(folder / "train", {"data": _cifar_rows(train_x), "fine_labels": [0, 99, 5, 5, 1],
                               "coarse_labels": [0, 1, 2, 2, 3]})
    _pickle(folder / "test", {"data": _cifar_rows(test_x), "fine_labels": [99, 0],
                              "coarse_labels": [1, 0]})
    _pickle(folder / "meta", {"fine_label_names": [f"f{i}" for i in range(100)],
                              "coarse_label_names": [f"g{i}" for i in range(20)]})
    bundle = load_data("cifar100", root=str(tmp_path), image_size=48)
    assert len(bundle.classes) == 100
    assert bundle.memory.images.shape == (5, 3, 48, 48)
    assert bundle.memory.labels.tolist() == [0, 99, 5, 5, 1]
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


def test_root_required(tmp_path):
    with pytest.raises(DatasetError, match="data.root"):
        load_data("cifar100", root=None, image_size=32)


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
    train = rng.integers(0, 256, (4, 3, 96, 96), dtype=np.uint8)
    train[0, :, :10, :] = 255  # a bright band at the TOP rows: catches a row/column mix-up
    train[0, :, 10:, :] = 0
    test = rng.integers(0, 256, (3, 3, 96, 96), dtype=np.uint8)
    unlabeled = rng.integers(0, 256, (6, 3, 96, 96), dtype=np.uint8)
    _stl_write_images(folder / "train_X.bin", train)
    _stl_write_images(folder / "test_X.bin", test)
    _stl_write_images(folder / "unlabeled_X.bin", unlabeled)
    np.array([1, 2, 10, 3], dtype=np.uint8).tofile(folder / "train_y.bin")  # 1-based
    np.array([10, 1, 5], dtype=np.uint8).tofile(folder / "test_y.bin")
    names = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    (folder / "class_names.txt").write_text("\n".join(names) + "\n")
    (folder / "fold_indices.txt").write_text("0 1\n2 3\n")

    bundle = load_data("stl10", root=str(tmp_path), image_size=96)
    assert bundle.classes == names
    assert len(bundle.pretrain) == 4 + 6 and len(bundle.memory) == 4 and len(bundle.test) == 3
    assert torch.equal(bundle.memory.images, torch.from_numpy(train))
    assert torch.equal(bundle.pretrain.images[4:], torch.from_numpy(unlabeled))
    assert torch.equal(bundle.test.images, torch.from_numpy(test))
    assert bundle.memory.labels.tolist() == [0, 1, 9, 2]
    assert bundle.test.labels.tolist() == [9, 0, 4]
    assert bundle.pretrain.labels[4:].eq(-1).all()

    small = load_data("stl10", root=str(tmp_path), image_size=32)
    assert small.pretrain.images.shape == (10, 3, 32, 32)
    band = small.memory.images[0].float()
    assert band[:, :3].mean() > 200 and band[:, 5:].mean() < 10


def test_stl10_missing(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_data("stl10", root=str(tmp_path), image_size=32)
    assert str(tmp_path / "stl10_binary") in str(err.value)
    assert "unlabeled_X.bin" in str(err.value)


# ------------------------------------------------------------------------------------------------
# ImageFolder
# ------------------------------------------------------------------------------------------------


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


# ------------------------------------------------------------------------------------------------
# Parquet
# ------------------------------------------------------------------------------------------------


def _encoded(arr: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def test_parquet_two_shards_with_classes(tmp_path):
    images = torch.from_numpy(_random_images(10, 20, 20, 8)).permute(0, 3, 1, 2)
    labels = torch.tensor([0, 1, 2] * 3 + [0])
    paths = D.write_parquet_split(tmp_path / "train", images, labels, ["a", "b", "c"],
                                  rows_per_shard=6, rows_per_group=4)
    assert len(paths) == 2
    D.write_parquet_split(tmp_path / "val", images[:4], labels[:4], ["a", "b", "c"])

    bundle = load_data("parquet", root=str(tmp_path), image_size=20)
    assert isinstance(bundle.pretrain, TensorImageDataset)  # small: in memory
    assert bundle.classes == ["a", "b", "c"]
    assert torch.equal(bundle.memory.images, images)  # PNG is lossless, order kept across shards
    assert torch.equal(bundle.memory.labels, labels)
    assert len(bundle.test) == 4

    streaming = load_data("parquet", root=str(tmp_path), image_size=12, in_memory=False)
    assert isinstance(streaming.pretrain, ParquetImageDataset)
    resized = D.resize_uint8(images, 12)
    for i in (9, 0, 5, 6, 3):  # crosses shards and row groups, out of order
        image, label = streaming.pretrain[i]
        assert torch.equal(image, resized[i]) and label == labels[i]


def test_parquet_without_class_names_and_jpeg(tmp_path):
    arrs = _random_images(4, 10, 30, 9)
    for split, rows in (("train", [0, 1, 2]), ("test", [3])):
        (tmp_path / split).mkdir()
        table = pa.table({"image": [_encoded(arrs[i], "JPEG") for i in rows],
                          "label": pa.array([7, 3, 7, 3][: len(rows)] if split == "train" else [3],
                                            pa.int64())})
        pq.write_table(table, tmp_path / split / "shard.parquet")
    bundle = load_data("parquet", root=str(tmp_path), image_size=16)
    assert bundle.classes == ["3", "7"]  # sorted unique labels; labels become their index
    assert bundle.memory.labels.tolist() == [1, 0, 1]
    assert bundle.memory.images.shape == (3, 3, 16, 16)


def test_parquet_errors(tmp_path):
    (tmp_path / "train").mkdir()
    bad = tmp_path / "train" / "shard.parquet"
    pq.write_table(pa.table({"img": [b"x"], "label": [0]}), bad)
    D.write_parquet_split(tmp_path / "test", torch.zeros(1, 3, 4, 4, dtype=torch.uint8), [0])
    with pytest.raises(DatasetError) as err:
        load_data("parquet", root=str(tmp_path), image_size=8)
    assert str(bad) in str(err.value) and "'image'" in str(err.value)

    with pytest.raises(DatasetError, match=str(tmp_path / "none")):
        load_data("parquet", root=str(tmp_path / "none"), image_size=8)
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(DatasetError, match=str(tmp_path / "empty" / "train")):
        load_data("parquet", root=str(tmp_path / "empty"), image_size=8)

    # undecodable bytes: the error names the shard and row
    (tmp_path / "junk" / "train").mkdir(parents=True)
    D.write_parquet_split(tmp_path / "junk" / "train", [b"junk"], [0])
    D.write_parquet_split(tmp_path / "junk" / "test", [b"junk"], [0])
    with pytest.raises(DatasetError, match="part-00000.parquet"):
        load_data("parquet", root=str(tmp_path / "junk"), image_size=8)


# ------------------------------------------------------------------------------------------------
# photo_patches
# ------------------------------------------------------------------------------------------------


def test_photo_patches_build_shapes_and_determinism():
    a = D.build_photo_patches(16, SMALL_PATCHES)
    assert a.train.images.shape == (16 * 6, 3, 16, 16)
    assert a.test.images.shape == (16 * 3, 3, 16, 16)
    assert a.train.classes == list(D.PHOTO_PATCH_CLASSES) and len(a.train.classes) == 16
    assert torch.equal(a.train.labels, torch.arange(16).repeat_interleave(6))
    assert a.train.images.float().std() > 20  # real image content, not blank
    b = D.build_photo_patches(16, SMALL_PATCHES)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.images, b.test.images)
    c = D.build_photo_patches(16, {**SMALL_PATCHES, "seed": 1})
    assert not torch.equal(a.train.images, c.train.images)
    # a grayscale photo (camera) comes out with three equal channels
    cam = a.train.images[a.train.labels == D.PHOTO_PATCH_CLASSES.index("camera")]
    assert torch.equal(cam[:, 0], cam[:, 1]) and torch.equal(cam[:, 1], cam[:, 2])


def test_photo_patches_train_and_test_regions_share_no_pixel():
    scale = (0.5, 1.0)
    built = D.build_photo_patches(8, {"train_per_class": 40, "test_per_class": 40, "scale": scale})
    for c, name in enumerate(D.PHOTO_PATCH_CLASSES):
        region = built.regions[name]
        h, w = region["size"]
        masks = {}
        for split in ("train", "test"):
            left, top, right, bottom = region[split]
            assert 0 <= left < right <= w and 0 <= top < bottom <= h
            mask = np.zeros((h, w), dtype=bool)
            mask[top:bottom, left:right] = True
            masks[split] = mask
            # every patch lies inside its split's region, square, with the requested scale
            boxes = getattr(built, f"{split}_boxes")[getattr(built, split).labels == c]
            assert (boxes[:, 0] >= left).all() and (boxes[:, 2] <= right).all()
            assert (boxes[:, 1] >= top).all() and (boxes[:, 3] <= bottom).all()
            sides = boxes[:, 2] - boxes[:, 0]
            assert torch.equal(sides, boxes[:, 3] - boxes[:, 1])
            short = min(right - left, bottom - top)
            assert sides.min() >= int(scale[0] * short) and sides.max() <= short
        assert not (masks["train"] & masks["test"]).any(), name
        assert masks["train"].sum() > 2 * masks["test"].sum()


def test_photo_patches_load_data_caches_parquet(tmp_path):
    first = load_data("photo_patches", root=None, image_size=16, cache_dir=str(tmp_path),
                      photo_patches=SMALL_PATCHES)
    assert isinstance(first, DataBundle) and first.image_size == 16
    assert first.pretrain is first.memory and len(first.classes) == 16
    cache = D.photo_patches_cache_path(16, SMALL_PATCHES, tmp_path)
    shards = sorted(cache.glob("*/*.parquet"))
    assert [p.parent.name for p in shards] == ["test", "train"]
    assert not list(cache.parent.glob(".tmp-*"))  # the temporary build folder is gone
    meta = pq.ParquetFile(shards[1]).schema_arrow.metadata
    assert json.loads(meta[b"classes"]) == list(D.PHOTO_PATCH_CLASSES)
    mtimes = [p.stat().st_mtime_ns for p in shards]

    second = load_data("photo_patches", root=None, image_size=16, cache_dir=str(tmp_path),
                       photo_patches=SMALL_PATCHES)
    assert [p.stat().st_mtime_ns for p in shards] == mtimes  # reused, not rebuilt
    assert torch.equal(first.memory.images, second.memory.images)
    assert torch.equal(first.test.labels, second.test.labels)
    # other parameters -> another cache folder
    assert D.photo_patches_cache_path(16, {**SMALL_PATCHES, "seed": 3}, tmp_path) != cache
    assert D.photo_patches_cache_path(32, SMALL_PATCHES, tmp_path) != cache


def test_photo_patches_streaming_from_cache(tmp_path):
    bundle = load_data("photo_patches", root=None, image_size=8, cache_dir=str(tmp_path),
                       photo_patches={**SMALL_PATCHES, "seed": None}, in_memory=False)
    assert isinstance(bundle.test, ParquetImageDataset) and len(bundle.test) == 16 * 3
    reference = D.build_photo_patches(8, SMALL_PATCHES)  # seed None = the default seed
    assert torch.equal(bundle.test[5][0], reference.test.images[5])


def test_photo_patches_default_cache_dir_and_bad_options(tmp_path, monkeypatch):
    monkeypatch.setenv("LEOCLR_CACHE", str(tmp_path / "env"))
    assert D.default_cache_dir() == tmp_path / "env"
    with pytest.raises(DatasetError, match="train_per_clas"):
        load_data("photo_patches", root=None, image_size=8, photo_patches={"train_per_clas": 3})
    with pytest.raises(DatasetError, match="scale"):
        load_data("photo_patches", root=None, image_size=8, photo_patches={"scale": (0.9, 0.2)})


# ------------------------------------------------------------------------------------------------
# digits, names
# ------------------------------------------------------------------------------------------------


def test_digits():
    bundle = load_data("digits", root=None, image_size=16)
    assert bundle.classes == [str(i) for i in range(10)]
    n_train, n_test = len(bundle.memory), len(bundle.test)
    assert n_train + n_test == 1797 and abs(n_train / 1797 - 0.8) < 0.01
    assert bundle.memory.images.shape == (n_train, 3, 16, 16)
    assert bundle.memory.images.max() > 200
    again = load_data("digits", root=None, image_size=16)
    assert torch.equal(bundle.test.labels, again.test.labels)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(DatasetError) as err:
        load_data("imagenet", root="/x", image_size=32)
    assert all(name in str(err.value) for name in DATASETS)


# ------------------------------------------------------------------------------------------------
# iterate_batches / num_batches
# ------------------------------------------------------------------------------------------------


def _toy(n: int) -> TensorImageDataset:
    """Image i is filled with value i % 256 and labelled i: batches reveal which indices came."""
    images = (torch.arange(n) % 256).to(torch.uint8).view(n, 1, 1, 1).expand(n, 3, 4, 4)
    images = images.contiguous()
    return TensorImageDataset(images, torch.arange(n), ["x"])


def _epoch(ds, world: int, batch: int, *, drop_last: bool, epoch: int = 0, seed: int = 0,
           **kw) -> list[list[torch.Tensor]]:
    return [[y for _, y in iterate_batches(ds, batch, shuffle=True, seed=seed, epoch=epoch,
                                           rank=r, world_size=world, drop_last=drop_last, **kw)]
            for r in range(world)]


def test_sharding_covers_every_index_once():
    ds = _toy(48)
    per_rank = _epoch(ds, world=3, batch=5, drop_last=False)
    assert [len(b) for b in per_rank] == [4, 4, 4]
    assert num_batches(ds, 5, world_size=3, drop_last=False) == 4
    seen = torch.cat([torch.cat(b) for b in per_rank])
    assert sorted(seen.tolist()) == list(range(48))
    for images, labels in iterate_batches(ds, 5, shuffle=True, seed=0, epoch=0, drop_last=False):
        assert images.dtype == torch.uint8 and images.shape[1:] == (3, 4, 4)
        assert torch.equal(images[:, 0, 0, 0].long(), labels)


def test_sharding_drop_last_equal_batches():
    ds = _toy(50)
    per_rank = _epoch(ds, world=4, batch=4, drop_last=True)
    assert [len(b) for b in per_rank] == [3] * 4 == [50 // (4 * 4)] * 4
    assert all(len(y) == 4 for b in per_rank for y in b)
    seen = torch.cat([torch.cat(b) for b in per_rank])
    assert len(set(seen.tolist())) == len(seen)  # disjoint across ranks
    uneven = _epoch(ds, world=4, batch=5, drop_last=False)  # 50 -> 48 -> 12 per rank
    assert [sum(len(y) for y in b) for b in uneven] == [12] * 4
    assert num_batches(ds, 5, world_size=4, drop_last=False) == 3


def test_epochs_differ_and_are_reproducible():
    ds = _toy(64)
    e0 = torch.cat(_epoch(ds, 1, 8, drop_last=True, epoch=0)[0])
    e1 = torch.cat(_epoch(ds, 1, 8, drop_last=True, epoch=1)[0])
    assert not torch.equal(e0, e1) and sorted(e1.tolist()) == list(range(64))
    assert torch.equal(e0, torch.cat(_epoch(ds, 1, 8, drop_last=True, epoch=0)[0]))
    assert not torch.equal(e0, torch.cat(_epoch(ds, 1, 8, drop_last=True, epoch=0, seed=1)[0]))
    ordered = [y for _, y in iterate_batches(ds, 10, shuffle=False, seed=0, epoch=3,
                                             drop_last=False)]
    assert torch.equal(torch.cat(ordered), torch.arange(64)) and len(ordered[-1]) == 4


class _Streaming(torch.utils.data.Dataset):
    """Not a TensorImageDataset: forces the DataLoader path."""

    def __init__(self, inner: TensorImageDataset):
        self.inner = inner

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, i):
        return self.inner[i]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_dataloader_path_matches_tensor_path(num_workers):
    ds = _toy(40)
    streaming = _Streaming(ds)
    for epoch in (0, 1):  # the second epoch reuses the (persistent) loader with new indices
        for rank in (0, 1):
            kw = dict(shuffle=True, seed=4, epoch=epoch, rank=rank, world_size=2, drop_last=False)
            expected = list(iterate_batches(ds, 6, **kw))
            got = list(iterate_batches(streaming, 6, num_workers=num_workers, **kw))
            assert len(got) == len(expected) == 4
            for (xe, ye), (xg, yg) in zip(expected, got):
                assert torch.equal(xe, xg) and torch.equal(ye, yg)
                assert xg.dtype == torch.uint8 and yg.dtype == torch.int64
    D.release_loaders(streaming)


def test_module_stays_pure_pytorch():
    """trainables must never pull in ray, optuna or mlflow."""
    import subprocess
    import sys

    code = ("import sys, trainables.data; "
            "bad = [m for m in ('ray', 'optuna', 'mlflow') if m in sys.modules]; "
            "assert not bad, bad")
    repo_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    subprocess.run([sys.executable, "-c", code], check=True, cwd=repo_root)
