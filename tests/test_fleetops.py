"""The control side of deploy, fix-network and stop reads each host's answer (changed, failed,
msg, data) instead of deriving "changed" itself; a deploy is one SSH command per host, a
fix-network one per host when every MAC is known; a failed host is reported as it fails.
On the fake fleet (tests/fakefleet.py): no SSH, every call logged."""

from __future__ import annotations

import threading
import time

from fakefleet import FakeFleet, FakeHost, Reply, fake_inventory, role_fleet
from roles.answer import answer
from tcpskim import deploy, localgit, netfix, stop
from tcpskim.fleet import summary


def deploy_reply(changed: bool, commit: str | None = None, **data):
    commit = commit or localgit.head()
    return lambda argv: answer({"action": "pulled" if changed else "up to date", "commit": commit,
                                "runtime": "cached", "headers": "/x", **data},
                               changed=changed, msg=("pulled " if changed else "up to date ") + commit[:10])


def fleet_of(tmp_path, sensors=1):
    inv = fake_inventory(tmp_path, sensors)
    return FakeFleet(inv, {h.name: FakeHost(h.name) for h in inv.hosts})


def test_deploy_is_one_ssh_command_per_host_and_reads_changed(tmp_path):
    fleet = fleet_of(tmp_path, sensors=2)
    for name, fh in fleet.hosts.items():
        fh.hostctl_on("deploy", deploy_reply(changed=name == "logger"))
    results = deploy.deploy(fleet, list(fleet.inv.hosts))
    assert {r.host: r.status for r in results} == {"sensor": "ok", "sensor2": "ok", "hardworker": "ok",
                                                  "logger": "changed"}
    per_host = {h.name: [c for c in fleet.calls if c.host == h.name] for h in fleet.inv.hosts}
    assert all(len(calls) == 1 and calls[0].kind == "hostctl" for calls in per_host.values()), per_host
    argv = per_host["sensor"][0].what
    assert argv[:1] == ["deploy"] and argv[argv.index("--remote") + 1] == fleet.inv.code_remote
    assert all(r.data["same_as_control"] and "runtime" in r.data for r in results)
    assert fleet.unmatched == []


def test_deploy_check_passes_check_and_changes_nothing_on_the_control_side(tmp_path):
    fleet = fleet_of(tmp_path)
    for fh in fleet.hosts.values():
        fh.hostctl_on("deploy", lambda argv: answer({"action": "would pull", "commit": "f" * 40},
                                                    changed=True, msg="would pull"))
    results = deploy.deploy(fleet, list(fleet.inv.hosts), check=True)
    assert all(c.what[-1] == "--check" for c in fleet.calls)
    assert all(r.status == "changed" and "differs from control HEAD" in r.detail for r in results)


def test_deploy_links_headers_as_root_only_when_the_user_could_not(tmp_path):
    fleet = fleet_of(tmp_path)
    for fh in fleet.hosts.values():
        fh.hostctl_on("deploy", deploy_reply(changed=False, headers=None, needs_root=True))
        fh.hostctl_on("headers-shim", answer({"headers": "/usr/src/h", "shim": True, "created": True},
                                             changed=True, msg="linked kernel headers /usr/src/h"))
    results = deploy.deploy(fleet, list(fleet.inv.hosts))
    assert all(r.status == "changed" and r.detail.endswith("linked kernel headers /usr/src/h") for r in results)
    assert len(fleet.hostctl_calls("headers-shim")) == len(fleet.inv.hosts)


def test_deploy_failure_is_the_hosts_own_message(tmp_path):
    fleet = fleet_of(tmp_path)
    for fh in fleet.hosts.values():
        fh.hostctl_on("deploy", deploy_reply(changed=False))
    fleet.hosts["hardworker"].hostctl_on("deploy", RuntimeError("cannot import bcc/pyroute2 (x)"))
    results = {r.host: r for r in deploy.deploy(fleet, list(fleet.inv.hosts))}
    assert results["hardworker"].failed and "cannot import bcc/pyroute2 (x)" in results["hardworker"].detail
    assert not results["logger"].failed


