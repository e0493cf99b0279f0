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


def _policy_row(mode, deliver, role, net_rx, idle_exit, ipi, task=0.0):
    """A trial whose window delivered 10 of 1000 sent records (µs per delivered record)."""
    comps = {"role": role, "softirq NET_RX": net_rx, "idle exit": idle_exit,
             "ipi/vector call_function_single": ipi, "task kdamond": task}
    per = sum(v for k, v in comps.items() if not k.startswith("task "))
    return {"mode": mode, "rate_hz": 50, "size_bytes": 1024, "wakeup": "per-record", "deliver": deliver,
            "status": "ok", "hw_components_us": comps, "hw_attr_us_per_record": per,
            "hw_attr_us_per_sent_record": per / 100, "hw_events_per_record": {"napi": 100.0},
            "hw_tracer_cost_us": 10.0}


def test_policy_tables_are_per_sent_record_with_the_shared_floor():
    from tcpskim.components import component_tables

    rows = [_policy_row("xdp", "latest:10", 100.0, 200.0, 3000.0, 2000.0, task=500.0),
            _policy_row("tcp", "latest:10", 100.0, 4000.0, 3200.0, 1900.0),
            _policy_row("xdp", "all", 1.0, 1.0, 1.0, 1.0), _policy_row("tcp", "all", 2.0, 2.0, 2.0, 2.0)]
    tables = component_tables(rows)
    assert len(tables) == 2  # one per policy, not mixed
    (t_all, _, b_all, n_all), (t_lat, _, b_lat, n_lat) = tables
    assert "per record" in t_all and "deliver" not in t_all and not any("floor" in n for n in n_all)
    assert "per sent record, deliver latest:10" in t_lat
    cell = {r[0]: r for r in b_lat}
    assert cell["softirq NET_RX"][1:3] == ["2.00", "40.00"]  # x 10 delivered / 1000 sent
    assert cell["NAPI polls per sent record"][1] == "1.000"
    # floor: min of the shared parts, idle exit 30 (xdp) + IPI 19 (tcp); role, NET_RX, tasks out
    floor = [n for n in n_lat if n.startswith("floor")]
    assert floor and "49.00 µs per sent record" in floor[0]
    assert "xdp/tcp >= 0.53;" in floor[0] and "(tcp attributed 92.00)" in floor[0]  # 49 / 92
    assert "its role 1.00 as measured), >= 0.54" in floor[0]  # (49 + 1) / 92


def test_steal_while_the_role_ran_is_its_own_part_and_not_charged():
    """The tracer's role time 8 ms, the scheduler's 5 ms: 3 ms stolen by the hypervisor, shown
    apart (the parts still sum to busy) and left out of the per-record figures."""
    from tcpskim.components import ROLE_STEAL, attributed_busy_s, component_tables

    w = _win()
    w["attribution"]["role_sched_s"] = 0.005
    f = row_fields(w)
    assert f["hw_role_steal_s"] == pytest.approx(0.003)
    assert f["hw_components_us"]["role"] == pytest.approx(5.0) and f["hw_components_us"][ROLE_STEAL] == pytest.approx(3.0)
    assert f["hw_attr_us_per_record"] == pytest.approx(17.0)  # (0.524 - 0.504 - 0.003) s / 1000
    assert attributed_busy_s(w) == pytest.approx(0.017)
    plain = row_fields(_win())["hw_components_us"]
    assert sum(f["hw_components_us"].values()) == pytest.approx(sum(plain.values()))
    rows = [{"mode": m, "rate_hz": 50, "size_bytes": 1024, "wakeup": "per-record", "status": "ok", **f}
            for m in ("xdp", "tcp")]
    (_, _, body, notes), = component_tables(rows)
    assert [r for r in body if r[0] == ROLE_STEAL] == [[ROLE_STEAL, "3.00", "3.00", "0.00"]]
    assert any(n.startswith(f"{ROLE_STEAL} per record: xdp 3.00, tcp 3.00 µs") and "VM artifact" in n for n in notes)


