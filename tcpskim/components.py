"""Where the hardworker's CPU goes, per record: the component table of a report.

Input: summary rows with ``hw_components_us`` ({component: µs per record}, from the
hardworker's attribution window: role, softirqs by vector, IRQs, IPIs, other tasks, the
XDP program, unattributed) and ``hw_events_per_record`` ({event: per record}). One table
per rate x size x wake-up x delivery policy cell: xdp and tcp side by side (mean over trials)
with xdp - tcp; components under 0.05 µs in both modes are summed into one line. Under a policy
that delivers fewer records than were sent (filter, latest) the table is per *sent* record, the
hardworker's cost of the whole stream, and says what part of it both modes pay alike to get
each packet onto the CPU (``floor_note``): no delivery path can go below it. Below the events, the
measurement's own cost per mode (the tracer's self-timed program time + runs x the dispatch, ``pooled_cost``) as a share
of the hardworker CPU (``cost_share``) against the 2 % target, flagged when above it. Lab
artifacts are named with their evidence.
"""

from __future__ import annotations

import statistics

from roles import vocab

from .stats import mean_ci

SMALL_US = 0.05
ROLE_SPLIT_MIN_TICKS = 20  # user/system ticks of the role before its split is shown (±5 %)
EVENTS = [("wakeups", "role wake-ups"), ("switch", "context switches"), ("napi", "NAPI polls"),
          ("net_rx", "NET_RX softirqs"), ("ipi_sent", "IPIs sent"), ("ipi_recv", "IPIs received"),
          ("events", "traced events")]
# shown apart: not busy time; "unknown" (a stretch after a switch the tracer did not see) is
# left out of the traced sum and so is inside "unattributed". "idle exit" and "idle loop" (the
# idle task outside cpuidle states: tick restart and stop, schedule_idle) are busy, and a
# record's cost when the record woke the CPU.
NOT_RECORD_COST = ("idle", "unknown")
# Shown in the table (the parts still sum to busy) but, like other tasks, not charged to the
# records: time the hypervisor ran something else while the role held the CPU (role_steal_s).
ROLE_STEAL = "steal while the role ran"


def _mean(rows, key, name):
    return mean_ci((r.get(key) or {}).get(name) for r in rows)[0]


def _part_mean(rows, name):
    """Mean µs per record of one component over the trials: 0 in a trial that did not see it
    (so the parts sum to the trials' mean total, as components.png draws them); None when no
    trial of the mode saw it."""
    vals = [(r.get("hw_components_us") or {}).get(name) for r in rows]
    if all(v is None for v in vals):
        return None
    return mean_ci(v or 0.0 for v in vals)[0]


def _wakeup(w) -> str:
    return vocab.wakeup_text(w)


def _per_sent(r):
    """The row with its per-record parts, events and tracing cost per *sent* record: scaled by
    delivered in the window over sent (the ratio of its two attributed figures); None when the
    row has not both."""
    per, sent = r.get("hw_attr_us_per_record"), r.get("hw_attr_us_per_sent_record")
    if not per or sent is None or per <= 0:
        return None
    k = sent / per
    scale = lambda d: {n: None if v is None else v * k for n, v in (d or {}).items()}  # noqa: E731
    one = lambda key: None if r.get(key) is None else r[key] * k  # noqa: E731
    return {**r, "hw_components_us": scale(r.get("hw_components_us")),
            "hw_events_per_record": scale(r.get("hw_events_per_record")),
            "hw_tracer_cost_us": one("hw_tracer_cost_us"), "hw_tracer_self_us": one("hw_tracer_self_us"),
            "hw_tracer_runs_per_record": one("hw_tracer_runs_per_record"), "hw_attr_us_per_record": sent}


def _cells(rows):
    """{(rate, size, wake-up, policy): rows}; a policy other than "all" in per-sent units."""
    out = {}
    for r in rows:
        if r.get("mode") in ("xdp", "tcp") and r.get("hw_components_us") and r.get("status", "ok") in ("ok", "incomplete"):
            policy = r.get("deliver") or "all"
            if policy != "all":
                r = _per_sent(r)
                if r is None:
                    continue
            out.setdefault((r.get("rate_hz"), r.get("size_bytes"), _wakeup(r.get("wakeup")), policy), []).append(r)
    return dict(sorted(out.items(), key=lambda kv: (kv[0][0] or 0, kv[0][1] or 0, str(kv[0][2]), kv[0][3])))


