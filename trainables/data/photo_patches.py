"""``photo_patches``: real photographs from the scikit-image wheel, cut into disjoint patches.

16 classes, one per photograph shipped inside scikit-image (``skimage.data.data_dir``). Each
photo is split along its long side into a train region (first 75 %) and a test region (the
rest) separated by a gap, so train and test share no pixel; random square patches (side =
U(scale) x the region's short side) are cut from each region and resized to ``S``. Deterministic
from the seed; built once and cached on disk as Parquet (under ``$LEOCLR_CACHE``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from trainables.data.codecs import pil_to_uint8
from trainables.data.datasets import DataBundle, TensorImageDataset
from trainables.data.errors import DatasetError
from trainables.data.parquet import load_parquet, write_parquet_split
from trainables.validation import is_int

#: The 16 scikit-image photographs used by ``photo_patches``; class index = position here.
PHOTO_PATCH_CLASSES = (
    "astronaut", "brick", "camera", "chelsea", "coffee", "coins", "grass", "gravel",
    "hubble_deep_field", "ihc", "moon", "motorcycle_left", "page", "retina", "rocket", "text",
)
#: Defaults of the ``photo_patches`` options dict (the ``photo_patches`` key of a config).
PHOTO_PATCHES_DEFAULTS: dict[str, Any] = {
    "train_per_class": 256,
    "test_per_class": 64,
    "scale": (0.25, 0.9),
    "seed": 0,
}
#: Fraction of a photo's long side given to the train region; the rest (minus the gap) is test.
PHOTO_TRAIN_FRACTION = 0.75
#: Pixels between the train and the test region of a photo.
PHOTO_REGION_GAP = 4
#: Bump when the way patches are cut or stored changes: it is part of the cache key.
PHOTO_PATCHES_FORMAT_VERSION = 1


def photo_path(name: str) -> Path:
    """The file of scikit-image's photograph ``name`` (e.g. "astronaut")."""
    from skimage import data as skdata

    folder = Path(skdata.data_dir)
    for ext in (".png", ".jpg"):
        if (folder / (name + ext)).is_file():
            return folder / (name + ext)
    raise DatasetError(f"the photograph {name!r} is not in {folder}; reinstall scikit-image "
                       "(the photos ship inside its wheel)", source="photo_patches")


def photo_patch_regions(height: int, width: int) -> tuple[tuple[int, int, int, int],
                                                          tuple[int, int, int, int]]:
    """Disjoint train/test regions of an H x W photo, as (left, top, right, bottom) boxes
    (right/bottom exclusive, PIL convention).

    The long side (width when square) is split: [0, 0.75 L) train, [0.75 L + gap, L) test.
    """
    if width >= height:
        cut = int(width * PHOTO_TRAIN_FRACTION)
        return (0, 0, cut, height), (cut + PHOTO_REGION_GAP, 0, width, height)
    cut = int(height * PHOTO_TRAIN_FRACTION)
    return (0, 0, width, cut), (0, cut + PHOTO_REGION_GAP, width, height)


def _sample_patch_boxes(region: tuple[int, int, int, int], count: int, scale: tuple[float, float],
                        rng: np.random.Generator) -> np.ndarray:
    """``count`` random square boxes inside ``region`` -> int64 count x 4 (left, top, right,
    bottom).

    side = round(U(scale) * short side of the region), position uniform inside the region.
    """
    left, top, right, bottom = region
    short = min(right - left, bottom - top)
    sides = np.rint(rng.uniform(scale[0], scale[1], count) * short)
    sides = np.clip(sides, 1, short).astype(np.int64)
    xs = left + np.floor(rng.random(count) * (right - left - sides + 1)).astype(np.int64)
    ys = top + np.floor(rng.random(count) * (bottom - top - sides + 1)).astype(np.int64)
    return np.stack([xs, ys, xs + sides, ys + sides], axis=1)


@dataclass
class PhotoPatches:
    """A built ``photo_patches`` set.

    train, test: TensorImageDataset (uint8 N x 3 x S x S). train_boxes, test_boxes: int64 N x 4
    source box (left, top, right, bottom) of each patch in its photo. regions: class name ->
    {"size": (H, W), "train": box, "test": box}.
    """

    train: TensorImageDataset
    test: TensorImageDataset
    train_boxes: torch.Tensor
    test_boxes: torch.Tensor
    regions: dict[str, dict[str, tuple[int, ...]]]


def resolve_photo_patches_options(options: dict | None) -> dict[str, Any]:
    """Defaults + user options, validated. Unknown keys or bad values raise DatasetError with
    ``key`` = ``photo_patches`` or ``photo_patches.<option>``."""

    def bad(option: str | None, value: Any, reason: str) -> DatasetError:
        key = "photo_patches" if option is None else f"photo_patches.{option}"
        return DatasetError(reason, key=key, value=value, message=f"{key}: {reason}")

    opts = dict(PHOTO_PATCHES_DEFAULTS)
    options = {k: v for k, v in (options or {}).items() if v is not None}  # None = default
    unknown = set(options) - set(opts)
    if unknown:
        raise bad(None, options, f"unknown key(s) {sorted(unknown)}; valid keys: {sorted(opts)}")
    opts.update(options)
    for key in ("train_per_class", "test_per_class", "seed"):
        value = opts[key]
        if not is_int(value) or (key != "seed" and value < 1):
            kind = "non-negative" if key == "seed" else "positive"
            raise bad(key, value, f"must be a {kind} integer, got {value!r}")
    try:
        lo, hi = (float(s) for s in opts["scale"])
    except (TypeError, ValueError):
        raise bad("scale", opts["scale"], f"must be [min, max], got {opts['scale']!r}") from None
    if not 0.0 < lo <= hi <= 1.0:
        raise bad("scale", opts["scale"], f"must satisfy 0 < min <= max <= 1, got [{lo}, {hi}]")
    opts["scale"] = (lo, hi)
    return opts


