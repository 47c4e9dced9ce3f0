"""The numbers behind a citable comparison: per-group intervals, paired comparisons on shared
seeds, gains over the random-weights baseline, RankMe's rank correlation with the validation kNN.

Pure Python on top of `stats` (no mlflow, no matplotlib):
- `group_stats(values)`: the interval columns of an ablation row (95 % t-interval of the mean;
  percentile bootstrap too when n >= stats.BOOTSTRAP_MIN_N);
- `comparisons(rows, ...)`: every group against its reference group (the baseline strategy,
  moco_v2 for LeOCLR, with the same other group values), paired on the seeds both share;
  a group in which one seed occurs twice (search trials that differ in more than the seed) is
  not paired, and the comparison says why;
- `baseline_gains(rows, baseline, ...)`: each group's mean against the recalibrated-random
  baseline (paired on shared seeds, else Welch, else the baseline taken as a constant);
- `rankme_correlation(records)`: Spearman's rho of final rankme vs final val_knn_top1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from leoclr_platform.report import stats
from leoclr_platform.report.records import STRATEGY, STRATEGY_ORDER, RunRecord, effective_status, run_value

#: The strategy every other one is compared with (MoCo-v2 is LeOCLR's baseline).
BASELINE_STRATEGY = "moco_v2"
NOT_PAIRED = "not paired: a seed occurs more than once in a group (runs differ in more than the seed)"


def unit_of(metric: str) -> str:
    """The unit of a difference of `metric`: accuracies are in %, so differences in points."""
    return "points" if "top1" in metric or "top5" in metric else ""


def group_stats(values: Sequence[float]) -> dict[str, Any]:
    """ci_low/ci_high (t), boot_low/boot_high (bootstrap, n >= 5), interval (which ones)."""
    s = stats.summarize(values)
    ci, boot = s.ci, s.bootstrap_ci
    interval = "t" if ci else "-"
    if boot:
        interval = "t; bootstrap"
    return {"ci_low": ci[0] if ci else None, "ci_high": ci[1] if ci else None,
            "boot_low": boot[0] if boot else None, "boot_high": boot[1] if boot else None,
            "interval": interval}


def by_seed(pairs: Sequence[tuple[float, RunRecord]]) -> dict[Any, float] | None:
    """{seed: value} of a group's finished runs; None when a seed is missing or repeats."""
    out: dict[Any, float] = {}
    for value, rec in pairs:
        seed = rec.seed if rec.seed is not None else (rec.params or {}).get("seed")
        if seed is None or seed in out:
            return None
        out[seed] = value
    return out


@dataclass(frozen=True)
class Comparison:
    """One group against its reference: the paired statistics and a verdict in plain words."""

    group: str
    reference: str
    seeds: tuple
    n: int
    mean_diff: float | None
    ci: tuple[float, float] | None
    p_value: float | None
    verdict: str


def verdict_of(p: stats.Paired, mode: str, unit: str) -> str:
    """Plain words: which is better and by how much, or that the interval crosses 0."""
    if p.ci is None:
        return p.verdict
    if p.ci[0] <= 0.0 <= p.ci[1]:
        return stats.NOT_DISTINGUISHABLE
    higher = p.mean_diff > 0
    better = higher == (mode == "max")
    amount = f"{abs(p.mean_diff):.2f}{' ' + unit if unit else ''}"
    return (f"{p.a} {'higher' if higher else 'lower'} than {p.b} by {amount} "
            f"({'better' if better else 'worse'}, 95 % CI excludes 0)")


def reference_strategy(strategies: Sequence[Any]) -> Any:
    """BASELINE_STRATEGY when present, else the first strategy in the report's order."""
    if BASELINE_STRATEGY in strategies:
        return BASELINE_STRATEGY
    known = [s for s in STRATEGY_ORDER if s in strategies]
    return known[0] if known else sorted(strategies, key=str)[0]


def _reference_rows(rows: Sequence[dict], group_cols: Sequence[str]) -> list[tuple[dict, dict]]:
    """(row, its reference row) pairs: same non-strategy group values, reference strategy (its
    best row when it has several, e.g. confirmed configs: `confirm_of` is not matched); with one
    strategy only, every row against the first row."""
    strategies = list(dict.fromkeys(r.get(STRATEGY) for r in rows))
    if len(strategies) < 2:
        return [(r, rows[0]) for r in rows[1:]]
    ref = reference_strategy(strategies)
    others = [c for c in group_cols if c not in (STRATEGY, "confirm_of")]
    pairs = []
    for row in rows:
        if row.get(STRATEGY) == ref:
            continue
        match = [r for r in rows if r.get(STRATEGY) == ref and all(r.get(c) == row.get(c) for c in others)]
        if match:
            pairs.append((row, match[0]))
    return pairs


