"""The figures of one attribution window, from the data ``roles.attribution_read`` returns.

Pure Python (no bcc), so it is unit-tested on synthetic data.

* ``components``: exclusive seconds per part, summed over the measured CPUs; their sum is
  the window (minus the time before a CPU's first event, "unknown").
* ``unattributed_s``: busy time by the kernel's precise idle accounting minus the traced busy
  parts: interrupt entry/exit code and VM traps that no tracepoint brackets. The traced busy
  parts include "idle exit" and "idle loop", the idle task outside cpuidle states (``_name``).
* ``periods``: busy periods grouped with the records they served (``marks``: the role's
  (monotonic ns, records) of each handling), per-record median and 10 % trimmed mean with
  95 % CIs; other tasks (kworkers, kdamond, sshd...) are not charged to records.
* ``series``: busy ns per bin from the periods (exact: a period has no idle inside; the idle
  task's stretches outside cpuidle states, "idle exit" and "idle loop", lie between periods
  and are in neither).
"""

import bisect
import math

from roles.attribution import CLASSES, KINDS, SOFTIRQS, VECTORS, comm_group

PUSH_POP = ("softirq", "irq", "vector", "ipi", "cstate")  # two events per interval
IDLE_EXIT = "idle exit"  # the idle task from a cpuidle exit to its switch-out: busy time
IDLE_LOOP = "idle loop"  # the idle task's other time outside cpuidle states: busy time


def _name(raw, kind, ident):
    k = KINDS[kind] if kind < len(KINDS) else "unknown"
    if k == "role":
        return "role"
    if k == "task":
        return "task " + comm_group(raw["comms"].get(ident, "(not seen leaving)"))
    if k == "softirq":
        return "softirq " + (SOFTIRQS[ident] if ident < len(SOFTIRQS) else str(ident))
    if k == "irq":
        return f"irq {raw['irq_names'].get(ident, ident)}"
    if k == "vector":
        return "ipi/vector " + (VECTORS[ident] if ident < len(VECTORS) else str(ident))
    if k == "ipi":
        return f"ipi {ident:#x}"
    if k == "cstate":
        return "idle"  # in a cpuidle state
    # With cpuidle states traced (trace_idle), the idle task's time outside them is busy, in
    # two parts: "idle exit" (a cpuidle exit to the switch-out: tick_nohz_idle_exit restarting
    # the tick, schedule_idle) and "idle loop" (the rest: the end of the context switch into
    # idle, the governor, stopping the tick, stretches between two cpuidle states). No
    # tracepoint brackets them and the kernel's idle accounting counts nearly all of it busy:
    # on the lab at 2 kHz, unattributed +4..+9 % of busy with the loop counted idle, -5..+2.5 %
    # with it busy (bench/overhead.py; bench/idle_exit.py without traffic).
    if k == "idle_exit":
        return IDLE_EXIT
    if k == "idle":
        return IDLE_LOOP if any(KINDS[kk] == "cstate" for (_, kk, _) in raw["acc"]) else "idle"
    return "unknown"


def _edge_diff(raw):
    e = raw["edges"]
    if len(e) < 2:
        return {}
    a, b = e[0], e[1]
    out = {"proc_idle_s": sum(b["idle_ns"].get(c, 0) - a["idle_ns"].get(c, 0) for c in raw["cpus"]) / 1e9,
           "steal_s": sum(b.get("steal_ns", {}).get(c, 0) - a.get("steal_ns", {}).get(c, 0)
                          for c in raw["cpus"]) / 1e9,
           "role_sched_s": (b["proc"]["sched_ns"] - a["proc"]["sched_ns"]) / 1e9,
           "role_utime_ticks": b["proc"]["utime_ticks"] - a["proc"]["utime_ticks"],
           "role_stime_ticks": b["proc"]["stime_ticks"] - a["proc"]["stime_ticks"]}
    if "self" in a and "self" in b:  # the tracer's programs timing themselves
        out["tracer_self_s"] = sum(b["self"][c][0] - a["self"][c][0] for c in raw["cpus"]) / 1e9
        out["tracer_self_runs"] = sum(b["self"][c][1] - a["self"][c][1] for c in raw["cpus"])
    if "prog" in a and "prog" in b and "run_time_ns" in a["prog"]:
        out["xdp_s"] = (b["prog"]["run_time_ns"] - a["prog"]["run_time_ns"]) / 1e9
        out["xdp_runs"] = b["prog"]["run_cnt"] - a["prog"]["run_cnt"]
    return out


