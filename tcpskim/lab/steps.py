"""Lab setup as data: the facts ``up`` reads, the steps it would take, and ``diff`` between them.

``diff(inv, facts)`` is pure (no root, no I/O): it compares what the lab should be with what
``facts.gather`` found and returns the steps still missing, in order, with the commands each
runs, what is already in place, and warnings. ``apply`` runs the steps; ``up --dry-run`` only
prints them. The shape is the one ``tcpskim.routes`` has: facts -> plan -> apply.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from roles import irqs as irqmod

from ..inventory import Host, Inventory
from . import sshd
from .names import (LabError, cpu_mask, cpu_plan, derived_mac, host_dir, host_mac, lab_key, lab_of, namespace,
                    other_cpus, parse_mask, prefixlen, veth_name)
from .net import RPS, in_ns, ip


@dataclass
class HostFacts:
    """What exists of one lab host (defaults: nothing)."""
    netns: bool = False
    veth: dict | None = None  # `ip -j link` of the root-side veth
    inner: dict | None = None  # `ip -j link` of host.interface in the namespace
    inner_addrs: tuple[str, ...] = ()
    lo_up: bool = False
    tx_off_veth: bool = False
    tx_off_inner: bool = False
    rps: int | None = None  # rx-0 RPS mask of host.interface
    port_rps: int | None = None  # rx-0 RPS mask of the bridge port (root-side veth)
    host_key: bool = False
    custom_pub: str | None = None  # the inventory's own ssh_key.pub for this host
    authorized_keys: str | None = None
    sshd_config: str | None = None
    sshd_pid: int | None = None
    checkout: str = "missing"  # git | missing | foreign


@dataclass
class Facts:
    """What exists of the lab on this machine."""
    ncpu: int
    state_dir: str = "missing"  # missing | ours | empty | foreign
    state_mode: int | None = None
    lab_pub: str | None = None  # the lab key's public half (None: no complete key pair)
    bridge: dict | None = None
    bridge_addrs: tuple[str, ...] = ()
    rps_supported: bool = True
    known_hosts_current: bool = False
    # The bridge and the root-side veths live in this namespace instead of the root one: a plain
    # wire for data-path tests (the root namespace's bridge netfilter may validate and drop
    # malformed IPv4 frames); the control machine then cannot reach the hosts.
    bridge_netns: str | None = None
    bridge_netns_exists: bool = False
    source: tuple[str, str | None, str | None] = ("", None, None)
    hosts: dict[str, HostFacts] = field(default_factory=dict)
    irqs: dict[int, dict] = field(default_factory=dict)  # roles.irqs.read(): the machine's device IRQs
    irqs_saved: dict[str, dict] = field(default_factory=dict)  # lab.json "irqs": affinities this lab changed
    irq_root: str | None = None  # /proc/irq (tests: a fake tree)


@dataclass(frozen=True)
class Cmd:
    argv: tuple[str, ...]
    input: str | None = None
    check: bool = True

    def __str__(self) -> str:
        return shlex.join(self.argv) + (f" <<< {self.input.strip()}" if self.input else "")


@dataclass(frozen=True)
class Step:
    area: str  # state | net | irq | sshd | known_hosts | checkout
    host: str | None  # None: lab-wide
    what: str  # as reported: "namespace tsk-sensor"
    cmds: tuple[Cmd, ...] = ()
    op: str = ""  # "" runs cmds; else an action of tcpskim.lab.apply (state_dir, keygen, write, ...)
    args: tuple = ()


@dataclass
class Plan:
    steps: list[Step] = field(default_factory=list)
    found: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def add(self, area, host, what, *cmds, op="", args=()) -> None:
        self.steps.append(Step(area, host, what, tuple(c if isinstance(c, Cmd) else Cmd(tuple(c)) for c in cmds),
                               op, tuple(args)))


def _no_ipv6(dev: str, ns: str | None = None) -> Cmd:
    # Router solicitations, MLD and DAD packets on the lab links are noise in packet counts.
    return Cmd(in_ns(ns, "sysctl", "-q", "-w", f"net/ipv6/conf/{dev}/disable_ipv6=1"), check=False)


def diff(inv: Inventory, facts: Facts) -> Plan:
    """The steps that turn ``facts`` into the lab ``inv`` describes (none when it is complete)."""
    plan = Plan()
    _state(inv, facts, plan)
    _bridge(inv, facts, plan)
    new = set()  # hosts whose veth pair is (re)made: nothing on it is in place yet
    for h in inv.hosts:
        if _host_net(inv, h, facts.hosts.get(h.name, HostFacts()), facts.bridge_netns, plan):
            new.add(h.name)
        _rps(inv, h, facts, h.name in new, plan)
    _bridge_rps(inv, facts, new, plan)
    _irqs(inv, facts, plan)
    for h in inv.hosts:
        _sshd(inv, h, facts, plan)
    _known_hosts(inv, facts, plan)
    for h in inv.hosts:
        _checkout(inv, h, facts, plan)
    return plan


def _state(inv: Inventory, facts: Facts, plan: Plan) -> None:
    d = lab_of(inv).state_dir
    if facts.state_dir == "foreign":
        raise LabError(f"lab.state_dir {d} exists, is not empty and was not made by tcpskim: "
                       "choose another lab.state_dir")
    if facts.state_dir == "missing":
        plan.add("state", None, f"state dir {d}", op="state_dir")
    else:
        plan.found.append(f"state dir {d}")
        if facts.state_dir == "empty" or facts.state_mode != 0o700:
            plan.add("state", None, f"mode 0700 and marker on state dir {d}", op="state_dir")
    key = lab_key(inv)
    if facts.lab_pub is not None:
        plan.found.append(f"lab key {key}")
    else:
        plan.add("state", None, f"lab key {key}", sshd.keygen_argv(key, f"tcpskim-lab@{inv.name}"),
                 op="keygen", args=(str(key),))


def _bridge(inv: Inventory, facts: Facts, plan: Plan) -> None:
    lab = lab_of(inv)
    br, link, b = lab.bridge, facts.bridge, facts.bridge_netns
    if b and not facts.bridge_netns_exists:
        plan.add("net", None, f"namespace {b}", ip(None, "netns", "add", b))
    new = link is None
    if new:
        # A bridge without its own MAC takes the lowest port MAC and changes it as ports
        # join, leaving stale ARP entries for control_ip in the namespaces: pin one.
        plain = [Cmd(in_ns(b, "sysctl", "-q", "-w", f"net.bridge.bridge-nf-call-{f}=0"), check=False)
                 for f in ("iptables", "ip6tables", "arptables")] if b else []
        plan.add("net", None, f"bridge {br}", ip(b, "link", "add", "name", br, "type", "bridge"),
                 ip(b, "link", "set", "dev", br, "address", derived_mac(lab.control_ip)), _no_ipv6(br, b), *plain)
    elif link.get("linkinfo", {}).get("info_kind") not in (None, "bridge"):
        raise LabError(f"{br} exists but is not a bridge: remove it or change lab.bridge")
    else:
        plan.found.append(f"bridge {br}")
    want = f"{lab.control_ip}/{prefixlen(inv)}"
    if new or want not in facts.bridge_addrs:
        plan.add("net", None, f"address {want} on {br}", ip(b, "addr", "add", want, "dev", br))
    if new or "UP" not in link.get("flags", []):
        plan.add("net", None, f"{br} up", ip(b, "link", "set", "dev", br, "up"))


def _host_net(inv: Inventory, host: Host, hf: HostFacts, b: str | None, plan: Plan) -> bool:
    """Namespace, veth pair, MAC, bridge port, address, offload, links up; True if the pair is new.
    ``b``: the bridge's namespace (None: the root namespace)."""
    br = lab_of(inv).bridge
    ns, veth, ifc, mac, n = namespace(inv, host), veth_name(inv, host), host.interface, host_mac(host), host.name
    if veth == br:
        raise LabError(f"host {n}: its veth name {veth} is the bridge's name: rename the host or lab.bridge")
    if not hf.netns:
        # Set before the veth end arrives so the new device inherits "default".
        plan.add("net", n, f"namespace {ns}", ip(None, "netns", "add", ns),
                 Cmd(in_ns(ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
                           "net.ipv6.conf.default.disable_ipv6=1"), check=False))
    else:
        plan.found.append(f"namespace {ns}")
    inner = hf.inner if hf.netns else None
    new = hf.veth is None or inner is None
    if new:
        # A half-made pair (or a renamed peer) starts over. The peer is created inside the
        # namespace with its final name and MAC: no temporary name in the root namespace.
        stale = ([Cmd(ip(b, "link", "del", "dev", veth), check=False)] if hf.veth is not None else []) + \
                ([Cmd(ip(ns, "link", "del", "dev", ifc), check=False)] if inner is not None else [])
        plan.add("net", n, f"veth {veth} <-> {ns}:{ifc}", *stale,
                 ip(b, "link", "add", "name", veth, "type", "veth", "peer", "name", ifc, "address", mac,
                    "netns", ns), _no_ipv6(veth, b))
    else:
        plan.found.append(f"veth {veth} <-> {ns}:{ifc}")
    remac = not new and inner.get("address") != mac
    if remac:
        plan.add("net", n, f"MAC {mac} on {ns}:{ifc}", ip(ns, "link", "set", "dev", ifc, "down"),
                 ip(ns, "link", "set", "dev", ifc, "address", mac))
    if new or hf.veth.get("master") != br:
        plan.add("net", n, f"{veth} on bridge {br}", ip(b, "link", "set", "dev", veth, "master", br))
    want = f"{host.ip}/{prefixlen(inv)}"
    if new or want not in hf.inner_addrs:
        plan.add("net", n, f"address {want} on {ns}:{ifc}", ip(ns, "addr", "add", want, "dev", ifc))
    # With TX checksum offload on, locally generated TCP on a veth carries only a partial
    # checksum (CHECKSUM_PARTIAL), so an XDP rewrite with a wrong checksum goes unnoticed;
    # turning it off also turns off TSO, so the sensor's stack segments to the MSS.
    for dev, where, off in ((veth, b, hf.tx_off_veth), (ifc, ns, hf.tx_off_inner)):
        what = f"tx offload off on {where + ':' if where else ''}{dev}"
        if new or not off:
            plan.add("net", n, what, in_ns(where, "ethtool", "-K", dev, "tx", "off"))
        else:
            plan.found.append(what)
    for dev, where, up in (("lo", ns, hf.netns and hf.lo_up), (ifc, ns, not new and not remac and _up(inner)),
                           (veth, b, not new and _up(hf.veth))):
        if not up:
            plan.add("net", n, f"{where + ':' if where else ''}{dev} up", ip(where, "link", "set", "dev", dev, "up"))
    return new


