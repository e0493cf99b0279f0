"""Lab naming and CPU planning: pure functions of the inventory (no root, no I/O).

Names: a host's namespace and root-side veth are ``<prefix>-<name>`` (the veth shortened with a
hash to fit IFNAMSIZ), its MAC is the inventory's or ``02:00`` + the IPv4 octets, its files live
under ``<state_dir>/hosts/<name>``. CPUs: the hardworker gets the last CPU, everything else
(the other hosts, every sshd, the control side during a run, the bridge ports' receive work)
the rest; ``other_cpus`` is that "rest".
"""

from __future__ import annotations

import ipaddress
import os
from hashlib import sha1
from pathlib import Path

from ..inventory import Host, Inventory, Lab


class LabError(RuntimeError):
    """A one-line, user-facing lab problem."""


def lab_of(inv: Inventory) -> Lab:
    """The inventory's [lab] table, or a LabError for a hardware inventory."""
    if inv.lab is None:
        raise LabError(f"{inv.path.name}: not a lab inventory (set testbed.lab = true and a [lab] table)")
    return inv.lab


def _name(host: Host | str) -> str:
    return host if isinstance(host, str) else host.name


def namespace(inv: Inventory, host: Host | str) -> str:
    """Network namespace name of a lab host: ``<prefix>-<name>``."""
    return f"{lab_of(inv).prefix}-{_name(host)}"


def veth_name(inv: Inventory, host: Host | str) -> str:
    """Root-side veth of a lab host: ``<prefix>-<name>``, shortened with a hash if > 15 chars."""
    name, prefix = _name(host), lab_of(inv).prefix
    v = f"{prefix}-{name}"
    if len(v) <= 15:
        return v
    digest = sha1(name.encode()).hexdigest()[:4]
    return f"{prefix}-{name[:15 - len(prefix) - 1 - 4]}{digest}"


def derived_mac(ip: str) -> str:
    """02:00 + the four IPv4 octets (locally administered, unicast)."""
    return "02:00:" + ":".join(f"{o:02x}" for o in ipaddress.IPv4Address(ip).packed)


def host_mac(host: Host) -> str:
    return host.mac or derived_mac(host.ip)


def host_dir(inv: Inventory, host: Host | str) -> Path:
    return Path(lab_of(inv).state_dir) / "hosts" / _name(host)


def lab_key(inv: Inventory) -> Path:
    return Path(lab_of(inv).state_dir) / "id_ed25519"


def prefixlen(inv: Inventory) -> int:
    return ipaddress.IPv4Network(lab_of(inv).subnet).prefixlen


def cpu_plan(inv: Inventory, ncpu: int | None = None) -> dict[str, list[int]]:
    """CPUs each host's roles should use: hardworker the last CPU, the others the rest.

    Empty lists mean "no pinning" (``lab.dedicate_cpu`` false, not a lab, or < 2 CPUs).
    A host's own ``cpus`` in the inventory always wins.
    """
    n = ncpu if ncpu is not None else (os.cpu_count() or 1)
    dedicate = inv.lab is not None and inv.lab.dedicate_cpu and n >= 2
    plan = {}
    for h in inv.hosts:
        if h.cpus:
            plan[h.name] = list(h.cpus)
        elif not dedicate:
            plan[h.name] = []
        elif h.role == "hardworker":
            plan[h.name] = [n - 1]
        else:
            plan[h.name] = list(range(n - 1))
    return plan


def other_cpus(plan: dict[str, list[int]], hosts) -> list[int]:
    """The non-hardworker CPU set: the plan of the first host that is not the hardworker
    (every such host shares it); empty when nothing is pinned."""
    return plan.get(next((h.name for h in hosts if h.role != "hardworker"), ""), [])


def cpu_mask(cpus: list[int]) -> str:
    """The sysfs cpumask text for a CPU list: hex, comma every 32 bits ([1] -> '2')."""
    v = 0
    for c in cpus:
        v |= 1 << c
    h = f"{v:x}"
    groups = []
    while h:
        groups.insert(0, h[-8:])
        h = h[:-8]
    return ",".join(groups) or "0"


def parse_mask(text: str) -> int:
    return int(text.strip().replace(",", "") or "0", 16)