def _f(v, digits=2):
    return "-" if v is None else f"{v:.{digits}f}"


def _diff(a, b):
    return None if a is None and b is None else (a or 0.0) - (b or 0.0)


def _component_rows(by_mode):
    names = set()
    for rs in by_mode.values():
        for r in rs:
            names.update(k for k in r["hw_components_us"] if k not in NOT_RECORD_COST)
    vals = {n: {m: _part_mean(rs, n) for m, rs in by_mode.items()} for n in names}
    big = sorted((n for n in names if max(abs(v or 0) for v in vals[n].values()) >= SMALL_US),
                 key=lambda n: -max(abs(v or 0) for v in vals[n].values()))
    small = [n for n in names if n not in big]
    body = [[n, _f(vals[n].get("xdp")), _f(vals[n].get("tcp")),
             _f(_diff(vals[n].get("xdp"), vals[n].get("tcp")))] for n in big]
    if small:
        s = {m: sum(vals[n].get(m) or 0 for n in small) for m in ("xdp", "tcp")}
        body.append([f"{len(small)} smaller parts", _f(s["xdp"]), _f(s["tcp"]), _f(s["xdp"] - s["tcp"])])
    tot = {m: sum(v.get(m) or 0 for v in vals.values()) for m in ("xdp", "tcp")}
    body.append(["= busy, all parts", _f(tot["xdp"]), _f(tot["tcp"]), _f(tot["xdp"] - tot["tcp"])])
    return body


def _event_rows(by_mode):
    body = []
    for key, label in EVENTS:
        x, t = (_mean(by_mode.get(m, []), "hw_events_per_record", key) for m in ("xdp", "tcp"))
        if x is not None or t is not None:
            body.append([f"{label} per record", _f(x, 3), _f(t, 3), _f(_diff(x, t), 3)])
    return body


COST_TARGET = 0.02  # issue 9: the tracing may cost at most 2 % of the hardworker CPU


def cost_share(row):
    """The measurement's cost as a share of the hardworker CPU the records were charged for:
    tracing cost per record over the attributed figure. Conservative: the cost counts every
    traced event on the CPU, other tasks' too, whose time the attributed figure leaves out
    (the busy-time share, ``hw_tracer_cost_share``, shrinks when other tasks fill the CPU: 0.02 %
    with a compile beside a 50 Hz trial, against 0.8 % of the records' CPU). Without the
    attributed figure, the busy-time share."""
    cost, attr = row.get("hw_tracer_cost_us"), row.get("hw_attr_us_per_record")
    if cost is not None and attr is not None:
        return cost / attr if attr > 0 else None  # no share of a cost <= 0 (flagged)
    return row.get("hw_tracer_cost_share")


def _self_timed(r):
    return all(r.get(k) is not None for k in ("hw_tracer_self_us", "hw_tracer_runs_per_record",
                                              "hw_tracer_dispatch_ns"))


def _own_ns_per_event(r):
    """The pooled part of one event's cost as this trial measured it (ns), from its row: the
    dispatch outside the programs where they timed themselves, else the whole hot figure."""
    if _self_timed(r):
        return r["hw_tracer_dispatch_ns"]
    cost, ev = r.get("hw_tracer_cost_us"), (r.get("hw_events_per_record") or {}).get("events")
    return cost * 1e3 / ev if cost is not None and ev else None


def pooled_cost(by_mode):
    """(by_mode with each trial's tracing cost re-derived from the cell's pooled figure, that
    figure in ns, the trials' own figures). Each trial measures the part of an event's price
    outside the tracer's programs (the dispatch) once, with a 0.3 s ping-pong before its
    window (roles.attribution_cost), and a host busy at that moment moves it (6 to 261 ns of a
    whole hot event between the trials of one lab run, where its median was 150): it is the
    host's and the tracer's, not a trial's. So every trial's cost is its programs' own time in
    its window (self-timed) + its runs x the median of the cell's dispatch figures (rows
    without self time: events x the median hot figure); summary.csv keeps each trial's own."""
    rows = [r for rs in by_mode.values() for r in rs]
    timed = any(_self_timed(r) for r in rows)  # then only their dispatch: never two quantities
    own = [v for r in rows if _self_timed(r) == timed and (v := _own_ns_per_event(r)) is not None]
    if not own:
        return by_mode, None, []
    ns = statistics.median(own)

    def redo(r):
        if _self_timed(r) != timed or _own_ns_per_event(r) is None:
            return r
        was, share = r.get("hw_tracer_cost_us"), r.get("hw_tracer_cost_share")
        if _self_timed(r):
            cost = r["hw_tracer_self_us"] + r["hw_tracer_runs_per_record"] * ns / 1e3
        else:
            cost = (r.get("hw_events_per_record") or {}).get("events") * ns / 1e3
        return {**r, "hw_tracer_cost_us": cost,  # and the busy-time share alike
                "hw_tracer_cost_share": None if share is None or not was else share * cost / was}

    return {m: [redo(r) for r in rs] for m, rs in by_mode.items()}, ns, own


