"""Parameter importance of a search sweep, as the report shows it: a table and a bar chart.

The input is the parent run's `importance.json` (written after the search from the sweep's own
Optuna study): {"n_trials": int, "metric": str, "methods": {"fanova": {param: value},
"ped_anova": {param: value}}, "errors": {method: reason}}. Nothing here imports optuna.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import matplotlib
import matplotlib.style

from leoclr_platform.report.plots import _new_figure

#: Method names as a reader knows them.
METHOD_NAMES = {"fanova": "fANOVA", "ped_anova": "PED-ANOVA"}


def methods_of(doc: Mapping[str, Any]) -> list[str]:
    """The methods that produced values, fANOVA first."""
    methods = [m for m, v in (doc.get("methods") or {}).items() if v]
    return sorted(methods, key=lambda m: (m not in METHOD_NAMES, list(METHOD_NAMES).index(m)
                                          if m in METHOD_NAMES else 0, m))


def importance_table(doc: Mapping[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """(methods, [[param, value per method (None where absent)], ...]) sorted by the first
    method's importance, most important first."""
    methods = methods_of(doc)
    values = doc.get("methods") or {}
    params: list[str] = []
    for m in methods:
        params += [p for p in values[m] if p not in params]

    def key(p: str) -> tuple:
        first = values[methods[0]].get(p) if methods else None
        return (first is None, -(first or 0.0), p)

    rows = [[p] + [_number(values[m].get(p)) for m in methods] for p in sorted(params, key=key)]
    return methods, rows


def _number(v: Any) -> float | None:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def importance_lines(doc: Mapping[str, Any] | None, absent: str) -> list[str]:
    """The report's importance section (Markdown lines, no heading)."""
    if not doc or not methods_of(doc):
        if doc:
            reason = f"no method succeeded on the {doc.get('n_trials', '?')} completed trials"
        else:
            reason = absent or "the sweep's run has no importance.json"
        errors = "; ".join(f"{METHOD_NAMES.get(m, m)}: {str(r).rstrip('.')}"
                           for m, r in ((doc or {}).get("errors") or {}).items())
        return [f"Parameter importance is not available: {reason}" + (f" ({errors})" if errors else "") + "."]
    methods, rows = importance_table(doc)
    n = doc.get("n_trials")
    lines = [f"Importance of each searched parameter for `{doc.get('metric', '?')}`, from the sweep's own "
             f"Optuna study ({', '.join(METHOD_NAMES.get(m, m) for m in methods)}; higher = more important), "
             f"resting on {n if n is not None else 'an unknown number of'} completed trials.", "",
             "| parameter | " + " | ".join(METHOD_NAMES.get(m, m) for m in methods) + " |",
             "| --- | " + " | ".join("---:" for _ in methods) + " |"]
    for row in rows:
        lines.append(f"| {row[0]} | " + " | ".join("-" if v is None else f"{v:.3f}" for v in row[1:]) + " |")
    for m, reason in (doc.get("errors") or {}).items():
        lines += ["", f"{METHOD_NAMES.get(m, m)} could not be computed: {str(reason).rstrip('.')}."]
    lines += ["", "![parameter importance](importance.png)"]
    return lines


def plot_importance(doc: Mapping[str, Any], title: str | None = None):
    """Horizontal bars, one group per parameter, one bar per method (most important on top)."""
    methods, rows = importance_table(doc)
    colors = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728")
    with matplotlib.style.context("default"):
        fig = _new_figure(7.5, 1.2 + 0.45 * max(1, len(rows)) * max(1, len(methods)) ** 0.5)
        ax = fig.add_subplot(1, 1, 1)
        height = 0.8 / max(1, len(methods))
        for i, m in enumerate(methods):
            ys = [len(rows) - 1 - j + (i - (len(methods) - 1) / 2) * height for j in range(len(rows))]
            ax.barh(ys, [r[1 + i] or 0.0 for r in rows], height=height, color=colors[i % len(colors)],
                    label=METHOD_NAMES.get(m, m))
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([r[0] for r in reversed(rows)])
        ax.set_xlabel("importance (share of the objective's variance, 0-1)")
        n = doc.get("n_trials")
        ax.set_title(f"{title + ': ' if title else ''}parameter importance for {doc.get('metric', '?')} "
                     f"({n} trials)", fontsize=11)
        ax.grid(True, axis="x", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
    return fig
