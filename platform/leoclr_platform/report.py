"""Ablation report: a table of mean +- std per attraction strategy (or grid cell), plots, files.

Input is plain data (`RunRecord`, one per trial run, as read from the tracker by the caller); this
module imports neither mlflow nor ray, so it runs anywhere matplotlib does.

`build_report(records, metric=..., mode=..., searched=..., grid=..., title=..., out_dir=...)`
writes into `out_dir`:

- `ablation.md`    title, what was compared, the table, links to the two PNGs;
- `ablation.html`  the same, self-contained (PNGs embedded as base64 data URIs, inline CSS), so
                   the single file opens anywhere, e.g. as an MLflow artifact;
- `ablation.csv`   the table, one row per group (numbers at full precision, blank = none);
- `runs.csv`       one row per run: trial id, status, strategy, epochs, metric, searched params;
- `learning_curves.png`    `metric` vs epoch, one line per run, one colour per strategy
                           (fixed palette), KILLED (stopped early) dashed, FAILED dotted;
- `objective_vs_params.png` final `metric` vs each numeric searched param, one panel each;
                           FINISHED filled, stopped hollow.

Table semantics:
- group key: `attraction_strategy` always, `mechanism` too when it varies across runs (or is
  searched in a grid); in a grid sweep also every searched param except `seed` (a row per cell);
- a run's value is its final `metric` (`metrics[metric]`, else the last point of its history);
- only FINISHED runs with a finite value enter n / mean / std / best: runs stopped early by ASHA
  (KILLED) were judged at fewer epochs and are not comparable, so they are counted in `stopped`,
  FAILED runs in `failed`. When `max_epochs` is given, a FINISHED run known to have completed
  fewer epochs is counted as stopped too (Tune ends ASHA-stopped trials as TERMINATED, which a
  tracker may record as FINISHED);
- std is the sample std (ddof=1), None when n < 2; rows are sorted best mean first (mode max:
  descending, min: ascending), groups with no finished value last.

Figures are built on `matplotlib.figure.Figure` with the Agg canvas directly (no pyplot, so no
global backend switch and no figure left open), under matplotlib's default style (a user's
matplotlibrc does not change the report), and saved without the version stamp, so the same
records give the same bytes with the same matplotlib.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
import statistics
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import matplotlib
import matplotlib.style
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

__all__ = [
    "RunRecord",
    "Report",
    "build_report",
    "ablation_rows",
    "plot_learning_curves",
    "plot_objective_vs_params",
    "format_value",
    "format_params",
    "strategy_color",
    "STRATEGY_COLORS",
    "TABLE_STATS",
]

#: Fixed colour per attraction strategy (stable across reports). Unknown names get one of
#: EXTRA_COLORS chosen by a stable hash of the name.
STRATEGY_COLORS = {
    "moco_v2": "#1f77b4",                 # blue: the baseline
    "leoclr": "#d62728",                  # red
    "leoclr_random_original": "#ff7f0e",  # orange
    "attract_all": "#2ca02c",             # green
}
EXTRA_COLORS = ("#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
STRATEGY_ORDER = tuple(STRATEGY_COLORS)

#: Columns of an ablation row after the group columns.
TABLE_STATS = ["n", "mean", "std", "mean_std", "best", "best_trial", "best_params", "stopped", "failed"]
_HEADERS = {
    "n": "n", "mean": "mean", "std": "std", "mean_std": "mean ± std", "best": "best",
    "best_trial": "best trial", "best_params": "best hyperparameters", "stopped": "stopped",
    "failed": "failed",
}
STRATEGY = "attraction_strategy"
MECHANISM = "mechanism"
FILES = ("ablation.md", "ablation.html", "ablation.csv", "runs.csv",
         "learning_curves.png", "objective_vs_params.png")


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


@dataclass
class Report:
    rows: list[dict[str, Any]]          # the ablation table, best mean first
    files: dict[str, Path]              # file name ("ablation.md", ...) -> path written
    markdown: str                       # the content of ablation.md
    columns: list[str] = field(default_factory=list)        # keys of each row, in table order
    group_columns: list[str] = field(default_factory=list)  # the leading group-key columns


# ---------------------------------------------------------------------------------------------
# values and formatting

def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _status(rec: RunRecord) -> str:
    return str(rec.status or "").upper()


def _run_value(rec: RunRecord, metric: str) -> float | None:
    """Final value of `metric`: metrics[metric], else the last point of its history; None if
    absent or not finite."""
    v = rec.metrics.get(metric) if rec.metrics else None
    if v is None:
        points = _curve(rec, metric)
        v = points[-1][1] if points else None
    if v is None:
        return None
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _curve(rec: RunRecord, metric: str) -> list[tuple[int, float]]:
    points = (rec.history or {}).get(metric) or []
    out = []
    for epoch, value in points:
        try:
            out.append((int(epoch), float(value)))
        except (TypeError, ValueError):
            continue
    out.sort(key=lambda p: p[0])
    return out


def _run_epochs(rec: RunRecord) -> int | None:
    """Epochs completed: `epochs`, else the last epoch of any history series."""
    if rec.epochs is not None:
        return int(rec.epochs)
    last = [int(e) for series in (rec.history or {}).values() for e, _ in series if e is not None]
    return max(last) if last else None


def _seed(rec: RunRecord) -> Any:
    return rec.seed if rec.seed is not None else (rec.params or {}).get("seed")


def _effective_status(rec: RunRecord, max_epochs: int | None) -> str:
    status = _status(rec)
    if status == "FINISHED" and max_epochs is not None:
        done = _run_epochs(rec)
        if done is not None and done < max_epochs:
            return "KILLED"
    return status


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


def _decimals(values: Sequence[float]) -> int:
    """Decimals that show the largest |value| with 4 significant digits (43.2 -> 2, 5.1 -> 3)."""
    finite = [abs(v) for v in values if v is not None and math.isfinite(v) and v != 0]
    if not finite:
        return 2
    return int(min(6, max(0, 3 - math.floor(math.log10(max(finite))))))


def _sort_token(key: str, v: Any) -> tuple:
    if key == STRATEGY and isinstance(v, str) and v in STRATEGY_ORDER:
        return (0, STRATEGY_ORDER.index(v), "")
    if v is None:
        return (3, 0, "")
    if _is_number(v) or isinstance(v, bool):
        return (1, float(v), "")
    return (2, 0, str(v))


def _hashable(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_hashable(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, _hashable(x)) for k, x in v.items()))
    return v


def strategy_color(name: Any) -> str:
    if name in STRATEGY_COLORS:
        return STRATEGY_COLORS[name]
    return EXTRA_COLORS[zlib.crc32(str(name).encode()) % len(EXTRA_COLORS)]


# ---------------------------------------------------------------------------------------------
# the table

def _coerce(records: Iterable[RunRecord | Mapping[str, Any]]) -> list[RunRecord]:
    out = []
    for r in records:
        if isinstance(r, RunRecord):
            out.append(r)
        elif isinstance(r, Mapping):
            out.append(RunRecord(**r))
        else:
            raise TypeError(f"build_report: expected RunRecord objects, got {type(r).__name__}")
    return out


def _group_columns(records: Sequence[RunRecord], searched: Sequence[str], grid: bool) -> list[str]:
    cols = [STRATEGY]
    mechanisms = {_hashable((r.params or {}).get(MECHANISM)) for r in records}
    if len(mechanisms) > 1 or (grid and MECHANISM in searched):
        cols.append(MECHANISM)
    if grid:
        cols += [k for k in searched if k not in cols and k not in ("seed", "epochs")]
    return cols


def ablation_rows(records: Sequence[RunRecord], *, metric: str = "knn_top1", mode: str = "max",
                  searched: Sequence[str] = (), grid: bool = False,
                  max_epochs: int | None = None) -> tuple[list[str], list[dict[str, Any]]]:
    """(group columns, rows) of the ablation table; see the module docstring for the rules."""
    records = _coerce(records)
    _check_args(records, metric, mode)
    searched = list(searched)
    group_cols = _group_columns(records, searched, grid)
    hyper_keys = [k for k in searched if k not in group_cols and k not in ("seed", "epochs")]

    groups: dict[tuple, dict[str, Any]] = {}
    for rec in records:
        params = rec.params or {}
        key = tuple(_hashable(params.get(c)) for c in group_cols)
        g = groups.setdefault(key, {"values": [], "stopped": 0, "failed": 0,
                                    "group": {c: params.get(c) for c in group_cols}})
        status = _effective_status(rec, max_epochs)
        if status == "FINISHED":
            value = _run_value(rec, metric)
            if value is not None:
                g["values"].append((value, rec))
        elif status == "KILLED":
            g["stopped"] += 1
        elif status == "FAILED":
            g["failed"] += 1

    all_values = [v for g in groups.values() for v, _ in g["values"]]
    dec = _decimals(all_values)
    sign = 1.0 if mode == "max" else -1.0

    rows = []
    for key, g in groups.items():
        values = [v for v, _ in g["values"]]
        n = len(values)
        mean = statistics.fmean(values) if n else None
        std = statistics.stdev(values) if n >= 2 else None
        best_value, best_rec = None, None
        for v, rec in g["values"]:  # first run wins ties (input order)
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
        rows.append(row)

    def order(row: dict[str, Any]) -> tuple:
        has = row["mean"] is not None
        return (0 if has else 1, -sign * row["mean"] if has else 0.0,
                tuple(_sort_token(c, row[c]) for c in group_cols))

    rows.sort(key=order)
    return group_cols, rows


def _check_args(records: Sequence[RunRecord], metric: str, mode: str) -> None:
    if not records:
        raise ValueError("build_report: no runs to report (records is empty); "
                         "did the sweep run, and is the experiment name right?")
    if mode not in ("max", "min"):
        raise ValueError(f"build_report: mode must be 'max' or 'min', got {mode!r}")
    if not isinstance(metric, str) or not metric:
        raise ValueError(f"build_report: metric must be a metric name, got {metric!r}")


# ---------------------------------------------------------------------------------------------
# plots

def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _strategies(records: Sequence[RunRecord]) -> list[Any]:
    names = {(r.params or {}).get(STRATEGY) for r in records}
    return sorted(names, key=lambda v: _sort_token(STRATEGY, v))


def _strategy_handles(names: Sequence[Any]) -> list[Line2D]:
    return [Line2D([], [], color=strategy_color(n), lw=2, label=format_value(STRATEGY, n))
            for n in names]


_LINESTYLES = {"KILLED": "--", "FAILED": ":"}


def plot_learning_curves(records: Sequence[RunRecord], metric: str = "knn_top1", *,
                         max_epochs: int | None = None, title: str | None = None) -> Figure:
    """`metric` vs epoch: exactly one line per run that has a history for `metric` (in input
    order), coloured by strategy, KILLED dashed, FAILED dotted. The legend is made of proxy
    artists (one per strategy, then the line styles), which are not in `ax.get_lines()`."""
    records = _coerce(records)
    with matplotlib.style.context("default"):
        fig = _new_figure(9.5, 5.0)
        ax = fig.add_subplot(1, 1, 1)
        drawn, missing, styles = 0, 0, set()
        for rec in records:
            points = _curve(rec, metric)
            if not points:
                missing += 1
                continue
            status = _effective_status(rec, max_epochs)
            style = _LINESTYLES.get(status, "-")
            styles.add(status if style != "-" else "FINISHED")
            xs, ys = zip(*points)
            ax.plot(xs, ys, color=strategy_color((rec.params or {}).get(STRATEGY)),
                    linestyle=style, lw=1.4, alpha=0.85,
                    marker="o" if len(points) == 1 else None, markersize=4)
            drawn += 1
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(metric)
        heading = f"{title}: {metric} per epoch" if title else f"{metric} per epoch"
        if missing:
            heading += f" ({missing} run{'s' if missing != 1 else ''} without history not shown)"
        ax.set_title(heading, fontsize=11)
        if max_epochs:
            ax.set_xlim(0, max_epochs)
        if drawn:
            ax.grid(True, alpha=0.3)
            handles = _strategy_handles(_strategies(records))
            if styles - {"FINISHED"}:
                handles.append(Line2D([], [], color="0.3", ls="-", label="finished"))
                if "KILLED" in styles:
                    handles.append(Line2D([], [], color="0.3", ls="--", label="stopped early (ASHA)"))
                if "FAILED" in styles:
                    handles.append(Line2D([], [], color="0.3", ls=":", label="failed"))
            # outside the axes: never over a curve, and no slow loc="best" search over many runs
            ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                      borderaxespad=0.0)
        else:
            ax.text(0.5, 0.5, f"no run has a history of {metric}", ha="center", va="center",
                    transform=ax.transAxes)
        fig.tight_layout()
    return fig


def _numeric_params(records: Sequence[RunRecord], searched: Sequence[str]) -> list[str]:
    out = []
    for key in searched:
        if key in ("seed", "epochs"):
            continue
        values = [(r.params or {}).get(key) for r in records]
        values = [v for v in values if v is not None]
        if values and all(_is_number(v) for v in values):
            out.append(key)
    return out


_PLAIN = FuncFormatter(lambda v, _: f"{v:g}")


def _log10_axis(ax) -> None:
    """Log x axis with plain labels at 1, 2 and 5 x 10^k (no overlapping minor labels)."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(_PLAIN)
    ax.xaxis.set_minor_formatter(NullFormatter())


