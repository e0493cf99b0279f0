"""Unit tests of roles.reassembly (pure Python, fast)."""

import random

import pytest

from roles.reassembly import Reassembler
from roles.vocab import ACK, FIN, PSH, RST, SYN

K = ("198.18.0.210", 40000)
DATA = bytes(random.Random(1).randrange(256) for _ in range(20000))


def segments(isn, data, mss):
    """(seq, flags, payload) of a whole connection: SYN, data, FIN."""
    out = [(isn, SYN, b"")]
    for off in range(0, len(data), mss):
        out.append(((isn + 1 + off) & 0xFFFFFFFF, ACK | PSH, data[off:off + mss]))
    out.append(((isn + 1 + len(data)) & 0xFFFFFFFF, FIN | ACK, b""))
    return out


def run(ra, segs, key=K):
    return b"".join(ra.feed(key, seq, flags, p) for seq, flags, p in segs)


def test_in_order():
    ra = Reassembler()
    assert run(ra, segments(1000, DATA, 1448)) == DATA
    st = ra.stream(K)
    assert st.ended and not st.reset and st.duplicate_bytes == 0 and st.out_of_order == 0
    assert st.segments == len(DATA) // 1448 + 3


@pytest.mark.parametrize("isn", [0xFFFFFFFF - 5000, 0xFFFFFFFF, 0xFFFFFFFE])
def test_sequence_wraparound(isn):
    ra = Reassembler()
    assert run(ra, segments(isn, DATA, 1000)) == DATA
    assert ra.stream(K).ended


def test_retransmissions_and_duplicates():
    segs = segments(7, DATA, 1448)
    noisy = []
    for s in segs:
        noisy.append(s)
        if s[2]:
            noisy.append(s)  # exact duplicate
    noisy.insert(5, segs[2])  # late retransmission
    ra = Reassembler()
    assert run(ra, noisy) == DATA
    st = ra.stream(K)
    assert st.duplicate_bytes == sum(len(s[2]) for s in segs) + len(segs[2][2])


def test_overlaps_resegmented_retransmission():
    isn = 100
    ra = Reassembler()
    out = ra.feed(K, isn, SYN)
    out += ra.feed(K, isn + 1, ACK, DATA[:1000])
    # retransmission re-segmented: covers old bytes 500..1000 plus new 1000..1700
    out += ra.feed(K, isn + 1 + 500, ACK, DATA[500:1700])
    assert out == DATA[:1700]
    assert ra.stream(K).duplicate_bytes == 500


def test_out_of_order_with_holes():
    segs = segments(5, DATA, 1000)
    body = segs[1:-1]
    order = [segs[0]] + body[3:] + body[:3] + [segs[-1]]
    ra = Reassembler()
    outs = [ra.feed(K, s, f, p) for s, f, p in order]
    assert b"".join(outs) == DATA
    assert not any(outs[1:len(body) - 2])  # nothing before the hole is filled
    st = ra.stream(K)
    assert st.out_of_order == len(body) - 3 and st.ahead_bytes == 0 and st.ended


def test_random_shuffle_duplicates_overlaps():
    rnd = random.Random(42)
    isn = 0xFFFFF000
    pieces = []
    for _ in range(400):  # random overlapping windows of the stream
        a = rnd.randrange(len(DATA))
        b = min(len(DATA), a + rnd.randrange(1, 1500))
        pieces.append(((isn + 1 + a) & 0xFFFFFFFF, ACK, DATA[a:b]))
    pieces += [s for s in segments(isn, DATA, 1448)[1:-1]]  # guarantee full coverage
    rnd.shuffle(pieces)
    ra = Reassembler()
    out = ra.feed(K, isn, SYN) + run(ra, pieces)
    out += ra.feed(K, (isn + 1 + len(DATA)) & 0xFFFFFFFF, FIN | ACK)
    assert out == DATA
    assert ra.stream(K).ended and ra.stream(K).ahead_bytes == 0


def test_fin_before_last_data():
    segs = segments(9, DATA[:3000], 1000)
    ra = Reassembler()
    out = run(ra, [segs[0], segs[1], segs[-1], segs[3]])
    assert not ra.stream(K).ended
    out += ra.feed(K, *segs[2])
    assert out == DATA[:3000] and ra.stream(K).ended


