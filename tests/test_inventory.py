"""Inventory validation: every malformed inventory gives one line naming the key, and no task
opens an SSH connection before the inventory validated."""

import copy
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from helpers import toml_dump
from tcpskim import inventory

ROOT = Path(__file__).resolve().parent.parent


def base(port=22):
    return {
        "testbed": {"name": "t"},
        "ssh": {"user": "pi", "port": port, "connect_timeout": 2},
        "code": {"remote": "https://example.invalid/tcpskim.git", "branch": "main"},
        "marker": {"tos": 0x68, "port": 12345},
        "hosts": {
            "sensor": {"role": "sensor", "ip": "192.0.2.85", "interface": "wlan0", "ssh_host": "127.0.0.1"},
            "hardworker": {"role": "hardworker", "ip": "192.0.2.79", "interface": "wlan0",
                           "ssh_host": "127.0.0.1", "ssh_port": port + 1 if port < 65535 else 1},
            "logger": {"role": "logger", "ip": "192.0.2.93", "interface": "wlan0",
                       "ssh_host": "127.0.0.1", "ssh_port": port + 2 if port < 65534 else 2},
        },
    }


def setting(path, value):
    def f(d):
        *parents, last = path.split(".")
        t = d
        for p in parents:
            t = t.setdefault(p, {})
        t[last] = value
    return f


def deleting(path):
    def f(d):
        *parents, last = path.split(".")
        t = d
        for p in parents:
            t = t[p]
        del t[last]
    return f


# (mutation, key path the error must name, a fragment of the bad value or reason)
BAD = [
    (setting("hosts.sensor.ip", "192.0.2.300"), "hosts.sensor.ip", "192.0.2.300"),
    (setting("hosts.sensor.ip", "sensor.local"), "hosts.sensor.ip", "not an IPv4"),
    (setting("hosts.sensor.ip", 5), "hosts.sensor.ip", "string"),
    (deleting("hosts.sensor.ip"), "hosts.sensor.ip", "required"),
    (setting("hosts.logger.ip", "192.0.2.85"), "hosts.logger.ip", "same data-plane address"),
    (setting("hosts.sensor.mac", "02:00:00:00:00"), "hosts.sensor.mac", "02:00:00:00:00"),
    (setting("hosts.sensor.mac", "zz:00:00:00:00:01"), "hosts.sensor.mac", "not a MAC"),
    (setting("hosts.sensor.mac", "01:00:5e:00:00:01"), "hosts.sensor.mac", "multicast"),
    (lambda d: (d["hosts"]["sensor"].__setitem__("mac", "02:00:00:00:00:01"),
                d["hosts"]["logger"].__setitem__("mac", "02:00:00:00:00:01")), "hosts.logger.mac", "same MAC"),
    (setting("hosts.sensor.interface", "wlan0; reboot"), "hosts.sensor.interface", "wlan0; reboot"),
    (setting("hosts.sensor.interface", "averyveryverylongname0"), "hosts.sensor.interface", "not an interface"),
    (deleting("hosts.sensor.interface"), "hosts.sensor.interface", "required"),
    (setting("hosts.sensor.role", "watcher"), "hosts.sensor.role", "watcher"),
    (deleting("hosts.sensor.role"), "hosts.sensor.role", "required"),
    (setting("hosts.hardworker.role", "sensor"), "hosts", "'hardworker'"),
    (setting("hosts.hardworker.role", "logger"), "hosts.logger.role", "more than one host has role 'logger'"),
    (setting("hosts.sensor.colour", "red"), "hosts.sensor.colour", "unknown key"),
    (setting("hosts.sensor.ssh_port", 70000), "hosts.sensor.ssh_port", "70000"),
    (setting("hosts.sensor.ssh_port", "22"), "hosts.sensor.ssh_port", "integer"),
    (setting("hosts.sensor.ssh_user", "root; id"), "hosts.sensor.ssh_user", "root; id"),
    (setting("hosts.sensor.ssh_host", "-oProxyCommand=x"), "hosts.sensor.ssh_host", "ProxyCommand"),
    (setting("hosts.sensor.checkout", "tcpskim $(id)"), "hosts.sensor.checkout", "$(id)"),
    (setting("hosts.sensor.cpus", [1, "x"]), "hosts.sensor.cpus", "CPU numbers"),
    (setting("hosts.Sensor_1", {"role": "sensor", "ip": "192.0.2.1", "interface": "wlan0"}), "hosts.Sensor_1",
     "not a host name"),
    (setting("marker.tos", 300), "marker.tos", "300"),
    (setting("marker.tos", 0x69), "marker.tos", "ECN"),
    (setting("marker.port", 80), "marker.port", "80"),
    (setting("marker.port", True), "marker.port", "integer"),
    (setting("marker.colour", 1), "marker.colour", "unknown key"),
    (setting("ssh.port", 0), "ssh.port", "0"),
    (setting("ssh.connect_timeout", -1), "ssh.connect_timeout", "-1"),
    (setting("ssh.bogus", 1), "ssh.bogus", "unknown key"),
    (setting("code.remote", "--upload-pack=touch /tmp/x"), "code.remote", "upload-pack"),
    (setting("code.remote", ""), "code.remote", "required outside the lab"),
    (setting("code.branch", "main; rm -rf /"), "code.branch", "rm -rf"),
    (setting("experiment.modes", ["xdp", "udp"]), "experiment.modes", "udp"),
    (setting("experiment.modes", []), "experiment.modes", "non-empty"),
    (setting("experiment.rate", 0), "experiment.rate", "0"),
    (setting("experiment.wakeup", "sometimes"), "experiment.wakeup", "sometimes"),
    (setting("experiment.wakeup", "batch:0ms"), "experiment.wakeup", "batch:0ms"),
    (setting("control.interface", "eth0; rm -rf /"), "control.interface", "rm -rf"),
    (setting("control.add_routes", True), "control.gateway", "add_routes"),
    (setting("experiment.xdp_mode", "offload"), "experiment.xdp_mode", "offload"),
    (setting("experiment.ringbuf_bytes", 100000), "experiment.ringbuf_bytes", "power of two"),
    (setting("experiment.size", 70000), "experiment.size", "70000"),
    (setting("experiment.trace_idle", "yes"), "experiment.trace_idle", "yes"),
    (setting("control.gateway", "192.168.1"), "control.gateway", "192.168.1"),
    (setting("lab", {"prefix": "x"}), "lab", "testbed.lab = true"),
    (setting("frobnicate", 1), "frobnicate", "unknown key"),
    (deleting("hosts"), "hosts", "required"),
]


