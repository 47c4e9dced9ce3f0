"""``photo_patches``: real photographs from the scikit-image wheel, cut into disjoint patches.

16 classes, one per photograph shipped inside scikit-image (``skimage.data.data_dir``). Each
photo is split along its long side into a train region (first 75 %) and a test region (the
rest) separated by a 4 px gap, so train and test share no pixel. The last 20 % of the train
region (again behind a 4 px gap) is a held-out strip the validation patches are cut from: they
share no pixel with the training patches either (random patches of the same region would put
near-duplicate pixels into validation and inflate the monitor).

Random square patches are cut from each region and resized to ``S``. Their side is
``side_px: [lo, hi]`` source pixels (uniform, the default recipe [64, 160]: 2-5x the training
resolution of 32 px, textures a short CPU run can learn; docs/method.md) or, with ``scale``
given instead, a fraction U(scale) of the region's short side (the earlier recipe: patches of
25-90 % of a photo, mostly colour / texture averages that random conv features already
separate). Either way the side is clipped to the region's short side, so the narrow validation
strip and test region give smaller patches than the train region where ``hi`` exceeds their
short side. Per class: ``round(val_fraction * train_per_class)`` validation patches, and the
training patches keep ``train_per_class`` minus that. Deterministic from the seed (``val_seed``
plays no part: the validation split is a region, not a random draw); built once and cached on
disk as Parquet (under ``$LEOCLR_CACHE``).
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
from trainables.data.splits import check_val_split, val_count
from trainables.validation import is_int, is_number

#: The 16 scikit-image photographs used by ``photo_patches``; class index = position here.
PHOTO_PATCH_CLASSES = (
    "astronaut", "brick", "camera", "chelsea", "coffee", "coins", "grass", "gravel",
    "hubble_deep_field", "ihc", "moon", "motorcycle_left", "page", "retina", "rocket", "text",
)
#: Defaults of the ``photo_patches`` options dict (the ``photo_patches`` key of a config).
#: ``side_px`` and ``scale`` are the two recipes: exactly one is used (``scale`` given -> scale).
PHOTO_PATCHES_DEFAULTS: dict[str, Any] = {
    "train_per_class": 144,
    "test_per_class": 32,
    "side_px": (64, 160),
    "scale": None,
    "seed": 0,
}
#: Fraction of a photo's long side given to the train region; the rest (minus the gap) is test.
PHOTO_TRAIN_FRACTION = 0.75
#: Fraction of the train region (along the long side, at its end) held out for validation.
PHOTO_VAL_STRIP_FRACTION = 0.2
#: Pixels between the train region, the validation strip and the test region of a photo.
PHOTO_REGION_GAP = 4
#: Bump when the way patches are cut or stored changes: it is part of the cache key.
PHOTO_PATCHES_FORMAT_VERSION = 2

Box = tuple[int, int, int, int]
SPLITS = ("train", "val", "test")


def photo_path(name: str) -> Path:
    """The file of scikit-image's photograph ``name`` (e.g. "astronaut")."""
    from skimage import data as skdata

    folder = Path(skdata.data_dir)
    for ext in (".png", ".jpg"):
        if (folder / (name + ext)).is_file():
            return folder / (name + ext)
    raise DatasetError(f"the photograph {name!r} is not in {folder}; reinstall scikit-image "
                       "(the photos ship inside its wheel)", source="photo_patches")


def photo_patch_regions(height: int, width: int) -> dict[str, Box]:
    """Disjoint train / val / test regions of an H x W photo, as (left, top, right, bottom)
    boxes (right/bottom exclusive, PIL convention).

    Along the long side L (width when square), with cut = int(0.75 L), strip = int(0.2 cut)
    and gap = 4: train [0, cut - strip - gap), val [cut - strip, cut), test [cut + gap, L).
    """
    long = max(width, height)
    cut = int(long * PHOTO_TRAIN_FRACTION)
    strip = int(cut * PHOTO_VAL_STRIP_FRACTION)
    spans = {"train": (0, cut - strip - PHOTO_REGION_GAP), "val": (cut - strip, cut),
             "test": (cut + PHOTO_REGION_GAP, long)}
    if width >= height:
        return {s: (a, 0, b, height) for s, (a, b) in spans.items()}
    return {s: (0, a, width, b) for s, (a, b) in spans.items()}


