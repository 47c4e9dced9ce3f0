"""The statistics a citable comparison needs: intervals over seeds, paired tests, rank correlation.

Pure Python (``math`` only), so a report needs nothing beyond the standard library to say how
sure it is. scipy, where installed, is used by the tests as an independent check, never here.

- ``summarize(values)``: n, mean, sample std (ddof 1), a 95 % Student-t interval for the mean and,
  when n >= ``BOOTSTRAP_MIN_N``, a percentile bootstrap interval (seeded, so a report is
  reproducible).
- ``paired(a, b)``: two strategies measured on the same seeds. The per-seed differences d_i =
  a_i - b_i give the mean difference, its t interval and the two-sided paired t-test p-value
  (t = mean(d) / (sd(d) / sqrt(n)), n - 1 degrees of freedom); the verdict is "not
  distinguishable at this n" whenever the interval contains 0.
- ``spearman(x, y)``: rank correlation (ties get average ranks), e.g. RankMe vs kNN accuracy.

The Student-t distribution is computed from the regularised incomplete beta function
I_x(a, b) (continued fraction, Lentz's method): for t >= 0,
P(T <= t) = 1 - I_{df / (df + t^2)}(df / 2, 1 / 2) / 2.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Mapping, Sequence

#: Confidence level of every interval the platform reports.
LEVEL = 0.95
#: Smallest n for which a bootstrap interval is reported next to the t interval (below it the
#: resamples are too few and too alike to say anything the t interval does not).
BOOTSTRAP_MIN_N = 5
BOOTSTRAP_RESAMPLES = 10_000
NOT_DISTINGUISHABLE = "not distinguishable at this n"


# ---------------------------------------------------------------------------------------------
# Student's t distribution
def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (Lentz), converges for x < (a+1)/(a+b+2)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function I_x(a, b), 0 <= x <= 1."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"betainc: x={x} must be in [0, 1]")
    if x in (0.0, 1.0):
        return x
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"t_cdf: df={df} must be > 0")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))  # P(T > |t|)
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p (bisection on ``t_cdf``; |error| < 1e-12)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"t_quantile: p={p} must be in (0, 1)")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return 0.5 * (lo + hi)


# ---------------------------------------------------------------------------------------------
# One group of values (one strategy over seeds)
def mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def sample_std(values: Sequence[float]) -> float | None:
    """Standard deviation with ddof = 1; None for n < 2."""
    n = len(values)
    if n < 2:
        return None
    m = mean(values)
    return math.sqrt(math.fsum((v - m) ** 2 for v in values) / (n - 1))


def t_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float] | None:
    """mean +- t_{(1+level)/2, n-1} * s / sqrt(n); None for n < 2."""
    n = len(values)
    s = sample_std(values)
    if s is None:
        return None
    half = t_quantile(0.5 + level / 2.0, n - 1) * s / math.sqrt(n)
    m = mean(values)
    return m - half, m + half


def bootstrap_interval(values: Sequence[float], level: float = LEVEL, *,
                       resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean (seeded); None for n < BOOTSTRAP_MIN_N."""
    n = len(values)
    if n < BOOTSTRAP_MIN_N:
        return None
    rng = random.Random(seed)
    means = sorted(math.fsum(rng.choices(values, k=n)) / n for _ in range(resamples))
    alpha = (1.0 - level) / 2.0
    return _percentile(means, alpha), _percentile(means, 1.0 - alpha)


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between order statistics (numpy's default 'linear' method)."""
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


@dataclass(frozen=True)
class Summary:
    """n, mean, sample std and intervals of one group (None where n is too small)."""

    n: int
    mean: float | None
    std: float | None
    ci: tuple[float, float] | None
    bootstrap_ci: tuple[float, float] | None
    level: float = LEVEL


def summarize(values: Sequence[float], level: float = LEVEL, *, seed: int = 0) -> Summary:
    values = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not values:
        return Summary(0, None, None, None, None, level)
    return Summary(len(values), mean(values), sample_std(values), t_interval(values, level),
                   bootstrap_interval(values, level, seed=seed), level)


# ---------------------------------------------------------------------------------------------
# Two groups measured on the same seeds
@dataclass(frozen=True)
class Paired:
    """a - b over the seeds both have: the effect, its interval, the paired t-test and a verdict."""

    a: str
    b: str
    seeds: tuple
    n: int
    mean_diff: float | None
    ci: tuple[float, float] | None
    t: float | None
    p_value: float | None
    verdict: str
    level: float = LEVEL


def paired(a: Mapping, b: Mapping, *, names: tuple[str, str] = ("a", "b"), level: float = LEVEL,
           unit: str = "points") -> Paired:
    """Paired comparison of two groups keyed by seed ({seed: value}); only shared seeds count."""
    seeds = tuple(sorted(set(a) & set(b), key=lambda s: (str(type(s)), s)))
    diffs = [float(a[s]) - float(b[s]) for s in seeds]
    n = len(diffs)
    name_a, name_b = names
    if n < 2:
        return Paired(name_a, name_b, seeds, n, diffs[0] if diffs else None, None, None, None,
                      f"needs at least 2 shared seeds to compare (has {n})", level)
    m, s = mean(diffs), sample_std(diffs)
    ci = t_interval(diffs, level)
    if s == 0.0:
        t = math.inf if m > 0 else (-math.inf if m < 0 else 0.0)
        p = 1.0 if m == 0 else 0.0
    else:
        t = m / (s / math.sqrt(n))
        p = 2.0 * (1.0 - t_cdf(abs(t), n - 1))
    if ci[0] <= 0.0 <= ci[1]:
        verdict = NOT_DISTINGUISHABLE
    else:
        better, worse = (name_a, name_b) if m > 0 else (name_b, name_a)
        verdict = f"{better} better than {worse} by {abs(m):.2f} {unit}"
    return Paired(name_a, name_b, seeds, n, m, ci, t, p, verdict, level)


# ---------------------------------------------------------------------------------------------
def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return out


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    if len(x) != len(y):
        raise ValueError(f"pearson: {len(x)} x values but {len(y)} y values")
    if len(x) < 2:
        return None
    mx, my = mean(x), mean(y)
    sxy = math.fsum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = math.fsum((a - mx) ** 2 for a in x)
    syy = math.fsum((b - my) ** 2 for b in y)
    if sxx == 0 or syy == 0:
        return None
    return sxy / math.sqrt(sxx * syy)


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rho: the Pearson correlation of the ranks; None for n < 2 or a constant side."""
    return pearson(ranks(x), ranks(y))