def components(raw):
    """({name: seconds}, {name: intervals}, events on the measured CPUs)."""
    secs, counts, events = {}, {}, 0
    for (cpu, kind, ident), (ns, n) in raw["acc"].items():
        name = _name(raw, kind, ident)
        secs[name] = secs.get(name, 0.0) + ns / 1e9
        counts[name] = counts.get(name, 0) + n
        events += n * (2 if KINDS[kind] in PUSH_POP else 1)
    return secs, counts, events


def _counters(raw):
    """Totals, and by peer: IPIs sent (by target CPU and callback) and received."""
    out = {"ipi_sent_to": {}, "ipi_sent_fn": {}, "ipi_recv_from": {}, "ipi_recv_fn": {},
           "wakeups_by_cpu": {}}
    for (cpu, name, ident), v in raw["counters"].items():
        if name in ("ipi_sent_to", "ipi_recv_from"):
            out[name][f"cpu{ident}"] = out[name].get(f"cpu{ident}", 0) + v
        elif name in ("ipi_sent_fn", "ipi_recv_fn"):
            fn = raw["fn_names"].get(ident, hex(ident))
            out[name][fn] = out[name].get(fn, 0) + v
        else:
            if name == "wakeups":
                out["wakeups_by_cpu"][f"cpu{cpu}"] = v
            elif cpu not in raw["cpus"]:
                continue
            out[name] = out.get(name, 0) + v
    return out


def _program_share(prog_s, secs, ed):
    """The XDP program's part of the NET_RX softirq it runs inside, from its run time (the
    kernel's run-time stats). That run time counts what interrupted the program too: a ring
    buffer wake-up raises an irq_work self-IPI, taken at once, inside the program, and the
    tracer charges it to its own part (x86's ``ipi/vector irq_work``: 17-19 µs per record at
    50 Hz here, where one trial's run time came to more than the NET_RX it ran in, 40.5
    against 33.5 µs per record). So that part comes out of the program's, and the program's
    part is at most all of NET_RX: never a negative NET_RX (-7 µs per record in that trial).
    Kept beside it: the run time before both (``xdp_estimate_s``), whether the IPI could be
    taken out (``xdp_irq_work_split``: x86 has a vector for it and arm64 a reason string that
    bpf/attribution.c maps to it; a kernel with neither keeps only the cap) and whether the
    cap cut the part (``xdp_capped``)."""
    net = max(secs["softirq NET_RX"], 0.0)
    nested = secs.get("ipi/vector irq_work")
    share = max(prog_s - (nested or 0.0), 0.0)
    ed.update(xdp_estimate_s=prog_s, xdp_irq_work_split=nested is not None, xdp_capped=share > net)
    return min(share, net)


