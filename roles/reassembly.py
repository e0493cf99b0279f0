"""TCP stream reassembly of skimmed segments, keyed on (sensor address, sensor port).

The XDP program reports every segment it forwarded, retransmissions included, in arrival
order. ``Reassembler.feed`` turns them into each stream's bytes, complete, in order and
without duplicates: data starts at ISN+1 (from the SYN), retransmitted and overlapping bytes
are trimmed, segments after a hole wait in a bounded buffer until the hole is filled, and
sequence numbers are compared modulo 2**32 (RFC 1982 style), so wrap-around is transparent.

Memory is bounded per stream (``max_ahead_bytes``); a segment that does not fit is not kept
and counted in ``overflow_bytes``. Those bytes may be lost for good (the logger may already
have acknowledged them), so ``overflow_bytes`` must be reported, never ignored.

An RST ends a stream at once, whatever its sequence number (a peer accepts an RST only
in-window, and a passive observer cannot check that window better than the peer did).
Bytes then held after a hole, and bytes past the delivered end seen later (the hole's
copy arriving after the RST), can never be delivered: they are counted, each stream byte
once, in ``abandoned_bytes``, which must be reported like ``overflow_bytes``. Other bytes
seen after a stream ended are ``duplicate_bytes``.

``segments`` and ``out_of_order`` count what was fed: under ``all`` the hardworker's parse
joins a flow's in-order segments into one entry first (roles.skim), so they count runs there.

Pure Python: no bcc, no I/O.
"""

from bisect import insort

from roles.vocab import FIN, RST, SYN

_M32 = 0xFFFFFFFF
_HALF = 1 << 31


class Stream:
    """State and counters of one stream. Offsets are absolute stream offsets (0 = byte ISN+1)."""

    __slots__ = ("isn", "nxt", "nxt32", "ahead", "starts", "ahead_bytes", "fin_at", "ended",
                 "reset", "synced", "segments", "duplicate_bytes", "out_of_order",
                 "delivered_bytes", "overflow_bytes", "abandoned_bytes", "gone", "restarts",
                 "skipped_bytes")

    def __init__(self, isn, synced=True):
        self.isn = isn
        self.nxt = 0                   # next expected absolute offset
        self.nxt32 = (isn + 1) & _M32  # the same as a TCP sequence number
        self.ahead = {}                # absolute start -> bytes (after a hole)
        self.starts = []               # sorted keys of ahead
        self.ahead_bytes = 0
        self.fin_at = None
        self.ended = False
        self.reset = False
        self.synced = synced           # False: started mid-stream without a SYN
        self.segments = 0
        self.duplicate_bytes = 0
        self.out_of_order = 0
        self.delivered_bytes = 0
        self.overflow_bytes = 0
        self.abandoned_bytes = 0
        self.gone = []                 # sorted disjoint [start, end) counted in abandoned_bytes
        self.restarts = 0
        self.skipped_bytes = 0         # not carried here under an in-kernel policy (skip_to)

    def stats(self):
        return {k: getattr(self, k) for k in (
            "segments", "duplicate_bytes", "out_of_order", "delivered_bytes", "overflow_bytes",
            "abandoned_bytes", "ahead_bytes", "ended", "reset", "synced", "restarts",
            "skipped_bytes")}


