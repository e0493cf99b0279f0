"""The hardworker's traffic modes as transports: set up -> step ... -> close.

``roles.hardworker.run`` owns the sequence (ready -> wait for go -> measure -> loop ->
summary); a transport only moves bytes from the wire to the decision step:

* ``setup(role)`` before ready: bind, or compile and attach (slow: outside the window).
  Returns the extra fields of the ready file.
* ``prog_stats`` (callable or None) and ``run_time_stats`` (a context-manager factory or
  None): what the measurement needs from this path (the XDP program's run time and frames,
  and the switch that makes the kernel count its run time, for xdp).
* ``step(stop, sink)``: wait per the wake-up policy, then hand what arrived to ``sink``
  (a ``Decider``: ``sink.feed(stream, data, recv_ns, eof)``).
* ``finished(trial)``: the loop's end condition (xdp lingers after the streams ended).
* ``close(summary)``: release everything, always; adds the transport's own counters.

A transport is chosen by ``transport_for(cfg)`` from ``TRANSPORTS``. A new delivery policy
that needs its own data path (e.g. xdp's in-kernel latest-value map) is a new class registered
there; one that only changes which records reach the decision step is a policy on the sink.
Neither touches the other transports.
"""

import contextlib
import logging
import selectors
import socket
import time

from roles import delivery, runtime
from roles.record import HEADER_SIZE, Bad, CorruptPayload, Record, RecordError, RecordStream, decode
from roles.vocab import KIND_RECORD, SYN


def decode_item(buf):
    """A whole record the kernel chose -> Record, or Bad (it checked magic and length only)."""
    try:
        return decode(buf)
    except CorruptPayload as exc:
        return Bad(exc.reason, bytes(buf[:64]), exc.sensor_id, exc.seq)
    except RecordError as exc:
        return Bad(exc.reason, bytes(buf[:64]))

log = logging.getLogger("tcpskim.hardworker")


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


class Transport:
    """Base: no traffic, no measurement extras. See the module docstring for the contract."""

    prog_stats = None
    run_time_stats = None

    def __init__(self, cfg, streams: dict):
        self.cfg, self.streams = cfg, streams
        self._tick = None
        self.drains = 0  # wake-ups that found data (what the coalesce wake-up saves)

    def setup(self, role) -> dict:
        return {}

    def batch_tick(self):
        """The batch policy's Ticker (started at the first step, after go), or None."""
        wk = self.cfg["wakeup"]
        if wk["policy"] != "batch":
            return None
        if self._tick is None:
            self._tick = Ticker(wk["interval_ms"] / 1000)
        return self._tick

    def step(self, stop, sink) -> None:
        raise NotImplementedError

    def finished(self, trial) -> bool:
        return trial.done()

    def close(self, summary: dict) -> None:
        pass


class IdleTransport(Transport):
    """No traffic path: only the measurement runs (the idle baseline), until the planned end."""

    def step(self, stop, sink):
        stop.wait(0.1)

    def finished(self, trial):
        return time.time() >= trial.planned_end


