"""Progress within an epoch, for `leoclr train` (pure Python; the loop calls a hook per step).

`EpochProgress(batch_size)` is a `progress(epoch, step, steps)` hook for `Trainer.fit` (called
with step 0 when an epoch starts, then after every step): on a
terminal a one-line bar redrawn with a carriage return ("epoch 3 [#####.....] 45/100 steps
812 img/s ETA 0:12"), erased when the epoch ends so the epoch's result line follows cleanly;
in a log (stdout not a terminal) a plain line every ~10 % of the epoch or every 30 s, whichever
comes first.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, TextIO

ProgressFn = Callable[[int, int, int], None]


def format_eta(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class EpochProgress:
    """A per-step progress hook: `hook(epoch, step, steps)` after step `step` of `steps`."""

    def __init__(self, batch_size: int, stream: TextIO | None = None, *, tty: bool | None = None,
                 every_s: float = 30.0, width: int = 20, clock: Callable[[], float] = time.monotonic):
        self.batch_size = batch_size
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.every_s, self.width, self.clock = every_s, width, clock
        self._epoch: int | None = None
        self._start = self._last_print = 0.0
        self._last_tenth = 0

    def __call__(self, epoch: int, step: int, steps: int) -> None:
        now = self.clock()
        if epoch != self._epoch or step == 0:
            self._epoch, self._start, self._last_print, self._last_tenth = epoch, now, now, 0
        if step == 0:
            return
        elapsed = max(now - self._start, 1e-9)
        rate = step * self.batch_size / elapsed
        eta = (steps - step) * elapsed / max(step, 1)
        text = f"{step}/{steps} steps  {rate:,.0f} img/s  ETA {format_eta(eta)}"
        if self.tty:
            filled = self.width * step // max(steps, 1)
            bar = "#" * filled + "." * (self.width - filled)
            line = f"epoch {epoch} [{bar}] {text}"
            self.stream.write("\r" + (line if step < steps else " " * len(line) + "\r"))
            self.stream.flush()
            return
        tenth = 10 * step // max(steps, 1)
        if step < steps and (tenth > self._last_tenth or now - self._last_print >= self.every_s):
            self._last_tenth, self._last_print = tenth, now
            print(f"  epoch {epoch}: {text}", file=self.stream, flush=True)
