"""Benchmark: µs of CPU per record, RingReader (mmap, no callback) vs bcc's per-record callback.

Root + bcc. No network traffic: records are produced by BPF_PROG_TEST_RUN of the real
hardworker program on a crafted 1024-byte segment (LOGGER_IP = HW_IP, so the rewrite leaves
the frame matching for every repetition). Only the consumer's CPU is measured.

    .venv/bin/python tests/bench_ringbuf.py [--records 20000] [--batch 100]
"""

import argparse
import ctypes
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from roles import xdp  # noqa: E402
from roles.skim import HardworkerSkim  # noqa: E402


def make():
    hw = HardworkerSkim(interface="lo", hw_ip="198.18.0.211", hw_mac="02:00:00:00:00:d3",
                        logger_ip="198.18.0.211", logger_mac="02:00:00:00:00:d4", tos=0x68,
                        port=12345, wakeup="batch", ringbuf_bytes=1 << 22)
    fd = hw.bpf.load_func(b"xdp_hardworker", hw.bpf.XDP).fd
    return hw, fd


def frame():
    from scapy.all import IP, TCP, Ether, Raw

    return bytes(Ether(dst="02:00:00:00:00:d3", src="02:00:00:00:00:d2")
                 / IP(src="198.18.0.210", dst="198.18.0.211", tos=0x68)
                 / TCP(sport=40000, dport=12345, seq=1, flags="PA") / Raw(b"r" * 1024))


def bench_reader(records, batch, parse):
    hw, fd = make()
    f = frame()
    cpu = n = 0
    xdp_ns = 0
    try:
        while n < records:
            _, _, xdp_ns = xdp.prog_test_run(fd, f, repeat=batch)
            before = hw.reader.records  # records the program wrote (drain() may join them)
            t0 = time.process_time()
            hw.drain() if parse else hw.reader.drain()
            cpu += time.process_time() - t0
            n += hw.reader.records - before
        return cpu * 1e6 / n, n, xdp_ns
    finally:
        hw.close()


def bench_callback(records, batch):
    """bcc's own object (the role's is pre-compiled and has no bcc ring buffer)."""
    from bcc import BPF

    from roles import bpfmap

    hw0, _ = make()
    hw0.close()
    hw = BPF(src_file=os.path.join(xdp.BPF_DIR, "hardworker.c").encode(), cflags=hw0.flags)
    bpfmap.fill(hw[b"skim_addrs"].map_fd, [("198.18.0.211", "02:00:00:00:00:d3"),
                                         ("198.18.0.211", "02:00:00:00:00:d4")])
    fd = hw.load_func(b"xdp_hardworker", BPF.XDP).fd
    f = frame()
    seen = [0]
    rb = hw[b"events"]

    def cb(ctx, data, size):
        rec = ctypes.string_at(data, size)  # copy the record out, as the mmap reader does
        seen[0] += rec is not None

    rb.open_ring_buffer(cb)
    cpu = 0
    try:
        while seen[0] < records:
            xdp.prog_test_run(fd, f, repeat=batch)
            t0 = time.process_time()
            hw.ring_buffer_consume()
            cpu += time.process_time() - t0
        return cpu * 1e6 / seen[0], seen[0]
    finally:
        hw.cleanup()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--records", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=100, help="records produced between drains")
    a = ap.parse_args()
    us, n, xdp_ns = bench_reader(a.records, a.batch, parse=False)
    print(f"RingReader.drain            {us:6.2f} us/record  ({n} records, batch {a.batch})")
    us, n, _ = bench_reader(a.records, a.batch, parse=True)
    print(f"HardworkerSkim.drain (parse) {us:5.2f} us/record  ({n} records)")
    us, n = bench_callback(a.records, a.batch)
    print(f"bcc ring_buffer_consume+cb  {us:6.2f} us/record  ({n} records)")
    print(f"XDP program (test run)      {xdp_ns / 1000:6.2f} us/run")


if __name__ == "__main__":
    main()
