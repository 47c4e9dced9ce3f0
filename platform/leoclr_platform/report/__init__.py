"""Ablation reports a researcher can cite: intervals, paired comparisons, baseline, importance.

`build_report(records, metric=..., mode=..., searched=..., grid=..., title=..., out_dir=...,
context=SweepContext(...))` writes into `out_dir`:
- `ablation.md`    scale, the headline table (n, mean, std, 95 % t / bootstrap intervals;
                   confirmation runs when there are any), paired comparisons with the baseline
                   strategy, search runs apart, the random-weights baseline with every gain,
                   parameter importance, RankMe vs validation kNN, evaluations, the plots;
- `ablation.html`  the same, self-contained (PNGs embedded, inline CSS);
- `ablation.csv`   the headline table, one row per group (full precision, blank = none);
- `runs.csv`       one row per run: trial id, status, strategy, epochs, metric, searched params;
- `learning_curves.png`     `metric` vs epoch from the first epoch: one thin line per run, per
                            strategy the mean with its 95 % band; stopped dashed + markers;
- `learning_curves_search.png`  the same for the search runs, when confirm runs head the report;
- `objective_vs_params.png` final `metric` vs each numeric searched param, one panel each;
                            FINISHED filled, stopped hollow;
- `importance.png`          fANOVA / PED-ANOVA bars, when the sweep computed importance.

Modules: records (RunRecord: the input, plain data), build (the table and `build_report`),
plots, render (md/html/csv), stats (intervals and paired tests for citable comparisons),
compare (per-group intervals, paired comparisons, baseline gains, RankMe correlation),
sections (the Markdown report, section by section), importance (table and bar chart),
lookup (which sweeps a store holds, fast), sources (the parent run's importance, baseline,
scale and the evaluation runs, from MLflow), command (`leoclr report`). The package itself
imports neither mlflow nor ray (nor matplotlib until a name that needs it is used).
"""

#: Public names -> the module that defines them; loaded on first use, so that importing the
#: package (e.g. for `report.lookup`, which answers `leoclr report NO-SUCH` fast) loads neither
#: matplotlib nor mlflow.
_EXPORTS = {
    "FILES": "build", "Report": "build", "ablation_rows": "build", "build_report": "build",
    "EXTRA_COLORS": "plots", "STRATEGY_COLORS": "plots", "plot_learning_curves": "plots",
    "plot_objective_vs_params": "plots", "strategy_color": "plots",
    "TABLE_STATS": "records", "RunRecord": "records", "SweepContext": "records",
    "format_params": "records", "format_value": "records",
    "report_sweep": "command",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
