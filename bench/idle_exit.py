#!/usr/bin/env python3
"""Benchmark: where the attribution's unattributed rest comes from — a cost per wake from idle.

    .venv/bin/python bench/idle_exit.py [--cpu 1] [--rates 0,500,1000,2000,4000] [--window 3]

On a fully busy CPU the unattributed rest (busy by the kernel's idle accounting minus the
traced busy parts) is 0; at 2 kHz per-record it was 8-17 % of busy. This bench wakes the
measured CPU from idle at known rates with no network at all: a child pinned to the CPU
sleeps 1/rate s (an hrtimer wakes it), spins ``--work`` µs, sleeps again. Per window it prints
the busy periods (wakes from idle), the tracer's "idle exit" (the idle task from a cpuidle
exit to its switch-out: tick restart, schedule_idle) and "idle loop" (its other time outside
cpuidle states) per wake, and the unattributed rest as a share of busy time three ways: as the
tool counts it (both busy), with the loop counted idle, with both idle (as before they were
measured); and fits each per wake over the windows (least squares). Rates interleave over
``--repeat`` rounds; compare within one run only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tabulate import tabulate  # noqa: E402

from roles.attribution import Tracer  # noqa: E402

_CHILD = """
import os, sys, time
os.sched_setaffinity(0, {int(sys.argv[1])})
period, work = float(sys.argv[2]), float(sys.argv[3])
print("ready", flush=True)
sys.stdin.readline()
end = time.monotonic() + float(sys.argv[4])
while time.monotonic() < end:
    time.sleep(period)
    t = time.thread_time()
    while time.thread_time() - t < work:
        pass
"""


def window(tr, cpu, rate, work_us, secs):
    """One traced window with the child waking ``cpu`` ``rate`` times a second (0: none)."""
    child = None
    if rate:
        child = subprocess.Popen([sys.executable, "-c", _CHILD, str(cpu), str(1 / rate),
                                  str(work_us / 1e6), str(secs + 1)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        child.stdout.readline()
        tr.set_pids([child.pid])
        child.stdin.write("go\n")
        child.stdin.flush()
        time.sleep(0.3)
    tr.open()
    time.sleep(secs)
    tr.close()
    if child:
        child.wait()
    r = tr.result()
    comp = r["components_s"]
    return {"rate": rate, "wakes": r["periods"]["n"], "busy_s": r["proc_busy_s"],
            "unattr_s": r["unattributed_s"], "idle_exit_s": comp.get("idle exit", 0.0),
            "idle_loop_s": comp.get("idle loop", 0.0), "steal_s": r.get("steal_s", 0.0)}


def fit(points):
    """Least squares y = a x + b over (x, y)."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    a = sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else float("nan")
    return a, my - a * mx


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu", type=int, default=(os.cpu_count() or 2) - 1)
    ap.add_argument("--rates", default="0,500,1000,2000,4000")
    ap.add_argument("--work", type=float, default=20.0, help="µs of work per wake (default 20)")
    ap.add_argument("--window", type=float, default=3.0)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args(argv)
    rates = [int(x) for x in a.rates.split(",")]
    rows = []
    with Tracer([a.cpu], pids=[os.getpid()]) as tr:
        for _ in range(a.repeat):
            for rate in rates:
                rows.append(window(tr, a.cpu, rate, a.work, a.window))
    # the unattributed rest as the tool counts it (idle exit and idle loop busy), and as it
    # would be with the loop counted idle, or both
    ways = {"as counted": lambda r: r["unattr_s"],
            "loop idle": lambda r: r["unattr_s"] + r["idle_loop_s"],
            "both idle": lambda r: r["unattr_s"] + r["idle_loop_s"] + r["idle_exit_s"]}
    table = []
    for rate in rates:
        rs = [r for r in rows if r["rate"] == rate]
        med = lambda f: statistics.median(f(r) for r in rs)  # noqa: E731
        w, busy = med(lambda r: r["wakes"]), med(lambda r: r["busy_s"])
        pw = lambda v: f"{v / w * 1e6:.2f}" if w else "-"  # noqa: E731
        table.append([rate, round(w), f"{busy * 1e3:.1f}", pw(med(lambda r: r["idle_exit_s"])),
                      pw(med(lambda r: r["idle_loop_s"])),
                      *(f"{100 * med(f) / busy:+.1f}" if busy else "-" for f in ways.values()),
                      f"{med(lambda r: r['steal_s']) * 1e3:.1f}"])
    print(f"CPU {a.cpu}, {a.window:g} s windows, {a.work:g} µs work per wake, medians of {a.repeat}")
    print(tabulate(table, headers=["wakes/s asked", "busy periods", "busy ms", "idle exit µs/wake",
                                   "idle loop µs/wake", *(f"unattributed % of busy, {k}" for k in ways),
                                   "steal ms"]))
    fits = {k: fit([(r["wakes"], f(r)) for r in rows]) for k, f in ways.items()}
    print(f"unattributed fitted over {len(rows)} windows: " + "; ".join(
        f"{k}: {sl * 1e6:.2f} µs x wakes + {b * 1e3:.2f} ms" for k, (sl, b) in fits.items()))


if __name__ == "__main__":
    main()
