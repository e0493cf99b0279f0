"""The XDP middleware as the roles use it: HardworkerSkim (capture + forward) and SensorSkim.

HardworkerSkim loads ``bpf/hardworker.c`` for the run's constants, attaches it, and reads
its ring buffer with the callback-free ``RingReader``; ``drain()`` returns parsed entries
``(key, seq, flags, payload, kind, base)`` with ``key = (saddr_str, sport)``, ready for
``roles.reassembly.Reassembler`` (under ``all``, one entry per in-order run of a flow).
SensorSkim loads and attaches ``bpf/sensor.c``.
``xdp.load`` takes the program from the host's compiled-program cache (``roles.bpfcache``:
milliseconds); only a miss compiles (seconds of CPU). Either way: before reporting ready.
"""

import ctypes
import socket

from roles import delivery, xdp
from roles.mailbox import Mailbox
from roles.ringbuf import RingReader
from roles.vocab import FIN, HW_COUNTERS, MAILBOX_SLOTS, RING_RECORD, RST, SENSOR_COUNTERS, SYN

_EDGES = SYN | FIN | RST  # segments that change a stream's state: never coalesced
WAKEUPS = {"per-record": 0, "batch": 1, "coalesce": 1}  # 1 = BPF_RB_NO_WAKEUP (coalesce: see wake_records)


def _sum_counters(bpf, names):
    table = bpf[b"counters"]
    return {name: int(sum(table[ctypes.c_int(i)])) for i, name in enumerate(names)}


def set_addrs(bpf, addrs):
    """Fill the program's address map (slot i = (ip, mac)) before it is attached; the guard
    keeps it current afterwards (roles.bpfmap)."""
    from roles import bpfmap

    bpfmap.fill(bpf[bpfmap.MAP_NAME.encode()].map_fd, addrs)


class _Attached:
    """attach/detach/close shared by both roles."""

    _fn = None

    def attach(self):
        """Attach (detaching a stale program first). Returns {"mode", "stale"}."""
        self._attach_tried = True  # from here on close() must detach, even if attach fails
        info = xdp.attach(self.bpf, self._fn, self.interface, self.xdp_mode)
        self.attached_mode = info["mode"]
        return info

    _attach_tried = False

    def detach(self):
        """Idempotent; never raises when nothing is attached."""
        mode = getattr(self, "attached_mode", None) or self.xdp_mode
        xdp.detach(self.interface, mode)
        self.attached_mode = None

    def prog_stats(self):
        """{"run_time_ns", "run_cnt"} (non-zero only while xdp.bpf_stats_enabled() is in force);
        {} once closed (the sampler thread may ask after the role closed the program)."""
        bpf = self.bpf
        return {} if bpf is None else xdp.bpf_stats(bpf, self._fn)

    def close(self):
        """Detach (if this object ever tried to attach: never another role's program), then
        free the ring reader (hardworker) and the BPF object; idempotent."""
        try:
            if self._attach_tried:
                self.detach()
        finally:
            if getattr(self, "reader", None) is not None:
                self.reader.close()
                self.reader = None
            if getattr(self, "bpf", None) is not None:
                self.bpf.cleanup()
                self.bpf = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _policy_flags(deliver, record_len, capture_bytes) -> dict:
    """-D constants of the delivery policy (none for ``all``: the program is today's)."""
    if deliver.kind == "all":
        return {}
    if not record_len or record_len > capture_bytes:
        raise ValueError(f"record_len: {record_len!r} must be 1..capture_bytes ({capture_bytes}) "
                         f"for the {deliver} policy")
    return {**delivery.bpf_defines(deliver), "SKIM_RECORD_LEN": record_len}


def hardworker_args(cfg) -> dict:
    """HardworkerSkim's arguments from a role config (roles.runtime.validate's)."""
    from roles.record import HEADER_SIZE

    hosts, wk = cfg["hosts"], cfg["wakeup"]
    return dict(interface=cfg["interface"], hw_ip=hosts["hardworker"]["ip"], hw_mac=hosts["hardworker"]["mac"],
                logger_ip=hosts["logger"]["ip"], logger_mac=hosts["logger"]["mac"], tos=cfg["tos"],
                port=cfg["port"], capture_bytes=cfg["capture_bytes"], ringbuf_bytes=cfg["ringbuf_bytes"],
                wakeup=wk["policy"], wake_records=wk.get("records"), xdp_mode=cfg["xdp_mode"],
                deliver=delivery.from_config(cfg["deliver"]), record_len=HEADER_SIZE + cfg["size_bytes"])


