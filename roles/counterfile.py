"""A progress count other processes read by name, kept in a shared mapping of its file.

The hardworker updates its delivered count once a second on the CPU it measures, and the
sensor its sent count inside its paced loop. The control side reads them over SSH with a
shell ``read n < file`` (``tcpskim.liveness``), only to show a progress bar.

Writing such a file through a rename cost 0.35 ms of CPU a write on the lab's VM (open, write,
close, rename), and ext4 flushes a file renamed over another at once, so each write also
brought a disk I/O whose completion ran on the same CPU (``softirq BLOCK`` in the hardworker's
attribution). Here an update is a store into the page cache: no system call, no flush of its
own. The kernel writes the dirty page back with everything else (a flusher thread), and the
first store after that write-back takes one page fault.

The count is written zero-padded to a fixed width, so the file always reads as a whole
number: a read racing a store can at worst see two counts' digits mixed, a number shown for
one second in a progress bar and never used for a result. On a file system that cannot map
a file shared and writable (9p without cache=mmap, FUSE direct_io) an update is one pwrite
in place instead: a progress bar is no reason for a role to fail.
"""

import mmap
import os

WIDTH = 20  # digits: any u64
_SIZE = WIDTH + 1  # with the newline


class CounterFile:
    """``set(n)``: the file at ``path`` reads ``n`` (zero-padded, one line) from now on."""

    def __init__(self, path, value: int = 0):
        self._mm = self._fd = None
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            os.ftruncate(fd, _SIZE)
            self._mm = mmap.mmap(fd, _SIZE)  # MAP_SHARED: stores reach the file
        except (OSError, ValueError):
            self._fd = fd  # no shared mapping here: pwrite in place
        else:
            os.close(fd)  # the mapping keeps the file
        self.set(value)

    def set(self, value: int) -> None:
        line = b"%0*d\n" % (WIDTH, value)
        if self._mm is not None:
            self._mm[:] = line
        else:
            os.pwrite(self._fd, line, 0)

    def close(self) -> None:
        if self._mm is not None:
            self._mm.close()
        if self._fd is not None:
            os.close(self._fd)
        self._mm = self._fd = None
