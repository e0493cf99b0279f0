"""The liveness poll of a trial: the shell command the control side runs on each host every
second while the roles run, and the parser of what it prints. Both live here so they change
together.

The command runs during the measurement window, on the hosts being measured, so it is shell
builtins only (no Python, no extra processes) except for ``tail``/``sed`` when a progress bar
wants the hardworker's delivered count. It prints one line per fact:

    run <role>-<i>     a pidfile in <state_dir>/pids names a live process
    sum <role>-<i>     <out_dir>/<role>-<i>.summary.json exists (the role finished its work)
    smp <csv row>      progress only: the hardworker's newest CPU sample
                       (t,cpu_busy_s,process_cpu_s,delivered; rows end in \\r\\n)
    sent <n>           progress only: one sensor's records sent so far (sensor-<i>.sent)

A missing folder prints nothing for it; the command always exits 0.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass


@dataclass(frozen=True)
class Liveness:
    """One host's answer: role names running and role names with a summary, plus counts."""
    running: frozenset[str] = frozenset()
    summarised: frozenset[str] = frozenset()
    sent: int = 0  # sum over the host's sensors
    delivered: int | None = None  # the hardworker's, when this host has one and progress asked


def command(state_dir: str, out_dir: str, progress: bool = False) -> str:
    pids, out = shlex.quote(state_dir + "/pids"), shlex.quote(out_dir)
    counts = ("for f in hardworker-0.delivered; do [ -e \"$f\" ] && read n < \"$f\" && echo \"dlv $n\"; done; "
              "for f in sensor-*.sent; do [ -e \"$f\" ] && read n < \"$f\" && echo \"sent $n\"; done; "
              if progress else "")
    return (f"cd {pids} 2>/dev/null && for f in *.pid; do p=; [ -e \"$f\" ] && read p < \"$f\"; "
            f"[ -n \"$p\" ] && kill -0 \"$p\" 2>/dev/null && echo \"run ${{f%.pid}}\"; done; "
            f"cd {out} 2>/dev/null && for f in *.summary.json; do [ -e \"$f\" ] && "
            f"echo \"sum ${{f%.summary.json}}\"; done; {counts}true")


def parse(stdout: str) -> Liveness:
    """The command's output as a Liveness; lines it does not know are ignored."""
    running, summarised, sent, delivered = set(), set(), 0, None
    for line in stdout.split("\n"):
        kind, _, rest = line.partition(" ")
        rest = rest.strip()
        if kind == "run" and rest:
            running.add(rest)
        elif kind == "sum" and rest:
            summarised.add(rest)
        elif kind == "dlv" and rest.isdigit():
            delivered = int(rest)
        elif kind == "sent" and rest.isdigit():
            sent += int(rest)
    return Liveness(frozenset(running), frozenset(summarised), sent, delivered)