class TcpTransport(Transport):
    """An ordinary non-blocking TCP server, one connection per sensor (epoll).

    per-record: one recv per readable event, a wake-up for every arrival (default
    SO_RCVLOWAT). batch: sleep between drains so the kernel queues records in between,
    like the XDP batch."""

    def setup(self, role):
        me = self.cfg["hosts"]["hardworker"]
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind((me["ip"], self.cfg["port"]))
        self.lsock.listen(64)
        self.lsock.setblocking(False)
        self.sel = selectors.DefaultSelector()  # epoll
        self.sel.register(self.lsock, selectors.EVENT_READ, None)
        self.conns = {}
        self._deadline = None  # coalesce: when every socket is drained next
        return {"listen": f"{me['ip']}:{self.cfg['port']}"}

    def step(self, stop, sink):
        tick = self.batch_tick()
        if self.cfg["wakeup"]["policy"] == "coalesce":
            return self._step_coalesce(sink)
        if tick is None:
            for key, _ in self.sel.select(timeout=0.1):
                if key.data is None:
                    self._accept_all()
                else:
                    self.drains += 1
                    self._read(key.fileobj, key.data, sink, drain=False)
            return
        tick.sleep(stop)
        self._accept_all()
        self.drains += 1
        for sock, st in list(self.conns.items()):
            self._read(sock, st, sink, drain=True)

    def _step_coalesce(self, sink):
        """Wake when a socket holds N records (SO_RCVLOWAT, set at accept) or when T passed
        since the last full drain: then every socket is drained, so no record waits > T."""
        wk = self.cfg["wakeup"]
        now = time.monotonic()
        if self._deadline is None:
            self._deadline = now + wk["timeout_us"] / 1e6
        for key, _ in self.sel.select(timeout=max(0.0, self._deadline - now)):
            if key.data is None:
                self._accept_all()
            else:
                self.drains += 1
                self._read(key.fileobj, key.data, sink, drain=True)
        if time.monotonic() >= self._deadline:
            self._deadline = None
            got = [self._read(sock, st, sink, drain=True) for sock, st in list(self.conns.items())]
            self.drains += any(got)  # like xdp's count: a drain that found data

    def _accept_all(self):
        while True:
            try:
                sock, peer = self.lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            sock.setblocking(False)
            if self.cfg["wakeup"]["policy"] == "coalesce":  # readable once N records wait
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT,
                                self.cfg["wakeup"]["records"] * (HEADER_SIZE + self.cfg["size_bytes"]))
            st = self.streams[peer] = Stream(peer)
            self.conns[sock] = st
            self.sel.register(sock, selectors.EVENT_READ, st)
            log.info("accepted %s:%d", *peer)

    def _read(self, sock, st, sink, drain) -> int:
        """Feed what the socket holds (one recv, or all with ``drain``); the bytes read."""
        n = 0
        while True:
            try:
                data = sock.recv(1 << 16)
            except (BlockingIOError, InterruptedError):
                return n
            except OSError as exc:
                log.warning("%s: %s", st.info()["key"], exc)
                data = b""
            sink.feed(st, data, time.time_ns(), eof=not data)
            if not data:
                self.sel.unregister(sock)
                sock.close()
                del self.conns[sock]
                st.finished = True
                log.info("%s closed: %s", st.info()["key"], st.info())
                return n
            n += len(data)
            if not drain:
                return n

    def close(self, summary):
        summary["drains"] = self.drains
        if not hasattr(self, "sel"):
            return  # setup failed before anything was opened
        for sock in self.conns:
            sock.close()
        self.lsock.close()
        self.sel.close()


def consume_batch(batch, streams: dict, reasm, sink, now: int, policy: bool = False) -> None:
    """One drained ring batch [(key, seq, flags, payload, kind, base)] -> reassembly ->
    records -> sink.

    ``streams`` maps (addr, port) to the current connection's Stream (an earlier connection
    from the same address and port is kept under (addr, port, "#n")). ``policy``: the program
    runs an in-kernel delivery policy (bpf/deliver.h), so a ring record is either one whole
    record it chose (KIND_RECORD: straight to the sink) or raw bytes from the flow's frontier
    ``base`` on (a flow that fell back to full capture, and SYN/FIN/RST): the reassembler
    skips what the kernel evaluated and held back."""
    got = {}  # stream -> in-order pieces: cut records once per stream and batch
    ended = set()
    for key, seq, flags, payload, kind, base in batch:
        st = streams.get(key)
        if st is None:
            st = streams[key] = Stream(key)
            log.info("new stream %s:%d", *key)
        before = reasm.streams.get(key)
        if policy and not flags & SYN:
            if kind == KIND_RECORD:
                sink.feed_records(st, [decode_item(payload)], now)
                reasm.skip_to(key, (seq + len(payload)) & 0xFFFFFFFF)
                seq, payload = seq + len(payload), b""  # what is left: its flags (a FIN)
            else:
                reasm.skip_to(key, base)
        data = reasm.feed(key, seq & 0xFFFFFFFF, flags, payload)
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
        sink.feed(st, b"".join(parts), now, eof=st in ended)
        if st in ended:
            log.info("stream %s:%d ended: %s", *st.key, st.info())


