"""Parquet image shards: the ``parquet`` dataset's reader and writer.

Layout: ``root/{train,test|val}/*.parquet`` (or train, val and test), columns ``image`` (encoded
PNG/JPEG bytes) and ``label`` (int, -1 = unlabelled); class names optionally in the schema
metadata key ``classes`` (a JSON list).
Small splits are decoded into memory; larger ones stream row groups through
``ParquetImageDataset``.
"""

from __future__ import annotations

import bisect
import collections
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from trainables.data.codecs import decode_full, decode_image, encode_png
from trainables.data.datasets import DataBundle, materialize
from trainables.data.errors import DatasetError
from trainables.data.folders import split_layout, val_description
from trainables.data.splits import carve_validation, class_counts, take

#: Parquet splits whose decoded size (N x 3 x S x S bytes) is below this are loaded in memory.
IN_MEMORY_LIMIT_BYTES = 2 * 1024**3
#: Rows per Parquet shard / row group written by ``write_parquet_split``.
PARQUET_ROWS_PER_SHARD = 4096
PARQUET_ROWS_PER_GROUP = 512


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

    def _encoded(self, index: int) -> tuple[bytes, str]:
        """Row ``index``'s encoded image bytes and where they are (file and row)."""
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        shard = bisect.bisect_right(self.shard_offsets, index) - 1
        local = index - self.shard_offsets[shard]
        offsets = self.group_offsets[shard]
        group = bisect.bisect_right(offsets, local) - 1
        return self._row_group(shard, group)[local - offsets[group]], f"{self.files[shard]} (row {local})"

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        data, source = self._encoded(index)
        return decode_image(data, self.image_size, source=source), int(self.labels[index])

    def full_image(self, index: int) -> torch.Tensor:
        """Row ``index`` decoded at its own size, uint8 ``3 x H x W``: what the loader workers
        cut views from (trainables/data/geometry.py)."""
        data, source = self._encoded(index)
        return decode_full(data, source=source)


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


def read_parquet_split(split_path: Path) -> tuple[list[str], np.ndarray, list[str] | None]:
    """List the shards of one split and read their labels. -> (files, labels, classes|None)."""
    import pyarrow.parquet as pq

    files = sorted(str(p) for p in split_path.glob("*.parquet"))
    if not files:
        raise DatasetError(f"no *.parquet shards in {split_path}; write shards with columns 'image' "
                           "(PNG/JPEG bytes) and 'label' (int) there", source="parquet")
    labels, classes = [], None
    for f in files:
        try:
            pf = pq.ParquetFile(f)
        except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for broken files
            raise DatasetError(f"cannot read {f}: {exc}", source="parquet") from exc
        names = pf.schema_arrow.names
        for column in ("image", "label"):
            if column not in names:
                raise DatasetError(
                    f"{f} has no column '{column}' (columns: {names}); each shard needs "
                    "'image' (encoded PNG/JPEG bytes) and 'label' (int)", source="parquet"
                )
        meta = pf.schema_arrow.metadata or {}
        if classes is None and b"classes" in meta:
            try:
                classes = [str(c) for c in json.loads(meta[b"classes"])]
            except (ValueError, TypeError) as exc:
                raise DatasetError(f"schema metadata 'classes' of {f} is not a JSON list: {exc}",
                                   source="parquet") from exc
        labels.append(np.asarray(pf.read(columns=["label"]).column("label").to_numpy(),
                                 dtype=np.int64))
    return files, np.concatenate(labels), classes


_HINT = ("expected root/train/*.parquet and root/test/*.parquet (or root/val/; with both val/ and "
         "test/, val/ is the validation split) with columns 'image' and 'label'")


def _layout(root: Path) -> tuple[Path, Path | None, Path]:
    if not root.is_dir():
        raise DatasetError(f"data root {root} does not exist; {_HINT}", source="parquet")
    return split_layout(root, "parquet", _HINT)


def _class_names(splits: dict[str, tuple[list[str], np.ndarray, list[str] | None]]):
    """(class names, label -> class index) of a set's splits: the schema's ``classes`` if any
    (labels must lie in [-1, C)), else the sorted labels >= 0 (-1 stays -1: unlabelled)."""
    classes = next((c for _, _, c in splits.values() if c is not None), None)
    if classes is None:
        uniques = np.unique(np.concatenate([y[y >= 0] for _, y, _ in splits.values()]))
        return [str(u) for u in uniques.tolist()], (
            lambda y: np.where(y >= 0, np.searchsorted(uniques, y), -1))
    for files, y, _ in splits.values():
        if len(y) and (y.min() < -1 or y.max() >= len(classes)):
            raise DatasetError(
                f"labels in {files[0]}.. range {y.min()}..{y.max()} but the "
                f"metadata 'classes' lists {len(classes)} classes (-1 marks an unlabelled image)",
                source="parquet"
            )
    return classes, (lambda y: y)


def parquet_class_counts(root: Path) -> dict[str, int] | None:
    """Labelled images per class of train/ (its label column only, no image read), what
    validation is carved from; None when the root has its own val/ and test/ (nothing carved)."""
    train_dir, val_dir, _ = _layout(root)
    if val_dir is not None:
        return None
    split = read_parquet_split(train_dir)
    classes, remap = _class_names({"train": split})
    return class_counts(remap(split[1]), classes)


def load_parquet(root: Path, image_size: int, in_memory: bool | None, val_fraction: float = 0.1,
                 val_seed: int = 0) -> DataBundle:
    """``root/train`` + ``root/test`` (or ``val``) shards, validation as ``folders.split_layout``
    says (a ``val/`` folder, or carved from train); each split in memory below
    ``IN_MEMORY_LIMIT_BYTES`` decoded unless ``in_memory`` says otherwise. Label -1 marks an
    unlabelled image (pre-training only; never in val or memory)."""
    train_dir, val_dir, test_dir = _layout(root)
    dirs = {"train": train_dir, "test": test_dir, **({"val": val_dir} if val_dir else {})}
    splits = {split: read_parquet_split(path) for split, path in dirs.items()}
    classes, remap = _class_names(splits)

    def dataset(split: str):
        files, y, _ = splits[split]
        ds = ParquetImageDataset(files, torch.from_numpy(remap(y).astype(np.int64)), classes,
                                 image_size)
        fits = len(ds) * 3 * image_size * image_size < IN_MEMORY_LIMIT_BYTES
        return materialize(ds) if (in_memory if in_memory is not None else fits) else ds

    train, test = dataset("train"), dataset("test")
    if val_dir is not None:
        labelled = (train.labels >= 0).nonzero().flatten().numpy()
        pretrain, val = train, dataset("val")
        memory = train if labelled.size == len(train) else take(train, labelled)
    else:
        carve = carve_validation(train.labels, classes, val_fraction, val_seed, source="parquet")
        pretrain, val = take(train, carve.pretrain), take(train, carve.val)
        memory = pretrain if carve.memory.size == carve.pretrain.size else take(train, carve.memory)
    return DataBundle(pretrain, memory, val, test, classes, image_size,
                      val_description(val_dir, val_fraction, val_seed))
