"""The guard's control side (``tcpskim.guardops``, the guard.* tasks, ``stop``, run-experiment
``--guard``, ``deploy --guard-unit``) on a fake fleet, and the systemd unit's text: no SSH, no
root. What a config holds, who is asked what, and bad input as one line naming it."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re

import pytest

from roles import guardctl, guardhost
from roles.guardcfg import GuardError
from tcpskim import guardops, stop
from tcpskim.experiment import Runner
from tcpskim.plan import params
from tcpskim.results import RunFolder

from fakefleet import role_fleet
from helpers import run_invoke, write_lab_inventory


@pytest.fixture
def fleet(tmp_path):
    f = role_fleet(tmp_path, sensors=2)
    yield f
    assert f.unmatched == []


def configs(fleet) -> dict[str, dict]:
    return {h: json.loads(argv[argv.index("--config-json") + 1]) for h, argv in fleet.hostctl_calls("guard-start")}


def test_start_builds_each_config_from_the_inventory_and_live_facts(fleet):
    inv = fleet.inv
    results = {r.host: r for r in guardops.start(fleet, list(inv.hosts))}
    assert all(r.status == "changed" and r.data["action"] == "start" for r in results.values()), results
    # every MAC was read live (facts), before any guard-start
    calls = [(c.host, c.what[0]) for c in fleet.calls]
    assert sorted(calls[:4]) == sorted((h.name, "facts") for h in inv.hosts)
    assert sorted(calls[4:]) == sorted((h.name, "guard-start") for h in inv.hosts)
    cfgs = configs(fleet)
    for h in inv.hosts:
        cfg = cfgs[h.name]
        assert cfg["interface"] == h.interface and cfg["ip"] == h.ip
        assert cfg["peers"] == {p.ip: fleet.hosts[p.name].mac for p in inv.hosts if p.name != h.name}
        assert cfg["state_dir"] == f"{fleet.hosts[h.name].checkout}/.tcpskim"
        assert "--live" in dict(fleet.hostctl_calls("guard-start"))[h.name]
    # real hosts: the hardworker's guard keeps off the CPUs its roles have (cpus = [1]), others unpinned
    assert cfgs["hardworker"]["cpus"] == [c for c in range(os.cpu_count()) if c != 1]
    assert cfgs["sensor"]["cpus"] == cfgs["logger"]["cpus"] == []
    again = guardops.start(fleet, list(inv.hosts))
    assert all(r.status == "ok" and r.data["action"] == "unchanged" for r in again), again


def test_lab_guards_never_run_on_the_hardworkers_dedicated_cpu(tmp_path, monkeypatch):
    from tcpskim.lab.names import cpu_plan

    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    inv = write_lab_inventory(tmp_path)
    dedicated = cpu_plan(inv)[inv.hardworker.name]
    assert dedicated == [3]
    cpus = guardops.guard_cpus(inv, {})
    assert cpus == {h.name: [0, 1, 2] for h in inv.hosts}  # the hardworker host's guard too


@pytest.mark.parametrize("mac, why", [("00:00:00:00:00:00", "is the all-zero MAC address"),
                                      ("01:00:5e:00:00:01", "is a multicast MAC address")])
def test_a_bad_live_mac_fails_its_host_and_every_host_that_needs_it(fleet, mac, why):
    fleet.hosts["logger"].mac = mac
    results = {r.host: r for r in guardops.start(fleet, list(fleet.inv.hosts))}
    line = f"hosts.logger: live MAC of eth0: {mac!r} {why}"
    assert results["logger"].status == "failed" and results["logger"].detail == line
    for h in ("sensor", "sensor2", "hardworker"):
        assert results[h].status == "failed" and results[h].detail == f"peer logger (198.18.0.13): {line}"
    assert fleet.hostctl_calls("guard-start") == []  # nothing started with a bad peer


def test_a_host_down_fails_alone_and_names_itself_for_its_peers(fleet):
    fleet.hosts["sensor2"].down = "no answer within 3 s"
    results = {r.host: r for r in guardops.start(fleet, [fleet.inv.host("sensor"), fleet.inv.host("sensor2")])}
    assert results["sensor2"].status == "failed" and "no answer within 3 s" in results["sensor2"].detail
    assert results["sensor"].detail.startswith("peer sensor2 (198.18.0.11): ssh to ")
    assert "\n" not in results["sensor"].detail


def test_unknown_host_and_bad_options_are_one_line_before_any_ssh(tmp_path):
    role_fleet(tmp_path)  # writes the inventory
    path = tmp_path / "inventory.toml"
    for args, line in ((["guard.start", "--hosts", "nosuch"], "error: --hosts: 'nosuch' is not a host of inventory.toml"),
                       (["guard.status", "--events", "99"], "error: --events: '99' is out of range 0..50"),
                       (["guard.stop", "--timeout", "abc"], "error: --timeout: 'abc'")):
        r = run_invoke(path, *args, timeout=60)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert r.stderr.startswith(line) and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)


def test_deploy_guard_unit_is_refused_in_the_lab(tmp_path):
    inv = write_lab_inventory(tmp_path)
    r = run_invoke(inv.path, "deploy", "--guard-unit", timeout=60)
    assert r.returncode == 2 and r.stderr.startswith("error: --guard-unit: the lab's hosts share"), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_status_shows_state_pins_counts_and_events_with_times(fleet):
    guardops.start(fleet, list(fleet.inv.hosts))
    fleet.hosts["sensor"].guard_events = [
        {"time": 1796190000.25, "kind": "neigh", "event": "RTM_DELNEIGH", "ip": "198.18.0.12"},
        {"time": 1796190000.2503, "kind": "pin", "ip": "198.18.0.12", "mac": "02:00:00:00:00:0c",
         "reason": "deleted"}]
    results = {r.host: r for r in guardops.status(fleet, list(fleet.inv.hosts), 5)}
    s = results["sensor"]
    assert s.status == "ok" and s.data["state"].startswith("running (pid ")
    assert s.data["pins"] == "3/3 ok" and s.data["counts"] == "pin 1"
    assert s.detail == "2026-12-02 05:40:00.250Z pin      ip=198.18.0.12 mac=02:00:00:00:00:0c reason=deleted"
    out = []
    guardops.print_events(list(results.values()), out=out.append)
    assert out[0] == "\nsensor: last 2 guard event(s)"
    assert out[1] == "  2026-12-02 05:40:00.250Z neigh    event=RTM_DELNEIGH ip=198.18.0.12"
    assert results["logger"].detail == "no events"


def test_invoke_stop_stops_the_guard_and_says_so(fleet):
    guardops.start(fleet, list(fleet.inv.hosts))
    results = {r.host: r for r in stop.stop(fleet, list(fleet.inv.hosts))}
    for h, r in results.items():
        assert r.status == "changed" and r.data["guard"] == "stopped" and "stopped the guard" in r.detail, r
        assert fleet.hosts[h].guard is None
    assert all("--guard" in argv for _, argv in fleet.hostctl_calls("stop"))
    again = stop.stop(fleet, list(fleet.inv.hosts))
    assert all(r.status == "ok" and r.data["guard"] == "" for r in again)


def test_guard_stop_task_logic(fleet):
    guardops.start(fleet, [fleet.inv.host("logger")])
    (r,) = guardops.stop(fleet, [fleet.inv.host("logger")], check=True)
    assert r.status == "changed" and fleet.hosts["logger"].guard is not None  # --check changed nothing
    (r,) = guardops.stop(fleet, [fleet.inv.host("logger")])
    assert r.status == "changed" and r.data["stopped"] == str(fleet.hosts["logger"].guard_pid or 40006)
    assert fleet.hosts["logger"].guard is None


def _runner(fleet, tmp_path, guard):
    p = params(fleet.inv.experiment, rate="100", max_sensors=2, modes="tcp", idle=False, guard=guard)
    r = Runner(fleet, dataclasses.replace(p, duration_s=0.3, warmup_s=0.1, tail_s=0.1), out=lambda *_: None,
               progress=False)
    r.session_opts = {"poll_s": 0.05, "go_delay_s": 0.05}
    return r, RunFolder.new(tmp_path / "results", "unit")


def test_run_experiment_guard_starts_before_the_trials_and_stops_only_what_it_started(fleet, tmp_path):
    guardops.start(fleet, [fleet.inv.host("logger")])  # already running: the run leaves it running
    fleet.calls.clear()
    r, folder = _runner(fleet, tmp_path, guard=True)
    r.run(folder)
    first_role = fleet.index("logger", "start")
    assert all(fleet.index(h.name, "guard-start") < first_role for h in fleet.inv.hosts)
    assert fleet.hosts["logger"].guard is not None
    assert all(fleet.hosts[h].guard is None for h in ("sensor", "sensor2", "hardworker"))
    assert sorted(h for h, _ in fleet.hostctl_calls("guard-stop")) == ["hardworker", "sensor", "sensor2"]
    assert json.loads((folder.path / "run.json").read_text())["params"]["guard"] is True
    # the sweeps before and after trials never stop a guard
    assert not any("--guard" in argv for _, argv in fleet.hostctl_calls("stop"))


def test_run_experiment_without_guard_touches_no_guard(fleet, tmp_path):
    r, folder = _runner(fleet, tmp_path, guard=False)
    r.run(folder)
    assert not any(c.what[0].startswith("guard-") for c in fleet.calls if c.kind == "hostctl")


# --- host side: the systemd unit and the live MACs ---------------------------------------------
def test_unit_text_runs_the_guard_in_the_foreground_for_this_checkout():
    text = guardhost.unit_text("/home/pi/tcpskim", "/usr/bin/python3", "/home/pi/tcpskim/.tcpskim")
    assert "ExecStart=/usr/bin/python3 -m roles.guard run --state-dir /home/pi/tcpskim/.tcpskim\n" in text
    assert "WorkingDirectory=/home/pi/tcpskim\n" in text and "Type=simple\n" in text
    assert "ConditionPathExists=/home/pi/tcpskim/.tcpskim/guard/config.json\n" in text
    assert "Restart=on-failure\n" in text and "WantedBy=multi-user.target\n" in text
    # the command line is the one roles.guardctl recognises as this state dir's guard
    argv = re.search(r"^ExecStart=(.*)$", text, re.M).group(1).split()
    assert "roles.guard" in argv and "run" in argv and "/home/pi/tcpskim/.tcpskim" in argv
    with pytest.raises(GuardError, match=r"^guard-unit: checkout: '/home/pi/my tcpskim' is not an absolute path"):
        guardhost.unit_text("/home/pi/my tcpskim", "/usr/bin/python3", "/x")


def test_guard_unit_check_then_write_then_up_to_date(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(guardhost, "_systemctl", lambda *a: ran.append(a))
    args = argparse.Namespace(unit_dir=str(tmp_path), check=True)
    ans = guardhost.guard_unit(args)
    assert ans["changed"] and ans["msg"].startswith("would write and enable") and not os.listdir(tmp_path)
    assert ran == []
    args.check = False
    ans = guardhost.guard_unit(args)
    unit = tmp_path / guardhost.UNIT_NAME
    assert ans["changed"] and unit.read_text().startswith("# Written by tcpskim")
    assert f"--state-dir {guardctl.DEFAULT_STATE_DIR}\n" in unit.read_text()
    assert ran == [("daemon-reload",), ("enable", guardhost.UNIT_NAME)]
    assert guardhost.guard_unit(args) == {"changed": False, "failed": False, "msg": f"{unit} is up to date",
                                          "data": {"unit": str(unit), "enabled_by": "multi-user.target",
                                                   "check": False}}
    assert guardhost.guard_unit(argparse.Namespace(unit_dir=str(tmp_path), check=True))["changed"] is False


def test_live_macs_replace_what_was_learnt(tmp_path):
    state = tmp_path / "state"
    (state / "guard").mkdir(parents=True)
    learned = {"198.18.0.3": {"mac": "02:00:00:00:00:99", "since": 1.0, "source": "arp"},
               "198.18.0.4": {"mac": "02:00:00:00:00:04", "since": 1.0, "source": "arp"}}
    (state / "guard" / "learned.json").write_text(json.dumps(learned))
    cfg = {"interface": "eth0", "state_dir": str(state),
           "peers": {"198.18.0.3": "02:00:00:00:00:03", "198.18.0.4": "02:00:00:00:00:04"}}
    out = guardctl.start_config(dict(cfg), check=True, live=True)
    assert out["dropped_learned"] == ["198.18.0.3"] and out["action"] == "start"
    assert json.loads((state / "guard" / "learned.json").read_text()) == learned  # --check changed nothing
    assert guardctl.start_config(dict(cfg), check=True)["dropped_learned"] == []  # not live: learnt MACs stay


def test_deploy_guard_unit_asks_each_host_after_its_pull(tmp_path):
    from fakefleet import FakeFleet, FakeHost, fake_inventory
    from test_fleetops import deploy_reply

    from tcpskim import deploy

    inv = fake_inventory(tmp_path)
    fleet = FakeFleet(inv, {h.name: FakeHost(h.name) for h in inv.hosts})
    for name, fh in fleet.hosts.items():
        fh.hostctl_on("deploy", deploy_reply(changed=False))
        fh.hostctl_on("guard-unit", lambda argv: guardhost.answer(
            {"unit": "/etc/systemd/system/tcpskim-guard.service"}, changed=True,
            msg="would write and enable it" if "--check" in argv else "wrote and enabled it"))
    results = {r.host: r for r in deploy.deploy(fleet, list(inv.hosts), check=True, guard_unit=True)}
    assert all(r.status == "changed" and r.detail.endswith("; would write and enable it") for r in results.values())
    for h in inv.hosts:
        assert [c.what[0] for c in fleet.calls if c.host == h.name] == ["deploy", "guard-unit"]
    assert all("--check" in argv for _, argv in fleet.hostctl_calls("guard-unit"))
    fleet.calls.clear()
    deploy.deploy(fleet, list(inv.hosts))  # without the option: no unit
    assert fleet.hostctl_calls("guard-unit") == []


def test_experiment_guard_defaults_off_and_must_be_a_boolean(tmp_path):
    from tcpskim import inventory

    inv = write_lab_inventory(tmp_path / "a")
    assert inv.experiment["guard"] is False and params(inv.experiment).guard is False
    text = inv.path.read_text().replace("[experiment]\n", "[experiment]\nguard = \"yes\"\n")
    inv.path.write_text(text)
    with pytest.raises(inventory.InventoryError) as exc:
        inventory.load(inv.path)
    assert "experiment.guard" in str(exc.value) and "\n" not in str(exc.value), exc.value
