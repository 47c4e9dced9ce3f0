"""Ablation reports: a table of mean +- std per attraction strategy (or grid cell), plots, files.

`build_report(records, metric=..., mode=..., searched=..., grid=..., title=..., out_dir=...)`
writes into `out_dir`:
- `ablation.md`    title, what was compared, the table, links to the two PNGs;
- `ablation.html`  the same, self-contained (PNGs embedded, inline CSS);
- `ablation.csv`   the table, one row per group (numbers at full precision, blank = none);
- `runs.csv`       one row per run: trial id, status, strategy, epochs, metric, searched params;
- `learning_curves.png`     `metric` vs epoch, one line per run, one colour per strategy,
                            KILLED (stopped early) dashed, FAILED dotted;
- `objective_vs_params.png` final `metric` vs each numeric searched param, one panel each;
                            FINISHED filled, stopped hollow.

Modules: records (RunRecord: the input, plain data), build (the table and `build_report`),
plots, render (md/html/csv), stats (intervals and paired tests for citable comparisons),
command (`leoclr report`: reads MLflow; imported on first use). The package itself imports
neither mlflow nor ray, so a report can be built anywhere matplotlib runs.
"""

from leoclr_platform.report.build import FILES, Report, ablation_rows, build_report
from leoclr_platform.report.plots import (
    EXTRA_COLORS,
    STRATEGY_COLORS,
    plot_learning_curves,
    plot_objective_vs_params,
    strategy_color,
)
from leoclr_platform.report.records import TABLE_STATS, RunRecord, format_params, format_value

__all__ = [
    "RunRecord", "Report", "build_report", "ablation_rows", "plot_learning_curves", "plot_objective_vs_params",
    "format_value", "format_params", "strategy_color", "STRATEGY_COLORS", "EXTRA_COLORS", "TABLE_STATS", "FILES",
    "report_sweep",
]


def __getattr__(name: str):
    if name == "report_sweep":  # reads MLflow: only when asked for
        from leoclr_platform.report.command import report_sweep

        return report_sweep
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
