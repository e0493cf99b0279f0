"""Fake-but-plausible run folders (results/<run_id>/) for report tests.

Numbers are chosen so tables can be predicted by hand: trial k of a mode has
hw_cpu_us_per_record = cpu_us[mode] + noise[k % len(noise)], the same at every rate, so with the
defaults (xdp 10, tcp 20, noise -1/0/+1, 3 repeats) every cell has mean 10 vs 20 and s = 1.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from tcpskim.components import not_charged

COLUMNS = ["run_id", "trial", "mode", "rate_hz", "size_bytes", "duration_s", "repeat", "sent",
           "delivered", "logged", "lost", "duplicates", "corrupt", "hw_busy_cpu_s",
           "hw_idle_baseline_cpu_s", "hw_cpu_us_per_record", "hw_process_cpu_us_per_record",
           "bpf_ns_per_packet", "ctx_switches", "peak_rss_bytes", "latency_p50_us",
           "latency_p99_us", "achieved_rate_hz", "status", "wakeup"]
IDLE_CPU_PER_S = 0.02
HW_HOST = "hw1"


def _pct(sorted_vals, q):
    i = min(len(sorted_vals) - 1, int(round(q / 100 * (len(sorted_vals) - 1))))
    return sorted_vals[i]


def make_run(root, *, run_id="20240101T000000-test", rates=(1000, 2000), sizes=(1024,),
             modes=("xdp", "tcp"), repeat=3, cpu_us=None, noise=(-1.0, 0.0, 1.0), idle=True,
             lab=True, lost=None, duplicates=None, failed=(), latency=True, samples=True,
             duration_s=2.0, status="ok", seed=1) -> Path:
    """Write a run folder under root and return its path.

    lost / duplicates: {trial_index: count}; failed: trial indices with status "failed".
    Trial indices count every trial (idle included) in the order they were run.
    """
    cpu_us = cpu_us or {"xdp": 10.0, "tcp": 20.0}
    lost, duplicates = lost or {}, duplicates or {}
    rng = random.Random(seed)
    run_dir = Path(root) / run_id
    run_dir.mkdir(parents=True)
    wakeup = {"policy": "batch", "interval_ms": 5}
    rows = []
    idx = 0
    t_start = 1_700_000_000.0

    def trial_dir(trial):
        d = run_dir / trial / HW_HOST
        d.mkdir(parents=True)
        return d

    def write_samples(d, t0, frac_busy, frac_proc, rate):
        if not samples:
            return
        with open(d / "hardworker-0.samples.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["t", "cpu_busy_s", "process_cpu_s", "delivered"])
            steps = int(duration_s / 0.1)
            for i in range(steps + 1):
                t = i * 0.1
                w.writerow([f"{t0 + t:.3f}", f"{frac_busy * t:.6f}", f"{frac_proc * t:.6f}",
                            int(rate * t)])

    for k in range(repeat):
        if idle:
            trial = f"{idx:03d}-idle-r{k}"
            d = trial_dir(trial)
            t0 = t_start + idx * 10
            write_samples(d, t0, IDLE_CPU_PER_S, 0.001, 0)
            rows.append({
                "run_id": run_id, "trial": trial, "mode": "idle", "rate_hz": 0, "size_bytes": 0,
                "duration_s": duration_s, "repeat": k, "sent": 0, "delivered": 0, "logged": 0,
                "lost": 0, "duplicates": 0, "corrupt": 0,
                "hw_busy_cpu_s": IDLE_CPU_PER_S * duration_s, "hw_idle_baseline_cpu_s": None,
                "hw_cpu_us_per_record": None, "hw_process_cpu_us_per_record": None,
                "bpf_ns_per_packet": None, "ctx_switches": 20, "peak_rss_bytes": 30_000_000,
                "latency_p50_us": None, "latency_p99_us": None, "achieved_rate_hz": None,
                "status": "failed" if idx in failed else
                ("incomplete" if lost.get(idx) or duplicates.get(idx) else "ok"), "wakeup": wakeup})
            idx += 1
        for rate in rates:
            for size in sizes:
                for mode in modes:
                    trial = f"{idx:03d}-{mode}-{rate}-{size}-r{k}"
                    d = trial_dir(trial)
                    t0 = t_start + idx * 10
                    per_rec = cpu_us[mode] + noise[k % len(noise)]
                    sent = int(rate * duration_s)
                    n_lost = lost.get(idx, 0)
                    delivered = sent - n_lost
                    base = IDLE_CPU_PER_S * duration_s
                    proc = per_rec * (0.5 if mode == "xdp" else 0.8)
                    lat = sorted(rng.lognormvariate(4.0 if mode == "xdp" else 4.5, 0.4)
                                 for _ in range(300))
                    if latency:
                        (d / "hardworker-0.latency_us.txt").write_text(
                            "\n".join(f"{x:.1f}" for x in lat) + "\n")
                    write_samples(d, t0, IDLE_CPU_PER_S + per_rec * rate / 1e6,
                                  proc * rate / 1e6, rate)
                    (d / "hardworker-0.summary.json").write_text(json.dumps({"mode": mode}))
                    rows.append({
                        "run_id": run_id, "trial": trial, "mode": mode, "rate_hz": rate,
                        "size_bytes": size, "duration_s": duration_s, "repeat": k,
                        "sent": sent, "delivered": delivered, "logged": delivered,
                        "lost": n_lost, "duplicates": duplicates.get(idx, 0), "corrupt": 0,
                        "hw_busy_cpu_s": base + per_rec * delivered / 1e6,
                        "hw_idle_baseline_cpu_s": base, "hw_cpu_us_per_record": per_rec,
                        "hw_process_cpu_us_per_record": proc,
                        "bpf_ns_per_packet": 450.0 if mode == "xdp" else None,
                        "ctx_switches": 100 + rate // 10, "peak_rss_bytes": 40_000_000,
                        "latency_p50_us": _pct(lat, 50), "latency_p99_us": _pct(lat, 99),
                        "achieved_rate_hz": delivered / duration_s,
                        "status": "failed" if idx in failed else "ok", "wakeup": wakeup})
                    idx += 1

    run = {
        "run_id": run_id, "status": status, "started": "2024-01-01T00:00:00Z",
        "ended": "2024-01-01T00:10:00Z",
        "params": {"rates": list(rates), "sizes": list(sizes), "duration_s": duration_s,
                   "warmup_s": 1.0, "modes": list(modes), "repeat": repeat, "wakeup": wakeup,
                   "sensors": 1, "idle": idle, "tag": "unit"},
        "hosts": {
            "hw1": {"role": "hardworker", "commit": "0123456789abcdef0123", "kernel": "6.1.0-lab",
                    "bcc": "0.26.0", "clock_offset_s": 0.0012, "clock_uncertainty_s": 0.0003},
            "s1": {"role": "sensor", "commit": "0123456789abcdef0123", "kernel": "6.1.0-lab",
                   "bcc": "0.26.0", "clock_offset_s": -0.0004, "clock_uncertainty_s": 0.0002},
            "log1": {"role": "logger", "commit": "0123456789abcdef0123", "kernel": "6.1.0-lab",
                     "bcc": None, "clock_offset_s": 0.0, "clock_uncertainty_s": 0.0001},
        },
        "lab": lab, "failure": None if status == "ok" else "trial 004 timed out",
    }
    (run_dir / "run.json").write_text(json.dumps(run, indent=2))
    (run_dir / "summary.json").write_text(json.dumps({"run_id": run_id, "rows": rows}, indent=2))
    with open(run_dir / "summary.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({c: ("" if r[c] is None else
                            json.dumps(r[c]) if isinstance(r[c], dict) else r[c])
                        for c in COLUMNS})
    return run_dir


COMPONENTS_US = {  # µs per record by mode, as the hardworker's attribution names them
    "xdp": {"role": 8.0, "softirq NET_RX": 11.0, "xdp program": 0.5, "ipi/vector call_function": 2.0,
            "irq virtio0-input": 1.5, "softirq RCU": 0.01, "unattributed": 0.7, "task kdamond": 3.0,
            "task kworker": 1.0, "steal while the role ran": 0.4, "idle": 400.0},
    "tcp": {"role": 6.0, "softirq NET_RX": 3.0, "irq virtio0-input": 1.4, "softirq RCU": 0.02,
            "unattributed": -0.3, "task kdamond": 2.5, "idle": 420.0},
}


def add_components(run_dir, components=None, scale=(0.9, 1.0, 1.1)) -> list[dict]:
    """Give every traffic row of a make_run folder attribution columns: the mode's components
    times scale[repeat] (the process CPU is the role's part); repeat 1 also saw a TIMER softirq
    (absent from the other trials).
    Returns the rows as written to summary.json."""
    components = components or COMPONENTS_US
    path = Path(run_dir) / "summary.json"
    doc = json.loads(path.read_text())
    for r in doc["rows"]:
        if r["mode"] in components:
            f = scale[r["repeat"] % len(scale)]
            comps = {k: v * f for k, v in components[r["mode"]].items()}
            if r["repeat"] == 1:
                comps["softirq TIMER"] = 0.6
            r["hw_components_us"] = comps
            r["hw_attr_us_per_record"] = sum(v for k, v in comps.items()
                                             if k != "idle" and not not_charged(k))
            r["hw_process_cpu_us_per_record"] = comps["role"]  # the role's own runtime
    path.write_text(json.dumps(doc))
    return doc["rows"]
