"""Reader of the xdp ``latest`` policy's mailbox: the newest record of each sensor, read from
an mmapable BPF array without a system call (bpf/deliver.h, struct skim_slot).

Each slot is ``u64 lock | u64 updates | record bytes``, padded to 8 bytes. The writer (the
one CPU running that flow's receive path) makes ``lock`` odd, copies the record, makes it
even again, each time with a fully ordered atomic add. A reader copies the slot between two
reads of ``lock`` and keeps the copy only when both saw the same even value: a torn read is
detected and retried, never used.

Ordering on arm64 (the Pis): the reader's three steps must not be reordered with each other
(load lock -> copy record -> load lock again), which x86's TSO guarantees for loads and arm64
does not; ``roles.ringbuf``'s fence (``dmb ish``) goes between them. An emulated arm64 run
(TCG on x86) does not reorder either, so this reasoning, not a test, is the proof there.
"""

import mmap
import struct

from roles.ringbuf import _make_fence

_HEAD = struct.Struct("=QQ")  # lock, updates
RETRIES = 100


class TornRead(RuntimeError):
    """A slot kept changing under the reader (the writer never paused): not expected."""


class Mailbox:
    """``read(slot)`` -> (updates, record bytes) or None when nothing was ever written;
    ``changed(seen)`` -> the slots whose update count is not ``seen[slot]``."""

    def __init__(self, map_fd: int, slots: int, record_len: int):
        self.slots, self.record_len = slots, record_len
        self.stride = (_HEAD.size + record_len + 7) & ~7
        size = self.stride * slots
        size = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE * mmap.PAGESIZE
        self._mm = mmap.mmap(map_fd, size, mmap.MAP_SHARED, mmap.PROT_READ)
        self._view = memoryview(self._mm)
        self._fence = _make_fence()
        self.torn = 0  # reads retried because the writer was mid-copy
        # every slot's update count in one strided view (the stride is a multiple of 8)
        self._updates = self._view.cast("Q")[1::self.stride // 8][:slots]

    def changed(self, seen: dict) -> list:
        """Slots written since ``seen`` ({slot: updates at the last read}) was taken: one C-level
        copy of the 64 counters, where a read of each slot was 64 Python calls per decision.
        Only a hint: a slot it names is read under the lock; one it misses mid-write is
        named at the next call."""
        return [i for i, u in enumerate(self._updates.tolist()) if u and seen.get(i) != u]

    def read(self, slot: int):
        base = slot * self.stride
        view, fence, unpack = self._view, self._fence, _HEAD.unpack_from
        for _ in range(RETRIES):
            lock, updates = unpack(view, base)
            if not updates:
                return None
            fence()
            rec = bytes(view[base + _HEAD.size:base + _HEAD.size + self.record_len])
            fence()
            lock2 = unpack(view, base)[0]
            if lock == lock2 and not lock & 1:
                return updates, rec
            self.torn += 1
        raise TornRead(f"mailbox slot {slot}: no consistent read in {RETRIES} tries")

    def close(self):
        self._updates.release()
        self._view.release()
        self._mm.close()
