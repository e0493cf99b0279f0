"""The compiled-program cache (roles/bpfcache.py, bpfobj.py, bpfcompile.py, bpftable.py).

A hit loads without bcc and the program acts exactly as bcc's own compile of the same source
and flags (BPF_PROG_TEST_RUN on crafted frames: action, output bytes, ring records,
counters); a change of source, flags, kernel or bcc version misses; a corrupt entry is
compiled again, never a crash. Root and bcc, no namespaces, no attach: no lab lock.
"""

import ctypes
import json
import os
import shutil
import subprocess
import sys

import pytest

from roles import bpfcache

try:
    import bcc  # noqa: F401
    HAVE_BCC = True
except Exception:  # ImportError, or bcc failing without kernel headers
    HAVE_BCC = False

needs_bpf = pytest.mark.skipif(os.geteuid() != 0 or not HAVE_BCC, reason="needs root (BPF) and bcc")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAC = {"sen": "02:00:c6:12:00:d2", "hw": "02:00:c6:12:00:d3", "log": "02:00:c6:12:00:d4"}
SEN_IP, HW_IP, LOGGER_IP = "198.18.0.210", "198.18.0.211", "10.254.3.4"
TOS, PORT = 0x68, 12345
HW = dict(interface="lo", hw_ip=HW_IP, hw_mac=MAC["hw"], logger_ip=LOGGER_IP, logger_mac=MAC["log"],
          tos=TOS, port=PORT, wakeup="batch")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    d = tmp_path / "bpf-cache"
    monkeypatch.setenv("TCPSKIM_BPF_CACHE", str(d))
    return d


def _segment(payload=b"", seq=1000, flags="PA", **ip):
    from scapy.all import IP, TCP, Ether

    ipkw = dict(src=SEN_IP, dst=HW_IP, tos=TOS)
    ipkw.update(ip)
    return bytes(Ether(dst=MAC["hw"], src=MAC["sen"]) / IP(**ipkw)
                 / TCP(sport=40001, dport=PORT, seq=seq, flags=flags) / payload)


FRAMES = [_segment(b"r" * 1448, seq=0xFFFFFFFF), _segment(flags="S", seq=7), _segment(flags="A"),
          _segment(b"y" * 1449), _segment(b"z" * 20, len=1400), _segment(b"x", tos=0x20),
          _segment(b"x", dst=SEN_IP), _segment(b"q" * 100, seq=5, flags="FA")]


def _bcc_hardworker(flags):
    """bcc's own compile of the same program and flags, as the roles loaded it before."""
    from bcc import BPF

    from roles import bpfmap, xdp

    b = BPF(src_file=os.path.join(xdp.BPF_DIR, "hardworker.c").encode(), cflags=flags)
    bpfmap.fill(b[b"skim_addrs"].map_fd, [(HW_IP, MAC["hw"]), (LOGGER_IP, MAC["log"])])
    return b, b.load_func(b"xdp_hardworker", BPF.XDP).fd


def _run(fd, reader):
    from roles import xdp

    out = []
    for frame in FRAMES:
        action, data, _ = xdp.prog_test_run(fd, frame)
        out.append((action, data, [bytes(r) for r in reader.drain()]))
    return out


def _counters(table, names):
    return {n: int(sum(table[ctypes.c_int(i)])) for i, n in enumerate(names)}


@needs_bpf
@pytest.mark.parametrize("kw", [{}, {"wakeup": "coalesce", "wake_records": 20}])
def test_a_hit_acts_exactly_as_a_fresh_bcc_compile(cache, kw):
    from roles.ringbuf import RingReader
    from roles.skim import HardworkerSkim
    from roles.vocab import HW_COUNTERS

    HardworkerSkim(**{**HW, **kw}).close()  # a miss: compiled and stored
    hw = HardworkerSkim(**{**HW, **kw})
    b, bfd = _bcc_hardworker(hw.flags)
    events = b[b"events"]
    breader = RingReader(events.map_fd, int(events.max_entries))
    try:
        assert hw.bpf.cache == "hit"
        fd = hw.bpf.load_func(b"xdp_hardworker", hw.bpf.XDP).fd
        ours, theirs = _run(fd, hw.reader), _run(bfd, breader)
        assert ours == theirs
        assert [a for a, _, _ in ours] == [3, 3, 3, 1, 1, 2, 2, 3]  # the cases of test_verifier
        assert hw.counters() == _counters(b[b"counters"], HW_COUNTERS) and hw.counters()["captured"] == 3
    finally:
        breader.close()
        b.cleanup()
        hw.close()