def test_rst_ends_stream():
    ra = Reassembler()
    ra.feed(K, 1, SYN)
    ra.feed(K, 2, ACK, b"abc")
    ra.feed(K, 5, RST)
    st = ra.stream(K)
    assert st.ended and st.reset
    assert ra.feed(K, 5, ACK, b"late") == b""


def test_bounded_memory_counts_overflow():
    ra = Reassembler(max_ahead_bytes=3000)
    ra.feed(K, 0, SYN)
    for i in range(1, 6):  # 5 segments after a 1000-byte hole
        ra.feed(K, 1 + i * 1000, ACK, DATA[i * 1000:(i + 1) * 1000])
    st = ra.stream(K)
    assert st.ahead_bytes == 3000 and st.overflow_bytes == 2000
    out = ra.feed(K, 1, ACK, DATA[:1000])
    assert out == DATA[:4000] and st.ahead_bytes == 0


def test_streams_are_independent_and_port_reuse_restarts():
    k2 = ("198.18.0.210", 40001)
    ra = Reassembler()
    a = ra.feed(K, 10, SYN) + ra.feed(k2, 99, SYN)
    a += ra.feed(K, 11, ACK, b"one") + ra.feed(k2, 100, ACK, b"two")
    assert a == b"onetwo"
    ra.feed(K, 14, FIN)
    assert ra.stream(K).ended and not ra.stream(k2).ended
    assert ra.feed(K, 5000, SYN) == b"" and ra.feed(K, 5001, ACK, b"again") == b"again"
    assert ra.stream(K).restarts == 1


def test_syn_retransmission_is_not_a_restart():
    ra = Reassembler()
    ra.feed(K, 10, SYN)
    ra.feed(K, 11, ACK, b"x")
    ra.feed(K, 10, SYN)
    assert ra.feed(K, 12, ACK, b"y") == b"y" and ra.stream(K).restarts == 0


def test_midstream_start():
    ra = Reassembler()
    assert ra.feed(K, 500, ACK, b"abc") == b"abc"
    assert not ra.stream(K).synced
    strict = Reassembler(accept_midstream=False)
    assert strict.feed(K, 500, ACK, b"abc") == b"" and strict.orphans == 1


def test_rst_with_a_hole_reports_the_held_bytes_as_abandoned():
    """Bytes held after a hole when the RST comes can never be delivered: counted, not lost
    silently; late copies of undelivered bytes are abandoned too, each byte once."""
    ra = Reassembler()
    ra.feed(K, 0, SYN)
    assert ra.feed(K, 1, ACK, DATA[:1000]) == DATA[:1000]
    ra.feed(K, 2001, ACK, DATA[2000:3000])  # hole at 1000..2000
    ra.feed(K, 2501, ACK, DATA[2500:3500])  # overlaps what is held
    ra.feed(K, 3501, RST)
    st = ra.stream(K)
    assert st.ended and st.reset and st.ahead_bytes == 0
    assert st.abandoned_bytes == 1500 and st.duplicate_bytes == 500
    assert ra.feed(K, 1001, ACK, DATA[1000:2000]) == b""  # the hole, too late
    assert ra.feed(K, 501, ACK, DATA[500:1500]) == b""  # half delivered, half abandoned
    assert ra.feed(K, 2001, ACK, DATA[2000:3000]) == b""  # a copy of abandoned bytes
    assert st.abandoned_bytes == 2500 and st.duplicate_bytes == 500 + 1000 + 1000
    assert ra.stats()[f"{K[0]}:{K[1]}"]["abandoned_bytes"] == 2500


def test_rst_without_a_hole_abandons_nothing():
    ra = Reassembler()
    run(ra, segments(3, DATA[:3000], 1000)[:-1] + [(3 + 3001, RST, b"")])
    st = ra.stream(K)
    assert st.reset and st.abandoned_bytes == 0 and st.delivered_bytes == 3000


def test_skip_to_moves_past_what_the_kernel_held_back():
    r = Reassembler()
    key = ("198.18.0.11", 40000)
    r.feed(key, 999, SYN)
    assert r.feed(key, 1000, 0, b"ab") == b"ab"
    r.skip_to(key, 1010)            # 8 bytes evaluated in the kernel, not passed on
    r.skip_to(key, 1005)            # never backwards
    assert r.feed(key, 1010, 0, b"cd") == b"cd"
    assert r.feed(key, 1012, FIN) == b""
    st = r.streams[key]
    assert st.ended and st.skipped_bytes == 8 and st.delivered_bytes == 4