def _sample_patch_boxes(region: Box, count: int, opts: dict[str, Any],
                        rng: np.random.Generator) -> np.ndarray:
    """``count`` random square boxes inside ``region`` -> int64 count x 4 (left, top, right,
    bottom).

    side = round(U(side_px)) source pixels, or round(U(scale) * the region's short side);
    clipped to [1, short side]; position uniform inside the region.
    """
    left, top, right, bottom = region
    short = min(right - left, bottom - top)
    if opts["scale"] is not None:
        sides = rng.uniform(opts["scale"][0], opts["scale"][1], count) * short
    else:
        sides = rng.uniform(opts["side_px"][0], opts["side_px"][1], count)
    sides = np.clip(np.rint(sides), 1, short).astype(np.int64)
    xs = left + np.floor(rng.random(count) * (right - left - sides + 1)).astype(np.int64)
    ys = top + np.floor(rng.random(count) * (bottom - top - sides + 1)).astype(np.int64)
    return np.stack([xs, ys, xs + sides, ys + sides], axis=1)


@dataclass
class PhotoPatches:
    """A built ``photo_patches`` set.

    train, val, test: TensorImageDataset (uint8 N x 3 x S x S, labels = class index, classes
    in order). train_boxes, val_boxes, test_boxes: int64 N x 4 source box (left, top, right,
    bottom) of each patch in its photo. regions: class name -> {"size": (H, W), "train": box,
    "val": box, "test": box}.
    """

    train: TensorImageDataset
    val: TensorImageDataset
    test: TensorImageDataset
    train_boxes: torch.Tensor
    val_boxes: torch.Tensor
    test_boxes: torch.Tensor
    regions: dict[str, dict[str, tuple[int, ...]]]


def resolve_photo_patches_options(options: dict | None) -> dict[str, Any]:
    """Defaults + user options, validated -> {train_per_class, test_per_class, side_px, scale,
    seed}, exactly one of side_px / scale a (lo, hi) pair and the other None. Unknown keys or
    bad values raise DatasetError with ``key`` = ``photo_patches`` or ``photo_patches.<option>``;
    side_px and scale both given name both keys."""

    def bad(option: str | None, value: Any, reason: str) -> DatasetError:
        key = "photo_patches" if option is None else f"photo_patches.{option}"
        return DatasetError(reason, key=key, value=value, message=f"{key}: {reason}")

    opts = dict(PHOTO_PATCHES_DEFAULTS)
    options = {k: v for k, v in (options or {}).items() if v is not None}  # None = default
    unknown = set(options) - set(opts)
    if unknown:
        raise bad(None, options, f"unknown key(s) {sorted(unknown)}; valid keys: {sorted(opts)}")
    if "side_px" in options and "scale" in options:
        raise DatasetError(
            "give photo_patches.side_px (patch side in source pixels) or photo_patches.scale "
            "(fraction of the region's short side), not both", key="photo_patches",
            value={k: options[k] for k in ("side_px", "scale")},
            message="photo_patches: side_px and scale are both given; use one of them (side_px: "
                    "patch side in source pixels, the default; scale: fraction of the region's "
                    "short side)")
    opts.update(options)
    if "scale" in options:
        opts["side_px"] = None
    for key in ("train_per_class", "test_per_class", "seed"):
        value = opts[key]
        if not is_int(value) or (key != "seed" and value < 1):
            kind = "non-negative" if key == "seed" else "positive"
            raise bad(key, value, f"must be a {kind} integer, got {value!r}")
    option = "scale" if opts["scale"] is not None else "side_px"
    value = opts[option]
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise bad(option, value, f"must be [min, max], got {value!r}") from None
    if option == "scale" and not 0.0 < lo <= hi <= 1.0:
        raise bad(option, value, f"must satisfy 0 < min <= max <= 1, got [{lo}, {hi}]")
    if option == "side_px" and not (is_number(lo) and is_number(hi) and 1.0 <= lo <= hi):
        raise bad(option, value, f"must satisfy 1 <= min <= max (source pixels), got [{lo:g}, {hi:g}]")
    opts[option] = (lo, hi)
    return opts


def photo_patches_class_counts(options: dict | None) -> dict[str, int]:
    """Patches per class validation is counted from (``train_per_class``), from the options alone."""
    opts = resolve_photo_patches_options(options)
    return {name: opts["train_per_class"] for name in PHOTO_PATCH_CLASSES}


def _split_counts(opts: dict[str, Any], val_fraction: float) -> dict[str, int]:
    """Patches per class of each split; refuses a val_fraction that leaves one of them empty."""
    check_val_split({name: opts["train_per_class"] for name in PHOTO_PATCH_CLASSES}, val_fraction,
                    source="photo_patches")
    n_val = val_count(opts["train_per_class"], val_fraction)
    return {"train": opts["train_per_class"] - n_val, "val": n_val, "test": opts["test_per_class"]}


