"""Finding a dataset's folders: its root and its train / test split folders."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from trainables.data.errors import DatasetError


def dataset_root(root: str | None, name: str, base_folder: str | None = None) -> Path:
    """The folder of dataset ``name`` (``data_root``); the extracted folder ``base_folder``
    itself (e.g. ``cifar-10-batches-py``) is accepted too and means its parent."""
    if root is None:
        raise DatasetError(f"dataset {name!r} needs the folder that holds (or will receive, with "
                           "download: true) its files", key="data_root", value=None)
    path = Path(root).expanduser()
    if base_folder is not None and path.name == base_folder:
        path = path.parent  # accept the extracted folder itself as root
    return path


def split_dir(root: Path, names: Sequence[str], what: str, hint: str) -> Path:
    """The first of ``root/<name>`` for ``names`` (e.g. val, test) that is a folder; else a
    ``DatasetError`` of dataset ``what`` ending with ``hint``."""
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise DatasetError(f"no {' or '.join(repr(n + '/') for n in names)} folder under {root} "
                       f"(expected {root / names[0]}); {hint}", source=what)


def split_layout(root: Path, what: str, hint: str) -> tuple[Path, Path | None, Path]:
    """The (train, val, test) folders of an ImageFolder / Parquet root.

    train/ + val/ + test/: val = val/, test = test/. train/ + val/ only (the ImageNet layout):
    test = val/ and val is None (carved from train/). train/ + test/: val is None (carved).
    A missing train/, or neither val/ nor test/, is a ``DatasetError`` ending with ``hint``.
    """
    train = split_dir(root, ("train",), what, hint)
    test = split_dir(root, ("test", "val"), what, hint)
    val = root / "val" if test.name == "test" and (root / "val").is_dir() else None
    return train, val, test


def val_description(val: Path | None, fraction: float, seed: int) -> str:
    """``DataBundle.val_from`` for a folder layout: "val/ folder" or how it was carved."""
    from trainables.data.splits import carved_description

    return f"{val.name}/ folder" if val is not None else carved_description(fraction, seed)
