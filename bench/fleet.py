"""Fleet operations at scale (issue 12): steady-state ``deploy`` and ``fix-network`` on a lab of
3 and of 30 hosts, wall time and host-side CPU per host.

    flock /tmp/tcpskim-lab.lock .venv/bin/python bench/fleet.py            # 3 and 30 hosts, 3 runs
    flock /tmp/tcpskim-lab.lock .venv/bin/python bench/fleet.py --hosts 3 --runs 1

Needs root (it builds a lab). The lab is its own: prefix ``tsf``, 198.18.0.128/26 (the e2e lab
is ``tse`` 198.18.0.192/26; the default lab ``tsk`` is not touched), N-2 sensors, one
hardworker, one logger, built with ``lab.up`` and always torn down, even on failure or Ctrl-C.
Each size gets one deploy + fix-network first (the hosts then have the code and their pins),
then ``--runs`` rounds of both, through the real ``invoke`` command line, each of which must
change nothing.

Host-side CPU of a task on a host is what that host's sshd listener and everything it forked
used (its own and its reaped children's utime+stime in /proc/<pid>/stat: the SSH session,
the shell, hostctl, git), read before the task and after its connections closed. Lab hosts
share one kernel and, except the hardworker, one CPU, so the wall time of 30 hosts is bounded
by that CPU. Prints medians over the runs.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from tabulate import tabulate  # noqa: E402

from helpers import lab_built, lab_inventory_text, run_invoke  # noqa: E402
from tcpskim import inventory, lab  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
TASKS = ("deploy", "fix-network")


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and of every child it reaped (recursively), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / TICK  # utime stime cutime cstime


def host_cpu(inv) -> dict[str, float]:
    return {h.name: tree_cpu(lab.sshd.pid(inv, h)) for h in inv.hosts}


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(inv, task: str) -> dict:
    """One run of ``invoke TASK``: wall, control CPU, host CPU per host; must change nothing."""
    before, ctl0 = host_cpu(inv), children_cpu()
    t0 = time.monotonic()
    r = run_invoke(inv.path, task)
    wall = time.monotonic() - t0
    if r.returncode != 0 or "(0 changed), 0 failed" not in r.stdout:
        raise SystemExit(f"{task} on {len(inv.hosts)} hosts did not come back unchanged:\n{r.stdout}{r.stderr}")
    time.sleep(0.5)  # the sessions' sshd children end and are reaped after the client closed
    after = host_cpu(inv)
    per_host = [after[n] - before[n] for n in after]
    return {"wall": wall, "control_cpu": children_cpu() - ctl0,
            "host_cpu_mean": statistics.mean(per_host), "host_cpu_max": max(per_host)}


def bench(n: int, runs: int, state: Path) -> list[dict]:
    d = state / f"hosts{n}"
    d.mkdir(parents=True)
    path = d / "inventory.toml"
    path.write_text(lab_inventory_text(d / "state", prefix="tsf", base=128, sensors=n - 2,
                                       name=f"fleet{n}", connect_timeout=10))
    inv = inventory.load(path)
    rows = []
    with lab_built(inv):
        for task in TASKS:  # the first deploy and fix-network do the work: not measured
            r = run_invoke(path, task)
            if r.returncode != 0:
                raise SystemExit(f"first {task} on {n} hosts failed:\n{r.stdout}{r.stderr}")
        got = {t: [] for t in TASKS}
        for _ in range(runs):
            for task in TASKS:
                got[task].append(timed(inv, task))
        for task in TASKS:
            med = {k: statistics.median(x[k] for x in got[task]) for k in got[task][0]}
            rows.append({"hosts": n, "task": task, **med, "runs": runs})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", default="3,30", help="comma list of lab sizes (>= 3, <= 40; default 3,30)")
    ap.add_argument("--runs", type=int, default=3, help="measured rounds per size (default 3)")
    args = ap.parse_args(argv)
    sizes = [int(x) for x in args.hosts.split(",")]
    if any(not 3 <= n <= 40 for n in sizes) or args.runs < 1:
        ap.error("sizes must be 3..40 hosts and --runs >= 1")
    if os.geteuid() != 0:
        ap.error("the lab needs root")
    rows = []
    with tempfile.TemporaryDirectory(prefix="tcpskim-fleet-bench-") as tmp:
        for n in sizes:
            rows += bench(n, args.runs, Path(tmp))
    print(tabulate([[r["hosts"], r["task"], f"{r['wall']:.2f}", f"{r['host_cpu_mean']:.3f}",
                     f"{r['host_cpu_max']:.3f}", f"{r['control_cpu']:.2f}", r["runs"]] for r in rows],
                   headers=["hosts", "task", "wall s", "host CPU s (mean)", "host CPU s (max)",
                            "control CPU s", "runs"]))
    for n in sizes:
        both = sum(r["wall"] for r in rows if r["hosts"] == n)
        print(f"{n} hosts: deploy + fix-network {both:.2f} s (medians)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
