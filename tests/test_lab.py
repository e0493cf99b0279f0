"""tcpskim.lab: unit tests (anywhere: names, CPU plan, the setup diff on synthetic facts) and
end-to-end lab tests (marked ``lab``; Linux, root).

The lab tests build their own small labs with ``helpers.lab_built`` from inventories written to
pytest's tmp dir (prefixes ``tsl``/``tsh``, subnets 198.18.0.64/26 and 198.18.0.128/26, state
dirs under tmp), so they never touch a user's lab (``tsk``, 198.18.0.0/24). Every lab built
here is torn down, even when a test fails.
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

from roles import irqs
from tcpskim import CHECKOUT, inventory, lab
from tcpskim.lab import actions as lab_apply
from tcpskim.lab import net, sshd, state
from tcpskim.lab.steps import Facts, HostFacts, authorized_keys_text, diff

from helpers import ROOT_LINUX, lab_built, lab_leftovers, write_lab_inventory


def needs_root(test):
    """A test that builds a lab: marked ``lab`` and skipped without Linux and root."""
    return pytest.mark.lab(pytest.mark.skipif(not ROOT_LINUX, reason="the local lab needs Linux and root")(test))


# --------------------------------------------------------------------------- helpers


def write_inventory(d: Path, prefix: str, base: int, remote: str = "", dedicate: bool = True) -> inventory.Inventory:
    """A 3-host lab inventory in 198.18.0.<base>/26 with a non-default SSH port (hardworker)
    and interface name and MAC (logger)."""
    return write_lab_inventory(d, prefix=prefix, base=base, name=f"{prefix}test", dedicate=dedicate, remote=remote,
                               connect_timeout=5, hw_ssh_port=2222, logger_interface="eth1",
                               logger_mac=f"02:00:c6:12:00:{base + 4:02x}")


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


# --------------------------------------------------------------------------- the setup diff (no root)


def complete_facts(inv, ncpu=4) -> Facts:
    """Synthetic facts of a lab that is completely built."""
    plan = lab.cpu_plan(inv, ncpu)
    others = lab.other_cpus(plan, inv.hosts)
    br, plen = inv.lab.bridge, 26
    facts = Facts(ncpu=ncpu, state_dir="ours", state_mode=0o700, lab_pub="ssh-ed25519 AAAA lab",
                  bridge={"flags": ["UP"], "linkinfo": {"info_kind": "bridge"}},
                  bridge_addrs=(f"{inv.lab.control_ip}/{plen}",), known_hosts_current=True,
                  source=("/src", "main", None))
    for h in inv.hosts:
        facts.hosts[h.name] = HostFacts(
            netns=True, veth={"master": br, "flags": ["UP"]}, inner={"address": lab.host_mac(h), "flags": ["UP"]},
            inner_addrs=(f"{h.ip}/{plen}",), lo_up=True, tx_off_veth=True, tx_off_inner=True,
            rps=lab.parse_mask(lab.cpu_mask(plan[h.name])), port_rps=lab.parse_mask(lab.cpu_mask(others)),
            host_key=True, authorized_keys=authorized_keys_text("ssh-ed25519 AAAA lab", None),
            sshd_config=sshd.config_text(inv, h), sshd_pid=100, checkout="git")
    return facts


def whats(plan, host=None):
    return [s.what for s in plan.steps if host is None or s.host == host]


def argvs(plan, what):
    step = next(s for s in plan.steps if s.what == what)
    return [(list(c.argv), c.check) for c in step.cmds]


def test_diff_of_a_complete_lab_is_empty(inv):
    plan = diff(inv, complete_facts(inv))
    assert plan.steps == [] and plan.warnings == []
    assert "namespace tsu-sensor" in plan.found and "sshd of logger (pid 100)" in plan.found


def test_diff_of_nothing_builds_everything_in_order(inv):
    plan = diff(inv, Facts(ncpu=4, source=("/src", "main", None)))
    w = whats(plan)
    assert w[0] == "state dir " + inv.lab.state_dir and plan.found == [] and plan.warnings == []
    order = [w.index(x) for x in ("bridge tsu-br0", "namespace tsu-sensor", "veth tsu-hardworker <-> tsu-hardworker:eth0",
                                  "rps_cpus 8 on tsu-hardworker:eth0", "rps_cpus 7 on bridge port tsu-logger",
                                  "sshd of hardworker on 198.18.0.195:2222",
                                  f"known_hosts entries in {inv.known_hosts}",
                                  f"checkout {inv.host('logger').checkout} (main)")]
    assert order == sorted(order)
    assert argvs(plan, "veth tsu-logger <-> tsu-logger:eth1")[0] == (
        ["ip", "link", "add", "name", "tsu-logger", "type", "veth", "peer", "name", "eth1",
         "address", "02:00:c6:12:00:c4", "netns", "tsu-logger"], True)
    rps = next(s for s in plan.steps if s.what == "rps_cpus 8 on tsu-hardworker:eth0").cmds[0]
    assert rps.argv[:4] == ("ip", "netns", "exec", "tsu-hardworker") and rps.input == "8\n"
    # every sshd runs off the hardworker's CPU (3 of 4)
    assert argvs(plan, "sshd of hardworker on 198.18.0.195:2222")[0][0][:3] == ["taskset", "-c", "0,1,2"]


def test_diff_repairs_a_half_made_pair_and_a_wrong_mac(inv):
    facts = complete_facts(inv)
    facts.hosts["sensor"].inner = None  # the namespace end is gone
    facts.hosts["logger"].inner = {"address": "02:00:00:00:00:01", "flags": ["UP"]}
    plan = diff(inv, facts)
    cmds = argvs(plan, "veth tsu-sensor <-> tsu-sensor:eth0")
    assert cmds[0] == (["ip", "link", "del", "dev", "tsu-sensor"], False) and cmds[1][0][:3] == ["ip", "link", "add"]
    # a new pair needs everything after it again: bridge port, address, offload, up, RPS
    assert whats(plan, "sensor") == [
        "veth tsu-sensor <-> tsu-sensor:eth0", "tsu-sensor on bridge tsu-br0", "address 198.18.0.194/26 on tsu-sensor:eth0",
        "tx offload off on tsu-sensor", "tx offload off on tsu-sensor:eth0", "tsu-sensor:eth0 up", "tsu-sensor up",
        "rps_cpus 7 on tsu-sensor:eth0", "rps_cpus 7 on bridge port tsu-sensor"]
    assert whats(plan, "logger") == ["MAC 02:00:c6:12:00:c4 on tsu-logger:eth1", "tsu-logger:eth1 up"]
    assert whats(plan, "hardworker") == []


def test_diff_sshd_and_files(inv):
    facts = complete_facts(inv)
    facts.hosts["sensor"].sshd_config = "old"  # running with an older config: warn, do not restart
    facts.hosts["logger"].sshd_pid = None
    facts.hosts["logger"].host_key = False
    facts.known_hosts_current = False
    plan = diff(inv, facts)
    assert whats(plan) == ["sshd_config of sensor", "host key of logger", "sshd of logger on 198.18.0.196:22",
                           f"known_hosts entries in {inv.known_hosts}"]
    assert plan.warnings == ["sensor: sshd 100 runs with an older config: `lab down` + `lab up` to apply"]
    facts.lab_pub = None  # a new lab key: every authorized_keys changes
    assert [w for w in whats(diff(inv, facts)) if w.startswith("authorized_keys")] == [
        "authorized_keys of sensor", "authorized_keys of hardworker", "authorized_keys of logger"]


def test_diff_refuses_what_it_did_not_make(inv):
    for mutate, match in ((lambda f: setattr(f, "state_dir", "foreign"), "was not made by tcpskim"),
                          (lambda f: f.bridge.update(linkinfo={"info_kind": "veth"}), "is not a bridge"),
                          (lambda f: setattr(f.hosts["logger"], "checkout", "foreign"), "not a git checkout")):
        facts = complete_facts(inv)
        mutate(facts)
        with pytest.raises(lab.LabError, match=match):
            diff(inv, facts)


def test_diff_without_cpus_to_dedicate_steers_nothing(inv):
    plan = diff(inv, Facts(ncpu=1, source=("/src", "main", None)))
    assert not [w for w in whats(plan) if "rps_cpus" in w]
    assert argvs(plan, "sshd of sensor on 198.18.0.194:22")[0][0][0] == "ip"  # no taskset
    facts = complete_facts(inv)
    facts.rps_supported = False
    facts.hosts["hardworker"].rps = 0
    plan = diff(inv, facts)
    assert plan.steps == [] and plan.warnings == [
        f"{h}: no /sys/class/net/{i}/queues/rx-0/rps_cpus (kernel without RPS?): receive processing not steered"
        for h, i in (("sensor", "eth0"), ("hardworker", "eth0"), ("logger", "eth1"))]


def test_other_cpus_is_the_non_hardworker_set(inv):
    assert lab.other_cpus(lab.cpu_plan(inv, 4), inv.hosts) == [0, 1, 2]
    assert lab.other_cpus(lab.cpu_plan(inv, 1), inv.hosts) == []


def test_dry_run_prints_steps_and_runs_nothing(inv, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError(f"a dry run ran {a}")

    for mod in (net, lab_apply):
        monkeypatch.setattr(mod, "run", refuse)
    monkeypatch.setattr(lab_apply, "ACTIONS", {})
    plan = diff(inv, Facts(ncpu=4, source=("/src", "main", None)))
    lines = []
    rep = lab.Report(lines.append)
    lab.apply(inv, plan.steps, rep, dry_run=True)
    assert rep.created == [] and not Path(inv.lab.state_dir).exists()
    assert "would create  namespace tsu-sensor" in lines and "    $ ip netns add tsu-sensor" in lines
    assert sum(ln.startswith("would create") for ln in lines) == len(plan.steps)


# --------------------------------------------------------------------------- the lab (root)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    if not ROOT_LINUX:
        pytest.skip("the local lab needs Linux and root")
    tmp = tmp_path_factory.mktemp("lab")
    remote, head = code_source(tmp)
    linv = write_inventory(tmp, "tsl", 64, remote=remote)
    lab.down(linv, log=quiet)  # a killed earlier run's lab first: it may have steered IRQs
    before = {n: v["affinity"] for n, v in irqs.read().items()}
    t0 = time.monotonic()
    with lab_built(linv) as report:
        yield {"inv": linv, "report": report, "head": head, "up_s": time.monotonic() - t0, "irqs": before}


def refusals(warnings):
    """Warnings other than IRQs the kernel would not move (managed or per-CPU, e.g. virtio-blk's
    here: said, not a fault)."""
    return [w for w in warnings if "refuses affinity changes" not in w]


@needs_root
def test_up_builds_everything(built):
    linv, report = built["inv"], built["report"]
    assert refusals(report["warnings"]) == []
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
def test_no_movable_irq_lands_on_the_hardworker_cpu(built):
    linv = built["inv"]
    hw = lab.cpu_plan(linv)[linv.hardworker.name]
    if not hw:
        pytest.skip("IRQ steering needs 2 CPUs or more")
    saved = state.read_state(linv).get("irqs", {})
    on_hw = [(n, v["name"], v["affinity"]) for n, v in irqs.read().items()
             if set(irqs.parse_cpus(v["affinity"])) & set(hw) and "refused" not in saved.get(str(n), {})]
    assert on_hw == []
    refused = [n for n, v in saved.items() if "refused" in v]
    assert len(refusals(built["report"]["warnings"])) == len(built["report"]["warnings"]) - len(refused)
    rows = {r["irq"]: r for r in lab.irq_status(linv)}
    assert all(rows[int(n)]["lab"].startswith("steered (was ") for n, v in saved.items() if "refused" not in v)


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
    assert again["created"] == [] and again["warnings"] == []  # a refused IRQ is found, not warned again
    assert {h: v["sshd_pid"] for h, v in again["state"]["hosts"].items()} == pids
    assert Path(linv.known_hosts).read_text() == kh


@needs_root
def test_down_removes_everything(built):
    # Last test of the module's lab: afterwards the fixture's down runs on nothing.
    linv = built["inv"]
    rep = lab.down(linv, log=quiet)
    assert rep["warnings"] == []
    assert lab_leftovers(linv) == []
    after = {n: v["affinity"] for n, v in irqs.read().items()}
    assert {n: a for n, a in after.items() if n in built["irqs"]} == \
        {n: a for n, a in built["irqs"].items() if n in after}  # every affinity as before up
    assert lab.down(linv, log=quiet) == {"removed": [], "warnings": []}


@pytest.fixture
def half(tmp_path):
    if not ROOT_LINUX:
        pytest.skip("the local lab needs Linux and root")
    remote, _ = code_source(tmp_path)
    hinv = write_inventory(tmp_path, "tsh", 128, remote=remote)
    with lab_built(hinv, areas=()):
        yield hinv


def build_part(inv, hosts, areas):
    """Only the steps of ``up`` for these hosts (and the lab-wide ones) in these areas."""
    steps = [s for s in lab.plan(inv).steps if s.host in (None, *hosts) and s.area in areas]
    lab.apply(inv, steps, lab.Report(quiet))


@needs_root
def test_down_after_half_finished_up(half):
    build_part(half, ("sensor", "hardworker"), ("state", "net", "sshd"))
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
    build_part(half, ("logger",), ("state", "net"))
    dry = lab.up(half, log=quiet, dry_run=True)
    assert dry["created"] == [] and "namespace tsh-logger" in dry["found"]
    assert "namespace tsh-sensor" in dry["steps"] and not Path("/run/netns/tsh-sensor").exists()
    done = lab.up(half, log=quiet)
    assert refusals(done["warnings"]) == []
    assert any("namespace tsh-logger" == f for f in done["found"])
    refused = [w.partition(" refuses")[0] for w in done["warnings"]]
    # the dry run listed exactly what up then did (an IRQ the kernel refused is a warning instead)
    assert done["created"] == [s for s in dry["steps"] if not any(s.startswith(r + " ") for r in refused)]
    assert all(r["port_open"] for r in lab.status(half))
    assert lab.up(half, log=quiet, dry_run=True)["steps"] == []
    lab.down(half, log=quiet)
    assert lab_leftovers(half) == []
