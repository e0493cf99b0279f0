"""Lab tests of the network guard (``roles.guard``): real netlink, real ARP, real processes.

Three hosts in network namespaces made here (prefix ``gd-``) on one bridge, removed afterwards
even when a test fails; every guard a test started is stopped (KILLed if need be):

    gd-a eth0 198.18.0.241 ─┐
    gd-b eth0 198.18.0.242 ─┼─ br0 in gd-br
    gd-c eth0 198.18.0.243 ─┘

Each test gets fresh guards (one per host, peers = the two others) started the way the control
side starts them, ``python3 -m roles.guard start --config F`` inside the host's namespace with
its output captured: that the call returns at all shows the daemon holds none of the caller's
pipes (an SSH session would otherwise never end).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import ROOT, ROOT_LINUX

pytestmark = [pytest.mark.lab,
              pytest.mark.skipif(not ROOT_LINUX, reason="needs Linux and root (namespaces, netlink)")]

HOSTS = ("a", "b", "c")
NS = {h: f"gd-{h}" for h in HOSTS}
BR_NS = "gd-br"
IP = {"a": "198.18.0.241", "b": "198.18.0.242", "c": "198.18.0.243"}
MAC = {"a": "02:00:c6:12:00:f1", "b": "02:00:c6:12:00:f2", "c": "02:00:c6:12:00:f3"}
NEW_MAC = "02:00:c6:12:00:e2"


def sh(*args, check=True, **kw):
    return subprocess.run(args, check=check, capture_output=True, text=True, **kw)


def _del_net():
    for ns in (*NS.values(), BR_NS):
        sh("ip", "netns", "del", ns, check=False)


@pytest.fixture(scope="module")
def net():
    _del_net()  # leftovers of a killed earlier run (the names are ours)
    try:
        sh("ip", "netns", "add", BR_NS)
        sh("ip", "-n", BR_NS, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", BR_NS, "link", "set", "br0", "up")
        for h, ns in NS.items():
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", BR_NS, "link", "add", f"p{h}", "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh("ip", "-n", BR_NS, "link", "set", f"p{h}", "master", "br0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "addr", "add", f"{IP[h]}/24", "dev", "eth0")
        yield
    finally:
        _del_net()


class Lab:
    """The three hosts' guards and neighbour tables, driven as the control side would."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.state = {h: str(tmp / h / "state") for h in HOSTS}

    def config(self, h, **over) -> Path:
        cfg = {"interface": "eth0", "state_dir": self.state[h],
               "peers": {IP[o]: MAC[o] for o in HOSTS if o != h}, **over}
        path = self.tmp / f"{h}.json"
        path.write_text(json.dumps(cfg))
        return path

    def guard(self, h, *args, timeout=None):
        """(exit status, the one JSON answer) of ``python3 -m roles.guard ARGS`` on host h."""
        if timeout is None:  # start waits up to the guard's ready timeout itself
            timeout = 15 + float(os.environ.get("TCPSKIM_GUARD_READY_S", "15"))
        p = sh("ip", "netns", "exec", NS[h], sys.executable, "-m", "roles.guard", *args,
               check=False, cwd=ROOT, timeout=timeout)
        lines = p.stdout.strip().splitlines()
        assert len(lines) == 1, (p.stdout, p.stderr)
        return p.returncode, json.loads(lines[0])

    def start(self, h, **over):
        rc, out = self.guard(h, "start", "--config", str(self.config(h, **over)))
        assert rc == 0, out
        return out

    def stop(self, h):
        return self.guard(h, "stop", "--state-dir", self.state[h])

    def pid(self, h) -> int:
        return int(Path(self.state[h], "guard", "guard.pid").read_text())

    def neigh(self, h) -> dict:
        rows = json.loads(sh("ip", "-n", NS[h], "-j", "neigh", "show", "dev", "eth0").stdout or "[]")
        return {r["dst"]: (r.get("lladdr"), r.get("state", [])) for r in rows}

    def pinned(self, h, peer, mac=None) -> bool:
        got = self.neigh(h).get(IP[peer])
        return got is not None and got[0] == (mac or MAC[peer]) and "PERMANENT" in got[1]

    def events(self, h) -> list[dict]:
        path = Path(self.state[h], "guard", "events.jsonl")
        return [json.loads(line) for line in path.read_text().splitlines()]

    def ip(self, h, *args):
        return sh("ip", "-n", NS[h], *args)


