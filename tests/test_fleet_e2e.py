"""The testbed foundation end to end on a lab, over real SSH, through the real `invoke`:
lab.up deploy fix-network, idempotence, a dead sshd, a changed host key, stop."""

from __future__ import annotations

import re
import subprocess
import time

import pytest

from tcpskim import lab, localgit

from helpers import run_invoke

pytestmark = pytest.mark.lab  # builds the e2e lab


def neighbours(inv, host):
    out = lab.ns_exec(inv, host.name, ["ip", "-4", "neigh", "show", "dev", host.interface]).stdout
    return {m.group(1): (m.group(2), "PERMANENT" in line)
            for line in out.splitlines() if (m := re.match(r"(\S+) lladdr (\S+)", line))}


def test_up_deploy_fix_network(e2e_lab):
    inv, path = e2e_lab
    r = run_invoke(path, "lab.up", "deploy", "fix-network")
    assert r.returncode == 0, r.stdout + r.stderr
    head = localgit.head()
    for h in inv.hosts:
        got = subprocess.run(["git", "-C", h.checkout, "rev-parse", "HEAD"], capture_output=True, text=True).stdout
        assert got.strip() == head, h.name
    assert "4 ok (" in r.stdout.split("neighbour pins")[0]  # deploy's summary counts every host
    macs = {h.ip: lab.host_mac(h) for h in inv.hosts}
    for h in inv.hosts:
        n = neighbours(inv, h)
        for peer in inv.hosts:
            if peer.name != h.name:
                assert n.get(peer.ip) == (macs[peer.ip], True), (h.name, peer.name, n)
    # Idempotent: a second run changes nothing.
    r2 = run_invoke(path, "fix-network")
    assert r2.returncode == 0, r2.stdout + r2.stderr
    assert "(0 changed), 0 failed" in r2.stdout.split("neighbour pins")[1]
    # Dry run on a host whose pin was removed: planned, not done.
    hw = inv.hardworker
    lab.ns_exec(inv, hw.name, ["ip", "neigh", "del", inv.logger.ip, "dev", hw.interface])
    r3 = run_invoke(path, "fix-network", "--dry-run")
    assert r3.returncode == 0 and f"would pin logger({inv.logger.ip})" in r3.stdout, r3.stdout
    assert inv.logger.ip not in neighbours(inv, hw) or not neighbours(inv, hw)[inv.logger.ip][1]
    r4 = run_invoke(path, "fix-network")
    assert r4.returncode == 0, r4.stdout + r4.stderr
    assert "(1 changed)" in r4.stdout.split("neighbour pins")[1], r4.stdout
    assert neighbours(inv, hw)[inv.logger.ip] == (lab.host_mac(inv.logger), True)


def test_a_second_deploy_changes_nothing_in_one_ssh_command_per_host(deployed):
    """Steady state: every host answers changed=False, from one SSH command each, with the
    bcc import remembered from the first deploy; --check agrees and changes nothing."""
    from tcpskim.deploy import deploy
    from tcpskim.fleet import Fleet

    inv, _ = deployed
    with Fleet(inv) as fleet:
        commands = []
        real_run = fleet.run
        fleet.run = lambda host, cmd, **kw: (commands.append(host.name), real_run(host, cmd, **kw))[1]
        results = deploy(fleet, list(inv.hosts))
        assert [(r.host, r.status) for r in results] == [(h.name, "ok") for h in inv.hosts], results
        assert all(r.data["runtime"] == "cached" and r.data["same_as_control"] for r in results), results
        assert sorted(commands) == sorted(inv.names), commands
        checked = deploy(fleet, list(inv.hosts), check=True)
        assert all(r.status == "ok" and r.data["action"] == "up to date" for r in checked), checked


def test_doctor_reports_every_host(deployed):
    inv, path = deployed
    r = run_invoke(path, "doctor")
    assert r.returncode == 0, r.stdout + r.stderr
    head = next(line for line in r.stdout.splitlines() if line.startswith("host "))
    a, b, c = head.index("attribution"), head.index("irqs"), head.index("commit")
    hw = lab.cpu_plan(inv)[inv.hardworker.name]
    for h in inv.hosts:
        row = next(line for line in r.stdout.splitlines() if line.startswith(h.name + " "))
        assert "compiles+loads" in row and "generic" in row and lab.host_mac(h) in row, row
        # this kernel has every tracepoint attribution.c uses; tracefs mounted or mountable
        assert row[a:b].strip() == "ok", r.stdout
        # device IRQs that may land on the dedicated CPU: after lab.up only those the kernel refused
        irqs = row[b:c].strip()
        assert irqs.endswith(f" on CPU {hw[0]}") if h.role == "hardworker" and hw else irqs == "", r.stdout


