"""The ablation table and the report it heads.

`ablation_rows` groups runs and computes each row; `build_report` writes the files (report as
Markdown and HTML, table as CSV, runs.csv, the PNGs) into a folder. Table semantics:
- group key: `attraction_strategy` always, `mechanism` too when it varies across runs (or is
  searched in a grid); in a grid sweep also every searched param except `seed` (a row per cell);
- a run's value is its final `metric` (records.run_value);
- only FINISHED runs with a finite value enter n / mean / std / best: runs stopped early by ASHA
  (KILLED) were judged at fewer epochs and are not comparable, so they are counted in `stopped`,
  FAILED runs in `failed`; a FINISHED run known to be short of `max_epochs` counts as stopped;
- std is the sample std (ddof=1), None when n < 2; rows are sorted best mean first (mode max:
  descending, min: ascending), groups with no finished value last;
- each row carries its 95 % t-interval (bootstrap too when n >= 5) and its {seed: value};
- runs tagged stage=confirm (fresh-seed re-runs of the search's best configs) head the report
  when there are any, one row per strategy (per confirmed config when a strategy has several);
  the search runs then get a table of their own, never the headline;
- the headline rows are compared with the reference strategy's row (compare.comparisons),
  paired on seed, and with the random-weights baseline when the context holds one.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

from leoclr_platform.report import render, sections
from leoclr_platform.report.compare import (
    Comparison,
    baseline_gains,
    by_seed,
    comparisons,
    group_stats,
    rankme_correlation,
)
from leoclr_platform.report.importance import plot_importance
from leoclr_platform.report.plots import plot_learning_curves, plot_objective_vs_params, png_bytes
from leoclr_platform.report.records import (
    MECHANISM,
    STRATEGY,
    TABLE_STATS,
    RunRecord,
    SweepContext,
    coerce,
    decimals,
    effective_status,
    format_params,
    format_value,
    hashable,
    run_value,
    sort_token,
    status_of,
)

#: Files every report has; learning_curves_search.png (confirm runs head the report) and
#: importance.png (the sweep computed importance) come when there is something to draw.
FILES = ("ablation.md", "ablation.html", "ablation.csv", "runs.csv",
         "learning_curves.png", "objective_vs_params.png")
#: ablation.csv columns after the table's: the intervals as numbers, and which were computed.
CSV_EXTRA = ["ci_low", "ci_high", "boot_low", "boot_high", "interval"]


@dataclass
class Report:
    rows: list[dict[str, Any]]          # the headline table (confirm runs when any), best mean first
    files: dict[str, Path]              # file name ("ablation.md", ...) -> path written
    markdown: str                       # the content of ablation.md
    columns: list[str] = field(default_factory=list)        # keys of each row, in table order
    group_columns: list[str] = field(default_factory=list)  # the leading group-key columns
    stage: str = "search"               # what the headline rests on: "confirm" or "search"
    search_rows: list[dict[str, Any]] = field(default_factory=list)  # search runs, when confirm is the headline
    search_group_columns: list[str] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)    # headline groups vs the reference
    baseline_mean: float | None = None  # the random-weights baseline's mean of the metric
    gains: list[dict[str, Any]] = field(default_factory=list)       # each headline group vs the baseline
    rankme: tuple[float | None, int] = (None, 0)                    # Spearman rho (rankme, val kNN), n
    metric: str = "val_knn_top1"
    mode: str = "max"


def check_args(records: Sequence[RunRecord], metric: str, mode: str) -> None:
    """ValueError when there is nothing to report or an argument is bad."""
    if not records:
        raise ValueError("build_report: no runs to report (records is empty); "
                         "did the sweep run, and is the experiment name right?")
    if mode not in ("max", "min"):
        raise ValueError(f"build_report: mode must be 'max' or 'min', got {mode!r}")
    if not isinstance(metric, str) or not metric:
        raise ValueError(f"build_report: metric must be a metric name, got {metric!r}")


def _group_columns(records: Sequence[RunRecord], searched: Sequence[str], grid: bool,
                   extra: Sequence[str] = ()) -> list[str]:
    cols = [STRATEGY]
    mechanisms = {hashable((r.params or {}).get(MECHANISM)) for r in records}
    if len(mechanisms) > 1 or (grid and MECHANISM in searched):
        cols.append(MECHANISM)
    if grid:
        cols += [k for k in searched if k not in cols and k not in ("seed", "epochs")]
    return cols + [k for k in extra if k not in cols]


def ablation_rows(records: Sequence[RunRecord], *, metric: str = "val_knn_top1", mode: str = "max",
                  searched: Sequence[str] = (), grid: bool = False,
                  max_epochs: int | None = None,
                  extra_groups: Sequence[str] = ()) -> tuple[list[str], list[dict[str, Any]]]:
    """(group columns, rows) of the ablation table; see the module docstring for the rules."""
    records = coerce(records)
    check_args(records, metric, mode)
    searched = list(searched)
    group_cols = _group_columns(records, searched, grid, extra_groups)
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
    intervals = group_stats(values)
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
        n=n, mean=mean, std=std, mean_std=mean_std,
        ci95=_interval_text(intervals["ci_low"], intervals["ci_high"], dec),
        bootstrap95=_interval_text(intervals["boot_low"], intervals["boot_high"], dec),
        best=best_value, best_trial=best_rec.trial_id if best_rec else "",
        best_params=format_params(best_rec.params or {}, hyper_keys) if best_rec else "",
        stopped=g["stopped"], failed=g["failed"], **intervals,
        label=group_label(g["group"]), by_seed=by_seed(g["values"]), values=g["values"],
    )
    return row


def _interval_text(lo: float | None, hi: float | None, dec: int) -> str:
    return "-" if lo is None else f"[{lo:.{dec}f}, {hi:.{dec}f}]"


def group_label(group: dict[str, Any]) -> str:
    """A group in words: its strategy, then k=v for the other group values."""
    items = list(group.items())
    if not items:
        return "all runs"
    (k0, v0), rest = items[0], items[1:]
    text = format_value(k0, v0)
    if rest:
        text += ", " + ", ".join(f"{k}={format_value(k, v)}" for k, v in rest)
    return text


def _headline(records: list[RunRecord], metric: str, mode: str, searched: list[str], grid: bool,
              max_epochs: int | None) -> Report:
    """The tables and numbers (no files yet): confirm runs head the report when there are any."""
    confirm = [r for r in records if r.stage == "confirm"]
    search = [r for r in records if r.stage != "confirm"]
    rep = Report(rows=[], files={}, markdown="", metric=metric, mode=mode)
    if confirm:
        configs: dict[Any, set] = {}
        for r in confirm:
            configs.setdefault((r.params or {}).get(STRATEGY), set()).add(r.confirm_of)
        several = any(len(c) > 1 for c in configs.values())
        if several:  # top K > 1: one group per confirmed configuration
            confirm = [replace(r, params={**(r.params or {}), "confirm_of": r.confirm_of}) for r in confirm]
        rep.group_columns, rep.rows = ablation_rows(confirm, metric=metric, mode=mode, searched=searched,
                                                    max_epochs=max_epochs,
                                                    extra_groups=["confirm_of"] if several else [])
        rep.stage = "confirm"
        if search:
            rep.search_group_columns, rep.search_rows = ablation_rows(
                search, metric=metric, mode=mode, searched=searched, grid=grid, max_epochs=max_epochs)
    else:
        rep.group_columns, rep.rows = ablation_rows(search, metric=metric, mode=mode, searched=searched,
                                                    grid=grid, max_epochs=max_epochs)
    rep.columns = rep.group_columns + TABLE_STATS
    rep.comparisons = comparisons(rep.rows, rep.group_columns, metric, mode)
    return rep


def build_report(records: Sequence[RunRecord], *, metric: str = "val_knn_top1", mode: str = "max",
                 searched: Sequence[str], grid: bool, title: str, out_dir: str | Path,
                 max_epochs: int | None = None, context: SweepContext | None = None) -> Report:
    """Build the ablation tables and comparisons, write the report files into `out_dir` (created
    if needed) and return them. Raises ValueError when there is nothing to report or an argument
    is bad. `context` adds the header's scale, the baseline, importance and evaluations."""
    records = coerce(records)
    check_args(records, metric, mode)
    context = context or SweepContext()
    searched = list(searched)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rep = _headline(records, metric, mode, searched, grid, max_epochs)
    rep.baseline_mean, rep.gains = baseline_gains(rep.rows, context.baseline, metric, mode)
    rep.rankme = rankme_correlation(records, max_epochs)
    summary = _summary(records, rep, metric, mode, grid, max_epochs)
    images = _images(records, rep, context, metric, searched, max_epochs, title)
    rep.markdown = sections.document(title, summary, rep, context, images)
    rep.files = {name: out_dir / name for name in FILES + tuple(n for n in images if n not in FILES)}
    for name, data in images.items():
        rep.files[name].write_bytes(data)
    rep.files["ablation.md"].write_text(rep.markdown, encoding="utf-8")
    rep.files["ablation.html"].write_text(render.html_page(title, rep.markdown, images), encoding="utf-8")
    render.write_csv(rep.files["ablation.csv"], rep.columns + CSV_EXTRA, rep.rows)
    run_columns, run_rows = render.runs_table(records, metric, mode, searched, rep.group_columns, max_epochs)
    render.write_csv(rep.files["runs.csv"], run_columns, run_rows)
    return rep


