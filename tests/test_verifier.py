"""The running kernel's verifier accepts both XDP programs, and they act right, without a network.

Verifiers differ by kernel (6.1's rejected a shape 6.18's accepted), so every kernel the host
half supports must load ``bpf/hardworker.c`` and ``bpf/sensor.c`` with real constants. Here:
one test per program that fails with the verifier's log when the kernel rejects it, then
BPF_PROG_TEST_RUN (``xdp.prog_test_run``) on crafted frames: the action, the rewritten frame
with valid checksums across a /16, the records the ring reader gets from the mapped ring
(page size as the kernel has it: 4 or 16 KiB), and the counting rule of bpf/ring.h: every
crafted frame counts exactly one outcome counter (a mutated program that counts two is caught).
No namespace, no attach, no traffic: needs only root and bcc, so no lab lock. ``scripts/arm64-check`` runs this module on Debian's arm64 kernels.

Each program is compiled once per configuration for the module (compiling is 2 s here and
about a minute under emulation).
"""

import mmap
import os
import struct

import pytest

try:
    import bcc  # noqa: F401
    HAVE_BCC = True
except Exception:  # ImportError, or bcc failing without kernel headers
    HAVE_BCC = False

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (BPF)"),
    pytest.mark.skipif(not HAVE_BCC, reason="bcc is not importable by this python"),
]

XDP_DROP, XDP_PASS, XDP_TX = 1, 2, 3
MAC = {"sen": "02:00:c6:12:00:d2", "hw": "02:00:c6:12:00:d3", "log": "02:00:c6:12:00:d4"}
SEN_IP, HW_IP = "198.18.0.210", "198.18.0.211"
LOGGER_IP = "10.254.3.4"  # another /16: both halves of the address change (no traffic is sent)
TOS, PORT = 0x68, 12345
# Smallest ring the runtime accepts on any page size here: one 16 KiB page, or 4 pages of 4 KiB.
SMALL_RING = max(16384, mmap.PAGESIZE)


def _hardworker(**kw):
    from roles.skim import HardworkerSkim

    args = dict(interface="lo", hw_ip=HW_IP, hw_mac=MAC["hw"], logger_ip=LOGGER_IP,
                logger_mac=MAC["log"], tos=TOS, port=PORT, wakeup="batch")
    args.update(kw)
    return HardworkerSkim(**args)


def _prog_fd(skim, name):
    """Load (verify) the program; a rejection fails the test with bcc's verifier log."""
    try:
        return skim.bpf.load_func(name.encode(), skim.bpf.XDP).fd
    except Exception as exc:  # bcc raises Exception("Failed to load BPF program ...")
        pytest.fail(f"the verifier of kernel {os.uname().release} rejected {name}: {exc}")


@pytest.fixture(scope="module")
def hw():
    skim = _hardworker()
    yield skim
    skim.close()


@pytest.fixture(scope="module")
def hw_small():
    skim = _hardworker(ringbuf_bytes=SMALL_RING)
    yield skim
    skim.close()


@pytest.fixture(scope="module")
def sensor():
    from roles.skim import SensorSkim

    skim = SensorSkim(interface="lo", sensor_ip=SEN_IP, hw_ip=HW_IP, hw_mac=MAC["hw"],
                      logger_ip=LOGGER_IP, tos=TOS, port=PORT)
    yield skim
    skim.close()


def _segment(payload=b"", seq=1000, flags="PA", sport=40001, **ip):
    from scapy.all import IP, TCP, Ether

    ipkw = dict(src=SEN_IP, dst=HW_IP, tos=TOS)
    ipkw.update(ip)
    return bytes(Ether(dst=MAC["hw"], src=MAC["sen"]) / IP(**ipkw)
                 / TCP(sport=sport, dport=PORT, seq=seq, flags=flags) / payload)


