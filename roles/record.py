"""Record format of the sensor stream, its streaming decoder and the delivery counter.

A record is a fixed 40-byte header followed by the payload (network byte order)::

    magic u32 | version u8 | flags u8 | reserved u16 | sensor_id u32 | seq u64 |
    send_ns u64 | length u32 | payload_crc u32 | header_crc u32

``header_crc`` is the CRC32 of the 36 bytes before it: a corrupted length field can never
make the stream cutter swallow a wrong number of bytes, and resynchronising on the magic
after garbage cannot lock onto a false header. The payload is derived from ``seq``, so any
receiver can verify content, not only length: its first four bytes are the sensor's signal
(``signal(seq)``, a signed 32-bit big-endian value the delivery filters look at), the rest a
fixed pseudo-random pattern read at an offset picked by ``seq``.
"""

import random
import struct
import zlib
from typing import NamedTuple

MAGIC = 0x54534B52  # "TSKR"
MAGIC_BYTES = MAGIC.to_bytes(4, "big")
VERSION = 1
_HDR = struct.Struct("!IBBHIQQII")  # everything but header_crc
_CRC = struct.Struct("!I")
_FULL = struct.Struct("!IBBHIQQIII")  # the whole header, for the stream cutter's fast path
HEADER_SIZE = _HDR.size + _CRC.size  # 40
MAX_PAYLOAD = 1 << 20
U32, U64 = (1 << 32) - 1, (1 << 64) - 1

SIGNAL_SEED = 0x5EED0001
_SIGNAL = struct.Struct("!i")  # the payload's first bytes: the signal the filters look at
SIGNAL_BYTES = _SIGNAL.size
_PERIOD = 4093  # prime: consecutive seqs start at well-spread offsets
_BASE = random.Random(0x7C5C1A).randbytes(_PERIOD)
_pattern = _BASE * 2


class RecordError(ValueError):
    """A buffer is not a valid record; ``reason`` is a short stable token for counting."""

    reason = "invalid"


class BadMagic(RecordError):
    reason = "bad_magic"


class BadVersion(RecordError):
    reason = "bad_version"


class BadHeader(RecordError):
    reason = "bad_header"  # header CRC mismatch or reserved bits set


class ShortRecord(RecordError):
    reason = "short"


class TrailingBytes(RecordError):
    reason = "trailing_bytes"


class Oversized(RecordError):
    reason = "oversized"


class CorruptPayload(RecordError):
    """Header valid, payload wrong: the record can still be attributed to its sensor."""

    reason = "payload_crc"

    def __init__(self, msg, sensor_id, seq):
        super().__init__(msg)
        self.sensor_id, self.seq = sensor_id, seq


class WrongContent(CorruptPayload):
    reason = "payload_content"  # CRC matches the bytes, but they are not the ones seq implies


class Record(NamedTuple):
    sensor_id: int
    seq: int
    send_ns: int
    payload: bytes


def signal(seq: int) -> int:
    """The sensor's signal in record ``seq``: a slow triangle wave in [-1000, 1000] (period
    1000 records, slope 4 per record) with +-10 of noise, and a rare excursion of +-5000
    (about 1 record in 100). Integer-only, so every host derives the same value; seeded by
    the record format itself, so any receiver can check it."""
    h = (seq * 0x9E3779B1 + SIGNAL_SEED) & U32
    h ^= h >> 15
    h = (h * 0x85EBCA6B) & U32
    h ^= h >> 13
    t = seq % 1000
    v = (t if t < 500 else 1000 - t) * 4 - 1000 + (h >> 8) % 21 - 10
    if h % 100 == 0:
        v += 5000 if h & 0x100 else -5000
    return v


