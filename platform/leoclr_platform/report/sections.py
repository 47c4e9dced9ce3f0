"""ablation.md, section by section: scale, the headline table and its paired comparisons, the
search runs (when confirmation runs head the report), the random-weights baseline, parameter
importance, RankMe as a label-free objective, evaluations of promoted versions, the plots.

Every number that claims something says what it rests on: n, the seeds, the interval, the
reference it is compared with.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from leoclr_platform.report import stats
from leoclr_platform.report.compare import BASELINE_STRATEGY, NOT_PAIRED, unit_of
from leoclr_platform.report.importance import importance_lines
from leoclr_platform.report.records import STRATEGY, SweepContext, decimals
from leoclr_platform.report.render import table_lines

INTERVAL_NOTE = (f"Intervals: 95 % Student-t interval of the mean over runs (n >= 2); a percentile bootstrap "
                 f"interval ({stats.BOOTSTRAP_RESAMPLES:,} resamples, seeded) too where n >= "
                 f"{stats.BOOTSTRAP_MIN_N}; '-' where n is too small.")


def document(title: str, summary: str, rep, context: SweepContext, images: dict[str, bytes]) -> str:
    """The whole Markdown report."""
    dec = decimals([v for r in rep.rows + rep.search_rows for v in (r["mean"], r["best"]) if v is not None])
    lines = [f"# {title}", ""]
    if context.scale:
        lines += ["**Scale.** " + "; ".join(f"{k}: {v}" for k, v in context.scale.items()) + ".", ""]
    lines += [summary, ""]
    lines += headline_lines(rep, dec)
    if rep.stage == "confirm" and rep.search_rows:
        lines += ["## Search runs (not the headline)", "",
                  "The search trials, on which the configurations were selected (so their best values are "
                  "optimistic); shown for completeness, never as the comparison.", ""]
        lines += table_lines(rep.search_group_columns + [c for c in rep.columns if c not in rep.group_columns],
                             rep.search_rows, dec) + [""]
    lines += ["## Random-weights baseline", ""] + baseline_lines(rep, context) + [""]
    lines += ["## Parameter importance", ""] + importance_lines(context.importance,
                                                                context.absent.get("importance", "")) + [""]
    lines += ["## RankMe as a label-free objective", "", rankme_line(rep.rankme), ""]
    lines += ["## Evaluation of promoted model versions", ""] + evaluation_lines(context.evaluations) + [""]
    lines += ["## Plots", "", "![learning curves](learning_curves.png)", ""]
    if "learning_curves_search.png" in images:
        lines += ["![learning curves of the search runs](learning_curves_search.png)", ""]
    lines += ["![objective vs searched parameters](objective_vs_params.png)", ""]
    return "\n".join(lines)


def headline_lines(rep, dec: int) -> list[str]:
    """The headline table, the interval note and the paired comparisons."""
    if rep.stage == "confirm":
        head = ["## Headline: confirmation runs", "",
                "The best configuration of each strategy re-run at the full budget on fresh seeds (runs tagged "
                "`stage=confirm`); the comparison below uses these runs only.", ""]
    else:
        head = ["## Results per " + ("grid cell" if len(rep.group_columns) > 1 else "strategy"), ""]
    lines = head + table_lines(rep.columns, rep.rows, dec) + ["", INTERVAL_NOTE, ""]
    return lines + comparison_lines(rep) + [""]


def comparison_lines(rep) -> list[str]:
    strategies = {r.get(STRATEGY) for r in rep.rows}
    ref = BASELINE_STRATEGY if BASELINE_STRATEGY in strategies else None
    lines = ["### Paired comparisons", ""]
    if not rep.comparisons:
        return lines + ["No paired comparison: fewer than two groups with finished runs to compare."]
    if all(c.n == 0 and c.verdict == NOT_PAIRED for c in rep.comparisons):
        return lines + ["No paired comparison: within a group a seed occurs more than once (search trials differ "
                        "in their hyperparameters, not only in their seed), so nothing pairs. A citable "
                        "comparison needs the confirmation stage (`budget.confirm` or `leoclr sweep --confirm`)."]
    unit = unit_of(rep.metric)
    what = f"baseline strategy `{ref}`" if ref else f"reference group `{rep.comparisons[0].reference}`"
    lines += [f"Each group against the {what}, paired on the seeds both have (difference = group - reference"
              f"{', in ' + unit if unit else ''}; 95 % t-interval of the mean difference; two-sided paired "
              "t-test).", "",
              "| comparison | seeds | n | mean difference | 95 % CI | p (paired t) | verdict |",
              "| --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for c in rep.comparisons:
        seeds = ", ".join(map(str, c.seeds)) or "-"
        diff = "-" if c.mean_diff is None else f"{c.mean_diff:+.2f}"
        ci = "-" if c.ci is None else f"[{c.ci[0]:+.2f}, {c.ci[1]:+.2f}]"
        p = "-" if c.p_value is None else (f"{c.p_value:.3g}" if c.p_value >= 1e-4 else "< 0.0001")
        lines.append(f"| {c.group} vs {c.reference} | {seeds} | {c.n} | {diff} | {ci} | {p} | {c.verdict} |")
    return lines


def baseline_lines(rep, context: SweepContext) -> list[str]:
    doc = context.baseline
    if rep.baseline_mean is None:
        why = context.absent.get("baseline") or (
            f"baseline.json has no `{rep.metric}`" if doc else "the sweep's run has no baseline.json")
        return [f"No baseline row: {why}."]
    seeds = ", ".join(map(str, doc.get("seeds") or [])) or "?"
    unit = unit_of(rep.metric)
    lines = [f"The same backbone, untrained ({doc.get('what', 'random weights')}), seeds {seeds}, under "
             f"the same protocol: mean `{rep.metric}` = {rep.baseline_mean:.2f}. Every gain below is "
             f"group - baseline{', in ' + unit if unit else ''}.", "",
             "| group | mean | gain over baseline | 95 % CI of the gain | interval |",
             "| --- | ---: | ---: | ---: | --- |",
             f"| random weights (baseline) | {rep.baseline_mean:.2f} | - | - | - |"]
    for g in rep.gains:
        ci = "-" if g["gain_ci"] is None else f"[{g['gain_ci'][0]:+.2f}, {g['gain_ci'][1]:+.2f}]"
        lines.append(f"| {g['label']} | {g['mean']:.2f} | {g['gain']:+.2f} | {ci} | {g['how']} |")
    sentences = [g["sentence"] for g in rep.gains if g["sentence"]]
    return lines + ([""] + sentences if sentences else [])


def rankme_line(rankme: tuple[float | None, int]) -> str:
    rho, n = rankme
    if n < 3 or rho is None:
        return (f"Too few finished runs log both `rankme` and `val_knn_top1` to correlate them (n = {n}; "
                "needs 3 with some spread).")
    strength = "strongly" if abs(rho) >= 0.7 else ("moderately" if abs(rho) >= 0.4 else "weakly")
    return (f"Spearman rank correlation of final `rankme` with final `val_knn_top1` over {n} finished runs: "
            f"rho = {rho:+.2f}. RankMe ranks these runs {strength} "
            f"{'like' if rho >= 0 else 'against'} the validation kNN; judge by this how far to trust it as the "
            "objective on unlabelled data.")


#: Evaluation metrics shown first, in this order (others matching *_top1 / *_drop follow).
EVAL_ORDER = ("knn_top1", "linear_top1", "linear_top5", "random_crop_top1", "random_crop_drop",
              "semi_1pct_top1", "semi_10pct_top1")


def evaluation_columns(evaluations: Sequence[dict[str, Any]]) -> list[str]:
    keys = {k for e in evaluations for k in e.get("metrics", {})}
    shown = [k for k in EVAL_ORDER if k in keys]
    shown += sorted(k for k in keys if k not in shown and not k.startswith("baseline_")
                    and (k.endswith("_top1") or k.endswith("_drop")))
    return shown


def evaluation_lines(evaluations: Sequence[dict[str, Any]]) -> list[str]:
    if not evaluations:
        return ["No evaluation run of this sweep's promoted versions yet "
                "(`leoclr promote --sweep NAME`, then `leoclr evaluate models:/leoclr-encoder@candidate`)."]
    cols = evaluation_columns(evaluations)
    lines = ["Evaluation runs of model versions promoted from this sweep (test split; baseline values, where "
             "the evaluation logged them, in brackets).", "",
             "| model version | strategy | trial | dataset | " + " | ".join(cols) + " |",
             "| --- | --- | --- | --- | " + " | ".join("---:" for _ in cols) + " |"]
    for e in evaluations:
        m = e.get("metrics", {})
        cells = []
        for k in cols:
            v, b = m.get(k), m.get(f"baseline_{k}")
            text = "-" if v is None or not math.isfinite(v) else f"{v:.2f}"
            cells.append(text + (f" ({b:.2f})" if b is not None and math.isfinite(b) else ""))
        lines.append(f"| {e.get('model', '-')} | {e.get('strategy') or '-'} | {e.get('trial_id') or '-'} | "
                     f"{e.get('dataset') or '-'} | " + " | ".join(cells) + " |")
    return lines