def _checksums_valid(frame):
    from scapy.all import IP, TCP, Ether

    got = Ether(frame)
    fixed = got.copy()
    del fixed[IP].chksum, fixed[TCP].chksum
    fixed = Ether(bytes(fixed))
    return (got[IP].chksum, got[TCP].chksum) == (fixed[IP].chksum, fixed[TCP].chksum)


def test_hardworker_program_passes_the_verifier(hw):
    assert _prog_fd(hw, "xdp_hardworker") > 0


def test_hardworker_with_the_largest_capture_passes_the_verifier():
    """SKIM_CAPTURE bounds the helper's length: the largest value the runtime allows must
    verify as well as the default."""
    skim = _hardworker(capture_bytes=9000)
    try:
        assert _prog_fd(skim, "xdp_hardworker") > 0
    finally:
        skim.close()


def test_sensor_program_passes_the_verifier(sensor):
    assert _prog_fd(sensor, "xdp_sensor") > 0


def test_hardworker_actions_on_crafted_frames(hw):
    from roles import xdp
    from scapy.all import IP, TCP, Ether

    fd = _prog_fd(hw, "xdp_hardworker")
    hw.drain()
    cases = [  # (frame, action, records)
        (_segment(b"r" * 1448, seq=0xFFFFFFFF), XDP_TX, 1),
        (_segment(flags="S", seq=7), XDP_TX, 1),
        (_segment(flags="A"), XDP_TX, 0),  # pure ACK: forwarded, no record
        (_segment(b"y" * 1449), XDP_DROP, 0),  # larger than the capture: never forwarded
        (_segment(b"z" * 20, len=1400), XDP_DROP, 0),  # tot_len lies
        (_segment(b"x", tos=0x20), XDP_PASS, 0),  # no marker
        (_segment(b"x", dst=SEN_IP), XDP_PASS, 0),  # not to the hardworker
    ]
    for frame, action, records in cases:
        got, out, _ = xdp.prog_test_run(fd, frame)
        assert got == action, (Ether(frame).summary(), got)
        recs = hw.drain()
        assert len(recs) == records, Ether(frame).summary()
        if action != XDP_TX:
            continue
        sent, fwd = Ether(frame), Ether(out)
        assert (fwd.src, fwd.dst) == (MAC["hw"], MAC["log"])
        assert (fwd[IP].src, fwd[IP].dst) == (SEN_IP, LOGGER_IP)
        assert _checksums_valid(out), fwd.summary()
        for key, seq, flags, data, _kind, _base in recs:
            assert key == (SEN_IP, sent[TCP].sport) and seq == sent[TCP].seq
            assert flags == int(sent[TCP].flags) and data == bytes(sent[TCP].payload)


def test_sensor_rewrites_the_loggers_replies(sensor):
    from roles import xdp
    from scapy.all import IP, TCP, Ether

    fd = _prog_fd(sensor, "xdp_sensor")
    for seq, flags, body in ((1, "SA", b""), (0xFFFFFFF0, "A", b""), (5, "PA", b"\xff" * 333)):
        reply = bytes(Ether(dst=MAC["sen"], src=MAC["log"]) / IP(src=LOGGER_IP, dst=SEN_IP)
                      / TCP(sport=PORT, dport=40001, seq=seq, flags=flags) / body)
        action, out, _ = xdp.prog_test_run(fd, reply)
        assert action == XDP_PASS
        got = Ether(out)
        assert got.src == MAC["hw"] and got[IP].src == HW_IP and got[IP].dst == SEN_IP
        assert _checksums_valid(out), got.summary()
    other = bytes(Ether(dst=MAC["sen"], src=MAC["log"]) / IP(src=LOGGER_IP, dst=SEN_IP)
                  / TCP(sport=PORT + 1, dport=40001) / b"x")
    action, out, _ = xdp.prog_test_run(fd, other)
    assert action == XDP_PASS and out == other  # not the skimmed port: untouched
    c = sensor.counters()
    assert c["rewritten"] == 3 and c["malformed"] == 0


