"""End to end, tcp mode: logger, hardworker and sensors as real detached processes.

The roles run inside a network namespace made for the test (``rl-…``, addresses
198.18.0.150-153 on its loopback) and are driven exactly as the control side drives them:
``roles.procs start / wait-ready / go / stop``. Needs root (namespaces); skipped otherwise.
"""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HW, LOGGER, S1, S2 = "198.18.0.150", "198.18.0.151", "198.18.0.152", "198.18.0.153"

pytestmark = [pytest.mark.lab,  # a network namespace of its own
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create a network namespace")]


def _ip(*args, check=True):
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


@pytest.fixture
def netns():
    name = f"rl-t{os.getpid() % 100000}"
    _ip("netns", "del", name, check=False)
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        for addr in (HW, LOGGER, S1, S2):
            _ip("-n", name, "addr", "add", f"{addr}/32", "dev", "lo")
        yield name
    finally:
        _ip("netns", "del", name, check=False)


class Trial:
    """A trial folder plus helpers to drive roles.procs inside the namespace."""

    def __init__(self, ns, tmp_path):
        self.ns = ns
        self.state_dir = str(tmp_path / "state")
        self.out_dir = str(tmp_path / "state" / "runs" / "r1" / "t1")
        os.makedirs(self.out_dir)

    def procs(self, *args, check=True):
        cmd = ["ip", "netns", "exec", self.ns, sys.executable, "-m", "roles.procs", *args]
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
        shaped = json.loads(p.stdout.strip().splitlines()[-1])  # roles.answer's shape
        if check:
            assert p.returncode == 0 and not shaped["failed"], shaped
        return p.returncode, {**shaped["data"], **({"error": shaped["msg"]} if shaped["failed"] else {})}

    def config(self, role, instance=0, **over):
        cfg = {"role": role, "instance": instance, "run_id": "r1", "trial": "t1", "mode": "tcp",
               "state_dir": self.state_dir, "out_dir": self.out_dir, "interface": "lo",
               "hosts": {"sensor": [{"name": "s1", "ip": S1}, {"name": "s2", "ip": S2}],
                         "hardworker": {"name": "hw", "ip": HW}, "logger": {"name": "lg", "ip": LOGGER}},
               "tos": 104, "port": 12345, "rate_hz": 50, "size_bytes": 1024,
               "warmup_s": 0.5, "duration_s": 2.0, "tail_s": 0.5,
               "wakeup": {"policy": "per-record"}, "cpus": []}
        if role == "sensor":
            cfg["sensor_host"] = "s1" if instance == 1 else "s2"
        cfg.update(over)
        path = os.path.join(self.out_dir, f"{role}-{instance}.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        return path

    def start(self, cfg_path, ready=True):
        self.procs("start", "--config", cfg_path)
        if ready:
            self.procs("wait-ready", "--config", cfg_path, "--timeout", "30")

    def summary(self, name, timeout=30.0):
        path = os.path.join(self.out_dir, f"{name}.summary.json")
        end = time.monotonic() + timeout
        while not os.path.exists(path):
            assert time.monotonic() < end, f"no summary from {name}; log:\n{self.log(name)}"
            time.sleep(0.1)
        with open(path) as f:
            return json.load(f)

    def log(self, name):
        try:
            with open(os.path.join(self.out_dir, f"{name}.log")) as f:
                return f.read()
        except OSError:
            return "(no log)"

    def db_rows(self):
        with sqlite3.connect(os.path.join(self.out_dir, "logger.db")) as db:
            return db.execute("SELECT sensor_id, COUNT(*), COUNT(DISTINCT seq), MIN(seq), MAX(seq),"
                              " SUM(crc_ok) FROM records GROUP BY sensor_id").fetchall()


@pytest.fixture
def trial(netns, tmp_path):
    t = Trial(netns, tmp_path)
    try:
        yield t
    finally:
        t.procs("stop", "--state-dir", t.state_dir, "--timeout", "5", check=False)


def _run(trial, sensors, wakeup):
    n_expected = 150  # 50 Hz x (0.5 + 2 + 0.5) s
    trial.start(trial.config("logger"))
    trial.start(trial.config("hardworker", wakeup=wakeup, expected_streams=len(sensors)))
    for sid in sensors:
        trial.start(trial.config("sensor", sid))
    trial.procs("go", "--out-dir", trial.out_dir, "--delay", "0.5")
    sent = {sid: trial.summary(f"sensor-{sid}") for sid in sensors}
    hw = trial.summary("hardworker-0")
    _, stopped = trial.procs("stop", "--state-dir", trial.state_dir, "--role", "logger")
    assert stopped["stopped"] == ["logger-0"] and not stopped["killed"]
    lg = trial.summary("logger-0")
    for sid, s in sent.items():
        assert s["status"] == "ok", trial.log(f"sensor-{sid}")
        assert s["sent"] == n_expected == s["planned"]
        assert s["peer_closed"] == [True, True]
        assert 40 < s["achieved_rate_hz"] < 60  # 50 Hz planned; loose: a shared, noisy machine
        assert hw["per_sensor"][str(sid)]["delivered"] == n_expected
    assert hw["status"] == "ok" and not hw["stopped_by_signal"], trial.log("hardworker-0")
    assert hw["delivered"] == n_expected * len(sensors)
    assert (hw["lost"], hw["duplicates"], hw["corrupt"], hw["unattributed_bad"]) == (0, 0, 0, 0)
    assert all(st["finished"] for st in hw["streams"]) and len(hw["streams"]) == len(sensors)
    win = hw["window"]
    assert win["complete"] and 1.9 < win["elapsed_s"] < 3.0
    # the window counts what arrived during its own (measured) length: 50 Hz per sensor
    assert abs(win["delivered_in_window"] - 50 * win["elapsed_s"] * len(sensors)) <= 3 * len(sensors)
    assert win["process_cpu_s"] > 0 and win["cpu_busy_s"] > 0 and win["sampler_cpu_s"] == 0  # no sampler
    # tracepoint attribution of the hardworker's CPUs: the parts add up, the role is in them
    a = win["attribution"]
    assert "error" not in a, a
    assert a["components_s"]["role"] > 0 and a["counters"]["wakeups"] > 0
    if "power/cpu_idle" not in a["missing"]:  # trace_idle (default on): each wake's way out of idle
        assert a["components_s"]["idle exit"] > 0, a["components_s"]
    assert a["sum_s"] == pytest.approx(a["elapsed_s"], rel=0.01)
    # the idle account and the trace are read at slightly different edges; at 50 Hz the
    # CPU is busy ~7 % of the window, so that edge error (up to ~1 % of the window on a
    # loaded machine) outweighs 5 % of busy. The 5 % target is measured at 2 kHz in bench/.
    assert abs(a["unattributed_s"]) <= 0.05 * a["proc_busy_s"] + 0.015 * a["elapsed_s"]
    assert a["periods"]["unit"] == "record" and a["periods"]["records"] >= 0.9 * win["delivered_in_window"]
    assert a["cost"]["events"] > 0 and a["cost"]["ns_per_event"] >= 0
    assert hw["latency_us"]["p50"] > 0 and hw["peak_rss_bytes"] > 1 << 20
    assert lg["stored"] == n_expected * len(sensors) and lg["bad"] == 0 and lg["duplicates"] == 0
    assert lg["accepted"] == len(sensors)
    assert sorted(trial.db_rows()) == [(sid, n_expected, n_expected, 0, n_expected - 1, n_expected)
                                       for sid in sorted(sensors)]
    with open(os.path.join(trial.out_dir, "hardworker-0.samples.csv")) as f:
        rows = f.read().splitlines()
    assert rows[0] == "t,cpu_busy_s,process_cpu_s,delivered" and len(rows) > 20
    with open(os.path.join(trial.out_dir, "hardworker-0.latency_us.txt")) as f:
        assert len(f.read().split()) == hw["latency_us"]["n"]
    return hw


def test_one_sensor_per_record(trial):
    _run(trial, [1], {"policy": "per-record"})


def test_two_sensors_batch(trial):
    hw = _run(trial, [1, 2], {"policy": "batch", "interval_ms": 20})
    # Batching: about one wake-up per 20 ms tick instead of one per record (100 per sensor).
    assert hw["window"]["ctx_voluntary"] < 200


def test_logger_down_sensor_fails_clearly(trial):
    trial.start(trial.config("hardworker"))
    cfg = trial.config("sensor", 1)
    trial.procs("start", "--config", cfg)
    rc, out = trial.procs("wait-ready", "--config", cfg, "--timeout", "20", check=False)
    assert rc == 1 and "sensor-1 died before it was ready" in out["error"]
    assert f"cannot connect to the logger {LOGGER}:12345" in out["error"]
    s = trial.summary("sensor-1")
    assert s["status"] == "connect_failed" and "Connection refused" in s["error"]


def test_stop_kills_and_is_idempotent(trial):
    trial.start(trial.config("logger"))
    trial.start(trial.config("hardworker"))
    _, st = trial.procs("status", "--state-dir", trial.state_dir)
    assert sorted(st["running"]) == ["hardworker-0", "logger-0"]
    os.kill(st["running"]["hardworker-0"], signal.SIGSTOP)  # cannot act on SIGTERM: needs SIGKILL
    _, out = trial.procs("stop", "--state-dir", trial.state_dir, "--timeout", "1")
    assert out["stopped"] == ["logger-0"] and out["killed"] == ["hardworker-0"]
    assert trial.summary("logger-0")["status"] == "ok"
    _, again = trial.procs("stop", "--state-dir", trial.state_dir, "--timeout", "1")
    assert again == {"stopped": [], "killed": [], "stale_pidfiles": [], "xdp_detached": None, "guard_stopped": []}
    _, st = trial.procs("status", "--state-dir", trial.state_dir)
    assert st == {"running": {}, "stale_pidfiles": []}
    assert os.listdir(os.path.join(trial.state_dir, "pids")) == []
