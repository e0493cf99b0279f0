"""tcpskim.lab: unit tests (anywhere) and end-to-end lab tests (Linux, root).

The lab tests build their own small labs from inventories written to pytest's tmp dir
(prefixes ``tsl``/``tsh``, subnets 198.18.0.64/26 and 198.18.0.128/26, state dirs under
tmp), so they never touch a user's lab (``tsk``, 198.18.0.0/24). Every lab built here is
torn down by a fixture, even when a test fails.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tcpskim import CHECKOUT, inventory, lab

from helpers import lab_leftovers

ROOT_LINUX = sys.platform.startswith("linux") and os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT_LINUX, reason="the local lab needs Linux and root")


# --------------------------------------------------------------------------- helpers


def write_inventory(d: Path, prefix: str, base: int, remote: str = "", dedicate: bool = True) -> inventory.Inventory:
    """A 3-host lab inventory in 198.18.0.<base>/26: control .base+1, hosts .base+2.. ."""
    ip = lambda n: f"198.18.0.{base + n}"  # noqa: E731
    text = f"""
[testbed]
name = "{prefix}test"
lab = true

[lab]
prefix = "{prefix}"
subnet = "198.18.0.{base}/26"
control_ip = "{ip(1)}"
state_dir = "{d}/state"
dedicate_cpu = {str(dedicate).lower()}

[ssh]
user = "root"
connect_timeout = 5

[code]
remote = "{remote}"

[hosts.sensor]
role = "sensor"
ip = "{ip(2)}"
interface = "eth0"

[hosts.hardworker]
role = "hardworker"
ip = "{ip(3)}"
interface = "eth0"
ssh_port = 2222