def _up(link: dict | None) -> bool:
    return "UP" in (link or {}).get("flags", [])


def _rps(inv: Inventory, host: Host, facts: Facts, new: bool, plan: Plan) -> None:
    # RPS moves this device's receive processing (softirq, generic XDP included) to these
    # CPUs, so the hardworker's dedicated CPU carries its whole networking cost.
    cpus = cpu_plan(inv, facts.ncpu)[host.name]
    if not cpus or not lab_of(inv).dedicate_cpu:
        return
    ns, path = namespace(inv, host), RPS.format(host.interface)
    if not facts.rps_supported:
        plan.warnings.append(f"{host.name}: no {path} (kernel without RPS?): receive processing not steered")
        return
    mask = cpu_mask(cpus)
    what = f"rps_cpus {mask} on {ns}:{host.interface}"
    rps = facts.hosts.get(host.name, HostFacts()).rps
    if not new and rps == parse_mask(mask):
        plan.found.append(what)
    else:
        plan.add("net", host.name, what, Cmd(in_ns(ns, "tee", path), input=mask + "\n"))


def _bridge_rps(inv: Inventory, facts: Facts, new: set[str], plan: Plan) -> None:
    """The bridge ports' receive work (forwarding, e.g. of the hardworker's XDP_TX bounces) goes
    to the non-hardworker CPUs: on hardware the NIC sends those frames, not the hardworker's CPU."""
    others = other_cpus(cpu_plan(inv, facts.ncpu), inv.hosts)
    if not others or not lab_of(inv).dedicate_cpu or not facts.rps_supported:
        return
    mask = cpu_mask(others)
    for h in inv.hosts:
        hf = facts.hosts.get(h.name, HostFacts())
        if h.name in new or hf.port_rps != parse_mask(mask):
            v = veth_name(inv, h)
            plan.add("net", h.name, f"rps_cpus {mask} on bridge port {v}",
                     Cmd(in_ns(facts.bridge_netns, "tee", RPS.format(v)), input=mask + "\n"))


