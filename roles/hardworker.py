"""Hardworker role: ``python3 -m roles.hardworker --config F``.

Receives the sensors' record streams and runs the decision step on each record, in one of
three modes:

* xdp: HardworkerSkim copies each matching TCP segment into a ring buffer and forwards it to
  the logger; the consumer drains the ring, reassembles each (sensor addr, port) stream by TCP
  sequence number, cuts records and decides.
* tcp: an ordinary non-blocking TCP server (one connection per sensor) feeding the same
  record cutting and decision step.
* idle: no traffic path; only the measurement runs (the idle baseline).

Both traffic modes offer the same wake-up policy: ``per-record`` (wake on every arrival)
or ``batch`` (sleep interval_ms, then drain everything that queued up in between).

Each mode is a transport (``roles.transport``: set up -> step -> close); ``run()`` owns the
sequence ready -> wait for go -> measure -> loop -> summary, and the ``Decider`` is the sink
every transport feeds (records -> decision step -> DeliveryCounter).

Measurement (see DESIGN.md): after go.json a sampler thread snapshots, at the window edges
[start_at + warmup_s, + duration_s], the CPU set's busy time (elapsed - (idle + iowait) per CPU), the process CPU, context switches, BPF prog stats and the
delivered count, and writes hardworker-<i>.samples.csv every 100 ms.
"""

import csv
import logging
import os
import resource
import sys
import threading
import time
import zlib

from roles import runtime
from roles.record import DeliveryCounter, Record
from roles.transport import Stream, Ticker, consume_batch, transport_for  # noqa: F401 - re-exported

log = logging.getLogger("tcpskim.hardworker")

SAMPLE_S = 0.1
END_GRACE_S = 2.0  # after the sensors' planned end, stop waiting for streams that never came
USER_HZ = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------- measurement

def _tick_idle_s(cpu: int):
    """Idle + iowait seconds of one CPU from /proc/timer_list (ns), or None.

    The same nohz idle accounting /proc/stat prints in 10 ms units, at full resolution; the
    period in progress is left out, so it is exact only when read while ``cpu`` is awake."""
    try:
        with open("/proc/timer_list") as f:
            text = f.read()
    except OSError:
        return None
    cur, idle, iowait, active = None, None, None, None
    for line in text.splitlines():
        if line.startswith("cpu: "):
            cur = int(line[5:])
        elif cur == cpu:
            key, _, val = line.strip().partition(":")
            key = key.strip()
            if key == ".idle_sleeptime":
                idle = int(val.split()[0])
            elif key == ".iowait_sleeptime":
                iowait = int(val.split()[0])
            elif key == ".idle_active":
                active = int(val.split()[0])
    if idle is None or iowait is None or active:
        return None
    return (idle + iowait) / 1e9


def cpu_idle_s(cpus, precise=True) -> float:
    """Sum of idle + iowait seconds of ``cpus``. Busy = elapsed - idle.

    Only idle figures are used: with NO_HZ the kernel keeps them from precise idle-time
    accounting, while the busy columns come from tick sampling that misses short bursts
    (DESIGN.md measured ~1/10 of the real busy time). /proc/stat prints them in 10 ms units
    (+-20 µs per record at 50 Hz x 10 s); /proc/timer_list has the same figures in ns but
    leaves out an idle period in progress. So: timer_list when the set is the single CPU this
    thread is pinned to (reading it proves that CPU awake), /proc/stat otherwise. (cpuidle's
    state residency is not used: it leaves out idle entry/exit, ~15 µs per wake-up in a VM.)
    timer_list prints every timer of every CPU (~100 µs of kernel formatting per read), so
    ``precise=False`` (the 100 ms progress samples) reads /proc/stat only."""
    cpus = list(cpus)
    if precise and len(cpus) == 1 and os.sched_getaffinity(0) == {cpus[0]}:
        t = _tick_idle_s(cpus[0])
        if t is not None:
            return t
    want = {f"cpu{c}" for c in cpus}
    idle = 0
    with open("/proc/stat") as f:
        for line in f:
            parts = line.split()
            if parts and parts[0] in want:
                idle += int(parts[4]) + int(parts[5])
    return idle / USER_HZ


