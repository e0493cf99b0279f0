"""The hardworker's measurement window without a sampler: tracepoint attribution at the edges.

``WindowMeter`` compiles the attribution tracer (``roles.attribution``) before the role
reports ready and measures the dispatch part of an event's cost then (the programs time
themselves in the window). ``start()`` starts a thread that only
sleeps until each window edge (two wake-ups, no periodic polling on the measured CPU),
takes the edge snapshot (precise idle, process CPU, context switches, delivered, BPF prog
stats) and opens / closes the tracer there.

The XDP program's run time is counted by the kernel only while run-time stats are on, and
that switch is global: every BPF program then pays two clock reads per run, the tracer's
probes too (here 158 against 21 ns per event for an empty probe, bench/tracer_cost.py), and
only the xdp mode would pay it. So stats are on in the warm-up only: the program's ns per run
there, times the frames it saw in the window (its own counters), is its window time
(``bpf_run_time_source`` says so); the window itself runs with stats off in both modes.

``finish(marks)`` reads the tracer after the window and returns the window figures (the keys
the summary row reads) with the attribution, and writes the CPU-over-time CSV (10 ms bins,
from the busy periods).

Where bcc's tracepoints cannot be used (no bcc, tracefs cannot be mounted), the window
figures still come from the edges and ``attribution`` says why it is missing.
"""

import csv
import logging
import os
import resource
import threading
import time

from roles.attribution import precise_idle_ns

log = logging.getLogger("tcpskim.window")


class WarmupRunTime:
    """The XDP program's run-time stats on from construction (go) until ``off()`` (the
    window's open); ``window(a, b)`` -> its window figures from the edge snapshots."""

    def __init__(self, prog_stats, switch):
        self._stats, self.warm0 = None, None
        try:
            self._stats = switch()
            self._stats.__enter__()
            self.warm0 = prog_stats()
        except Exception as exc:  # noqa: BLE001 - the XDP figure is optional
            log.warning("run-time stats: %s", exc)
            self.off()

    def off(self):
        stats, self._stats = self._stats, None
        if stats is not None:
            try:
                stats.__exit__(None, None, None)
            except Exception as exc:  # noqa: BLE001
                log.warning("run-time stats off: %s", exc)

    def window(self, a, b) -> dict:
        """ns per run from the warm-up (stats on), runs = frames the program saw in the window
        (its own counters); {} without them."""
        w = self.warm0
        if not w or "run_time_ns" not in a or "frames" not in a or "frames" not in b:
            return {}
        runs = a["run_cnt"] - w["run_cnt"]
        if runs <= 0:
            return {}
        per = (a["run_time_ns"] - w["run_time_ns"]) / runs
        frames = b["frames"] - a["frames"]
        return {"bpf_run_time_ns": per * frames, "bpf_run_cnt": frames, "bpf_warmup_runs": runs,
                "bpf_run_time_source": "warm-up ns per run x frames in the window (stats off in the window)"}


