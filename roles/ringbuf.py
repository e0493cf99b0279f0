"""Callback-free consumer of a BPF_MAP_TYPE_RINGBUF map, in pure Python.

A Python callback per record (bcc's ``ring_buffer_poll``) costs ~30 µs per record; reading
the shared memory directly costs ~1 µs. Layout (kernel/bpf/ringbuf.c, libbpf ringbuf.c):

* mmap(map_fd, offset 0, 1 page, read-write): the consumer position (u64), written by us;
* mmap(map_fd, offset 1 page, 1 page + 2*size, read-only): the producer position (u64), then
  the data area mapped twice back to back, so a record never wraps;
* a record = 8-byte header (u32 length, bit 31 busy, bit 30 discarded; u32 page offset),
  then the sample, padded to 8 bytes. Positions only grow; ``pos & (size-1)`` is the offset.

Memory ordering. The kernel publishes with release semantics: the header (busy) is written
before ``producer_pos`` advances, the sample before the busy bit is cleared (xchg). Python has
no acquire loads, and on arm64 a later load may be satisfied before an earlier one. So a drain
runs in three phases with a full fence between them, one fence per *batch*, not per record:
load producer_pos -> fence -> read headers up to the first busy one -> fence -> copy the
samples -> fence -> store consumer_pos (our reads of the area finish before the producer may
reuse it). The fence is ``dmb ish`` on arm64 (4 bytes of machine code in an executable page,
called through ctypes, ~0.2 µs) and nothing on x86-64, whose TSO never reorders loads with
loads or stores with older loads. 8-byte positions are read and written by struct with a
native ``Q``: one aligned 64-bit access (single-copy atomic) on both architectures.

Acquire/release, pairing by pairing (the kernel side is kernel/bpf/ringbuf.c):
  producer: write header (busy) -> smp_store_release(producer_pos)  ... our load of
            producer_pos, then fence 1, makes it an acquire: headers below it are visible;
  producer: write sample -> xchg(header, len without busy) (full barrier) ... our load of a
            header without the busy bit, then fence 2, is an acquire: its sample is complete;
  consumer: copy samples -> fence 3 -> store consumer_pos: a release, so the producer's
            smp_load_acquire(consumer_pos) never lets it overwrite what we still read.

What scripts/arm64-check shows and does not show. It runs this reader on arm64 kernels under
QEMU TCG (4 and 16 KiB pages): the layout, the page-size offsets, the double mapping and the
``dmb ish`` fence code (executed, so at least valid machine code) are exercised for real. The
ordering is not: the VM has one vCPU (producer and consumer interleave only at interrupts and
syscalls, which order everything), and TCG on an x86-64 host does not make guest accesses
weaker than the host's TSO. Whether the three fences suffice on a real weakly ordered CPU is
argued above, not tested; a Pi running tests/test_xdp_datapath.py (producer in softirq on one
core, consumer on another) is the test that would show a missing one.
"""

import ctypes
import mmap
import platform
import select
import struct
import time

BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30
HDR_SZ = 8
_U64 = struct.Struct("=Q")
_U32 = struct.Struct("=I")