def test_no_steal_when_the_scheduler_saw_more_than_the_tracer():
    """Interrupts nested in the role's runs are in the scheduler's runtime (no IRQ time
    accounting) and in their own parts for the tracer: sched > traced role is no steal."""
    from tcpskim.components import ROLE_STEAL, component_tables

    w = _win()
    w["attribution"]["role_sched_s"] = 0.009
    f = row_fields(w)
    assert f["hw_role_steal_s"] == 0.0 and ROLE_STEAL not in f["hw_components_us"]
    assert f["hw_attr_us_per_record"] == pytest.approx(20.0) and f["hw_components_us"]["role"] == pytest.approx(8.0)
    rows = [{"mode": m, "rate_hz": 50, "size_bytes": 1024, "wakeup": "per-record", "status": "ok", **f}
            for m in ("xdp", "tcp")]
    (_, _, _, notes), = component_tables(rows)
    assert not any(n.startswith(ROLE_STEAL) for n in notes)


def test_the_tracing_cost_uses_the_cells_cost_per_event_not_each_trials_own():
    """One trial's measurement of the cost per event is moved by the host (6 ns beside 150 ns in
    one lab run): each trial's cost is its events x the median of the cell's measurements."""
    from tcpskim.components import component_tables

    rows = []
    for mode, own_ns in (("xdp", (6.0, 150.0, 170.0)), ("tcp", (140.0, 130.0, 261.0))):
        for ns in own_ns:  # 8 events per record, 20 µs attributed per record
            rows.append({"mode": mode, "rate_hz": 2000, "size_bytes": 1024, "wakeup": "batch:10ms",
                         "status": "ok", "hw_components_us": {"role": 12.0, "softirq NET_RX": 8.0},
                         "hw_attr_us_per_record": 20.0, "hw_events_per_record": {"events": 8.0},
                         "hw_tracer_cost_us": 8.0 * ns / 1e3})
    (_, _, body, notes), = component_tables(rows)
    cell = {r[0]: r for r in body}
    # median of the six: 145 ns -> 8 x 145 ns = 1.16 µs per record, 5.80 % of 20 µs, both modes
    assert cell["measurement's own cost µs per record"][1:] == ["1.16", "1.16", "0.00"]
    assert cell["measurement's own cost, % of hardworker CPU (target <= 2%)"][1:3] == ["5.80 %", "5.80 %"]
    assert any(n.startswith("cost of one traced event: 145 ns, the median of the 6 trials' own "
                            "measurements (6-261 ns;") for n in notes)
    assert sum("above the 2% target" in n for n in notes) == 2
    # a cell without events per record keeps the trials' own figures, and says nothing of a median
    for r in rows:
        r["hw_events_per_record"] = {}
    (_, _, body, notes), = component_tables(rows)
    own_xdp = (6.0 + 150.0 + 170.0) / 3 * 8 / 1e3
    assert {r[0]: r for r in body}["measurement's own cost µs per record"][1] == f"{own_xdp:.2f}"
    assert not any(n.startswith("cost of one traced event") for n in notes)


def test_the_pooled_cost_holds_per_sent_record_and_for_the_busy_time_share():
    from tcpskim.components import component_tables, pooled_cost

    def row(mode, ns, deliver="latest:10"):  # 10 of 1000 records delivered: x 0.01 per sent record
        return {"mode": mode, "rate_hz": 50, "size_bytes": 1024, "wakeup": "per-record", "deliver": deliver,
                "status": "ok", "hw_components_us": {"role": 300.0}, "hw_attr_us_per_record": 400.0,
                "hw_attr_us_per_sent_record": 4.0, "hw_events_per_record": {"events": 2000.0},
                "hw_tracer_cost_us": 2000.0 * ns / 1e3, "hw_tracer_cost_share": 2000.0 * ns / 1e3 / 1000.0}

    rows = [row("xdp", 100.0), row("xdp", 300.0), row("tcp", 200.0)]
    (title, _, body, notes), = component_tables(rows)
    cell = {r[0]: r for r in body}
    # per sent record: 20 events x the median, 200 ns = 4 µs on 4 µs attributed: 100 %
    assert "per sent record" in title
    assert cell["measurement's own cost µs per sent record"][1:3] == ["4.00", "4.00"]
    assert any(n.startswith("cost of one traced event: 200 ns, the median of the 3") for n in notes)
    # the busy-time share (used where a row has no attributed figure) is re-derived alike
    costed, ns, own = pooled_cost({"xdp": [row("xdp", 100.0, "all")], "tcp": [row("tcp", 300.0, "all")]})
    assert ns == 200.0 and sorted(own) == [100.0, 300.0]
    assert [r["hw_tracer_cost_share"] for r in costed["xdp"] + costed["tcp"]] == [0.4, 0.4]


