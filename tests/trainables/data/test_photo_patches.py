"""photo_patches (trainables.data.photo_patches): build, regions, cache, options."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from trainables.data import DataBundle, DatasetError, ParquetImageDataset, load_data
from trainables.data import photo_patches as P

SMALL_PATCHES = {"train_per_class": 6, "test_per_class": 3}


def test_photo_patches_build_shapes_and_determinism():
    a = P.build_photo_patches(16, SMALL_PATCHES)
    assert a.train.images.shape == (16 * 6, 3, 16, 16)
    assert a.test.images.shape == (16 * 3, 3, 16, 16)
    assert a.train.classes == list(P.PHOTO_PATCH_CLASSES) and len(a.train.classes) == 16
    assert torch.equal(a.train.labels, torch.arange(16).repeat_interleave(6))
    assert a.train.images.float().std() > 20  # real image content, not blank
    b = P.build_photo_patches(16, SMALL_PATCHES)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.images, b.test.images)
    c = P.build_photo_patches(16, {**SMALL_PATCHES, "seed": 1})
    assert not torch.equal(a.train.images, c.train.images)
    # a grayscale photo (camera) comes out with three equal channels
    cam = a.train.images[a.train.labels == P.PHOTO_PATCH_CLASSES.index("camera")]
    assert torch.equal(cam[:, 0], cam[:, 1]) and torch.equal(cam[:, 1], cam[:, 2])


def test_photo_patches_train_and_test_regions_share_no_pixel():
    scale = (0.5, 1.0)
    built = P.build_photo_patches(8, {"train_per_class": 40, "test_per_class": 40, "scale": scale})
    for c, name in enumerate(P.PHOTO_PATCH_CLASSES):
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
    cache = P.photo_patches_cache_path(16, SMALL_PATCHES, tmp_path)
    shards = sorted(cache.glob("*/*.parquet"))
    assert [p.parent.name for p in shards] == ["test", "train"]
    assert not list(cache.parent.glob(".tmp-*"))  # the temporary build folder is gone
    meta = pq.ParquetFile(shards[1]).schema_arrow.metadata
    assert json.loads(meta[b"classes"]) == list(P.PHOTO_PATCH_CLASSES)
    mtimes = [p.stat().st_mtime_ns for p in shards]

    second = load_data("photo_patches", root=None, image_size=16, cache_dir=str(tmp_path),
                       photo_patches=SMALL_PATCHES)
    assert [p.stat().st_mtime_ns for p in shards] == mtimes  # reused, not rebuilt
    assert torch.equal(first.memory.images, second.memory.images)
    assert torch.equal(first.test.labels, second.test.labels)
    # other parameters -> another cache folder
    assert P.photo_patches_cache_path(16, {**SMALL_PATCHES, "seed": 3}, tmp_path) != cache
    assert P.photo_patches_cache_path(32, SMALL_PATCHES, tmp_path) != cache


def test_photo_patches_streaming_from_cache(tmp_path):
    bundle = load_data("photo_patches", root=None, image_size=8, cache_dir=str(tmp_path),
                       photo_patches={**SMALL_PATCHES, "seed": None}, in_memory=False)
    assert isinstance(bundle.test, ParquetImageDataset) and len(bundle.test) == 16 * 3
    reference = P.build_photo_patches(8, SMALL_PATCHES)  # seed None = the default seed
    assert torch.equal(bundle.test[5][0], reference.test.images[5])


def test_photo_patches_default_cache_dir_and_bad_options(tmp_path, monkeypatch):
    monkeypatch.setenv("LEOCLR_CACHE", str(tmp_path / "env"))
    assert P.default_cache_dir() == tmp_path / "env"
    with pytest.raises(DatasetError, match="train_per_clas"):
        load_data("photo_patches", root=None, image_size=8, photo_patches={"train_per_clas": 3})
    with pytest.raises(DatasetError, match="scale"):
        load_data("photo_patches", root=None, image_size=8, photo_patches={"scale": (0.9, 0.2)})


def test_bad_options_carry_the_option_as_key():
    with pytest.raises(DatasetError) as err:
        P.resolve_photo_patches_options({"train_per_clas": 3})
    assert err.value.key == "photo_patches" and err.value.reason.startswith("unknown key(s) ['train_per_clas']")
    assert str(err.value).startswith("photo_patches: unknown key(s)")
    with pytest.raises(DatasetError) as err:
        P.resolve_photo_patches_options({"scale": (0.9, 0.2)})
    assert (err.value.key, err.value.value) == ("photo_patches.scale", (0.9, 0.2))
    assert err.value.reason == "must satisfy 0 < min <= max <= 1, got [0.9, 0.2]"
    with pytest.raises(DatasetError) as err:
        P.resolve_photo_patches_options({"seed": 1.5})
    assert (err.value.key, err.value.value) == ("photo_patches.seed", 1.5)
