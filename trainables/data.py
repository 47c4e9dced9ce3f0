"""Datasets for contrastive pre-training and evaluation: decode, resize to one square size, batch.

Every dataset here yields ``(image, label)`` with ``image`` a uint8 tensor ``3 x S x S`` at one
fixed "load size" ``S`` (``image_size``) and ``label`` an int. Augmentation (the LeOCLR views:
the uncropped original X and the crops X1, X2) happens elsewhere on whole batches, on the
device, so this module only decodes, resizes and batches:

- grayscale images are replicated to 3 channels;
- images are resized to ``S x S`` with antialiased bilinear interpolation (PIL's ``BILINEAR``,
  or torchvision's uint8 tensor resize, which give identical results) WITHOUT cropping:
  a non-square image is squashed to the square, because LeOCLR's query view is the whole,
  uncropped image.

Datasets (``load_data(name, ...)``, names in ``DATASETS``):

``photo_patches``
    The offline default: 16 classes, one per photograph shipped inside the scikit-image wheel
    (``skimage.data.data_dir``). Each photo is split along its long side into a train region
    (first 75 %) and a test region (last 25 %) separated by a gap, so train and test share no
    pixel; random square patches (side = U(scale) x the region's short side) are cut from each
    region and resized to ``S``. Deterministic from the seed, cached on disk as Parquet.
``digits``
    scikit-learn's 8x8 digits upscaled to ``S`` (smoke tests only: far too easy).
``cifar10`` / ``cifar100`` / ``stl10``
    torchvision's classes over the official files (``download=True`` fetches them), held in
    memory. STL-10 pre-trains on train (5k) + unlabeled (100k).
``imagefolder``
    ImageNet layout ``root/{train,val}/<class>/<image>``; decoded per item (streaming).
``parquet``
    ``root/{train,test|val}/*.parquet`` shards, columns ``image`` (encoded PNG/JPEG bytes) and
    ``label`` (int); class names optionally in the schema metadata key ``classes`` (JSON).

Batching: ``iterate_batches`` shards one seeded permutation per epoch across ranks (identical on
every rank, so every rank sees a disjoint slice and the same number of batches); in-memory
datasets are indexed as whole tensors, others go through a ``DataLoader``.

Every user-facing data problem raises ``DatasetError`` naming the path or key and the fix.
This module is pure PyTorch (+ torchvision, PIL, pyarrow, numpy, scikit-image/-learn data):
it never imports ray, optuna or mlflow.
"""

from __future__ import annotations

import bisect
import collections
import hashlib
import io
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

DATASETS = ("photo_patches", "digits", "cifar10", "cifar100", "stl10", "imagefolder", "parquet")

#: The 16 scikit-image photographs used by ``photo_patches``; class index = position here.
PHOTO_PATCH_CLASSES = (
    "astronaut", "brick", "camera", "chelsea", "coffee", "coins", "grass", "gravel",
    "hubble_deep_field", "ihc", "moon", "motorcycle_left", "page", "retina", "rocket", "text",
)
#: Defaults of the ``photo_patches`` options dict (``data.photo_patches`` in a config).
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

#: Parquet splits whose decoded size (N x 3 x S x S bytes) is below this are loaded in memory.
IN_MEMORY_LIMIT_BYTES = 2 * 1024**3
#: Rows per Parquet shard / row group written by ``write_parquet_split``.
PARQUET_ROWS_PER_SHARD = 4096
PARQUET_ROWS_PER_GROUP = 512

_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class DatasetError(ValueError):
    """A user-facing data problem; the message names the path or key and how to fix it."""


# ------------------------------------------------------------------------------------------------
# Image helpers
# ------------------------------------------------------------------------------------------------


def resize_uint8(images: torch.Tensor, size: int, *, chunk: int = 4096) -> torch.Tensor:
    """Resize a uint8 batch to a square with antialiased bilinear interpolation, no crop.

    images: N x 3 x H x W uint8 (any layout) -> N x 3 x size x size uint8, contiguous.
    Works in chunks of ``chunk`` images so a 100k-image set never needs a float copy.
    """
    from torchvision.transforms.v2 import functional as TF

    n, c, h, w = images.shape
    if (h, w) == (size, size):
        return images.contiguous()
    out = torch.empty((n, c, size, size), dtype=torch.uint8)
    for start in range(0, n, chunk):
        out[start:start + chunk] = TF.resize(
            images[start:start + chunk].contiguous(), [size, size], antialias=True
        )
    return out