class Measure(threading.Thread):
    """Sampler thread: window-edge snapshots and the samples CSV.

    It samples from go until ``finish()``. Its own CPU (time.thread_time) inside the window
    is reported as sampler_cpu_s so it can be subtracted from the process CPU."""

    def __init__(self, cpus, win_start, win_end, delivered, prog_stats, csv_path):
        super().__init__(name="sampler", daemon=True)
        self.cpus, self.win = list(cpus), (win_start, win_end)
        self.delivered, self.prog_stats = delivered, prog_stats
        self.csv_path = csv_path
        self.edges = []  # [start snapshot, end snapshot]
        self._done = threading.Event()
        self.sampler_cpu_s = 0.0
        self.samples = 0

    def snapshot(self, precise=True):
        ru = resource.getrusage(resource.RUSAGE_SELF)
        snap = {"wall": time.time(), "mono": time.monotonic(),
                "idle_s": cpu_idle_s(self.cpus, precise),
                "process_cpu_s": time.process_time(), "nvcsw": ru.ru_nvcsw, "nivcsw": ru.ru_nivcsw,
                "delivered": self.delivered(), "thread_cpu_s": time.thread_time()}
        if self.prog_stats is not None:
            try:
                snap.update(self.prog_stats())
            except Exception as exc:  # noqa: BLE001 - never kill the sampler
                log.warning("prog_stats: %s", exc)
        return snap

    def run(self):
        # Progress samples only feed the time-series plot: /proc/stat's 10 ms resolution
        # is enough there, and keeps the sampler's cost on the measured CPU small.
        t0 = self.snapshot(precise=False)
        next_sample = time.time()
        with open(self.csv_path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["t", "cpu_busy_s", "process_cpu_s", "delivered"])
            while True:
                edge = self.win[len(self.edges)] if len(self.edges) < 2 else None
                nxt = min(next_sample, edge) if edge is not None else next_sample
                if self._done.wait(max(0.0, nxt - time.time())):
                    break
                now = time.time()
                if edge is not None and now >= edge:
                    self.edges.append(self.snapshot())
                if now >= next_sample:
                    s = self.snapshot(precise=False)
                    busy = len(self.cpus) * (s["mono"] - t0["mono"]) - (s["idle_s"] - t0["idle_s"])
                    w.writerow([f"{s['wall']:.3f}", f"{busy:.6f}",
                                f"{s['process_cpu_s'] - t0['process_cpu_s']:.6f}", s["delivered"]])
                    f.flush()
                    self.samples += 1
                    next_sample += SAMPLE_S
                    if next_sample < now:  # fell behind (suspended?): no catch-up burst
                        next_sample = now + SAMPLE_S

    def finish(self) -> dict:
        """Stop the thread; the window figures (``complete`` False if it never closed)."""
        self._done.set()
        self.join(5)
        out = {"start": self.win[0], "end": self.win[1], "complete": len(self.edges) == 2,
               "samples": self.samples}
        if not self.edges:
            return out
        a = self.edges[0]
        b = self.edges[1] if len(self.edges) == 2 else self.snapshot()
        elapsed = b["mono"] - a["mono"]
        out.update(elapsed_s=elapsed, cpus=self.cpus,
                   cpu_busy_s=len(self.cpus) * elapsed - (b["idle_s"] - a["idle_s"]),
                   process_cpu_s=b["process_cpu_s"] - a["process_cpu_s"],
                   ctx_voluntary=b["nvcsw"] - a["nvcsw"], ctx_involuntary=b["nivcsw"] - a["nivcsw"],
                   delivered_in_window=b["delivered"] - a["delivered"],
                   sampler_cpu_s=(b["thread_cpu_s"] - a["thread_cpu_s"]) if len(self.edges) == 2 else None)
        if "run_time_ns" in a and "run_time_ns" in b:
            out.update(bpf_run_time_ns=b["run_time_ns"] - a["run_time_ns"],
                       bpf_run_cnt=b["run_cnt"] - a["run_cnt"])
        # Per-record figures are made once, from these totals, in the summary row
        # (tcpskim.results.trial_row: idle baseline and sampler taken out there).
        return out


def wake_cost_us(cycles=200, sleep_s=0.001) -> float:
    """Process CPU (µs) of one sleep/wake cycle of this process, on the CPU it is pinned to.

    The floor of a per-record wake-up in either mode: a wake-up per record costs at least
    this per record, whatever the data path. Bare metal: a few µs; a VM that traps its
    idle entry/exit and timer interrupts: tens of µs. Measured before the window opens."""
    t0 = time.process_time()
    for _ in range(cycles):
        time.sleep(sleep_s)
    return (time.process_time() - t0) / cycles * 1e6


# ---------------------------------------------------------------------------- decision path

