"""The xdp consumer's batch step (roles.hardworker.consume_batch) without a kernel: skimmed
segments -> reassembly -> records -> decision, including a reconnect from the same port."""

from roles.hardworker import Decider, consume_batch
from roles.reassembly import Reassembler
from roles.record import encode
from roles.vocab import ACK, FIN, PSH, SYN

KEY = ("198.18.0.11", 40000)


def connection(isn, sensor_id, seqs, size=64, cut=None):
    """Segments of one connection: SYN, one segment per record, FIN (after ``cut`` bytes if given)."""
    data = b"".join(encode(sensor_id, s, 1, size) for s in seqs)
    if cut is not None:
        data = data[:cut]
    segs = [(KEY, isn, SYN, b"", 0, 0)]
    seq = isn + 1
    step = 40 + size
    for i in range(0, len(data), step):
        segs.append((KEY, seq, PSH | ACK, data[i:i + step], 0, 0))
        seq += len(data[i:i + step])
    if cut is None:
        segs.append((KEY, seq, FIN | ACK, b"", 0, 0))
    return segs


def test_one_connection_delivers_every_record_and_ends():
    streams, reasm, dec = {}, Reassembler(), Decider(0, 0, 0)
    consume_batch(connection(1000, 7, range(5)), streams, reasm, dec, 10)
    assert dec.counter.summary()["delivered"] == 5 and streams[KEY].finished


def test_reconnect_from_the_same_port_gets_a_new_stream():
    streams, reasm, dec = {}, Reassembler(), Decider(0, 0, 0)
    first = connection(1000, 7, range(3))
    second = connection(90_000, 7, range(3, 6))
    consume_batch(first[:2], streams, reasm, dec, 10)  # two batches: the restart spans them
    consume_batch(first[2:] + second, streams, reasm, dec, 20)
    s = dec.counter.summary()
    assert (s["delivered"], s["lost"], s["corrupt"], s["duplicates"]) == (6, 0, 0, 0)
    assert set(streams) == {KEY, (*KEY, "#0")}
    assert streams[(*KEY, "#0")].finished and streams[KEY].finished
    assert streams[KEY].records.records == 3 and streams[(*KEY, "#0")].records.records == 3


def test_restart_mid_record_reports_the_old_tail_for_its_sensor():
    streams, reasm, dec = {}, Reassembler(), Decider(0, 0, 0)
    old = connection(1000, 7, range(2), cut=104 + 60)  # record 0 whole, record 1 cut after its header
    consume_batch(old + connection(5000, 7, range(2, 4)), streams, reasm, dec, 10)
    per = dec.counter.summary()["per_sensor"]["7"]
    assert (per["delivered"], per["corrupt"], per["lost"]) == (3, 1, 0)
    assert streams[(*KEY, "#0")].finished


def test_policy_batch_kernel_records_then_fallback_then_fin():
    """filter in xdp mode: whole records the kernel chose, then the flow falls back to raw
    bytes from the frontier the kernel reports (base), then the FIN: every matching record
    once, in order, nothing counted lost for what the policy skipped."""
    from roles.delivery import parse

    spec = "filter:every:3"
    step = 40 + 64
    isn = 5000
    recs = [encode(7, s, 1, 64) for s in range(12)]
    batch = [(KEY, isn, SYN, b"", 0, isn)]
    seq = isn + 1
    for s in range(6):  # records 0..5 aligned: the kernel sends 0 and 3 whole
        if s % 3 == 0:
            batch.append((KEY, seq, PSH | ACK, recs[s], 1, seq))
        seq += step
    frontier = seq
    tail = b"".join(recs[6:])  # records 6..11 in odd pieces: raw capture from the frontier
    for i in range(0, len(tail), 50):
        batch.append((KEY, seq, PSH | ACK, tail[i:i + 50], 0, frontier if i == 0 else seq))
        seq += len(tail[i:i + 50])
    batch.append((KEY, seq, FIN | ACK, b"", 0, seq))
    streams, reasm = {}, Reassembler()
    dec = Decider(0, 0, 1e12, policy=parse(spec))
    consume_batch(batch, streams, reasm, dec, 10, policy=True)
    assert dec.delivered_seqs == {7: [0, 3, 6, 9]}
    assert streams[KEY].finished
    s = dec.counter.summary()
    assert (s["delivered"], s["lost"], s["duplicates"], s["corrupt"]) == (4, 0, 0, 0)
    assert dec.gate.filtered == 4 and dec.gate.policy_mismatch == 0  # 7, 8, 10, 11 held back in userspace
    assert reasm.streams[KEY].skipped_bytes == 6 * step  # 0..5: delivered whole or held back in the kernel


