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

Measurement (see DESIGN.md): ``roles.window.WindowMeter`` compiles the tracepoint attribution
before ready; at the window edges [start_at + warmup_s, + duration_s] a thread that sleeps in
between takes the CPU set's busy time (elapsed - (idle + iowait) per CPU), the process CPU,
context switches, BPF prog stats and the delivered count, and opens / closes the tracer. No
thread polls the measured CPU during the window; the attribution (where every µs went), the
busy periods and hardworker-<i>.samples.csv (10 ms bins) are read after it.
"""

import logging
import os
import resource
import sys
import time
import zlib

from roles import delivery, runtime
from roles.counterfile import CounterFile
from roles.policy import Gate
from roles.record import DeliveryCounter, Record
from roles.transport import Stream, Ticker, consume_batch, transport_for  # noqa: F401 - re-exported
from roles.window import WindowMeter

log = logging.getLogger("tcpskim.hardworker")

END_GRACE_S = 2.0  # after the sensors' planned end, stop waiting for streams that never came


# ---------------------------------------------------------------------------- measurement
# The window (edges, tracepoint attribution, CPU-over-time CSV) is roles.window.WindowMeter.

def wake_cost_us(cycles=200, sleep_s=0.001) -> float:
    """Process CPU (µs) of one sleep/wake cycle of this process, on the CPU it is pinned to.

    The floor of a per-record wake-up in either mode: a wake-up per record costs at least
    this per record, whatever the data path. Bare metal: a few µs; a VM that traps its
    idle entry and exit and timer interrupts: tens of µs. Measured before the window opens."""
    t0 = time.process_time()
    for _ in range(cycles):
        time.sleep(sleep_s)
    return (time.process_time() - t0) / cycles * 1e6


# ---------------------------------------------------------------------------- decision path

class Decider:
    """Records -> delivery policy -> decision step -> DeliveryCounter; latency in the window.

    ``gate`` (roles.policy.Gate) is None for ``all``: every record goes straight to the
    decision step, the path of the policy-free baseline. ``filter`` holds back what does not
    match; ``latest`` keeps each sensor's newest record and decides on it at ``tick()``."""

    def __init__(self, work_us, win_start, win_end, clock_skew_s=None, policy=None):
        policy = policy or delivery.Policy()
        self.gate = None if policy.kind == "all" else Gate(policy)
        # Under a policy a jump in seq is a record the policy skipped, not a loss (the
        # control side checks the delivered count against the policy's replay).
        self.counter = DeliveryCounter(gaps_are_lost=self.gate is None)
        # per sensor id: this host's clock minus the sensor's (real hosts; 0 in the lab)
        self.skew_ns = {int(k): int(v * 1e9) for k, v in (clock_skew_s or {}).items()}
        self.work_ns = int(work_us * 1000)
        self.win_ns = (int(win_start * 1e9), int(win_end * 1e9))
        self.latency = runtime.Reservoir()
        self.bad_samples = []  # the first few bad items, for the summary
        self.digest = 0
        self.marks = []  # (monotonic ns, records) of each feed in the window: busy periods
        self.delivered_seqs = {}  # filter: sid -> seqs delivered, in order (checked by tests)

    def feed(self, stream: Stream, data, recv_ns: int, eof=False) -> None:
        items = stream.records.feed(data) if data else []
        if eof:
            items += stream.records.close()
        before = self.counter.delivered
        self._feed(stream, items, recv_ns)
        if self.counter.delivered != before and self.win_ns[0] <= recv_ns < self.win_ns[1]:
            self.marks.append((time.monotonic_ns(), self.counter.delivered - before))

    def _feed(self, stream, items, recv_ns):
        for item in items:
            if type(item) is not Record:
                self.bad(stream, item)
                continue
            stream.sensor_ids.add(item.sensor_id)
            if self.gate is None:
                self.deliver(item, recv_ns)
            elif self.gate.passes(stream, item):
                self.offer(item, recv_ns)

    def feed_records(self, stream: Stream, records, recv_ns: int) -> None:
        """Whole records the xdp program chose (the gate only re-checks them)."""
        for item in records:
            if type(item) is not Record:
                self.bad(stream, item)
                continue
            stream.sensor_ids.add(item.sensor_id)
            if self.gate.passes(stream, item, kernel_chose=True):
                self.offer(item, recv_ns)

    def offer(self, item: Record, recv_ns: int) -> None:
        if self.gate.latest is not None:
            self.gate.latest.offer(item, recv_ns)
            return
        if self.deliver(item, recv_ns):
            self.delivered_seqs.setdefault(item.sensor_id, []).append(item.seq)

    def tick(self) -> None:
        """latest: decide on each sensor's newest record not decided yet. Its latency is the
        record's age at the decision (send to decide), the freshness the policy promises."""
        if self.gate is None or self.gate.latest is None:
            return
        now = time.time_ns()
        for item, _, _skipped in self.gate.latest.take():
            self.deliver(item, now)

    def deliver(self, item: Record, at_ns: int) -> bool:
        if self.counter.record(item.sensor_id, item.seq) == "dup":
            return False
        self.decide(item.payload)
        if self.win_ns[0] <= at_ns < self.win_ns[1]:
            self.latency.add(at_ns - item.send_ns - self.skew_ns.get(item.sensor_id, 0))
        return True

    def bad(self, stream, item) -> None:
        self.counter.add(item)
        if len(self.bad_samples) < 20:
            self.bad_samples.append({"stream": stream.info()["key"], "reason": item.reason,
                                     "sensor_id": item.sensor_id, "seq": item.seq})

    def policy_summary(self) -> dict | None:
        if self.gate is None:
            return None
        out = self.gate.summary()
        if self.gate.latest is None:
            out["delivered_seqs"] = {str(k): v for k, v in sorted(self.delivered_seqs.items())}
        return out

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