def _irqs(inv: Inventory, facts: Facts, plan: Plan) -> None:
    """Device IRQs off the hardworker's dedicated CPUs: an interrupt's handler and the softirq it
    raises (a disk write's BLOCK completion, whoever wrote) run where it lands, and would be
    charged to the hardworker. Each IRQ keeps the rest of its affinity (or gets the other CPUs).
    Without a CPU to dedicate, affinities a lab changed earlier go back (a lab that crashed)."""
    cpus = cpu_plan(inv, facts.ncpu)
    hw = set(cpus[inv.hardworker.name])
    others = other_cpus(cpus, inv.hosts)
    steer = lab_of(inv).dedicate_cpu and hw and others
    kept = 0
    for n, irq in sorted(facts.irqs.items()):
        saved, aff, path = facts.irqs_saved.get(str(n)), irq["affinity"], irqmod.affinity_path(n, facts.irq_root)
        label = f"IRQ {n} ({irq['name']})"
        if not steer:
            if saved and "refused" not in saved and aff != saved["affinity"]:
                plan.add("irq", None, f"{label} affinity {aff} -> {saved['affinity']} (restored)",
                         Cmd(("tee", path), input=saved["affinity"] + "\n"), op="irq_restore", args=(n,))
            continue
        cur = set(irqmod.parse_cpus(aff))
        if not cur & hw:
            kept += 1
        elif saved and "refused" in saved:  # tried by an earlier up (managed or per-CPU): warned then
            plan.found.append(f"{label} on CPUs {aff}: refuses affinity changes ({saved['refused']})")
        else:
            new = irqmod.cpu_list(cur - hw or others)
            plan.add("irq", None, f"{label} affinity {aff} -> {new}", Cmd(("tee", path), input=new + "\n"),
                     op="irq", args=(n, irq["name"], aff))
    if kept:
        plan.found.append(f"{kept} device IRQ(s) off CPU {irqmod.cpu_list(hw)}")


