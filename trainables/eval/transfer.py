"""The ``transfer:<dataset>`` protocol: the pre-trained backbone on a second dataset, by a linear
probe and by fine-tuning the whole network (LeOCLR Table 3: CIFAR-10/100, Cars, Birdsnap, Pets).

The second dataset comes from the same data sources as training (``trainables.data.load_data``:
CIFAR-10/100, STL-10, any ImageFolder or Parquet set, photo_patches, digits). On it:

* ``linear``: the ``linear`` protocol (``run_linear``), ``LinearProtocol.for_dataset_size`` of
  its labelled train split, fields overridable through ``linear``;
* ``finetune``: ``run_finetune`` with every label (``label_fraction`` 1), 30 epochs, the
  semi-supervised protocol's optimiser, ``FinetuneProtocol.for_dataset_size``, fields
  overridable through ``finetune``.

Both report top-1 / top-5 on the second dataset's test split. The paper follows SimCLR / BYOL
and searches learning rate and weight decay per target dataset; here the settings are fixed
and recorded (docs/method.md lists the deviation).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
import torch.nn as nn

from trainables.data import DATASETS, DataBundle, DatasetError, load_data
from trainables.eval.finetune import FinetuneProtocol, run_finetune
from trainables.eval.linear import run_linear
from trainables.eval.protocol import LinearProtocol
from trainables.eval.settings import ProtocolError, ProtocolSettings
from trainables.validation import is_int

__all__ = ["TRANSFER_MODES", "TransferProtocol", "load_transfer_data", "run_transfer"]

TRANSFER_MODES = ("linear", "finetune")
#: Datasets that need no folder (built offline).
_OFFLINE = ("photo_patches", "digits")


@dataclass(frozen=True)
class TransferProtocol(ProtocolSettings):
    """Settings of ``transfer:<dataset>``.

    ``dataset`` (one of ``trainables.data.DATASETS``), ``data_root`` (its folder; required but
    for photo_patches / digits), ``download`` (let torchvision fetch CIFAR / STL),
    ``image_size`` (the second set's load size; None = the view size R), ``photo_patches``
    (builder options); ``modes``: which of linear / finetune run; ``linear`` / ``finetune``:
    fields of ``LinearProtocol`` / ``FinetuneProtocol`` overriding their small-data defaults.
    """

    dataset: str = "cifar100"
    data_root: str | None = None
    download: bool = False
    image_size: int | None = None
    photo_patches: Mapping[str, Any] = field(default_factory=dict)
    modes: tuple[str, ...] = TRANSFER_MODES
    linear: Mapping[str, Any] = field(default_factory=dict)
    finetune: Mapping[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        self._require_choice("dataset", DATASETS)
        if self.dataset not in _OFFLINE and not self.data_root:
            raise self._bad("data_root", f"dataset {self.dataset!r} needs data_root (the folder holding its files)")
        if self.data_root is not None and not isinstance(self.data_root, str):
            raise self._bad("data_root", "must be a folder (a string) or null")
        if not isinstance(self.download, bool):
            raise self._bad("download", "must be true or false")
        if self.image_size is not None and (not is_int(self.image_size) or self.image_size < 8):
            raise self._bad("image_size", "must be an integer >= 8 (pixels) or null for the view size")
        if not (isinstance(self.modes, tuple) and self.modes and set(self.modes) <= set(TRANSFER_MODES)
                and len(set(self.modes)) == len(self.modes)):
            raise self._bad("modes", f"must be a non-empty list of {', '.join(TRANSFER_MODES)}")
        for name in ("photo_patches", "linear", "finetune"):
            if not isinstance(getattr(self, name), Mapping):
                raise self._bad(name, "must be a mapping of fields")
        LinearProtocol.from_dict(self.linear, source="TransferProtocol.linear")  # checks names and values
        FinetuneProtocol.from_dict(self.finetune, source="TransferProtocol.finetune")

    def linear_protocol(self, n_train: int) -> LinearProtocol:
        return LinearProtocol.for_dataset_size(n_train, **self.linear)

    def finetune_protocol(self, n_train: int) -> FinetuneProtocol:
        return FinetuneProtocol.for_dataset_size(n_train, **{"label_fraction": 1.0, **self.finetune})


def load_transfer_data(settings: TransferProtocol, view_size: int, source: str = "transfer") -> DataBundle:
    """The second dataset, loaded at ``settings.image_size`` (None: ``view_size``). A dataset that
    cannot be found or read raises ``ProtocolError`` naming the protocol, the dataset and the
    reason (before any compute)."""
    try:
        return load_data(settings.dataset, root=settings.data_root, image_size=settings.image_size or view_size,
                         download=settings.download, photo_patches=dict(settings.photo_patches))
    except DatasetError as exc:
        raise ProtocolError(f"cannot load the transfer dataset {settings.dataset!r}: {exc}", source=source,
                            key="TransferProtocol.data_root", value=settings.data_root) from exc


def run_transfer(backbone: nn.Module, settings: TransferProtocol, *, image_size: int,
                 device: str | torch.device | None = None, data: DataBundle | None = None,
                 progress: Callable[[str, dict[str, float]], None] | None = None) -> dict[str, float]:
    """``transfer:<settings.dataset>`` with ``backbone`` (left exactly as it was) at resolution
    ``image_size``. data: the second dataset if already loaded (``load_transfer_data``).
    progress(mode, stats): every epoch of each mode ("linear", "finetune").

    Returns percentages on the second dataset's test split: ``linear_top1/5``,
    ``finetune_top1/5`` (for the modes run), ``top1`` / ``top5`` (fine-tuning's, the paper's
    Table 3 measure, or the linear probe's if fine-tuning is not run); ``n_train``, ``n_test``,
    ``num_classes``, ``eval_time_s``.
    """
    start = time.perf_counter()
    data = data if data is not None else load_transfer_data(settings, image_size)
    n_train = len(data.memory)

    def report(mode: str):
        return None if progress is None else (lambda stats: progress(mode, stats))

    result: dict[str, float] = {}
    if "linear" in settings.modes:
        probe = run_linear(backbone, data, settings.linear_protocol(n_train), image_size=image_size,
                           device=device, progress=report("linear"))
        result.update(linear_top1=probe.metrics["top1"], linear_top5=probe.metrics["top5"])
    if "finetune" in settings.modes:
        tuned = run_finetune(backbone, data, settings.finetune_protocol(n_train), image_size=image_size,
                             device=device, progress=report("finetune"))
        result.update(finetune_top1=tuned.metrics["top1"], finetune_top5=tuned.metrics["top5"])
    main = "finetune" if "finetune" in settings.modes else "linear"
    result.update(top1=result[f"{main}_top1"], top5=result[f"{main}_top5"], n_train=n_train,
                  n_test=len(data.test), num_classes=len(data.classes), eval_time_s=time.perf_counter() - start)
    return result