class Decider:
    """Records -> decision step -> DeliveryCounter; per-record latency inside the window."""

    def __init__(self, work_us, win_start, win_end, clock_skew_s=None):
        self.counter = DeliveryCounter()
        # per sensor id: this host's clock minus the sensor's (real hosts; 0 in the lab)
        self.skew_ns = {int(k): int(v * 1e9) for k, v in (clock_skew_s or {}).items()}
        self.work_ns = int(work_us * 1000)
        self.win_ns = (int(win_start * 1e9), int(win_end * 1e9))
        self.latency = runtime.Reservoir()
        self.bad_samples = []  # the first few bad items, for the summary
        self.digest = 0

    def feed(self, stream: Stream, data, recv_ns: int, eof=False) -> None:
        items = stream.records.feed(data) if data else []
        if eof:
            items += stream.records.close()
        for item in items:
            if type(item) is not Record:
                self.counter.add(item)
                if len(self.bad_samples) < 20:
                    self.bad_samples.append({"stream": stream.info()["key"], "reason": item.reason,
                                             "sensor_id": item.sensor_id, "seq": item.seq})
                continue
            stream.sensor_ids.add(item.sensor_id)
            if self.counter.record(item.sensor_id, item.seq) == "dup":
                continue
            self.decide(item.payload)
            if self.win_ns[0] <= recv_ns < self.win_ns[1]:
                self.latency.add(recv_ns - item.send_ns - self.skew_ns.get(item.sensor_id, 0))

    def decide(self, payload) -> None:
        """The simulated decision: hash the payload until work_us has passed (0: decode only)."""
        if self.work_ns:
            end = time.perf_counter_ns() + self.work_ns
            h = self.digest
            while time.perf_counter_ns() < end:
                h = zlib.crc32(payload, h)
            self.digest = h


# ---------------------------------------------------------------------------- role

class Trial:
    """This trial as run() sees it: the streams, the window go.json opened, when it is over."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.streams: dict = {}  # (addr, port) -> Stream; restarted ones under (addr, port, "#n")
        self.expected = cfg["expected_streams"] or max(1, len(cfg["hosts"].get("sensor", [])))
        self.start_at = self.window = self.planned_end = None

    def open(self, start_at: float) -> None:
        ws = start_at + self.cfg["warmup_s"]
        self.start_at, self.window = start_at, (ws, ws + self.cfg["duration_s"])
        self.planned_end = self.window[1] + self.cfg["tail_s"]

    def done(self) -> bool:
        """Every expected stream ended, or the ones that came did and the planned end passed
        (a sensor that failed never connects)."""
        current = [st for key, st in self.streams.items() if len(key) == 2]  # not restarted ones
        fin = sum(st.finished for st in current)
        if fin >= self.expected:
            return True
        return bool(current) and fin == len(current) and time.time() > self.planned_end + END_GRACE_S


def run(role: runtime.Role) -> int:
    """ready -> wait for go -> measure -> loop -> summary; the transport does the traffic."""
    cfg, stop = role.cfg, role.stop
    trial = Trial(cfg)
    transport = transport_for(cfg, trial.streams)
    decider = measure = None
    role.summary["wake_cost_us"] = wake_cost_us()
    try:
        role.ready(**transport.setup(role))
        trial.open(role.wait_go())
        role.summary.update(start_at=trial.start_at, planned_end=trial.planned_end)
        decider = Decider(cfg["work_us"], *trial.window, cfg["clock_skew_s"])
        with transport.measuring():
            csv_path = os.path.join(cfg["out_dir"], f"hardworker-{cfg['instance']}.samples.csv")
            measure = Measure(os.sched_getaffinity(0), *trial.window, lambda: decider.counter.delivered,
                              transport.prog_stats, csv_path)
            measure.start()
            while not stop.is_set() and not transport.finished(trial):
                transport.step(stop, decider)
    finally:
        try:
            transport.close(role.summary)
        finally:
            role.summary["window"] = measure.finish() if measure is not None else None
            summarise(role.summary, cfg, trial, decider)
    return 0


def summarise(s: dict, cfg, trial: Trial, decider) -> None:
    """The delivery figures of the summary (and the latency reservoir's file)."""
    counter = decider.counter if decider is not None else DeliveryCounter()
    s.update(counter.summary())
    s["streams"] = [st.info() for st in trial.streams.values()]
    s["expected_streams"] = trial.expected
    s["bad_samples"] = decider.bad_samples if decider is not None else []
    latency = decider.latency if decider is not None else runtime.Reservoir()
    p50, p99 = latency.percentiles(50, 99)
    s["latency_us"] = {"p50": p50 and p50 / 1e3, "p99": p99 and p99 / 1e3, "n": latency.n}
    if latency.items:  # the reservoir, for latency CDFs
        with open(os.path.join(cfg["out_dir"], f"hardworker-{cfg['instance']}.latency_us.txt"), "w") as f:
            f.write("\n".join(f"{x / 1e3:.1f}" for x in latency.items) + "\n")
    s["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    s["process_cpu_s_total"] = time.process_time()


def main(argv=None):
    return runtime.run_role("hardworker", run, argv)


if __name__ == "__main__":
    sys.exit(main())
