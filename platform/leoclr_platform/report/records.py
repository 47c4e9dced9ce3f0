"""The input of a report: one `RunRecord` per trial run, and how its values are read and shown.

A run's value is its final `metric` (`metrics[metric]`, else the last point of its history);
a FINISHED run known to have completed fewer than `max_epochs` epochs counts as stopped (Tune
ends ASHA-stopped trials as TERMINATED, which a tracker may record as FINISHED). Plain data:
nothing here imports mlflow, ray or matplotlib.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from trainables.validation import is_number

STRATEGY = "attraction_strategy"
MECHANISM = "mechanism"
#: How strategies are ordered in tables and legends (the baseline first).
STRATEGY_ORDER = ("moco_v2", "leoclr", "leoclr_random_original", "attract_all")
#: Columns of an ablation row after the group columns (ci95: 95 % t-interval of the mean,
#: bootstrap95: percentile bootstrap interval, only for n >= 5; both "-" when n is too small).
TABLE_STATS = ["n", "mean", "std", "mean_std", "ci95", "bootstrap95", "best", "best_trial", "best_params",
               "stopped", "failed"]


@dataclass
class RunRecord:
    """One trial run, as the tracker recorded it."""

    run_id: str
    trial_id: str
    status: str                 # "FINISHED" | "KILLED" (stopped early by ASHA) | "FAILED" | "RUNNING"
    params: dict[str, Any]      # the trial's resolved config (typed values: float/int/str/bool)
    metrics: dict[str, float]   # final (latest) value of each metric
    history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # metric -> [(epoch, value)]
    seed: int | None = None
    epochs: int | None = None   # epochs completed
    stage: str = "search"       # tag `stage`: "search" (trials, grid cells) or "confirm" (fresh-seed re-runs)
    confirm_of: str | None = None  # a confirm run: trial id of the search trial whose config it re-runs


@dataclass
class SweepContext:
    """What the report shows besides the trial runs, read from the sweep's parent run and the
    evaluation runs (all optional; a missing part is reported with the reason in `absent`)."""

    scale: dict[str, str] = field(default_factory=dict)        # header: label -> text, in order
    importance: dict[str, Any] | None = None                   # importance.json
    baseline: dict[str, Any] | None = None                     # baseline.json
    evaluations: list[dict[str, Any]] = field(default_factory=list)  # one per evaluation run
    absent: dict[str, str] = field(default_factory=dict)       # "importance"/"baseline" -> why


def coerce(records: Iterable[RunRecord | Mapping[str, Any]]) -> list[RunRecord]:
    """RunRecords, or mappings of their fields, as a list of RunRecords."""
    out = []
    for r in records:
        if isinstance(r, RunRecord):
            out.append(r)
        elif isinstance(r, Mapping):
            out.append(RunRecord(**r))
        else:
            raise TypeError(f"build_report: expected RunRecord objects, got {type(r).__name__}")
    return out


# ---------------------------------------------------------------------------------------------
# values
def status_of(rec: RunRecord) -> str:
    return str(rec.status or "").upper()


def run_value(rec: RunRecord, metric: str) -> float | None:
    """Final value of `metric`: metrics[metric], else the last point of its history; None if
    absent or not finite."""
    v = rec.metrics.get(metric) if rec.metrics else None
    if v is None:
        points = curve(rec, metric)
        v = points[-1][1] if points else None
    if v is None:
        return None
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def curve(rec: RunRecord, metric: str) -> list[tuple[int, float]]:
    points = (rec.history or {}).get(metric) or []
    out = []
    for epoch, value in points:
        try:
            out.append((int(epoch), float(value)))
        except (TypeError, ValueError):
            continue
    out.sort(key=lambda p: p[0])
    return out


def run_epochs(rec: RunRecord) -> int | None:
    """Epochs completed: `epochs`, else the last epoch of any history series."""
    if rec.epochs is not None:
        return int(rec.epochs)
    last = [int(e) for series in (rec.history or {}).values() for e, _ in series if e is not None]
    return max(last) if last else None


def seed_of(rec: RunRecord) -> Any:
    return rec.seed if rec.seed is not None else (rec.params or {}).get("seed")


def effective_status(rec: RunRecord, max_epochs: int | None) -> str:
    status = status_of(rec)
    if status == "FINISHED" and max_epochs is not None:
        done = run_epochs(rec)
        if done is not None and done < max_epochs:
            return "KILLED"
    return status


# ---------------------------------------------------------------------------------------------
# formatting and ordering
def _fmt_momentum(m: float) -> str:
    """A momentum near 1 keeps 4 significant digits of 1 - m: 0.996 -> '0.996',
    0.9987342 -> '0.9987342' would be noise, so -> '0.998734'."""
    d = 1.0 - m
    if not (0.0 < d < 1.0):
        return f"{m:.4g}"
    decimals = min(15, max(0, -math.floor(math.log10(d)) + 3))
    text = f"{m:.{decimals}f}".rstrip("0").rstrip(".")
    return text or "0"


def format_value(key: str, v: Any) -> str:
    """Compact display of one parameter value: floats with 4 significant digits (key_momentum
    with 4 significant digits of 1 - m, shown as m), None as '-'."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if key == "key_momentum" or key.endswith("momentum"):
            return _fmt_momentum(v)
        return f"{v:.4g}"
    return str(v)


def format_params(params: Mapping[str, Any], keys: Iterable[str]) -> str:
    """`k=v, k=v` for the given keys (in that order), skipping absent/None values."""
    parts = [f"{k}={format_value(k, params[k])}" for k in keys if params.get(k) is not None]
    return ", ".join(parts)


def decimals(values: Sequence[float]) -> int:
    """Decimals that show the largest |value| with 4 significant digits (43.2 -> 2, 5.1 -> 3)."""
    finite = [abs(v) for v in values if v is not None and math.isfinite(v) and v != 0]
    if not finite:
        return 2
    return int(min(6, max(0, 3 - math.floor(math.log10(max(finite))))))


def sort_token(key: str, v: Any) -> tuple:
    if key == STRATEGY and isinstance(v, str) and v in STRATEGY_ORDER:
        return (0, STRATEGY_ORDER.index(v), "")
    if v is None:
        return (3, 0, "")
    if is_number(v) or isinstance(v, bool):
        return (1, float(v), "")
    return (2, 0, str(v))


def hashable(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(hashable(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, hashable(x)) for k, x in v.items()))
    return v