def pil_to_uint8(img: Image.Image, size: int) -> torch.Tensor:
    """PIL image (any mode) -> uint8 3 x size x size: RGB (gray replicated), squashed, no crop."""
    if img.mode not in ("RGB", "L"):
        img = img.convert("RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)  # PIL's bilinear is antialiased
    if img.mode == "L":
        img = img.convert("RGB")
    # HWC -> CHW in numpy: a per-image torch op would run on the process's OpenMP team, which
    # stalls at every op when other processes hold the cores (a DataLoader with 0 workers
    # decoded 8x slower than one worker that way; docs/performance.md)
    return torch.from_numpy(np.ascontiguousarray(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)))


def decode_image(data: bytes, size: int, *, source: str) -> torch.Tensor:
    """Encoded image bytes (PNG, JPEG, ...) -> uint8 3 x size x size.

    ``source`` names where the bytes came from (a file, or file + row); it is put in the
    ``DatasetError`` raised when the bytes do not decode.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return pil_to_uint8(img, size)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetError(
            f"cannot decode the image in {source}: {exc}; delete or replace that file/row"
        ) from exc


def load_image_file(path: str | os.PathLike, size: int) -> torch.Tensor:
    """Read and decode one image file -> uint8 3 x size x size; errors name the file."""
    try:
        with Image.open(path) as img:
            img.load()
            return pil_to_uint8(img, size)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetError(
            f"cannot read the image file {os.fspath(path)}: {exc}; delete or replace that file"
        ) from exc


def encode_png(image: torch.Tensor) -> bytes:
    """uint8 3 x H x W -> PNG bytes (lossless)."""
    buf = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------
# Dataset classes
# ------------------------------------------------------------------------------------------------


class TensorImageDataset(Dataset):
    """In-memory dataset: ``images`` uint8 N x 3 x S x S (contiguous), ``labels`` int64 N.

    ``__getitem__(i)`` -> (uint8 3 x S x S tensor, int). ``iterate_batches`` indexes the tensors
    directly (no per-item Python loop). Unlabelled samples (STL-10 unlabeled) carry label -1.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: Sequence[str]):
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be uint8 N x 3 x S x S, got {images.dtype} "
                             f"{tuple(images.shape)}")
        if images.shape[2] != images.shape[3]:
            raise ValueError(f"images must be square, got {tuple(images.shape)}")
        labels = torch.as_tensor(labels, dtype=torch.int64)
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape ({images.shape[0]},), got "
                             f"{tuple(labels.shape)}")
        self.images = images.contiguous()
        self.labels = labels.contiguous()
        self.classes = list(classes)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])

    def __repr__(self) -> str:
        return (f"TensorImageDataset(n={len(self)}, size={self.image_size}, "
                f"classes={len(self.classes)})")


class ImageFileDataset(Dataset):
    """Streaming dataset over image files: decodes with PIL on each ``__getitem__``.

    samples: list of (path, label); ``__getitem__(i)`` -> (uint8 3 x S x S, int).
    An unreadable file raises ``DatasetError`` naming it.
    """

    def __init__(self, samples: Sequence[tuple[str, int]], classes: Sequence[str], image_size: int):
        self.samples = [(str(p), int(y)) for p, y in samples]
        self.labels = torch.tensor([y for _, y in self.samples], dtype=torch.int64)
        self.classes = list(classes)
        self.image_size = int(image_size)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        return load_image_file(path, self.image_size), label


class ParquetImageDataset(Dataset):
    """Streaming dataset over Parquet shards (``image`` bytes, ``label`` int), by row index.

    Labels are read up front; image bytes are read per row group on demand and decoded per
    item, with a small per-process LRU of row groups (so reading in order, or with small row
    groups, is cheap; a global shuffle over huge shards with huge row groups is correct but
    re-reads row groups). ``__getitem__(i)`` -> (uint8 3 x S x S, int).
    """

    _LRU_ROW_GROUPS = 4

    def __init__(self, files: Sequence[str], labels: torch.Tensor, classes: Sequence[str],
                 image_size: int):
        import pyarrow.parquet as pq

        self.files = [str(f) for f in files]
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        self.classes = list(classes)
        self.image_size = int(image_size)
        # Global row offsets: shard s holds rows [shard_offsets[s], shard_offsets[s+1]);
        # row group g of shard s holds local rows [group_offsets[s][g], group_offsets[s][g+1]).
        self.shard_offsets = [0]
        self.group_offsets: list[list[int]] = []
        for f in self.files:
            meta = pq.ParquetFile(f).metadata
            offsets = [0]
            for g in range(meta.num_row_groups):
                offsets.append(offsets[-1] + meta.row_group(g).num_rows)
            self.group_offsets.append(offsets)
            self.shard_offsets.append(self.shard_offsets[-1] + offsets[-1])
        if self.shard_offsets[-1] != len(self.labels):
            raise ValueError("labels do not match the number of rows in the shards")
        self._handles: dict[int, Any] = {}
        self._cache: collections.OrderedDict = collections.OrderedDict()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_handles"] = {}
        state["_cache"] = collections.OrderedDict()
        return state

    def __len__(self) -> int:
        return self.shard_offsets[-1]

    def _row_group(self, shard: int, group: int) -> list:
        key = (shard, group)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        import pyarrow.parquet as pq

        if shard not in self._handles:
            self._handles[shard] = pq.ParquetFile(self.files[shard])
        column = self._handles[shard].read_row_group(group, columns=["image"]).column("image")
        rows = column.to_pylist()
        self._cache[key] = rows
        if len(self._cache) > self._LRU_ROW_GROUPS:
            self._cache.popitem(last=False)
        return rows

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        shard = bisect.bisect_right(self.shard_offsets, index) - 1
        local = index - self.shard_offsets[shard]
        offsets = self.group_offsets[shard]
        group = bisect.bisect_right(offsets, local) - 1
        data = self._row_group(shard, group)[local - offsets[group]]
        image = decode_image(data, self.image_size, source=f"{self.files[shard]} (row {local})")
        return image, int(self.labels[index])