def test_ring_reader_wraps_the_ring_many_times_in_order(hw_small):
    """Records through a ring of 16 KiB (11 records of 1448 bytes) over ten times its size:
    records straddle the end of the data area (read through the second mapping), the reader's
    consumer position lets the producer reuse the space, none is lost or out of order."""
    from roles import xdp

    fd = _prog_fd(hw_small, "xdp_hardworker")
    hw_small.drain()
    seen = []
    for seq in range(150):
        body = struct.pack("!I", seq) * (1448 // 4)
        action, _, _ = xdp.prog_test_run(fd, _segment(body, seq=seq))
        assert action == XDP_TX, seq
        if seq % 7 == 6:  # drain in batches of 7: positions wrap at varying offsets
            seen += hw_small.drain()
    seen += hw_small.drain()
    assert [r[1] for r in seen] == list(range(150))
    assert all(r[3] == struct.pack("!I", r[1]) * 362 for r in seen)
    assert hw_small.reader.records >= 150 and not hw_small.reader.pending()


def test_ring_reader_fences_on_weakly_ordered_cpus():
    """On arm64 the reader's fence is the executable `dmb ish` stub (the fallbacks would be a
    syscall or, on x86-64, nothing); it was called once when made, so it is valid code."""
    import ctypes
    import platform

    from roles import ringbuf

    if platform.machine() == "aarch64":
        assert isinstance(ringbuf.fence, ctypes._CFuncPtr)
    elif platform.machine() == "x86_64":
        assert ringbuf.fence() is None and ringbuf.fence.__name__ == "<lambda>"
    else:
        pytest.skip(f"no expectation for {platform.machine()}")
    ringbuf.fence()


def test_full_ring_drops_and_the_reader_gets_every_captured_record(hw_small):
    """A ring with no room drops (no ACK without capture); what was captured is all there."""
    from roles import xdp

    fd = _prog_fd(hw_small, "xdp_hardworker")
    hw_small.drain()
    before = hw_small.counters()
    actions = [xdp.prog_test_run(fd, _segment(b"f" * 1448, seq=s))[0] for s in range(40)]
    captured = actions.count(XDP_TX)
    assert XDP_DROP in actions and 0 < captured < 40
    assert actions == [XDP_TX] * captured + [XDP_DROP] * (40 - captured)  # full stays full
    after = hw_small.counters()
    assert after["dropped_full"] - before["dropped_full"] == 40 - captured
    assert [r[1] for r in hw_small.drain()] == list(range(captured))


@pytest.mark.parametrize("spec", ["filter:outside:-1500..1500", "filter:deadband:300",
                                  "filter:every:3", "latest:10"])
def test_policy_programs_pass_the_verifier_and_evaluate_in_order(spec):
    """Every delivery policy's program loads; on crafted frames it captures a matching record
    whole, forwards a non-matching one uncaptured, drops a segment behind a hole, and
    forwards a retransmission of what it evaluated (bpf/deliver.h); two of them also count one
    outcome per frame."""
    from roles import delivery, vocab, xdp
    from roles.record import HEADER_SIZE, encode, signal
    from roles.vocab import KIND_RECORD

    policy = delivery.parse(spec)
    skim = _hardworker(deliver=policy, record_len=HEADER_SIZE + 1024)
    try:
        fd = _prog_fd(skim, "xdp_hardworker")
        isn = 5000
        assert xdp.prog_test_run(fd, _segment(flags="S", seq=isn))[0] == XDP_TX
        m = policy.matcher()
        wanted = [s for s in range(6) if m.match(s, signal(s))]
        step = HEADER_SIZE + 1024
        rec = lambda s: _segment(encode(1, s, 1, 1024), seq=isn + 1 + s * step)  # noqa: E731
        assert xdp.prog_test_run(fd, rec(2))[0] == XDP_DROP  # behind a hole: comes again
        for s in range(6):
            assert xdp.prog_test_run(fd, rec(s))[0] == XDP_TX
        assert xdp.prog_test_run(fd, rec(1))[0] == XDP_TX  # a retransmission: forwarded
        got = skim.drain()
        whole = [r for r in got if r[4] == KIND_RECORD]
        if policy.kind == "latest":
            assert not whole and skim.mailbox.read(1)[0] == 6  # six records into sensor 1's slot
            # only that slot counts as changed, until its update count is the one seen
            assert skim.mailbox.changed({}) == [1] and skim.mailbox.changed({1: 6}) == []
            assert skim.mailbox.changed({1: 5}) == [1]
        else:
            assert [int.from_bytes(r[3][12:20], "big") for r in whole] == wanted
        c = skim.counters()
        assert c["dropped_order"] == 1, c
        if spec in COUNTED:  # the same program, another flow: the counting rule
            _check_counting(skim, "xdp_hardworker", _policy_frames(policy.kind),
                            vocab.HW_OUTCOMES, vocab.HW_EVENTS)
    finally:
        skim.close()


def ring_seqs(skim):
    """The seq of every record in the ring, drained: one per record the program wrote (the
    role's drain() joins contiguous segments of a flow into one entry)."""
    from roles.vocab import RING_RECORD

    return [RING_RECORD.unpack_from(r)[4] for r in skim.reader.drain()]


def test_coalesce_program_wakes_the_consumer_once_n_records_wait():
    """wakeup coalesce:4: the program submits without a wake-up for three records and forces
    one with the fourth, whenever the consumer drains (here late, after six): the
    edge-triggered reader sees exactly the wake-ups the program chose, no more."""
    from roles import xdp

    skim = _hardworker(wakeup="coalesce", wake_records=4)
    try:
        fd = _prog_fd(skim, "xdp_hardworker")
        woken = []
        for seq in range(12):
            assert xdp.prog_test_run(fd, _segment(b"c" * 1024, seq=seq * 1024))[0] == XDP_TX
            woken.append(skim.reader.wait(0))
            if seq == 5:  # the consumer drains late: 6 records, then the count restarts
                assert ring_seqs(skim) == [q * 1024 for q in range(6)]
        assert [i for i, w in enumerate(woken) if w] == [3, 7, 11]
        assert len(ring_seqs(skim)) == 6 and not skim.reader.pending()
        assert skim.counters()["captured"] == 12
    finally:
        skim.close()


def test_coalesce_needs_its_record_count():
    with pytest.raises(ValueError, match="wake_records"):
        _hardworker(wakeup="coalesce")
    with pytest.raises(ValueError, match="wake_records"):
        _hardworker(wakeup="batch", wake_records=4)


# ---- the counting rule: one outcome per frame, events on top (bpf/ring.h) -------------------

def _frame(payload=b"", **ip):
    """A frame to the hardworker's MAC: TCP (unless ``proto`` says otherwise) with any IPv4
    fields, the payload as given (no TCP header added)."""
    from scapy.all import IP, Ether

    return bytes(Ether(dst=MAC["hw"], src=MAC["sen"]) / IP(**{"proto": 6, **ip}) / payload)


def _hw_frames():
    """(name, frame, action, outcome, events) covering every outcome of the all program."""
    from scapy.all import IP, TCP, Ether

    ok = dict(src=SEN_IP, dst=HW_IP, tos=TOS)
    seg = bytes(TCP(sport=40001, dport=PORT, flags="PA", seq=1000))
    m = {"matched": 1}
    cap = {"matched": 1, "captured": 1}
    return [
        ("non ipv4", bytes(Ether(dst=MAC["hw"], type=0x86DD) / (b"\x60" + b"\0" * 60)),
         XDP_PASS, "passed", {}),
        ("short ipv4", bytes(Ether(dst=MAC["hw"], type=0x0800) / b"\x45\x00\x00"),
         XDP_PASS, "malformed", {}),
        ("ip version 6", _frame(seg, version=6, **ok), XDP_PASS, "malformed", {}),
        ("ihl 4", _frame(seg, ihl=4, **ok), XDP_PASS, "malformed", {}),
        ("ihl past the end", _frame(b"\0" * 20, ihl=15, **ok), XDP_PASS, "malformed", {}),
        ("udp", _frame(b"\0" * 16, proto=17, **ok), XDP_PASS, "passed", {}),
        ("no marker", _segment(b"x", tos=0x20), XDP_PASS, "passed", {}),
        ("not to the hardworker", _segment(b"x", dst=SEN_IP), XDP_PASS, "passed", {}),
        ("unmarked fragment", _frame(seg, src=SEN_IP, dst=HW_IP, flags="MF"), XDP_PASS, "passed", {}),
        ("fragment MF", _frame(seg + b"x" * 16, flags="MF", **ok), XDP_DROP, "fragments", {}),
        ("fragment offset", _frame(b"x" * 16, frag=10, **ok), XDP_DROP, "fragments", {}),
        ("truncated tcp", _frame(seg[:6], **ok), XDP_PASS, "malformed", {}),
        ("doff 4", _frame(bytes(TCP(dport=PORT, dataofs=4)), **ok), XDP_PASS, "malformed", {}),
        ("other port", _frame(bytes(TCP(dport=PORT + 1) / b"x"), **ok), XDP_PASS, "passed", {}),
        ("tot_len past the frame", _segment(b"z" * 20, len=1400), XDP_DROP, "malformed", m),
        ("tot_len inside the headers", _segment(b"z" * 20, len=30), XDP_DROP, "malformed", m),
        ("oversize", _segment(b"y" * 1449), XDP_DROP, "dropped_oversize", m),
        ("pure ack", _segment(flags="A"), XDP_TX, "forwarded", m),
        ("ecn bits set", _segment(b"e" * 10, tos=TOS | 3), XDP_TX, "forwarded", cap),
        ("syn", _segment(flags="S"), XDP_TX, "forwarded", cap),
        ("fin", _segment(flags="FA"), XDP_TX, "forwarded", cap),
        ("rst", _segment(flags="R"), XDP_TX, "forwarded", cap),
        ("data", _segment(b"d" * 1448), XDP_TX, "forwarded", cap),
        ("ethernet padding", _segment(b"p") + b"\0" * 6, XDP_TX, "forwarded", cap),
    ]


def _sensor_frames():
    from scapy.all import IP, TCP, Ether

    eth = Ether(dst=MAC["sen"], src=MAC["log"])
    ok = dict(src=LOGGER_IP, dst=SEN_IP, proto=6)
    reply = bytes(TCP(sport=PORT, dport=40001, flags="A"))
    return [
        ("non ipv4", bytes(eth / (b"\x60" + b"\0" * 60)), XDP_PASS, "passed", {}),
        ("short ipv4", bytes(Ether(dst=MAC["sen"], type=0x0800) / b"\x45\x00\x00"),
         XDP_PASS, "malformed", {}),
        ("ihl 4", bytes(eth / IP(ihl=4, **ok) / reply), XDP_PASS, "malformed", {}),
        ("udp", bytes(eth / IP(**{**ok, "proto": 17}) / (b"\0" * 16)), XDP_PASS, "passed", {}),
        ("not from the logger", bytes(eth / IP(src=HW_IP, dst=SEN_IP, proto=6) / reply), XDP_PASS, "passed", {}),
        ("not to the sensor", bytes(eth / IP(src=LOGGER_IP, dst=HW_IP, proto=6) / reply), XDP_PASS, "passed", {}),
        ("fragment", bytes(eth / IP(frag=10, **ok) / (b"x" * 16)), XDP_PASS, "passed", {}),
        ("truncated tcp", bytes(eth / IP(**ok) / reply[:6]), XDP_PASS, "malformed", {}),
        ("doff 4", bytes(eth / IP(**ok) / TCP(sport=PORT, dataofs=4)), XDP_PASS, "malformed", {}),
        ("other port", bytes(eth / IP(**ok) / TCP(sport=PORT + 1) / b"x"), XDP_PASS, "passed", {}),
        ("reply", bytes(eth / IP(**ok) / reply), XDP_PASS, "rewritten", {}),
        ("reply with data", bytes(eth / IP(**ok) / TCP(sport=PORT, flags="PA") / (b"r" * 300)),
         XDP_PASS, "rewritten", {}),
    ]


def _check_counting(skim, fn, cases, outcomes, events, drain=True):
    """Each frame through BPF_PROG_TEST_RUN counts exactly its one outcome and its events, and
    the outcomes sum to the frames run; with ``drain``, captured events match the records the
    ring got for each frame."""
    from roles import vocab, xdp

    fd = _prog_fd(skim, fn)
    ring = getattr(skim, "drain", lambda: [])
    ring()
    start = skim.counters()
    for name, frame, action, outcome, evs in cases:
        assert outcome in outcomes and set(evs) <= set(events), name  # the cases themselves
        before = skim.counters()
        got = xdp.prog_test_run(fd, frame)[0]
        after = skim.counters()
        delta = {k: after[k] - before[k] for k in after if after[k] != before[k]}
        assert got == action, (name, got)
        assert sum(delta.get(k, 0) for k in outcomes) == 1, (name, delta)
        assert delta == {outcome: 1, **evs}, (name, delta)
        if drain:
            assert len(ring()) == evs.get("captured", 0), name
    run = vocab.frames_seen(skim.counters(), outcomes) - vocab.frames_seen(start, outcomes)
    assert run == len(cases)


def test_hardworker_counts_one_outcome_per_frame(hw):
    from roles import vocab

    cases = _hw_frames()
    assert {c[3] for c in cases} | {"dropped_full", "dropped_order"} == set(vocab.HW_OUTCOMES)
    _check_counting(hw, "xdp_hardworker", cases, vocab.HW_OUTCOMES, vocab.HW_EVENTS)


def test_hardworker_counts_a_full_ring_as_its_outcome(hw_small):
    """Records of 1448 bytes into a 16 KiB ring, never drained: those that fit are forwarded,
    then every further one counts dropped_full and nothing else."""
    from roles import vocab

    per_record = vocab.RING_HEADER_BYTES + (vocab.RING_RECORD.size + 1448 + 7) // 8 * 8
    fits = SMALL_RING // per_record
    frames = [_segment(b"f" * 1448, seq=s * 1448) for s in range(fits + 3)]
    cases = [(f"record {s}", f, XDP_TX, "forwarded", {"matched": 1, "captured": 1})
             for s, f in enumerate(frames[:fits])]
    cases += [(f"full {s}", f, XDP_DROP, "dropped_full", {"matched": 1}) for s, f in enumerate(frames[fits:])]
    _check_counting(hw_small, "xdp_hardworker", cases, vocab.HW_OUTCOMES, vocab.HW_EVENTS, drain=False)
    assert len(ring_seqs(hw_small)) == fits


COUNTED = ("filter:every:3", "latest:10")  # policies whose programs run _policy_frames


def _policy_frames(kind):
    """A flow through filter:every:3 or latest:10: before its SYN, behind a hole, in order,
    retransmitted, a pure ACK, a segment that is no record, a FIN."""
    from roles.record import HEADER_SIZE, encode

    isn, step = 9000, HEADER_SIZE + 1024
    rec = lambda s, flags="PA": _segment(encode(1, s, 1, 1024), seq=isn + 1 + s * step,  # noqa: E731
                                         sport=41000, flags=flags)
    m, fwd = {"matched": 1}, {"matched": 1, "uncaptured": 1}
    cap = {"matched": 1, "captured": 1}
    box = {"matched": 1, "mailbox": 1, "uncaptured": 1}
    cases = [
        ("before the syn", rec(0), XDP_DROP, "dropped_order", m),
        ("syn", _segment(flags="S", seq=isn, sport=41000), XDP_TX, "forwarded", cap),
        ("behind a hole", rec(1), XDP_DROP, "dropped_order", m),
        ("record 0", rec(0), XDP_TX, "forwarded", box if kind == "latest" else cap),  # 0 % 3 == 0
        ("record 1", rec(1), XDP_TX, "forwarded", box if kind == "latest" else fwd),
        ("retransmitted", rec(0), XDP_TX, "forwarded", fwd),
        ("pure ack", _segment(flags="A", seq=isn + 1 + 2 * step, sport=41000), XDP_TX, "forwarded", m),
    ]
    if kind == "latest":  # a record with the FIN: into the mailbox, the FIN alone into the ring
        cases.append(("record 2 + fin", rec(2, "FA"), XDP_TX, "forwarded",
                      {"matched": 1, "captured": 1, "mailbox": 1}))
    else:
        cases += [("not a record", _segment(b"n" * 10, seq=isn + 1 + 2 * step, sport=41000),
                   XDP_TX, "forwarded", cap),
                  ("fin", _segment(flags="FA", seq=isn + 11 + 2 * step, sport=41000),
                   XDP_TX, "forwarded", cap)]
    return cases + [("oversize", _segment(b"y" * 1449, sport=41000), XDP_DROP, "dropped_oversize", m),
                    ("no marker", _segment(b"x", tos=0x20), XDP_PASS, "passed", {})]


def test_sensor_counts_one_outcome_per_frame(sensor):
    from roles import vocab

    cases = _sensor_frames()
    assert {c[3] for c in cases} == set(vocab.SENSOR_OUTCOMES)
    _check_counting(sensor, "xdp_sensor", cases, vocab.SENSOR_OUTCOMES, vocab.SENSOR_EVENTS)


@pytest.mark.parametrize("name, old, new", [
    # what sensor.c did before: a malformed frame counted as malformed and passed
    ("sensor.c", "if (parse_tcphdr(&nh, data_end, &tcph) < 0)\n\t\treturn verdict(C_MALFORMED, XDP_PASS);",
     "if (parse_tcphdr(&nh, data_end, &tcph) < 0) {\n\t\tcount(C_MALFORMED);\n"
     "\t\treturn verdict(C_PASSED, XDP_PASS);\n\t}"),
    ("hardworker.c", "\tcount(C_CAPTURED);\n", "\tcount(C_CAPTURED);\n\tcount(C_FORWARDED);\n"),
])
def test_a_double_count_is_caught(tmp_path, monkeypatch, name, old, new):
    """The counting checks fail on a program that counts two outcomes for one frame."""
    import shutil

    from roles import vocab, xdp
    from roles.skim import SensorSkim

    copy = tmp_path / "bpf"
    shutil.copytree(xdp.BPF_DIR, copy)
    text = (copy / name).read_text()
    assert old in text, f"the mutation no longer applies to {name}"
    (copy / name).write_text(text.replace(old, new, 1))
    monkeypatch.setattr(xdp, "BPF_DIR", str(copy))
    if name == "sensor.c":
        skim = SensorSkim(interface="lo", sensor_ip=SEN_IP, hw_ip=HW_IP, hw_mac=MAC["hw"],
                          logger_ip=LOGGER_IP, tos=TOS, port=PORT)
        args = ("xdp_sensor", _sensor_frames(), vocab.SENSOR_OUTCOMES, vocab.SENSOR_EVENTS)
    else:
        skim = _hardworker()
        args = ("xdp_hardworker", _hw_frames(), vocab.HW_OUTCOMES, vocab.HW_EVENTS)
    try:
        with pytest.raises(AssertionError):
            _check_counting(skim, *args)
    finally:
        skim.close()
