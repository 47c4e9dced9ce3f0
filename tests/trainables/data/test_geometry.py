"""True geometry for file-backed data (trainables.data.geometry): views cut in the loader workers
from the image as it is, on an ImageFolder of non-square JPEGs made from scikit-image photos."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF2
from PIL import Image
from torchvision.transforms import InterpolationMode

from trainables.data import ImageFileDataset, TensorImageDataset, load_data
from trainables.data.geometry import (
    GeometricViews,
    GeometryConfig,
    crop_boxes,
    cut_views,
    eval_resize_size,
    geometric_views,
    iterate_view_batches,
)

@pytest.fixture(scope="module")
def photos(tmp_path_factory, photo_folder) -> ImageFileDataset:
    root = tmp_path_factory.mktemp("photos")
    photo_folder(root)
    return load_data("imagefolder", root=str(root), image_size=32, in_memory=False).pretrain


def test_full_image_keeps_the_aspect_ratio(photos):
    shapes = {tuple(photos.full_image(i).shape) for i in range(len(photos))}
    assert (3, 399, 532) in shapes and (3, 426, 213) in shapes
    assert photos.full_image(0).dtype == torch.uint8


def test_crops_follow_the_requested_aspect_ratio_range_in_source_pixels(photos):
    """RandomResizedCrop boxes of the image as it is: w / h in [3/4, 4/3] (up to the rounding
    of w and h), areas in scale x the image's area; a squashed image would give boxes whose
    source ratio is multiplied by W / H (1.33 or 0.5)."""
    cfg = GeometryConfig(32, ("crop", "crop"), crop_scale=(0.2, 1.0))
    for index, (width, height) in ((0, (532, 399)), (len(photos) - 1, (213, 426))):
        image = photos.full_image(index)
        assert tuple(image.shape[1:]) == (height, width)
        ratios, areas = [], []
        for epoch in range(200):
            for x0, y0, x1, y1 in crop_boxes(cfg, width, height, epoch, index):
                assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
                ratios.append((x1 - x0) / (y1 - y0))
                areas.append((x1 - x0) * (y1 - y0) / (width * height))
        log_r = np.log(ratios)
        slack = 2.0 / min(width, height) / 0.2  # rounding of w and h on the smallest crops
        assert log_r.min() >= math.log(3 / 4) - slack and log_r.max() <= math.log(4 / 3) + slack
        # the range is used, not squeezed: both ends and the middle are drawn
        assert log_r.min() < math.log(3 / 4) + 0.05 and log_r.max() > math.log(4 / 3) - 0.05
        assert 0.19 <= min(areas) and max(areas) <= 1.0
    # the pixels are torchvision's resized_crop of those boxes
    views = cut_views(image, cfg, 7, index)
    for view, (x0, y0, x1, y1) in zip(views, crop_boxes(cfg, width, height, 7, index)):
        expected = TF2.resized_crop(image, y0, x0, y1 - y0, x1 - x0, [32, 32], InterpolationMode.BILINEAR,
                                    antialias=True)
        assert torch.equal(view, expected)


def test_original_view_contains_the_whole_image(tmp_path):
    """A 4:3 photo with four coloured corner blocks: the original view is Resize((R, R)) of the
    whole image (nothing cut off), so all four corners are in its corners."""
    arr = np.full((300, 400, 3), 128, dtype=np.uint8)
    corners = {(0, 0): (255, 0, 0), (0, 1): (0, 255, 0), (1, 0): (0, 0, 255), (1, 1): (255, 255, 255)}
    for (r, c), colour in corners.items():
        arr[r * 240:r * 240 + 60, c * 320:c * 320 + 80] = colour
    for split in ("train", "val", "test"):  # val/ next to test/: nothing is carved from train/
        (tmp_path / split / "a").mkdir(parents=True)
        Image.fromarray(arr).save(tmp_path / split / "a" / "x.png")
    ds = load_data("imagefolder", root=str(tmp_path), image_size=16, in_memory=False).pretrain
    image = ds.full_image(0)
    original = cut_views(image, GeometryConfig(40, ("original",)), 0, 0)[0]
    assert torch.equal(original, TF2.resize(image, [40, 40], antialias=True))
    for (r, c), colour in corners.items():
        assert original[:, -1 if r else 0, -1 if c else 0].tolist() == list(colour)


def test_eval_view_is_the_centre_crop_of_the_shorter_side_resize(photos):
    cfg = GeometryConfig(28, ("eval",))
    target = eval_resize_size(28)
    assert (eval_resize_size(224), eval_resize_size(96), target) == (256, 110, 32)
    for index in (0, len(photos) - 1):
        image = photos.full_image(index)
        resized = TF2.resize(image, target, InterpolationMode.BICUBIC, antialias=True)
        assert min(resized.shape[1:]) == target  # the shorter side; the aspect ratio is kept
        assert resized.shape[2] / resized.shape[1] == pytest.approx(image.shape[2] / image.shape[1], rel=0.05)
        view = cut_views(image, cfg, 0, index)[0]
        assert torch.equal(view, TF2.center_crop(resized, [28, 28]))
        (x0, y0, x1, y1), = crop_boxes(cfg, image.shape[2], image.shape[1], 0, index)
        assert torch.equal(view, resized[:, y0:y1, x0:x1])
        assert abs((x0 + x1) / 2 - resized.shape[2] / 2) <= 0.5 and abs((y0 + y1) / 2 - resized.shape[1] / 2) <= 0.5


def test_random_crop_test_view_crops_the_squashed_square(photos):
    """Table 7's random crop: resize to T x T (T = round(R * 256 / 224)), then RandomResizedCrop."""
    cfg = GeometryConfig(28, ("random_crop",), crop_scale=(0.08, 1.0))
    image = photos.full_image(0)
    square = TF2.resize(image, [32, 32], antialias=True)
    (x0, y0, x1, y1), = crop_boxes(cfg, image.shape[2], image.shape[1], 3, 0)
    assert 0 <= x0 < x1 <= 32 and 0 <= y0 < y1 <= 32
    expected = TF2.resized_crop(square, y0, x0, y1 - y0, x1 - x0, [28, 28], antialias=True)
    assert torch.equal(cut_views(image, cfg, 3, 0)[0], expected)