def comparisons(rows: Sequence[dict], group_cols: Sequence[str], metric: str, mode: str) -> list[Comparison]:
    """Every row against its reference row, paired on shared seeds (rows need `label`, `by_seed`)."""
    unit = unit_of(metric)
    out = []
    for row, ref in _reference_rows([r for r in rows if r.get("n")], group_cols):
        if row.get("by_seed") is None or ref.get("by_seed") is None:
            out.append(Comparison(row["label"], ref["label"], (), 0, None, None, None, NOT_PAIRED))
            continue
        p = stats.paired(row["by_seed"], ref["by_seed"], names=(row["label"], ref["label"]), unit=unit)
        out.append(Comparison(row["label"], ref["label"], p.seeds, p.n, p.mean_diff, p.ci, p.p_value,
                              verdict_of(p, mode, unit)))
    return out


# ---------------------------------------------------------------------------------------------
# the random-weights baseline
def baseline_values(baseline: Mapping[str, Any] | None, metric: str) -> tuple[float | None, dict]:
    """(mean, {seed: value}) of `metric` in a baseline.json document (seeds as ints where they are)."""
    if not baseline:
        return None, {}
    per_seed = {}
    for seed, values in (baseline.get("per_seed") or {}).items():
        v = (values or {}).get(metric)
        if v is not None and math.isfinite(float(v)):
            per_seed[int(seed) if str(seed).lstrip("-").isdigit() else seed] = float(v)
    mean = (baseline.get("mean") or {}).get(metric)
    if mean is None and per_seed:
        mean = stats.mean(list(per_seed.values()))
    return (float(mean) if mean is not None else None), per_seed


def welch_interval(a: Sequence[float], b: Sequence[float]) -> tuple[float, float] | None:
    """95 % Welch interval of mean(a) - mean(b); None when a side has n < 2 or no spread."""
    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = stats.sample_std(a) ** 2 / len(a), stats.sample_std(b) ** 2 / len(b)
    if va + vb == 0:
        return None
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = stats.t_quantile(0.5 + stats.LEVEL / 2.0, df) * math.sqrt(va + vb)
    d = stats.mean(a) - stats.mean(b)
    return d - half, d + half


def gain_over(row: Mapping[str, Any], base_mean: float, base_seeds: Mapping) -> dict[str, Any]:
    """The gain of one row's mean over the baseline, its 95 % CI and how the CI was made."""
    values = [v for v, _ in row.get("values", [])] or list((row.get("by_seed") or {}).values())
    gain = row["mean"] - base_mean
    mine = row.get("by_seed") or {}
    shared = sorted(set(mine) & set(base_seeds), key=str)
    if len(shared) >= 2:
        p = stats.paired({s: mine[s] for s in shared}, {s: base_seeds[s] for s in shared})
        return {"gain": p.mean_diff, "gain_ci": p.ci, "how": f"paired on seeds {', '.join(map(str, shared))}"}
    if len(base_seeds) >= 2 and len(values) >= 2:
        ci = welch_interval(values, list(base_seeds.values()))
        return {"gain": gain, "gain_ci": ci, "how": "Welch (no shared seeds)"}
    if len(values) >= 2:
        lo, hi = stats.t_interval(values)
        return {"gain": gain, "gain_ci": (lo - base_mean, hi - base_mean),
                "how": "t-interval of the mean, baseline taken as exact (1 seed)"}
    return {"gain": gain, "gain_ci": None, "how": "n = 1: no interval"}


def baseline_gains(rows: Sequence[dict], baseline: Mapping[str, Any] | None, metric: str,
                   mode: str) -> tuple[float | None, list[dict[str, Any]]]:
    """(baseline mean, [{label, mean, gain, gain_ci, how, sentence}]) for rows with a mean."""
    base_mean, base_seeds = baseline_values(baseline, metric)
    if base_mean is None:
        return None, []
    out = []
    unit = unit_of(metric)
    for row in rows:
        if row.get("mean") is None:
            continue
        g = gain_over(row, base_mean, base_seeds)
        sign = 1.0 if mode == "max" else -1.0
        sentence = ""
        if sign * g["gain"] <= 0:
            sentence = (f"{row['label']}'s mean {metric} ({row['mean']:.2f}) does not beat the random-weights "
                        f"baseline ({base_mean:.2f}): at this scale training did not improve on random features.")
        elif g["gain_ci"] and g["gain_ci"][0] <= 0.0 <= g["gain_ci"][1]:
            sentence = (f"{row['label']}'s gain over the random-weights baseline ({g['gain']:+.2f} {unit}".rstrip()
                        + f") is {stats.NOT_DISTINGUISHABLE}.")
        out.append({"label": row["label"], "mean": row["mean"], **g, "sentence": sentence})
    return base_mean, out


# ---------------------------------------------------------------------------------------------
def rankme_correlation(records: Sequence[RunRecord], max_epochs: int | None,
                       target: str = "val_knn_top1") -> tuple[float | None, int]:
    """(Spearman rho, n) of final rankme vs final `target` over finished runs that log both."""
    xs, ys = [], []
    for rec in records:
        if effective_status(rec, max_epochs) != "FINISHED":
            continue
        r, k = run_value(rec, "rankme"), run_value(rec, target)
        if r is not None and k is not None:
            xs.append(r)
            ys.append(k)
    return (stats.spearman(xs, ys) if len(xs) >= 2 else None), len(xs)