def wait_for(cond, timeout: float) -> float:
    """Seconds until cond() held; fails the test at the timeout."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"not within {timeout} s")
        time.sleep(0.005)
    return time.monotonic() - t0


def guard_processes(state_dirs) -> list[str]:
    left = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            with contextlib.suppress(OSError):
                argv = (p / "cmdline").read_bytes().decode(errors="replace").split("\0")
                if "roles.guard" in argv and any(d in argv for d in state_dirs):
                    left.append(f"{p.name}: {' '.join(argv)}")
    return left


@pytest.fixture
def lab(net, tmp_path):
    lab = Lab(tmp_path)
    for h in HOSTS:  # every test starts from the same network
        lab.ip(h, "link", "set", "eth0", "address", MAC[h], "up")
        lab.ip(h, "neigh", "flush", "dev", "eth0", "nud", "all")
    try:
        for h in HOSTS:
            lab.start(h)
        yield lab
    finally:
        for h in HOSTS:
            with contextlib.suppress(Exception):
                lab.stop(h)
        for line in guard_processes(lab.state.values()):  # never leave one behind
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(line.split(":")[0]), signal.SIGKILL)


def test_start_pins_every_peer_and_detaches(lab):
    for h in HOSTS:
        assert all(lab.pinned(h, o) for o in HOSTS if o != h), lab.neigh(h)
        pid = lab.pid(h)
        assert os.getsid(pid) == pid  # its own session: the starter's hang-up does not reach it
        assert os.readlink(f"/proc/{pid}/fd/0") == "/dev/null"
        assert os.readlink(f"/proc/{pid}/fd/1").endswith("/guard/guard.log")
    rc, again = lab.guard("a", "start", "--config", str(lab.config("a")))
    assert rc == 0 and again["changed"] is False and again["action"] == "unchanged"


def test_deleted_pin_restored_within_1s(lab):
    lab.ip("a", "neigh", "del", IP["b"], "dev", "eth0")
    assert wait_for(lambda: lab.pinned("a", "b"), 1.0) < 1.0
    pins = [e for e in lab.events("a") if e["kind"] == "pin" and e["ip"] == IP["b"] and e["reason"] != "start: missing"]
    assert pins and pins[-1]["mac"] == MAC["b"]
    time.sleep(0.3)  # its own repair comes back as an event: it must not start a loop
    assert len([e for e in lab.events("a") if e["kind"] == "pin" and e["ip"] == IP["b"]]) == len(pins) + 1


def test_wrong_mac_and_lost_states_repinned_within_1s(lab):
    lab.ip("a", "neigh", "replace", IP["c"], "lladdr", "02:00:00:00:00:99", "dev", "eth0", "nud", "permanent")
    assert wait_for(lambda: lab.pinned("a", "c"), 1.0) < 1.0
    for state in ("incomplete", "failed", "stale"):
        extra = ["lladdr", MAC["c"]] if state == "stale" else []
        lab.ip("a", "neigh", "replace", IP["c"], *extra, "dev", "eth0", "nud", state)
        assert wait_for(lambda: lab.pinned("a", "c"), 1.0) < 1.0
    verdicts = [e["verdict"] for e in lab.events("a") if e["kind"] == "neigh" and e["ip"] == IP["c"]]
    assert "lladdr 02:00:00:00:00:99 is not " + MAC["c"] in verdicts
    assert {"state INCOMPLETE", "state FAILED", "state STALE"} <= set(verdicts)


def test_peer_mac_change_followed_within_2s(lab):
    lab.ip("b", "link", "set", "dev", "eth0", "address", NEW_MAC)
    took = wait_for(lambda: lab.pinned("a", "b", NEW_MAC) and lab.pinned("c", "b", NEW_MAC), 2.0)
    assert took < 2.0
    # changing an address flushes that interface's whole neighbour table, pins included: b re-pins
    wait_for(lambda: lab.pinned("b", "a") and lab.pinned("b", "c"), 1.0)
    learn = [e for e in lab.events("a") if e["kind"] == "learn"]
    assert learn and learn[-1] == {**learn[-1], "ip": IP["b"], "old": MAC["b"], "mac": NEW_MAC}
    assert [e for e in lab.events("b") if e["kind"] == "announce" and e["mac"] == NEW_MAC]
    # the learnt MAC is what a restarted guard pins (it is newer than the config's)
    lab.stop("a")
    lab.ip("a", "neigh", "flush", "dev", "eth0", "nud", "all")
    lab.start("a")
    assert lab.pinned("a", "b", NEW_MAC)
    # damage to the pin is still repaired back to the learnt MAC, not to the config's
    lab.ip("a", "neigh", "replace", IP["b"], "lladdr", MAC["b"], "dev", "eth0", "nud", "permanent")
    wait_for(lambda: lab.pinned("a", "b", NEW_MAC), 1.0)


def test_control_side_push_and_reload(lab):
    rc, out = lab.guard("a", "set-peer", "--state-dir", lab.state["a"], "--peer", f"{IP['c']}=02:00:c6:12:00:c3")
    assert rc == 0 and out["changed"] and out["action"] == "reload" and out["pid"] == lab.pid("a")
    assert lab.pinned("a", "c", "02:00:c6:12:00:c3")
    out = lab.start("a")  # the control side's config again: its changed MAC is the newest word
    assert out["action"] == "reload" and lab.pinned("a", "c")


def test_status_shows_events_with_times(lab):
    t0 = time.time()
    lab.ip("a", "neigh", "del", IP["c"], "dev", "eth0")
    wait_for(lambda: lab.pinned("a", "c"), 1.0)
    time.sleep(0.1)
    rc, st = lab.guard("a", "status", "--state-dir", lab.state["a"], "--events", "50")
    assert rc == 0 and st["running"] and st["pid"] == lab.pid("a")
    assert st["own_mac"] == MAC["a"] and st["interface"] == "eth0"
    recent = [e for e in st["events"] if e["time"] >= t0]
    assert any(e["kind"] == "pin" and e["ip"] == IP["c"] for e in recent)
    assert any(e["kind"] == "neigh" and e["verdict"] in ("deleted", "state FAILED") for e in recent)
    assert all(isinstance(e["time"], float) and t0 <= e["time"] <= time.time() for e in recent)
    assert st["live"] == {IP[o]: {"mac": MAC[o], "state": "PERMANENT", "ok": True} for o in ("b", "c")}


def test_stop_leaves_no_process(lab):
    pids = {h: lab.pid(h) for h in HOSTS}
    for h in HOSTS:
        rc, out = lab.stop(h)
        assert rc == 0 and out["stopped"] == [pids[h]] and not out["killed"]
        assert not Path(lab.state[h], "guard", "guard.pid").exists()
    assert guard_processes(lab.state.values()) == []
    rc, out = lab.stop("a")  # idempotent
    assert rc == 0 and out["changed"] is False
    rc, st = lab.guard("a", "status", "--state-dir", lab.state["a"])
    assert rc == 0 and st["running"] is False
    assert lab.events("a")[-1]["kind"] == "stop"


@pytest.mark.parametrize("peers, line", [
    ({IP["b"]: "00:00:00:00:00:00"}, f"guard config: peers.{IP['b']}: '00:00:00:00:00:00' is the all-zero MAC address"),
    ({IP["b"]: "01:00:5e:00:00:fb"}, f"guard config: peers.{IP['b']}: '01:00:5e:00:00:fb' is a multicast MAC address"),
    ({"198.18.0.300": MAC["b"]}, "guard config: peers.198.18.0.300: '198.18.0.300' is not an IPv4 address"),
])
def test_bad_config_refused_with_one_line(lab, peers, line):
    before = Path(lab.state["a"], "guard", "config.json").read_text()
    rc, out = lab.guard("a", "start", "--config", str(lab.config("a", peers=peers)))
    assert rc == 1 and out == {"error": line}
    assert Path(lab.state["a"], "guard", "config.json").read_text() == before  # nothing half-done
    assert lab.pinned("a", "b")


def test_bad_push_and_bad_arp_refused(lab):
    rc, out = lab.guard("a", "set-peer", "--state-dir", lab.state["a"], "--peer", f"{IP['b']}=02:00:c6:12:00:b2",
                        "--peer", "198.18.0.99=02:00:c6:12:00:99")
    assert rc == 1 and out == {"error": f"set-peer: 198.18.0.99 is not a peer in the guard's config "
                                        f"(peers: {IP['b']}, {IP['c']})"}
    assert lab.pinned("a", "b")  # the valid half of the push was not applied either
    rc, out = lab.guard("a", "set-peer", "--state-dir", lab.state["a"], "--peer", f"{IP['b']}=00:00:00:00:00:00")
    assert rc == 1 and out == {"error": f"set-peer: {IP['b']}: '00:00:00:00:00:00' is the all-zero MAC address"}
    # an ARP announcement from c's address claiming a multicast MAC: refused, the pin stays
    sh("ip", "netns", "exec", NS["c"], sys.executable, "-c",
       "import socket; from roles import arpwire; s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0); "
       f"s.sendto(arpwire.frame(1, '01:00:5e:00:00:07', '{IP['c']}'), ('eth0', 0x0806, 0, 0, b'\\xff' * 6))",
       cwd=ROOT)
    wait_for(lambda: any(e["kind"] == "refused" for e in lab.events("a")), 1.0)
    refused = [e for e in lab.events("a") if e["kind"] == "refused"][-1]
    assert refused["msg"] == f"ARP announcement from peer {IP['c']}: '01:00:5e:00:00:07' is a multicast MAC address"
    assert lab.pinned("a", "c")


def test_enobufs_reopens_and_rereads(lab, tmp_path):
    batch = tmp_path / "flood.batch"
    ips = [f"10.9.{i // 250}.{i % 250 + 1}" for i in range(2000)]
    batch.write_text("".join(f"neigh add {ip} lladdr 02:00:00:00:{i // 256:02x}:{i % 256:02x} dev eth0 nud permanent\n"
                             for i, ip in enumerate(ips)) + "".join(f"neigh del {ip} dev eth0\n" for ip in ips))
    pid = lab.pid("a")
    os.kill(pid, signal.SIGSTOP)  # its queue fills while it cannot read
    try:
        lab.ip("a", "neigh", "del", IP["b"], "dev", "eth0")
        lab.ip("a", "-batch", str(batch))
        assert not lab.pinned("a", "b")
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for(lambda: lab.pinned("a", "b"), 2.0)
    kinds = [e["kind"] for e in lab.events("a")]
    assert "overflow" in kinds
    resync = [e for e in lab.events("a") if e["kind"] == "resync" and e["reason"] == "after ENOBUFS"]
    assert resync and resync[-1]["repaired"] >= 1


def test_a_fight_is_held_off_not_spun(lab):
    """Another program setting a wrong MAC every 10 ms for 0.6 s: the guard says so and holds off
    instead of repairing hundreds of times, then pins it right once the other one stopped."""
    fighter = ("import time; from pyroute2 import IPRoute; ipr = IPRoute(); idx = ipr.link_lookup(ifname='eth0')[0]\n"
               "for _ in range(60):\n"
               f"    ipr.neigh('replace', dst='{IP['b']}', lladdr='02:00:00:00:00:66', ifindex=idx, state=0x80)\n"
               "    time.sleep(0.01)\n")
    sh("ip", "netns", "exec", NS["a"], sys.executable, "-c", fighter, timeout=30)
    wait_for(lambda: lab.pinned("a", "b"), 2.0)
    events = lab.events("a")
    assert any(e["kind"] == "fight" and e["ip"] == IP["b"] for e in events)
    assert len([e for e in events if e["kind"] == "pin" and e["ip"] == IP["b"]]) < 40


def test_quiet_guard_uses_no_cpu(lab):
    """60 s with nothing changing: the guard sleeps in select, under 1 ms of CPU (kernel runtime, ns)."""
    def cpu_ns(pid):
        return sum(int(Path(t, "schedstat").read_text().split()[0]) for t in Path(f"/proc/{pid}/task").iterdir())

    pid = lab.pid("a")
    time.sleep(1.0)  # the start-up echoes are handled
    before = cpu_ns(pid)
    time.sleep(60.0)
    used = cpu_ns(pid) - before
    print(f"guard CPU over 60 s quiet: {used} ns")
    assert used < 1_000_000


XDP_HOLDER = """
import sys
from roles.skim import HardworkerSkim, SensorSkim
kind, ip, mac, other_ip, other_mac = sys.argv[1:6]
if kind == "hardworker":
    skim = HardworkerSkim(interface="eth0", hw_ip=ip, hw_mac=mac, logger_ip=other_ip, logger_mac=other_mac,
                          tos=0x68, port=12345, wakeup="batch")