def sensor_args(cfg) -> dict:
    """SensorSkim's arguments from a sensor's role config."""
    hosts = cfg["hosts"]
    return dict(interface=cfg["interface"], sensor_ip=cfg["self_host"]["ip"], hw_ip=hosts["hardworker"]["ip"],
                hw_mac=hosts["hardworker"]["mac"], logger_ip=hosts["logger"]["ip"], tos=cfg["tos"],
                port=cfg["port"], xdp_mode=cfg["xdp_mode"])


class HardworkerSkim(_Attached):
    _fn = "xdp_hardworker"

    def __init__(self, *, interface, hw_ip, hw_mac, logger_ip, logger_mac, tos, port,
                 capture_bytes=1448, ringbuf_bytes=1 << 20, wakeup="per-record",
                 xdp_mode="generic", deliver=None, record_len=None, wake_records=None):
        program, flags = self.program(
            interface=interface, hw_ip=hw_ip, hw_mac=hw_mac, logger_ip=logger_ip, logger_mac=logger_mac,
            tos=tos, port=port, capture_bytes=capture_bytes, ringbuf_bytes=ringbuf_bytes, wakeup=wakeup,
            xdp_mode=xdp_mode, deliver=deliver, record_len=record_len, wake_records=wake_records)
        self.deliver = deliver or delivery.Policy()
        self.interface, self.xdp_mode, self.wakeup = interface, xdp_mode, wakeup
        self.capture_bytes, self.flags = capture_bytes, flags
        self.attached_mode = None
        self.bpf = xdp.load(program, flags)
        set_addrs(self.bpf, [(hw_ip, hw_mac), (logger_ip, logger_mac)])
        events = self.bpf[b"events"]
        self.reader = RingReader(events.map_fd, int(events.max_entries), edge=wakeup == "coalesce")
        self.mailbox = None
        self.coalesced = 0  # segments joined to the one before them by _parse (under all)
        if self.deliver.kind == "latest":
            box = self.bpf[b"mailbox"]
            self.mailbox = Mailbox(box.map_fd, MAILBOX_SLOTS, record_len)

    @staticmethod
    def program(*, interface, hw_ip, hw_mac, logger_ip, logger_mac, tos, port, capture_bytes=1448,
                ringbuf_bytes=1 << 20, wakeup="per-record", xdp_mode="generic", deliver=None,
                record_len=None, wake_records=None) -> tuple[str, list[str]]:
        """(program, -D flags) for these arguments, every one validated; loads nothing
        (``roles.precompile`` compiles ahead with it)."""
        if wakeup not in WAKEUPS:
            raise ValueError(f"wakeup: must be one of {sorted(WAKEUPS)}, got {wakeup!r}")
        if (wakeup == "coalesce") != (wake_records is not None):
            raise ValueError(f"wake_records: {wake_records!r} is for (and needed by) the coalesce wake-up")
        if xdp_mode not in xdp.MODES:
            raise ValueError(f"xdp_mode: must be one of {xdp.MODES}, got {xdp_mode!r}")
        xdp._check_ifname(interface)
        xdp.compile_flags(HW_MAC=hw_mac, LOGGER_MAC=logger_mac)  # validated; they go in the map
        return "hardworker.c", xdp.compile_flags(
            SKIM_TOS=tos, SKIM_PORT=port, HW_IP=hw_ip, LOGGER_IP=logger_ip,
            SKIM_CAPTURE=capture_bytes, SKIM_RINGBUF_BYTES=ringbuf_bytes, SKIM_WAKEUP=WAKEUPS[wakeup],
            **_policy_flags(deliver or delivery.Policy(), record_len, capture_bytes),
            **({"SKIM_WAKE_RECORDS": wake_records} if wake_records is not None else {}))

    def wait(self, timeout_ms):
        """True if data may be ready (always returns after timeout_ms; batch mode never wakes)."""
        return self.reader.wait(timeout_ms)

    def drain(self, max_records=None):
        """[(key, seq, flags, payload, kind, base), ...] in ring order; key = (saddr_str, sport)."""
        return self.reader.drain(max_records, self._parse)

    def _parse(self, mem, spans):
        # Parse in place in the mapped ring: slicing the mmap copies each payload out (a joined
        # run is copied once more, by the join).
        # Under ``all``, segments that continue each other in one flow (no SYN, FIN or RST)
        # come out as one entry with their payloads joined, as GRO hands a socket one big
        # segment: the reassembler then works once per run, not once per segment (µs of
        # Python each), and gets the same bytes. Policies keep one entry per segment: each
        # carries its own kind and frontier.
        out = []
        append = out.append
        unpack = RING_RECORD.unpack_from
        head = RING_RECORD.size
        ntoa = socket.inet_ntoa
        addrs = {}
        coalesce = self.deliver.kind == "all"
        runs = []  # (index in out, payload parts) of each entry later segments may continue
        nxt = caddr = cport = parts = None  # the open run: flow and next sequence number
        for start, _ in spans:
            saddr, sport, flags, kind, seq, ln, base = unpack(mem, start)
            p = start + head
            payload = mem[p:p + ln]
            if coalesce and not flags & _EDGES:
                if seq == nxt and sport == cport and saddr == caddr:
                    parts.append(payload)
                    nxt = (seq + ln) & 0xFFFFFFFF
                    continue
                caddr, cport, nxt, parts = saddr, sport, (seq + ln) & 0xFFFFFFFF, [payload]
                runs.append((len(out), parts))
            else:
                caddr = None  # an edge ends the run: it goes to the reassembler on its own
            a = addrs.get(saddr)
            if a is None:
                a = addrs[saddr] = ntoa(saddr)
            append(((a, sport), seq, flags, payload, kind, base))
        for i, parts in runs:
            if len(parts) > 1:
                key, seq, flags, _, kind, base = out[i]
                out[i] = (key, seq, flags, b"".join(parts), kind, base)
                self.coalesced += len(parts) - 1
        return out

    def counters(self):
        return _sum_counters(self.bpf, HW_COUNTERS)

    def close(self):
        if getattr(self, "mailbox", None) is not None:
            self.mailbox.close()
            self.mailbox = None
        super().close()