def test_a_self_timed_cost_pools_only_the_dispatch_and_keeps_each_trials_own_program_time():
    from tcpskim.components import component_tables, pooled_cost

    def row(mode, self_us, dispatch_ns):  # 8 program runs per record
        return {"mode": mode, "rate_hz": 2000, "size_bytes": 1024, "wakeup": "batch:10ms", "deliver": "all",
                "status": "ok", "hw_components_us": {"role": 10.0}, "hw_attr_us_per_record": 40.0,
                "hw_events_per_record": {"events": 8.0}, "hw_tracer_self_us": self_us,
                "hw_tracer_runs_per_record": 8.0, "hw_tracer_dispatch_ns": dispatch_ns,
                "hw_tracer_cost_us": self_us + 8.0 * dispatch_ns / 1e3, "hw_tracer_cost_share": None}

    rows = [row("xdp", 4.0, 50.0), row("xdp", 6.0, 250.0), row("tcp", 2.0, 100.0)]
    costed, ns, own = pooled_cost({"xdp": rows[:2], "tcp": rows[2:]})
    assert ns == 100.0 and sorted(own) == [50.0, 100.0, 250.0]
    # each trial keeps its own program time (measured in its window) + 8 runs x 100 ns
    assert [r["hw_tracer_cost_us"] for r in costed["xdp"] + costed["tcp"]] == pytest.approx([4.8, 6.8, 2.8])
    (_, _, body, notes), = component_tables(rows)
    cell = {r[0]: r for r in body}
    assert cell["measurement's own cost µs per record"][1:3] == ["5.80", "2.80"]
    assert cell["  of which the programs' own time (self-timed)"][1:3] == ["5.00", "2.00"]
    assert cell["  programs' own ns per run"][1:3] == ["625", "250"]
    assert cell["measurement's own cost, % of hardworker CPU (target <= 2%)"][1:3] == ["14.50 %", "7.00 %"]
    assert any(n.startswith("tracing cost: the programs' own time in the window") and "100 ns of dispatch" in n
               for n in notes)


def test_a_cell_mixing_self_timed_and_older_rows_pools_only_the_self_timed_dispatch():
    from tcpskim.components import pooled_cost
    timed = {"mode": "xdp", "hw_events_per_record": {"events": 8.0}, "hw_tracer_self_us": 4.0,
             "hw_tracer_runs_per_record": 8.0, "hw_tracer_dispatch_ns": 60.0, "hw_tracer_cost_us": 4.48,
             "hw_tracer_cost_share": 0.0448}
    old = {"mode": "tcp", "hw_events_per_record": {"events": 8.0}, "hw_tracer_cost_us": 1.2,
           "hw_tracer_cost_share": 0.012}  # 150 ns per event, hot: another quantity
    costed, ns, own = pooled_cost({"xdp": [timed], "tcp": [old]})
    assert ns == 60.0 and own == [60.0]
    assert costed["tcp"][0] is old  # kept as it was, not re-derived from a dispatch
    assert costed["xdp"][0]["hw_tracer_cost_us"] == pytest.approx(4.48)
    assert costed["xdp"][0]["hw_tracer_cost_share"] == pytest.approx(0.0448)