def plot_objective_vs_params(records: Sequence[RunRecord], metric: str = "knn_top1", *,
                             searched: Sequence[str] = (), max_epochs: int | None = None,
                             title: str | None = None) -> Figure:
    """Final `metric` vs each numeric searched param (one panel each, seed skipped), coloured by
    strategy; FINISHED filled, stopped (and running) hollow, failed as x. key_momentum is shown
    as 1 - m on a log axis; temperature and any positive param spanning > 10x on a log axis;
    queue_size on a log2 axis. Without a numeric searched param: one panel saying so."""
    records = _coerce(records)
    keys = _numeric_params(records, searched)
    with matplotlib.style.context("default"):
        if not keys:
            fig = _new_figure(6.0, 3.0)
            ax = fig.add_subplot(1, 1, 1)
            ax.set_axis_off()
            ax.text(0.5, 0.5, "no numeric parameter was searched\n(nothing to plot against "
                    f"{metric})", ha="center", va="center", transform=ax.transAxes)
            if title:
                ax.set_title(title, fontsize=11)
            return fig
        ncols = min(3, len(keys))
        nrows = math.ceil(len(keys) / ncols)
        legend_h = 0.6  # inches reserved under the panels for the figure legend
        fig = _new_figure(4.6 * ncols, 3.6 * nrows + legend_h + 0.35)
        axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(len(keys))]
        statuses = set()
        for ax, key in zip(axes, keys):
            momentum = key == "key_momentum"
            points = []  # (x, y, strategy, status)
            for rec in records:
                x = (rec.params or {}).get(key)
                y = _run_value(rec, metric)
                if x is None or y is None:
                    continue
                x = float(x)
                if momentum:
                    x = 1.0 - x
                    if x <= 0:
                        continue
                points.append((x, y, (rec.params or {}).get(STRATEGY), _effective_status(rec, max_epochs)))
            xs = [p[0] for p in points]
            positive = bool(xs) and min(xs) > 0
            if key == "queue_size" and positive:
                ax.set_xscale("log", base=2)
                ax.xaxis.set_major_formatter(_PLAIN)
                ax.xaxis.set_minor_formatter(NullFormatter())
                label = "queue_size (log2 scale)"
            elif momentum or (positive and (key == "temperature" or max(xs) > 10 * min(xs))):
                _log10_axis(ax)
                label = "1 - key_momentum (log scale)" if momentum else f"{key} (log scale)"
            else:
                label = key
            for strategy in _strategies(records):
                color = strategy_color(strategy)
                for status, kw in (("FINISHED", dict(marker="o", facecolors=color, edgecolors=color)),
                                   ("FAILED", dict(marker="x", c=color)),
                                   ("OTHER", dict(marker="o", facecolors="none", edgecolors=color))):
                    sel = [(x, y) for x, y, s, st in points if s == strategy and
                           (st == status or (status == "OTHER" and st not in ("FINISHED", "FAILED")))]
                    if sel:
                        statuses.add(status)
                        ax.scatter([p[0] for p in sel], [p[1] for p in sel], s=36, linewidths=1.3,
                                   alpha=0.9, **kw)
            if not points:
                ax.text(0.5, 0.5, f"no run has a value of {metric}", ha="center", va="center",
                        transform=ax.transAxes)
            ax.set_xlabel(label)
            ax.set_ylabel(f"final {metric}")
            ax.grid(True, alpha=0.3)
        handles = _strategy_handles(_strategies(records))
        marker = dict(color="none", ls="", markersize=7)
        if "FINISHED" in statuses:
            handles.append(Line2D([], [], marker="o", markerfacecolor="0.3", markeredgecolor="0.3",
                                  label="finished", **marker))
        if "OTHER" in statuses:
            handles.append(Line2D([], [], marker="o", markerfacecolor="none", markeredgecolor="0.3",
                                  label="stopped early / not finished", **marker))
        if "FAILED" in statuses:
            handles.append(Line2D([], [], marker="x", markeredgecolor="0.3", label="failed", **marker))
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8,
                   frameon=False)
        fig.suptitle(f"{title}: final {metric} vs searched parameters" if title
                     else f"final {metric} vs searched parameters", fontsize=11)
        height = fig.get_figheight()
        fig.tight_layout(rect=(0, legend_h / height, 1, 1 - 0.35 / height))
    return fig