class XdpTransport(Transport):
    """HardworkerSkim: the XDP program captures into the ring buffer and bounces to the logger;
    each step drains the ring and reassembles every (sensor addr, port) stream by TCP seq.

    Every FIN seen proves the hardworker captured everything, not that the logger got it: a
    segment lost on the way to the logger comes back as the sensor's retransmission, and
    without the program this host's kernel would answer it with an RST. So it stays attached
    after the streams ended until SIGTERM (the control side sends it once the sensors saw
    their connections close) or for the sensors' whole close wait plus a margin."""

    def __init__(self, cfg, streams):
        super().__init__(cfg, streams)
        self.skim = None
        self.restore = contextlib.ExitStack()  # interface settings changed for the xdp path
        self.linger_s = cfg["close_timeout_s"] + 5.0
        self.delay_s = cfg["consumer_delay_us"] / 1e6
        self._done_at = None
        self.policy = delivery.from_config(cfg["deliver"])
        self._mailbox_seen = {}  # slot -> its update count at the last read
        self.mailbox_stream = Stream(("mailbox", 0))  # where a bad mailbox record is charged

    def setup(self, role):
        from roles.reassembly import Reassembler
        from roles.skim import HardworkerSkim, hardworker_args
        from roles.xdp import receive_offloads_off

        cfg = self.cfg
        t0 = time.process_time()
        self.skim = HardworkerSkim(**hardworker_args(cfg))
        role.summary["setup_cpu_s"] = time.process_time() - t0  # loading: outside the window
        role.summary["bpf_cache"] = self.skim.bpf.cache
        self.reasm = Reassembler()
        if role.stop.is_set():  # SIGTERM while compiling: never attach
            raise runtime.Stopped("stopped before attaching XDP")
        role.summary["offloads_turned_off"] = self.restore.enter_context(
            receive_offloads_off(cfg["interface"]))
        self.skim.attach()
        log.info("HardworkerSkim attached on %s (%s)", cfg["interface"], cfg["xdp_mode"])
        return {}

    def prog_stats(self):
        """The program's run time and runs (counted while run-time stats are on) and the frames
        it saw (its own counters: counted always)."""
        from roles.vocab import frames_seen

        return {**self.skim.prog_stats(), "frames": frames_seen(self.skim.counters())}

    @property
    def run_time_stats(self):
        from roles.xdp import bpf_stats_enabled

        return bpf_stats_enabled

    def step(self, stop, sink):
        tick = self.batch_tick()
        if tick is not None:
            tick.sleep(stop)
        elif self.cfg["wakeup"]["policy"] == "coalesce":
            # the program wakes us once N records wait; the timeout bounds every record's
            # wait by T (a record arriving after we began waiting waits less)
            self.skim.wait(self.cfg["wakeup"]["timeout_us"] / 1000)
        elif not self.skim.wait(100):
            return
        batch = self.skim.drain()
        self.drains += bool(batch)
        if batch:
            consume_batch(batch, self.streams, self.reasm, sink, time.time_ns(),
                          policy=self.policy.kind != "all")
        if self.skim.mailbox is not None:
            self._read_mailbox(sink)
        if batch and self.delay_s:
            time.sleep(self.delay_s)

    def _read_mailbox(self, sink):
        """latest: each sensor's newest record, straight from the mmapped slots (no syscall)."""
        box, now, seen = self.skim.mailbox, time.time_ns(), self._mailbox_seen
        for slot in box.changed(seen):
            got = box.read(slot)
            if got is None or seen.get(slot) == got[0]:
                continue  # never written, or nothing new since the last tick
            seen[slot] = got[0]
            item = decode_item(got[1])
            if type(item) is Record:
                sink.gate.latest.offer(item, now)
            else:
                sink.bad(self.mailbox_stream, item)

    def finished(self, trial):
        if not trial.done():
            return False
        self._done_at = self._done_at or time.monotonic()
        return time.monotonic() - self._done_at > self.linger_s

    def close(self, summary):
        summary["drains"] = self.drains
        try:
            if self.skim is not None:
                try:
                    summary["skim_counters"] = self.skim.counters()
                    summary["reassembly"] = self.reasm.stats()  # its counts are of entries
                    summary["segments_joined"] = self.skim.coalesced
                except Exception as exc:  # noqa: BLE001 - detaching matters more
                    log.warning("skim counters: %s", exc)
                self.skim.close()
                log.info("HardworkerSkim detached")
        finally:
            self.restore.close()  # GRO/LRO back on even if detaching failed


TRANSPORTS = {"tcp": TcpTransport, "xdp": XdpTransport, "idle": IdleTransport}


def transport_for(cfg, streams: dict) -> Transport:
    """The transport of this run's mode (a delivery policy with its own path registers here)."""
    return TRANSPORTS[cfg["mode"]](cfg, streams)