def load_dict(tmp_path, d, name="inv.toml"):
    p = tmp_path / name
    p.write_text(toml_dump(d))
    return p


def test_base_inventory_is_valid(tmp_path):
    inv = inventory.load(load_dict(tmp_path, base()))
    assert [h.role for h in inv.hosts] == ["sensor", "hardworker", "logger"]
    assert inv.tos == 0x68 and inv.port == 12345
    assert inv.hardworker.ip == "192.0.2.79"


@pytest.mark.parametrize("mutate,key,fragment", BAD, ids=[f"{i:02d}-{b[1]}" for i, b in enumerate(BAD)])
def test_malformed_inventory_names_the_key(tmp_path, mutate, key, fragment):
    d = copy.deepcopy(base())
    mutate(d)
    with pytest.raises(inventory.InventoryError) as err:
        inventory.load(load_dict(tmp_path, d))
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("inv.toml: ")
    assert f" {key}:" in msg or f" {key} " in msg, msg
    assert fragment in msg, msg


def test_not_toml_and_missing_file(tmp_path):
    p = tmp_path / "inv.toml"
    p.write_text("[hosts\n")
    with pytest.raises(inventory.InventoryError, match="not valid TOML"):
        inventory.load(p)
    with pytest.raises(inventory.InventoryError, match="cannot read"):
        inventory.load(tmp_path / "absent.toml")


def test_committed_inventories_are_valid():
    lab = inventory.load(ROOT / "inventory.toml")
    assert lab.lab is not None and lab.lab.subnet == "198.18.0.0/24"
    pi = inventory.load(ROOT / "inventory.example.toml")
    assert pi.lab is None
    assert {h.ip for h in pi.hosts} == {"192.168.1.85", "192.168.1.79", "192.168.1.93"}
    assert all(h.interface == "wlan0" for h in pi.hosts)


