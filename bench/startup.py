"""Role start-to-ready, xdp mode: today's compile at every start (cache empty) against the
pre-compiled programs of ``roles.bpfcache`` (issue 11, item 3, "Start-up time").

    flock /tmp/tcpskim-lab.lock .venv/bin/python bench/startup.py [--starts 5]

Needs root and bcc. Each start is the real role process (``python3 -m roles.hardworker`` /
``roles.sensor`` with a role config) in a network namespace of its own (``tsb-<pid>``, its
loopback carries 198.18.0.250-252, always removed): from spawning it until its ready file's
time. The hardworker's start loads hardworker.c and the attribution tracer (and measures the
tracer's cost per event); the sensor loads sensor.c and connects to the hardworker's address,
where a plain listener answers (its SYN-ACK comes from the hardworker's address, so the
sensor's program leaves it alone). Cold starts get an empty cache folder each (what a start
cost before the cache); warm ones share one filled once by ``hostctl precompile`` (timed too).
Cold and warm starts alternate, so drift on a shared machine hits both. Prints the medians,
the role's setup CPU (the BPF load) and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NS = f"tsb-{os.getpid()}"
HW_IP, LOGGER_IP, SENSOR_IP = "198.18.0.250", "198.18.0.251", "198.18.0.252"
HOSTS = {"hardworker": {"ip": HW_IP, "mac": "02:00:c6:12:00:fa"},
         "logger": {"ip": LOGGER_IP, "mac": "02:00:c6:12:00:fb"},
         "sensor": [{"ip": SENSOR_IP, "name": "sensor", "mac": "02:00:c6:12:00:fc"}]}


def config(role: str, out_dir: str) -> dict:
    return {"role": role, "instance": 0, "run_id": "bench", "trial": "t000", "mode": "xdp",
            "state_dir": out_dir, "out_dir": out_dir, "interface": "lo", "hosts": HOSTS,
            "sensor_host": "sensor" if role == "sensor" else None, "expected_streams": 1,
            "size_bytes": 1024, "connect_timeout_s": 10.0, "close_timeout_s": 1.0}


def netns_up():
    subprocess.run(["ip", "netns", "add", NS], check=True)
    subprocess.run(["ip", "-n", NS, "link", "set", "lo", "up"], check=True)
    for ip in (HW_IP, LOGGER_IP, SENSOR_IP):
        subprocess.run(["ip", "-n", NS, "addr", "add", f"{ip}/32", "dev", "lo"], check=True)


def listener():
    """A listener at the hardworker's address inside the namespace (for the sensor's connect)."""
    code = ("import socket,time\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
            f"s.bind(({HW_IP!r},12345));s.listen(64)\nc=[]\nwhile True: c.append(s.accept()[0])")
    return subprocess.Popen(["ip", "netns", "exec", NS, sys.executable, "-c", code])


def start(role: str, cache: str) -> dict:
    """One start of ``role``: seconds to ready, its setup CPU, what the cache said."""
    with tempfile.TemporaryDirectory(prefix="tsb-") as out:
        cfg = config(role, out)
        path = Path(out, "cfg.json")
        path.write_text(json.dumps(cfg))
        ready = Path(out, f"{role}-0.ready")
        env = {**os.environ, "TCPSKIM_BPF_CACHE": cache}
        t0 = time.time()
        p = subprocess.Popen(["ip", "netns", "exec", NS, sys.executable, "-m", f"roles.{role}", "--config",
                              str(path)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            while not ready.exists():
                if p.poll() is not None:
                    raise RuntimeError(f"{role} exited {p.returncode}: {p.stderr.read().decode()[-400:]}")
                time.sleep(0.005)
            t_ready = json.loads(ready.read_text())["time"] - t0
        finally:
            p.terminate()
            p.wait(30)
        s = json.loads(Path(out, f"{role}-0.summary.json").read_text())
        return {"ready_s": t_ready, "setup_cpu_s": s.get("setup_cpu_s"), "cache": s.get("bpf_cache")}


def precompile(cache: str) -> float:
    t0 = time.monotonic()
    cfgs = json.dumps([config("hardworker", "/tmp"), config("sensor", "/tmp")])
    r = subprocess.run(["ip", "netns", "exec", NS, sys.executable, "-m", "roles.hostctl", "precompile",
                        "--configs", cfgs], cwd=ROOT, env={**os.environ, "TCPSKIM_BPF_CACHE": cache},
                       capture_output=True, text=True)
    ans = json.loads(r.stdout)
    if ans["failed"]:
        raise RuntimeError(f"precompile: {ans['msg']}")
    return time.monotonic() - t0


def median(rows, key):
    vals = [r[key] for r in rows if r[key] is not None]
    return statistics.median(vals) if vals else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--starts", type=int, default=5, help="starts per role and case (default 5)")
    a = ap.parse_args()
    netns_up()
    lst = listener()
    try:
        time.sleep(0.3)
        with tempfile.TemporaryDirectory(prefix="tsb-cache-") as tmp:
            warm = os.path.join(tmp, "warm")
            print(f"hostctl precompile (cold cache, both roles' programs): {precompile(warm):.2f} s")
            res = {(r, c): [] for r in ("hardworker", "sensor") for c in ("cold", "warm")}
            for i in range(a.starts):
                for role in ("hardworker", "sensor"):
                    res[(role, "cold")].append(start(role, os.path.join(tmp, f"cold-{role}-{i}")))
                    res[(role, "warm")].append(start(role, warm))
        for role in ("hardworker", "sensor"):
            cold, warm = res[(role, "cold")], res[(role, "warm")]
            assert {r["cache"] for r in cold} == {"compiled"} and {r["cache"] for r in warm} == {"hit"}, (cold, warm)
            c, w = median(cold, "ready_s"), median(warm, "ready_s")
            print(f"{role:10s} start-to-ready, median of {a.starts}: compiled at start {c:6.3f} s, "
                  f"pre-compiled {w:6.3f} s, ratio {c / w:5.1f}x; BPF load CPU {median(cold, 'setup_cpu_s'):.3f} s "
                  f"vs {median(warm, 'setup_cpu_s'):.4f} s")
            print(f"{'':10s} cold {[round(r['ready_s'], 3) for r in cold]}  warm {[round(r['ready_s'], 3) for r in warm]}")
    finally:
        lst.kill()
        lst.wait()
        subprocess.run(["ip", "netns", "del", NS], check=False)


if __name__ == "__main__":
    socket.setdefaulttimeout(10)
    main()