def _make_fence():
    """A full memory barrier callable from Python, or a no-op where loads are not reordered."""
    arch = platform.machine().lower()
    if arch in ("x86_64", "amd64", "i686", "i386"):
        return lambda: None
    if arch in ("aarch64", "arm64"):
        code = struct.pack("<II", 0xD5033BBF, 0xD65F03C0)  # dmb ish ; ret
    elif arch.startswith("armv7") or arch.startswith("armv8l"):
        code = struct.pack("<II", 0xF57FF05B, 0xE12FFF1E)  # dmb ish ; bx lr
    else:
        code = None
    if code is not None:
        try:
            page = mmap.mmap(-1, mmap.PAGESIZE,
                             prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
            page.write(code)
            addr = ctypes.addressof(ctypes.c_char.from_buffer(page))
            fn = ctypes.CFUNCTYPE(None)(addr)
            fn._page = page  # keep the mapping alive with the function
            fn()
            return fn
        except (OSError, ValueError, TypeError):
            pass
    # Unknown arch or no executable mappings: a syscall. Not a documented barrier, but the
    # kernel entry/exit path on weakly ordered CPUs contains full barriers in practice.
    import os

    return os.getppid


fence = _make_fence()


class RingReader:
    """Reads records of one BPF ring buffer map without a callback per record.

    ``size`` is the map's max_entries (data area bytes, a power of two).
    """

    def __init__(self, map_fd, size, edge=False):
        if size <= 0 or size & (size - 1):
            raise ValueError(f"ring buffer size must be a power of two, got {size}")
        page = mmap.PAGESIZE
        self.fd = map_fd
        self.size = size
        self.mask = size - 1
        self._cons = mmap.mmap(map_fd, page, mmap.MAP_SHARED,
                               mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._prod = mmap.mmap(map_fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ,
                               offset=page)
        self._mv = memoryview(self._prod)
        self._data_off = page
        self._ep = select.epoll()
        # edge (the coalesce wake-up): return only on the producer's forced wake-ups or the
        # timeout. Level-triggered, any record left in the ring makes the next wait return
        # at once, which would undo the coalescing the program chose.
        self.edge = edge
        self._ep.register(map_fd, select.EPOLLIN | (select.EPOLLET if edge else 0))
        self.records = 0
        self.discarded = 0

    def pending(self):
        """True when the producer is ahead of the consumer (something committed or in flight)."""
        return _U64.unpack_from(self._prod, 0)[0] != _U64.unpack_from(self._cons, 0)[0]

    def wait(self, timeout_ms):
        """Block until the kernel wakes us or ``timeout_ms`` passed. True if data may be ready.

        With BPF_RB_NO_WAKEUP producers there is no wake-up: callers poll on a period.
        Edge-triggered, it waits for a wake-up even when records are pending.
        """
        if self.edge:
            return bool(self._ep.poll(timeout_ms / 1000.0 if timeout_ms >= 0 else -1))
        if self.pending():
            return True
        return bool(self._ep.poll(timeout_ms / 1000.0 if timeout_ms >= 0 else -1)) or self.pending()

    def drain(self, max_records=None, parse=None):
        """Consume committed records in ring order; returns a list of ``bytes`` (the samples).

        With ``parse(mem, spans)`` the records are not copied out first: ``parse`` gets the
        mapped memory and the (start, end) offsets of each sample, must copy out what it keeps
        (the space is handed back to the producer on return), and its result is returned."""
        mv = self._mv
        data_off = self._data_off
        mask = self.mask
        unpack32 = _U32.unpack_from
        cons = _U64.unpack_from(self._cons, 0)[0]
        prod = _U64.unpack_from(self._prod, 0)[0]
        if cons == prod:
            return []
        fence()  # headers below prod are at least marked busy
        spans = []
        pos = cons
        limit = max_records if max_records is not None else 1 << 62
        while pos < prod and len(spans) < limit:
            off = data_off + (pos & mask)
            hdr = unpack32(mv, off)[0]
            if hdr & BUSY_BIT:
                break
            ln = hdr & ~(BUSY_BIT | DISCARD_BIT)
            if not hdr & DISCARD_BIT:
                spans.append((off + HDR_SZ, off + HDR_SZ + ln))
            else:
                self.discarded += 1
            pos += (ln + HDR_SZ + 7) & ~7
        if pos == cons:
            return []
        fence()  # samples of headers seen committed are complete
        mm = self._prod
        out = [mm[a:b] for a, b in spans] if parse is None else parse(mm, spans)
        fence()  # our copies are done before the producer may reuse the space
        _U64.pack_into(self._cons, 0, pos)
        self.records += len(spans)
        return out

    def close(self):
        if self._ep is not None:
            self._ep.close()
            self._ep = None
            self._mv.release()
            self._prod.close()
            self._cons.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def benchmark(reader, produce, total, batch=100):
    """µs of process CPU per record for draining ``total`` records.

    ``produce(n)`` must make the kernel submit n records (e.g. send n packets); its own CPU
    is excluded by measuring only around ``drain``. Returns (us_per_record, records_seen).
    """
    seen = 0
    cpu = 0.0
    while seen < total:
        produce(min(batch, total - seen))
        deadline = time.monotonic() + 2.0
        while True:
            t0 = time.process_time()
            got = reader.drain()
            cpu += time.process_time() - t0
            seen += len(got)
            if seen % batch == 0 or seen >= total or time.monotonic() > deadline:
                break
        if time.monotonic() > deadline:
            break
    return (cpu * 1e6 / seen if seen else float("nan")), seen
