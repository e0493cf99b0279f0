"""run-experiment and collect end to end on the lab through the real `invoke`: the main job,
a rate sweep, an independent check of the CPU figure, and a hardworker killed mid-trial."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tcpskim import CHECKOUT, lab

from helpers import ROOT, run_invoke

pytestmark = pytest.mark.lab  # builds the e2e lab


def run_id_of(stdout: str) -> str:
    return re.search(r"^run (\S+) ok: ", stdout, re.M).group(1)


def test_run_experiment_then_collect(deployed):
    from tcpskim.report import load_run, tables, xdp_tcp_ratio

    inv, path = deployed
    r = run_invoke(path, "run-experiment", "--rate", "50", "--duration", "10", "--repeat", "3", "--tag", "e2e")
    assert r.returncode == 0, r.stdout + r.stderr
    run_id = run_id_of(r.stdout)
    assert "9 trials (xdp,tcp + idle baseline)" in r.stdout  # the plan is printed first
    c = run_invoke(path, "collect", "--run", run_id)
    assert c.returncode == 0, c.stdout + c.stderr
    d = CHECKOUT / "results" / run_id
    rows = json.loads((d / "summary.json").read_text())["rows"]
    assert [row["mode"] for row in rows] == ["idle", "xdp", "tcp", "idle", "tcp", "xdp", "idle", "xdp", "tcp"]
    for row in rows:
        assert row["hw_wake_cost_us"] > 0, row  # measured by every hardworker, idle included
        if row["mode"] == "idle":
            continue
        assert row["lost"] == row["duplicates"] == row["corrupt"] == 0, row
        assert row["sent"] == row["delivered"] == row["logged"] >= 500, row
        assert row["hw_cpu_us_per_record"] > 0 and row["hw_process_cpu_us_per_record"] > 0, row
        assert 0 < row["hw_softirq_share"] < 1, row  # receive work runs outside the role process
    with open(d / "summary.csv") as f:
        assert len(list(csv.DictReader(f))) == 9
    # Both modes at 50 Hz x 1 KiB, three trials each, make an xdp/tcp ratio paired by repeat;
    # collect printed the tables report.py renders from summary.json (their layout is
    # test_report.py's business).
    cell = sorted((row["mode"], row["rate_hz"], row["size_bytes"]) for row in rows if row["mode"] != "idle")
    assert cell == [("tcp", 50, 1024)] * 3 + [("xdp", 50, 1024)] * 3, cell
    ratio, _, _, method = xdp_tcp_ratio(rows)
    assert ratio is not None and method == "paired over 3 repeats", (ratio, method)
    table = tables(*load_run(d))
    assert table in c.stdout, c.stdout
    report = (d / "report.md").read_text()
    for png in ("cpu_per_record.png", "cpu_over_time.png", "latency_cdf.png"):
        assert png in report
        assert (d / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    run = json.loads((d / "run.json").read_text())
    assert run["status"] == "ok" and set(run["hosts"]) == {"sensor", "hardworker", "logger"}
    assert all(len(h["commit"]) == 40 and h["kernel"] for h in run["hosts"].values())
    # collect is resumable: a second run fetches nothing new.
    c2 = run_invoke(path, "collect", "--run", run_id)
    assert c2.returncode == 0 and "ok (0 changed), 0 failed" in c2.stdout, c2.stdout
    # report re-renders from local files alone: the same tables, report.md and plots again.
    for f in ("report.md", "cpu_per_record.png", "cpu_over_time.png", "latency_cdf.png"):
        (d / f).unlink()
    r2 = run_invoke(path, "report", run_id)
    assert r2.returncode == 0, r2.stdout + r2.stderr
    assert (d / "report.md").read_text() == report
    assert all((d / png).exists() for png in ("cpu_per_record.png", "cpu_over_time.png", "latency_cdf.png"))
    assert table in r2.stdout, r2.stdout  # the same tables again


def test_sizes_batch_wakeup_two_sensors_work_then_latest(deployed):
    """The other run-experiment options through the real CLI, then collect and report of the
    latest run without naming it."""
    from tcpskim.report import load_run

    inv, path = deployed
    r = run_invoke(path, "run-experiment", "--rate", "200", "--size", "64,1024", "--duration", "2",
                   "--repeat", "1", "--no-idle", "--wakeup", "batch:10ms", "--sensors", "2",
                   "--work-us", "20", "--tag", "opts")
    assert r.returncode == 0, r.stdout + r.stderr
    run_id = run_id_of(r.stdout)
    c = run_invoke(path, "collect")  # the latest run
    assert c.returncode == 0 and f"run {run_id}" in c.stdout, c.stdout + c.stderr
    run, rows = load_run(CHECKOUT / "results" / run_id)
    assert sorted((row["mode"], row["size_bytes"]) for row in rows) == \
        sorted((m, s) for m in ("xdp", "tcp") for s in (64, 1024))
    for row in rows:
        assert row["wakeup"] == "batch:10ms", row["wakeup"]
        # two sensors at 200 Hz each, all of it delivered and logged
        assert row["sent"] == row["delivered"] == row["logged"] and row["sent"] >= 2 * 200 * 2, row
        assert row["achieved_rate_hz"] > 300, row
        # the decision step spins 20 µs per record: the process pays at least that
        assert row["hw_process_cpu_us_per_record"] >= 20, row
    (d := CHECKOUT / "results" / run_id / "report.md").unlink()
    rl = run_invoke(path, "report", "latest")
    assert rl.returncode == 0 and f"run {run_id}" in rl.stdout and d.exists(), rl.stdout + rl.stderr


def test_collect_reports_a_gone_host_and_collects_the_rest(deployed):
    """The logger's sshd is down: collect fetches the others, names the logger, exits 1; once
    the host is back, collect picks up what it missed."""
    import shutil

    inv, path = deployed
    r = run_invoke(path, "run-experiment", "--rate", "50", "--duration", "1", "--repeat", "1", "--modes", "tcp",
                   "--no-idle", "--tag", "gone")
    assert r.returncode == 0, r.stdout + r.stderr
    run_id = run_id_of(r.stdout)
    d = CHECKOUT / "results" / run_id
    trial = next(p.name for p in d.iterdir() if p.is_dir())
    for h in (inv.logger, inv.sensors[0]):  # as if never fetched
        shutil.rmtree(d / trial / h.name)
    sshd = lab.host_dir(inv, inv.logger) / "sshd.pid"
    subprocess.run(["kill", sshd.read_text().strip()], check=True)
    try:
        c = run_invoke(path, "collect", "--run", run_id)
        assert c.returncode == 1, c.stdout + c.stderr
        rows = {line.split()[0]: line for line in c.stdout.splitlines() if line.split()[:1] and
                line.split()[0] in inv.names}
        assert "failed" in rows["logger"] and inv.logger.ip in rows["logger"], rows
        assert "changed" in rows[inv.sensors[0].name], rows
        assert "1 failed: logger" in c.stdout
        assert (d / trial / inv.sensors[0].name / "sensor-1.summary.json").exists()
        assert not (d / trial / inv.logger.name).exists()
    finally:
        lab.up(inv, log=lambda *_: None)  # restarts the sshd
    c2 = run_invoke(path, "collect", "--run", run_id)
    assert c2.returncode == 0, c2.stdout + c2.stderr
    assert (d / trial / inv.logger.name / "logger-0.summary.json").exists()
    assert (d / trial / inv.logger.name / "logger.db").exists()  # the SQLite file too


def test_rate_sweep_has_one_point_per_rate_and_mode(deployed):
    from tcpskim.plots import cpu_per_record_points
    from tcpskim.report import load_run

    inv, path = deployed
    r = run_invoke(path, "run-experiment", "--rate", "50,500,5000", "--duration", "3", "--repeat", "1",
                   "--no-idle")
    assert r.returncode == 0, r.stdout + r.stderr
    run_id = run_id_of(r.stdout)
    run, rows = load_run(CHECKOUT / "results" / run_id)
    assert sorted((row["mode"], row["rate_hz"]) for row in rows) == \
        sorted((m, float(x)) for m in ("xdp", "tcp") for x in (50, 500, 5000))
    assert all(row["lost"] == 0 and row["delivered"] == row["sent"] for row in rows)
    points = cpu_per_record_points(rows)[1024]
    assert {m: [p[0] for p in pts] for m, pts in points.items()} == {"xdp": [50, 500, 5000], "tcp": [50, 500, 5000]}


def _proc_stat_busy(cpu: int) -> tuple[float, float]:
    """(monotonic time, idle+iowait seconds) for one CPU, read here, outside the tool."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                v = line.split()
                return time.monotonic(), (int(v[4]) + int(v[5])) / os.sysconf("SC_CLK_TCK")
    raise AssertionError(cpu)


