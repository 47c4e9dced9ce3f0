"""The report's two figures: learning curves and the objective against each searched parameter.

Built on `matplotlib.figure.Figure` with the Agg canvas directly (no pyplot, so no global backend
switch and no figure left open), under matplotlib's default style (a user's matplotlibrc does
not change the report), and saved without the version stamp, so the same records give the same
bytes with the same matplotlib. Each strategy keeps its colour across reports.
"""

from __future__ import annotations

import io
import math
import zlib
from typing import Any, Sequence

import matplotlib
import matplotlib.style
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from trainables.validation import is_number

from leoclr_platform.report.stats import summarize
from leoclr_platform.report.records import (
    STRATEGY,
    RunRecord,
    coerce,
    curve,
    effective_status,
    format_value,
    run_value,
    sort_token,
)

#: Fixed colour per attraction strategy (stable across reports). Unknown names get one of
#: EXTRA_COLORS chosen by a stable hash of the name.
STRATEGY_COLORS = {
    "moco_v2": "#1f77b4",                 # blue: the baseline
    "leoclr": "#d62728",                  # red
    "leoclr_random_original": "#ff7f0e",  # orange
    "attract_all": "#2ca02c",             # green
}
EXTRA_COLORS = ("#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
_LINESTYLES = {"KILLED": "--", "FAILED": ":"}
_PLAIN = FuncFormatter(lambda v, _: f"{v:g}")


def strategy_color(name: Any) -> str:
    if name in STRATEGY_COLORS:
        return STRATEGY_COLORS[name]
    return EXTRA_COLORS[zlib.crc32(str(name).encode()) % len(EXTRA_COLORS)]


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _strategies(records: Sequence[RunRecord]) -> list[Any]:
    names = {(r.params or {}).get(STRATEGY) for r in records}
    return sorted(names, key=lambda v: sort_token(STRATEGY, v))


def _strategy_handles(names: Sequence[Any]) -> list[Line2D]:
    return [Line2D([], [], color=strategy_color(n), lw=2, label=format_value(STRATEGY, n))
            for n in names]


def metric_label(metric: str) -> str:
    """An axis label with the unit: accuracies in %, RankMe as an effective rank."""
    if "top1" in metric or "top5" in metric:
        return f"{metric} (%)"
    if metric.startswith("rankme"):
        return f"{metric} (effective rank)"
    return metric


def plot_learning_curves(records: Sequence[RunRecord], metric: str = "val_knn_top1", *,
                         max_epochs: int | None = None, title: str | None = None) -> Figure:
    """`metric` vs epoch: one thin line per run that has a history for `metric` (in input order,
    gid "run:<trial id>"), coloured by strategy, stopped early (KILLED) dashed with a marker at
    every point (so a run stopped after one epoch shows), FAILED dotted; over them, per strategy,
    the mean over the runs that reached each epoch (gid "mean:<strategy>") with its 95 %
    t-interval as a band where >= 2 runs reached it. The epoch axis starts at the first epoch
    with data. The legend is made of proxy artists, which are not in `ax.get_lines()`."""
    records = coerce(records)
    with matplotlib.style.context("default"):
        fig = _new_figure(9.5, 5.0)
        ax = fig.add_subplot(1, 1, 1)
        drawn, missing, styles, epochs = _draw_runs(ax, records, metric, max_epochs)
        banded = _draw_bands(ax, records, metric)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # one epoch: one tick
        ax.set_ylabel(metric_label(metric))
        heading = f"{title}: {metric} per epoch" if title else f"{metric} per epoch"
        if missing:
            heading += f" ({missing} run{'s' if missing != 1 else ''} without history not shown)"
        ax.set_title(heading, fontsize=11)
        if drawn:
            first, last = min(epochs), max(max(epochs), max_epochs or 0)
            ax.set_xlim((first, last) if last > first else (first - 0.5, first + 0.5))
            ax.grid(True, alpha=0.3)
            # outside the axes: never over a curve, and no slow loc="best" search over many runs
            ax.legend(handles=_curve_legend(records, styles, banded), fontsize=8, loc="upper left",
                      bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
        else:
            ax.text(0.5, 0.5, f"no run has a history of {metric}", ha="center", va="center",
                    transform=ax.transAxes)
        fig.tight_layout()
    return fig


def _draw_runs(ax, records, metric, max_epochs) -> tuple[int, int, set[str], list[int]]:
    """One line per run; returns (drawn, without history, statuses drawn, epochs seen)."""
    drawn, missing, styles, epochs = 0, 0, set(), []
    for rec in records:
        points = curve(rec, metric)
        if not points:
            missing += 1
            continue
        status = effective_status(rec, max_epochs)
        style = _LINESTYLES.get(status, "-")
        styles.add(status if style != "-" else "FINISHED")
        xs, ys = zip(*points)
        epochs += xs
        marker = "o" if status == "KILLED" or len(points) == 1 else None
        ax.plot(xs, ys, color=strategy_color((rec.params or {}).get(STRATEGY)), linestyle=style, lw=1.0,
                alpha=0.45, marker=marker, markersize=4, gid=f"run:{rec.trial_id}", clip_on=False)
        drawn += 1
    return drawn, missing, styles, epochs


def _draw_bands(ax, records, metric) -> bool:
    """Per strategy: mean per epoch over the runs that reached it, 95 % t band where n >= 2."""
    any_band = False
    for strategy in _strategies(records):
        per_epoch: dict[int, list[float]] = {}
        for rec in records:
            if (rec.params or {}).get(STRATEGY) == strategy:
                for epoch, value in curve(rec, metric):
                    if math.isfinite(value):
                        per_epoch.setdefault(epoch, []).append(value)
        if not per_epoch:
            continue
        xs = sorted(per_epoch)
        summaries = [summarize(per_epoch[e]) for e in xs]
        color = strategy_color(strategy)
        ax.plot(xs, [s.mean for s in summaries], color=color, lw=2.4, marker="o" if len(xs) == 1 else None,
                clip_on=False, gid=f"mean:{strategy}")
        band = [(x, s.ci) for x, s in zip(xs, summaries) if s.ci]
        if band:
            any_band = True
            bx = [x for x, _ in band]
            if len(bx) == 1:  # one epoch: a visible sliver around it
                bx = [bx[0] - 0.15, bx[0] + 0.15]
                band = band * 2
            ax.fill_between(bx, [ci[0] for _, ci in band], [ci[1] for _, ci in band], color=color,
                            alpha=0.18, linewidth=0, gid=f"band:{strategy}")
    return any_band


def _curve_legend(records, styles: set[str], banded: bool) -> list:
    handles = _strategy_handles(_strategies(records))
    handles.append(Line2D([], [], color="0.3", lw=2.4, label="mean over runs at each epoch"))
    if banded:
        handles.append(Patch(facecolor="0.3", alpha=0.18, label="95 % CI of the mean (t)"))
    handles.append(Line2D([], [], color="0.3", lw=1.0, alpha=0.6, label="one run (finished)"))
    if "KILLED" in styles:
        handles.append(Line2D([], [], color="0.3", ls="--", marker="o", markersize=4,
                              label="stopped early (ASHA)"))
    if "FAILED" in styles:
        handles.append(Line2D([], [], color="0.3", ls=":", label="failed"))
    return handles


def _numeric_params(records: Sequence[RunRecord], searched: Sequence[str]) -> list[str]:
    out = []
    for key in searched:
        if key in ("seed", "epochs"):
            continue
        values = [(r.params or {}).get(key) for r in records]
        values = [v for v in values if v is not None]
        if values and all(is_number(v) for v in values):
            out.append(key)
    return out


def _log10_axis(ax) -> None:
    """Log x axis with plain labels at 1, 2 and 5 x 10^k (no overlapping minor labels)."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(_PLAIN)
    ax.xaxis.set_minor_formatter(NullFormatter())


def plot_objective_vs_params(records: Sequence[RunRecord], metric: str = "val_knn_top1", *,
                             searched: Sequence[str] = (), max_epochs: int | None = None,
                             title: str | None = None) -> Figure:
    """Final `metric` vs each numeric searched param (one panel each, seed skipped), coloured by
    strategy; FINISHED filled, stopped (and running) hollow, failed as x. key_momentum is shown
    as 1 - m on a log axis; temperature and any positive param spanning > 10x on a log axis;
    queue_size on a log2 axis. Without a numeric searched param: one panel saying so."""
    records = coerce(records)
    keys = _numeric_params(records, searched)
    with matplotlib.style.context("default"):
        if not keys:
            return _nothing_to_plot(metric, title)
        ncols = min(3, len(keys))
        nrows = math.ceil(len(keys) / ncols)
        legend_h = 0.6  # inches reserved under the panels for the figure legend
        fig = _new_figure(4.6 * ncols, 3.6 * nrows + legend_h + 0.35)
        axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(len(keys))]
        statuses: set[str] = set()
        for ax, key in zip(axes, keys):
            statuses |= _objective_panel(ax, key, records, metric, max_epochs)
        handles = _status_legend(records, statuses)
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8,
                   frameon=False)
        fig.suptitle(f"{title}: final {metric} vs searched parameters" if title
                     else f"final {metric} vs searched parameters", fontsize=11)
        height = fig.get_figheight()
        fig.tight_layout(rect=(0, legend_h / height, 1, 1 - 0.35 / height))
    return fig


def _nothing_to_plot(metric: str, title: str | None) -> Figure:
    fig = _new_figure(6.0, 3.0)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_axis_off()
    ax.text(0.5, 0.5, "no numeric parameter was searched\n(nothing to plot against "
            f"{metric})", ha="center", va="center", transform=ax.transAxes)
    if title:
        ax.set_title(title, fontsize=11)
    return fig


def _param_points(records: Sequence[RunRecord], key: str, metric: str,
                  max_epochs: int | None) -> list[tuple[float, float, Any, str]]:
    """(x, final metric, strategy, status) of every run with both; key_momentum as 1 - m."""
    points = []
    for rec in records:
        x = (rec.params or {}).get(key)
        y = run_value(rec, metric)
        if x is None or y is None:
            continue
        x = float(x)
        if key == "key_momentum":
            x = 1.0 - x
            if x <= 0:
                continue
        points.append((x, y, (rec.params or {}).get(STRATEGY), effective_status(rec, max_epochs)))
    return points


def _param_axis(ax, key: str, xs: Sequence[float]) -> str:
    """Set the x scale that suits `key`'s values; returns the axis label."""
    momentum = key == "key_momentum"
    positive = bool(xs) and min(xs) > 0
    if key == "queue_size" and positive:
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(_PLAIN)
        ax.xaxis.set_minor_formatter(NullFormatter())
        return "queue_size (log2 scale)"
    if momentum or (positive and (key == "temperature" or max(xs) > 10 * min(xs))):
        _log10_axis(ax)
        return "1 - key_momentum (log scale)" if momentum else f"{key} (log scale)"
    return key


def _objective_panel(ax, key: str, records: Sequence[RunRecord], metric: str, max_epochs: int | None) -> set[str]:
    """One panel: the runs' final metric against `key`. Returns the statuses drawn."""
    points = _param_points(records, key, metric, max_epochs)
    label = _param_axis(ax, key, [p[0] for p in points])
    statuses = set()
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
    ax.set_ylabel(f"final {metric_label(metric)}")
    ax.grid(True, alpha=0.3)
    return statuses


def _status_legend(records: Sequence[RunRecord], statuses: set[str]) -> list[Line2D]:
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
    return handles


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG bytes (no version stamp), then cleared."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    fig.clear()
    return buf.getvalue()
