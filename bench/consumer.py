#!/usr/bin/env python3
"""Benchmark: the hardworker's userspace cost per record under ``all``, xdp against tcp, with
no kernel and no lab: what each mode's Python does with one batch of records.

    .venv/bin/python bench/consumer.py [--records 20000] [--batch 20] [--size 1024] [--repeat 7]

xdp: the ring's entries (struct skim_rec + payload in an mmap, as the program writes them)
-> ``HardworkerSkim._parse`` -> ``consume_batch`` (reassembly) -> the decision step; once as
the role runs it (a flow's in-order segments joined into one entry) and once with one entry
per segment (the parse before the join). tcp: the bytes one drain's ``recv`` returns -> the
same decision step. Prints the median µs of process CPU per record over the repeats, each
path timed in every repeat, in an order that rotates. Excludes what the kernel does for either
mode (the ring's epoll, tcp's recv copy): ``bench/deliver.py`` measures the whole role on the
lab.
"""

from __future__ import annotations

import argparse
import mmap
import socket
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from roles.hardworker import Decider, consume_batch  # noqa: E402
from roles.reassembly import Reassembler  # noqa: E402
from roles.record import encode  # noqa: E402
from roles.skim import HardworkerSkim  # noqa: E402
from roles.transport import Stream  # noqa: E402
from roles.vocab import ACK, PSH, RING_RECORD, SYN  # noqa: E402

KEY = ("198.18.0.10", 40000)
ISN = 1000


def ring_batches(recs, batch):
    """Each batch as RingReader hands it to the parse: the mapped memory and the spans."""
    out, seq, addr = [], ISN + 1, socket.inet_aton(KEY[0])
    for b in range(0, len(recs), batch):
        buf, spans = bytearray(), []
        for r in recs[b:b + batch]:
            start = len(buf)
            buf += RING_RECORD.pack(addr, KEY[1], ACK | PSH, 0, seq, len(r), 0) + r
            spans.append((start, len(buf)))
            buf += bytes(-len(buf) % 8)
            seq = (seq + len(r)) & 0xFFFFFFFF
        mem = mmap.mmap(-1, len(buf))
        mem.write(bytes(buf))
        out.append((mem, spans))
    return out


def xdp_us(batches, n, kind):
    skim = SimpleNamespace(deliver=SimpleNamespace(kind=kind), coalesced=0)  # "all": joined
    dec, streams, reasm = Decider(0, 0, 1e12), {}, Reassembler()
    reasm.feed(KEY, ISN, SYN)
    t0 = time.process_time()
    for mem, spans in batches:
        consume_batch(HardworkerSkim._parse(skim, mem, spans), streams, reasm, dec, time.time_ns())
    dt = time.process_time() - t0
    assert dec.counter.delivered == n, dec.counter.summary()
    return dt / n * 1e6


def tcp_us(chunks, n):
    dec, st = Decider(0, 0, 1e12), Stream(KEY)
    t0 = time.process_time()
    for c in chunks:
        dec.feed(st, c, time.time_ns())
    dt = time.process_time() - t0
    assert dec.counter.delivered == n, dec.counter.summary()
    return dt / n * 1e6


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=20, help="records per drain (2 kHz x 10 ms: 20)")
    ap.add_argument("--size", type=int, default=1024, help="payload bytes per record")
    ap.add_argument("--repeat", type=int, default=7)
    a = ap.parse_args(argv)
    recs = [encode(1, i, time.time_ns(), a.size) for i in range(a.records)]
    batches = ring_batches(recs, a.batch)
    chunks = [b"".join(recs[b:b + a.batch]) for b in range(0, a.records, a.batch)]
    paths = {"xdp, joined (as the role runs)": lambda: xdp_us(batches, a.records, "all"),
             "xdp, an entry per segment": lambda: xdp_us(batches, a.records, "per-segment"),
             "tcp": lambda: tcp_us(chunks, a.records)}
    runs = {k: [] for k in paths}
    names = list(paths)
    for i in range(a.repeat):  # the order rotates: no path always runs first (the machine drifts)
        for k in names[i % 3:] + names[:i % 3]:
            runs[k].append(paths[k]())
    med = {k: statistics.median(v) for k, v in runs.items()}
    print(f"userspace CPU per record, {a.records} records of {a.size} B in drains of {a.batch}, "
          f"median of {a.repeat}")
    for k, v in med.items():
        print(f"  {k:32s} {v:6.2f} µs   xdp/tcp {v / med['tcp']:.3f}" if k != "tcp" else
              f"  {k:32s} {v:6.2f} µs")


if __name__ == "__main__":
    main()