def cost_note(ns, own, self_timed=False) -> str | None:
    if ns is None:
        return None
    if not self_timed:
        return (f"cost of one traced event: {ns:.0f} ns, the median of the {len(own)} trials' own "
                f"measurements ({min(own):.0f}-{max(own):.0f} ns; each trial measures it once before "
                "its window, and a busy host moves one measurement)")
    return (f"tracing cost: the programs' own time in the window (they time themselves) + runs x "
            f"{ns:.0f} ns of dispatch per event, the median of the {len(own)} trials' own measurements "
            f"({min(own):.0f}-{max(own):.0f} ns; each trial measures it once before its window, and a "
            "busy host moves one measurement)")


def _cost_rows(by_mode):
    """The measurement's own cost per mode (programs' own time + runs x dispatch), in µs per
    record and as a share of the hardworker CPU (``cost_share``), with the target beside it."""
    us = {m: mean_ci(r.get("hw_tracer_cost_us") for r in by_mode.get(m, []))[0] for m in ("xdp", "tcp")}
    share = {m: mean_ci(cost_share(r) for r in by_mode.get(m, []))[0] for m in ("xdp", "tcp")}
    if all(v is None for v in share.values()) and all(v is None for v in us.values()):
        return []
    pct = lambda v: "-" if v is None else f"{v * 100:.2f} %"  # noqa: E731
    rows = [["measurement's own cost µs per record", _f(us["xdp"]), _f(us["tcp"]), _f(_diff(us["xdp"], us["tcp"]))]]
    own = {m: mean_ci(r.get("hw_tracer_self_us") for r in by_mode.get(m, []))[0] for m in ("xdp", "tcp")}
    runs = {m: mean_ci(r.get("hw_tracer_runs_per_record") for r in by_mode.get(m, []))[0] for m in ("xdp", "tcp")}
    if any(v is not None for v in own.values()):
        ns = lambda m: "-" if not own[m] or not runs[m] else f"{own[m] * 1e3 / runs[m]:.0f}"  # noqa: E731
        rows += [["  of which the programs' own time (self-timed)", _f(own["xdp"]), _f(own["tcp"]),
                  _f(_diff(own["xdp"], own["tcp"]))],
                 ["  programs' own ns per run", ns("xdp"), ns("tcp"), "-"]]
    return rows + [[f"measurement's own cost, % of hardworker CPU (target <= {COST_TARGET:.0%})",
                    pct(share["xdp"]), pct(share["tcp"]), "-"]]


def cost_notes(by_mode) -> list[str]:
    """A warning per mode whose tracing cost more than the target share of the hardworker CPU."""
    notes = []
    for m in ("xdp", "tcp"):
        share = mean_ci(cost_share(r) for r in by_mode.get(m, []))[0]
        if share is not None and share > COST_TARGET:
            notes.append(f"!! {m}: the measurement cost {share:.1%} of the hardworker CPU, above the "
                         f"{COST_TARGET:.0%} target: its figures include that much of its own tracing")
    return notes