def test_views_depend_on_seed_epoch_and_index_only(photos):
    cfg = GeometryConfig(24, ("original", "crop", "crop"), seed=5)
    views = GeometricViews(photos, cfg)
    assert views[(2, 1)][0].shape == (3, 3, 24, 24)
    assert torch.equal(views[(2, 1)][0], views[(2, 1)][0])
    assert not torch.equal(views[(2, 1)][0][1:], views[(2, 2)][0][1:])  # another epoch, other crops
    assert torch.equal(views[(2, 1)][0][0], views[(2, 2)][0][0])  # the original has no randomness
    other_seed = GeometricViews(photos, GeometryConfig(24, ("original", "crop", "crop"), seed=6))
    assert not torch.equal(views[(2, 1)][0][1:], other_seed[(2, 1)][0][1:])

    def epoch(workers: int, ep: int):
        batches = list(iterate_view_batches(views, 4, shuffle=True, seed=0, epoch=ep, drop_last=False,
                                            num_workers=workers))
        return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])

    x0, y0 = epoch(0, 1)
    x2, y2 = epoch(2, 1)  # two worker processes: the same views
    assert x0.shape == (len(photos), 3, 3, 24, 24) and x0.dtype == torch.uint8
    assert torch.equal(x0, x2) and torch.equal(y0, y2)
    assert not torch.equal(epoch(2, 2)[0], x0)


def test_in_memory_sets_keep_the_device_path(photos):
    mem = TensorImageDataset(torch.zeros(2, 3, 16, 16, dtype=torch.uint8), torch.zeros(2), ["a"])
    assert geometric_views(mem, GeometryConfig(16, ("crop",))) is None
    assert isinstance(geometric_views(photos, GeometryConfig(16, ("crop",))), GeometricViews)
    with pytest.raises(ValueError, match="kinds"):
        GeometryConfig(16, ("centre",))