def build_photo_patches(image_size: int, options: dict | None = None,
                        val_fraction: float = 0.1) -> PhotoPatches:
    """Cut the ``photo_patches`` set from the scikit-image photographs (no cache involved).

    For class c (photo PHOTO_PATCH_CLASSES[c]) and split s (train 0, test 1, val 2), patch
    boxes come from ``numpy.random.default_rng([seed, c, s])`` inside that split's region
    (``photo_patch_regions``); each box is resized to image_size x image_size (PIL antialiased
    bilinear; gray photos replicated to RGB). Per class: train_per_class - n_val training,
    n_val = round(val_fraction * train_per_class) validation, test_per_class test patches.
    Deterministic from the options.
    """
    opts = resolve_photo_patches_options(options)
    counts = _split_counts(opts, val_fraction)
    stream = {"train": 0, "test": 1, "val": 2}
    images = {s: torch.empty((len(PHOTO_PATCH_CLASSES) * n, 3, image_size, image_size),
                             dtype=torch.uint8) for s, n in counts.items()}
    boxes: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    regions: dict[str, dict[str, tuple[int, ...]]] = {}
    for c, name in enumerate(PHOTO_PATCH_CLASSES):
        with Image.open(photo_path(name)) as photo:
            photo.load()
            gray = photo.mode in ("L", "I", "I;16", "1")
            photo = photo.convert("L" if gray else "RGB")
        width, height = photo.size
        boxes_of = photo_patch_regions(height, width)
        regions[name] = {"size": (height, width), **boxes_of}
        for split in SPLITS:
            rng = np.random.default_rng([opts["seed"], c, stream[split]])
            split_boxes = _sample_patch_boxes(boxes_of[split], counts[split], opts, rng)
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
        **datasets, **{f"{s}_boxes": torch.from_numpy(np.concatenate(boxes[s])) for s in SPLITS},
        regions=regions,
    )


def default_cache_dir() -> Path:
    """``$LEOCLR_CACHE`` or ``~/.cache/leoclr``."""
    return Path(os.environ.get("LEOCLR_CACHE") or Path.home() / ".cache" / "leoclr")


def photo_patches_cache_path(image_size: int, options: dict | None = None,
                             cache_dir: str | os.PathLike | None = None,
                             val_fraction: float = 0.1) -> Path:
    """Folder holding the cached Parquet set for these parameters (a hash of all of them; the
    validation fraction enters as the patch counts it gives)."""
    import skimage

    opts = resolve_photo_patches_options(options)
    key = {
        "format_version": PHOTO_PATCHES_FORMAT_VERSION,
        "image_size": int(image_size),
        "per_class": _split_counts(opts, val_fraction),
        "side_px": list(opts["side_px"]) if opts["side_px"] is not None else None,
        "scale": list(opts["scale"]) if opts["scale"] is not None else None,
        "seed": opts["seed"],
        "photos": list(PHOTO_PATCH_CLASSES),
        "train_fraction": PHOTO_TRAIN_FRACTION,
        "val_strip_fraction": PHOTO_VAL_STRIP_FRACTION,
        "gap": PHOTO_REGION_GAP,
        "skimage": skimage.__version__,  # the photos could change between releases
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / "photo_patches" / f"s{image_size}-{digest}"


def _val_description(n_val: int) -> str:
    return (f"held-out strip: the last {100 * PHOTO_VAL_STRIP_FRACTION:g}% of each photo's train "
            f"region, {n_val} patches per class")


def load_photo_patches(image_size: int, options: dict | None, cache_dir: str | None,
                       in_memory: bool | None, val_fraction: float = 0.1) -> DataBundle:
    """Build and cache (first use) or read the cached Parquet set (train/, val/, test/) with
    the parquet loader."""
    path = photo_patches_cache_path(image_size, options, cache_dir, val_fraction)
    n_val = _split_counts(resolve_photo_patches_options(options), val_fraction)["val"]
    if not (path / "done.json").is_file():
        built = build_photo_patches(image_size, options, val_fraction)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=path.parent))
        except OSError as exc:
            raise DatasetError(f"cannot write the cache under {path.parent}: {exc}; set "
                               "$LEOCLR_CACHE to a writable folder", source="photo_patches") from exc
        try:
            for split in SPLITS:
                ds = getattr(built, split)
                write_parquet_split(tmp / split, ds.images, ds.labels, ds.classes)
            info = {"image_size": image_size, **resolve_photo_patches_options(options),
                    "val_per_class": n_val, "regions": built.regions}
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
            return DataBundle(built.train, built.train, built.val, built.test, built.train.classes,
                              image_size, _val_description(n_val))
    bundle = load_parquet(path, image_size, in_memory)
    bundle.val_from = _val_description(n_val)
    return bundle