@dataclass
class DataBundle:
    """The three splits one trial needs.

    pretrain: what self-supervised training iterates (labels ignored); STL-10: train+unlabeled.
    memory:   labelled train split: kNN memory bank / linear-probe train set.
    test:     labelled test split.
    """

    pretrain: Dataset
    memory: Dataset
    test: Dataset
    classes: list[str]
    image_size: int


def materialize(ds: Dataset, *, num_workers: int | None = None,
                batch_size: int = 256) -> TensorImageDataset:
    """Decode a whole (streaming) dataset into memory -> TensorImageDataset (N x 3 x S x S).

    Fills one preallocated tensor batch by batch (no second copy). num_workers: DataLoader
    decode workers; None = 0 for small sets, else up to 8 (one per core).
    """
    if isinstance(ds, TensorImageDataset):
        return ds
    n = len(ds)
    if num_workers is None:
        num_workers = 0 if n < 16384 else min(8, os.cpu_count() or 1)
    size = getattr(ds, "image_size", None)
    images = (torch.empty((n, 3, size, size), dtype=torch.uint8) if size is not None else None)
    labels = torch.empty(n, dtype=torch.int64)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=collate_uint8)
    start = 0
    for x, y in loader:
        if images is None:
            images = torch.empty((n, *x.shape[1:]), dtype=torch.uint8)
        images[start:start + len(x)] = x
        labels[start:start + len(y)] = y
        start += len(x)
    if images is None:
        raise DatasetError("cannot load an empty dataset of unknown image size into memory")
    return TensorImageDataset(images, labels, getattr(ds, "classes", []))