def test_stopped_sshd_fails_that_host_alone(deployed):
    inv, path = deployed
    victim = inv.logger
    pid = int((lab.host_dir(inv, victim) / "sshd.pid").read_text())
    subprocess.run(["kill", str(pid)], check=True)
    try:
        t0 = time.monotonic()
        r = run_invoke(path, "deploy")
        took = time.monotonic() - t0
        assert r.returncode == 1
        rows = {line.split()[0]: line for line in r.stdout.splitlines() if line.split() and line.split()[0] in inv.names}
        assert "failed" in rows["logger"] and victim.ip in rows["logger"], rows
        assert all(" failed " not in rows[n] for n in inv.names if n != "logger"), rows
        assert "1 failed: logger" in r.stdout
        assert took < 60, took
    finally:
        lab.up(inv, log=lambda *_: None)  # restarts the sshd


def test_changed_host_key_is_refused_until_accepted(deployed):
    inv, path = deployed
    victim = inv.sensors[0]
    d = lab.host_dir(inv, victim)
    known = open(inv.known_hosts).read()
    # Reinstall the host: a new host key, and the known_hosts entry still has the old one.
    subprocess.run(["kill", (d / "sshd.pid").read_text().strip()], check=True)
    time.sleep(0.3)
    for f in d.glob("ssh_host_ed25519_key*"):
        f.unlink()
    lab.up(inv, log=lambda *_: None)
    open(inv.known_hosts, "w").write(known)
    try:
        r = run_invoke(path, "stop", "--hosts", victim.name)
        assert r.returncode == 1 and "host key CHANGED" in r.stdout and "accept-host-keys" in r.stdout, r.stdout
        r = run_invoke(path, "accept-host-keys", "--hosts", victim.name)
        assert r.returncode == 0 and "replaced old key" in r.stdout, r.stdout
        r = run_invoke(path, "stop", "--hosts", victim.name)
        assert r.returncode == 0, r.stdout
    finally:
        lab.up(inv, log=lambda *_: None)  # rewrites known_hosts from the lab's own keys


def test_stop_is_safe_any_time(deployed):
    inv, path = deployed
    for _ in range(2):
        r = run_invoke(path, "stop")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "nothing running" in r.stdout


def test_stop_detaches_a_leftover_xdp_program(deployed):
    """A role killed with SIGKILL leaves its XDP program attached (netlink attachments outlive
    the process): `invoke stop` finds and removes it."""
    inv, path = deployed
    hw = inv.hardworker
    leave = ("from bcc import BPF; b = BPF(text='int p(struct xdp_md *c) { return XDP_PASS; }'); "
             f"BPF.attach_xdp('{hw.interface}', b.load_func('p', BPF.XDP), BPF.XDP_FLAGS_SKB_MODE)")
    r = lab.ns_exec(inv, hw.name, ["/usr/bin/python3", "-c", leave])
    assert r.returncode == 0, r.stderr
    assert "xdpgeneric" in lab.ns_exec(inv, hw.name, ["ip", "link", "show", hw.interface]).stdout
    s = run_invoke(path, "stop")
    assert s.returncode == 0, s.stdout + s.stderr
    row = next(line for line in s.stdout.splitlines() if line.startswith("hardworker "))
    assert "changed" in row and f"detached XDP from {hw.interface}" in row, row
    assert "xdp" not in lab.ns_exec(inv, hw.name, ["ip", "link", "show", hw.interface]).stdout


def test_stop_sweeps_xdp_on_a_host_without_checkout(deployed):
    """Before any deploy (no checkout, so no hostctl) stop still clears both XDP modes."""
    import os

    inv, path = deployed
    hw = inv.hardworker
    leave = ("from bcc import BPF; b = BPF(text='int p(struct xdp_md *c) { return XDP_PASS; }'); "
             f"BPF.attach_xdp('{hw.interface}', b.load_func('p', BPF.XDP), BPF.XDP_FLAGS_SKB_MODE)")
    assert lab.ns_exec(inv, hw.name, ["/usr/bin/python3", "-c", leave]).returncode == 0
    aside = hw.checkout.rstrip("/") + ".aside"
    os.rename(hw.checkout, aside)
    try:
        s = run_invoke(path, "stop")
        assert s.returncode == 0, s.stdout + s.stderr
        row = next(line for line in s.stdout.splitlines() if line.startswith("hardworker "))
        assert "no checkout" in row, row
        assert "xdp" not in lab.ns_exec(inv, hw.name, ["ip", "link", "show", hw.interface]).stdout
    finally:
        os.rename(aside, hw.checkout)
        lab.ns_exec(inv, hw.name, ["ip", "link", "set", "dev", hw.interface, "xdpgeneric", "off"])