def artifacts(by_mode, lab: bool) -> list[str]:
    """Components that are lab (or VM) artifacts, with the evidence."""
    notes = []
    sx, st = (_part_mean(by_mode.get(m, []), ROLE_STEAL) for m in ("xdp", "tcp"))
    if max(sx or 0, st or 0) >= SMALL_US:
        notes.append(f"{ROLE_STEAL} per record: xdp {sx or 0:.2f}, tcp {st or 0:.2f} µs - the hypervisor ran "
                     "something else while the role held the CPU (the tracer's clock counts it, the "
                     "scheduler's runtime of the role leaves it out): a VM artifact, not charged to the records")
    x, t = (_mean(by_mode.get(m, []), "hw_events_per_record", "ipi_sent") for m in ("xdp", "tcp"))
    if lab and x is not None and x >= 0.5 and (t or 0) < x / 2:
        notes.append(f"IPIs sent per record: xdp {x:.2f}, tcp {t or 0:.2f} - the veth bounce through "
                     "the bridge (the XDP_TX'd frame re-enters the bridge and RPS hands it to another "
                     "CPU); a NIC's XDP_TX sends none: a lab artifact")
    bx, bt = (_part_mean(by_mode.get(m, []), "softirq BLOCK") for m in ("xdp", "tcp"))
    if lab and max(bx or 0, bt or 0) >= 1.0:
        notes.append(f"softirq BLOCK per record: xdp {bx or 0:.2f}, tcp {bt or 0:.2f} µs - disk I/O "
                     "completions on the hardworker CPU; the lab's hosts share one kernel and disk (the "
                     "logger's database and any other process's writes), so this is not the records' "
                     "cost: a lab artifact, charged to them here")
    return notes


# What a mode's own delivery path costs per packet, or the role's own work, or not a
# record's cost at all: everything else in the table (the idle task's way out of idle and back,
# the IPI or IRQ that brings the packet to the CPU, the timer) both modes pay alike per packet.
OWN_WORK = ("role", "softirq NET_RX", "softirq NET_TX", "xdp program", "ipi/vector irq_work", "unattributed")


def floor_note(by_mode):
    """Under a policy that spares the hardworker most records: the per-packet cost both modes
    pay alike (the smaller of the two, part by part), and the lowest xdp/tcp it allows, with
    the xdp path's own work and the role free, then with the xdp role as measured (under
    latest both roles wake at the decision rate, and a wake from a long sleep is most of a
    decision's cost). None without both modes."""
    if not all(by_mode.get(m) for m in ("xdp", "tcp")):
        return None
    names = {n for rs in by_mode.values() for r in rs for n in r["hw_components_us"]}
    shared = [n for n in names if n not in OWN_WORK and n not in NOT_RECORD_COST and not not_charged(n)]
    parts = {n: min(_part_mean(by_mode["xdp"], n) or 0.0, _part_mean(by_mode["tcp"], n) or 0.0) for n in shared}
    floor = sum(parts.values())
    tcp = mean_ci(r.get("hw_attr_us_per_record") for r in by_mode["tcp"])[0]
    if not tcp or tcp <= 0 or floor <= 0:
        return None
    top = ", ".join(f"{n} {v:.2f}" for n, v in sorted(parts.items(), key=lambda kv: -kv[1])[:4] if v >= SMALL_US)
    role = _part_mean(by_mode["xdp"], "role") or 0.0
    return (f"floor: {floor:.2f} µs per sent record both modes pay alike to get each packet onto the CPU "
            f"({top}); with the xdp path's own work and the role free, xdp/tcp >= {floor / tcp:.2f}; "
            f"with only the xdp path's own work free (its role {role:.2f} as measured), "
            f">= {(floor + role) / tcp:.2f} (tcp attributed {tcp:.2f})")


def component_tables(rows, lab: bool = False) -> list[tuple[str, list, list, list]]:
    """[(title, headers, body, notes)] per rate x size x wake-up x policy cell with attribution."""
    out = []
    for (rate, size, wakeup, policy), grp in _cells(rows).items():
        by_mode = {m: [r for r in grp if r["mode"] == m] for m in ("xdp", "tcp")}
        n = {m: len(v) for m, v in by_mode.items()}
        unit = "record" if policy == "all" else f"sent record, deliver {policy}"
        title = (f"Where the hardworker CPU goes, µs per {unit}: {rate} Hz x {size} B, {wakeup} "
                 f"(n xdp {n['xdp']}, tcp {n['tcp']}; tracepoint attribution of the dedicated CPU)")
        costed, ns, own = pooled_cost(by_mode)
        body = _component_rows(by_mode) + _event_rows(by_mode) + _cost_rows(costed)
        if policy != "all":
            body = [[row[0].replace(" per record", " per sent record"), *row[1:]] for row in body]
        floor = floor_note(by_mode) if policy != "all" else None
        timed = any(_self_timed(r) for rs in by_mode.values() for r in rs)
        notes = cost_notes(costed) + [n for n in [cost_note(ns, own, timed)] if n]
        out.append((title, ["component", "xdp", "tcp", "xdp - tcp"], body,
                    notes + artifacts(by_mode, lab) + ([floor] if floor else [])))
    return out


def _is_other_task(name: str) -> bool:
    return name.startswith("task ")