def _png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    fig.clear()
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# rendering

def _cell(col: str, v: Any, dec: int) -> str:
    """Display text of one table cell."""
    if col in ("mean", "std", "best"):
        return "-" if v is None else f"{v:.{dec}f}"
    if col in ("best_trial", "best_params"):
        return v or "-"
    if col in TABLE_STATS:
        return str(v)
    return format_value(col, v)


def _csv_cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _status_counts(records: Sequence[RunRecord], max_epochs: int | None) -> dict[str, int]:
    counts: dict[str, int] = {}
    for rec in records:
        s = _effective_status(rec, max_epochs)
        counts[s] = counts.get(s, 0) + 1
    return counts


def _summary(records, metric, mode, grid, group_cols, counts, reclassified, no_value) -> str:
    total = len(records)
    names = {"FINISHED": "finished", "KILLED": "stopped early (ASHA)", "FAILED": "failed",
             "RUNNING": "still running"}
    parts = [f"{counts[s]} {names[s]}" for s in names if counts.get(s)]
    parts += [f"{c} {s.lower()}" for s, c in sorted(counts.items()) if s not in names]
    groups = " x ".join(f"`{c}`" for c in group_cols)
    text = (f"Compared the final `{metric}` ({'higher' if mode == 'max' else 'lower'} is better) of "
            f"{total} run{'s' if total != 1 else ''}: {', '.join(parts)}. "
            f"{'Grid sweep' if grid else 'Search sweep'}, one row per {groups}; mean ± std "
            f"(sample std) over finished runs only, stopped and failed runs are counted apart.")
    if reclassified:
        text += (f" {reclassified} run{'s' if reclassified != 1 else ''} recorded as finished but "
                 f"short of the full epochs {'are' if reclassified != 1 else 'is'} counted as stopped.")
    if no_value:
        text += (f" {no_value} finished run{'s' if no_value != 1 else ''} without a `{metric}` "
                 f"value {'are' if no_value != 1 else 'is'} left out.")
    if not counts.get("FINISHED") or counts.get("FINISHED") == no_value:
        text += " No finished run has a value, so the table has no means."
    return text


