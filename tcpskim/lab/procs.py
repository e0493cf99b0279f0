"""The lab's processes: everything inside a lab namespace (sshd, SSH sessions, roles) and any
lab sshd whose namespace is gone already; ended with ``roles.procs.terminate``.
"""

from __future__ import annotations

import os
from pathlib import Path

from roles import procs

from ..inventory import Inventory
from .names import lab_of
from .net import ns_exists, run

TERM_WAIT_S = 3.0


def lab_pids(inv: Inventory, namespaces: list[str], inodes: set[int]) -> set[int]:
    """Processes that belong to the lab: inside a lab namespace, or a lab sshd by cmdline."""
    pids: set[int] = set()
    for ns in namespaces:
        if ns_exists(ns):
            r = run(["ip", "netns", "pids", ns], check=False)
            pids.update(int(p) for p in r.stdout.split() if p.isdigit())
            try:
                inodes.add(os.stat(Path("/run/netns", ns)).st_ino)
            except OSError:
                pass
    marker = str(Path(lab_of(inv).state_dir)) + "/"
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        pid = int(p.name)
        try:
            net = os.readlink(p / "ns" / "net")
        except OSError:
            continue
        if inodes and net.startswith("net:[") and int(net[5:-1]) in inodes:
            pids.add(pid)  # in a lab namespace even if its name is gone already
            continue
        argv = procs.live_argv(pid) or []
        if argv and "sshd" in argv[0].split(" ", 1)[0] and f"-f {marker}" in " ".join(argv):
            pids.add(pid)  # a lab sshd whose namespace is gone already
    pids.discard(os.getpid())
    return pids


def end(pids: set[int]) -> str | None:
    """TERM (then KILL) the pids; a line for the report, None when there were none."""
    if not pids:
        return None
    killed = procs.terminate(pids, TERM_WAIT_S)
    return (f"{len(pids)} lab process(es): {' '.join(map(str, sorted(pids)))}"
            + (f" ({len(killed)} needed SIGKILL)" if killed else ""))
