"""Datasets for contrastive pre-training and evaluation: decode, resize to one square size, batch.

Every dataset here yields ``(image, label)`` with ``image`` a uint8 tensor ``3 x S x S`` at one
fixed "load size" ``S`` (``image_size``) and ``label`` an int. Augmentation (the LeOCLR views:
the uncropped original X and the crops X1, X2) happens elsewhere on whole batches, on the
device, so this package only decodes, resizes and batches:

- grayscale images are replicated to 3 channels;
- images are resized to ``S x S`` with antialiased bilinear interpolation (PIL's ``BILINEAR``,
  or torchvision's uint8 tensor resize, which give identical results) WITHOUT cropping:
  a non-square image is squashed to the square, because LeOCLR's query view is the whole,
  uncropped image.

Every dataset gives four splits (``DataBundle``): ``pretrain`` (what self-supervised training
iterates), ``memory`` (labelled training images: kNN bank, linear-probe train set), ``val``
(labelled validation: everything that selects reads it) and ``test`` (labelled, only reported).
``val`` is a dataset's own val/ folder (next to a test/ folder) or carved from the labelled
training images, stratified per class and seeded by ``val_seed`` (splits.py); a
``val_fraction`` that leaves a class empty is refused before compute (``check_val_fraction``).

Datasets (``load_data(name, ...)``, names in ``DATASETS``), one module each:

``photo_patches`` (photo_patches.py)
    The offline default: 16 classes, one per photograph shipped inside the scikit-image wheel
    (``skimage.data.data_dir``). Each photo is split along its long side into a train region,
    a held-out validation strip at its end and a test region, separated by gaps, so no two
    splits share a pixel; random square patches (side ``side_px`` source pixels, or a
    ``scale`` fraction of the region) are cut from each region and resized to ``S``.
    Deterministic from the seed, cached on disk as Parquet.
``digits`` (digits.py)
    scikit-learn's 8x8 digits upscaled to ``S`` (smoke tests only: far too easy).
``cifar10`` / ``cifar100`` / ``stl10`` (torchvision_sets.py)
    torchvision's classes over the official files (``download=True`` fetches them), held in
    memory. STL-10 pre-trains on train (5k, minus val) + unlabeled (100k).
``imagefolder`` (imagefolder.py)
    ImageNet layout ``root/{train,val}/<class>/<image>`` (or train/val/test); decoded per item
    (streaming).
``parquet`` (parquet.py)
    ``root/{train,test|val}/*.parquet`` shards, columns ``image`` (encoded PNG/JPEG bytes) and
    ``label`` (int, -1 = unlabelled); class names optionally in the schema metadata key
    ``classes`` (JSON).

The other modules: codecs.py (decode / resize / encode one image), datasets.py (the dataset
classes and ``DataBundle``), splits.py (the validation carve and its check), batching.py
(sharded epochs, persistent loaders, the device prefetcher), folders.py (a dataset's root and
split folders), errors.py (``DatasetError``).

Every user-facing data problem raises ``DatasetError`` naming the path or key and the fix.
This package is pure PyTorch (+ torchvision, PIL, pyarrow, numpy, scikit-image/-learn data):
it never imports ray, optuna or mlflow.
"""

from trainables.data.batching import (
    DevicePrefetcher,
    epoch_permutation,
    has_open_loaders,
    iterate_batches,
    num_batches,
    release_loaders,
    shard_indices,
)
from trainables.data.codecs import decode_image, encode_png, load_image_file, pil_to_uint8, resize_uint8
from trainables.data.datasets import (
    DataBundle,
    ImageFileDataset,
    TensorImageDataset,
    collate_uint8,
    materialize,
)
from trainables.data.errors import DatasetError
from trainables.data.load import DATASETS, check_val_fraction, dataset_class_counts, load_data
from trainables.data.parquet import (
    IN_MEMORY_LIMIT_BYTES,
    PARQUET_ROWS_PER_GROUP,
    PARQUET_ROWS_PER_SHARD,
    ParquetImageDataset,
    load_parquet,
    write_parquet_split,
)
from trainables.data.photo_patches import (
    PHOTO_PATCH_CLASSES,
    PHOTO_PATCHES_DEFAULTS,
    PhotoPatches,
    build_photo_patches,
    default_cache_dir,
    photo_patch_regions,
    photo_patches_cache_path,
    resolve_photo_patches_options,
)
from trainables.data.splits import (
    IndexedSubset,
    carve_validation,
    check_val_split,
    val_count,
)

__all__ = [
    "DATASETS",
    "IN_MEMORY_LIMIT_BYTES",
    "PARQUET_ROWS_PER_GROUP",
    "PARQUET_ROWS_PER_SHARD",
    "PHOTO_PATCHES_DEFAULTS",
    "PHOTO_PATCH_CLASSES",
    "DataBundle",
    "DatasetError",
    "DevicePrefetcher",
    "IndexedSubset",
    "ImageFileDataset",
    "ParquetImageDataset",
    "PhotoPatches",
    "TensorImageDataset",
    "build_photo_patches",
    "carve_validation",
    "check_val_fraction",
    "check_val_split",
    "collate_uint8",
    "dataset_class_counts",
    "decode_image",
    "default_cache_dir",
    "encode_png",
    "epoch_permutation",
    "has_open_loaders",
    "iterate_batches",
    "load_data",
    "load_image_file",
    "load_parquet",
    "materialize",
    "num_batches",
    "photo_patch_regions",
    "photo_patches_cache_path",
    "pil_to_uint8",
    "release_loaders",
    "resize_uint8",
    "resolve_photo_patches_options",
    "shard_indices",
    "val_count",
    "write_parquet_split",
]