def collate_uint8(batch: Sequence[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """[(uint8 3xSxS, int)] * B -> (uint8 B x 3 x S x S, int64 B)."""
    images = torch.stack([b[0] for b in batch])
    labels = torch.tensor([int(b[1]) for b in batch], dtype=torch.int64)
    return images, labels


# ------------------------------------------------------------------------------------------------
# Parquet
# ------------------------------------------------------------------------------------------------


def write_parquet_split(out_dir: str | os.PathLike, images: torch.Tensor | Sequence[bytes],
                        labels: torch.Tensor | Sequence[int], classes: Sequence[str] | None = None,
                        *, rows_per_shard: int = PARQUET_ROWS_PER_SHARD,
                        rows_per_group: int = PARQUET_ROWS_PER_GROUP) -> list[Path]:
    """Write one split as Parquet shards ``out_dir/part-00000.parquet``, ... (the format read
    by the ``parquet`` dataset).

    images: uint8 N x 3 x H x W (encoded as PNG) or a sequence of N encoded image bytes.
    labels: N ints. classes: stored as JSON in the schema metadata key ``classes``.
    Returns the shard paths.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = [int(y) for y in (labels.tolist() if torch.is_tensor(labels) else labels)]
    n = len(labels)
    if len(images) != n:
        raise ValueError(f"{len(images)} images but {n} labels")
    metadata = {b"classes": json.dumps(list(classes)).encode()} if classes is not None else None
    schema = pa.schema([("image", pa.binary()), ("label", pa.int64())], metadata=metadata)
    paths = []
    for shard, start in enumerate(range(0, max(n, 1), rows_per_shard)):
        chunk = images[start:start + rows_per_shard]
        data = [encode_png(x) for x in chunk] if torch.is_tensor(images) else list(chunk)
        table = pa.table({"image": pa.array(data, pa.binary()),
                          "label": pa.array(labels[start:start + rows_per_shard], pa.int64())},
                         schema=schema)
        path = out_dir / f"part-{shard:05d}.parquet"
        # PNG/JPEG bytes are already compressed: do not compress them again.
        pq.write_table(table, path, row_group_size=rows_per_group, compression="none")
        paths.append(path)
    return paths


def _split_dir(root: Path, names: Sequence[str], what: str, hint: str) -> Path:
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise DatasetError(
        f"{what}: no {' or '.join(repr(n + '/') for n in names)} folder under {root} "
        f"(expected {root / names[0]}); {hint}"
    )


def _read_parquet_split(split_dir: Path) -> tuple[list[str], np.ndarray, list[str] | None]:
    """List the shards of one split and read their labels. -> (files, labels, classes|None)."""
    import pyarrow.parquet as pq

    files = sorted(str(p) for p in split_dir.glob("*.parquet"))
    if not files:
        raise DatasetError(f"parquet: no *.parquet shards in {split_dir}; write shards with "
                           "columns 'image' (PNG/JPEG bytes) and 'label' (int) there")
    labels, classes = [], None
    for f in files:
        try:
            pf = pq.ParquetFile(f)
        except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for broken files
            raise DatasetError(f"parquet: cannot read {f}: {exc}") from exc
        names = pf.schema_arrow.names
        for column in ("image", "label"):
            if column not in names:
                raise DatasetError(
                    f"parquet: {f} has no column '{column}' (columns: {names}); each shard needs "
                    "'image' (encoded PNG/JPEG bytes) and 'label' (int)"
                )
        meta = pf.schema_arrow.metadata or {}
        if classes is None and b"classes" in meta:
            try:
                classes = [str(c) for c in json.loads(meta[b"classes"])]
            except (ValueError, TypeError) as exc:
                raise DatasetError(f"parquet: schema metadata 'classes' of {f} is not a JSON "
                                   f"list: {exc}") from exc
        labels.append(np.asarray(pf.read(columns=["label"]).column("label").to_numpy(),
                                 dtype=np.int64))
    return files, np.concatenate(labels), classes


def _load_parquet(root: Path, image_size: int, in_memory: bool | None) -> DataBundle:
    hint = ("expected root/train/*.parquet and root/test/*.parquet (or root/val/) with columns "
            "'image' and 'label'")
    if not root.is_dir():
        raise DatasetError(f"parquet: data root {root} does not exist; {hint}")
    splits = {}
    for split, names in (("train", ("train",)), ("test", ("test", "val"))):
        splits[split] = _read_parquet_split(_split_dir(root, names, "parquet", hint))
    classes = splits["train"][2] or splits["test"][2]
    if classes is None:
        # No names stored: classes are the sorted unique labels; labels become their index.
        uniques = np.unique(np.concatenate([splits["train"][1], splits["test"][1]]))
        classes = [str(u) for u in uniques.tolist()]
        remap = lambda y: np.searchsorted(uniques, y)  # noqa: E731
    else:
        remap = lambda y: y  # noqa: E731
        for files, y, _ in splits.values():
            if len(y) and (y.min() < 0 or y.max() >= len(classes)):
                raise DatasetError(
                    f"parquet: labels in {files[0]}.. range {y.min()}..{y.max()} but the "
                    f"metadata 'classes' lists {len(classes)} classes"
                )
    datasets = {}
    for split, (files, y, _) in splits.items():
        ds = ParquetImageDataset(files, torch.from_numpy(remap(y).astype(np.int64)), classes,
                                 image_size)
        fits = len(ds) * 3 * image_size * image_size < IN_MEMORY_LIMIT_BYTES
        if in_memory if in_memory is not None else fits:
            ds = materialize(ds)
        datasets[split] = ds
    return DataBundle(datasets["train"], datasets["train"], datasets["test"], classes, image_size)


# ------------------------------------------------------------------------------------------------
# photo_patches: real photographs from the scikit-image wheel, cut into disjoint train/test patches
# ------------------------------------------------------------------------------------------------


def _photo_path(name: str) -> Path:
    from skimage import data as skdata

    folder = Path(skdata.data_dir)
    for ext in (".png", ".jpg"):
        if (folder / (name + ext)).is_file():
            return folder / (name + ext)
    raise DatasetError(
        f"photo_patches: the photograph {name!r} is not in {folder}; reinstall scikit-image "
        "(the photos ship inside its wheel)"
    )


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
    """Defaults + user options, validated. Unknown keys or bad values raise DatasetError."""
    opts = dict(PHOTO_PATCHES_DEFAULTS)
    options = {k: v for k, v in (options or {}).items() if v is not None}  # None = default
    unknown = set(options) - set(opts)
    if unknown:
        raise DatasetError(f"data.photo_patches: unknown key(s) {sorted(unknown)}; valid keys: "
                           f"{sorted(opts)}")
    opts.update(options)
    for key in ("train_per_class", "test_per_class", "seed"):
        value = opts[key]
        if not isinstance(value, int) or isinstance(value, bool) or (key != "seed" and value < 1):
            raise DatasetError(f"data.photo_patches.{key} must be a "
                               f"{'non-negative ' if key == 'seed' else 'positive '}integer, "
                               f"got {value!r}")
    try:
        lo, hi = (float(s) for s in opts["scale"])
    except (TypeError, ValueError):
        raise DatasetError(f"data.photo_patches.scale must be [min, max], got {opts['scale']!r}")
    if not 0.0 < lo <= hi <= 1.0:
        raise DatasetError(f"data.photo_patches.scale must satisfy 0 < min <= max <= 1, got "
                           f"[{lo}, {hi}]")
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
        with Image.open(_photo_path(name)) as photo:
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


def _load_photo_patches(image_size: int, options: dict | None, cache_dir: str | None,
                        in_memory: bool | None) -> DataBundle:
    """Build and cache (first use) or read the cached Parquet set with the parquet loader."""
    path = photo_patches_cache_path(image_size, options, cache_dir)
    if not (path / "done.json").is_file():
        built = build_photo_patches(image_size, options)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=path.parent))
        except OSError as exc:
            raise DatasetError(f"photo_patches: cannot write the cache under {path.parent}: "
                               f"{exc}; set data.cache_dir or $LEOCLR_CACHE to a writable folder"
                               ) from exc
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
                    raise DatasetError(f"photo_patches: cannot move the new cache into {path} "
                                       f"({exc}); delete that folder and retry") from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if in_memory is not False:  # PNG is lossless: skip decoding what was just encoded
            classes = built.train.classes
            return DataBundle(built.train, built.train, built.test, classes, image_size)
    return _load_parquet(path, image_size, in_memory)


# ------------------------------------------------------------------------------------------------
# digits (scikit-learn), smoke tests only
# ------------------------------------------------------------------------------------------------


def _load_digits(image_size: int, seed: int = 0) -> DataBundle:
    """sklearn digits (8x8, values 0..16) -> uint8, upscaled; per-class 80/20 split by seed."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    gray = torch.from_numpy(np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8))  # N x 8 x 8
    images = resize_uint8(gray[:, None].expand(-1, 3, -1, -1), image_size)
    labels = torch.from_numpy(digits.target.astype(np.int64))
    rng = np.random.default_rng(seed)
    is_train = np.zeros(len(labels), dtype=bool)
    for c in np.unique(digits.target):
        idx = rng.permutation(np.flatnonzero(digits.target == c))
        is_train[idx[: int(round(0.8 * len(idx)))]] = True
    classes = [str(c) for c in digits.target_names.tolist()]
    train_mask, test_mask = torch.from_numpy(is_train), torch.from_numpy(~is_train)
    train = TensorImageDataset(images[train_mask], labels[train_mask], classes)
    test = TensorImageDataset(images[test_mask], labels[test_mask], classes)
    return DataBundle(train, train, test, classes, image_size)


# ------------------------------------------------------------------------------------------------
# torchvision datasets: CIFAR-10/100, STL-10
# ------------------------------------------------------------------------------------------------


def _torchvision_dataset(cls: type, root: Path, what: str, expected: Sequence[str], howto: str,
                         download: bool, **kwargs: Any):
    """Construct a torchvision dataset; rewrap its 'not found or corrupted' errors."""
    folder = root / cls.base_folder
    try:
        return cls(str(root), download=download, **kwargs)
    except RuntimeError as exc:
        if "not found or corrupted" not in str(exc):
            raise
        missing = [name for name in expected if not (folder / name).is_file()]
        if missing:
            problem = f"{what} not found under {folder} (missing: {', '.join(missing)})"
        else:
            problem = (f"{what} files under {folder} failed torchvision's md5 check (corrupted or "
                       "partial); delete them and download again")
        raise DatasetError(f"{problem}; set data.download: true on a machine with internet, "
                           f"or {howto}") from exc
    except OSError as exc:  # download attempted without network, or unreadable files
        raise DatasetError(f"{what}: could not read or download into {folder}: {exc}; "
                           f"{howto}") from exc


def _verified(cls: type) -> type:
    """A subclass that skips the md5 pass: used once a first split has verified every file
    (torchvision checks all files of every split on each construction)."""
    return type(cls.__name__, (cls,), {"_check_integrity": lambda self: True})


def _dataset_root(root: str | None, name: str, base_folder: str | None = None) -> Path:
    if root is None:
        raise DatasetError(f"data.root is required for dataset {name!r}: the folder that holds "
                           "(or will receive, with data.download: true) its files")
    path = Path(root).expanduser()
    if base_folder is not None and path.name == base_folder:
        path = path.parent  # accept the extracted folder itself as root
    return path


def _load_cifar(name: str, root: str | None, image_size: int, download: bool) -> DataBundle:
    from torchvision import datasets

    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    what = "CIFAR-10" if name == "cifar10" else "CIFAR-100"
    path = _dataset_root(root, name, cls.base_folder)
    expected = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    howto = f"place the extracted python version ({cls.filename}) there"
    splits = {}
    for train in (True, False):
        ds = _torchvision_dataset(cls, path, what, expected, howto, download, train=train)
        cls = _verified(cls)  # the first construction checked every file
        download = False
        # ds.data: N x 32 x 32 x 3 (HWC) -> N x 3 x 32 x 32
        images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2)
        splits[train] = TensorImageDataset(resize_uint8(images, image_size),
                                           torch.tensor(ds.targets, dtype=torch.int64),
                                           list(ds.classes))
    return DataBundle(splits[True], splits[True], splits[False], splits[True].classes, image_size)


def _load_stl10(root: str | None, image_size: int, download: bool) -> DataBundle:
    """STL-10 in memory: pretrain = train (5k) + unlabeled (100k, label -1); memory = train.

    The unlabeled split is 100k x 3 x 96 x 96 uint8 = 2.8 GB; it is copied (and resized, if
    image_size != 96) chunk by chunk into one preallocated tensor whose first 5k rows are the
    train split, so ``memory`` is a view of ``pretrain`` and costs nothing extra.
    """
    from torchvision.datasets import STL10

    cls = STL10
    path = _dataset_root(root, "stl10", cls.base_folder)
    expected = [f for f, _ in cls.train_list + cls.test_list]
    howto = f"place the extracted binary version ({cls.filename}) there"
    test = _torchvision_dataset(cls, path, "STL-10", expected, howto, download, split="test")
    cls = _verified(cls)  # the first construction checked (and downloaded) every file
    classes = list(getattr(test, "classes", [str(i) for i in range(10)]))

    def as_tensor(data: np.ndarray) -> torch.Tensor:  # N x 3 x 96 x 96 (a transposed view)
        return torch.from_numpy(data)

    test_ds = TensorImageDataset(resize_uint8(as_tensor(test.data), image_size),
                                 torch.from_numpy(test.labels.astype(np.int64)), classes)
    del test
    train = _torchvision_dataset(cls, path, "STL-10", expected, howto, False, split="train")
    unlabeled = _torchvision_dataset(cls, path, "STL-10", expected, howto, False, split="unlabeled")
    n_train, n_unlabeled = len(train.data), len(unlabeled.data)
    images = torch.empty((n_train + n_unlabeled, 3, image_size, image_size), dtype=torch.uint8)
    images[:n_train] = resize_uint8(as_tensor(train.data), image_size)
    chunk = 8192
    for start in range(0, n_unlabeled, chunk):
        images[n_train + start:n_train + start + chunk] = resize_uint8(
            as_tensor(unlabeled.data[start:start + chunk]), image_size)
    del unlabeled
    labels = torch.cat([torch.from_numpy(train.labels.astype(np.int64)),
                        torch.full((n_unlabeled,), -1, dtype=torch.int64)])
    pretrain = TensorImageDataset(images, labels, classes)
    memory = TensorImageDataset(images[:n_train], labels[:n_train], classes)  # a view
    return DataBundle(pretrain, memory, test_ds, classes, image_size)


# ------------------------------------------------------------------------------------------------
# ImageFolder (ImageNet layout)
# ------------------------------------------------------------------------------------------------


def _image_folder_split(split_dir: Path, image_size: int) -> ImageFileDataset:
    from torchvision.datasets import ImageFolder

    try:
        folder = ImageFolder(str(split_dir), loader=lambda p: p)  # listing only; we decode
    except FileNotFoundError as exc:
        raise DatasetError(
            f"imagefolder: {split_dir} has no usable class folders ({exc}); expected "
            f"{split_dir}/<class>/<image>{{{','.join(_IMAGE_EXTENSIONS)}}}"
        ) from exc
    return ImageFileDataset(folder.samples, folder.classes, image_size)


def _load_imagefolder(root: str | None, image_size: int, in_memory: bool | None) -> DataBundle:
    path = _dataset_root(root, "imagefolder")
    hint = ("use the ImageNet layout root/train/<class>/*.JPEG and root/val/<class>/*.JPEG "
            "(val/ must hold class folders: reorganise the flat ImageNet val set first)")
    if not path.is_dir():
        raise DatasetError(f"imagefolder: data root {path} does not exist; {hint}")
    train_dir = _split_dir(path, ("train",), "imagefolder", hint)
    test_dir = _split_dir(path, ("val", "test"), "imagefolder", hint)
    train = _image_folder_split(train_dir, image_size)
    test = _image_folder_split(test_dir, image_size)
    if train.classes != test.classes:
        only_train = sorted(set(train.classes) - set(test.classes))
        only_test = sorted(set(test.classes) - set(train.classes))
        raise DatasetError(
            f"imagefolder: the class folders of {train_dir} and {test_dir} differ "
            f"(only in train: {only_train[:10]}, only in {test_dir.name}: {only_test[:10]}); "
            "both splits need the same class folders"
        )
    if in_memory:
        train, test = materialize(train), materialize(test)
    return DataBundle(train, train, test, list(train.classes), image_size)


# ------------------------------------------------------------------------------------------------
# Entry point
# ------------------------------------------------------------------------------------------------


def load_data(dataset: str, *, root: str | None, image_size: int, download: bool = False,
              cache_dir: str | None = None, photo_patches: dict | None = None,
              in_memory: bool | None = None) -> DataBundle:
    """Load ``dataset`` (one of ``DATASETS``) at image_size x image_size -> DataBundle.

    root: the dataset's folder (unused by photo_patches and digits). download: let torchvision
    fetch CIFAR/STL files. cache_dir: where photo_patches caches its Parquet set (default
    ``$LEOCLR_CACHE`` or ``~/.cache/leoclr``). photo_patches: options (train_per_class,
    test_per_class, scale, seed; ignored by other datasets). in_memory: None = the dataset's
    default (in memory for all but imagefolder, and parquet sets over ~2 GB decoded);
    True/False forces it for imagefolder/parquet/photo_patches (CIFAR/STL are always in memory).
    """
    if dataset not in DATASETS:
        raise DatasetError(f"unknown dataset {dataset!r}; valid names: {', '.join(DATASETS)}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise DatasetError(f"data.image_size must be a positive integer, got {image_size!r}")
    if dataset == "photo_patches":
        return _load_photo_patches(image_size, photo_patches, cache_dir, in_memory)
    if dataset == "digits":
        return _load_digits(image_size)
    if dataset in ("cifar10", "cifar100"):
        return _load_cifar(dataset, root, image_size, download)
    if dataset == "stl10":
        return _load_stl10(root, image_size, download)
    if dataset == "imagefolder":
        return _load_imagefolder(root, image_size, in_memory)
    return _load_parquet(_dataset_root(root, "parquet"), image_size, in_memory)


# ------------------------------------------------------------------------------------------------
# Batching and sharding
# ------------------------------------------------------------------------------------------------


def epoch_permutation(n: int, *, seed: int, epoch: int) -> torch.Tensor:
    """The epoch's permutation of range(n) (int64 n), from a torch.Generator seeded by
    (seed, epoch); identical on every rank and process."""
    mixed = int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch) & 0xFFFFFFFF])
                .generate_state(1, np.uint64)[0])
    generator = torch.Generator()
    generator.manual_seed(mixed)
    return torch.randperm(n, generator=generator)