class _Listener:
    """A TCP listener standing where the hosts' sshd would be: counts connection attempts."""

    def __init__(self):
        self.socks = [socket.create_server(("127.0.0.1", 0)) for _ in range(3)]
        base_port = self.socks[0].getsockname()[1]
        self.port = base_port
        self.accepted = 0
        self.stop = False
        for s in self.socks:
            s.settimeout(0.2)
            threading.Thread(target=self._loop, args=(s,), daemon=True).start()

    def _loop(self, s):
        while not self.stop:
            try:
                conn, _ = s.accept()
                self.accepted += 1
                conn.close()
            except OSError:
                pass

    def close(self):
        self.stop = True
        for s in self.socks:
            s.close()


def test_tasks_refuse_bad_inventory_before_any_ssh(tmp_path):
    """Run the real `invoke` on every malformed inventory: exit 2, one line, no connection."""
    lst = _Listener()
    try:
        files = []
        for i, (mutate, key, _) in enumerate(BAD):
            d = base(lst.port)
            for h in d["hosts"].values():
                h["ssh_port"] = lst.port  # every host points at the listener
            mutate(d)
            files.append((load_dict(tmp_path, d, f"bad{i}.toml"), key))
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        tasks = ("deploy", "fix-network", "stop", "doctor")
        for i, (path, key) in enumerate(files):
            for task in (tasks[i % len(tasks)],):
                r = subprocess.run([sys.executable, "-m", "invoke", "-r", str(ROOT), task, "-i", str(path)],
                                   capture_output=True, text=True, env=env, timeout=60)
                assert r.returncode == 2, (path, task, r.stdout, r.stderr)
                err = r.stderr.strip()
                assert len(err.splitlines()) == 1 and key in err, (task, err)
        assert lst.accepted == 0
    finally:
        lst.close()


@pytest.mark.parametrize("argv, key", [
    (["--repeat", "abc"], "--repeat"), (["--repeat", "2.5"], "--repeat"), (["--duration", "x"], "--duration"),
    (["--work-us", "-5"], "--work-us"), (["--wakeup", "batch:0ms"], "--wakeup"), (["--rate", "50,fast"], "--rate"),
    (["--sensors", "4"], "--sensors"), (["--modes", "xdp,udp"], "--modes"), (["--tag", "a b"], "--tag"),
])
def test_run_experiment_refuses_bad_options_before_any_ssh(tmp_path, argv, key):
    """The real `invoke run-experiment` with a bad option: exit 2, one line naming it, no connection."""
    lst = _Listener()
    try:
        d = base(lst.port)
        for h, sock in zip(d["hosts"].values(), lst.socks):  # a valid inventory: one listener each
            h["ssh_port"] = sock.getsockname()[1]
        path = load_dict(tmp_path, d)
        r = subprocess.run([sys.executable, "-m", "invoke", "-r", str(ROOT), "run-experiment", "-i", str(path),
                            *argv], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
                           timeout=60)
        assert r.returncode == 2, (argv, r.stdout, r.stderr)
        err = r.stderr.strip()
        assert len(err.splitlines()) == 1 and key in err, (argv, err)
        assert lst.accepted == 0
    finally:
        lst.close()


def test_collect_refuses_a_bad_run_before_any_ssh(tmp_path):
    """collect: no run folder, or a run made with hosts this inventory does not have."""
    lst = _Listener()
    try:
        d = base(lst.port)
        for h, sock in zip(d["hosts"].values(), lst.socks):
            h["ssh_port"] = sock.getsockname()[1]
        path = load_dict(tmp_path, d)
        ghost = tmp_path / "20260101-000000"
        ghost.mkdir()
        ghost.joinpath("run.json").write_text('{"run_id": "20260101-000000", "status": "ok", '
                                              '"hosts": {"sensor": {}, "ghost": {}}}')
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        for run, want in ((str(tmp_path / "nope"), "is not a run folder"), (str(ghost), "ghost")):
            r = subprocess.run([sys.executable, "-m", "invoke", "-r", str(ROOT), "collect", "-i", str(path),
                                "--run", run], capture_output=True, text=True, env=env, timeout=60)
            assert r.returncode == 2, (run, r.stdout, r.stderr)
            err = r.stderr.strip()
            assert len(err.splitlines()) == 1 and want in err, err
        assert lst.accepted == 0
    finally:
        lst.close()
