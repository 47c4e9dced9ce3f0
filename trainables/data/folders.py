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