def authorized_keys_text(lab_pub: str, custom_pub: str | None) -> str:
    """The lab key, plus the inventory's own key for the host when it has one."""
    return "\n".join([lab_pub.strip()] + ([custom_pub.strip()] if custom_pub else [])) + "\n"


def _sshd(inv: Inventory, host: Host, facts: Facts, plan: Plan) -> None:
    d, n, lab_pub = host_dir(inv, host), host.name, facts.lab_pub
    hf = facts.hosts.get(host.name, HostFacts())
    if hf.host_key:
        plan.found.append(f"host key of {n}")
    else:
        key = d / "ssh_host_ed25519_key"
        plan.add("sshd", n, f"host key of {n}", sshd.keygen_argv(key, f"tcpskim-lab-{n}"), op="keygen",
                 args=(str(key),))
    if lab_pub is None or hf.authorized_keys != authorized_keys_text(lab_pub, hf.custom_pub):
        plan.add("sshd", n, f"authorized_keys of {n}", op="authorized_keys", args=(n,))
    config = sshd.config_text(inv, host)
    changed = hf.sshd_config != config
    if changed:
        plan.add("sshd", n, f"sshd_config of {n}", op="write", args=(str(d / "sshd_config"), config))
    if hf.sshd_pid is not None:
        if changed:
            plan.warnings.append(f"{n}: sshd {hf.sshd_pid} runs with an older config: `lab down` + `lab up` to apply")
        plan.found.append(f"sshd of {n} (pid {hf.sshd_pid})")
    else:
        plan.add("sshd", n, f"sshd of {n} on {host.ip}:{host.ssh_port}", tuple(sshd.start_argv(inv, host, facts.ncpu)),
                 op="sshd", args=(n,))


def _known_hosts(inv: Inventory, facts: Facts, plan: Plan) -> None:
    what = f"known_hosts entries in {Path(inv.known_hosts).expanduser()}"
    if facts.known_hosts_current:
        plan.found.append(what)
    else:
        plan.add("known_hosts", None, what, op="known_hosts")


def _checkout(inv: Inventory, host: Host, facts: Facts, plan: Plan) -> None:
    dest = Path(host.checkout)
    kind = facts.hosts.get(host.name, HostFacts()).checkout
    if kind == "git":
        plan.found.append(f"checkout {dest}")  # updating it is `invoke deploy`'s job
        return
    if kind == "foreign":
        raise LabError(f"{host.name}: {dest} exists and is not a git checkout: remove it")
    src, branch, commit = facts.source
    if branch is None and commit is None and not inv.code_remote:
        plan.warnings.append(f"{host.name}: the control checkout {src} has no commit yet: cloned an empty repository")
    argv = ("git", "clone", "-q", *(("--branch", branch) if branch else ()), "--", src, str(dest))
    plan.add("checkout", host.name, f"checkout {dest} ({branch or commit or 'empty'})", argv, op="clone",
             args=(host.name, *facts.source))
