"""End-to-end tests of the XDP data path through real kernel XDP (bcc, generic mode on veth).

Topology, built by the tests' one lab builder (``helpers.lab_built``: the network part of a
lab, prefix dp-) and removed afterwards:

    dp-sen eth0 .2 ─┐
    dp-hw  eth0 .3 ─┼─ bridge dp-br0 in namespace dp-br
    dp-log eth0 .4 ─┘

The bridge lives in its own namespace with bridge netfilter off (a plain wire: the root
namespace's br_netfilter would validate IPv4 headers and drop the malformed frames tested
here), so nothing of it is reachable from the root namespace. TX and RX checksum offload are
off on every veth end, so segments carry full checksums and receivers verify them
(TcpInCsumErrors would count a wrong rewrite). XDP and sockets are set up in a namespace by
switching the test thread's network namespace with setns(2) around the call: sockets and
netlink sockets keep the namespace they were created in.
"""

import contextlib
import ctypes
import hashlib
import os
import shutil
import socket
import subprocess
import threading
import time

import pytest

from helpers import lab_built, write_lab_inventory

try:
    import bcc  # noqa: F401
    HAVE_BCC = True
except Exception:  # ImportError, or bcc failing without kernel headers
    HAVE_BCC = False

pytestmark = [
    pytest.mark.lab,  # namespaces and kernel XDP
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, XDP)"),
    pytest.mark.skipif(not HAVE_BCC, reason="bcc is not importable by this python"),
    pytest.mark.skipif(shutil.which("ip") is None or shutil.which("ethtool") is None,
                       reason="needs iproute2 and ethtool"),
]

NS = {"sen": "dp-sen", "hw": "dp-hw", "log": "dp-log"}
BR_NS = "dp-br"
IP = {"sen": "198.18.0.2", "hw": "198.18.0.3", "log": "198.18.0.4"}
MAC = {"sen": "02:00:c6:12:00:02", "hw": "02:00:c6:12:00:03", "log": "02:00:c6:12:00:04"}
TOS, PORT = 0x68, 12345
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def sh(*args, check=True):
    return subprocess.run(args, check=check, capture_output=True, text=True)


def nsx(ns, *args, check=True):
    return sh("ip", "netns", "exec", ns, *args, check=check)