def test_old_checkout_without_hostctl_deploy_is_pulled_once_then_deployed(tmp_path):
    fleet = fleet_of(tmp_path)
    h = fleet.inv.hardworker
    fh = fleet.hosts[h.name]
    state = {"pulled": False}

    def old_or_new(cmd):
        if not state["pulled"]:
            return Reply(stderr="hostctl: error: argument cmd: invalid choice: 'deploy'", exited=2)
        return Reply(stdout='{"changed": true, "failed": false, "msg": "pulled", "data": {"commit": "a"}}\n')
    fh.answer = lambda cmd: (state.update(pulled=True) or Reply()) if "pull --quiet" in cmd else old_or_new(cmd)
    r = deploy.update_host(fleet, h, "https://example.invalid/x.git", "main")
    assert r.changed and r.msg == "pulled" and len(fleet.calls) == 3


def test_fix_network_is_one_call_per_host_when_macs_are_known(tmp_path, monkeypatch):
    fleet = role_fleet(tmp_path)
    macs = {h.name: fleet.hosts[h.name].mac for h in fleet.inv.hosts}
    monkeypatch.setattr(netfix, "known_macs", lambda inv: {n: (m, "the lab") for n, m in macs.items()})
    for name, fh in fleet.hosts.items():
        fh.hostctl_on("netfix", lambda argv, name=name: answer(
            {"mac": macs[name], "changed": [] if name != "logger" else [fleet.inv.sensors[0].ip],
             "ok": [a.split("=")[0] for a in argv if "=" in a and a.split("=")[0] != fleet.inv.sensors[0].ip]
             if name == "logger" else [a.split("=")[0] for a in argv if "=" in a]},
            changed=name == "logger", msg="x"))
    found, unknown = netfix.plan_macs(fleet, list(fleet.inv.hosts))
    assert unknown == [] and fleet.calls == []  # nothing asked before the pins
    results = {r.host: r for r in netfix.pin_neighbours(fleet, list(fleet.inv.hosts), found, False)}
    assert [c.what[0] for c in fleet.calls] == ["netfix"] * 3
    assert results["logger"].status == "changed" and results["logger"].detail == "pinned sensor(198.18.0.10)"
    assert results["hardworker"].status == "ok" and results["hardworker"].data["pinned"] == 2
    argv = fleet.hostctl_calls("netfix")[0][1]
    assert argv[argv.index("--mac") + 1] == macs[fleet.hostctl_calls("netfix")[0][0]]


def test_fix_network_asks_only_the_hosts_whose_mac_nobody_knows(tmp_path, monkeypatch):
    fleet = role_fleet(tmp_path)
    hw = fleet.inv.hardworker
    known = {h.name: (fleet.hosts[h.name].mac, "inventory") for h in fleet.inv.hosts if h.name != hw.name}
    monkeypatch.setattr(netfix, "known_macs", lambda inv: dict(known))
    found, unknown = netfix.plan_macs(fleet, list(fleet.inv.hosts))
    assert [(c.host, c.what[0]) for c in fleet.calls] == [(hw.name, "facts")]
    assert found[hw.name] == (fleet.hosts[hw.name].mac, "discovered") and unknown == []


def test_stop_reads_changed_from_the_answer(tmp_path):
    fleet = role_fleet(tmp_path)
    fleet.hosts["hardworker"].xdp_prog_id = 42
    results = {r.host: r for r in stop.stop(fleet, list(fleet.inv.hosts))}
    assert results["hardworker"].status == "changed" and results["hardworker"].data == {"detached": True, "guard": ""}
    assert results["logger"].status == "ok" and results["logger"].detail == "nothing running"


def test_a_failed_host_is_reported_before_a_slow_one_finishes(tmp_path):
    fleet = fleet_of(tmp_path)
    release = threading.Event()
    seen = []
    fleet.progress = lambda r: seen.append((r.host, r.status, release.is_set()))
    for fh in fleet.hosts.values():
        fh.hostctl_on("deploy", deploy_reply(changed=False))
    fleet.hosts["sensor"].hostctl_on("deploy", lambda argv: (release.wait(10), deploy_reply(False)(argv))[1])
    fleet.hosts["hardworker"].down = "no answer within 3 s"
    t0 = time.monotonic()
    worker = threading.Thread(target=lambda: seen.append(deploy.deploy(fleet, list(fleet.inv.hosts))))
    worker.start()
    deadline = time.monotonic() + 5
    while not any(s[0] == "hardworker" for s in seen if isinstance(s, tuple)) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ("hardworker", "failed", False) in seen, seen  # told while the sensor still works
    release.set()
    worker.join(10)
    results = seen[-1]
    assert [r.host for r in results] == [h.name for h in fleet.inv.hosts]  # the table keeps inventory order
    assert time.monotonic() - t0 < 10
    assert not summary("deploy", results, out=lambda *_: None)
