#!/usr/bin/env python3
"""Benchmark: hardworker CPU per record, xdp against tcp, for each wake-up policy, in one run.

    .venv/bin/python bench/overhead.py                      # lab, 2 kHz x 1 KiB, per-record and batch:10ms
    .venv/bin/python bench/overhead.py --rate 10000 --wakeup batch:10ms --repeat 3

Builds (or reuses) the lab, deploys, pins neighbours, then runs interleaved trials with an idle
baseline per repeat through the same runner as `invoke run-experiment`, and prints per policy
and mode the mean and 95 % CI of: busy CPU of the hardworker's dedicated CPU per record (idle
subtracted; softirq and XDP included), the hardworker process's own CPU per record and the BPF
program's ns per packet, and the xdp/tcp ratio with its 95 % CI: means over interleaved repeats,
all measured in this one run (the machine is shared and noisy; compare within a run only). The
ratio's CI is paired by repeat when possible (as in the report: ``tcpskim.report.xdp_tcp_ratio``)
and the table says which method was used. Last, CPU per sent record against p99 latency for
every mode x wake-up (table, and ``cpu_vs_latency_all.png`` in the last run's folder):

    .venv/bin/python bench/overhead.py --wakeup per-record,batch:10ms,coalesce:10:5ms
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tabulate import tabulate  # noqa: E402

from bench.external_idle import ExternalIdle  # noqa: E402
from tcpskim import components, inventory, plots  # noqa: E402
from tcpskim.lab import names  # noqa: E402
from tcpskim.experiment import Runner  # noqa: E402
from tcpskim.fleet import Fleet  # noqa: E402
from tcpskim.plan import params  # noqa: E402
from tcpskim.report import wake_cost_line, xdp_tcp_ratio  # noqa: E402
from tcpskim.stats import mean_ci  # noqa: E402

TARGETS = {"per-record": 0.5, "batch": 0.15}


def fmt(m):
    mean, lo, hi, n = m
    if mean is None:
        return "-"
    return f"{mean:.2f}" + (f" [{lo:.2f}, {hi:.2f}]" if lo is not None else "")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-i", "--inventory", help="inventory (default: the lab)")
    ap.add_argument("--rate", default="2000")
    ap.add_argument("--size", default="1024")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--wakeup", default="per-record,batch:10ms", help="comma list of policies")
    ap.add_argument("--trace-idle", default="on", help="on, off or on,off: trace cpuidle states "
                    "(experiment.trace_idle); on,off runs each wake-up policy both ways")
    ap.add_argument("--skip-setup", action="store_true", help="the lab is up and deployed already")
    a = ap.parse_args(argv)
    inv = inventory.load(a.inventory)
    if not a.skip_setup:
        tasks = (["lab.up"] if inv.lab else []) + ["deploy", "fix-network"]
        env_inv = ["-i", str(inv.path)]
        for t in tasks:
            subprocess.run([sys.executable, "-m", "invoke", "-r", str(ROOT), t, *env_inv], check=True,
                           stdout=subprocess.DEVNULL)
    results, checks = [], []
    runs = []
    all_rows = []
    plan = names.cpu_plan(inv)
    ext = ExternalIdle(names.other_cpus(plan, inv.hosts))
    traces = [{"on": True, "off": False}[t] for t in a.trace_idle.split(",")]
    with ext:
        for wakeup in a.wakeup.split(","):
            for trace in traces:
                inv.experiment["trace_idle"] = trace  # what trialconfig hands the hardworker
                p = params(inv.experiment, rate=a.rate, size=a.size, duration=a.duration, warmup=a.warmup,
                           repeat=a.repeat, wakeup=wakeup, modes="xdp,tcp", idle=True, tag="bench")
                with Fleet(inv) as fleet:
                    folder = Runner(fleet, p, progress=False, out=lambda s: print(s, file=sys.stderr)).run()
                label = wakeup if len(traces) == 1 else f"{wakeup}, idle states {'on' if trace else 'off'}"
                runs.append((label, folder))
    tables = []
    for wakeup, folder in runs:
        rows = json.loads((folder.path / "summary.json").read_text())["rows"]
        all_rows += rows
        tables += [(f"{t} [{wakeup}]", h, b, n)
                   for t, h, b, n in components.component_tables(rows, lab=inv.lab is not None)]
        by = {m: [r for r in rows if r["mode"] == m] for m in ("xdp", "tcp")}
        shares = pooled_shares(by["xdp"] + by["tcp"])
        for m in ("xdp", "tcp"):
            checks.append([wakeup, m, *check_figures(folder.path, by[m], ext, shares)])
        cpu = {m: [r["hw_cpu_us_per_record"] for r in by[m]] for m in by}
        ratio = xdp_tcp_ratio(rows)  # (ratio, lo, hi, method), paired by repeat when possible
        target = TARGETS["batch" if wakeup.startswith("batch") else "per-record"]
        for m in ("xdp", "tcp"):
            lost = sum(r["lost"] + r["duplicates"] + r["corrupt"] for r in by[m])
            results.append([wakeup, m, fmt(mean_ci(cpu[m])),
                            fmt(mean_ci([r["hw_process_cpu_us_per_record"] for r in by[m]])),
                            fmt(mean_ci([r["bpf_ns_per_packet"] for r in by[m] if r["bpf_ns_per_packet"]])),
                            sum(r["delivered"] for r in by[m]), lost,
                            (f"{ratio[0]:.3f}" + (f" [{ratio[1]:.3f}, {ratio[2]:.3f}]" if ratio[1] is not None else "")
                             + f" {ratio[3]} (target <= {target})") if m == "xdp" and ratio[0] is not None else ""])
    print(f"\nhardworker overhead at {a.rate} Hz x {a.size} B, {a.duration:g} s windows, {a.repeat} repeats "
          f"(runs: {', '.join(f.run_id for _, f in runs)})")
    print(tabulate(results, headers=["wake-up", "mode", "hw CPU µs/rec [95% CI]", "process µs/rec",
                                     "BPF ns/pkt", "delivered", "lost+dup+corrupt", "xdp/tcp"]))
    print(wake_cost_line(all_rows) or "")
    print("\nthe attribution checked (max over trials; targets: unattributed <= 5 % of busy, "
          "busy within 10 % of an idle reading outside the tool, tracer cost <= 2 % of busy)")
    print(tabulate(checks, headers=["wake-up", "mode", "trials", "unattributed % of busy",
                                    "busy vs /proc/stat (outside) %",
                                    "tracer cost % of busy (self time + runs x cell median dispatch)"]))
    for title, headers, body, notes in tables:
        print(f"\n{title}")
        print(tabulate(body, headers=headers))
        for n in notes:
            print(f"  note: {n}")
    trade_off(all_rows, runs[-1][1].path / "cpu_vs_latency_all.png")
    return 0


def trade_off(rows, png: Path) -> None:
    """CPU per sent record against p99 latency for every mode x wake-up of this run: a table
    (medians over trials) and one plot of all of them (the per-run plots show one wake-up)."""
    body = []
    for label, xy in sorted(plots.cpu_vs_latency_points(rows).items()):
        body.append([label, len(xy), f"{statistics.median(y for _, y in xy):.2f}",
                     f"{statistics.median(x for x, _ in xy):.0f}"])
    print("\nhardworker CPU per sent record against p99 latency of delivered records (medians)")
    print(tabulate(body, headers=["mode policy wake-up rate", "trials", "CPU µs/sent rec", "p99 µs"]))
    if plots.plot_cpu_vs_latency(rows, png):
        print(f"plot: {png}")


def _worst(vals, fmt="{:+.1f}"):
    vals = [v for v in vals if v is not None]
    return "-" if not vals else fmt.format(max(vals, key=abs)) + f" (median {fmt.format(sorted(vals)[len(vals) // 2])})"


def pooled_shares(rows) -> dict:
    """{trial: the tracing cost's share of busy time}, from each trial's programs' own time + its
    runs x the median dispatch of its rate x size cell, as the report's component table takes it
    (``components.pooled_cost``: one trial's own measurement is moved by a busy host)."""
    cells = {}
    for r in rows:
        cells.setdefault((r.get("rate_hz"), r.get("size_bytes")), []).append(r)
    out = {}
    for grp in cells.values():
        costed, _, _ = components.pooled_cost({"all": grp})
        out.update((r["trial"], r.get("hw_tracer_cost_share")) for r in costed["all"])
    return out


def check_figures(run_path: Path, rows, ext: ExternalIdle, shares=None) -> list:
    """[trials, unattributed %, vs /proc/stat %, tracer %] for one mode's rows; the tracer's
    share is the pooled one (``pooled_shares``) when given, else the trial's own."""
    unatt, vs_stat, cost = [], [], []
    for r in rows:
        for f in sorted((run_path / r["trial"]).glob("*/hardworker-*.summary.json")):
            win = json.loads(f.read_text()).get("window") or {}
            at = win.get("attribution") or {}
            busy = at.get("proc_busy_s")
            if not busy or not win.get("mono_s"):
                continue
            unatt.append(100 * (at.get("unattributed_s") or 0) / busy)
            outside = ext.busy(win["cpus"], *win["mono_s"])
            if outside.get("stat_s"):
                vs_stat.append(100 * (busy - outside["stat_s"]) / outside["stat_s"])
            share = (shares or {}).get(r["trial"], (at.get("cost") or {}).get("share_of_busy"))
            cost.append(None if share is None else 100 * share)
    return [len(unatt), _worst(unatt), _worst(vs_stat), _worst(cost, "{:.2f}")]


if __name__ == "__main__":
    sys.exit(main())
