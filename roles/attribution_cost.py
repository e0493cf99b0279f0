"""The tracer's own cost per event, measured: a known load with and without the probes.

The load is a pipe ping-pong between two processes pinned to one measured CPU: each round
trip is two context switches and two wake-ups, i.e. four traced events. Its CPU time (both
processes, from /proc/<pid>/schedstat: the probes run in their context) is measured with
the sched probes detached and attached, alternately; the median of the paired differences
over the events counted gives ns per event.

That figure is hot: the ping-pong runs back to back, every cache warm. In a window the CPU
idles between events, and in this VM a program run then costs several times as much (the
maps' and the program's cache lines and TLB entries are gone: 650-690 ns per run of the
tracer's programs with 2 ms gaps against 160-190 ns back to back, kernel run-time stats). So
the programs time themselves in the window (bpf/attribution.c, ``self_ns``), and only the
part of an event outside the program comes from here: ``dispatch_ns``, the ping-pong's ns per
event less the programs' self time per event in the same runs.
"""

import os
import statistics
import subprocess
import sys
import time

SCHED = ((b"sched_switch", b"raw_tracepoint__sched_switch"),
         (b"sched_wakeup", b"raw_tracepoint__sched_wakeup"))


def _sched_ns(pid):
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


# The partner is a fresh interpreter (not a fork): a forked child would inherit the probes'
# perf event fds and keep them attached after detach_tracepoint().
_PARTNER = """
import os, sys
os.sched_setaffinity(0, {int(sys.argv[1])})
r, w = int(sys.argv[2]), int(sys.argv[3])
while True:
    b = os.read(r, 1)
    if not b:
        break
    os.write(w, b)
"""


def _round_trips(n, r, w, child):
    """CPU ns of both processes for n round trips."""
    a = _sched_ns(os.getpid()) + _sched_ns(child)
    for _ in range(n):
        os.write(w, b"x")
        os.read(r, 1)
    return _sched_ns(os.getpid()) + _sched_ns(child) - a


def ns_per_event(tracer, cpu=None, rounds=3000, pairs=5):
    """Measured cost (ns) of one traced event on ``cpu`` (default: the first measured CPU).

    The window must not be open (the run would count as load). Returns a dict with the
    figure and the raw paired differences."""
    cpu = tracer.cpus[0] if cpu is None else cpu
    old = os.sched_getaffinity(0)
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    proc = subprocess.Popen([sys.executable, "-c", _PARTNER, str(cpu), str(r1), str(w2)],
                            pass_fds=(r1, w2))
    child = proc.pid
    os.close(r1)
    os.close(w2)
    diffs, selfs = [], []
    try:
        os.sched_setaffinity(0, {cpu})
        _round_trips(200, r2, w1, child)  # warm up
        for _ in range(pairs):
            s0 = _self_ns(tracer, cpu)
            on = _round_trips(rounds, r2, w1, child)
            s1 = _self_ns(tracer, cpu)
            for tp, _fn in SCHED:
                tracer.bpf.detach_raw_tracepoint(tp=tp)
            try:
                off = _round_trips(rounds, r2, w1, child)
            finally:
                for tp, fn in SCHED:
                    tracer.bpf.attach_raw_tracepoint(tp=tp, fn_name=fn)
            diffs.append((on - off) / (4 * rounds))
            if s0 is not None and s1 is not None:
                selfs.append((s1 - s0) / (4 * rounds))
    finally:
        os.close(w1)
        proc.wait(10)
        os.close(r2)
        os.sched_setaffinity(0, old)
    total = max(0.0, statistics.median(diffs))
    own = statistics.median(selfs) if selfs else None
    # the dispatch per pair (a pair's total less its own self time), then the median: a busy
    # host moves both of one pair alike
    rest = [d - x for d, x in zip(diffs, selfs)] if len(selfs) == len(diffs) else []
    return {"ns_per_event": total, "diffs_ns": diffs, "self_ns_per_event": own, "selfs_ns": selfs,
            "dispatch_ns": max(0.0, statistics.median(rest)) if rest else None,
            "rounds": rounds, "measured_at": time.time()}


def _self_ns(tracer, cpu):
    """The programs' self time so far on ``cpu`` (``Tracer.self_time``), None for a program set
    without it (bench/tracer_cost.py's empty programs)."""
    self_time = getattr(tracer, "self_time", None)
    return None if self_time is None else self_time().get(cpu, [None])[0]
