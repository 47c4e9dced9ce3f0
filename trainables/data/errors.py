"""The one error of the data package."""

from __future__ import annotations

from trainables.validation import InputError


class DatasetError(InputError):
    """A user-facing data problem. Fields: ``source`` (the file, folder or dataset name), ``key``
    (the setting, e.g. ``data_root`` or ``photo_patches.scale``), ``value``, ``reason``; the
    message names the path or key and how to fix it."""
