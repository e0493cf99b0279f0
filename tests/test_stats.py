"""tcpskim.stats against known values: t quantiles, a hand-computed CI, Fieller, percentiles."""

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
