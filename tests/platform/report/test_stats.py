"""report/stats.py against hand computations (closed forms of the t distribution for df 1 and 2, a
worked t interval and paired test) and, where installed, against scipy."""

from __future__ import annotations

import math

import pytest

from leoclr_platform.report import stats


@pytest.mark.parametrize("t", [-3.0, -0.5, 0.0, 0.7, 2.0, 12.7062])
def test_t_cdf_matches_the_closed_forms_for_one_and_two_degrees_of_freedom(t):
    # df = 1 is the Cauchy distribution; df = 2 has F(t) = 1/2 + t / (2 sqrt(2 + t^2))
    assert stats.t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)
    assert stats.t_cdf(t, 2) == pytest.approx(0.5 + t / (2.0 * math.sqrt(2.0 + t * t)), abs=1e-12)


@pytest.mark.parametrize("df, expected", [(1, 12.7062047), (2, 4.3026527), (3, 3.1824463),
                                          (10, 2.2281389), (30, 2.0422725)])
def test_t_quantile_matches_the_printed_tables(df, expected):
    assert stats.t_quantile(0.975, df) == pytest.approx(expected, abs=1e-6)
    assert stats.t_quantile(0.025, df) == pytest.approx(-expected, abs=1e-6)


def test_summary_of_four_seeds_by_hand():
    s = stats.summarize([1.0, 2.0, 3.0, 4.0])
    assert (s.n, s.mean) == (4, 2.5)
    assert s.std == pytest.approx(math.sqrt(5.0 / 3.0))
    half = 3.1824463 * math.sqrt(5.0 / 3.0) / 2.0  # t_{0.975, 3} * s / sqrt(4)
    assert s.ci == pytest.approx((2.5 - half, 2.5 + half), abs=1e-6)
    assert s.bootstrap_ci is None  # n < BOOTSTRAP_MIN_N
    one = stats.summarize([3.0])
    assert (one.n, one.mean, one.std, one.ci) == (1, 3.0, None, None)
    assert stats.summarize([]).n == 0


def test_bootstrap_interval_is_seeded_and_brackets_the_mean():
    values = [70.1, 71.3, 69.8, 72.0, 70.6, 71.1]
    a = stats.bootstrap_interval(values, seed=3)
    assert a == stats.bootstrap_interval(values, seed=3)
    lo, hi = a
    assert min(values) <= lo < stats.mean(values) < hi <= max(values)


def test_paired_comparison_by_hand():
    a = {0: 3.0, 1: 5.0, 2: 4.0, 9: 100.0}  # seed 9 has no partner: ignored
    b = {0: 1.0, 1: 2.0, 2: 2.0}
    r = stats.paired(a, b, names=("leoclr", "moco_v2"))
    # d = [2, 3, 2]: mean 7/3, sd sqrt(1/3), t = (7/3) / (sqrt(1/3) / sqrt(3)) = 7, df = 2
    assert r.seeds == (0, 1, 2) and r.n == 3
    assert r.mean_diff == pytest.approx(7.0 / 3.0)
    assert r.t == pytest.approx(7.0)
    assert r.p_value == pytest.approx(2.0 * (0.5 - 7.0 / (2.0 * math.sqrt(51.0))), abs=1e-12)
    half = 4.3026527 * math.sqrt(1.0 / 3.0) / math.sqrt(3.0)
    assert r.ci == pytest.approx((7.0 / 3.0 - half, 7.0 / 3.0 + half), abs=1e-6)
    assert r.verdict == "leoclr better than moco_v2 by 2.33 points"


def test_an_interval_that_crosses_zero_is_not_distinguishable():
    r = stats.paired({0: 1.0, 1: 3.0, 2: 2.0}, {0: 2.0, 1: 1.0, 2: 2.5})
    assert r.ci[0] < 0 < r.ci[1] and r.verdict == stats.NOT_DISTINGUISHABLE
    few = stats.paired({0: 1.0}, {0: 2.0, 1: 3.0})
    assert few.n == 1 and few.ci is None and "at least 2 shared seeds" in few.verdict


def test_spearman_with_ties_by_hand():
    assert stats.ranks([10.0, 30.0, 20.0, 20.0]) == [1.0, 4.0, 2.5, 2.5]
    assert stats.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert stats.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks x = [1, 2, 3], ranks y = [1, 3, 2]: pearson = 0.5
    assert stats.spearman([1, 2, 3], [5, 9, 7]) == pytest.approx(0.5)
    assert stats.spearman([1, 1, 1], [1, 2, 3]) is None


def test_against_scipy_where_installed():
    sp = pytest.importorskip("scipy.stats")
    for df in (1, 2, 4, 7, 19, 50):
        for t in (-4.2, -1.0, 0.3, 2.5):
            assert stats.t_cdf(t, df) == pytest.approx(sp.t.cdf(t, df), abs=1e-10)
        assert stats.t_quantile(0.975, df) == pytest.approx(sp.t.ppf(0.975, df), abs=1e-9)
    a = [71.2, 70.4, 72.9, 69.8, 71.5]
    b = [70.1, 70.9, 71.0, 69.0, 70.2]
    r = stats.paired(dict(enumerate(a)), dict(enumerate(b)))
    ref = sp.ttest_rel(a, b)
    assert r.t == pytest.approx(ref.statistic) and r.p_value == pytest.approx(ref.pvalue)
    x, y = [0.3, 0.1, 0.9, 0.4, 0.4, 0.7], [12, 10, 33, 11, 15, 31]
    assert stats.spearman(x, y) == pytest.approx(sp.spearmanr(x, y).statistic)