class Progress:
    """The delivered count in a one-line file, at most once a second, for the control side's
    progress bar (as the sensors' ``sensor-<i>.sent``): stored from the role's own loop, so
    no thread wakes the measured CPU for it, and into a mapped file (roles.counterfile): no
    system call, no disk I/O of its own on that CPU."""

    def __init__(self, path):
        self.file, self.next = CounterFile(path), 0.0

    def update(self, delivered: int) -> None:
        now = time.monotonic()
        if now >= self.next:
            self.file.set(delivered)
            self.next = now + 1.0


def run(role: runtime.Role) -> int:
    """ready -> wait for go -> measure -> loop -> summary; the transport does the traffic."""
    cfg, stop = role.cfg, role.stop
    policy = delivery.from_config(cfg["deliver"])
    if policy.kind == "latest":  # both modes wake at the decision rate, whatever arrives
        cfg["wakeup"] = {"policy": "batch", "interval_ms": 1000 / policy.hz}
    trial = Trial(cfg)
    transport = transport_for(cfg, trial.streams)
    decider = None
    role.summary["wake_cost_us"] = wake_cost_us()
    csv_path = os.path.join(cfg["out_dir"], f"hardworker-{cfg['instance']}.samples.csv")
    # compiles the tracer: before ready
    meter = WindowMeter(os.sched_getaffinity(0), csv_path, cfg["trace_idle"])
    try:
        role.ready(**transport.setup(role))
        trial.open(role.wait_go())
        role.summary.update(start_at=trial.start_at, planned_end=trial.planned_end)
        decider = Decider(cfg["work_us"], *trial.window, cfg["clock_skew_s"], policy)
        meter.start(*trial.window, lambda: decider.counter.delivered, transport.prog_stats,
                    transport.run_time_stats)
        progress = Progress(os.path.join(cfg["out_dir"], f"hardworker-{cfg['instance']}.delivered"))
        while not stop.is_set() and not transport.finished(trial):
            transport.step(stop, decider)
            decider.tick()
            progress.update(decider.counter.delivered)
    finally:
        try:
            transport.close(role.summary)
        finally:
            role.summary["window"] = meter.finish(decider.marks if decider is not None else None)
            summarise(role.summary, cfg, trial, decider)
    return 0


def summarise(s: dict, cfg, trial: Trial, decider) -> None:
    """The delivery figures of the summary (and the latency reservoir's file)."""
    counter = decider.counter if decider is not None else DeliveryCounter()
    s.update(counter.summary())
    s["streams"] = [st.info() for st in trial.streams.values()]
    s["expected_streams"] = trial.expected
    s["bad_samples"] = decider.bad_samples if decider is not None else []
    s["policy"] = decider.policy_summary() if decider is not None else None
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
