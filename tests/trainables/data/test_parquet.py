"""Parquet shards (trainables.data.parquet): writer, reader, in memory and streaming, errors."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from trainables.data import (DatasetError, IndexedSubset, ParquetImageDataset, TensorImageDataset,
                             carve_validation, dataset_class_counts, load_data, resize_uint8,
                             write_parquet_split)


def _random_images(n: int, h: int, w: int, seed: int) -> np.ndarray:
    """uint8 n x h x w x 3 (HWC, as image files hold them)."""
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def _encoded(arr: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def test_parquet_two_shards_with_classes(tmp_path):
    images = torch.from_numpy(_random_images(10, 20, 20, 8)).permute(0, 3, 1, 2)
    labels = torch.tensor([0, 1, 2] * 3 + [0])
    paths = write_parquet_split(tmp_path / "train", images, labels, ["a", "b", "c"],
                                  rows_per_shard=6, rows_per_group=4)
    assert len(paths) == 2
    write_parquet_split(tmp_path / "val", images[:4], labels[:4], ["a", "b", "c"])

    # train/ + val/: test = val/, validation carved from train/ (1 of each class at 0.34)
    bundle = load_data("parquet", root=str(tmp_path), image_size=20, val_fraction=0.34)
    assert isinstance(bundle.pretrain, TensorImageDataset)  # small: in memory
    assert bundle.classes == ["a", "b", "c"]
    carve = carve_validation(labels, ["a", "b", "c"], 0.34, 0)
    assert carve.val.size == 3 and sorted(labels[carve.val].tolist()) == [0, 1, 2]
    # PNG is lossless, order kept across shards
    assert torch.equal(bundle.memory.images, images[carve.pretrain])
    assert torch.equal(bundle.memory.labels, labels[carve.pretrain])
    assert torch.equal(bundle.val.images, images[carve.val])
    assert len(bundle.test) == 4 and bundle.memory is bundle.pretrain
    assert dataset_class_counts("parquet", root=str(tmp_path)) == {"a": 4, "b": 3, "c": 3}

    streaming = load_data("parquet", root=str(tmp_path), image_size=12, in_memory=False,
                          val_fraction=0.34)
    assert isinstance(streaming.pretrain, IndexedSubset)
    assert isinstance(streaming.pretrain.dataset, ParquetImageDataset)
    resized = resize_uint8(images, 12)
    for i in (6, 0, 5, 3):  # crosses shards and row groups, out of order
        image, label = streaming.pretrain[i]
        row = int(carve.pretrain[i])
        assert torch.equal(image, resized[row]) and label == labels[row]
    assert torch.equal(streaming.pretrain.labels, labels[carve.pretrain])


def test_parquet_train_val_test_folders_and_unlabelled_rows(tmp_path):
    """val/ + test/ given: val/ is the validation split; label -1 rows only pre-train."""
    images = torch.from_numpy(_random_images(8, 8, 8, 3)).permute(0, 3, 1, 2)
    train_y = torch.tensor([0, -1, 1, 0, -1, 1, 0, 1])
    write_parquet_split(tmp_path / "train", images, train_y, ["a", "b"])
    write_parquet_split(tmp_path / "val", images[:2], [1, 0], ["a", "b"])
    write_parquet_split(tmp_path / "test", images[:3], [0, 1, 1], ["a", "b"])
    bundle = load_data("parquet", root=str(tmp_path), image_size=8)
    assert len(bundle.pretrain) == 8 and bundle.val.labels.tolist() == [1, 0]
    assert bundle.memory.labels.tolist() == [0, 1, 0, 1, 0, 1]  # labelled rows only
    assert bundle.splits["val_from"] == "val/ folder" and len(bundle.test) == 3
    assert dataset_class_counts("parquet", root=str(tmp_path)) is None

    # carved: unlabelled rows stay in pretrain, never in val or memory
    (tmp_path / "val" / "part-00000.parquet").unlink()
    (tmp_path / "val").rmdir()
    carved = load_data("parquet", root=str(tmp_path), image_size=8, val_fraction=0.34)
    assert sorted(carved.val.labels.tolist()) == [0, 1]
    assert (carved.memory.labels >= 0).all() and len(carved.memory) == 4
    assert len(carved.pretrain) == 6 and int((carved.pretrain.labels == -1).sum()) == 2


def test_parquet_without_labels_holds_out_an_unlabelled_sample(tmp_path):
    images = torch.from_numpy(_random_images(10, 8, 8, 4)).permute(0, 3, 1, 2)
    write_parquet_split(tmp_path / "train", images, [-1] * 10)
    write_parquet_split(tmp_path / "test", images[:2], [-1, -1])
    bundle = load_data("parquet", root=str(tmp_path), image_size=8, val_fraction=0.2)
    assert bundle.classes == [] and len(bundle.memory) == 0
    assert len(bundle.val) == 2 and len(bundle.pretrain) == 8  # round(0.2 * 10) held out
    assert bundle.val.labels.tolist() == [-1, -1]
    with pytest.raises(DatasetError, match=r"class '\(unlabelled images\)' has 10"):
        load_data("parquet", root=str(tmp_path), image_size=8, val_fraction=0.01)


def test_parquet_without_class_names_and_jpeg(tmp_path):
    arrs = _random_images(4, 10, 30, 9)
    for split, rows in (("train", [0, 1, 2, 3]), ("test", [3])):
        (tmp_path / split).mkdir()
        table = pa.table({"image": [_encoded(arrs[i], "JPEG") for i in rows],
                          "label": pa.array([7, 3, 7, 3] if split == "train" else [3], pa.int64())})
        pq.write_table(table, tmp_path / split / "shard.parquet")
    bundle = load_data("parquet", root=str(tmp_path), image_size=16, val_fraction=0.5)
    assert bundle.classes == ["3", "7"]  # sorted unique labels; labels become their index
    assert sorted(bundle.memory.labels.tolist()) == sorted(bundle.val.labels.tolist()) == [0, 1]
    assert bundle.memory.images.shape[1:] == (3, 16, 16)


def test_parquet_errors(tmp_path):
    (tmp_path / "train").mkdir()
    bad = tmp_path / "train" / "shard.parquet"
    pq.write_table(pa.table({"img": [b"x"], "label": [0]}), bad)
    write_parquet_split(tmp_path / "test", torch.zeros(1, 3, 4, 4, dtype=torch.uint8), [0])
    with pytest.raises(DatasetError) as err:
        load_data("parquet", root=str(tmp_path), image_size=8)
    assert str(bad) in str(err.value) and "'image'" in str(err.value)

    with pytest.raises(DatasetError, match=str(tmp_path / "none")):
        load_data("parquet", root=str(tmp_path / "none"), image_size=8)
    (tmp_path / "empty" / "train").mkdir(parents=True)
    (tmp_path / "empty" / "test").mkdir(parents=True)
    with pytest.raises(DatasetError, match=str(tmp_path / "empty" / "train")):
        load_data("parquet", root=str(tmp_path / "empty"), image_size=8)

    # undecodable bytes: the error names the shard and row
    (tmp_path / "junk" / "train").mkdir(parents=True)
    write_parquet_split(tmp_path / "junk" / "train", [b"junk"] * 2, [0, 0])
    write_parquet_split(tmp_path / "junk" / "test", [b"junk"], [0])
    with pytest.raises(DatasetError, match="part-00000.parquet"):
        load_data("parquet", root=str(tmp_path / "junk"), image_size=8)