def tracer_cost(events, ns_per_event, dispatch_ns=None, self_s=None, self_runs=None):
    """The tracer's own cost in the window: {"cost_s", "ns_per_event" (effective), ...}.

    With the programs' self time (``self_s`` over ``self_runs`` runs, timed in the window
    itself) and ``dispatch_ns`` (the rest of one event's price, outside the program: the
    tracepoint and the BPF dispatch, from the ping-pong): self_s + runs x dispatch_ns. The
    self time is what the caches make it: on a CPU that idles between events (a VM here) a
    program run costs several times what the hot ping-pong gives, which alone under-counted
    the cost up to ~5x at 50 Hz-2 kHz. Without them: events x ns_per_event (the hot figure)."""
    if dispatch_ns is not None and self_s is not None and self_runs:
        cost = self_s + self_runs * dispatch_ns / 1e9
        return {"events": events, "cost_s": cost, "ns_per_event": cost / events * 1e9 if events else None,
                "self_s": self_s, "self_runs": self_runs, "self_ns_per_run": self_s / self_runs * 1e9,
                "dispatch_ns": dispatch_ns, "hot_ns_per_event": ns_per_event}
    return {"events": events, "ns_per_event": ns_per_event, "cost_s": events * ns_per_event / 1e9}


def summarize(raw, marks=None, bin_s=0.01, records=None, ns_per_event=None, xdp=None,
              dispatch_ns=None):
    """The window's attribution as a JSON-ready dict (seconds, counts; per record if given).

    ``xdp``: (seconds, runs) of the XDP program in the window when known otherwise than from
    the edges' run-time stats (roles.window: stats are off in the window)."""
    elapsed = (raw["t_close"] - raw["t_open"]) / 1e9 * len(raw["cpus"])
    secs, counts, events = components(raw)
    ed = _edge_diff(raw)
    cnt = _counters(raw)
    events += cnt.get("napi", 0) + cnt.get("ipi_sent", 0)
    events += sum(v for k, v in cnt["wakeups_by_cpu"].items() if int(k[3:]) in raw["cpus"])
    if xdp is not None:
        ed["xdp_s"], ed["xdp_runs"] = xdp
    if "xdp_s" in ed and "softirq NET_RX" in secs:  # the XDP program runs inside NET_RX
        ed["xdp_s"] = _program_share(ed["xdp_s"], secs, ed)
        secs["softirq NET_RX"] -= ed["xdp_s"]
        secs["xdp program"] = ed["xdp_s"]
        counts["xdp program"] = ed["xdp_runs"]
    idle = secs.get("idle", 0.0)
    traced_busy = sum(secs.values()) - idle - secs.get("unknown", 0.0)
    out = {"cpus": raw["cpus"], "elapsed_s": elapsed, "components_s": dict(sorted(secs.items())),
           "intervals": dict(sorted(counts.items())), "counters": cnt, "traced_busy_s": traced_busy,
           "traced_idle_s": idle, "sum_s": sum(secs.values()), "events": events,
           "missing": raw["missing"], "mounted_tracefs": raw["mounted_tracefs"],
           "setup_cpu_s": raw.get("setup_cpu_s")}
    out.update(ed)
    if "proc_idle_s" in ed:
        out["proc_busy_s"] = elapsed - ed["proc_idle_s"]
        out["unattributed_s"] = out["proc_busy_s"] - traced_busy
    out["periods"] = period_stats(raw["periods"], marks)
    out["series"] = series(raw["periods"], raw["t_open"], raw["t_close"], bin_s)
    if ns_per_event is not None:  # the tracer's own cost (tracer_cost)
        out["cost"] = tracer_cost(events, ns_per_event, dispatch_ns, ed.get("tracer_self_s"),
                                  ed.get("tracer_self_runs"))
        cost = out["cost"]["cost_s"]
        out["cost"]["share_of_busy"] = cost / out["proc_busy_s"] if out.get("proc_busy_s") else None
    if records:
        out["per_record_us"] = {k: v / records * 1e6 for k, v in out["components_s"].items()}
    return out


# ---------------------------------------------------------------------------- busy periods

