"""What the sweep driver adds to a sweep after its trials: parameter importance (search mode,
sweep/importance.py) and the recalibrated-random baseline row (sweep/baseline.py).

Both are written next to the results (`importance.json`, `importance.png`, `baseline.json`)
and returned as the parent run's artifacts, metrics and tags. Neither can fail the sweep: an
error is kept with its reason (importance.json "errors", the `baseline_error` tag).
"""

from __future__ import annotations

import tempfile
from typing import Any

from leoclr_platform.errors import first_line
from leoclr_platform.spaces import SweepSpec
from leoclr_platform.sweep.baseline import headline_seeds, parent_metrics, sweep_baseline, write_baseline
from leoclr_platform.sweep.importance import importance_metrics, sweep_importance, write_importance
from leoclr_platform.sweep.paths import is_uri


def analyse_sweep(spec: SweepSpec, name: str, root: str, rdb, confirm: dict[str, Any] | None,
                  *, out=print) -> dict[str, Any]:
    """{"artifacts": [paths], "metrics": {...}, "tags": {...}} for the parent run."""
    folder = tempfile.mkdtemp(prefix="leoclr-analysis-") if is_uri(root) else root
    artifacts, metrics, tags = [], {}, {}
    if spec.mode == "search":
        result = sweep_importance(rdb, name, spec.metric, seed=spec.sampler_seed)
        artifacts += write_importance(result, folder)
        metrics.update(importance_metrics(result))
        for method, reason in result["errors"].items():
            out(f"leoclr: note: parameter importance ({method}) not computed: {reason}")
    try:
        baseline = sweep_baseline(spec, headline_seeds(spec, confirm))
    except Exception as exc:  # noqa: BLE001 - the baseline never fails the sweep; its reason is kept
        reason = f"{type(exc).__name__}: {first_line(exc)}"
        tags["baseline_error"] = reason
        out(f"leoclr: note: the random-weights baseline was not computed: {reason}")
    else:
        artifacts.append(write_baseline(baseline, folder))
        metrics.update(parent_metrics(baseline))
    return {"artifacts": artifacts, "metrics": metrics, "tags": tags}


def replayed_analysis(root: str) -> dict[str, Any]:
    """What `analyse_sweep` gave the parent run, read back from the files it wrote in `root`
    (`leoclr sync`: a synced parent run gets the same artifacts and metrics as the live one)."""
    import json
    from pathlib import Path

    from leoclr_platform.sweep.baseline import BASELINE_FILE
    from leoclr_platform.sweep.importance import IMPORTANCE_FILE, IMPORTANCE_PLOT

    artifacts, metrics = [], {}
    importance, plot, baseline = (Path(root) / f for f in (IMPORTANCE_FILE, IMPORTANCE_PLOT, BASELINE_FILE))
    if importance.exists():
        artifacts.append(importance)
        metrics.update(importance_metrics(json.loads(importance.read_text())))
    if plot.exists():
        artifacts.append(plot)
    if baseline.exists():
        artifacts.append(baseline)
        metrics.update(parent_metrics(json.loads(baseline.read_text())))
    return {"artifacts": artifacts, "metrics": metrics, "tags": {}}
