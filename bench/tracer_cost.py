#!/usr/bin/env python3
"""Benchmark: what one traced event costs here, and how much of it is the tracer's own code.

    .venv/bin/python bench/tracer_cost.py [--cpu 1] [--repeat 5]

The measurement's cost in a report is traced events x the cost of one event, measured in the
role by a pipe ping-pong with the sched probes attached and detached
(``roles.attribution_cost``). This bench runs that same measurement on ``--cpu`` with three
programs on sched_switch and sched_wakeup, interleaved over ``--repeat`` rounds, with BPF
run-time statistics off and on (the role turns them on for the XDP program's run_time_ns, and
the switch is global: every BPF program pays it):

  empty       programs that return at once: the kernel's price of a raw tracepoint with a BPF
              program on it (the dispatch), which no tracer can go below
  tracer      bpf/attribution.c's programs, as the role loads them
It prints the median ns per event of each, and the tracer's own share above the empty one.
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