def series(periods, t_open, t_close, bin_s=0.01):
    """{"bin_s", "t0_ns", "busy_ns": [per bin, all measured CPUs]} from the busy periods."""
    bin_ns = int(bin_s * 1e9)
    nbins = max(1, math.ceil((t_close - t_open) / bin_ns))
    busy = [0] * nbins
    for p in periods:
        a, b = max(p["start"], t_open), min(p["end"], t_close)
        while a < b:
            i = (a - t_open) // bin_ns
            edge = min(b, t_open + (i + 1) * bin_ns)
            busy[min(i, nbins - 1)] += edge - a
            a = edge
    return {"bin_s": bin_s, "t0_ns": t_open, "busy_ns": busy}


def _cost(p):
    """What a period cost the records: all its busy time but other tasks'."""
    return sum(v for k, v in p["ns"].items() if k not in ("task", "idle", "unknown"))


def groups(periods, marks):
    """Per-record samples [(cost ns, records)]: each period that handled records, with the
    record-less periods since the previous one (their arrivals, in softirq), is one group.
    Without marks every period is its own group with one "record"."""
    if not marks:
        return [(_cost(p), 1) for p in periods if _cost(p) > 0]
    starts = [p["start"] for p in periods]
    n = [0] * len(periods)
    for m in marks:
        t, k = (m, 1) if isinstance(m, int) else (int(m[0]), int(m[1]))
        i = bisect.bisect_right(starts, t) - 1
        if i >= 0:
            n[i] += k
    out, acc = [], 0
    for p, k in zip(periods, n):
        acc += _cost(p)
        if k:
            out.append((acc, k))
            acc = 0
    return out


def trimmed_ci(xs, trim=0.1, level=0.95):
    """(trimmed mean, lo, hi): Tukey-McLaughlin CI from the winsorized variance."""
    from tcpskim.stats import t_quantile  # stdlib-only module of the control half
    xs = sorted(xs)
    n = len(xs)
    if n == 0:
        return (None, None, None)
    g = int(math.floor(trim * n))
    core = xs[g:n - g]
    tm = math.fsum(core) / len(core)
    if n - 2 * g < 2:
        return (tm, None, None)
    w = [min(max(x, xs[g]), xs[n - g - 1]) for x in xs]
    mw = math.fsum(w) / n
    sw = math.sqrt(math.fsum((x - mw) ** 2 for x in w) / (n - 1))
    half = t_quantile(level, n - 2 * g - 1) * sw / ((1 - 2 * trim) * math.sqrt(n))
    return (tm, tm - half, tm + half)


def median_ci(xs, z=1.96):
    """(median, lo, hi): distribution-free CI from order statistics (normal approx.)."""
    xs = sorted(xs)
    n = len(xs)
    if n == 0:
        return (None, None, None)
    med = xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2
    lo = int(math.floor(n / 2 - z * math.sqrt(n) / 2))
    hi = int(math.ceil(n / 2 + z * math.sqrt(n) / 2))
    if lo < 0 or hi >= n:
        return (med, None, None)
    return (med, xs[lo], xs[hi])


def period_stats(periods, marks=None):
    gs = groups(periods, marks)
    per = [c / k / 1e3 for c, k in gs]  # µs per record
    med = median_ci(per)
    tm = trimmed_ci(per)
    cost = sum(c for c, _ in gs)
    recs = sum(k for _, k in gs)
    # The stream's own busy time: periods in which a packet was received on the CPU (NET_RX)
    # or the role ran. Periods with neither (ticks, RCU, the CPU's housekeeping, the same in
    # both modes and, at 50 Hz, most of an idle CPU's busy time) are left out.
    stream = sum(_cost(p) for p in periods if p.get("net_rx") or p.get("role_in"))
    return {"n": len(periods), "busy_s": sum(p["end"] - p["start"] for p in periods) / 1e9,
            "stream_s": stream / 1e9,
            "groups": len(gs), "records": recs if marks else None,
            "unit": "record" if marks else "period",
            "total_us_per_unit": cost / recs / 1e3 if recs else None,
            "median_us": med[0], "median_ci_us": [med[1], med[2]],
            "trimmed_mean_us": tm[0], "trimmed_ci_us": [tm[1], tm[2]]}