@needs_bpf
def test_a_hit_of_the_sensor_acts_as_bcc(cache):
    from bcc import BPF
    from scapy.all import IP, TCP, Ether

    from roles import bpfmap, xdp
    from roles.skim import SensorSkim
    from roles.vocab import SENSOR_COUNTERS

    kw = dict(interface="lo", sensor_ip=SEN_IP, hw_ip=HW_IP, hw_mac=MAC["hw"], logger_ip=LOGGER_IP,
              tos=TOS, port=PORT)
    SensorSkim(**kw).close()
    s = SensorSkim(**kw)
    b = BPF(src_file=os.path.join(xdp.BPF_DIR, "sensor.c").encode(), cflags=s.flags)
    try:
        bpfmap.fill(b[b"skim_addrs"].map_fd, [(HW_IP, MAC["hw"])])
        fds = (s.bpf.load_func("xdp_sensor", s.bpf.XDP).fd, b.load_func(b"xdp_sensor", BPF.XDP).fd)
        for seq, flags, body, sport in ((1, "SA", b"", PORT), (5, "PA", b"\xff" * 333, PORT), (9, "A", b"x", PORT + 1)):
            reply = bytes(Ether(dst=MAC["sen"], src=MAC["log"]) / IP(src=LOGGER_IP, dst=SEN_IP)
                          / TCP(sport=sport, dport=40001, seq=seq, flags=flags) / body)
            ours, theirs = (xdp.prog_test_run(fd, reply)[:2] for fd in fds)
            assert ours == theirs
        assert s.counters() == _counters(b[b"counters"], SENSOR_COUNTERS) and s.counters()["rewritten"] == 2
        assert s.bpf.cache == "hit"
    finally:
        b.cleanup()
        s.close()


_NO_BCC = """
import sys
from roles.skim import HardworkerSkim
hw = HardworkerSkim(**{kw})
print(hw.bpf.cache, "bcc" in [m.split(".")[0] for m in sys.modules if sys.modules[m] is not None])
hw.close()
"""


@needs_bpf
def test_a_hit_needs_no_bcc_and_a_miss_does(cache, monkeypatch):
    from roles.skim import HardworkerSkim

    HardworkerSkim(**HW).close()  # fills the cache
    r = subprocess.run([sys.executable, "-c", _NO_BCC.replace("{kw}", repr(HW))], cwd=ROOT,
                       capture_output=True, text=True, env={**os.environ, "TCPSKIM_BPF_CACHE": str(cache)})
    assert r.returncode == 0 and r.stdout.split() == ["hit", "False"], r.stderr

    import bcc

    def no_compile(*a, **k):
        raise AssertionError("bcc compiled on a hit")

    monkeypatch.setattr(bcc, "BPF", no_compile)
    hw = HardworkerSkim(**HW)
    assert hw.bpf.cache == "hit"
    hw.close()
    with pytest.raises(AssertionError, match="bcc compiled"):  # other flags: a miss compiles
        HardworkerSkim(**{**HW, "port": PORT + 1})


def test_the_key_changes_with_source_headers_flags_kernel_and_bcc(tmp_path, monkeypatch):
    src = tmp_path / "bpf"
    shutil.copytree(os.path.join(ROOT, "bpf"), src)
    prog = str(src / "hardworker.c")
    flags = [f"-I{src}", "-DSKIM_PORT=12345"]
    base = bpfcache.key(prog, flags)
    assert bpfcache.key(prog, list(flags)) == base
    names = {os.path.basename(p) for p in bpfcache.sources(prog)}
    assert {"hardworker.c", "skim.h", "ring.h", "deliver.h"} <= names and "sensor.c" not in names
    keys = {"flags": bpfcache.key(prog, flags + ["-DSKIM_WAKEUP=1"])}
    with monkeypatch.context() as m:
        m.setattr(bpfcache, "kernel", lambda: "6.12.0-other #1 SMP aarch64")
        keys["kernel"] = bpfcache.key(prog, flags)
    with monkeypatch.context() as m:
        m.setattr(bpfcache, "bcc_version", lambda: "0.31.0")
        keys["bcc"] = bpfcache.key(prog, flags)
    with monkeypatch.context() as m:
        m.setattr(bpfcache, "FORMAT", bpfcache.FORMAT + 1)
        keys["format"] = bpfcache.key(prog, flags)
    (src / "ring.h").write_text((src / "ring.h").read_text() + "\n/* changed */\n")  # a header, two deep
    keys["header"] = bpfcache.key(prog, flags)
    (src / "hardworker.c").write_text((src / "hardworker.c").read_text() + "\n")
    keys["source"] = bpfcache.key(prog, flags)
    assert base not in keys.values() and len(set(keys.values())) == len(keys), keys