@contextlib.contextmanager
def in_netns(name):
    """Run the block with this thread in network namespace ``name``."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {name}")
        try:
            yield
        finally:
            if _libc.setns(own, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")
    finally:
        os.close(own)
        os.close(target)


def snmp(ns, proto="Tcp"):
    lines = [ln.split() for ln in nsx(ns, "cat", "/proc/net/snmp").stdout.splitlines()
             if ln.startswith(proto + ":")]
    return dict(zip(lines[0][1:], map(int, lines[1][1:])))


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    inv = write_lab_inventory(tmp_path_factory.mktemp("dp"), prefix="dp", base=0, name="dp",
                              names=tuple(NS), dedicate=False)
    assert {r: (inv.host(r).ip, inv.host(r).interface) for r in NS} == {r: (IP[r], "eth0") for r in NS}
    with lab_built(inv, areas=("net",), bridge_netns=BR_NS):  # removes any XDP program left, too
        for role, ns in NS.items():
            assert nsx(ns, "cat", "/sys/class/net/eth0/address").stdout.strip() == MAC[role]
            nsx(ns, "ethtool", "-K", "eth0", "rx", "off")  # (TX is off already: every lab does that)
            nsx(BR_NS, "ethtool", "-K", f"dp-{role}", "rx", "off")
        yield


@pytest.fixture(scope="module")
def compiled(lab):
    """The programs compiled once per configuration for the module (bcc compiles in seconds
    here, in about a minute under emulation: scripts/arm64-check); closed at the end."""
    cache = {}
    try:
        yield cache
    finally:
        for ns, obj in cache.values():
            with in_netns(ns):
                obj.close()


def _fresh(obj):
    """A compiled program as if new: counters zeroed, nothing left in its ring."""
    obj.bpf[b"counters"].clear()
    if getattr(obj, "reader", None) is not None:
        obj.drain()


@pytest.fixture
def skims(compiled):
    """Factory: make(hw=dict(...)) attaches the two programs (compiled once per configuration,
    counters zeroed); always detached after the test."""
    from roles.skim import HardworkerSkim, SensorSkim

    used = []

    def get(key, ns, build):
        if key not in compiled:
            compiled[key] = (ns, build())
        obj = compiled[key][1]
        _fresh(obj)
        used.append((ns, obj))
        with in_netns(ns):
            obj.attach()
        return obj

    def make(**hw_kw):
        kw = dict(interface="eth0", hw_ip=IP["hw"], hw_mac=MAC["hw"], logger_ip=IP["log"],
                  logger_mac=MAC["log"], tos=TOS, port=PORT)
        kw.update(hw_kw)
        hw = get(("hw", tuple(sorted(hw_kw.items()))), NS["hw"], lambda: HardworkerSkim(**kw))
        sen = get(("sen", kw["logger_ip"]), NS["sen"], lambda: SensorSkim(
            interface="eth0", sensor_ip=IP["sen"], hw_ip=IP["hw"], hw_mac=MAC["hw"],
            logger_ip=kw["logger_ip"], tos=TOS, port=PORT))
        return hw, sen

    try:
        yield make
    finally:
        for ns, obj in reversed(used):
            with in_netns(ns):
                obj.detach()


def make_socket(ns, *args):
    with in_netns(ns):
        return socket.socket(*args)


def run_stream(hw, n_records, size, consumer_delay=0.0, timeout=60, logger_ip=IP["log"]):
    """Sensor -> (hardworker XDP) -> logger; returns (sent, logged, skimmed, reassembler)."""
    from roles.reassembly import Reassembler

    payload = b"".join(hashlib.sha256(i.to_bytes(8, "big")).digest() * (size // 32 + 1)
                       for i in range(n_records))
    sent = b"".join(payload[i * size:(i + 1) * size] for i in range(n_records))
    srv = make_socket(NS["log"], socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((logger_ip, PORT))
    srv.listen(1)
    srv.settimeout(timeout)
    logged, skimmed, errors = [], [], []
    ra = Reassembler()
    stop = threading.Event()

    def logger():
        try:
            conn, _ = srv.accept()
            conn.settimeout(timeout)
            with conn:
                while chunk := conn.recv(1 << 16):
                    logged.append(chunk)
        except Exception as exc:
            errors.append(exc)

    def hardworker():
        while not stop.is_set():
            hw.wait(20)
            for key, seq, flags, data, _kind, _base in hw.drain():
                out = ra.feed(key, seq, flags, data)
                if out:
                    skimmed.append(out)
            if consumer_delay:
                time.sleep(consumer_delay)

    threads = [threading.Thread(target=logger), threading.Thread(target=hardworker)]
    for t in threads:
        t.start()
    try:
        cli = make_socket(NS["sen"], socket.AF_INET, socket.SOCK_STREAM)
        cli.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, TOS)
        cli.settimeout(timeout)
        cli.connect((IP["hw"], PORT))
        for i in range(n_records):
            cli.sendall(sent[i * size:(i + 1) * size])
        cli.shutdown(socket.SHUT_WR)
        threads[0].join(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # until the reassembler saw the FIN
            if ra.streams and all(s.ended for s in ra.streams.values()):
                break
            time.sleep(0.05)
        cli.close()
    finally:
        stop.set()
        for t in threads:
            t.join(timeout)
        srv.close()
    assert not errors, errors
    return sent, b"".join(logged), b"".join(skimmed), ra


def test_stream_is_logged_and_skimmed_complete(skims):
    hw, sen = skims()
    hw_before = snmp(NS["hw"])
    sent, logged, skimmed, ra = run_stream(hw, 2000, 1024)
    assert len(logged) == len(sent) and logged == sent
    assert len(skimmed) == len(sent) and skimmed == sent
    (key, st), = ra.streams.items()
    assert key[0] == IP["sen"] and st.ended and st.synced and not st.reset
    assert st.overflow_bytes == 0
    c = hw.counters()
    assert c["captured"] >= 2000 * 1024 // 1448 and c["dropped_oversize"] == 0
    assert c["malformed"] == 0 and c["fragments"] == 0
    assert sen.counters()["rewritten"] > 0
    for ns in (NS["log"], NS["sen"]):
        assert snmp(ns)["InCsumErrors"] == 0, ns
    after = snmp(NS["hw"])
    for k in ("InSegs", "OutSegs", "PassiveOpens", "OutRsts"):
        assert after[k] == hw_before[k], (k, hw_before[k], after[k])


FAR_LOGGER_IP = "10.254.3.4"  # another /16 than the hardworker's: both address halves change


@pytest.mark.skipif(os.environ.get("TCPSKIM_ISOLATED_VM") != "1",
                    reason="sends to an address outside 198.18.0.0/24: runs only inside the "
                           "network-less VM of scripts/arm64-check (TCPSKIM_ISOLATED_VM=1)")
def test_stream_across_a_16_bit_boundary_passes_the_receivers_checksums(skims):
    """Both programs rewrite an address whose two 16-bit halves change (the original
    prototype's bug, and bpf_csum_diff's arch-specific fold): the receiving stacks verify
    every checksum (RX checksum offload is off), so a wrong one is a TcpInCsumErrors count
    and a stalled stream."""
    nsx(NS["log"], "ip", "addr", "add", f"{FAR_LOGGER_IP}/16", "dev", "eth0")
    try:
        # the sensor never ARPs for the far logger (the hardworker forwards): pin the way back
        nsx(NS["log"], "ip", "neigh", "replace", IP["sen"], "lladdr", MAC["sen"], "dev", "eth0",
            "nud", "permanent")
        hw, sen = skims(logger_ip=FAR_LOGGER_IP)
        before = {ns: (snmp(ns), snmp(ns, "Ip")) for ns in (NS["log"], NS["sen"])}
        sent, logged, skimmed, _ = run_stream(hw, 300, 1024, logger_ip=FAR_LOGGER_IP)
        assert logged == sent and skimmed == sent
        assert hw.counters()["forwarded"] > 0 and sen.counters()["rewritten"] > 0
        for ns, (tcp, ip) in before.items():
            assert snmp(ns)["InCsumErrors"] == tcp["InCsumErrors"], ns
            assert snmp(ns, "Ip")["InHdrErrors"] == ip["InHdrErrors"], ns
    finally:
        nsx(NS["log"], "ip", "neigh", "del", IP["sen"], "dev", "eth0", check=False)
        nsx(NS["log"], "ip", "addr", "del", f"{FAR_LOGGER_IP}/16", "dev", "eth0", check=False)


def test_full_ring_drops_and_tcp_retransmits(skims):
    # 4 pages hold ~11 records of 1472 bytes; a consumer that sleeps 20 ms per batch
    hw, _ = skims(ringbuf_bytes=4 * 4096, wakeup="batch")
    sent, logged, skimmed, ra = run_stream(hw, 300, 1024, consumer_delay=0.02)
    assert hw.counters()["dropped_full"] > 0
    assert logged == sent
    assert skimmed == sent
    (st,) = ra.streams.values()
    assert st.ended and st.overflow_bytes == 0


def test_prog_stats(skims):
    from roles import xdp

    hw, _ = skims()
    with xdp.bpf_stats_enabled():
        before = hw.prog_stats()  # the program is reused across tests: count this test's runs
        run_stream(hw, 50, 1024)
        stats = hw.prog_stats()
    assert stats["run_cnt"] - before["run_cnt"] >= 50 * 1024 // 1448
    assert stats["run_time_ns"] > before["run_time_ns"]


# ---- crafted frames -------------------------------------------------------------------------

def _frames():
    from scapy.all import IP as SIP, TCP, Ether, IPOption, Raw

    eth = Ether(dst=MAC["hw"], src=MAC["sen"])
    ok = dict(src=IP["sen"], dst=IP["hw"], tos=TOS)
    seg = TCP(sport=40001, dport=PORT, flags="PA", seq=1000)
    # (name, frame bytes, expected counter deltas)
    return [
        ("short ipv4", bytes(Ether(dst=MAC["hw"], src=MAC["sen"], type=0x0800) / b"\x45\x00\x00"),
         {"malformed": 1}),
        ("ihl past the end", bytes(eth / SIP(**ok, ihl=15, proto=6) / (b"\0" * 20)),
         {"malformed": 1}),
        ("truncated tcp", bytes(eth / SIP(**ok, proto=6) / b"\x9c\x41\x30\x39\x00\x00"),
         {"malformed": 1}),
        ("bad ihl", bytes(eth / SIP(**ok, ihl=4) / seg / b"x"), {"malformed": 1}),
        ("non ipv4", bytes(Ether(dst=MAC["hw"], src=MAC["sen"], type=0x86DD) / (b"\x60" + b"\0" * 60)),
         {"passed": 1}),
        ("wrong tos", bytes(eth / SIP(src=IP["sen"], dst=IP["hw"], tos=0x20) / seg / (b"x" * 10)),
         {"passed": 1}),
        ("wrong port", bytes(eth / SIP(**ok) / TCP(sport=40001, dport=PORT + 1) / b"x"),
         {"passed": 1}),
        ("udp", bytes(eth / SIP(**ok, proto=17) / (b"\0" * 16)), {"passed": 1}),
        ("fragment MF", bytes(eth / SIP(**ok, flags="MF") / seg / (b"x" * 16)), {"fragments": 1}),
        ("fragment offset", bytes(eth / SIP(**ok, frag=10, proto=6) / (b"x" * 16)), {"fragments": 1}),
        ("unmarked fragment", bytes(eth / SIP(src=IP["sen"], dst=IP["hw"], flags="MF") / seg),
         {"passed": 1}),
        ("oversize", bytes(eth / SIP(**ok) / seg / Raw(b"y" * 1449)),
         {"matched": 1, "dropped_oversize": 1}),
        ("tot_len lies", bytes(eth / SIP(**ok, len=1400) / seg / (b"z" * 20)),
         {"matched": 1, "malformed": 1}),
        ("pure ack", bytes(eth / SIP(**ok) / TCP(sport=40002, dport=PORT, flags="A")),
         {"matched": 1, "forwarded": 1}),
        ("ip options", bytes(eth / SIP(**ok, options=[IPOption(b"\x01\x01\x01\x00")])
                             / TCP(sport=40003, dport=PORT, flags="PA", seq=0xFFFFFFF0,
                                   options=[("NOP", None), ("NOP", None), ("Timestamp", (1, 2))])
                             / Raw(b"opt" * 100)),
         {"matched": 1, "captured": 1, "forwarded": 1}),
        ("syn", bytes(eth / SIP(**ok) / TCP(sport=40004, dport=PORT, flags="S", seq=7)),
         {"matched": 1, "captured": 1, "forwarded": 1}),
    ]


def test_crafted_frames(skims):
    from scapy.all import IP as SIP, TCP, Ether

    hw, _ = skims()
    tx = make_socket(NS["sen"], socket.AF_PACKET, socket.SOCK_RAW)
    tx.bind(("eth0", 0))
    rx = make_socket(NS["log"], socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
    rx.bind(("eth0", 0))
    rx.settimeout(0.3)
    try:
        for name, frame, want in _frames():
            while True:  # empty the logger capture
                try:
                    rx.recv(65536, socket.MSG_DONTWAIT)
                except (BlockingIOError, TimeoutError):
                    break
            before = hw.counters()
            tx.send(frame)
            deadline = time.monotonic() + 2.0  # the program runs in softirq, maybe deferred
            while (after := hw.counters()) == before and time.monotonic() < deadline:
                time.sleep(0.01)
            delta = {k: after[k] - before[k] for k in after if after[k] != before[k]}
            strict = {k: v for k, v in delta.items() if k != "passed"}
            assert strict == {k: v for k, v in want.items() if k != "passed"}, (name, delta)
            if "passed" in want:
                assert delta.get("passed", 0) >= want["passed"], (name, delta)
            recs = hw.drain()
            assert len(recs) == want.get("captured", 0), name
            if "forwarded" not in want:
                continue
            # the logger must see the frame rewritten, with valid checksums
            sent = Ether(frame)
            got = None
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:
                pkt = Ether(rx.recv(65536))
                if TCP in pkt and pkt[TCP].sport == sent[TCP].sport:
                    got = pkt
                    break
            assert got is not None, name
            assert got.src == MAC["hw"] and got.dst == MAC["log"]
            assert got[SIP].dst == IP["log"] and got[SIP].src == IP["sen"]
            fixed = Ether(bytes(got))
            del fixed[SIP].chksum, fixed[TCP].chksum
            fixed = Ether(bytes(fixed))
            assert got[SIP].chksum == fixed[SIP].chksum, name
            assert got[TCP].chksum == fixed[TCP].chksum, name
            for key, seq, flags, data, _kind, _base in recs:
                assert key == (IP["sen"], sent[TCP].sport)
                assert seq == sent[TCP].seq and flags == int(sent[TCP].flags)
                assert data == bytes(sent[TCP].payload)
    finally:
        tx.close()
        rx.close()


def test_checksums_across_a_16_bit_boundary():
    """BPF_PROG_TEST_RUN, no traffic: LOGGER_IP in another /16 than HW_IP changes both halves."""
    from scapy.all import IP as SIP, TCP, Ether

    from roles import xdp
    from roles.skim import HardworkerSkim

    hw = HardworkerSkim(interface="lo", hw_ip="198.18.0.211", hw_mac=MAC["hw"],
                        logger_ip="10.254.3.4", logger_mac=MAC["log"], tos=TOS, port=PORT)
    try:
        fd = hw.bpf.load_func(b"xdp_hardworker", hw.bpf.XDP).fd
        for seq, body in ((0, b""), (0xFFFFFFFF, b"a" * 1448), (12345, b"\xff" * 333)):
            frame = (Ether(dst=MAC["hw"], src=MAC["sen"])
                     / SIP(src="198.18.0.210", dst="198.18.0.211", tos=TOS)
                     / TCP(sport=50000, dport=PORT, seq=seq, flags="S" if not body else "PA")
                     / body)
            action, out, _ = xdp.prog_test_run(fd, bytes(frame))
            assert action == 3  # XDP_TX
            got = Ether(out)
            fixed = Ether(bytes(got))
            del fixed[SIP].chksum, fixed[TCP].chksum
            fixed = Ether(bytes(fixed))
            assert got[SIP].dst == "10.254.3.4"
            assert (got[SIP].chksum, got[TCP].chksum) == (fixed[SIP].chksum, fixed[TCP].chksum)
        assert [r[1] for r in hw.drain()] == [0, 0xFFFFFFFF, 12345]
    finally:
        hw.close()


def test_attach_replaces_stale_and_detach_is_idempotent(skims):
    from roles import xdp

    hw, _ = skims()
    with in_netns(NS["hw"]):
        first = xdp.attached_prog("eth0")
        assert first and first["mode"] == "generic"
        info = hw.attach()  # the program already there counts as stale and is replaced
        assert info["stale"]["prog_id"] == first["prog_id"]
        assert xdp.attached_prog("eth0")["mode"] == "generic"
        hw.detach()
        hw.detach()
        assert xdp.attached_prog("eth0") is None
        assert xdp.detach_any("eth0") is None
        with pytest.raises(ValueError, match="interface"):
            xdp.attached_prog("eth0; reboot")


def test_close_without_attach_leaves_other_programs_alone(skims):
    """A role stopped before it attached (SIGTERM while compiling) must not detach what
    another program put on the interface."""
    from roles import xdp
    from roles.skim import HardworkerSkim

    hw, _ = skims()
    with in_netns(NS["hw"]):
        theirs = xdp.attached_prog("eth0")["prog_id"]
        mine = HardworkerSkim(interface="eth0", hw_ip=IP["hw"], hw_mac=MAC["hw"], logger_ip=IP["log"],
                              logger_mac=MAC["log"], tos=TOS, port=PORT)
        mine.close()
        assert xdp.attached_prog("eth0")["prog_id"] == theirs
        assert mine.prog_stats() == {}  # closed: the sampler gets nothing, not a stale fd


def test_compile_flags_validation():
    from roles import xdp

    good = dict(SKIM_TOS=0x68, SKIM_PORT=12345, HW_IP="198.18.0.211", HW_MAC="02:00:00:00:00:01",
                SKIM_RINGBUF_BYTES=1 << 20, SKIM_CAPTURE=1448, SKIM_WAKEUP=1)
    assert "-DHW_IP=0xc61200d3U" in xdp.compile_flags(**good)
    for key, bad in (("SKIM_TOS", 0x69), ("SKIM_PORT", 0), ("HW_IP", "198.18.0.300"),
                     ("HW_MAC", "02:00:00:00:00:01 -DX"), ("SKIM_RINGBUF_BYTES", 3 << 20),
                     ("SKIM_RINGBUF_BYTES", 1024), ("SKIM_CAPTURE", "1448"), ("SKIM_WAKEUP", 5)):
        with pytest.raises(ValueError, match=key):
            xdp.compile_flags(**{**good, key: bad})