def test_latest_decides_on_the_newest_and_counts_skipped():
    from roles.delivery import parse
    from roles.record import decode

    dec = Decider(0, 0, 1e12, policy=parse("latest:10"))
    for s in (0, 1, 2):
        dec.offer(decode(encode(3, s, 1, 16)), 5)
    dec.tick()
    dec.tick()  # nothing newer: no second decision on seq 2
    dec.offer(decode(encode(3, 7, 1, 16)), 5)
    dec.tick()
    lat = dec.gate.latest.summary()
    assert (lat["decisions"], lat["skipped"], lat["last_decided"]) == (2, 6, {"3": 7})
    assert dec.counter.summary()["delivered"] == 2 and dec.counter.summary()["lost"] == 0


# ---------------------------------------------------------------------------- the ring parse

def ring(segs):
    """Segments laid out as the program writes them (struct skim_rec + payload), in an mmap
    like the ring's: (memory, spans) as RingReader hands them to the parse."""
    import mmap
    import socket

    from roles.vocab import RING_RECORD

    buf, spans = bytearray(), []
    for (addr, port), seq, flags, payload, kind, base in segs:
        start = len(buf)
        buf += RING_RECORD.pack(socket.inet_aton(addr), port, flags, kind, seq & 0xFFFFFFFF,
                                len(payload), base) + payload
        spans.append((start, len(buf)))
        buf += bytes(-len(buf) % 8)
    mem = mmap.mmap(-1, max(len(buf), 1))
    mem.write(bytes(buf))
    return mem, spans


def parse_ring(segs, kind="all"):
    from types import SimpleNamespace

    from roles.delivery import Policy
    from roles.skim import HardworkerSkim

    me = SimpleNamespace(deliver=Policy(kind), coalesced=0)
    return HardworkerSkim._parse(me, *ring(segs)), me.coalesced


def test_parse_joins_a_flows_in_order_segments_and_keeps_edges_apart():
    other = ("198.18.0.12", 40001)
    conn = connection(1000, 7, range(4))  # SYN, 4 records, FIN
    o = [(other, 50_000 + 104 * i, PSH | ACK, encode(8, i, 1, 64), 0, 0) for i in range(2)]
    segs = conn[:3] + o + conn[3:5] + [conn[2]] + conn[5:]  # interleaved; a retransmission of 1
    out, joined = parse_ring(segs)
    shape = [(k, s, len(p)) for k, s, _, p, _, _ in out]
    assert shape == [(KEY, 1000, 0), (KEY, 1001, 208), (other, 50_000, 208), (KEY, 1209, 208),
                     (KEY, 1105, 104), (KEY, 1417, 0)]
    assert joined == 3
    assert out[1][3] == conn[1][3] + conn[2][3]
    # a policy's entries each carry their own kind and frontier: never joined
    assert parse_ring(segs, kind="filter") == (segs, 0)


COUNTS_OF_ENTRIES = ("segments", "out_of_order")  # a joined run is one entry


def test_joined_parse_delivers_what_per_segment_entries_do():
    """Loss, reordering, retransmission, a reconnect and two flows, cut into ring batches:
    the joined entries give the reassembler and the decision step exactly the outcome of one
    entry per segment (counts of entries aside)."""
    import random

    rnd = random.Random(11)
    other = ("198.18.0.12", 40001)
    a = connection(1000, 7, range(30)) + connection(70_000, 7, range(30, 40))
    b = [(other,) + s[1:] for s in connection(9_000, 8, range(25))]
    segs = []
    while a or b:  # the flows interleaved in runs of 1..6 segments
        src = a if (a and rnd.random() < 0.5) or not b else b
        segs += [src.pop(0) for _ in range(min(len(src), rnd.randint(1, 6)))]
    late = []
    for i in range(2, len(segs) - 1):
        r = rnd.random()
        if r < 0.08 and not segs[i][2] & (SYN | FIN):  # lost: its retransmission comes later
            late.append(segs[i])
            segs[i] = None
        elif r < 0.14:  # reordered with the next one
            segs[i], segs[i + 1] = segs[i + 1], segs[i]
    segs = [s for s in segs if s is not None]
    for i, s in enumerate(late):
        segs.insert(min(len(segs), 20 + 9 * i), s)
    segs.insert(40, segs[30])  # a duplicate
    outcomes = []
    for kind in ("all", "filter"):  # a policy's parse: an entry per segment
        streams, reasm, dec = {}, Reassembler(), Decider(0, 0, 0)
        joined = 0
        for i in range(0, len(segs), 7):
            batch, n = parse_ring(segs[i:i + 7], kind)
            joined += n
            consume_batch(batch, streams, reasm, dec, 10)
        stats = {k: {f: v for f, v in s.items() if f not in COUNTS_OF_ENTRIES}
                 for k, s in reasm.stats().items()}
        infos = {k: st.info() for k, st in streams.items()}
        outcomes.append((dec.counter.summary(), stats, infos))
        if kind == "all":
            assert joined > 0
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][0]["delivered"] > 0
