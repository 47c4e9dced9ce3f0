"""Fixtures shared by the engine's tests."""

from __future__ import annotations

import pytest
from PIL import Image
from skimage import data as skdata

from trainables.config import TrainConfig
from trainables.loop import run_training


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory):
    """One tiny epoch of LeOCLR (small_cnn, SplitBatchNorm 2) on photo_patches at 16 px
    (8 + 4 patches per class) -> its checkpoint folder; the photo_patches cache stays set for
    the module's tests."""
    out = tmp_path_factory.mktemp("ckpt")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LEOCLR_CACHE", str(tmp_path_factory.mktemp("cache")))
        cfg = TrainConfig.from_dict(dict(
            dataset="photo_patches", photo_patches={"train_per_class": 8, "test_per_class": 4},
            image_size=16, backbone="small_cnn", batch_size=32, queue_size=64, epochs=1, knn_k=10,
            bn_splits=2, max_steps_per_epoch=2, device="cpu"))
        run_training(cfg, checkpoint_dir=str(out))
        yield out / "epoch_0001"


# (class, photo, (left, top, right, bottom) box cut from it): a 4:3 landscape and a 1:2 portrait
PHOTOS = (
    ("coffee", skdata.coffee, (0, 0, 532, 399)),  # 400 x 600 photo -> 532 x 399, 4:3
    ("rocket", skdata.rocket, (200, 0, 413, 426)),  # 427 x 640 photo -> 213 x 426, 1:2
)


def write_photo_folder(root, copies: int = 3) -> None:
    """train/, val/ and test/ with one class per photo, ``copies`` JPEGs each (slightly different
    cuts): with a test/ folder next to it, val/ is the validation split (nothing is carved)."""
    for split in ("train", "val", "test"):
        for name, load, (left, top, right, bottom) in PHOTOS:
            folder = root / split / name
            folder.mkdir(parents=True)
            photo = Image.fromarray(load())
            for i in range(copies):
                photo.crop((left + i, top, right + i, bottom)).save(folder / f"{i}.jpg", quality=92)


@pytest.fixture(scope="session")
def photo_folder():
    """``photo_folder(root, copies=3)`` writes an ImageFolder of non-square JPEGs (a 4:3 and a
    1:2 photo from scikit-image) under ``root``."""
    return write_photo_folder