def _summary(records, rep: Report, metric, mode, grid, max_epochs) -> str:
    reclassified = sum(1 for r in records if status_of(r) == "FINISHED"
                       and effective_status(r, max_epochs) == "KILLED")
    no_value = sum(1 for r in records if effective_status(r, max_epochs) == "FINISHED"
                   and run_value(r, metric) is None)
    text = render.summary_text(records, metric, mode, grid, rep.group_columns,
                               render.status_counts(records, max_epochs), reclassified, no_value)
    if rep.stage == "confirm":
        n = sum(1 for r in records if r.stage == "confirm")
        text += (f" {n} of the runs are confirmation runs (`stage=confirm`): they alone make the headline; "
                 f"the other {len(records) - n} are the search's trials.")
    return text


def _images(records, rep: Report, context: SweepContext, metric, searched, max_epochs, title) -> dict[str, bytes]:
    """The PNGs: learning curves of the headline runs (and of the search runs when confirm runs
    head the report), the objective against the searched params, the importance bars."""
    head = [r for r in records if (r.stage == "confirm") == (rep.stage == "confirm")]
    search = [r for r in records if r.stage != "confirm"] or records
    images = {
        "learning_curves.png": png_bytes(plot_learning_curves(
            head, metric, max_epochs=max_epochs,
            title=f"{title} (confirmation runs)" if rep.stage == "confirm" else title)),
        "objective_vs_params.png": png_bytes(plot_objective_vs_params(
            search, metric, searched=searched, max_epochs=max_epochs, title=title)),
    }
    if rep.stage == "confirm" and rep.search_rows:
        images["learning_curves_search.png"] = png_bytes(plot_learning_curves(
            search, metric, max_epochs=max_epochs, title=f"{title} (search runs)"))
    if context.importance and context.importance.get("methods"):
        images["importance.png"] = png_bytes(plot_importance(context.importance, title=title))
    return images
