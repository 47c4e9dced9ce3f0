"""Parquet shards (trainables.data.parquet): writer, reader, in memory and streaming, errors."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from trainables.data import (DatasetError, ParquetImageDataset, TensorImageDataset, load_data,
                             resize_uint8, write_parquet_split)


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

    bundle = load_data("parquet", root=str(tmp_path), image_size=20)
    assert isinstance(bundle.pretrain, TensorImageDataset)  # small: in memory
    assert bundle.classes == ["a", "b", "c"]
    assert torch.equal(bundle.memory.images, images)  # PNG is lossless, order kept across shards
    assert torch.equal(bundle.memory.labels, labels)
    assert len(bundle.test) == 4

    streaming = load_data("parquet", root=str(tmp_path), image_size=12, in_memory=False)
    assert isinstance(streaming.pretrain, ParquetImageDataset)
    resized = resize_uint8(images, 12)
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
    write_parquet_split(tmp_path / "test", torch.zeros(1, 3, 4, 4, dtype=torch.uint8), [0])
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
    write_parquet_split(tmp_path / "junk" / "train", [b"junk"], [0])
    write_parquet_split(tmp_path / "junk" / "test", [b"junk"], [0])
    with pytest.raises(DatasetError, match="part-00000.parquet"):
        load_data("parquet", root=str(tmp_path / "junk"), image_size=8)