def test_training_on_file_backed_photos_uses_worker_views(tmp_path, photo_folder):
    """One LeOCLR step on the non-square JPEGs: the loader workers cut (original, crop, crop)
    and the loop applies only the photometric stage."""
    from trainables.config import TrainConfig
    from trainables.loop import Trainer

    photo_folder(tmp_path, copies=4)
    cfg = TrainConfig.from_dict(dict(dataset="imagefolder", data_root=str(tmp_path), image_size=24,
                                     backbone="small_cnn", batch_size=8, queue_size=16, epochs=1,
                                     bn_splits=2, knn_k=3, device="cpu"))
    trainer = Trainer(cfg)
    assert trainer.worker_views is not None and trainer.worker_views.cfg.kinds == ("original", "crop", "crop")
    batch, _ = next(iterate_view_batches(trainer.worker_views, 8, shuffle=True, seed=0, epoch=0, drop_last=True))
    assert batch.shape == (8, 3, 3, 24, 24)
    metrics = trainer.fit()
    assert math.isfinite(metrics["loss"]) and "val_knn_top1" in metrics and "test_knn_top1" in metrics


def test_the_monitor_sees_file_backed_photos_as_the_paper_centre_crop(photos):
    """The kNN monitor (and the baseline, which uses its batches) reads file-backed photos through
    the worker-side geometry: every batch is the centre crop of the shorter-side resize at R."""
    from trainables.config import TrainConfig
    from trainables.monitor import Monitor

    cfg = TrainConfig.from_dict(dict(dataset="imagefolder", data_root="/unused", image_size=32,
                                     view_size=28, backbone="small_cnn", device="cpu"))
    data = type("Bundle", (), {"val": photos, "memory": photos, "test": photos, "classes": photos.classes})()
    monitor = Monitor.for_config(cfg, data, torch.device("cpu"))
    images, labels = next(monitor.batches(photos, batch_size=len(photos)))
    assert images.shape == (len(photos), 3, 28, 28) and images.dtype == torch.uint8
    for index in (0, len(photos) - 1):
        expected = cut_views(photos.full_image(index), GeometryConfig(28, ("eval",)), 0, index)[0]
        assert torch.equal(images[index], expected) and labels[index] == photos.labels[index]


def test_a_carved_subset_of_a_file_backed_set_keeps_its_geometry(photos):
    from trainables.data.geometry import supports_geometry
    from trainables.data.splits import IndexedSubset

    subset = IndexedSubset(photos, np.array([len(photos) - 1, 0]))
    assert supports_geometry(subset)
    assert torch.equal(subset.full_image(1), photos.full_image(0))
    in_memory = IndexedSubset(TensorImageDataset(torch.zeros(2, 3, 8, 8, dtype=torch.uint8),
                                                 torch.tensor([0, 1]), ["a", "b"]), np.array([1]))
    assert not supports_geometry(in_memory)


def test_worker_boxes_follow_the_batched_samplers_distribution():
    """``random_resized_crop_box`` (one image, plain Python) and ``views.sample_crop_boxes`` (the
    batched path) are the same torchvision algorithm: the same distribution of areas, aspect
    ratios and positions, also where the centre-crop fallback kicks in (a 1:5 strip)."""
    import random

    from trainables.data.geometry import random_resized_crop_box
    from trainables.views import sample_crop_boxes

    n = 4000
    for height, width in ((375, 500), (60, 300)):
        rng = random.Random(0)
        ours = torch.tensor([random_resized_crop_box(rng, height, width, (0.2, 1.0), (3 / 4, 4 / 3))
                             for _ in range(n)], dtype=torch.float64)
        batched = sample_crop_boxes(n, height, width, torch.Generator().manual_seed(0)).double()
        for boxes in (ours, batched):
            assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()

        def stats(b):
            w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
            return torch.stack([w * h / (width * height), (w / h).log(), (b[:, 0] + w / 2) / width,
                                (b[:, 1] + h / 2) / height], dim=1)

        a, b = stats(ours), stats(batched)
        se = ((a.var(0) + b.var(0)) / n).sqrt()
        assert ((a.mean(0) - b.mean(0)).abs() < 4 * se + 1e-9).all(), (a.mean(0), b.mean(0), se)
        assert torch.allclose(a.std(0), b.std(0), rtol=0.08, atol=1e-6)
