"""Hardworker role: ``python3 -m roles.hardworker --config F``.

Receives the sensors' record streams and runs the decision step on each record, in one of
three modes:

* xdp: HardworkerSkim copies each matching TCP segment into a ring buffer and forwards it to
  the logger; the consumer drains the ring, reassembles each (sensor addr, port) stream by TCP
  sequence number, cuts records and decides.
* tcp: an ordinary non-blocking TCP server (one connection per sensor) feeding the same
  record cutting and decision step.
* idle: no traffic path; only the measurement runs (the idle baseline).

Both traffic modes offer the same delivery policy: ``per-record`` (wake on every arrival)
or ``batch`` (sleep interval_ms, then drain everything that queued up in between).

Measurement (see DESIGN.md): after go.json a sampler thread snapshots, at the window edges [start_at + warmup_s, + duration_s], the CPU set's busy time
(elapsed - (idle + iowait) per CPU), the process CPU, context switches, BPF prog stats and the
delivered count, and writes hardworker-<i>.samples.csv every 100 ms.
"""

import contextlib
import csv
import logging
import os
import resource
import selectors
import socket
import sys
import threading
import time
import zlib

from roles import runtime
from roles.record import Record, RecordStream, DeliveryCounter

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

class Stream:
    """One sensor stream: its record cutter and what arrived on it."""

    def __init__(self, key):
        self.key = key
        self.records = RecordStream()
        self.sensor_ids = set()
        self.finished = False

    def info(self):
        return {"key": f"{self.key[0]}:{self.key[1]}", "bytes": self.records.bytes_in,
                "records": self.records.records, "bad": self.records.bad,
                "sensor_ids": sorted(self.sensor_ids), "finished": self.finished}


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


# ---------------------------------------------------------------------------- traffic modes

class Ticker:
    """Deadline-based batch ticks (no drift, no catch-up burst when late).

    Sleeps with time.sleep, not stop.wait: an Event wait with a timeout is a futex wait
    under a lock, ~40 µs more CPU per wake-up in a VM than a plain nanosleep, and both modes
    pay it every tick. ``stop`` is checked at least every STOP_CHECK_S."""

    STOP_CHECK_S = 0.1

    def __init__(self, interval_s):
        self.interval, self.next = interval_s, time.monotonic() + interval_s

    def sleep(self, stop) -> None:
        while not stop.is_set():
            left = self.next - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(left, self.STOP_CHECK_S))
        self.next += self.interval
        if self.next < time.monotonic():
            self.next = time.monotonic() + self.interval


def run_tcp(role, decider, streams, done, go):
    cfg, stop = role.cfg, role.stop
    me = cfg["hosts"]["hardworker"]
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((me["ip"], cfg["port"]))
    lsock.listen(64)
    lsock.setblocking(False)
    sel = selectors.DefaultSelector()  # epoll
    sel.register(lsock, selectors.EVENT_READ, None)
    conns = {}

    def accept_all():
        while True:
            try:
                sock, peer = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            sock.setblocking(False)
            st = streams[peer] = Stream(peer)
            conns[sock] = st
            sel.register(sock, selectors.EVENT_READ, st)
            log.info("accepted %s:%d", *peer)

    def read(sock, st, drain):
        while True:
            try:
                data = sock.recv(1 << 16)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("%s: %s", st.info()["key"], exc)
                data = b""
            decider.feed(st, data, time.time_ns(), eof=not data)
            if not data:
                sel.unregister(sock)
                sock.close()
                del conns[sock]
                st.finished = True
                log.info("%s closed: %s", st.info()["key"], st.info())
                return
            if not drain:
                return

    try:
        role.ready(listen=f"{me['ip']}:{cfg['port']}")
        go()
        wk = cfg["wakeup"]
        if wk["policy"] == "per-record":
            # One recv per readable event: a wake-up for every arrival (default SO_RCVLOWAT).
            while not stop.is_set() and not done():
                for key, _ in sel.select(timeout=0.1):
                    if key.data is None:
                        accept_all()
                    else:
                        read(key.fileobj, key.data, drain=False)
        else:
            # Sleep between drains so the kernel queues records in between, like the XDP batch.
            tick = Ticker(wk["interval_ms"] / 1000)
            while not stop.is_set() and not done():
                tick.sleep(stop)
                accept_all()
                for sock, st in list(conns.items()):
                    read(sock, st, drain=True)
    finally:
        for sock in conns:
            sock.close()
        lsock.close()
        sel.close()