else:
    skim = SensorSkim(interface="eth0", sensor_ip=ip, hw_ip=other_ip, hw_mac=other_mac, logger_ip="198.18.0.243",
                      tos=0x68, port=12345)
try:
    skim.attach()
    print("attached", flush=True)
    sys.stdin.read()  # until the test closes it
finally:
    skim.close()
"""


def _have_bcc():
    try:
        import bcc  # noqa: F401
        return True
    except Exception:
        return False


def xdp_addrs(lab, h):
    from roles import bpfmap

    link = json.loads(lab.ip(h, "-j", "-d", "link", "show", "eth0").stdout)[0]
    prog = link.get("xdp", {}).get("prog", {}).get("id")
    return bpfmap.prog_addrs(prog)


@pytest.mark.skipif(not _have_bcc(), reason="bcc is not importable by this python")
def test_mac_changes_reach_the_running_xdp_programs(lab):
    """a runs the hardworker program (logger = c), b the sensor program (hardworker = a). The
    programs' address maps follow a's and c's MAC changes within 2 s; nothing is restarted."""
    holders = []
    try:
        for h, kind, other in (("a", "hardworker", "c"), ("b", "sensor", "a")):
            p = subprocess.Popen(["ip", "netns", "exec", NS[h], sys.executable, "-c", XDP_HOLDER, kind, IP[h], MAC[h],
                                  IP[other], MAC[other]], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True)
            holders.append(p)
            assert p.stdout.readline().strip() == "attached"
        assert xdp_addrs(lab, "a") == [(IP["a"], MAC["a"]), (IP["c"], MAC["c"])]
        assert xdp_addrs(lab, "b") == [(IP["a"], MAC["a"])]
        new_a, new_c = "02:00:c6:12:00:a1", "02:00:c6:12:00:c1"
        lab.ip("a", "link", "set", "dev", "eth0", "address", new_a)
        wait_for(lambda: xdp_addrs(lab, "a")[0] == (IP["a"], new_a) and xdp_addrs(lab, "b") == [(IP["a"], new_a)], 2.0)
        lab.ip("c", "link", "set", "dev", "eth0", "address", new_c)
        wait_for(lambda: xdp_addrs(lab, "a") == [(IP["a"], new_a), (IP["c"], new_c)], 2.0)
        xdp_events = [e for e in lab.events("a") if e["kind"] == "xdp"]
        assert {(e["slot"], e["mac"]) for e in xdp_events} == {(0, new_a), (1, new_c)}
        assert all(p.poll() is None for p in holders)  # the roles' programs were never restarted
    finally:
        for p in holders:
            with contextlib.suppress(Exception):
                p.stdin.close()
                p.wait(timeout=20)
