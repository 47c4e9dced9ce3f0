"""What `leoclr sweep` prints at the end: every trial, the best one, where the results went and
what to run next."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from leoclr_platform.sweep.results import SweepOutcome


def print_outcome(outcome: SweepOutcome, file: TextIO | None = None) -> None:
    """The outcome table (best first), the best trial and the tracking run (to stdout by default)."""
    file = file or sys.stdout
    metric = outcome.metric
    print(f"\nsweep {outcome.name}: {len(outcome.trials)} trials, {outcome.errors} failed; results in {outcome.root}",
          file=file)
    for row in sorted(outcome.trials, key=lambda r: (r[metric] is None, -(r[metric] or 0))):
        value = row[metric]
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in row["params"].items())
        shown = f"{value:.2f}" if isinstance(value, (int, float)) else "-"
        extra = f"  [{row['error']}]" if row["error"] else _stop_note(row)
        print(f"  {row['trial_id']:>10} {row['status']:<10} epochs={row['epochs']} {metric}={shown}  {params}{extra}",
              file=file)
    if outcome.best is None:
        print("no trial finished with a result", file=file)
        return
    _print_best(outcome.best, metric, file)
    if outcome.tracking:
        _print_tracking(outcome, file)


def _print_best(best: dict[str, Any], metric: str, file: TextIO) -> None:
    print(f"\nbest trial {best['trial_id']}: {metric}={best[metric]:.2f}", file=file)
    print(f"  config: {json.dumps(best['params'])} seed={best['seed']}", file=file)
    print(f"  checkpoint: {best['checkpoint']}", file=file)
    if best["checkpoint"]:
        ckpt = best["checkpoint"]
        print(f"  train it further: leoclr train --config {ckpt}/config.json --set epochs=<N> --resume {ckpt}",
              file=file)


def _print_tracking(outcome: SweepOutcome, file: TextIO) -> None:
    from leoclr_platform.tracking import redact_uri

    tracking = outcome.tracking
    print(f"\nMLflow: experiment {tracking['experiment']!r}, sweep run {tracking['parent_run_id']} "
          f"in {redact_uri(tracking['uri'])}", file=file)
    if tracking.get("undelivered"):
        print(f"  WARNING: {tracking['undelivered']} tracking call(s) could not be delivered (store "
              f"unreachable); when it is back: leoclr sync {outcome.name}", file=file)
    print(f"  promote the best encoder: leoclr promote --sweep {outcome.name}", file=file)
    print(f"  ablation report:          leoclr report {outcome.name}", file=file)
    print("  browse it:                leoclr ui", file=file)


def _stop_note(row: dict[str, Any]) -> str:
    """'  [ASHA: 39.8 < rung cutoff 41.8]' for a trial stopped with a known decision."""
    stop = row.get("stop")
    if row["status"] != "STOPPED" or not stop or stop.get("cutoff") is None:
        return ""
    op = "<" if stop.get("mode", "max") == "max" else ">"
    return f"  [ASHA: {stop['value']:.4g} {op} rung cutoff {stop['cutoff']:.4g}]"


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