class Reassembler:
    """feed(key, seq, flags, payload) -> bytes newly available in order for ``key``."""

    def __init__(self, max_ahead_bytes=4 << 20, accept_midstream=True):
        self.streams = {}
        self.max_ahead_bytes = max_ahead_bytes
        self.accept_midstream = accept_midstream
        self.orphans = 0  # segments before any SYN when accept_midstream is False

    def stream(self, key):
        return self.streams.get(key)

    def feed(self, key, seq, flags, payload=b""):
        st = self.streams.get(key)
        if flags & SYN:
            if st is None or (st.isn != seq and (st.ended or st.synced)):
                restarts = 0 if st is None else st.restarts + 1
                st = self.streams[key] = Stream(seq)
                st.restarts = restarts
            elif not st.synced:  # adopted mid-stream, now learn the real start: keep going
                st.synced = True
            st.segments += 1
            seq = (seq + 1) & _M32  # SYN occupies one sequence number; data (TFO) follows
        elif st is None:
            if not self.accept_midstream:
                self.orphans += 1
                return b""
            st = self.streams[key] = Stream((seq - 1) & _M32, synced=False)
            st.segments += 1
        else:
            st.segments += 1
        if st.ended:
            if st.reset and payload:  # past the delivered end: too late, never a duplicate
                d = ((seq - st.nxt32 + _HALF) & _M32) - _HALF
                old = min(len(payload), max(0, -d))
                st.duplicate_bytes += old
                if old < len(payload):
                    self._abandon(st, st.nxt + d + old, st.nxt + d + len(payload))
            else:
                st.duplicate_bytes += len(payload)
            return b""
        seg_abs = st.nxt + (((seq - st.nxt32 + _HALF) & _M32) - _HALF)
        out = self._data(st, seq, payload) if payload else b""
        if flags & FIN:
            st.fin_at = seg_abs + len(payload)
        if flags & RST:
            st.ended = st.reset = True
            # What waits after a hole can never be delivered now: count it, free it.
            for start in st.starts:
                self._abandon(st, start, start + len(st.ahead[start]))
            st.ahead, st.starts, st.ahead_bytes = {}, [], 0
        elif st.fin_at is not None and st.nxt >= st.fin_at:
            st.ended = True
        return out

    def skip_to(self, key, seq) -> None:
        """An in-kernel delivery policy evaluated everything before ``seq`` and passed none
        of it on as raw bytes (bpf/deliver.h: the record's ``base``; whole records it chose
        go straight to the decision step): continue from there.
        Never moves backwards; the bytes skipped are counted in ``skipped_bytes``."""
        st = self.streams.get(key)
        if st is None or st.ended:
            return
        d = ((seq - st.nxt32 + _HALF) & _M32) - _HALF
        if d > 0:
            st.nxt += d
            st.nxt32 = seq & _M32
            st.skipped_bytes += d

    def _data(self, st, seq, payload):
        # signed distance of seq from the next expected byte (modulo 2**32)
        d = ((seq - st.nxt32 + _HALF) & _M32) - _HALF
        n = len(payload)
        if d == 0 and not st.starts:  # fast path: the next segment, no holes
            self._advance(st, n)
            return payload
        if d + n <= 0:  # entirely old: a retransmission
            st.duplicate_bytes += n
            return b""
        if d < 0:  # overlaps what we have: keep the new tail
            st.duplicate_bytes += -d
            payload = payload[-d:]
            d = 0
        if d > 0:  # after a hole: keep it for later
            st.out_of_order += 1
            self._store(st, st.nxt + d, payload)
            return b""
        parts = [payload]
        self._advance(st, len(payload))
        self._pull(st, parts)
        return b"".join(parts)

    def _store(self, st, start, payload):
        old = st.ahead.get(start)
        if old is not None and len(old) >= len(payload):
            st.duplicate_bytes += len(payload)
            return
        grow = len(payload) - (len(old) if old is not None else 0)
        if st.ahead_bytes + grow > self.max_ahead_bytes:
            st.overflow_bytes += len(payload)
            return
        if old is None:
            insort(st.starts, start)
        else:
            st.duplicate_bytes += len(old)
        st.ahead[start] = payload
        st.ahead_bytes += grow

    def _pull(self, st, parts):
        while st.starts and st.starts[0] <= st.nxt:
            start = st.starts.pop(0)
            seg = st.ahead.pop(start)
            st.ahead_bytes -= len(seg)
            skip = st.nxt - start
            if skip >= len(seg):
                st.duplicate_bytes += len(seg)
                continue
            st.duplicate_bytes += skip
            seg = seg[skip:]
            parts.append(seg)
            self._advance(st, len(seg))

    @staticmethod
    def _abandon(st, start, end):
        """Count [start, end) in abandoned_bytes, bytes already counted there as duplicates."""
        new, merged = end - start, []
        lo, hi = start, end
        for a, b in st.gone:  # few: one per hole-separated run
            if b < start or a > end:
                merged.append((a, b))
            else:
                new -= max(0, min(b, end) - max(a, start))
                lo, hi = min(lo, a), max(hi, b)
        merged.append((lo, hi))
        merged.sort()
        st.gone = merged
        st.abandoned_bytes += new
        st.duplicate_bytes += end - start - new

    @staticmethod
    def _advance(st, n):
        st.nxt += n
        st.nxt32 = (st.nxt32 + n) & _M32
        st.delivered_bytes += n

    def stats(self):
        return {f"{k[0]}:{k[1]}": s.stats() for k, s in self.streams.items()}
