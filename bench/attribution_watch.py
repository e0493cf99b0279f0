#!/usr/bin/env python3
"""Trace every hardworker trial from outside (root namespace), for figures before the role
does it itself: finds each new roles.hardworker process, traces its CPU over its window,
and appends one JSON line per trial to the output file.

    .venv/bin/python bench/attribution_watch.py OUT.jsonl &   # then run the trials
"""
import ctypes
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from roles.attribution import Tracer  # noqa: E402
from roles.attribution_cost import ns_per_event  # noqa: E402


def hardworkers():
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                cmd = open(f"/proc/{p}/cmdline", "rb").read().split(b"\0")
            except OSError:
                continue
            if b"roles.hardworker" in cmd and b"--config" in cmd:
                yield int(p), cmd[cmd.index(b"--config") + 1].decode()


def prog_stats_by_ifname(ns, ifname):
    """run_time_ns/run_cnt of the XDP program on ns/ifname (BPF_PROG_GET_FD_BY_ID)."""
    import subprocess
    out = subprocess.run(["ip", "-n", ns, "-d", "link", "show", "dev", ifname], capture_output=True, text=True).stdout
    import re
    m = re.search(r"prog/xdp id (\d+)", out)
    if not m:
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    attr = ctypes.create_string_buffer(int(m.group(1)).to_bytes(4, "little").ljust(16, b"\0"))
    fd = libc.syscall(321, 13, attr, 16)
    if fd < 0:
        return None

    def stats():
        d = {}
        for line in open(f"/proc/self/fdinfo/{fd}"):
            k, _, v = line.partition(":")
            if k in ("run_time_ns", "run_cnt"):
                d[k] = int(v)
        return d
    return stats


def main(out):
    tr = None
    seen = set()
    while True:
        for pid, cfgp in list(hardworkers()):
            if pid in seen:
                continue
            seen.add(pid)
            try:
                cfg = json.load(open(cfgp))
                cpus = sorted(os.sched_getaffinity(pid))
                if tr is None:
                    tr = Tracer(cpus, pids=[pid])
                    cost = ns_per_event(tr)
                tr.set_pids([pid])
                go = os.path.join(cfg["out_dir"], "go.json")
                while not os.path.exists(go) and os.path.exists(f"/proc/{pid}"):
                    time.sleep(0.05)
                start_at = json.load(open(go))["start_at"]
                ws = start_at + cfg["warmup_s"]
                time.sleep(max(0, ws - time.time()))
                if cfg["mode"] == "xdp":
                    tr.prog_stats = prog_stats_by_ifname(f"{cfg['lab_ns'] if 'lab_ns' in cfg else 'tsk-hardworker'}", cfg["interface"])
                else:
                    tr.prog_stats = None
                tr.open()
                time.sleep(cfg["duration_s"])
                tr.close()
                r = tr.result(ns_per_event=cost["ns_per_event"], dispatch_ns=cost["dispatch_ns"])
                r.pop("series")
                r.update(mode=cfg["mode"], rate=cfg["rate_hz"], wakeup=cfg["wakeup"], trial=cfg["trial"], pid=pid)
                with open(out, "a") as f:
                    f.write(json.dumps(r, default=str) + "\n")
                print(cfg["trial"], cfg["mode"], "busy", r.get("proc_busy_s"), flush=True)
            except Exception as exc:  # noqa: BLE001
                print("trial failed:", pid, exc, flush=True)
        time.sleep(0.2)


if __name__ == "__main__":
    main(sys.argv[1])