class WindowMeter:
    def __init__(self, cpus, csv_path, trace_idle=True):
        self.cpus, self.csv_path = sorted(cpus), csv_path
        self.tracer, self.cost, self.error = None, None, None
        self._rt = None  # the XDP program's run-time stats in the warm-up (start())
        try:
            from roles.attribution import Tracer
            from roles.attribution_cost import ns_per_event
            # trace_idle: power:cpu_idle too, so the idle task's way in and out of its cpuidle
            # state (~5 us of busy time per wake here) is a named part, not unattributed; off:
            # two events fewer per wake from idle
            self.tracer = Tracer(self.cpus, pids=[os.getpid()], cpu_idle=trace_idle)
            self.cost = ns_per_event(self.tracer)
            if self.tracer.mounted_tracefs:
                log.warning("tracefs was not mounted: mounted it at /sys/kernel/tracing")
        except Exception as exc:  # noqa: BLE001 - the window still has its edge figures
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning("no tracepoint attribution: %s", self.error)
            if self.tracer is not None:
                self.tracer.cleanup()
                self.tracer = None
        self.edges, self._thread, self._done = [], None, threading.Event()

    def start(self, win_start, win_end, delivered, prog_stats=None, run_time_stats=None):
        """From go (the warm-up's start): ``run_time_stats()`` (a context manager) keeps the
        program's run-time stats on until the window opens."""
        self.win, self.delivered, self.prog_stats = (win_start, win_end), delivered, prog_stats
        self._rt = WarmupRunTime(prog_stats, run_time_stats) if prog_stats and run_time_stats else None
        self._thread = threading.Thread(target=self._run, name="window-edges", daemon=True)
        self._thread.start()

    def _snapshot(self):
        ru = resource.getrusage(resource.RUSAGE_SELF)
        s = {"wall": time.time(), "mono": time.monotonic(), "process_cpu_s": time.process_time(),
             "nvcsw": ru.ru_nvcsw, "nivcsw": ru.ru_nivcsw, "delivered": self.delivered(),
             "thread_cpu_s": time.thread_time()}
        if self.tracer is None:
            s["idle_ns"] = precise_idle_ns(self.cpus)
        if self.prog_stats is not None:
            try:
                s.update(self.prog_stats())
            except Exception as exc:  # noqa: BLE001
                log.warning("prog_stats: %s", exc)
        return s

    def _run(self):
        for i, edge in enumerate(self.win):
            if self._done.wait(max(0.0, edge - time.time())):
                self._stats_off()
                return
            if i == 0:
                self.edges.append(self._snapshot())
                self._stats_off()
                if self.tracer is not None:
                    self.tracer.open()
            else:
                if self.tracer is not None:
                    self.tracer.close()
                self.edges.append(self._snapshot())

    def _idle_s(self, k):
        if self.tracer is not None:
            e = self.tracer.edges[k]
            return sum(e["idle_ns"].values()) / 1e9
        return sum(self.edges[k]["idle_ns"].values()) / 1e9

    def finish(self, marks=None) -> dict:
        """Stop; the window figures (``complete`` False if it never closed) + attribution."""
        self._done.set()
        if self._thread is None:  # never started (failed before go)
            self._cleanup()
            return None
        self._thread.join(5)
        out = {"start": self.win[0], "end": self.win[1], "complete": len(self.edges) == 2,
               "samples": 0, "sampler": "none (tracepoints, read after the window)"}
        if len(self.edges) < 2:
            self._cleanup()
            return out
        a, b = self.edges
        elapsed = b["mono"] - a["mono"]
        out.update(elapsed_s=elapsed, cpus=self.cpus, mono_s=[a["mono"], b["mono"]],
                   cpu_busy_s=len(self.cpus) * elapsed - (self._idle_s(1) - self._idle_s(0)),
                   process_cpu_s=b["process_cpu_s"] - a["process_cpu_s"],
                   ctx_voluntary=b["nvcsw"] - a["nvcsw"], ctx_involuntary=b["nivcsw"] - a["nivcsw"],
                   delivered_in_window=b["delivered"] - a["delivered"],
                   sampler_cpu_s=0.0)  # the edge thread sleeps through the window
        xdp = self._xdp_window(a, b)
        if xdp:
            out.update(xdp)
        out["attribution"] = self._attribution(marks, out["delivered_in_window"], xdp)
        self._cleanup()
        return out

    def _stats_off(self):
        if self._rt is not None:
            self._rt.off()

    def _xdp_window(self, a, b):
        return self._rt.window(a, b) if self._rt is not None else {}

    def _attribution(self, marks, records, xdp=None):
        if self.tracer is None:
            return {"error": self.error}
        try:
            r = self.tracer.result(marks=marks, records=records or None,
                                   ns_per_event=self.cost["ns_per_event"],
                                   dispatch_ns=self.cost["dispatch_ns"],
                                   xdp=(xdp["bpf_run_time_ns"] / 1e9, xdp["bpf_run_cnt"]) if xdp else None)
        except Exception as exc:  # noqa: BLE001
            log.warning("attribution: %s", exc)
            return {"error": f"{type(exc).__name__}: {exc}"}
        self._write_series(r.pop("series"), marks)
        return r

    def _write_series(self, series, marks):
        """hardworker-<i>.samples.csv: cumulative busy and delivered per 10 ms bin."""
        t0_wall = self.edges[0]["wall"] + (series["t0_ns"] - self.edges[0]["mono"] * 1e9) / 1e9
        bin_ns = int(series["bin_s"] * 1e9)
        got = [0] * len(series["busy_ns"])
        for m in marks or ():
            i = (m[0] - series["t0_ns"]) // bin_ns
            if 0 <= i < len(got):
                got[i] += m[1]
        busy = done = 0
        with open(self.csv_path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["t", "cpu_busy_s", "process_cpu_s", "delivered"])
            for i, ns in enumerate(series["busy_ns"]):
                busy += ns
                done += got[i]
                w.writerow([f"{t0_wall + (i + 1) * series['bin_s']:.3f}", f"{busy / 1e9:.6f}", "", done])

    def _cleanup(self):
        self._stats_off()
        if self.tracer is not None:
            self.tracer.cleanup()
            self.tracer = None
