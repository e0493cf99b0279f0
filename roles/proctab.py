"""What /proc says about a process: its argv while it lives (stdlib only).

Shared by ``roles.procs`` (roles) and ``roles.guardctl`` (the guard), which both count a pid
as theirs only while its command line says so, so a reused pid is never signalled.
"""

from __future__ import annotations


def live_argv(pid: int):
    """The argv of a live (non-zombie) process, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                return None
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except (OSError, IndexError):
        return None