def consume_batch(batch, streams: dict, reasm, decider: Decider, now: int) -> None:
    """One drained ring batch [(key, seq, flags, payload)] -> reassembly -> records -> decide.

    ``streams`` maps (addr, port) to the current connection's Stream (an earlier connection
    from the same address and port is kept under (addr, port, "#n"))."""
    got = {}  # stream -> in-order pieces: cut records once per stream and batch
    ended = set()
    for key, seq, flags, payload in batch:
        st = streams.get(key)
        if st is None:
            st = streams[key] = Stream(key)
            log.info("new stream %s:%d", *key)
        before = reasm.streams.get(key)
        data = reasm.feed(key, seq, flags, payload)
        if before is not None and reasm.streams[key] is not before:
            # A new connection from the same address and port (a new ISN): the
            # old one ends here (its unfinished tail is reported), the new one
            # gets its own record cutter. The old one stays in the summary.
            streams[(*key, f"#{before.restarts}")] = st
            if not st.finished:
                st.finished = True
                ended.add(st)
                got.setdefault(st, [])
            st = streams[key] = Stream(key)
            log.info("stream %s:%d restarted", *key)
        if data:
            got.setdefault(st, []).append(data)
        # Ended = everything up to the FIN delivered (or RST); a hole filled
        # after the FIN arrived ends it too, so check after every segment.
        if not st.finished and reasm.streams[key].ended:
            st.finished = True
            ended.add(st)
            got.setdefault(st, [])
    for st, parts in got.items():
        decider.feed(st, b"".join(parts), now, eof=st in ended)
        if st in ended:
            log.info("stream %s:%d ended: %s", *st.key, st.info())


def run_xdp(role, decider, streams, done, go):
    from roles.reassembly import Reassembler
    from roles.skim import HardworkerSkim
    from roles.xdp import bpf_stats_enabled, receive_offloads_off

    cfg, stop = role.cfg, role.stop
    hosts, wk = cfg["hosts"], cfg["wakeup"]
    t0 = time.process_time()
    skim = HardworkerSkim(interface=cfg["interface"], hw_ip=hosts["hardworker"]["ip"],
                          hw_mac=hosts["hardworker"]["mac"], logger_ip=hosts["logger"]["ip"],
                          logger_mac=hosts["logger"]["mac"], tos=cfg["tos"], port=cfg["port"],
                          capture_bytes=cfg["capture_bytes"], ringbuf_bytes=cfg["ringbuf_bytes"],
                          wakeup="batch" if wk["policy"] == "batch" else "per-record",
                          xdp_mode=cfg["xdp_mode"])
    role.summary["setup_cpu_s"] = time.process_time() - t0  # compiling: outside the window
    reasm = Reassembler()
    delay_s = cfg["consumer_delay_us"] / 1e6
    # Every FIN seen proves the hardworker captured everything, not that the logger got it:
    # a segment lost on the way to the logger comes back as the sensor's retransmission, and
    # without the program this host's kernel would answer it with an RST. So stay attached
    # until SIGTERM (the control side sends it once the sensors saw their connections close)
    # or for the sensors' whole close wait (close_timeout_s) plus a margin.
    linger_s = cfg["close_timeout_s"] + 5.0
    done_at = None

    def finished() -> bool:
        nonlocal done_at
        if not done():
            return False
        done_at = done_at or time.monotonic()
        return time.monotonic() - done_at > linger_s

    restore = contextlib.ExitStack()  # interface settings changed for the xdp path
    try:
        if stop.is_set():  # SIGTERM while compiling: never attach
            raise runtime.Stopped("stopped before attaching XDP")
        role.summary["offloads_turned_off"] = restore.enter_context(receive_offloads_off(cfg["interface"]))
        skim.attach()
        log.info("HardworkerSkim attached on %s (%s)", cfg["interface"], cfg["xdp_mode"])
        role.ready()
        with bpf_stats_enabled():
            go(skim.prog_stats)
            tick = Ticker(wk["interval_ms"] / 1000) if wk["policy"] == "batch" else None
            while not stop.is_set() and not finished():
                if tick is not None:
                    tick.sleep(stop)
                elif not skim.wait(100):
                    continue
                batch = skim.drain()
                if not batch:
                    continue
                consume_batch(batch, streams, reasm, decider, time.time_ns())
                if delay_s:
                    time.sleep(delay_s)
    finally:
        try:
            role.summary["skim_counters"] = skim.counters()
            role.summary["reassembly"] = reasm.stats()
        except Exception as exc:  # noqa: BLE001 - detaching matters more
            log.warning("skim counters: %s", exc)
        try:
            skim.close()
            log.info("HardworkerSkim detached")
        finally:
            restore.close()  # GRO/LRO back on even if detaching failed


