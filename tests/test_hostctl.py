"""Host commands answer in one shape ({changed, failed, msg, data}) and every command that changes
state has a check mode that changes nothing. Run in-process, without root: pyroute2 is replaced
by a fake netlink, git by a temporary origin and clone."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from roles import deployctl, hostctl, netops
from roles.answer import KEYS


def run(capsys, *argv):
    rc = hostctl.main(list(argv))
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(out) == KEYS and isinstance(out["data"], dict), out
    return rc, out


def test_read_only_command_answers_in_the_shape(capsys):
    rc, out = run(capsys, "commit")
    assert rc == 0 and out["changed"] is False and out["failed"] is False and len(out["data"]["commit"]) == 40


def test_failure_is_the_shape_with_exit_1(capsys, tmp_path):
    rc, out = run(capsys, "start", "--config", str(tmp_path / "missing.json"))
    assert rc == 1 and out["failed"] is True and "missing.json" in out["msg"] and out["changed"] is False


def test_go_check_writes_nothing(capsys, tmp_path):
    rc, out = run(capsys, "go", "--out-dir", str(tmp_path / "t"), "--start-at", "5", "--check")
    assert rc == 0 and out["changed"] and out["msg"].startswith("would write") and not (tmp_path / "t").exists()
    rc, out = run(capsys, "go", "--out-dir", str(tmp_path / "t"), "--start-at", "5")
    assert out["changed"] and json.loads((tmp_path / "t" / "go.json").read_text()) == {"start_at": 5.0}


def test_stop_check_names_what_it_would_stop_and_stops_nothing(capsys, tmp_path):
    state = tmp_path / "state"
    rc, out = run(capsys, "stop", "--state-dir", str(state), "--check")
    assert rc == 0 and not out["changed"] and out["msg"] == "nothing running"
    role = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "roles.fake"])
    try:
        (state / "pids").mkdir(parents=True)
        (state / "pids" / "logger-0.pid").write_text(f"{role.pid}\n")
        rc, out = run(capsys, "stop", "--state-dir", str(state), "--check")
        assert out["changed"] and out["msg"] == "would stop logger-0" and out["data"]["running"] == ["logger-0"]
        assert role.poll() is None and (state / "pids" / "logger-0.pid").exists()
        rc, out = run(capsys, "stop", "--state-dir", str(state), "--timeout", "5")
        assert out["changed"] and out["data"]["stopped"] == ["logger-0"] and role.wait(5) is not None
        rc, out = run(capsys, "stop", "--state-dir", str(state))
        assert not out["changed"]
    finally:
        role.kill()
        role.wait()


def test_iproute2_reads_and_pins_like_pyroute2(monkeypatch):
    """The ip -j adapter, on what iproute2 6.1 prints."""
    runs = []
    out = {("link",): '[{"ifindex":5,"ifname":"eth0","flags":["BROADCAST","UP","LOWER_UP"],'
                      '"operstate":"UP","address":"02:00:c6:12:00:c3"}]',
           ("-4",): '[{"dst":"198.18.0.4","lladdr":"02:00:00:00:00:04","state":["PERMANENT"]},'
                    '{"dst":"198.18.0.9","state":["FAILED"]}]'}

    def fake_run(argv, **kw):
        runs.append(argv)
        return subprocess.CompletedProcess(argv, 0, out.get((argv[2],), ""), "")
    monkeypatch.setattr(netops.subprocess, "run", fake_run)
    ipr = netops.IpRoute2()
    assert ipr.link_lookup("eth0") == [5]
    link = ipr.get_links(5)[0]
    assert link.get_attr("IFLA_ADDRESS") == "02:00:c6:12:00:c3" and link["flags"] & 1
    n = ipr.get_neighbours(ifindex=5)
    assert [(m.get_attr("NDA_DST"), m.get_attr("NDA_LLADDR"), m["state"]) for m in n] == [
        ("198.18.0.4", "02:00:00:00:00:04", netops.NUD_PERMANENT), ("198.18.0.9", None, 0)]
    ipr.neigh("replace", dst="198.18.0.9", lladdr="02:00:00:00:00:09", ifindex=5, state=netops.NUD_PERMANENT)
    assert runs[-1] == ["ip", "neigh", "replace", "198.18.0.9", "lladdr", "02:00:00:00:00:09", "dev", "eth0",
                        "nud", "permanent"]


# --- neighbours, on a fake netlink --------------------------------------------------------
class FakeMsg(dict):
    def __init__(self, attrs, **fields):
        super().__init__(fields)
        self.attrs = attrs

    def get_attr(self, name):
        return self.attrs.get(name)


class FakeIPR:
    def __init__(self, mac="02:00:00:00:00:01", up=True, neigh=None):
        self.mac, self.up = mac, up
        self.table = dict(neigh or {})  # ip -> (mac, state)
        self.writes = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def link_lookup(self, ifname):
        return [2] if ifname == "eth0" else []

    def get_links(self, idx):
        return [FakeMsg({"IFLA_ADDRESS": self.mac, "IFLA_OPERSTATE": "UP" if self.up else "DOWN"},
                        index=idx, flags=1 if self.up else 0)]

    def get_neighbours(self, ifindex, family):
        return [FakeMsg({"NDA_DST": ip, "NDA_LLADDR": mac}, state=state) for ip, (mac, state) in self.table.items()]

    def neigh(self, op, dst, lladdr, ifindex, state):
        self.writes.append((op, dst, lladdr))
        self.table[dst] = (lladdr, state)


@pytest.fixture
def ipr(monkeypatch):
    fake = FakeIPR(neigh={"198.18.0.3": ("02:00:00:00:00:03", netops.NUD_PERMANENT),
                          "198.18.0.4": ("02:00:00:00:00:99", 0x02)})
    monkeypatch.setattr(netops, "_neighbours", lambda: fake)
    return fake


PEERS = ["--peer", "198.18.0.3=02:00:00:00:00:03", "--peer", "198.18.0.4=02:00:00:00:00:04"]


@pytest.mark.parametrize("flag", ["--check", "--dry-run"])
def test_neigh_pin_check_changes_nothing(capsys, ipr, flag):
    rc, out = run(capsys, "neigh-pin", "--interface", "eth0", *PEERS, flag)
    assert out["changed"] and out["data"]["changed"] == ["198.18.0.4"] and out["data"]["ok"] == ["198.18.0.3"]
    assert out["msg"] == "would pin 198.18.0.4" and ipr.writes == []


def test_neigh_pin_pins_what_differs_then_nothing(capsys, ipr):
    rc, out = run(capsys, "neigh-pin", "--interface", "eth0", *PEERS)
    assert out["changed"] and ipr.writes == [("replace", "198.18.0.4", "02:00:00:00:00:04")]
    rc, out = run(capsys, "neigh-pin", "--interface", "eth0", *PEERS)
    assert not out["changed"] and out["msg"] == "2 peers already pinned"


def test_netfix_checks_its_own_mac_before_pinning(capsys, ipr):
    rc, out = run(capsys, "netfix", "--interface", "eth0", "--mac", "02:00:00:00:00:07",
                  "--mac-source", "the lab", *PEERS)
    assert rc == 1 and out["failed"] and out["msg"] == "eth0 has MAC 02:00:00:00:00:01, the lab says 02:00:00:00:00:07"
    assert ipr.writes == []
    rc, out = run(capsys, "netfix", "--interface", "eth0", "--mac", "02:00:00:00:00:01", *PEERS, "--check")
    assert rc == 0 and out["changed"] and ipr.writes == [] and out["data"]["mac"] == "02:00:00:00:00:01"
    rc, out = run(capsys, "netfix", "--interface", "eth0", "--mac", "02:00:00:00:00:01", *PEERS)
    assert out["changed"] and out["data"]["changed"] == ["198.18.0.4"] and len(ipr.writes) == 1


def test_netfix_on_a_down_link_fails(capsys, monkeypatch):
    monkeypatch.setattr(netops, "_neighbours", lambda: FakeIPR(up=False))
    rc, out = run(capsys, "netfix", "--interface", "eth0", *PEERS)
    assert rc == 1 and out["msg"] == "eth0 is down"


def test_headers_shim_check_links_nothing(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(netops, "_headers_dir", lambda: tmp_path / "modules" / "build")
    monkeypatch.setattr(netops.glob, "glob", lambda pat: ["/usr/src/linux-headers-6.1.0-9-amd64"]
                        if pat.endswith("amd64") else [])
    monkeypatch.setattr(netops.platform, "machine", lambda: "x86_64")
    rc, out = run(capsys, "headers-shim", "--check")
    assert out["changed"] and out["msg"].startswith("would link") and not (tmp_path / "modules").exists()
    rc, out = run(capsys, "headers-shim")
    assert out["changed"] and os.readlink(tmp_path / "modules" / "build") == "/usr/src/linux-headers-6.1.0-9-amd64"
    rc, out = run(capsys, "headers-shim")
    assert not out["changed"]


# --- deploy, on a temporary origin and clone -----------------------------------------------
def git(cwd, *args):
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    origin = tmp_path / "origin"
    origin.mkdir()
    git(origin, "init", "-q", "-b", "main")
    git(origin, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "one")
    git(tmp_path, "clone", "-q", str(origin), "ck")
    ck = tmp_path / "ck"
    monkeypatch.setattr(deployctl, "CHECKOUT", str(ck))
    monkeypatch.setattr(deployctl, "CACHE", str(ck / ".tcpskim" / "runtime-check.json"))
    mod = tmp_path / "site" / "fakebcc"
    mod.mkdir(parents=True)
    (mod / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "site"))
    monkeypatch.setattr(deployctl, "MODULES", ("fakebcc",))
    monkeypatch.setattr(deployctl, "DPKG_INFO", str(tmp_path / "dpkg"))
    return origin, ck


def test_update_check_pulls_nothing(checkout):
    origin, ck = checkout
    head = git(ck, "rev-parse", "HEAD")
    assert deployctl.update(str(origin), "main", check=True) == ("up to date", head, head)
    git(origin, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "two")
    tip = git(origin, "rev-parse", "HEAD")
    assert deployctl.update(str(origin), "main", check=True) == ("would pull", head, tip)
    assert git(ck, "rev-parse", "HEAD") == head
    assert deployctl.update(str(origin), "main", check=False) == ("pulled", head, tip)
    assert deployctl.update(str(origin), "main", check=False) == ("up to date", tip, tip)


def test_update_refuses_another_remote(checkout, tmp_path):
    with pytest.raises(RuntimeError, match="pulls from .*inventory says"):
        deployctl.update(str(tmp_path / "elsewhere"), "main", check=False)


def test_runtime_import_is_checked_once_per_package_version(checkout, tmp_path, monkeypatch):
    dpkg = tmp_path / "dpkg"
    dpkg.mkdir()
    (dpkg / "python3-bpfcc.list").write_text("/usr/lib/python3/dist-packages/bcc\n")
    assert deployctl.check_runtime(check=True) == "checked"
    assert not os.path.exists(deployctl.CACHE)  # --check writes no cache
    assert deployctl.check_runtime(check=False) == "checked"
    calls = []
    monkeypatch.setattr(deployctl.subprocess, "run", lambda *a, **k: calls.append(a))
    assert deployctl.check_runtime(check=False) == "cached" and calls == []  # no import, no child


def test_an_upgraded_package_is_imported_again(checkout, tmp_path):
    dpkg = tmp_path / "dpkg"
    dpkg.mkdir()
    (dpkg / "python3-bpfcc.list").write_text("a\n")
    assert deployctl.check_runtime(check=False) == "checked"
    assert deployctl.check_runtime(check=False) == "cached"
    (dpkg / "python3-bpfcc.list").write_text("a\nb\n")
    assert deployctl.check_runtime(check=False) == "checked"
    (tmp_path / "site" / "fakebcc" / "__init__.py").write_text("raise ImportError('libbcc.so: not found')\n")
    with pytest.raises(RuntimeError, match=r"cannot import bcc/pyroute2 \(ImportError: libbcc.so: not found\); "
                                           r"run invoke deploy --install-deps"):
        deployctl.check_runtime(check=False)


def test_a_missing_module_is_named_without_importing(checkout, monkeypatch):
    monkeypatch.setattr(deployctl, "MODULES", ("fakebcc", "no_such_module_here"))
    with pytest.raises(RuntimeError, match="no_such_module_here"):
        deployctl.check_runtime(check=False)


def test_deploy_answers_changed_only_when_the_checkout_moved(checkout, capsys, monkeypatch):
    origin, ck = checkout
    monkeypatch.setattr(netops, "_headers_dir", lambda: ck)  # headers "present"
    rc, out = run(capsys, "deploy", "--remote", str(origin), "--branch", "main")
    assert rc == 0 and out["changed"] is False and out["data"]["action"] == "up to date", out
    assert out["data"]["runtime"] == "checked"
    rc, out = run(capsys, "deploy", "--remote", str(origin), "--branch", "main")
    assert out["changed"] is False and out["data"]["runtime"] == "cached"
    rc, out = run(capsys, "deploy", "--remote", str(origin), "--branch", "main", "--after", "none")
    assert out["changed"] is True and out["data"]["action"] == "cloned"


def test_every_command_is_dispatched_to_the_module_that_registers_it():
    import argparse
    import importlib

    for name, cmds in hostctl.COMMANDS.items():
        sub = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(f"roles.{name}").register(sub)
        assert set(sub.choices) == set(cmds), name


def test_deploy_imports_neither_procs_nor_pyroute2():
    code = ("import sys; from roles import hostctl; sys.argv[1:] = ['deploy', '--help']\n"
            "try:\n    hostctl.main()\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m in ('roles.procs', 'roles.runtime', 'pyroute2', 'bcc')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert r.stdout.strip().splitlines()[-1] == "[]", r.stdout + r.stderr