def shard_indices(n: int, batch_size: int, *, shuffle: bool, seed: int, epoch: int, rank: int = 0,
                  world_size: int = 1, drop_last: bool) -> torch.Tensor:
    """Indices rank ``rank`` reads this epoch (int64), in order.

    One permutation (or arange without shuffle) of all n indices, trimmed to a multiple of
    world_size; rank r takes perm[r::world_size]; with drop_last also trimmed to whole batches.
    Every rank gets the same count: n // world_size (drop_last: n // (world_size*batch) batches).
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    order = epoch_permutation(n, seed=seed, epoch=epoch) if shuffle else torch.arange(n)
    per_rank = n // world_size
    mine = order[: per_rank * world_size][rank::world_size]
    if drop_last:
        mine = mine[: per_rank // batch_size * batch_size]
    return mine


def num_batches(ds: Dataset, batch_size: int, *, world_size: int = 1,
                drop_last: bool = True) -> int:
    """Batches per rank per epoch that ``iterate_batches`` yields."""
    per_rank = len(ds) // world_size
    return per_rank // batch_size if drop_last else math.ceil(per_rank / batch_size)


class _IndexSampler(torch.utils.data.Sampler):
    """A sampler whose indices are replaced each epoch (lets a persistent DataLoader be reused)."""

    def __init__(self) -> None:
        self.indices: list[int] = []

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class _LoaderCache(dict):
    """Per-dataset cache of DataLoaders (so persistent workers survive between epochs).

    Pickles as empty: DataLoader workers started by spawn receive the dataset without it.
    """

    def __reduce__(self):
        return (_LoaderCache, ())


def _loader_for(ds: Dataset, batch_size: int, num_workers: int,
                pin_memory: bool) -> tuple[DataLoader, _IndexSampler]:
    key = (batch_size, num_workers, pin_memory)
    cache = getattr(ds, "_leoclr_loaders", None)
    if cache is None:
        cache = _LoaderCache()
        try:
            ds._leoclr_loaders = cache  # type: ignore[attr-defined]
        except AttributeError:  # e.g. __slots__: work without the cache
            pass
    if key not in cache:
        sampler = _IndexSampler()
        loader = DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                            collate_fn=collate_uint8, pin_memory=pin_memory,
                            persistent_workers=num_workers > 0, drop_last=False)
        cache[key] = (loader, sampler)
    return cache[key]


def release_loaders(ds: Dataset) -> None:
    """Shut down the persistent DataLoader workers ``iterate_batches`` keeps for ``ds``."""
    cache = getattr(ds, "_leoclr_loaders", None)
    if cache:
        cache.clear()


def iterate_batches(ds: Dataset, batch_size: int, *, shuffle: bool, seed: int, epoch: int,
                    rank: int = 0, world_size: int = 1, drop_last: bool, num_workers: int = 0,
                    pin_memory: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield this rank's batches of one epoch: (uint8 B x 3 x S x S, int64 B).

    Sharding as in ``shard_indices`` (same permutation on every rank, disjoint slices, equal
    batch counts). A TensorImageDataset is indexed as whole tensors (no per-item loop, no
    DataLoader); any other dataset goes through a DataLoader over this shard's indices with
    ``num_workers`` workers (persistent, reused across epochs; ``release_loaders`` ends them).
    """
    indices = shard_indices(len(ds), batch_size, shuffle=shuffle, seed=seed, epoch=epoch,
                            rank=rank, world_size=world_size, drop_last=drop_last)
    if isinstance(ds, TensorImageDataset):
        pin = pin_memory and torch.cuda.is_available()
        for start in range(0, len(indices), batch_size):
            idx = indices[start:start + batch_size]
            if pin:
                # gathered straight into page-locked memory (one copy, not gather + pin); the
                # caching host allocator does not hand a block out again before the
                # non_blocking copies that read it have finished
                images = torch.empty((len(idx), *ds.images.shape[1:]), dtype=ds.images.dtype,
                                     pin_memory=True)
                labels = torch.empty(len(idx), dtype=ds.labels.dtype, pin_memory=True)
                torch.index_select(ds.images, 0, idx, out=images)
                torch.index_select(ds.labels, 0, idx, out=labels)
            else:
                images, labels = ds.images.index_select(0, idx), ds.labels.index_select(0, idx)
            yield images, labels
        return
    loader, sampler = _loader_for(ds, batch_size, num_workers,
                                  pin_memory and torch.cuda.is_available())
    sampler.indices = indices.tolist()
    yield from loader


