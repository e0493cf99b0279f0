"""The progress count kept in a mapped file (roles.counterfile): read by name as a whole
number, updated in place without a system call."""

import os
import subprocess

import pytest

from roles import counterfile
from roles.counterfile import WIDTH, CounterFile
from tcpskim import liveness


def _io():
    with open("/proc/self/io") as f:
        return {k: int(v) for k, v in (line.split(": ") for line in f)}


def test_the_file_reads_as_the_count_and_stays_the_same_file(tmp_path):
    p = tmp_path / "hardworker-0.delivered"
    c = CounterFile(p)
    assert p.read_text() == "0" * WIDTH + "\n"  # a count from the start
    inode = os.stat(p).st_ino
    for n in (5, 1234, 2**64 - 1):
        c.set(n)
        assert int(p.read_text()) == n and p.read_text().endswith("\n")
        r = subprocess.run(["sh", "-c", f'read n < "{p}" && echo "dlv $n"'], capture_output=True, text=True)
        assert liveness.parse(r.stdout).delivered == n  # as the control side's poll reads it
    assert os.stat(p).st_ino == inode and os.stat(p).st_size == WIDTH + 1  # rewritten in place
    c.close()


@pytest.mark.skipif(not os.path.exists("/proc/self/io"), reason="needs Linux's per-process I/O counts")
def test_an_update_makes_no_read_or_write_call(tmp_path):
    """/proc/self/io counts the read- and write-type system calls (syscr, syscw) of the process."""
    c = CounterFile(tmp_path / "sensor-1.sent")
    a = _io()
    base = _io()  # the reads of /proc/self/io themselves
    for n in range(1000):
        c.set(n)
    b = _io()
    assert b["syscw"] - base["syscw"] == base["syscw"] - a["syscw"]
    assert b["syscr"] - base["syscr"] == base["syscr"] - a["syscr"]
    assert int((tmp_path / "sensor-1.sent").read_text()) == 999
    c.close()


def test_a_file_left_by_an_earlier_run_is_taken_over(tmp_path):
    p = tmp_path / "sensor-1.sent"
    p.write_text("123456789012345678901234567890\nold\n")
    CounterFile(p, 7)
    assert p.read_text() == f"{7:0{WIDTH}d}\n"


def test_where_a_file_cannot_be_mapped_an_update_is_a_write_in_place(tmp_path, monkeypatch):
    def refused(*a, **k):
        raise OSError(19, "No such device")  # 9p without cache=mmap, FUSE direct_io

    monkeypatch.setattr(counterfile.mmap, "mmap", refused)
    p = tmp_path / "hardworker-0.delivered"
    c = CounterFile(p, 3)
    inode = os.stat(p).st_ino
    c.set(12)
    assert p.read_text() == f"{12:0{WIDTH}d}\n" and os.stat(p).st_ino == inode
    fd = c._fd
    c.close()
    with pytest.raises(OSError):
        os.fstat(fd)  # closed with it
