"""The trial session's phases (start -> go -> watch -> finish) and the run around them, on a
fake fleet (tests/fakefleet.py): the order roles start and stop in, what a failure stops,
and what the run folder keeps. No SSH, no root: the lab end-to-end tests do it for real."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading

import pytest

from tcpskim.experiment import Runner
from tcpskim.plan import Trial, params
from tcpskim.results import RunFolder
from tcpskim.trial import RunFailed, TrialSession

from fakefleet import role_fleet

FAST = {"poll_s": 0.05, "go_delay_s": 0.05}


def quick(inv, **kw):
    """Run parameters of a fraction of a second (below what the CLI accepts, on purpose)."""
    p = params(inv.experiment, rate="100", max_sensors=len(inv.sensors), **kw)
    return dataclasses.replace(p, duration_s=0.3, warmup_s=0.1, tail_s=0.1)


def make_testbed(fleet, p, duration=0.3):
    from tcpskim.experiment import preflight
    from tcpskim.trialconfig import Testbed

    p = dataclasses.replace(p, duration_s=duration)
    sensors = fleet.inv.sensors[: p.sensors]
    hosts = [fleet.inv.logger, fleet.inv.hardworker, *sensors]
    return Testbed(fleet, p, sensors, preflight(fleet, hosts), {h.name: list(h.cpus) for h in hosts})


@pytest.fixture
def fleet(tmp_path):
    f = role_fleet(tmp_path, sensors=2)
    yield f
    assert f.unmatched == []  # the control side ran nothing the fake does not know


def session(fleet, tmp_path, mode="xdp", sensors=2, duration=0.3) -> TrialSession:
    bed = make_testbed(fleet, quick(fleet.inv, sensors=sensors), duration)
    folder = RunFolder.new(tmp_path / "results", "unit")
    return TrialSession(bed, folder, Trial(0, 0, mode, 100.0, 1024), **FAST)


def test_phases_in_order_and_every_summary_fetched(fleet, tmp_path):
    fleet.hosts["hardworker"].offset_s, fleet.hosts["sensor2"].offset_s = 0.2, 0.5  # clocks off by that
    s = session(fleet, tmp_path)
    fleet.calls.clear()
    summaries = s.run()
    at = fleet.index
    # start: logger ready before the hardworker starts, hardworker ready before any sensor
    assert at("logger", "wait-ready") < at("hardworker", "start") < at("hardworker", "wait-ready") \
        < at("sensor", "start") and at("hardworker", "wait-ready") < at("sensor2", "start")
    # go: once to the hardworker and each sensor (never the logger), after every role was ready
    go = fleet.hostctl_calls("go")
    assert sorted(h for h, _ in go) == ["hardworker", "sensor", "sensor2"]
    assert min(at(h, "go") for h, _ in go) > at("sensor2", "wait-ready")
    for h, argv in go:  # one start time, in each host's own clock
        assert argv[argv.index("--start-at") + 1] == f"{s.start_at + s.bed.info[h].offset_s:.6f}"
    # finish: sensors (ended by themselves), then the hardworker, then the logger
    stops = [(h, argv[argv.index("--role") + 1]) for h, argv in fleet.hostctl_calls("stop")]
    assert stops == [("sensor", "sensor"), ("sensor2", "sensor"), ("hardworker", "hardworker"), ("logger", "logger")]
    assert set(summaries) == {("logger", "logger", 0), ("hardworker", "hardworker", 0),
                              ("sensor", "sensor", 1), ("sensor2", "sensor", 2)}
    assert summaries[("sensor", "sensor", 1)]["sent"] == 50 and summaries[("logger", "logger", 0)]["stored"] == 100
    d = s.folder.path / s.trial.id
    for host, name in (("logger", "logger-0"), ("hardworker", "hardworker-0"), ("sensor2", "sensor-2")):
        cfg = json.loads((d / host / f"{name}.json").read_text())  # the config, kept in the run folder
        assert cfg["trial"] == s.trial.id and cfg["out_dir"].startswith(str(tmp_path / host))
        assert json.loads((d / host / f"{name}.summary.json").read_text())["status"] == "ok"
    hw = json.loads((d / "hardworker" / "hardworker-0.json").read_text())
    assert hw["expected_streams"] == 2 and hw["cpus"] == [1]
    # hardworker clock minus each sensor's, so latency is taken on one clock
    assert hw["clock_skew_s"] == {"1": pytest.approx(0.2, abs=0.02), "2": pytest.approx(-0.3, abs=0.02)}


def test_idle_trial_runs_the_hardworker_alone(fleet, tmp_path):
    s = session(fleet, tmp_path, mode="idle")
    fleet.calls.clear()
    assert list(s.run()) == [("hardworker", "hardworker", 0)]
    assert {h for h, _ in fleet.hostctl_calls("start")} == {"hardworker"}
    assert json.loads((s.folder.path / s.trial.id / "hardworker" / "hardworker-0.json").read_text())[
        "expected_streams"] is None


def test_a_role_that_never_gets_ready_stops_the_start(fleet, tmp_path):
    fleet.hosts["hardworker"].never_ready["hardworker-0"] = "bcc: compile error"
    s = session(fleet, tmp_path)
    fleet.calls.clear()
    with pytest.raises(RunFailed, match="(?s)hardworker on hardworker did not become ready: .*compile error"):
        s.run()
    assert {h for h, _ in fleet.hostctl_calls("start")} == {"logger", "hardworker"}  # no sensor started
    assert fleet.hostctl_calls("go") == []


@pytest.mark.parametrize("script, message", [
    (lambda f: f.hosts["hardworker"].die_after.update({"hardworker-0": 0.15}),
     "hardworker on hardworker died without a summary"),
    (lambda f: f.hosts["logger"].die_after.update({"logger-0": 0.15}), "logger on logger died without a summary"),
    (lambda f: setattr(f.hosts["sensor2"], "down", "no answer within 3 s"), "lost contact with sensor2"),
])
def test_watch_fails_the_trial_when_a_role_or_host_goes(fleet, tmp_path, script, message):
    s = session(fleet, tmp_path)
    s.start()
    s.go()
    script(fleet)
    with pytest.raises(RunFailed, match=message):
        s.watch()


def test_a_hardworker_that_exits_before_the_window_closed_fails(fleet, tmp_path):
    s = session(fleet, tmp_path, mode="xdp", duration=2.0)
    s.start()
    s.go()
    rh = fleet.hosts["hardworker"]
    with rh.lock:
        rh._end("hardworker-0", {"delivered": 0})  # a summary, but far too early
    with pytest.raises(RunFailed, match="hardworker on hardworker exited early"):
        s.watch()


def test_finish_fails_on_a_bad_summary_or_a_left_xdp_program(fleet, tmp_path):
    fleet.hosts["hardworker"].summary_patch["hardworker-0"] = {"status": "failed", "error": "OSError: ring gone"}
    s = session(fleet, tmp_path)
    s.start()
    s.go()
    s.watch()
    fleet.hosts["sensor"].xdp_prog_id = 7
    with pytest.raises(RunFailed) as exc:
        s.finish()
    assert "hardworker-0 on hardworker: OSError: ring gone" in str(exc.value)
    assert "XDP program 7 still attached on sensor:eth0" in str(exc.value)


def test_finish_fails_when_a_summary_cannot_be_fetched(fleet, tmp_path):
    s = session(fleet, tmp_path)
    s.start()
    s.go()
    s.watch()
    (fleet.hosts["sensor"].checkout / ".tcpskim" / "runs" / s.folder.run_id / s.trial.id
     / "sensor-1.summary.json").unlink()
    with pytest.raises(RunFailed, match="sensor-1 on sensor: no summary"):
        s.finish()


def test_a_non_root_host_gets_its_config_through_tmp_and_sudo(tmp_path):
    fleet = role_fleet(tmp_path, user="pi")
    s = session(fleet, tmp_path, sensors=1)
    fleet.calls.clear()
    s.run()
    puts = [c.what for c in fleet.calls if c.kind == "put" and c.host == "logger"]
    assert puts == [f"/tmp/tcpskim-{s.folder.run_id}-logger-0.json"]
    assert any(c.kind == "run" and c.what.startswith("mv /tmp/tcpskim-") for c in fleet.calls)
    assert fleet.unmatched == []


# --- the run around the sessions ----------------------------------------------------------
def runner(fleet, tmp_path, **kw):
    out = []
    r = Runner(fleet, quick(fleet.inv, **kw), out=out.append, progress=False)
    r.session_opts = FAST
    return r, out, RunFolder.new(tmp_path / "results", "unit")


def test_a_run_writes_one_row_per_trial(fleet, tmp_path):
    r, out, folder = runner(fleet, tmp_path, sensors=2)
    r.run(folder)
    run = json.loads((folder.path / "run.json").read_text())
    assert run["status"] == "ok" and set(run["hosts"]) == {"logger", "hardworker", "sensor", "sensor2"}
    assert run["hosts"]["sensor2"]["mac"] == "02:00:00:00:00:0b" and len(run["hosts"]["logger"]["commit"]) == 40
    rows = json.loads((folder.path / "summary.json").read_text())["rows"]
    assert [row["mode"] for row in rows] == ["idle", "xdp", "tcp"]
    for row in rows[1:]:
        assert row["status"] == "ok" and row["sent"] == row["delivered"] == row["logged"] == 100, row
    assert f"run {folder.run_id} ok: {folder.path}" in out


def test_a_role_dying_mid_trial_stops_every_role_and_marks_the_run_failed(fleet, tmp_path):
    r, out, folder = runner(fleet, tmp_path, modes="xdp")
    for h in fleet.hosts.values():
        h.xdp_prog_id = 11  # attached on every host when the hardworker dies
    fleet.hosts["hardworker"].die_after["hardworker-0@xdp"] = 0.15
    with pytest.raises(RunFailed, match="hardworker on hardworker died without a summary"):
        r.run(folder)
    # the cleanup swept every host of the inventory: roles stopped, XDP detached
    cleanup = fleet.calls[max(i for i, c in enumerate(fleet.calls) if c.kind == "hostctl" and c.what[0] == "go"):]
    swept = {c.host for c in cleanup if c.kind == "hostctl" and c.what[0] == "stop" and "--interface" in c.what}
    assert swept == {h.name for h in fleet.inv.hosts}
    assert all(h.xdp_prog_id is None and not h.roles for h in fleet.hosts.values())
    run = json.loads((folder.path / "run.json").read_text())
    assert run["status"] == "failed" and "hardworker on hardworker" in run["failure"]
    rows = json.loads((folder.path / "summary.json").read_text())["rows"]
    assert [row["mode"] for row in rows] == ["idle"]  # the trials before it are kept
    assert any("FAILED: partial results in" in line for line in out)


def test_sigterm_to_the_run_cleans_up_like_ctrl_c(fleet, tmp_path):
    r, out, folder = runner(fleet, tmp_path, modes="tcp")
    r.p = dataclasses.replace(r.p, duration_s=5.0)
    r.plan = [t for t in r.plan if t.mode == "tcp"]
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        with pytest.raises(RunFailed, match=r"interrupted \(SIGTERM\)"):
            r.run(folder)
        assert signal.getsignal(signal.SIGTERM) == before[signal.SIGTERM]  # handler put back
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN  # cleanup survives a closed terminal
    finally:
        timer.cancel()
        for s, h in before.items():
            signal.signal(s, h)
    assert all(not h.roles for h in fleet.hosts.values())  # every role stopped
    assert json.loads((folder.path / "run.json").read_text())["failure"] == "interrupted (SIGTERM)"
