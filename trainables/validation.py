"""What every validator of the project shares: one structured error, one did-you-mean, predicates.

`InputError` carries the problem as fields (`source`, `key`, `value`, `reason`) so that callers
read them instead of parsing the message; its message is the one line the user sees. The
engine's `ConfigError`, `DatasetError`, `CheckpointError` and `ProtocolError` are subclasses, and
the platform's validators use the same `did_you_mean` and predicates, so one typo gets one hint
wherever it is made.
"""

from __future__ import annotations

import difflib
import math
from typing import Any, Iterable

__all__ = [
    "NOT_GIVEN",
    "InputError",
    "did_you_mean",
    "format_problem",
    "is_int",
    "is_number",
    "is_probability",
]


class _NotGiven:
    """Marks a field that holds no value (None is a value a user can give)."""

    def __repr__(self) -> str:
        return "NOT_GIVEN"

    def __reduce__(self):  # one instance, also after pickling (Ray sends errors between processes)
        return "NOT_GIVEN"


NOT_GIVEN: Any = _NotGiven()


def format_problem(source: str | None, key: str | None, value: Any, reason: str) -> str:
    """The project's one-line form: ``<source>: <key>=<value!r>: <reason>``; parts that are not
    given are left out (``key`` alone without a value, no source, ...)."""
    parts = []
    if source:
        parts.append(str(source))
    if key:
        parts.append(str(key) if value is NOT_GIVEN else f"{key}={value!r}")
    parts.append(reason)
    return ": ".join(parts)


class InputError(ValueError):
    """A bad user input: a configuration value, a data file, a checkpoint, a protocol field.

    Fields: ``source`` (where it was given: a file, ``--set``, a dataset folder; or None),
    ``key`` (the setting, e.g. ``temperature`` or ``photo_patches.scale``; or None), ``value``
    (what was given; ``NOT_GIVEN`` when there is none to show), ``reason`` (why it is refused
    and, where one exists, the fix).

    ``str()`` is ``format_problem(source, key, value, reason)``, unless ``message`` is passed:
    some messages (a file that does not decode, a folder layout) read better as a sentence, and
    keep their wording while the fields still say where and why. ``InputError("text")`` alone is
    a message with no fields but ``reason``.
    """

    def __init__(self, reason: str, *, source: str | None = None, key: str | None = None,
                 value: Any = NOT_GIVEN, message: str | None = None):
        self.source = source
        self.key = key
        self.value = value
        self.reason = reason
        super().__init__(message if message is not None else format_problem(source, key, value, reason))

    @property
    def detail(self) -> str:
        """The message without its source: ``<key>=<value>: <reason>``."""
        return format_problem(None, self.key, self.value, self.reason)

    def located(self, source: str | None):
        """The same problem (same class and fields), given in ``source``."""
        return type(self)(self.reason, source=source, key=self.key, value=self.value)


def did_you_mean(name: str, known: Iterable[Any]) -> str:
    """``" (did you mean 'x'?)"`` for a misspelt or shortened ``name``, else ``""``.

    The one heuristic of the project, in order: names that ``name`` (3+ characters) is a prefix
    of ("warmup" -> warmup_epochs); else difflib's closest name ("tempreature" -> temperature);
    else names that contain ``name`` (4+ characters: "momentum" -> key_momentum,
    optimizer_momentum). At most two names are offered.
    """
    names = [str(k) for k in known]
    close = [n for n in names if len(name) >= 3 and n.startswith(name)]
    if not close:
        close = difflib.get_close_matches(name, names, n=1)
    if not close and len(name) >= 4:
        close = [n for n in names if name in n]
    if not close:
        return ""
    return f" (did you mean {' or '.join(repr(c) for c in close[:2])}?)"


def is_int(value: Any) -> bool:
    """An integer, and not a bool (YAML's true/false are ints to Python)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite int or float, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_probability(value: Any) -> bool:
    """A number in [0, 1]."""
    return is_number(value) and 0.0 <= value <= 1.0