class SensorSkim(_Attached):
    _fn = "xdp_sensor"

    def __init__(self, *, interface, sensor_ip, hw_ip, hw_mac, logger_ip, tos, port,
                 xdp_mode="generic"):
        program, flags = self.program(interface=interface, sensor_ip=sensor_ip, hw_ip=hw_ip, hw_mac=hw_mac,
                                      logger_ip=logger_ip, tos=tos, port=port, xdp_mode=xdp_mode)
        self.interface, self.xdp_mode, self.flags = interface, xdp_mode, flags
        self.attached_mode = None
        self.bpf = xdp.load(program, flags)
        set_addrs(self.bpf, [(hw_ip, hw_mac)])

    @staticmethod
    def program(*, interface, sensor_ip, hw_ip, hw_mac, logger_ip, tos, port,
                xdp_mode="generic") -> tuple[str, list[str]]:
        """(program, -D flags), validated; loads nothing."""
        if xdp_mode not in xdp.MODES:
            raise ValueError(f"xdp_mode: must be one of {xdp.MODES}, got {xdp_mode!r}")
        xdp._check_ifname(interface)
        # the logger's replies carry no marker; tos is validated for symmetry only
        xdp.compile_flags(SKIM_TOS=tos)
        xdp.compile_flags(HW_MAC=hw_mac)  # validated; it goes in the map
        return "sensor.c", xdp.compile_flags(SKIM_PORT=port, SENSOR_IP=sensor_ip, HW_IP=hw_ip,
                                             LOGGER_IP=logger_ip)

    def counters(self):
        return _sum_counters(self.bpf, SENSOR_COUNTERS)
