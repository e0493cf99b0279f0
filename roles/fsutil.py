"""Replacing a file atomically: readers see the old file or the whole new one, never a partial write.

One rule for both halves (the host half's pid, ready, progress and summary files, the guard's
state, the control side's known_hosts, lab state, run folder, report and fetched files): the new
content goes to a temporary file beside the target (same directory, so ``os.replace`` is a
rename on one file system), is flushed and, unless told otherwise, fsynced, then replaces the
target. On any error the temporary file is removed and the target is untouched. A symlinked
target is written through to the file it points at.

Temporary names are ``.<name>.<pid>.<n>.tmp<suffix>``: hidden, unique per process and call,
and ending in ``.tmp`` (or ``.tmp.png`` with ``suffix=".png"``, for writers that pick the format
by the suffix), so listings that skip ``*.tmp`` never pick one up.

The progress counts a role updates every second while it is measured are not replaced
files but mapped ones (``roles.counterfile``).

Standard library only; works on Windows too (the control side).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import stat

_seq = itertools.count()


@contextlib.contextmanager
def replacing(path, *, mode: int | None = None, keep_mode: bool = False, fsync: bool = True,
              suffix: str = ""):
    """Yield a temporary path (str) to write; on a clean exit it replaces ``path``.

    ``mode``: the new file's permission bits (None: the umask's default, as ``open`` gives).
    ``keep_mode``: an existing target's mode (and owner, where allowed) win over ``mode``.
    ``fsync``: flush the data to disk before the rename (off for advisory files).
    """
    target = os.path.realpath(path)
    tmp = _temporary(target, suffix)
    old = _stat(target) if keep_mode else None
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        if fsync:
            fd = os.open(tmp, os.O_RDWR)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        if old is not None:
            os.chmod(tmp, stat.S_IMODE(old.st_mode))
            _chown_like(tmp, old)
        elif mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write(path, data: str | bytes, **how) -> None:
    """Replace ``path`` with ``data`` (str is written as UTF-8); ``how``: see ``replacing``."""
    raw = data.encode() if isinstance(data, str) else data
    with replacing(path, **how) as tmp:
        with open(tmp, "wb") as f:
            f.write(raw)


def _temporary(target: str, suffix: str = "") -> str:
    """The temporary name beside ``target`` (see the module docstring)."""
    parent, name = os.path.split(target)
    return os.path.join(parent, f".{name}.{os.getpid()}.{next(_seq)}.tmp{suffix}")


def _stat(path):
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


def _chown_like(tmp, old) -> None:
    """Keep the old file's owner when it is not ours (root editing a user's file); no-op on Windows."""
    if not hasattr(os, "geteuid") or (old.st_uid, old.st_gid) == (os.geteuid(), os.getegid()):
        return
    with contextlib.suppress(OSError):
        os.chown(tmp, old.st_uid, old.st_gid)
