"""Read what exists of a lab on this machine (``steps.Facts``): links, addresses, offload and RPS
state, device IRQ affinities (and those the lab changed), keys, sshd, known_hosts, checkouts.
Reads only; ``steps.diff`` decides what to change.
"""

from __future__ import annotations

import os
from pathlib import Path

from roles import irqs

from ..inventory import Host, Inventory
from . import net, sshd, state
from .names import host_dir, lab_key, lab_of, namespace, veth_name
from .steps import Facts, HostFacts


def gather(inv: Inventory, bridge_netns: str | None = None) -> Facts:
    """The facts of ``inv``'s lab (``bridge_netns``: see ``steps.Facts``)."""
    lab, b = lab_of(inv), bridge_netns
    d = Path(lab.state_dir)
    key = lab_key(inv)
    facts = Facts(
        ncpu=os.cpu_count() or 1,
        state_dir=state.state_dir_kind(inv),
        state_mode=(d.stat().st_mode & 0o777) if d.is_dir() else None,
        lab_pub=state.read_text(key.with_name(key.name + ".pub")) if key.exists() else None,
        rps_supported=net.rps_supported(),
        source=state.source(inv),  # fails early if the control checkout is unusable
        irqs=irqs.read(), irqs_saved=state.read_state(inv).get("irqs", {}),
    )
    # (with a bridge namespace that does not exist, every `ip -n` read below finds nothing)
    facts.bridge_netns, facts.bridge_netns_exists = b, bool(b) and net.ns_exists(b)
    facts.bridge = net.link(lab.bridge, b)
    facts.bridge_addrs = tuple(net.addrs(lab.bridge, b)) if facts.bridge else ()
    for h in inv.hosts:
        facts.hosts[h.name] = _host(inv, h, b)
    facts.known_hosts_current = state.known_hosts_current(inv)
    return facts


def _host(inv: Inventory, h: Host, b: str | None) -> HostFacts:
    ns, veth, d = namespace(inv, h), veth_name(inv, h), host_dir(inv, h)
    hf = HostFacts(netns=net.ns_exists(ns), veth=net.link(veth, b))
    if hf.netns:
        hf.inner = net.link(h.interface, ns)
        hf.lo_up = net.is_up(net.link("lo", ns))
        if hf.inner is not None:
            hf.inner_addrs = tuple(net.addrs(h.interface, ns))
            hf.tx_off_inner = net.tx_off(h.interface, ns)
            hf.rps = net.rps_mask(h.interface, ns)
    if hf.veth is not None:
        hf.tx_off_veth = net.tx_off(veth, b)
        hf.port_rps = net.rps_mask(veth, b)
    key = d / "ssh_host_ed25519_key"
    hf.host_key = key.exists() and key.with_name(key.name + ".pub").exists()
    hf.custom_pub = state.custom_pub(inv, h)
    hf.authorized_keys = state.read_text(d / "authorized_keys")
    hf.sshd_config = state.read_text(d / "sshd_config")
    hf.sshd_pid = sshd.pid(inv, h)
    hf.checkout = state.checkout_kind(h)
    return hf