class DevicePrefetcher:
    """Moves ``(images, labels)`` batches to ``device``, one batch ahead of the consumer.

    On CUDA the host -> device copy of batch i + 1 is issued on a side stream (non_blocking,
    from the pinned memory ``iterate_batches(pin_memory=True)`` gives) before batch i is handed
    out, so it overlaps with the consumer's work on batch i; the consumer's stream waits for
    the copy (an event on the device, not a host synchronisation) and the tensors are marked
    as used by it (``record_stream``) so the allocator cannot recycle them early. Drawing batch
    i + 1 from ``batches`` (index_select or a DataLoader's queue) also overlaps with the GPU
    still running the kernels queued for step i - 1.

    On any other device it is a pass-through (``.to(device)``, a no-op on CPU).
    """

    def __init__(self, batches, device: torch.device | str):
        self.batches = batches
        self.device = torch.device(device)

    def __iter__(self):
        if self.device.type != "cuda":
            for images, labels in self.batches:
                yield images.to(self.device), labels.to(self.device)
            return
        stream = torch.cuda.Stream(self.device)
        source = iter(self.batches)

        def issue():
            try:
                images, labels = next(source)
            except StopIteration:
                return None
            with torch.cuda.stream(stream):
                return (images.to(self.device, non_blocking=True),
                        labels.to(self.device, non_blocking=True))

        ahead = issue()
        while ahead is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_stream(stream)
            for t in ahead:
                t.record_stream(current)
            batch, ahead = ahead, issue()
            yield batch