[hosts.logger]
role = "logger"
ip = "{ip(4)}"
interface = "eth1"
mac = "02:00:c6:12:00:{base + 4:02x}"
"""
    d.mkdir(parents=True, exist_ok=True)
    p = d / "inventory.toml"
    p.write_text(text)
    return inventory.load(p)


def code_source(tmp: Path) -> tuple[str, str]:
    """(code.remote for the inventory, expected HEAD of the host checkouts).

    The control checkout itself when it has a commit; otherwise a throwaway repository
    (a fresh project has no commit yet, and an empty clone has no HEAD to compare)."""
    r = subprocess.run(["git", "-C", str(CHECKOUT), "rev-parse", "-q", "--verify", "HEAD"],
                       capture_output=True, text=True)
    if r.returncode == 0:
        return "", r.stdout.strip()
    repo = tmp / "src"
    repo.mkdir(parents=True)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git[:3] + ["init", "-q", "-b", "main"], check=True)
    (repo / "README").write_text("x\n")
    subprocess.run(git + ["add", "README"], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "x"], check=True)
    return str(repo), subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()


def icmp_ping(ip: str, timeout: float = 1.0) -> bool:
    """One ICMP echo from the root namespace (like `ping -c1 -W1`, without needing iputils)."""
    ident, seq = os.getpid() & 0xFFFF, 1
    payload = b"tcpskim-lab-test"
    hdr = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    s = sum(struct.unpack("!%dH" % ((len(hdr + payload)) // 2), hdr + payload))
    s = (s >> 16) + (s & 0xFFFF)
    csum = ~(s + (s >> 16)) & 0xFFFF
    pkt = struct.pack("!BBHHH", 8, 0, csum, ident, seq) + payload
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        sock.settimeout(timeout)
        sock.sendto(pkt, (ip, 0))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data, addr = sock.recvfrom(2048)
            except socket.timeout:
                return False
            ihl = (data[0] & 0xF) * 4
            typ, _, _, rid, rseq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
            if addr[0] == ip and typ == 0 and rid == ident and rseq == seq:
                return True
    return False


def quiet(*_a, **_k):
    pass


# --------------------------------------------------------------------------- unit tests (no root)


@pytest.fixture
def inv(tmp_path):
    return write_inventory(tmp_path, "tsu", 192)


def test_cpu_plan_dedicates_last_cpu(inv, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    assert lab.cpu_plan(inv) == {"sensor": [0, 1, 2], "hardworker": [3], "logger": [0, 1, 2]}
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert lab.cpu_plan(inv) == {"sensor": [], "hardworker": [], "logger": []}


def test_cpu_plan_off_and_host_cpus_win(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    off = write_inventory(tmp_path / "a", "tsu", 192, dedicate=False)
    assert lab.cpu_plan(off) == {"sensor": [], "hardworker": [], "logger": []}
    p = tmp_path / "a" / "inventory.toml"
    p.write_text(p.read_text().replace('role = "logger"', 'role = "logger"\ncpus = [1]'))
    assert lab.cpu_plan(inventory.load(p))["logger"] == [1]


def test_masks_names_and_macs(inv):
    assert lab.cpu_mask([1]) == "2"
    assert lab.cpu_mask([0, 1, 2]) == "7"
    assert lab.cpu_mask([40]) == "100,00000000"
    assert lab.parse_mask("00000100,00000000") == 1 << 40
    assert lab.derived_mac("198.18.0.11") == "02:00:c6:12:00:0b"
    assert lab.namespace(inv, "hardworker") == "tsu-hardworker"
    assert lab.veth_name(inv, "hardworker") == "tsu-hardworker"
    long = lab.veth_name(inv, "abcdefghijklmno")
    assert len(long) <= 15 and long != lab.veth_name(inv, "abcdefghijklmnp")
    assert lab.host_mac(inv.host("hardworker")) == "02:00:c6:12:00:c3"
    assert lab.host_mac(inv.host("logger")) == "02:00:c6:12:00:c4"


def test_refuses_non_root(inv, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(lab.LabError, match="root"):
        lab.up(inv, log=quiet)
    with pytest.raises(lab.LabError, match="root"):
        lab.down(inv, log=quiet)


def test_refuses_non_lab_inventory(tmp_path):
    p = tmp_path / "hw.toml"
    p.write_text('[code]\nremote = "/srv/tcpskim.git"\n'
                 '[hosts.s]\nrole = "sensor"\nip = "10.0.0.1"\ninterface = "eth0"\n'
                 '[hosts.h]\nrole = "hardworker"\nip = "10.0.0.2"\ninterface = "eth0"\n'
                 '[hosts.l]\nrole = "logger"\nip = "10.0.0.3"\ninterface = "eth0"\n')
    with pytest.raises(lab.LabError, match="not a lab inventory"):
        lab.up(inventory.load(p), log=quiet)


# --------------------------------------------------------------------------- the lab (root)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    if not ROOT_LINUX:
        pytest.skip("the local lab needs Linux and root")
    tmp = tmp_path_factory.mktemp("lab")
    remote, head = code_source(tmp)
    linv = write_inventory(tmp, "tsl", 64, remote=remote)
    lab.down(linv, log=quiet)  # a leftover from an interrupted earlier run
    try:
        t0 = time.monotonic()
        report = lab.up(linv, log=quiet)
        yield {"inv": linv, "report": report, "head": head, "up_s": time.monotonic() - t0}
    finally:
        lab.down(linv, log=quiet)


@needs_root
def test_up_builds_everything(built):
    linv, report = built["inv"], built["report"]
    assert report["warnings"] == []
    assert report["created"], "a first up must create things"
    assert built["up_s"] < 20
    st = Path(linv.lab.state_dir)
    assert st.stat().st_mode & 0o777 == 0o700
    assert (st / "id_ed25519").exists() and (st / "lab.json").exists()
    for h in linv.hosts:
        assert Path("/run/netns", lab.namespace(linv, h)).exists()


@needs_root
def test_hosts_answer_ping_and_reach_each_other(built):
    linv = built["inv"]
    for h in linv.hosts:
        assert icmp_ping(h.ip), f"{h.name} ({h.ip}) does not answer ping from the root namespace"
    hw = linv.hardworker
    r = lab.ns_exec(linv, "sensor", [sys.executable, "-c",
                                     f"import socket; socket.create_connection(({hw.ip!r}, {hw.ssh_port}), 2)"])
    assert r.returncode == 0, r.stderr


@needs_root
def test_ssh_login_with_lab_key_and_known_hosts(built):
    paramiko = pytest.importorskip("paramiko")
    linv = built["inv"]
    for h in linv.hosts:
        c = paramiko.SSHClient()
        c.load_host_keys(linv.known_hosts)
        c.set_missing_host_key_policy(paramiko.RejectPolicy())  # proves known_hosts is right
        try:
            c.connect(h.ssh_host, port=h.ssh_port, username="root", key_filename=h.ssh_key,
                      look_for_keys=False, allow_agent=False, timeout=5, banner_timeout=5, auth_timeout=5)
            cmd = f"ip -4 -o addr show dev {h.interface}; cat /sys/class/net/{h.interface}/address"
            _, out, _ = c.exec_command(cmd, timeout=10)
            text = out.read().decode()
        finally:
            c.close()
        assert f"{h.ip}/26" in text, f"{h.name}: the session is not in its namespace: {text!r}"
        assert lab.host_mac(h) in text


@needs_root
def test_tx_offload_off_on_both_ends(built):
    linv = built["inv"]
    for h in linv.hosts:
        outer = subprocess.run(["ethtool", "-k", lab.veth_name(linv, h)], capture_output=True, text=True).stdout
        inner = lab.ns_exec(linv, h.name, ["ethtool", "-k", h.interface]).stdout
        assert "tx-checksumming: off" in outer, f"{h.name}: root-side veth"
        assert "tx-checksumming: off" in inner, f"{h.name}: {h.interface} in the namespace"


@needs_root
def test_rps_steers_hardworker_to_last_cpu(built):
    linv = built["inv"]
    n = os.cpu_count() or 1
    if n < 2:
        pytest.skip("RPS dedication needs 2 CPUs or more")
    path = "/sys/class/net/{}/queues/rx-0/rps_cpus"
    hw = linv.hardworker
    mask = lab.parse_mask(lab.ns_exec(linv, hw.name, ["cat", path.format(hw.interface)]).stdout)
    assert mask == 1 << (n - 1)
    for h in linv.sensors + [linv.logger]:
        m = lab.parse_mask(lab.ns_exec(linv, h.name, ["cat", path.format(h.interface)]).stdout)
        assert m == (1 << (n - 1)) - 1, h.name
    assert lab.cpu_plan(linv)["hardworker"] == [n - 1]


@needs_root
def test_checkouts_at_control_head(built):
    linv = built["inv"]
    for h in linv.hosts:
        r = subprocess.run(["git", "-C", h.checkout, "rev-parse", "HEAD"], capture_output=True, text=True)
        assert r.stdout.strip() == built["head"], h.name


@needs_root
def test_status_and_ns_exec(built):
    linv = built["inv"]
    rows = {r["host"]: r for r in lab.status(linv)}
    for h in linv.hosts:
        r = rows[h.name]
        assert r["netns"] and r["link"] == "up" and r["port_open"] and r["sshd_pid"]
        assert r["address"] == f"{h.ip}/26" and r["mac"] == lab.host_mac(h)
        assert built["head"].startswith(r["checkout"])
    out = lab.ns_exec(linv, "logger", ["ip", "-o", "link", "show"]).stdout
    assert "eth1" in out and "eth0" not in out


@needs_root
def test_second_up_is_idempotent(built):
    linv = built["inv"]
    pids = {h.name: built["report"]["state"]["hosts"][h.name]["sshd_pid"] for h in linv.hosts}
    kh = Path(linv.known_hosts).read_text()
    again = lab.up(linv, log=quiet)
    assert again["created"] == [] and again["warnings"] == []
    assert {h: v["sshd_pid"] for h, v in again["state"]["hosts"].items()} == pids
    assert Path(linv.known_hosts).read_text() == kh


@needs_root
def test_down_removes_everything(built):
    # Last test of the module's lab: afterwards the fixture's down runs on nothing.
    linv = built["inv"]
    rep = lab.down(linv, log=quiet)
    assert rep["warnings"] == []
    assert lab_leftovers(linv) == []
    assert lab.down(linv, log=quiet) == {"removed": [], "warnings": []}


@pytest.fixture
def half(tmp_path):
    if not ROOT_LINUX:
        pytest.skip("the local lab needs Linux and root")
    remote, _ = code_source(tmp_path)
    hinv = write_inventory(tmp_path, "tsh", 128, remote=remote)
    lab.down(hinv, log=quiet)
    try:
        yield hinv
    finally:
        lab.down(hinv, log=quiet)


@needs_root
def test_down_after_half_finished_up(half):
    rep = lab._Report(quiet)
    lab._state_dir(half, rep)
    lab._lab_key(half, rep)
    lab._bridge(half, rep)
    for name in ("sensor", "hardworker"):
        lab._host_net(half, half.host(name), rep)
        lab._host_sshd(half, half.host(name), rep)
    # A stray process in a namespace, and an sshd whose namespace name is already gone.
    stray = subprocess.Popen(["ip", "netns", "exec", lab.namespace(half, "sensor"), "sleep", "300"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(["ip", "netns", "del", lab.namespace(half, "hardworker")], check=True)
    try:
        time.sleep(0.1)
        out = lab.down(half, log=quiet)
        assert stray.wait(timeout=5) < 0  # killed by a signal, not ended by itself
        assert lab_leftovers(half) == [], out
    finally:
        if stray.poll() is None:
            stray.kill()


@needs_root
def test_up_completes_half_finished_lab(half):
    rep = lab._Report(quiet)
    lab._state_dir(half, rep)
    lab._bridge(half, rep)
    lab._host_net(half, half.host("logger"), rep)
    done = lab.up(half, log=quiet)
    assert done["warnings"] == []
    assert any("namespace tsh-logger" == f for f in done["found"])
    assert all(r["port_open"] for r in lab.status(half))
    lab.down(half, log=quiet)
    assert lab_leftovers(half) == []