def run_idle(role, decider, streams, done, go):
    role.ready()
    go()
    while not role.stop.is_set() and not done():
        role.stop.wait(0.1)


# ---------------------------------------------------------------------------- role

def run(role: runtime.Role) -> int:
    cfg = role.cfg
    streams: dict = {}
    measure = None
    expected = cfg["expected_streams"] or max(1, len(cfg["hosts"].get("sensor", [])))
    state = {"start_at": None}

    def go(prog_stats=None):
        """Wait for go.json, then start the sampler on the window it defines."""
        nonlocal measure
        start_at = role.wait_go()
        ws = start_at + cfg["warmup_s"]
        we = ws + cfg["duration_s"]
        state["start_at"] = start_at
        decider.win_ns = (int(ws * 1e9), int(we * 1e9))
        role.summary.update(start_at=start_at, planned_end=we + cfg["tail_s"])
        csv_path = os.path.join(cfg["out_dir"], f"hardworker-{cfg['instance']}.samples.csv")
        measure = Measure(os.sched_getaffinity(0), ws, we, lambda: decider.counter.delivered,
                          prog_stats, csv_path)
        measure.start()

    def done() -> bool:
        if state["start_at"] is None:
            return False
        end = role.summary["planned_end"]
        if cfg["mode"] == "idle":
            return time.time() >= end
        current = [st for key, st in streams.items() if len(key) == 2]  # not restarted ones
        fin = sum(st.finished for st in current)
        if fin >= expected:
            return True
        # Streams that never arrived (a sensor failed): stop once the others are done.
        return bool(current) and fin == len(current) and time.time() > end + END_GRACE_S

    decider = Decider(cfg["work_us"], 0, 0, cfg["clock_skew_s"])
    role.summary["wake_cost_us"] = wake_cost_us()
    body = {"tcp": run_tcp, "xdp": run_xdp, "idle": run_idle}[cfg["mode"]]
    try:
        body(role, decider, streams, done, go)
    finally:
        s = role.summary
        s["window"] = measure.finish() if measure is not None else None
        s.update(decider.counter.summary())
        s["streams"] = [st.info() for st in streams.values()]
        s["expected_streams"] = expected
        s["bad_samples"] = decider.bad_samples
        p50, p99 = decider.latency.percentiles(50, 99)
        s["latency_us"] = {"p50": p50 and p50 / 1e3, "p99": p99 and p99 / 1e3, "n": decider.latency.n}
        if decider.latency.items:  # the reservoir, for latency CDFs
            with open(os.path.join(cfg["out_dir"], f"hardworker-{cfg['instance']}.latency_us.txt"), "w") as f:
                f.write("\n".join(f"{x / 1e3:.1f}" for x in decider.latency.items) + "\n")
        s["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        s["process_cpu_s_total"] = time.process_time()
    return 0


def main(argv=None):
    return runtime.run_role("hardworker", run, argv)


if __name__ == "__main__":
    sys.exit(main())
