#!/usr/bin/env python3
"""Benchmark: what one traced event costs here, and how much of it is the tracer's own code.

    .venv/bin/python bench/tracer_cost.py [--cpu 1] [--repeat 5]

The measurement's cost in a report is the tracer's programs' own time in the window (they
time themselves) + their runs x the rest of one event's price, the dispatch, which the role
measures by a pipe ping-pong with the sched probes attached and detached, less the programs'
self time in it (``roles.attribution_cost``). This bench runs that same measurement on ``--cpu`` with three
programs on sched_switch and sched_wakeup, interleaved over ``--repeat`` rounds, with BPF
run-time statistics off and on (the role turns them on for the XDP program's run_time_ns, and
the switch is global: every BPF program pays it):

  empty       programs that return at once: the kernel's price of a raw tracepoint with a BPF
              program on it (the dispatch), which no tracer can go below
  tracer      bpf/attribution.c's programs, as the role loads them
It prints the median ns per event of each, and the tracer's own share above the empty one.

That ping-pong is hot: every cache stays warm. With ``--sparse`` it then runs a loopback UDP
round trip on ``--cpu`` followed by a sleep of each ``--gaps`` (s), in an open window, and
prints the tracer's programs' own ns per run as they time themselves (what a report charges,
``roles.attribution_stats.tracer_cost``): on a CPU that idles between events their maps and
code are cold, and a run costs several times the hot figure.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tabulate import tabulate  # noqa: E402

from roles.attribution import Tracer  # noqa: E402
from roles.attribution_cost import ns_per_event  # noqa: E402

STATS = "/proc/sys/kernel/bpf_stats_enabled"
EMPTY = """
RAW_TRACEPOINT_PROBE(sched_switch) { return 0; }
RAW_TRACEPOINT_PROBE(sched_wakeup) { return 0; }
"""


class Empty:
    """The two sched probes doing nothing, with the attribute ns_per_event() needs."""

    def __init__(self, cpu):
        from bcc import BPF

        self.cpus = [cpu]
        self.bpf = BPF(text=EMPTY)

    def cleanup(self):
        self.bpf.cleanup()


def _stats(value):
    with open(STATS, "w") as f:
        f.write(str(value))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--sparse", action="store_true", help="also the self-timed cost per run with gaps")
    ap.add_argument("--gaps", default="0,0.0005,0.005", help="comma list of sleeps between round trips (s)")
    a = ap.parse_args(argv)
    with open(STATS) as f:
        old = f.read().strip()
    tracer, empty = Tracer(cpus=[a.cpu]), Empty(a.cpu)
    progs = {"empty": empty, "tracer": tracer}
    names = {b"sched_switch": b"raw_tracepoint__sched_switch", b"sched_wakeup": b"raw_tracepoint__sched_wakeup"}

    def attach(obj, on):  # one program set on the sched tracepoints at a time
        for tp, fn in names.items():
            if on:
                obj.bpf.attach_raw_tracepoint(tp=tp, fn_name=fn)
            else:
                obj.bpf.detach_raw_tracepoint(tp=tp)

    res = {(p, s): [] for p in progs for s in (0, 1)}
    try:
        for _ in range(a.repeat):
            for s in (0, 1):
                _stats(s)
                for name, obj in progs.items():
                    other = empty if obj is tracer else tracer
                    attach(other, False)
                    try:
                        res[(name, s)].append(ns_per_event(obj, cpu=a.cpu)["ns_per_event"])
                    finally:
                        attach(other, True)
        sparse = _sparse(tracer, a.cpu, [float(g) for g in a.gaps.split(",")], a.repeat) if a.sparse else None
    finally:
        _stats(old)
        empty.cleanup()
        tracer.cleanup()
    med = {k: statistics.median(v) for k, v in res.items()}
    rows = []
    for s in (0, 1):
        e, t = med[("empty", s)], med[("tracer", s)]
        rows.append([("on" if s else "off"), f"{e:.0f}", f"{t:.0f}", f"{t - e:.0f}", f"{(t - e) / t:.0%}" if t else "-"])
    print(f"ns per traced event on CPU {a.cpu} (sched_switch + sched_wakeup, pipe ping-pong; medians of "
          f"{a.repeat}, interleaved)")
    print(tabulate(rows, headers=["bpf_stats_enabled", "empty programs", "tracer", "tracer - empty",
                                  "tracer's own share"]))
    if sparse:
        print(f"\nthe tracer's programs' own ns per run, self-timed in a window (loopback UDP round trip "
              f"then a sleep, on CPU {a.cpu}; medians of {a.repeat}, stats off)")
        print(tabulate(sparse, headers=["gap between round trips", "runs per round trip", "ns per run",
                                        "vs gap 0"]))
    return 0


_LOAD = """
import os, socket, sys, time
os.sched_setaffinity(0, {int(sys.argv[1])})
gap, end = float(sys.argv[2]), time.monotonic() + float(sys.argv[3])
a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); a.bind(("127.0.0.1", 0))
b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); b.bind(("127.0.0.1", 0))
n = 0
while time.monotonic() < end:
    a.sendto(b"x" * 1024, b.getsockname()); b.recv(2048); n += 1
    if gap:
        time.sleep(gap)
print(n)
"""


def _sparse(tracer, cpu, gaps, repeat, seconds=2.0):
    """[[gap, runs per round trip, self ns per run, ratio to gap 0]]: loopback only."""
    import subprocess

    res = {g: [] for g in gaps}
    for _ in range(repeat):
        for g in gaps:
            tracer.open()
            out = subprocess.run([sys.executable, "-c", _LOAD, str(cpu), str(g), str(seconds)],
                                 capture_output=True, text=True, check=True).stdout
            tracer.close()
            c = tracer.result(ns_per_event=0.0, dispatch_ns=0.0)["cost"]
            res[g].append((c["self_runs"] / max(int(out), 1), c["self_ns_per_run"]))
    med = {g: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v)) for g, v in res.items()}
    base = med[gaps[0]][1]
    return [[f"{g * 1e3:g} ms", f"{r:.1f}", f"{ns:.0f}", f"{ns / base:.1f}x" if base else "-"]
            for g, (r, ns) in med.items()]


if __name__ == "__main__":
    sys.exit(main())
