"""The "not resolved" rule: no ratio or saving from a mean <= 0 or a CI spanning 0."""

from tcpskim.resolve import ratio_allowed, resolution
from tcpskim.stats import mean_ci


def test_a_tight_positive_figure_is_resolved():
    r = resolution([20.1, 19.8, 20.3])
    assert r["resolved"] and r["text"] is None and 0 < r["half"] < 1


def test_a_ci_spanning_zero_says_by_how_much_and_what_would_resolve_it():
    vals = [193.6 + d for d in (-300.0, 10.0, 290.0)]  # the 50 Hz figures: mean 193.6, wide
    r = resolution(vals, window_s=10)
    assert not r["resolved"] and r["text"].startswith("not resolved: ±")
    assert "µs per record; about" in r["text"] and "repeats (or a" in r["text"]
    assert r["text"].endswith("s window) would resolve it")
    m, lo, hi, n = mean_ci(vals)
    assert f"±{(hi - lo) / 2:.1f}" in r["text"]
    # N repeats at the observed spread would exclude 0; N - 1 would not, N grows with the spread
    assert r["repeats"] > 3
    assert resolution([v * 2 - 193.6 for v in vals])["repeats"] > r["repeats"]
    assert r["window_s"] > 10


def test_a_negative_mean_is_never_resolved():
    r = resolution([-59.7, -61.0, -58.2], window_s=10)
    assert not r["resolved"] and r["text"].startswith("not resolved")


def test_one_trial_has_no_interval():
    assert resolution([20.0])["text"] == "not resolved: 1 trial, no interval; at least 3 repeats are needed"


def test_ratio_needs_both_modes_resolved():
    assert ratio_allowed([20.1, 19.8, 20.3], [9.7, 9.9, 9.6]) == (True, None)
    ok, why = ratio_allowed([-59.7, -61.0, -58.2], [9.7, 9.9, 9.6])
    assert not ok and why.startswith("xdp not resolved")


def test_a_single_positive_trial_per_mode_keeps_its_ratio_without_ci():
    assert ratio_allowed([9.0], [19.0]) == (True, None)
    assert not ratio_allowed([-9.0], [19.0])[0]
