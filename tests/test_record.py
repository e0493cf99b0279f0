"""Record format, stream cutting and delivery counting: table tests and hypothesis properties."""

import struct
import zlib

import pytest
from hypothesis import given, settings, strategies as st

from roles import record as R
from roles.record import (HEADER_SIZE, Bad, DeliveryCounter, Record, RecordStream, decode, encode,
                          payload_for)


def _reheader(rec: bytes, **fields) -> bytes:
    """Rewrite header fields and fix the header CRC (a well-formed header with odd values)."""
    names = ("magic", "version", "flags", "reserved", "sensor_id", "seq", "send_ns", "length", "pcrc")
    vals = dict(zip(names, struct.unpack_from("!IBBHIQQII", rec)))
    vals.update(fields)
    head = struct.pack("!IBBHIQQII", *(vals[n] for n in names))
    return head + struct.pack("!I", zlib.crc32(head)) + rec[HEADER_SIZE:]


def test_roundtrip_and_layout():
    rec = encode(7, 2**64 - 1, 123456789, 1024)
    assert len(rec) == HEADER_SIZE + 1024 == 1064
    assert rec[:4] == b"TSKR"
    r = decode(rec)
    assert r == Record(7, 2**64 - 1, 123456789, payload_for(2**64 - 1, 1024))
    assert decode(encode(0, 0, 0, 0)).payload == b""


def test_payload_depends_on_seq_and_is_cheap_to_verify():
    assert payload_for(1, 64) != payload_for(2, 64)
    assert payload_for(5, 3000)[:100] == payload_for(5, 100)
    assert len(payload_for(9, R.MAX_PAYLOAD)) == R.MAX_PAYLOAD


GOOD = encode(3, 42, 1000, 100)


@pytest.mark.parametrize("buf, error", [
    (b"", R.ShortRecord),
    (GOOD[:HEADER_SIZE - 1], R.ShortRecord),
    (GOOD[:-1], R.ShortRecord),
    (GOOD + b"\0", R.TrailingBytes),
    (b"XXXX" + GOOD[4:], R.BadMagic),
    (GOOD[:10] + bytes([GOOD[10] ^ 1]) + GOOD[11:], R.BadHeader),  # header CRC catches it
    (_reheader(GOOD, version=2), R.BadVersion),
    (_reheader(GOOD, reserved=1), R.BadHeader),
    (_reheader(GOOD, length=R.MAX_PAYLOAD + 1), R.Oversized),
    (GOOD[:-1] + bytes([GOOD[-1] ^ 0x80]), R.CorruptPayload),
    (_reheader(GOOD, seq=43), R.WrongContent),  # valid CRC, but not the payload of seq 43
])
def test_decode_rejects(buf, error):
    with pytest.raises(error) as exc:
        decode(buf)
    assert exc.value.reason == error.reason


def test_encode_rejects_out_of_range():
    for args in ((-1, 0, 0, 1), (2**32, 0, 0, 1), (0, 2**64, 0, 1), (0, 0, 0, R.MAX_PAYLOAD + 1)):
        with pytest.raises(ValueError):
            encode(*args)


def test_corrupt_payload_names_its_record():
    with pytest.raises(R.CorruptPayload) as exc:
        decode(GOOD[:-1] + b"\xff" if GOOD[-1] != 0xFF else GOOD[:-1] + b"\0")
    assert (exc.value.sensor_id, exc.value.seq) == (3, 42)


@given(sid=st.integers(0, 2**32 - 1), seq=st.integers(0, 2**64 - 1),
       send=st.integers(0, 2**64 - 1), size=st.integers(0, 4000))
def test_prop_roundtrip(sid, seq, send, size):
    r = decode(encode(sid, seq, send, size))
    assert (r.sensor_id, r.seq, r.send_ns, len(r.payload)) == (sid, seq, send, size)


@given(size=st.integers(0, 300), data=st.data())
def test_prop_any_single_byte_change_is_detected(size, data):
    rec = bytearray(encode(1, 99, 5, size))
    i = data.draw(st.integers(0, len(rec) - 1))
    rec[i] ^= data.draw(st.integers(1, 255))
    with pytest.raises(R.RecordError):
        decode(bytes(rec))


@given(size=st.integers(0, 300), cut=st.integers(0, 10_000))
def test_prop_truncation_is_short(size, cut):
    rec = encode(1, 2, 3, size)
    cut %= len(rec)
    with pytest.raises(R.ShortRecord):
        decode(rec[:cut])


@given(st.binary(max_size=200))
def test_prop_garbage_never_decodes(junk):
    with pytest.raises(R.RecordError):
        decode(junk)


def _feed_in_chunks(stream, data, cuts):
    out, pos = [], 0
    for c in sorted(cuts):
        out += stream.feed(data[pos:c])
        pos = c
    return out + stream.feed(data[pos:]) + stream.close()


@given(sizes=st.lists(st.integers(0, 2000), max_size=20), data=st.data())
def test_prop_stream_cuts_any_chunking(sizes, data):
    blob = b"".join(encode(4, i, i, s) for i, s in enumerate(sizes))
    cuts = data.draw(st.lists(st.integers(0, len(blob)), max_size=10))
    out = _feed_in_chunks(RecordStream(), blob, cuts)
    assert [(r.seq, len(r.payload)) for r in out] == list(enumerate(sizes))


