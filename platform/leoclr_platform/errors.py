"""The platform's errors: a bad input or an unusable resource, with fields that callers read.

Like the engine's errors (`trainables.validation.InputError`, which they subclass) they carry
`source` (where: a space file, a flag, a store URI), `key` (the setting), `value` (what was
given) and `reason` (why, and the fix), and `str()` is the one line `leoclr` prints after
"leoclr: error: ". Where a message reads better as a sentence than as "source: key=value:
reason", it is given whole (`message=`) and the fields still say where and why.
"""

from __future__ import annotations

from trainables.validation import InputError

__all__ = ["PlatformError", "SpaceError", "SweepError", "TrackingError", "RegistryError", "first_line"]


class PlatformError(InputError):
    """Any refusal of the platform: `leoclr` prints it on one line and exits with status 2."""


class SpaceError(PlatformError):
    """A bad search space: `source` is the file, `key` the key path (`space.lr.loguniform`).
    The message is "<file>: <key.path>: <reason>"."""

    @classmethod
    def from_input_error(cls, exc: InputError) -> "SpaceError":
        """The same problem (a `ConfigError` of a trial config, say) as a space error, same text."""
        return cls(exc.reason, source=exc.source, key=exc.key, value=exc.value, message=str(exc))


class SweepError(PlatformError, RuntimeError):
    """A sweep cannot run: bad storage, unknown sweep to resume, impossible resources, no Ray."""


class TrackingError(PlatformError, RuntimeError):
    """The tracking store cannot be used: unreachable server, unwritable path, bad URI..."""


class RegistryError(PlatformError, RuntimeError):
    """Nothing to promote, an unknown model, alias, version or run."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (or its type's name), for one-line reports of
    errors raised by libraries (MLflow, SQLAlchemy...) whose messages run over many lines."""
    text = str(exc).strip().splitlines()
    return text[0][:limit] if text else type(exc).__name__
