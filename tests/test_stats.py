"""tcpskim.stats against known values: t quantiles, a hand-computed CI, Fieller (independent and
paired), percentiles."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcpskim import stats


@pytest.mark.parametrize("df,expected", [(1, 12.706205), (2, 4.302653), (4, 2.776445),
                                         (9, 2.262157), (30, 2.042272)])
def test_t_quantile_95_table(df, expected):
    assert stats.t_quantile(0.95, df) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("level,df,expected", [(0.99, 9, 3.249836), (0.90, 4, 2.131847),
                                               (0.95, 60, 2.000298), (0.95, 120, 1.979930),
                                               (0.80, 5, 1.475884)])
def test_t_quantile_other_levels_and_large_df(level, df, expected):
    assert stats.t_quantile(level, df) == pytest.approx(expected, abs=2e-6)


def test_table_matches_numeric_inversion():
    for level, table in stats._T_TABLE.items():
        for df, v in enumerate(table, start=1):
            assert stats._t_quantile_numeric(1 - (1 - level) / 2, df) == pytest.approx(v, abs=2e-6)


def test_t_quantile_tends_to_normal():
    assert stats.t_quantile(0.95, 1e6) == pytest.approx(1.959964, abs=1e-5)
    assert stats.t_quantile(0.95, 1e8) == pytest.approx(1.959964, abs=1e-6)


def test_t_cdf_known_value():
    assert stats.t_cdf(0.0, 3) == pytest.approx(0.5)
    assert stats.t_cdf(2.776445, 4) == pytest.approx(0.975, abs=1e-7)
    assert stats.t_cdf(-2.776445, 4) == pytest.approx(0.025, abs=1e-7)


def test_mean_ci_hand_computed():
    # mean 10, s = 1, se = 1/sqrt(3), t(0.975, 2) = 4.302653 -> half-width 2.484138
    mean, lo, hi, n = stats.mean_ci([9, 10, 11])
    assert (mean, n) == (10, 3)
    assert lo == pytest.approx(7.515862, abs=1e-6)
    assert hi == pytest.approx(12.484138, abs=1e-6)


def test_mean_ci_second_hand_computed():
    # 2,4,4,4,5,5,7,9: mean 5, s^2 = 32/7, se = sqrt(32/56), t(0.975, 7) = 2.364624
    mean, lo, hi, n = stats.mean_ci([2, 4, 4, 4, 5, 5, 7, 9])
    half = 2.364624 * math.sqrt(32 / 7 / 8)
    assert (mean, n) == (5, 8)
    assert (lo, hi) == (pytest.approx(5 - half, abs=1e-6), pytest.approx(5 + half, abs=1e-6))


def test_mean_ci_small_and_missing():
    assert stats.mean_ci([4.5]) == (4.5, None, None, 1)
    assert stats.mean_ci([]) == (None, None, None, 0)
    assert stats.mean_ci([None, 3.0, float("nan")]) == (3.0, None, None, 1)
    assert stats.mean_ci([2, 2, 2]) == (2, 2, 2, 3)


def test_ratio_ci_matches_textbook_fieller_form():
    a, b = [9, 10, 11], [19, 20, 21]
    r, lo, hi = stats.ratio_ci(a, b)
    assert r == pytest.approx(0.5)
    # textbook form (cov = 0): (r ± t/mb * sqrt(va(1-g) + r^2 vb)) / (1-g), g = t^2 vb / mb^2
    va = vb = 1 / 3
    v = va + 0.25 * vb
    df = v * v / (va * va / 2 + (0.25 * vb) ** 2 / 2)
    assert df == pytest.approx(2.9412, abs=1e-4)
    t = stats.t_quantile(0.95, df)
    g = t * t * vb / 400
    half = t / 20 * math.sqrt(va * (1 - g) + 0.25 * vb)
    assert lo == pytest.approx((0.5 - half) / (1 - g), rel=1e-9)
    assert hi == pytest.approx((0.5 + half) / (1 - g), rel=1e-9)
    assert lo < 0.5 < hi


def test_ratio_ci_undefined_cases():
    assert stats.ratio_ci([1, 2], [0, 0]) == (None, None, None)
    assert stats.ratio_ci([], [1, 2]) == (None, None, None)
    assert stats.ratio_ci([10], [20, 21]) == (10 / 20.5, None, None)
    # denominator indistinguishable from zero -> unbounded Fieller set -> None bounds
    r, lo, hi = stats.ratio_ci([10, 11, 12], [-5, 1, 6])
    assert r == pytest.approx(11 / (2 / 3)) and lo is None and hi is None
    assert stats.ratio_ci([10, 10], [20, 20]) == (0.5, 0.5, 0.5)


def test_ratio_ci_close_to_delta_method_when_precise():
    rng = np.random.default_rng(3)
    a = rng.normal(10, 0.1, 200)
    b = rng.normal(20, 0.1, 200)
    r, lo, hi = stats.ratio_ci(a, b)
    ma, mb = a.mean(), b.mean()
    va, vb = a.var(ddof=1) / 200, b.var(ddof=1) / 200
    se = r * math.sqrt(va / ma**2 + vb / mb**2)
    t = stats.t_quantile(0.95, 1e9)
    assert lo == pytest.approx(r - t * se, rel=2e-3)
    assert hi == pytest.approx(r + t * se, rel=2e-3)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(1, 100), min_size=2, max_size=8),
       st.lists(st.floats(1, 100), min_size=2, max_size=8))
def test_ratio_ci_contains_estimate(a, b):
    r, lo, hi = stats.ratio_ci(a, b)
    assert r is not None
    if lo is not None:
        assert lo <= r * (1 + 1e-9) and r <= hi * (1 + 1e-9)


def test_paired_ratio_ci_hand_computed():
    # a = b - 10 exactly: s_aa = s_bb = s_ab = 1, ma = 10, mb = 20, n = 3, q = t(0.975, 2)^2 / 3.
    # (10 - 20 R)^2 <= q (1 - 2R + R^2)  <=>  (400 - q) R^2 - 2 (200 - q) R + (100 - q) <= 0,
    # discriminant/4 = (200 - q)^2 - (400 - q)(100 - q) = 100 q
    r, lo, hi = stats.paired_ratio_ci([(9, 19), (10, 20), (11, 21)])
    q = 4.302653 ** 2 / 3
    assert r == pytest.approx(0.5)
    assert lo == pytest.approx((200 - q - 10 * math.sqrt(q)) / (400 - q), abs=1e-6)
    assert hi == pytest.approx((200 - q + 10 * math.sqrt(q)) / (400 - q), abs=1e-6)
    assert lo == pytest.approx(0.42909, abs=1e-5) and hi == pytest.approx(0.55524, abs=1e-5)
    assert stats.ratio_ci([9, 10, 11], [19, 20, 21])[1] < lo  # independent: wider


def test_paired_ratio_ci_matches_quadratic_roots():
    pairs = [(9.8, 20.1), (10.9, 21.7), (9.1, 18.8), (10.4, 20.9), (11.2, 22.4), (9.6, 19.3)]
    a, b = np.array(pairs).T
    n = len(a)
    cov = np.cov(a, b, ddof=1)
    t2 = 2.570582 ** 2  # t(0.975, 5)
    # (ma - R mb)^2 - t^2/n (s_aa - 2 R s_ab + R^2 s_bb) as a polynomial in R
    coeffs = [b.mean() ** 2 - t2 / n * cov[1, 1],
              -2 * a.mean() * b.mean() + 2 * t2 / n * cov[0, 1],
              a.mean() ** 2 - t2 / n * cov[0, 0]]
    roots = sorted(np.roots(coeffs).real)
    r, lo, hi = stats.paired_ratio_ci(pairs)
    assert r == pytest.approx(a.mean() / b.mean())
    assert (lo, hi) == (pytest.approx(roots[0], rel=1e-9), pytest.approx(roots[1], rel=1e-9))


def test_paired_ratio_ci_narrower_than_independent_when_correlated():
    # a shared drift (the repeat's baseline) moves a and b together
    drift = [-3.0, 1.5, -0.5, 2.5, -1.0]
    pairs = [(10 + d + e, 20 + 2 * d) for d, e in zip(drift, [0.1, -0.2, 0.0, 0.2, -0.1])]
    a, b = [p[0] for p in pairs], [p[1] for p in pairs]
    r_p, lo_p, hi_p = stats.paired_ratio_ci(pairs)
    r_i, lo_i, hi_i = stats.ratio_ci(a, b)
    assert r_p == pytest.approx(r_i)
    assert lo_i < lo_p <= r_p <= hi_p < hi_i
    assert (hi_p - lo_p) < 0.2 * (hi_i - lo_i)


def test_paired_ratio_ci_undefined_cases():
    assert stats.paired_ratio_ci([]) == (None, None, None)
    assert stats.paired_ratio_ci([(1, 0), (2, 0)]) == (None, None, None)
    assert stats.paired_ratio_ci([(10, 20)]) == (0.5, None, None)
    # pairs with a missing member are dropped whole, leaving one pair
    assert stats.paired_ratio_ci([(10, 20), (None, 21), (11, float("nan"))]) == (0.5, None, None)
    # denominator indistinguishable from zero -> unbounded Fieller set -> None bounds
    r, lo, hi = stats.paired_ratio_ci([(10, -5), (11, 1), (12, 6)])
    assert r == pytest.approx(11 / (2 / 3)) and lo is None and hi is None
    assert stats.paired_ratio_ci([(10, 20), (10, 20)]) == (0.5, 0.5, 0.5)
    # a exactly proportional to b: the interval collapses to the ratio
    r, lo, hi = stats.paired_ratio_ci([(5, 10), (6, 12), (7, 14)])
    assert (lo, hi) == (pytest.approx(0.5), pytest.approx(0.5))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(1, 100), st.floats(1, 100)), min_size=2, max_size=8))
def test_paired_ratio_ci_contains_estimate(pairs):
    r, lo, hi = stats.paired_ratio_ci(pairs)
    assert r is not None
    if lo is not None:
        assert lo <= r * (1 + 1e-9) and r <= hi * (1 + 1e-9)


def test_percentile_known_values():
    v = [1, 2, 3, 4]
    assert stats.percentile(v, 0) == 1
    assert stats.percentile(v, 25) == 1.75
    assert stats.percentile(v, 50) == 2.5
    assert stats.percentile(v, 100) == 4
    assert stats.percentile([7], 99) == 7
    assert stats.percentile([], 50) is None
    with pytest.raises(ValueError):
        stats.percentile(v, 101)


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=50), st.floats(0, 100))
def test_percentile_matches_numpy(values, q):
    s = sorted(values)
    assert stats.percentile(s, q) == pytest.approx(float(np.percentile(s, q)), rel=1e-9, abs=1e-6)
