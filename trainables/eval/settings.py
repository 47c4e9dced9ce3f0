"""What every evaluation protocol's settings share: construction from a mapping, validation that
names the field, a plain form to log, and the small-data batch rule.

Each protocol's settings are a frozen dataclass deriving from ``ProtocolSettings``
(``LinearProtocol``, ``KnnProtocol``, ``RandomCropProtocol``, ``FinetuneProtocol``,
``TransferProtocol``). ``from_dict`` refuses unknown fields with a did-you-mean; a bad value raises
``ProtocolError`` whose key is ``<Class>.<field>``; ``to_dict`` gives JSON-ready values (tuples as
lists) for the caller to print and log.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, Mapping

from trainables.validation import InputError, did_you_mean, is_int, is_number

__all__ = ["AMP_CHOICES", "EvaluationError", "ProtocolError", "ProtocolSettings", "RunSettings", "scaled_batch"]

AMP_CHOICES = ("auto", "bf16", "off")


class EvaluationError(RuntimeError):
    """An evaluation cannot run; the message names the file or value and the reason."""


class ProtocolError(InputError, EvaluationError):
    """A bad protocol setting. Fields: ``key`` (``<Protocol>.<field>``, or the argument),
    ``value``, ``reason``, ``source`` (where the settings came from, if given)."""


def scaled_batch(n: int, *, reference: int = 256, min_steps_per_epoch: int = 8, minimum: int = 1) -> int:
    """The small-data batch rule of every protocol: the largest power of two (at most
    ``reference``, at least ``minimum``) that gives ``n`` images at least ``min_steps_per_epoch``
    steps per epoch. The protocols scale their learning rates linearly with it (``lr * batch /
    reference``, Goyal et al., 2017) and keep their epochs."""
    if not is_int(n) or n < 1:
        raise ProtocolError("must be a positive integer (the labelled split's size)", key="n_train", value=n)
    if not is_int(min_steps_per_epoch) or min_steps_per_epoch < 1:
        raise ProtocolError("must be a positive integer", key="min_steps_per_epoch", value=min_steps_per_epoch)
    batch = reference
    while batch > minimum and n < min_steps_per_epoch * batch:
        batch //= 2
    return max(batch, minimum)


class ProtocolSettings:
    """Base of the protocols' frozen settings dataclasses (see the module docstring)."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):  # YAML / JSON give lists
                object.__setattr__(self, f.name, tuple(value))
        self.validate()

    def validate(self) -> None:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "protocol"):
        """Build from a mapping (a YAML / JSON section, CLI overrides); missing fields keep their
        defaults; unknown fields are refused with a did-you-mean; ``source`` prefixes errors."""
        if not isinstance(values, Mapping):
            raise ProtocolError(f"expected a mapping of {cls.__name__} fields, got {type(values).__name__}",
                                source=source)
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            hints = ", ".join(f"{k!r}{did_you_mean(str(k), known)}" for k in unknown)
            raise ProtocolError(f"unknown field(s) {hints} of {cls.__name__}; known: {', '.join(sorted(known))}",
                                source=source)
        try:
            return cls(**dict(values))
        except ProtocolError as exc:
            raise exc.located(source) from None

    def to_dict(self) -> dict[str, Any]:
        """Plain values (tuples as lists), e.g. to print and to log as parameters."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def replace(self, **changes: Any):
        return dataclasses.replace(self, **changes)

    # -- validation helpers ---------------------------------------------------------------------

    def _bad(self, name: str, reason: str) -> ProtocolError:
        return ProtocolError(reason, key=f"{type(self).__name__}.{name}", value=getattr(self, name))

    def _require_ints(self, names: Iterable[str], minimum: int) -> None:
        for name in names:
            value = getattr(self, name)
            if not is_int(value) or value < minimum:
                raise self._bad(name, f"must be an integer >= {minimum}")

    def _require_numbers(self, names: Iterable[str], *, low: float, high: float = float("inf"),
                         low_open: bool = False, high_open: bool = False, reason: str = "") -> None:
        for name in names:
            value = getattr(self, name)
            ok = is_number(value) and (value > low if low_open else value >= low) and (
                value < high if high_open else value <= high)
            if not ok:
                interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
                raise self._bad(name, reason or f"must be a number in {interval}")

    def _require_choice(self, name: str, choices: Iterable[str]) -> None:
        choices = tuple(choices)
        value = getattr(self, name)
        if value not in choices:
            hint = did_you_mean(value, choices) if isinstance(value, str) else ""
            raise self._bad(name, f"must be one of {', '.join(choices)}{hint}")

    def _require_range(self, name: str, reason: str) -> None:
        """Two numbers ``0 < min <= max <= 1`` (an area range of RandomResizedCrop)."""
        v = getattr(self, name)
        if not (isinstance(v, tuple) and len(v) == 2 and all(is_number(x) for x in v) and 0 < v[0] <= v[1] <= 1):
            raise self._bad(name, reason)



_RUNTIME = ("seed", "eval_batch_size", "amp", "loader_workers")


@dataclass(frozen=True)
class RunSettings(ProtocolSettings):
    """Base of the protocols that run the backbone themselves (all but ``transfer``).

    Fields: ``seed`` (all the protocol's randomness derives from it), ``eval_batch_size`` (of the
    feature passes; no effect on results), ``amp`` (bf16 autocast of the forwards: ``auto`` =
    on CUDA, fp32 on CPU; ``bf16`` / ``off`` force it), ``loader_workers`` (DataLoader processes
    for file-backed sets).

    ``for_dataset_size`` adapts a protocol whose defaults are ImageNet's (1.28M images: 5,005
    steps of batch 256 per epoch) to a small labelled split, where the same batch would leave few
    optimizer steps: what defines the protocol (epochs, schedule, momentum, weight decay,
    augmentation) is kept, and only the batch shrinks, to the largest power of two giving at
    least ``min_steps_per_epoch`` steps per epoch (``scaled_batch``; at most ``REFERENCE_BATCH``,
    at least ``MIN_BATCH``), with the learning rates in ``SCALED_WITH_BATCH`` scaled linearly,
    ``lr * batch / REFERENCE_BATCH`` (Goyal et al., 2017; the rule ``TrainConfig.scaled_lr``
    applies to pre-training). Epochs are not cut: a small split's epoch is cheap, and fewer
    epochs would change the protocol. Any field can be overridden; an explicit ``batch_size``
    keeps the default learning rates unless they are given too.
    """

    seed: int = 0
    eval_batch_size: int = 512
    amp: str = "auto"
    loader_workers: int = 0

    #: The batch the learning rates are given for, the fields scaled with the batch, the least batch.
    REFERENCE_BATCH: ClassVar[int] = 256
    SCALED_WITH_BATCH: ClassVar[tuple[str, ...]] = ("lr",)
    MIN_BATCH: ClassVar[int] = 1

    @classmethod
    def for_dataset_size(cls, n_train: int, *, min_steps_per_epoch: int = 8, **overrides: Any):
        """The protocol for a labelled train split of ``n_train`` images (see the class docstring)."""
        batch = scaled_batch(n_train, reference=cls.REFERENCE_BATCH, min_steps_per_epoch=min_steps_per_epoch,
                             minimum=cls.MIN_BATCH)
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        scaled = {"batch_size": batch,
                  **{name: defaults[name] * batch / cls.REFERENCE_BATCH for name in cls.SCALED_WITH_BATCH}}
        if "batch_size" in overrides:
            scaled = {}
        return cls(**{**scaled, **overrides})

    def to_dict(self) -> dict[str, Any]:
        """The protocol's own fields first, then the runtime ones."""
        d = super().to_dict()
        return {**{k: v for k, v in d.items() if k not in _RUNTIME}, **{k: d[k] for k in _RUNTIME}}

    def _require_runtime(self) -> None:
        self._require_ints(("eval_batch_size",), 1)
        self._require_ints(("seed", "loader_workers"), 0)
        self._require_choice("amp", AMP_CHOICES)
