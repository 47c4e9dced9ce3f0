"""The ablation table and the report it heads.

`ablation_rows` groups runs and computes each row; `build_report` writes the six files (table
as Markdown, HTML and CSV, runs.csv, the two PNGs) into a folder. Table semantics:
- group key: `attraction_strategy` always, `mechanism` too when it varies across runs (or is
  searched in a grid); in a grid sweep also every searched param except `seed` (a row per cell);
- a run's value is its final `metric` (records.run_value);
- only FINISHED runs with a finite value enter n / mean / std / best: runs stopped early by ASHA
  (KILLED) were judged at fewer epochs and are not comparable, so they are counted in `stopped`,
  FAILED runs in `failed`; a FINISHED run known to be short of `max_epochs` counts as stopped;
- std is the sample std (ddof=1), None when n < 2; rows are sorted best mean first (mode max:
  descending, min: ascending), groups with no finished value last.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from leoclr_platform.report import render
from leoclr_platform.report.plots import plot_learning_curves, plot_objective_vs_params, png_bytes
from leoclr_platform.report.records import (
    MECHANISM,
    STRATEGY,
    TABLE_STATS,
    RunRecord,
    coerce,
    decimals,
    effective_status,
    format_params,
    hashable,
    run_value,
    sort_token,
    status_of,
)

FILES = ("ablation.md", "ablation.html", "ablation.csv", "runs.csv",
         "learning_curves.png", "objective_vs_params.png")


@dataclass
class Report:
    rows: list[dict[str, Any]]          # the ablation table, best mean first
    files: dict[str, Path]              # file name ("ablation.md", ...) -> path written
    markdown: str                       # the content of ablation.md
    columns: list[str] = field(default_factory=list)        # keys of each row, in table order
    group_columns: list[str] = field(default_factory=list)  # the leading group-key columns


def check_args(records: Sequence[RunRecord], metric: str, mode: str) -> None:
    """ValueError when there is nothing to report or an argument is bad."""
    if not records:
        raise ValueError("build_report: no runs to report (records is empty); "
                         "did the sweep run, and is the experiment name right?")
    if mode not in ("max", "min"):
        raise ValueError(f"build_report: mode must be 'max' or 'min', got {mode!r}")
    if not isinstance(metric, str) or not metric:
        raise ValueError(f"build_report: metric must be a metric name, got {metric!r}")


def _group_columns(records: Sequence[RunRecord], searched: Sequence[str], grid: bool) -> list[str]:
    cols = [STRATEGY]
    mechanisms = {hashable((r.params or {}).get(MECHANISM)) for r in records}
    if len(mechanisms) > 1 or (grid and MECHANISM in searched):
        cols.append(MECHANISM)
    if grid:
        cols += [k for k in searched if k not in cols and k not in ("seed", "epochs")]
    return cols


def ablation_rows(records: Sequence[RunRecord], *, metric: str = "val_knn_top1", mode: str = "max",
                  searched: Sequence[str] = (), grid: bool = False,
                  max_epochs: int | None = None) -> tuple[list[str], list[dict[str, Any]]]:
    """(group columns, rows) of the ablation table; see the module docstring for the rules."""
    records = coerce(records)
    check_args(records, metric, mode)
    searched = list(searched)
    group_cols = _group_columns(records, searched, grid)
    hyper_keys = [k for k in searched if k not in group_cols and k not in ("seed", "epochs")]
    groups = _groups(records, group_cols, metric, max_epochs)
    dec = decimals([v for g in groups.values() for v, _ in g["values"]])
    sign = 1.0 if mode == "max" else -1.0
    rows = [_row(g, sign, dec, hyper_keys) for g in groups.values()]

    def order(row: dict[str, Any]) -> tuple:
        has = row["mean"] is not None
        return (0 if has else 1, -sign * row["mean"] if has else 0.0,
                tuple(sort_token(c, row[c]) for c in group_cols))

    rows.sort(key=order)
    return group_cols, rows


def _groups(records: Sequence[RunRecord], group_cols: list[str], metric: str,
            max_epochs: int | None) -> dict[tuple, dict[str, Any]]:
    """Runs by group key (input order): finished values with their run, stopped and failed counts."""
    groups: dict[tuple, dict[str, Any]] = {}
    for rec in records:
        params = rec.params or {}
        key = tuple(hashable(params.get(c)) for c in group_cols)
        g = groups.setdefault(key, {"values": [], "stopped": 0, "failed": 0,
                                    "group": {c: params.get(c) for c in group_cols}})
        status = effective_status(rec, max_epochs)
        if status == "FINISHED":
            value = run_value(rec, metric)
            if value is not None:
                g["values"].append((value, rec))
        elif status == "KILLED":
            g["stopped"] += 1
        elif status == "FAILED":
            g["failed"] += 1
    return groups


def _row(g: dict[str, Any], sign: float, dec: int, hyper_keys: list[str]) -> dict[str, Any]:
    """One table row: the group's values, n, mean, std, best (first run wins ties)."""
    values = [v for v, _ in g["values"]]
    n = len(values)
    mean = statistics.fmean(values) if n else None
    std = statistics.stdev(values) if n >= 2 else None
    best_value, best_rec = None, None
    for v, rec in g["values"]:
        if best_value is None or sign * v > sign * best_value:
            best_value, best_rec = v, rec
    if mean is None:
        mean_std = "-"
    elif std is None:
        mean_std = f"{mean:.{dec}f}"
    else:
        mean_std = f"{mean:.{dec}f} ± {std:.{dec}f}"
    row = dict(g["group"])
    row.update(
        n=n, mean=mean, std=std, mean_std=mean_std, best=best_value,
        best_trial=best_rec.trial_id if best_rec else "",
        best_params=format_params(best_rec.params or {}, hyper_keys) if best_rec else "",
        stopped=g["stopped"], failed=g["failed"],
    )
    return row


