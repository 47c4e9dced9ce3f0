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
    a = P.build_photo_patches(16, SMALL_PATCHES)  # val_fraction 0.1: round(0.6) = 1 val patch
    assert a.train.images.shape == (16 * 5, 3, 16, 16)
    assert a.val.images.shape == (16 * 1, 3, 16, 16)
    assert a.test.images.shape == (16 * 3, 3, 16, 16)
    assert a.train.classes == list(P.PHOTO_PATCH_CLASSES) and len(a.train.classes) == 16
    assert torch.equal(a.train.labels, torch.arange(16).repeat_interleave(5))
    assert torch.equal(a.val.labels, torch.arange(16))
    assert a.train.images.float().std() > 20  # real image content, not blank
    b = P.build_photo_patches(16, SMALL_PATCHES)
    assert all(torch.equal(getattr(a, s).images, getattr(b, s).images) for s in P.SPLITS)
    c = P.build_photo_patches(16, {**SMALL_PATCHES, "seed": 1})
    assert not torch.equal(a.train.images, c.train.images)
    # a grayscale photo (camera) comes out with three equal channels
    cam = a.train.images[a.train.labels == P.PHOTO_PATCH_CLASSES.index("camera")]
    assert torch.equal(cam[:, 0], cam[:, 1]) and torch.equal(cam[:, 1], cam[:, 2])


@pytest.mark.parametrize("recipe", [{"scale": (0.5, 1.0)}, {"side_px": (48, 200)}])
def test_photo_patches_train_val_and_test_regions_share_no_pixel(recipe):
    built = P.build_photo_patches(8, {"train_per_class": 40, "test_per_class": 40, **recipe},
                                  val_fraction=0.25)
    for c, name in enumerate(P.PHOTO_PATCH_CLASSES):
        region = built.regions[name]
        h, w = region["size"]
        masks = {}
        for split in P.SPLITS:
            left, top, right, bottom = region[split]
            assert 0 <= left < right <= w and 0 <= top < bottom <= h
            mask = np.zeros((h, w), dtype=bool)
            mask[top:bottom, left:right] = True
            masks[split] = mask
            # every patch lies inside its split's region, square, with the requested size
            boxes = getattr(built, f"{split}_boxes")[getattr(built, split).labels == c]
            assert len(boxes) == {"train": 30, "val": 10, "test": 40}[split]
            assert (boxes[:, 0] >= left).all() and (boxes[:, 2] <= right).all()
            assert (boxes[:, 1] >= top).all() and (boxes[:, 3] <= bottom).all()
            sides = boxes[:, 2] - boxes[:, 0]
            assert torch.equal(sides, boxes[:, 3] - boxes[:, 1])
            short = min(right - left, bottom - top)
            if "scale" in recipe:
                assert sides.min() >= int(recipe["scale"][0] * short) and sides.max() <= short
            else:  # source pixels, clipped to the region's short side
                lo, hi = recipe["side_px"]
                assert sides.min() >= min(lo, short) and sides.max() <= min(hi, short)
        for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
            assert not (masks[a] & masks[b]).any(), (name, a, b)
        assert masks["train"].sum() > 2 * masks["test"].sum()


def test_photo_patch_regions_by_hand():
    # 512 wide: cut = 384, strip = int(0.2 * 384) = 76, gap 4
    assert P.photo_patch_regions(300, 512) == {"train": (0, 0, 304, 300), "val": (308, 0, 384, 300),
                                               "test": (388, 0, 512, 300)}
    # portrait: the same along the height
    assert P.photo_patch_regions(512, 300) == {"train": (0, 0, 300, 304), "val": (0, 308, 300, 384),
                                               "test": (0, 388, 300, 512)}


def test_default_recipe_and_counts():
    opts = P.resolve_photo_patches_options(None)
    assert opts["side_px"] == (64.0, 160.0) and opts["scale"] is None
    assert (opts["train_per_class"], opts["test_per_class"]) == (144, 32)
    fraction = P.resolve_photo_patches_options({"scale": [0.25, 0.9]})
    assert fraction["scale"] == (0.25, 0.9) and fraction["side_px"] is None
    # 144 per class at val_fraction 0.1: 14 validation patches, 130 training patches
    assert P._split_counts(opts, 0.1) == {"train": 130, "val": 14, "test": 32}
    assert P.photo_patches_class_counts({"train_per_class": 8}) == {n: 8 for n in P.PHOTO_PATCH_CLASSES}


def test_side_px_and_scale_together_are_refused():
    with pytest.raises(DatasetError) as err:
        P.resolve_photo_patches_options({"side_px": [64, 160], "scale": [0.2, 0.5]})
    assert err.value.key == "photo_patches" and "side_px" in str(err.value) and "scale" in str(err.value)
    assert str(err.value).startswith("photo_patches: side_px and scale are both given")
    with pytest.raises(DatasetError) as err:
        P.resolve_photo_patches_options({"side_px": [160, 64]})
    assert (err.value.key, err.value.value) == ("photo_patches.side_px", [160, 64])
    assert err.value.reason == "must satisfy 1 <= min <= max (source pixels), got [160, 64]"


def test_val_fraction_leaving_no_patch_is_refused_naming_the_class():
    with pytest.raises(DatasetError) as err:
        P.build_photo_patches(8, {"train_per_class": 4}, val_fraction=0.1)  # round(0.4) = 0
    assert (err.value.key, err.value.value) == ("val_fraction", 0.1)
    assert "class 'astronaut' has 4 training image(s)" in err.value.reason


def test_photo_patches_load_data_caches_parquet(tmp_path):
    first = load_data("photo_patches", root=None, image_size=16, cache_dir=str(tmp_path),
                      photo_patches=SMALL_PATCHES)
    assert isinstance(first, DataBundle) and first.image_size == 16
    assert first.pretrain is first.memory and len(first.classes) == 16
    assert first.splits == {"pretrain": 80, "memory": 80, "val": 16, "test": 48,
                            "val_from": "held-out strip: the last 20% of each photo's train region, "
                                        "1 patches per class"}
    cache = P.photo_patches_cache_path(16, SMALL_PATCHES, tmp_path)
    shards = sorted(cache.glob("*/*.parquet"))
    assert [p.parent.name for p in shards] == ["test", "train", "val"]
    assert not list(cache.parent.glob(".tmp-*"))  # the temporary build folder is gone
    meta = pq.ParquetFile(shards[1]).schema_arrow.metadata
    assert json.loads(meta[b"classes"]) == list(P.PHOTO_PATCH_CLASSES)
    mtimes = [p.stat().st_mtime_ns for p in shards]

    second = load_data("photo_patches", root=None, image_size=16, cache_dir=str(tmp_path),
                       photo_patches=SMALL_PATCHES)
    assert [p.stat().st_mtime_ns for p in shards] == mtimes  # reused, not rebuilt
    assert torch.equal(first.memory.images, second.memory.images)
    assert torch.equal(first.test.labels, second.test.labels)
    assert torch.equal(first.val.images, second.val.images)
    assert second.splits == first.splits
    # other parameters -> another cache folder (the val fraction as the counts it gives)
    assert P.photo_patches_cache_path(16, {**SMALL_PATCHES, "seed": 3}, tmp_path) != cache
    assert P.photo_patches_cache_path(32, SMALL_PATCHES, tmp_path) != cache
    assert P.photo_patches_cache_path(16, SMALL_PATCHES, tmp_path, val_fraction=0.3) != cache
    assert P.photo_patches_cache_path(16, SMALL_PATCHES, tmp_path, val_fraction=0.12) == cache


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