def test_cpu_figure_agrees_with_an_independent_reading(deployed):
    """At 2 kHz the tool's busy CPU for the hardworker's CPU equals elapsed - idle read from
    /proc/stat by this test over the same window, within 10 %."""
    from tcpskim.lab import cpu_plan

    inv, path = deployed
    cpus = cpu_plan(inv)[inv.hardworker.name]
    if len(cpus) != 1:
        pytest.skip("needs a dedicated hardworker CPU (2 or more CPUs)")
    runs = Path(inv.hardworker.checkout) / ".tcpskim" / "runs"
    before = set(runs.glob("*/*/go.json")) if runs.exists() else set()
    readings = {}

    def watch():
        deadline = time.time() + 120
        while time.time() < deadline:
            new = set(runs.glob("*/*/go.json")) - before if runs.exists() else set()
            if new:
                go = json.loads(next(iter(new)).read_text())["start_at"]
                for edge, t in (("a", go + 1.0), ("b", go + 1.0 + 5.0)):
                    time.sleep(max(0.0, t - time.time()))
                    readings[edge] = _proc_stat_busy(cpus[0])
                return
            time.sleep(0.05)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    r = run_invoke(path, "run-experiment", "--rate", "2000", "--duration", "5", "--warmup", "1", "--repeat", "1",
                   "--modes", "xdp", "--no-idle")
    t.join(5)
    assert r.returncode == 0, r.stdout + r.stderr
    assert set(readings) == {"a", "b"}, readings  # the watcher saw the window open and close
    (row,) = json.loads((CHECKOUT / "results" / run_id_of(r.stdout) / "summary.json").read_text())["rows"]
    (ta, ia), (tb, ib) = readings["a"], readings["b"]
    independent = (tb - ta) - (ib - ia)
    print(f"hardworker busy CPU over the window: tool {row['hw_busy_cpu_s']:.4f} s, /proc/stat {independent:.4f} s")
    assert independent > 0.05, independent  # 2 kHz is real work
    assert abs(row["hw_busy_cpu_s"] - independent) <= 0.10 * independent, (row["hw_busy_cpu_s"], independent)