def _markdown(title, summary, columns, rows, dec) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    head = [esc(_HEADERS.get(c, c)) for c in columns]
    lines = [f"# {title}", "", summary, "",
             "| " + " | ".join(head) + " |",
             "| " + " | ".join("---:" if c in ("n", "mean", "std", "mean_std", "best", "stopped", "failed")
                              else "---" for c in columns) + " |"]
    for row in rows:
        lines.append("| " + " | ".join(esc(_cell(c, row[c], dec)) for c in columns) + " |")
    lines += ["", "![learning curves](learning_curves.png)", "",
              "![objective vs searched parameters](objective_vs_params.png)", ""]
    return "\n".join(lines)


_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em;
color:#222;max-width:1400px}table{border-collapse:collapse;margin:1em 0;font-size:14px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}th{background:#f2f2f2}
td.num{text-align:right;font-variant-numeric:tabular-nums}img{max-width:100%;display:block;
margin:1em 0}"""


def _html(title, summary_md, columns, rows, dec, images: dict[str, bytes]) -> str:
    # the summary uses `code` spans; render them as <code>
    parts = html.escape(summary_md).split("`")
    summary = "".join(p if i % 2 == 0 else f"<code>{p}</code>" for i, p in enumerate(parts))
    numeric = {"n", "mean", "std", "mean_std", "best", "stopped", "failed"}
    out = ["<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">",
           f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
           f"<h1>{html.escape(title)}</h1>", f"<p>{summary}</p>", "<table>", "<thead><tr>"]
    out += [f"<th>{html.escape(_HEADERS.get(c, c))}</th>" for c in columns]
    out.append("</tr></thead><tbody>")
    for row in rows:
        cells = "".join(("<td class=\"num\">" if c in numeric else "<td>")
                        + html.escape(_cell(c, row[c], dec)) + "</td>" for c in columns)
        out.append(f"<tr>{cells}</tr>")
    out.append("</tbody></table>")
    for name, alt in (("learning_curves.png", "learning curves"),
                      ("objective_vs_params.png", "objective vs searched parameters")):
        data = base64.b64encode(images[name]).decode("ascii")
        out.append(f"<h2>{html.escape(alt)}</h2>")
        out.append(f"<img alt=\"{html.escape(alt)}\" src=\"data:image/png;base64,{data}\">")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _write_csv(path: Path, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_csv_cell(row.get(c)) for c in columns])


def _runs_table(records, metric, mode, searched, group_cols, max_epochs):
    extra = [c for c in group_cols if c != STRATEGY]
    extra += [k for k in searched if k not in extra and k not in (STRATEGY, "seed", "epochs")]
    columns = ["trial_id", "run_id", "status", "counted_as", STRATEGY, "seed", "epochs", metric] + extra
    sign = 1.0 if mode == "max" else -1.0
    rows = []
    for rec in records:
        params = rec.params or {}
        value = _run_value(rec, metric)
        counted = {"FINISHED": "finished" if value is not None else "no value",
                   "KILLED": "stopped", "FAILED": "failed"}.get(_effective_status(rec, max_epochs), "-")
        row = {"trial_id": rec.trial_id, "run_id": rec.run_id, "status": _status(rec), "counted_as": counted,
               STRATEGY: params.get(STRATEGY), "seed": _seed(rec), "epochs": _run_epochs(rec),
               metric: value}
        row.update({k: params.get(k) for k in extra})
        rows.append(row)
    # best first among runs with a value (stable: ties keep input order), then the rest
    rows.sort(key=lambda r: (r[metric] is None, -sign * r[metric] if r[metric] is not None else 0.0))
    return columns, rows


# ---------------------------------------------------------------------------------------------

def build_report(records: Sequence[RunRecord], *, metric: str = "knn_top1", mode: str = "max",
                 searched: Sequence[str], grid: bool, title: str, out_dir: str | Path,
                 max_epochs: int | None = None) -> Report:
    """Build the ablation table, write the six report files into `out_dir` (created if needed)
    and return them. Raises ValueError when there is nothing to report or an argument is bad."""
    records = _coerce(records)
    _check_args(records, metric, mode)
    searched = list(searched)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    group_cols, rows = ablation_rows(records, metric=metric, mode=mode, searched=searched,
                                     grid=grid, max_epochs=max_epochs)
    columns = group_cols + TABLE_STATS
    dec = _decimals([v for r in rows for v in (r["mean"], r["best"]) if v is not None])
    counts = _status_counts(records, max_epochs)
    reclassified = sum(1 for r in records if _status(r) == "FINISHED"
                       and _effective_status(r, max_epochs) == "KILLED")
    no_value = sum(1 for r in records if _effective_status(r, max_epochs) == "FINISHED"
                   and _run_value(r, metric) is None)
    summary = _summary(records, metric, mode, grid, group_cols, counts, reclassified, no_value)

    images = {
        "learning_curves.png": _png_bytes(plot_learning_curves(
            records, metric, max_epochs=max_epochs, title=title)),
        "objective_vs_params.png": _png_bytes(plot_objective_vs_params(
            records, metric, searched=searched, max_epochs=max_epochs, title=title)),
    }
    files = {name: out_dir / name for name in FILES}
    for name, data in images.items():
        files[name].write_bytes(data)
    markdown = _markdown(title, summary, columns, rows, dec)
    files["ablation.md"].write_text(markdown, encoding="utf-8")
    files["ablation.html"].write_text(_html(title, summary, columns, rows, dec, images), encoding="utf-8")
    _write_csv(files["ablation.csv"], columns, rows)
    run_columns, run_rows = _runs_table(records, metric, mode, searched, group_cols, max_epochs)
    _write_csv(files["runs.csv"], run_columns, run_rows)
    return Report(rows=rows, files=files, markdown=markdown, columns=columns, group_columns=group_cols)
