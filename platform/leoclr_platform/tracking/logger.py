"""Delivery of tracking calls: in order, in a background thread, retried while the store is away.

Training never waits for tracking: the sweep driver submits each MLflow call here and goes on.
A transient failure (server down, database locked, timeout) is retried with backoff and nothing
overtakes it; a permanent one (bad value, unknown run) is reported once and dropped.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from leoclr_platform.errors import first_line

#: MLflow error codes that retrying cannot fix.
PERMANENT_ERRORS = {"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS",
                    "INVALID_STATE", "BAD_REQUEST", "PERMISSION_DENIED", "UNAUTHENTICATED"}


def is_permanent(exc: BaseException) -> bool:
    """Errors that retrying cannot fix (bad value, unknown run): report and drop the call."""
    return getattr(exc, "error_code", None) in PERMANENT_ERRORS


@dataclass
class _Call:
    fn: Callable[[], Any]
    what: str


class AsyncLogger:
    """One background thread that runs tracking calls in submission order.

    A call that fails with a transient error is retried with exponential backoff (0.5 s doubling
    to `max_backoff`) and nothing behind it overtakes it; a permanent error is reported once and
    the call dropped. `flush(timeout)` waits until everything submitted so far is delivered and
    says whether it was.
    """

    def __init__(self, name: str = "mlflow", max_backoff: float = 30.0, warn: Callable[[str], None] | None = None):
        self._queue: deque[_Call] = deque()
        self._cv = threading.Condition()
        self._closed = False
        self._abandon = False
        self._max_backoff = max_backoff
        self._warn = warn or (lambda msg: print(f"leoclr: tracking: {msg}", file=sys.stderr, flush=True))
        self.delivered = 0
        self.dropped: list[str] = []
        self.failures = 0  # transient failures seen (each retried)
        self.down_since: float | None = None
        self._thread = threading.Thread(target=self._run, name=f"leoclr-{name}-logger", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], Any], what: str) -> None:
        with self._cv:
            if self._closed:
                raise RuntimeError("AsyncLogger is closed")
            self._queue.append(_Call(fn, what))
            self._cv.notify_all()

    @property
    def pending(self) -> int:
        with self._cv:
            return len(self._queue)  # the call in flight stays queued until it is delivered

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closed:
                    self._cv.wait()
                if not self._queue:
                    return
                call = self._queue[0]
            if not self._deliver(call):
                return  # closed while the store was away: the rest stays pending
            with self._cv:
                self._queue.popleft()
                self.delivered += 1
                self._cv.notify_all()

    def _deliver(self, call: _Call) -> bool:
        """Run one call until it succeeds or fails for good; False if abandoned by close()."""
        backoff = 0.5
        while True:
            try:
                call.fn()
                break
            except Exception as exc:  # noqa: BLE001 - classified below
                if is_permanent(exc):
                    self._warn(f"{call.what}: {first_line(exc)} (not retried)")
                    self.dropped.append(call.what)
                    break
                self.failures += 1
                if self.down_since is None:
                    self.down_since = time.monotonic()
                    self._warn(f"{call.what} failed ({type(exc).__name__}: {first_line(exc)}); "
                               "training goes on, retrying in the background")
                with self._cv:
                    if self._closed and self._abandon:
                        return False
                    self._cv.wait(timeout=backoff)
                backoff = min(backoff * 2, self._max_backoff)
        if self.down_since is not None:
            self._warn(f"store reachable again after {time.monotonic() - self.down_since:.0f} s; catching up")
            self.down_since = None
        return True

    def flush(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            while self._queue:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cv.wait(timeout=remaining)
            return True

    def close(self, timeout: float | None = None) -> bool:
        """Deliver what is pending (up to `timeout` s), then stop; False if some of it was not."""
        done = self.flush(timeout)
        with self._cv:
            self._closed = True
            self._abandon = not done
            self._cv.notify_all()
        if done:
            self._thread.join(timeout=5)
        return done
