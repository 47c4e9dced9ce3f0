"""The evaluation protocols by name: ``parse_protocols`` turns ``"knn,linear,semi_10pct,
transfer:cifar100"`` into typed, validated settings; ``run_protocols`` runs them on a backbone.

Names (docs/method.md, "Evaluation", has the table of the paper's evaluations):

=======================  ===================================  ==============================
name                     runs                                 settings
=======================  ===================================  ==============================
``knn``                  ``eval/knn.py: run_knn``             ``KnnProtocol``
``linear``               ``eval/linear.py: run_linear``       ``LinearProtocol``
``random_crop``          ``eval/random_crop.py``              ``RandomCropProtocol`` (adds
                         ``run_random_crop``                  ``linear`` before it if absent)
``semi_1pct``            ``eval/finetune.py: run_finetune``   ``FinetuneProtocol`` (1 %, 60 ep)
``semi_10pct``           same                                 (10 %, 30 epochs)
``semi_<N>pct``,         same, N % / any fraction in (0, 1]   (60 epochs below 10 %, else 30)
``semi:<fraction>``
``transfer:<dataset>``   ``eval/transfer.py: run_transfer``   ``TransferProtocol``
=======================  ===================================  ==============================

Settings come from a mapping keyed by a protocol's name (``semi_10pct``, ``transfer:cifar100``)
or kind (``knn``, ``linear``, ``random_crop``, ``semi``, ``transfer``; a name's keys win over its
kind's). Given the data (``data=``), the defaults are scaled to its labelled split by the
protocols' ``for_dataset_size`` rules. Every problem is a ``ProtocolError`` naming the protocol,
the field and the reason, raised before any compute: ``run_protocols`` loads every transfer
dataset before it trains anything.

Every protocol reports top-1 / top-5 (percent) on the *test* split, and per-epoch stats through
``progress(name, stats)`` (``stats``: epoch, lr, train_loss, train_top1, ...; ``name`` is the
protocol's, ``<name>/linear`` or ``<name>/finetune`` for the two halves of a transfer).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn as nn

from trainables.checkpoint import load_encoder
from trainables.data import DATASETS, DataBundle, load_data
from trainables.data.subsets import dataset_labels
from trainables.eval.finetune import FinetuneProtocol, run_finetune
from trainables.eval.knn import KnnProtocol, run_knn
from trainables.eval.linear import run_linear
from trainables.eval.protocol import LinearProtocol
from trainables.eval.random_crop import RandomCropProtocol, run_random_crop
from trainables.eval.settings import EvaluationError, ProtocolError, ProtocolSettings
from trainables.eval.transfer import TransferProtocol, load_transfer_data, run_transfer
from trainables.validation import did_you_mean

__all__ = ["KINDS", "PROTOCOLS", "ProtocolResult", "ProtocolSpec", "evaluate_protocols", "parse_protocols",
           "run_protocols"]

#: The protocols a user can name; ``semi_<N>pct``, ``semi:<fraction>`` and ``transfer:<dataset>``
#: are the parametrised forms.
PROTOCOLS = ("knn", "linear", "random_crop", "semi_1pct", "semi_10pct", "transfer:<dataset>")
KINDS = ("knn", "linear", "random_crop", "semi", "transfer")
_CHOICES = "knn, linear, random_crop, semi_1pct, semi_10pct, semi_<N>pct, semi:<fraction>, transfer:<dataset>"
ProgressFn = Callable[[str, dict[str, float]], None]


@dataclass(frozen=True)
class ProtocolSpec:
    """One protocol to run: ``name`` (as reported), ``kind`` (one of ``KINDS``), ``settings``."""

    name: str
    kind: str
    settings: ProtocolSettings

    def to_dict(self) -> dict[str, Any]:
        """``{"protocol": name, "settings": <class name>, **fields}``: what to print and log."""
        return {"protocol": self.name, "settings": type(self.settings).__name__, **self.settings.to_dict()}

    def describe(self) -> str:
        """One line: ``semi_10pct: FinetuneProtocol(label_fraction=0.1, epochs=30, ...)``."""
        fields = ", ".join(f"{k}={v!r}" for k, v in self.settings.to_dict().items())
        return f"{self.name}: {type(self.settings).__name__}({fields})"


@dataclass
class ProtocolResult:
    """What a protocol measured: ``metrics`` (``top1`` / ``top5`` on the test split, and the
    protocol's own), its ``settings`` (``to_dict``) and every epoch's progress stats."""

    name: str
    kind: str
    settings: dict[str, Any]
    metrics: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------
# Parsing
# ------------------------------------------------------------------------------------------------


def _split(text: str | Sequence[str]) -> list[str]:
    items = text.split(",") if isinstance(text, str) else [str(t) for t in text]
    return [t.strip() for t in items if t.strip()]


def _kind_of(name: str, source: str) -> tuple[str, Any]:
    """(kind, argument) of a protocol name: the fraction of a semi, the dataset of a transfer."""
    def bad(reason: str) -> ProtocolError:
        return ProtocolError(reason, source=source, key="protocol", value=name)

    if name in ("knn", "linear", "random_crop"):
        return name, None
    semi = re.fullmatch(r"semi_(\d+(?:\.\d+)?)pct|semi:(.*)", name)
    if semi:
        text = semi.group(1) or semi.group(2)
        try:
            fraction = float(text) / (100.0 if semi.group(1) else 1.0)
        except ValueError:
            raise bad(f"the label fraction {text!r} is not a number; use semi:<fraction in (0, 1]> "
                      "or semi_<N>pct") from None
        if not 0 < fraction <= 1:
            raise bad(f"the label fraction {fraction:g} must be in (0, 1] (the share of the labelled "
                      "train images that fine-tuning uses)")
        return "semi", fraction
    if name == "transfer" or name.startswith("transfer:"):
        dataset = name.partition(":")[2]
        if not dataset:
            raise bad(f"needs a dataset: transfer:<name>, one of {', '.join(DATASETS)}")
        if dataset not in DATASETS:
            raise bad(f"unknown dataset {dataset!r}{did_you_mean(dataset, DATASETS)}; "
                      f"one of {', '.join(DATASETS)}")
        return "transfer", dataset
    known = ["knn", "linear", "random_crop", "semi_1pct", "semi_10pct", "transfer:"]
    raise bad(f"unknown protocol{did_you_mean(name, known)}; choose from {_CHOICES}")


def _fields(settings: Mapping[str, Any], name: str, kind: str) -> dict[str, Any]:
    """The fields given for a protocol: its kind's, then its name's (which win)."""
    out: dict[str, Any] = {}
    for key in (kind, name):
        values = settings.get(key, {})
        if not isinstance(values, Mapping):
            raise ProtocolError(f"expected a mapping of fields, got {type(values).__name__}", source=key)
        out.update(values)
    return out


def _check_settings_keys(settings: Mapping[str, Any], source: str) -> None:
    for key in settings:
        try:
            _kind_of(str(key), source)
        except ProtocolError:
            if key in KINDS:
                continue
            known = [*KINDS, "semi_1pct", "semi_10pct"]
            raise ProtocolError(f"settings for an unknown protocol{did_you_mean(str(key), known)}; keys are "
                                f"protocol names ({_CHOICES}) or kinds ({', '.join(KINDS)})",
                                source=source, key="settings", value=key) from None


def _settings(name: str, kind: str, arg: Any, values: dict[str, Any], data: DataBundle | None) -> ProtocolSettings:
    if kind == "knn":
        return KnnProtocol.from_dict(values, source=name)
    if kind == "random_crop":
        return RandomCropProtocol.from_dict(values, source=name)
    if kind == "transfer":
        return TransferProtocol.from_dict({**values, "dataset": arg}, source=name)
    if kind == "linear":
        checked = LinearProtocol.from_dict(values, source=name)  # names and values, with their source
        return LinearProtocol.for_dataset_size(len(data.memory), **values) if data is not None else checked
    if "label_fraction" in values:
        raise ProtocolError(f"is set by the protocol's name ({name} = {arg:g}); name another fraction instead",
                            source=name, key="FinetuneProtocol.label_fraction", value=values["label_fraction"])
    FinetuneProtocol.from_dict(values, source=name)
    labels = dataset_labels(data.memory) if data is not None else None
    try:
        return FinetuneProtocol.semi_supervised(arg, labels, **values)
    except ProtocolError as exc:
        raise exc.located(name) from None


def parse_protocols(text: str | Sequence[str], settings: Mapping[str, Mapping[str, Any]] | None = None, *,
                    data: DataBundle | None = None, source: str = "--protocols") -> list[ProtocolSpec]:
    """``"knn,linear,semi_10pct,transfer:cifar100"`` (or a list of names) -> typed, validated
    specs, in order (``linear`` is added before ``random_crop`` when it is not listed).

    settings: fields per protocol name or kind (see the module docstring). data: the evaluation's
    ``DataBundle``; given, defaults are scaled to its labelled split. Errors: ``ProtocolError``
    with ``source`` (the option, or the protocol) and the bad name or field.
    """
    settings = settings or {}
    if not isinstance(settings, Mapping):
        raise ProtocolError(f"expected a mapping of protocol settings, got {type(settings).__name__}", source=source)
    _check_settings_keys(settings, source)
    names = _split(text)
    if not names:
        raise ProtocolError(f"no protocol given; choose from {_CHOICES}", source=source)
    if "random_crop" in names and "linear" not in names:  # it tests the linear protocol's classifier
        names.insert(names.index("random_crop"), "linear")
    if "random_crop" in names and names.index("linear") > names.index("random_crop"):
        names.remove("linear")
        names.insert(names.index("random_crop"), "linear")
    specs, seen = [], set()
    for name in names:
        kind, arg = _kind_of(name, source)
        key = (kind, arg)
        if key in seen:
            raise ProtocolError("listed twice", source=source, key="protocol", value=name)
        seen.add(key)
        specs.append(ProtocolSpec(name, kind, _settings(name, kind, arg, _fields(settings, name, kind), data)))
    return specs


# ------------------------------------------------------------------------------------------------
# Running
# ------------------------------------------------------------------------------------------------


def run_protocols(backbone: nn.Module, data: DataBundle, specs: Sequence[ProtocolSpec], *, image_size: int,
                  device: str | torch.device | None = None,
                  progress: ProgressFn | None = None) -> dict[str, ProtocolResult]:
    """Run ``specs`` (from ``parse_protocols``) on ``backbone`` (``B x 3 x R x R -> B x D``; left
    exactly as it was: the fine-tuning protocols train a copy) with ``data`` at resolution
    ``image_size`` R. Transfer datasets are loaded first, so a missing one fails before any
    compute. Returns ``{name: ProtocolResult}`` in the specs' order."""
    transfer_data = {s.name: load_transfer_data(s.settings, image_size, source=s.name)
                     for s in specs if s.kind == "transfer"}
    results: dict[str, ProtocolResult] = {}
    probe = None
    for spec in specs:
        history: list[dict[str, Any]] = []
        report = _reporter(spec.name, history, progress)
        kw = dict(image_size=image_size, device=device)
        if spec.kind == "knn":
            metrics = run_knn(backbone, data, spec.settings, **kw)
        elif spec.kind == "linear":
            probe = run_linear(backbone, data, spec.settings, progress=report, **kw)
            metrics = dict(probe.metrics)
        elif spec.kind == "random_crop":
            if probe is None:
                raise EvaluationError("random_crop tests the linear protocol's classifier: run linear before it")
            metrics = run_random_crop(backbone, data, probe, spec.settings, **kw)
        elif spec.kind == "semi":
            metrics = run_finetune(backbone, data, spec.settings, progress=report, **kw).metrics
        else:
            metrics = run_transfer(backbone, spec.settings, data=transfer_data[spec.name],
                                   progress=lambda mode, stats: report(stats, mode), **kw)
        results[spec.name] = ProtocolResult(spec.name, spec.kind, spec.settings.to_dict(), metrics, history)
    return results


def _reporter(name: str, history: list[dict[str, Any]], progress: ProgressFn | None):
    """Record every epoch's stats of protocol ``name`` in ``history`` and pass them on as
    ``progress(name, stats)`` (``<name>/<part>`` for a part of it, e.g. a transfer's finetune)."""
    def report(stats: dict[str, float], part: str | None = None) -> None:
        history.append({**stats, **({"mode": part} if part else {})})
        if progress is not None:
            progress(f"{name}/{part}" if part else name, dict(stats))
    return report


def evaluate_protocols(directory: str | Path, protocols: str | Sequence[str],
                       settings: Mapping[str, Mapping[str, Any]] | None = None, *, data: DataBundle | None = None,
                       device: str | torch.device | None = None,
                       progress: ProgressFn | None = None) -> dict[str, ProtocolResult]:
    """A checkpoint folder (``load_encoder``: a backbone that does not match its config is a
    ``CheckpointError``) evaluated by ``protocols`` on its run's own dataset (or ``data``) at the
    run's view size; the kNN defaults to the run's ``knn_k`` / ``knn_temperature``. Parses (and
    so validates) everything before loading data or computing."""
    encoder = load_encoder(directory)
    cfg = encoder.config
    settings = dict(settings or {})
    settings["knn"] = {"k": cfg.knn_k, "temperature": cfg.knn_temperature, **settings.get("knn", {})}
    parse_protocols(protocols, settings)  # names and fields, before the data is read
    if data is None:
        data = load_data(cfg.dataset, root=cfg.data_root, image_size=cfg.image_size, download=cfg.download,
                         photo_patches=cfg.photo_patches)
    specs = parse_protocols(protocols, settings, data=data)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return run_protocols(encoder.backbone, data, specs, image_size=cfg.resolved_view_size, device=device,
                         progress=progress)