def payload_for(seq: int, size: int) -> bytes:
    """The deterministic payload of record ``seq`` (``size`` bytes): the signal (i32,
    big-endian) in its first four bytes, then a pseudo-random pattern picked by ``seq``."""
    global _pattern
    if size + _PERIOD > len(_pattern):
        _pattern = _BASE * ((size + _PERIOD) // _PERIOD + 1)
    off = (seq * 2654435761) % _PERIOD
    sig = _SIGNAL.pack(signal(seq))
    return sig[:size] + _pattern[off:off + size - SIGNAL_BYTES] if size > SIGNAL_BYTES else sig[:size]


def signal_of(payload) -> int | None:
    """The signal value a payload carries, None when it is too short to carry one."""
    return _SIGNAL.unpack_from(payload)[0] if len(payload) >= SIGNAL_BYTES else None


def encode(sensor_id: int, seq: int, send_ns: int, size: int) -> bytes:
    """One record with the payload of ``seq``; raises ValueError on out-of-range fields."""
    if not (0 <= sensor_id <= U32 and 0 <= seq <= U64 and 0 <= send_ns <= U64):
        raise ValueError("sensor_id, seq or send_ns out of range")
    if not 0 <= size <= MAX_PAYLOAD:
        raise ValueError(f"payload size {size} outside 0..{MAX_PAYLOAD}")
    payload = payload_for(seq, size)
    head = _HDR.pack(MAGIC, VERSION, 0, 0, sensor_id, seq, send_ns, size, zlib.crc32(payload))
    return head + _CRC.pack(zlib.crc32(head)) + payload


def parse_header(buf, max_payload: int = MAX_PAYLOAD):
    """Validate the header at the start of ``buf`` (>= HEADER_SIZE bytes).

    Returns (sensor_id, seq, send_ns, length, payload_crc)."""
    if len(buf) < HEADER_SIZE:
        raise ShortRecord(f"{len(buf)} bytes, header needs {HEADER_SIZE}")
    magic, version, flags, reserved, sid, seq, send_ns, length, pcrc = _HDR.unpack_from(buf, 0)
    if magic != MAGIC:
        raise BadMagic(f"magic {magic:#010x}, expected {MAGIC:#010x}")
    if zlib.crc32(memoryview(buf)[:_HDR.size]) != _CRC.unpack_from(buf, _HDR.size)[0]:
        raise BadHeader("header CRC mismatch")
    if version != VERSION:
        raise BadVersion(f"version {version}, expected {VERSION}")
    if flags or reserved:
        raise BadHeader("reserved header bits set")
    if length > max_payload:
        raise Oversized(f"payload length {length} > {max_payload}")
    return sid, seq, send_ns, length, pcrc


def check_payload(sid, seq, pcrc, payload) -> None:
    if zlib.crc32(payload) != pcrc:
        raise CorruptPayload(f"payload CRC mismatch (sensor {sid} seq {seq})", sid, seq)
    if payload != payload_for(seq, len(payload)):
        raise WrongContent(f"payload differs from the pattern of seq {seq}", sid, seq)


def decode(buf, max_payload: int = MAX_PAYLOAD) -> Record:
    """Strictly decode exactly one record; raises a RecordError subclass."""
    sid, seq, send_ns, length, pcrc = parse_header(buf, max_payload)
    total = HEADER_SIZE + length
    if len(buf) < total:
        raise ShortRecord(f"{len(buf)} bytes, record needs {total}")
    if len(buf) > total:
        raise TrailingBytes(f"{len(buf) - total} bytes after the record")
    payload = bytes(buf[HEADER_SIZE:total])
    check_payload(sid, seq, pcrc, payload)
    return Record(sid, seq, send_ns, payload)


class Bad(NamedTuple):
    """A piece of the stream that is not a valid record. ``sensor_id``/``seq`` are None
    unless the header was valid (then the record is corrupt, not unknown)."""

    reason: str
    raw: bytes
    sensor_id: int | None = None
    seq: int | None = None


class RecordStream:
    """Cuts a byte stream into records. ``feed(data)`` returns a list of Record / Bad.

    Garbage is skipped up to the next header that validates (magic + header CRC) and
    reported as one Bad per skipped run; a record with a valid header and a bad payload is
    reported as Bad with its sensor id and seq. Every input byte ends up in exactly one
    Record or Bad (``close()`` reports an unfinished tail, with its sensor id and seq when
    its header is complete and valid, so a truncated record counts as corrupt for its sensor)."""

    def __init__(self, max_payload: int = MAX_PAYLOAD, max_bad_raw: int = 4096):
        self.max_payload = max_payload
        self.max_bad_raw = max_bad_raw  # a Bad keeps at most this many raw bytes
        self._buf = bytearray()
        self._pos = 0
        self.bytes_in = 0
        self.records = 0
        self.bad = 0

    def _bad(self, out, reason, start, end, sid=None, seq=None):
        out.append(Bad(reason, bytes(self._buf[start:min(end, start + self.max_bad_raw)]), sid, seq))
        self.bad += 1

    def feed(self, data) -> list:
        self.bytes_in += len(data)
        buf = self._buf
        buf += data
        out = []
        pos = self._pos
        n = len(buf)
        while n - pos >= HEADER_SIZE:
            if buf[pos:pos + 4] != MAGIC_BYTES:
                nxt = buf.find(MAGIC_BYTES, pos + 1)
                end = nxt if nxt >= 0 else n - 3  # the last 3 bytes may begin a magic
                self._bad(out, BadMagic.reason, pos, end)
                pos = end
                continue
            magic, version, flags, reserved, sid, seq, send_ns, length, pcrc, hcrc = _FULL.unpack_from(buf, pos)
            if (hcrc != zlib.crc32(memoryview(buf)[pos:pos + _HDR.size]) or version != VERSION
                    or flags or reserved or length > self.max_payload):
                reason = BadHeader.reason
                try:  # the slow path names the reason
                    parse_header(bytes(buf[pos:pos + HEADER_SIZE]), self.max_payload)
                except RecordError as exc:
                    reason = exc.reason
                nxt = buf.find(MAGIC_BYTES, pos + 1)
                end = nxt if nxt >= 0 else n - 3
                self._bad(out, reason, pos, end)
                pos = end
                continue
            total = HEADER_SIZE + length
            if n - pos < total:
                break
            payload = bytes(buf[pos + HEADER_SIZE:pos + total])
            try:
                check_payload(sid, seq, pcrc, payload)
            except CorruptPayload as exc:
                self._bad(out, exc.reason, pos, pos + total, sid, seq)
            else:
                out.append(Record(sid, seq, send_ns, payload))
                self.records += 1
            pos += total
        # Compact rarely: deleting the consumed prefix is a memmove of what is left.
        if pos >= 65536 or pos == n:
            del buf[:pos]
            pos = 0
        self._pos = pos
        return out

    @property
    def pending(self) -> int:
        return len(self._buf) - self._pos

    def close(self) -> list:
        """End of stream: any unconsumed bytes become one Bad('truncated'), attributed to
        its sensor and seq when they start with a valid header (a record cut short)."""
        out = []
        if self.pending:
            sid = seq = None
            try:
                sid, seq, *_ = parse_header(memoryview(self._buf)[self._pos:], self.max_payload)
            except RecordError:
                pass  # no complete valid header: cannot be attributed
            self._bad(out, "truncated", self._pos, len(self._buf), sid, seq)
        self._buf = bytearray()
        self._pos = 0
        return out


class _Sensor:
    __slots__ = ("next", "gaps", "delivered", "duplicate", "reordered", "corrupt", "first", "last")

    def __init__(self, first_seq):
        self.next = first_seq  # one past the highest seq seen
        self.gaps = []  # sorted [start, end) ranges below `next` not yet seen
        self.delivered = self.duplicate = self.reordered = self.corrupt = 0
        self.first = self.last = None


class DeliveryCounter:
    """Per sensor id: delivered / lost / duplicate / reordered / corrupt.

    Sequence numbers start at ``first_seq`` so a missing head is counted as lost. A seq above
    the highest seen opens a gap (lost until it arrives); a seq that fills a gap is delivered
    and reordered; any other seq at or below the highest is a duplicate. A corrupt record
    (valid header, bad payload) is counted as corrupt and closes its gap: it arrived, damaged,
    so it is not also lost. Bad input with no valid header cannot be attributed to a sensor
    and is counted in ``unattributed``. lost = seqs in gaps, i.e. never seen in any form;
    records missing after the last one seen need the sender's count (``expect``)."""

    def __init__(self, first_seq: int = 0, gaps_are_lost: bool = True):
        self.first_seq = first_seq
        self.gaps_are_lost = gaps_are_lost  # False: a delivery policy skips records on purpose
        self.sensors: dict[int, _Sensor] = {}
        self.unattributed = 0
        self.delivered = 0  # total, cheap to read from another thread
        self._expected: dict[int, int] = {}

    def _state(self, sid):
        st = self.sensors.get(sid)
        if st is None:
            st = self.sensors[sid] = _Sensor(self.first_seq)
        return st

    def _arrive(self, st, seq) -> str:
        if seq == st.next:
            st.next += 1
            return "new"
        if seq > st.next:
            if self.gaps_are_lost:
                st.gaps.append([st.next, seq])
            st.next = seq + 1
            return "new"
        for i, gap in enumerate(st.gaps):  # gaps are few; newest last
            if gap[0] <= seq < gap[1]:
                if gap[0] == seq:
                    gap[0] += 1
                elif gap[1] == seq + 1:
                    gap[1] -= 1
                else:
                    st.gaps.insert(i + 1, [seq + 1, gap[1]])
                    gap[1] = seq
                if gap[0] >= gap[1]:
                    st.gaps.remove(gap)
                return "late"
        return "dup"

    def record(self, sid: int, seq: int) -> str:
        """Count one valid record; returns 'new', 'late' (reordered) or 'dup'."""
        st = self._state(sid)
        kind = self._arrive(st, seq)
        if kind == "dup":
            st.duplicate += 1
            return kind
        if kind == "late":
            st.reordered += 1
        st.delivered += 1
        self.delivered += 1
        if st.first is None:
            st.first = seq
        st.last = seq
        return kind

    def corrupt(self, sid: int | None, seq: int | None) -> None:
        if sid is None or seq is None:
            self.unattributed += 1
            return
        st = self._state(sid)
        if self._arrive(st, seq) == "dup":
            st.duplicate += 1  # a damaged copy of something already counted
        st.corrupt += 1

    def add(self, item) -> str:
        """Count a Record or Bad from RecordStream."""
        if isinstance(item, Record):
            return self.record(item.sensor_id, item.seq)
        self.corrupt(item.sensor_id, item.seq)
        return "bad"

    def expect(self, sid: int, count: int) -> None:
        """The sender says it sent seqs first_seq..first_seq+count-1: a missing tail is lost."""
        self._expected[sid] = count

    def lost(self, sid: int) -> int:
        st = self.sensors.get(sid)
        gaps = sum(b - a for a, b in st.gaps) if st else 0
        exp = self._expected.get(sid)
        if exp is not None:
            top = st.next if st else self.first_seq
            gaps += max(0, self.first_seq + exp - top)
        return gaps

    def summary(self) -> dict:
        per = {}
        for sid in sorted(set(self.sensors) | set(self._expected)):
            st = self.sensors.get(sid) or _Sensor(self.first_seq)
            per[str(sid)] = {"delivered": st.delivered, "lost": self.lost(sid),
                             "duplicates": st.duplicate, "reordered": st.reordered,
                             "corrupt": st.corrupt, "first_seq": st.first, "last_seq": st.last}
        tot = {k: sum(p[k] for p in per.values())
               for k in ("delivered", "lost", "duplicates", "reordered", "corrupt")}
        tot["unattributed_bad"] = self.unattributed
        tot["per_sensor"] = per
        return tot
