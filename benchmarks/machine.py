"""The machine a benchmark ran on, for the headers of the benchmarks' tables and JSON files."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (else what `platform` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_note(before: tuple, after: tuple, seconds: float, what: str = "every figure") -> str:
    """The closing line of a benchmark: the 1-minute load average before and after the run."""
    import os

    return (f"(1-min load average before / after: {before[0]:.1f} / {after[0]:.1f} on {os.cpu_count()} CPUs; "
            f"other processes competing for the cores slow {what}; {seconds:.0f} s in all)")


def write_results(path: str | Path, argv: list[str], results: dict) -> None:
    """``{"argv": argv, **results}`` as JSON at ``path`` (its folder made if needed)."""
    import json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"argv": argv, **results}, indent=1))