def _interrupt_mid_trial(inv, path, tag, act):
    """Start an xdp run-experiment, ``act()`` 2 s into its first window; (exit code, output,
    seconds from act to exit). Stops the roles itself if the run did not end."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TCPSKIM_INVENTORY": str(path)}
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "-r", str(ROOT), "run-experiment", "--rate", "200",
                             "--duration", "30", "--repeat", "1", "--modes", "xdp", "--no-idle", "--tag", tag],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        runs = Path(inv.hardworker.checkout) / ".tcpskim" / "runs"
        deadline = time.time() + 120
        while time.time() < deadline and not any(runs.glob(f"*-{tag}/*/go.json")):
            time.sleep(0.1)
        time.sleep(2)  # mid-trial: XDP attached on the hardworker and the sensor
        act(proc)
        t_act = time.monotonic()
        out, _ = proc.communicate(timeout=60)
        return proc.returncode, out, time.monotonic() - t_act
    finally:
        if proc.poll() is None:
            proc.kill()
            run_invoke(path, "stop", timeout=120)  # the run did not clean up: do it here


def _assert_cleaned_up(inv, out, tag) -> dict:
    """No XDP program and no role process left anywhere; partial results kept, marked failed."""
    for h in inv.hosts:
        links = lab.ns_exec(inv, h.name, ["ip", "link", "show"]).stdout
        assert "xdp" not in links, (h.name, links)
    state = str(Path(inv.hardworker.checkout).parent.parent)
    left = subprocess.run(["pgrep", "-af", f"roles\\.(sensor|hardworker|logger) --config {state}"],
                          capture_output=True, text=True).stdout
    assert not left.strip(), left
    run_id = re.search(rf"run (\S+-{tag}) FAILED", out).group(1)
    assert (CHECKOUT / "results" / run_id / "summary.json").exists()
    run = json.loads((CHECKOUT / "results" / run_id / "run.json").read_text())
    assert run["status"] == "failed", run
    return run


def test_killed_hardworker_stops_the_run_cleanly(deployed):
    inv, path = deployed
    pidfile = Path(inv.hardworker.checkout) / ".tcpskim" / "pids" / "hardworker-0.pid"
    code, out, took = _interrupt_mid_trial(inv, path, "kill",
                                           lambda _: os.kill(int(pidfile.read_text()), signal.SIGKILL))
    assert code == 1, out
    assert took < 10, took  # the bound: the run notices and stops within 10 s
    assert "hardworker on hardworker" in out, out
    assert "hardworker" in _assert_cleaned_up(inv, out, "kill")["failure"]


def test_sigterm_to_the_control_process_cleans_up_everywhere(deployed):
    """A closed session or `kill` of run-experiment (SIGTERM) is handled like Ctrl-C: every
    role stopped, no XDP program left, partial results kept and marked failed."""
    inv, path = deployed
    code, out, _ = _interrupt_mid_trial(inv, path, "term", lambda proc: proc.send_signal(signal.SIGTERM))
    assert code == 1, out
    assert "interrupted (SIGTERM)" in out, out
    assert "SIGTERM" in _assert_cleaned_up(inv, out, "term")["failure"]


def test_progress_bar_shows_sent_and_delivered_in_a_terminal(deployed):
    """On a terminal the bar names the trial and counts records sent and delivered live."""
    import fcntl
    import pty
    import struct
    import termios

    inv, path = deployed
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # a real width
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TCPSKIM_INVENTORY": str(path)}
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "-r", str(ROOT), "run-experiment", "--rate", "200",
                             "--duration", "4", "--repeat", "1", "--modes", "xdp", "--no-idle", "--tag", "bar"],
                            stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    chunks = []
    try:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        proc.wait(timeout=120)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            run_invoke(path, "stop", timeout=120)
    out = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, out
    # the bar: "<trial> <bar> 3/7 s, sent 1200 delivered 1180" (not the summary line after it)
    counts = [(int(a), int(b)) for a, b in
              re.findall(r"t000-xdp-r200-s1024-n0 \S* *\d+/\d+ s, sent (\d+) delivered (\d+)", out)]
    assert counts and max(a for a, _ in counts) > 0 and max(b for _, b in counts) > 0, out[-2000:]