@settings(max_examples=200)
@given(n=st.integers(1, 12), data=st.data())
def test_prop_stream_survives_corruption_and_accounts_for_everything(n, data):
    """Damage some bytes anywhere: every undamaged record still comes out exactly once, no
    damaged one is accepted, and the counter accounts for every seq (delivered + corrupt +
    lost + unattributed covers what was sent)."""
    recs = [encode(9, i, 0, data.draw(st.integers(0, 200))) for i in range(n)]
    blob = bytearray(b"".join(recs))
    hits = data.draw(st.lists(st.integers(0, len(blob) - 1), max_size=4, unique=True))
    for i in hits:
        blob[i] ^= 0x5A
    bounds, pos = [], 0
    for r in recs:
        bounds.append((pos, pos + len(r)))
        pos += len(r)
    damaged = {k for k, (a, b) in enumerate(bounds) if any(a <= h < b for h in hits)}
    cuts = data.draw(st.lists(st.integers(0, len(blob)), max_size=5))
    out = _feed_in_chunks(RecordStream(), bytes(blob), cuts)
    good = [x.seq for x in out if isinstance(x, Record)]
    assert good == [k for k in range(n) if k not in damaged]
    if damaged:
        assert any(isinstance(x, Bad) for x in out)
    counter = DeliveryCounter()
    for x in out:
        counter.add(x)
    counter.expect(9, n)
    s = counter.summary()
    assert s["delivered"] == n - len(damaged) and s["duplicates"] == 0
    assert s["corrupt"] + s["lost"] == len(damaged)


def test_stream_resyncs_after_garbage_and_reports_it():
    s = RecordStream()
    out = s.feed(b"garbage!" + encode(1, 0, 0, 10) + b"TSKR" + b"\0" * 50 + encode(1, 1, 0, 10))
    kinds = [(type(x).__name__, getattr(x, "reason", None)) for x in out]
    assert kinds == [("Bad", "bad_magic"), ("Record", None), ("Bad", "bad_header"), ("Record", None)]
    assert out[0].raw == b"garbage!"
    s.feed(encode(1, 2, 0, 10)[:30])
    tail = s.close()
    assert len(tail) == 1 and tail[0].reason == "truncated" and len(tail[0].raw) == 30


@pytest.mark.parametrize("seqs, expect", [
    ([0, 1, 2, 3], dict(delivered=4, lost=0, duplicates=0, reordered=0)),
    ([0, 2, 3], dict(delivered=3, lost=1, duplicates=0, reordered=0)),
    ([0, 2, 1, 3], dict(delivered=4, lost=0, duplicates=0, reordered=1)),
    ([0, 1, 1, 0, 2], dict(delivered=3, lost=0, duplicates=2, reordered=0)),
    ([5, 3, 1], dict(delivered=3, lost=3, duplicates=0, reordered=2)),  # 0, 2, 4 never came
    ([0, 10, 5, 5, 7], dict(delivered=4, lost=7, duplicates=1, reordered=2)),
])
def test_delivery_counter(seqs, expect):
    c = DeliveryCounter()
    for q in seqs:
        c.record(1, q)
    s = c.summary()
    assert {k: s[k] for k in expect} == expect
    assert s["per_sensor"]["1"]["delivered"] == expect["delivered"]


def test_delivery_counter_tail_loss_needs_the_senders_count_and_sensors_are_separate():
    c = DeliveryCounter()
    for q in range(5):
        c.record(1, q)
    c.record(2, 0)
    c.corrupt(2, 1)
    c.corrupt(None, None)
    assert c.summary()["lost"] == 0
    c.expect(1, 8)
    c.expect(3, 2)  # a sensor that never arrived at all
    s = c.summary()
    assert s["per_sensor"]["1"]["lost"] == 3 and s["per_sensor"]["3"]["lost"] == 2
    assert s["per_sensor"]["2"] == dict(delivered=1, lost=0, duplicates=0, reordered=0, corrupt=1,
                                        first_seq=0, last_seq=0)
    assert s["unattributed_bad"] == 1 and s["delivered"] == 6


@given(st.lists(st.integers(0, 60), max_size=80))
def test_prop_counter_conserves(seqs):
    c = DeliveryCounter()
    for q in seqs:
        c.record(0, q)
    s = c.summary()
    distinct = set(seqs)
    assert s["delivered"] == len(distinct)
    assert s["duplicates"] == len(seqs) - len(distinct)
    assert s["lost"] == (max(seqs) + 1 - len(distinct) if seqs else 0)


def test_truncated_tail_with_a_valid_header_is_attributed_to_its_sensor():
    """A record cut short after a complete header is corrupt for its sensor, not unknown."""
    s, c = RecordStream(), DeliveryCounter()
    for x in s.feed(encode(5, 0, 0, 100) + encode(5, 1, 0, 100)[:HEADER_SIZE + 60]) + s.close():
        c.add(x)
    c.expect(5, 2)
    tot = c.summary()
    assert tot["per_sensor"]["5"]["corrupt"] == 1 and tot["per_sensor"]["5"]["lost"] == 0
    assert tot["unattributed_bad"] == 0 and tot["delivered"] == 1
    s.feed(encode(5, 2, 0, 100)[:HEADER_SIZE - 1])  # header incomplete: cannot be attributed
    (tail,) = s.close()
    assert (tail.reason, tail.sensor_id, tail.seq) == ("truncated", None, None)
