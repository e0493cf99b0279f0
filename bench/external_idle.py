"""An idle reading of the hardworker's CPU taken outside the tool, for bench/overhead.py.

A thread on the other CPUs samples, every 10 ms, each CPU's idle + iowait time from /proc/stat
(USER_HZ ticks; the tool itself reads /proc/timer_list's idle_ns). A trial's busy CPU is then
elapsed - idle over the hardworker's window (its CLOCK_MONOTONIC edges, ``window.mono_s``),
interpolated linearly between samples: 10 ms steps at each edge, a few % of a 10 s window's busy
time at 2 kHz. (cpuidle's per-state residency was tried first: in this VM it disagreed with both
/proc/stat and timer_list by 35-180 %, so it is not used.)
"""

from __future__ import annotations

import bisect
import os
import threading
import time

TICK = os.sysconf("SC_CLK_TCK")


def _stat_idle_s() -> dict[int, float]:
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                v = line.split()
                out[int(v[0][3:])] = (int(v[4]) + int(v[5])) / TICK
    return out


class ExternalIdle:
    """Samples every CPU's idle time until stopped; ``busy(cpus, t0, t1)`` afterwards."""

    def __init__(self, sampler_cpus: list[int], interval_s: float = 0.01):
        self.cpus = list(range(os.cpu_count() or 1))
        self.sampler_cpus, self.interval = sampler_cpus, interval_s
        self.t, self.stat = [], []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="external-idle", daemon=True)

    def _run(self):
        if self.sampler_cpus:
            os.sched_setaffinity(threading.get_native_id(), self.sampler_cpus)  # never the measured CPU
        while not self._stop.is_set():
            self.t.append(time.monotonic())
            self.stat.append(_stat_idle_s())
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _at(self, series, cpu, t):
        i = bisect.bisect_left(self.t, t)
        if i == 0 or i >= len(self.t):
            return None
        ta, tb = self.t[i - 1], self.t[i]
        a, b = series[i - 1].get(cpu), series[i].get(cpu)
        if a is None or b is None:
            return None
        return a + (b - a) * (t - ta) / (tb - ta)

    def busy(self, cpus, t0, t1) -> dict:
        """{"stat_s"}: busy CPU seconds of ``cpus`` over [t0, t1] (None: no data)."""
        out = {}
        for key, series, scale in (("stat_s", self.stat, 1.0),):
            idle = 0.0
            for c in cpus:
                a, b = self._at(series, c, t0), self._at(series, c, t1)
                if a is None or b is None:
                    idle = None
                    break
                idle += (b - a) * scale
            out[key] = None if idle is None else len(cpus) * (t1 - t0) - idle
        return out