@needs_bpf
def test_a_changed_kernel_or_bcc_misses_and_prunes_the_old_entry(cache, monkeypatch):
    from roles.skim import SensorSkim

    kw = dict(interface="lo", sensor_ip=SEN_IP, hw_ip=HW_IP, hw_mac=MAC["hw"], logger_ip=LOGGER_IP,
              tos=TOS, port=PORT)
    SensorSkim(**kw).close()
    old = set(os.listdir(cache))
    monkeypatch.setattr(bpfcache, "bcc_version", lambda: "9.9.9")
    s = SensorSkim(**kw)
    try:
        assert s.bpf.cache == "compiled"
        assert len(os.listdir(cache)) == 1 and not old & set(os.listdir(cache))  # the old one pruned
    finally:
        s.close()


def _corrupt_ways(path):
    text = path.read_text()
    entry = json.loads(text)
    yield "truncated", text[: len(text) // 2]
    yield "not json", "\0\1garbage"
    yield "not an object", "[1, 2]"
    flipped = json.loads(text)
    prog = next(iter(flipped["progs"].values()))
    prog["insns"] = ("A" if prog["insns"][0] != "A" else "B") + prog["insns"][1:]
    yield "a byte changed", json.dumps(flipped)  # digest no longer matches
    bad = dict(entry, progs={n: dict(p, insns="////" * 8, relocs=[]) for n, p in entry["progs"].items()})
    bad["digest"] = bpfcache._digest(bad)  # consistent, but the kernel refuses the bytecode
    yield "bytecode the kernel refuses", json.dumps(bad)
    gone = dict(entry, maps=[])
    gone["digest"] = bpfcache._digest(gone)
    yield "a map missing", json.dumps(gone)  # a reference to no map
    far = dict(entry, progs={n: dict(p, relocs=[[10 ** 6, 0]]) for n, p in entry["progs"].items()})
    far["digest"] = bpfcache._digest(far)
    yield "a reference past the end", json.dumps(far)


@needs_bpf
def test_a_corrupt_entry_is_compiled_again(cache, monkeypatch):
    """Every way: the loader drops the entry and compiles (clang's output is replayed after the
    first case: each compile costs seconds), the role gets a working program, a good entry is back."""
    import copy

    from roles import bpfcompile
    from roles.skim import SensorSkim

    kw = dict(interface="lo", sensor_ip=SEN_IP, hw_ip=HW_IP, hw_mac=MAC["hw"], logger_ip=LOGGER_IP,
              tos=TOS, port=PORT)
    compiled, real = [], bpfcompile.compile_entry

    def compile_once(path, flags):
        if not compiled:
            compiled.append(real(path, flags))
        compiled.append(None)
        return copy.deepcopy(compiled[0])

    monkeypatch.setattr(bpfcompile, "compile_entry", compile_once)
    SensorSkim(**kw).close()
    (path,) = cache.iterdir()
    good = path.read_text()
    for n, (what, text) in enumerate(list(_corrupt_ways(path))):
        path.write_text(text)
        s = SensorSkim(**kw)
        try:
            assert s.bpf.cache == "compiled" and len(compiled) == n + 3, what
            assert s.counters()["rewritten"] == 0
        finally:
            s.close()
        assert bpfcache.lookup(path.name[:-5]) is not None, what  # a good entry again
    assert json.loads(path.read_text())["progs"] == json.loads(good)["progs"]


def test_only_map_references_are_relocated():
    import struct

    from roles.bpfobj import map_relocs

    ld = lambda src, imm: struct.pack("<BBhi", 0x18, src << 4 | 1, 0, imm) + bytes(8)  # noqa: E731
    exit_ = struct.pack("<BBhi", 0x95, 0, 0, 0)
    assert map_relocs(ld(1, 7) + exit_ + ld(2, 9) + ld(0, 5) + exit_) == [(0, 7), (3, 9)]
    with pytest.raises(ValueError, match="src_reg 4"):
        map_relocs(ld(4, 1) + exit_)


def test_table_types_decode_as_bccs():
    import ctypes as ct

    from roles.bpftable import decode_type

    t = decode_type(["skim_slot", [["seq", "unsigned long long"], ["len", "unsigned int"],
                                   ["data", "char", [16]], ["", [["a", "int"], ["b", "unsigned int"]], "union"]],
                     "struct"])
    assert ct.sizeof(t) == 32
    v = t(seq=1, len=2)
    v.a = -1
    assert (v.seq, v.len, v.b, t.data.size) == (1, 2, 0xFFFFFFFF, 16)
    with pytest.raises(ValueError, match="cannot decode"):
        decode_type(["x", [["f", "int", "weird"]], "struct"])