def build_photo_patches(image_size: int, options: dict | None = None) -> PhotoPatches:
    """Cut the ``photo_patches`` set from the scikit-image photographs (no cache involved).

    For class c (photo PHOTO_PATCH_CLASSES[c]) and split s, patch boxes come from
    ``numpy.random.default_rng([seed, c, s])``; each box is resized to image_size x image_size
    (PIL antialiased bilinear; gray photos replicated to RGB). Deterministic from the options.
    """
    opts = resolve_photo_patches_options(options)
    counts = {"train": opts["train_per_class"], "test": opts["test_per_class"]}
    images = {s: torch.empty((len(PHOTO_PATCH_CLASSES) * n, 3, image_size, image_size),
                             dtype=torch.uint8) for s, n in counts.items()}
    boxes: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    regions: dict[str, dict[str, tuple[int, ...]]] = {}
    for c, name in enumerate(PHOTO_PATCH_CLASSES):
        with Image.open(photo_path(name)) as photo:
            photo.load()
            gray = photo.mode in ("L", "I", "I;16", "1")
            photo = photo.convert("L" if gray else "RGB")
        width, height = photo.size
        train_region, test_region = photo_patch_regions(height, width)
        regions[name] = {"size": (height, width), "train": train_region, "test": test_region}
        for s, (split, region) in enumerate((("train", train_region), ("test", test_region))):
            rng = np.random.default_rng([opts["seed"], c, s])
            split_boxes = _sample_patch_boxes(region, counts[split], opts["scale"], rng)
            boxes[split].append(split_boxes)
            base = c * counts[split]
            for i, box in enumerate(split_boxes.tolist()):
                patch = photo.resize((image_size, image_size), Image.BILINEAR, box=tuple(box))
                images[split][base + i] = pil_to_uint8(patch, image_size)
    classes = list(PHOTO_PATCH_CLASSES)
    datasets = {
        s: TensorImageDataset(images[s], torch.arange(len(classes)).repeat_interleave(n), classes)
        for s, n in counts.items()
    }
    return PhotoPatches(
        train=datasets["train"], test=datasets["test"],
        train_boxes=torch.from_numpy(np.concatenate(boxes["train"])),
        test_boxes=torch.from_numpy(np.concatenate(boxes["test"])),
        regions=regions,
    )


def default_cache_dir() -> Path:
    """``$LEOCLR_CACHE`` or ``~/.cache/leoclr``."""
    return Path(os.environ.get("LEOCLR_CACHE") or Path.home() / ".cache" / "leoclr")


def photo_patches_cache_path(image_size: int, options: dict | None = None,
                             cache_dir: str | os.PathLike | None = None) -> Path:
    """Folder holding the cached Parquet set for these parameters (a hash of all of them)."""
    import skimage

    opts = resolve_photo_patches_options(options)
    key = {
        "format_version": PHOTO_PATCHES_FORMAT_VERSION,
        "image_size": int(image_size),
        "train_per_class": opts["train_per_class"],
        "test_per_class": opts["test_per_class"],
        "scale": list(opts["scale"]),
        "seed": opts["seed"],
        "photos": list(PHOTO_PATCH_CLASSES),
        "train_fraction": PHOTO_TRAIN_FRACTION,
        "gap": PHOTO_REGION_GAP,
        "skimage": skimage.__version__,  # the photos could change between releases
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / "photo_patches" / f"s{image_size}-{digest}"


def load_photo_patches(image_size: int, options: dict | None, cache_dir: str | None,
                        in_memory: bool | None) -> DataBundle:
    """Build and cache (first use) or read the cached Parquet set with the parquet loader."""
    path = photo_patches_cache_path(image_size, options, cache_dir)
    if not (path / "done.json").is_file():
        built = build_photo_patches(image_size, options)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=path.parent))
        except OSError as exc:
            raise DatasetError(f"cannot write the cache under {path.parent}: {exc}; set "
                               "$LEOCLR_CACHE to a writable folder", source="photo_patches") from exc
        try:
            for split, ds in (("train", built.train), ("test", built.test)):
                write_parquet_split(tmp / split, ds.images, ds.labels, ds.classes)
            info = {"image_size": image_size, **resolve_photo_patches_options(options),
                    "regions": built.regions}
            (tmp / "done.json").write_text(json.dumps(info, indent=1))
            try:
                os.rename(tmp, path)  # atomic; fails if another process got there first
            except OSError as exc:
                if not (path / "done.json").is_file():
                    raise DatasetError(f"cannot move the new cache into {path} ({exc}); delete "
                                       "that folder and retry", source="photo_patches") from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if in_memory is not False:  # PNG is lossless: skip decoding what was just encoded
            classes = built.train.classes
            return DataBundle(built.train, built.train, built.test, classes, image_size)
    return load_parquet(path, image_size, in_memory)
