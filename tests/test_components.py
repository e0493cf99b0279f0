"""tcpskim.components.row_fields: the summary row's attribution columns from a window."""

import pytest

from tcpskim.components import row_fields


def _win(n=1000):
    return {"delivered_in_window": n, "attribution": {
        "components_s": {"role": 0.008, "softirq NET_RX": 0.011, "idle": 9.0, "task kdamond": 0.004,
                         "task python": 0.5},
        "unattributed_s": 0.001, "proc_busy_s": 0.524, "steal_s": 0.02,
        "counters": {"wakeups": 50, "switch": 120, "ipi_sent": 1000, "ipi_recv": 990, "napi": 1000},
        "intervals": {"softirq NET_RX": 1000}, "events": 8000,
        "cost": {"cost_s": 0.0008, "share_of_busy": 0.0015},
        "periods": {"unit": "record", "median_us": 19.0, "median_ci_us": [18.0, 20.5]}}}


def test_other_tasks_are_not_charged_to_records():
    f = row_fields(_win())
    assert f["hw_attr_us_per_record"] == pytest.approx(20.0)  # (0.524 - 0.504) s / 1000
    assert f["hw_other_tasks_s"] == pytest.approx(0.504)
    assert f["hw_components_us"]["role"] == pytest.approx(8.0) and "idle" not in f["hw_components_us"]
    assert f["hw_unattributed_us"] == pytest.approx(1.0) and f["hw_tracer_cost_us"] == pytest.approx(0.8)
    assert f["hw_events_per_record"]["ipi_sent"] == 1.0 and f["hw_events_per_record"]["net_rx"] == 1.0
    assert f["hw_period_median_us"] == 19.0 and f["hw_period_ci_us"] == [18.0, 20.5]


def test_without_attribution_or_records():
    assert row_fields({"delivered_in_window": 10}) == {}
    assert row_fields({"delivered_in_window": 10, "attribution": {"error": "no bcc"}}) == {}
    f = row_fields(_win(0))
    assert "hw_attr_us_per_record" not in f and f["hw_other_tasks_s"] == pytest.approx(0.504)


def test_attributed_busy_leaves_other_tasks_out():
    from tcpskim.components import attributed_busy_s

    assert attributed_busy_s(_win()) == pytest.approx(0.020)  # 0.524 busy - 0.504 other tasks
    assert attributed_busy_s({"attribution": {"error": "no bcc"}}) is None and attributed_busy_s(None) is None


def test_role_user_share_from_enough_ticks_only():
    w = _win()
    w["attribution"].update(role_utime_ticks=30, role_stime_ticks=10)
    assert row_fields(w)["hw_role_user_share"] == pytest.approx(0.75)
    w["attribution"].update(role_utime_ticks=5, role_stime_ticks=5)  # 10 ticks: ±1 is ±10 %
    assert row_fields(w)["hw_role_user_share"] is None
    assert row_fields(_win())["hw_role_user_share"] is None  # no tick counts