def build_report(records: Sequence[RunRecord], *, metric: str = "val_knn_top1", mode: str = "max",
                 searched: Sequence[str], grid: bool, title: str, out_dir: str | Path,
                 max_epochs: int | None = None) -> Report:
    """Build the ablation table, write the six report files into `out_dir` (created if needed)
    and return them. Raises ValueError when there is nothing to report or an argument is bad."""
    records = coerce(records)
    check_args(records, metric, mode)
    searched = list(searched)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    group_cols, rows = ablation_rows(records, metric=metric, mode=mode, searched=searched,
                                     grid=grid, max_epochs=max_epochs)
    columns = group_cols + TABLE_STATS
    dec = decimals([v for r in rows for v in (r["mean"], r["best"]) if v is not None])
    reclassified = sum(1 for r in records if status_of(r) == "FINISHED"
                       and effective_status(r, max_epochs) == "KILLED")
    no_value = sum(1 for r in records if effective_status(r, max_epochs) == "FINISHED"
                   and run_value(r, metric) is None)
    summary = render.summary_text(records, metric, mode, grid, group_cols,
                                  render.status_counts(records, max_epochs), reclassified, no_value)
    images = {
        "learning_curves.png": png_bytes(plot_learning_curves(
            records, metric, max_epochs=max_epochs, title=title)),
        "objective_vs_params.png": png_bytes(plot_objective_vs_params(
            records, metric, searched=searched, max_epochs=max_epochs, title=title)),
    }
    files = {name: out_dir / name for name in FILES}
    for name, data in images.items():
        files[name].write_bytes(data)
    markdown = render.markdown(title, summary, columns, rows, dec)
    files["ablation.md"].write_text(markdown, encoding="utf-8")
    files["ablation.html"].write_text(render.html_page(title, summary, columns, rows, dec, images), encoding="utf-8")
    render.write_csv(files["ablation.csv"], columns, rows)
    run_columns, run_rows = render.runs_table(records, metric, mode, searched, group_cols, max_epochs)
    render.write_csv(files["runs.csv"], run_columns, run_rows)
    return Report(rows=rows, files=files, markdown=markdown, columns=columns, group_columns=group_cols)