def not_charged(name: str) -> bool:
    """A part shown but not charged to the records: another task, or the steal while the role ran."""
    return _is_other_task(name) or name == ROLE_STEAL


def role_steal_s(a: dict) -> float:
    """Seconds the hypervisor stole from the dedicated CPU while the role held it, at least.

    A VM's artifact (0 on bare metal), and on a shared host the largest source of spread
    between trials: at 50 Hz on the lab the tracer's role time followed /proc/stat's steal
    (0.170-0.233 s per window as steal went 0.08-0.51 s) while the scheduler's stayed at
    0.145-0.186 s. The tracer's clock runs on through a stolen stretch, so its role time holds
    it; the scheduler's runtime of the role's threads (schedstat) leaves it out (paravirt
    steal accounting). The scheduler also counts the interrupts nested in the role's runs,
    which the tracer charges to their own parts, so the difference understates the steal by
    those; never below 0."""
    role, sched = (a.get("components_s") or {}).get("role"), a.get("role_sched_s")
    if role is None or sched is None:
        return 0.0
    return max(0.0, role - sched)


def attributed_busy_s(win: dict):
    """Busy CPU of the dedicated CPU (precise idle accounting) minus other tasks and the steal
    while the role ran, or None."""
    a = (win or {}).get("attribution") or {}
    if a.get("proc_busy_s") is None or "components_s" not in a:
        return None
    return a["proc_busy_s"] - sum(v for k, v in a["components_s"].items() if _is_other_task(k)) - role_steal_s(a)


def row_fields(win: dict) -> dict:
    """The summary row's attribution columns from a hardworker window (None when absent).

    hw_attr_us_per_record: busy CPU of the dedicated CPU (precise idle accounting) minus other
    tasks (kworkers, kdamond, sshd, anything not the role) and the steal while the role ran
    (``role_steal_s``: its own part, cut from the role's), per record delivered in the window:
    no idle baseline subtracted; the rest nothing traced is in hw_unattributed_us."""
    a = (win or {}).get("attribution") or {}
    n = (win or {}).get("delivered_in_window") or 0
    if "components_s" not in a:
        return {}
    other = sum(v for k, v in a["components_s"].items() if _is_other_task(k))
    stolen = role_steal_s(a)
    out = {"hw_other_tasks_s": other, "hw_steal_s": a.get("steal_s"), "hw_role_steal_s": stolen,
           "hw_tracer_cost_share": (a.get("cost") or {}).get("share_of_busy")}
    if not n:
        return out
    per = lambda s: None if s is None else s / n * 1e6  # noqa: E731
    comps = {k: per(v) for k, v in a["components_s"].items() if k not in NOT_RECORD_COST}
    if stolen > 0:
        comps["role"] -= per(stolen)
        comps[ROLE_STEAL] = per(stolen)
    if a.get("unattributed_s") is not None:
        comps["unattributed"] = per(a["unattributed_s"])
    c = a.get("counters") or {}
    ev = {k: c.get(k, 0) / n for k in ("wakeups", "switch", "napi", "ipi_sent", "ipi_recv")}
    ev["net_rx"] = (a.get("intervals") or {}).get("softirq NET_RX", 0) / n
    ev["events"] = a.get("events", 0) / n
    p = a.get("periods") or {}
    ut, st = a.get("role_utime_ticks"), a.get("role_stime_ticks")
    # The kernel splits a task's precise runtime into user and system by its tick samples: a
    # split is only worth drawing with enough of them (components.png).
    out["hw_role_user_share"] = ut / (ut + st) if ut is not None and st is not None \
        and ut + st >= ROLE_SPLIT_MIN_TICKS else None
    out.update(hw_components_us=comps, hw_events_per_record=ev,
               hw_attr_us_per_record=per(attributed_busy_s(win)),
               hw_unattributed_us=comps.get("unattributed"),
               hw_tracer_cost_us=per((a.get("cost") or {}).get("cost_s")),
               hw_tracer_self_us=per((a.get("cost") or {}).get("self_s")),
               hw_tracer_runs_per_record=None if (a.get("cost") or {}).get("self_runs") is None
               else a["cost"]["self_runs"] / n,
               hw_tracer_dispatch_ns=(a.get("cost") or {}).get("dispatch_ns"),
               hw_period_median_us=p.get("median_us") if p.get("unit") == "record" else None,
               hw_period_ci_us=p.get("median_ci_us") if p.get("unit") == "record" else None)
    return out
