"""``invoke fix-network``: pin neighbour (ARP) entries on hosts; routes on the control machine.

The original testbed lost neighbour entries on Wi-Fi (``arp -n`` showed ``incomplete``) and
the Windows control machine could not reach the sensor. Here every host's data-plane MAC is
read live over SSH (pyroute2 on the host), checked against the inventory, and every host gets
PERMANENT entries for all its peers; the result is read back. Runs are idempotent.
"""

from __future__ import annotations

import os
import platform

from .fleet import Fleet, HostError, HostResult
from .inventory import Host, Inventory


def discover_macs(fleet: Fleet, hosts: list[Host]) -> list[HostResult]:
    """Each host's live MAC on its data-plane interface; a mismatch with the inventory fails the host."""
    def one(h: Host) -> HostResult:
        f = fleet.hostctl(h, "facts", "--interface", h.interface)
        mac = (f.get("mac") or "").lower()
        if not f.get("link_up"):
            raise HostError(f"{h.interface} is down")
        if h.mac and mac != h.mac:
            raise HostError(f"{h.interface} has MAC {mac}, inventory hosts.{h.name}.mac says {h.mac}")
        return HostResult(h.name, "ok", f"{h.interface} {mac}", {"mac": mac, "ip": h.ip})

    return fleet.each(hosts, one)


def peers_of(inv: Inventory, host: Host) -> list[Host]:
    """Every other host: sensor<->hardworker, sensor<->logger, hardworker<->logger (and sensor<->sensor,
    harmless) all exchange traffic, directly or through the XDP bounce."""
    return [h for h in inv.hosts if h.name != host.name]


def pin_neighbours(fleet: Fleet, hosts: list[Host], macs: dict[str, str], dry_run: bool) -> list[HostResult]:
    inv = fleet.inv

    def one(h: Host) -> HostResult:
        peers = [p for p in peers_of(inv, h) if p.name in macs]
        missing = [p.name for p in peers_of(inv, h) if p.name not in macs]
        if missing:
            raise HostError(f"MAC unknown for peer(s) {', '.join(missing)} (see above)")
        args = ["neigh-pin", "--interface", h.interface]
        for p in peers:
            args += ["--peer", f"{p.ip}={macs[p.name]}"]
        if dry_run:
            args.append("--dry-run")
        r = fleet.hostctl(h, *args)
        by_ip = {p.ip: p.name for p in peers}
        changed = [f"{by_ip[ip]}({ip})" for ip in r["changed"]]
        verb = "would pin" if dry_run else "pinned"
        if changed:
            return HostResult(h.name, "ok" if dry_run else "changed", f"{verb} {', '.join(changed)}",
                              {"pinned": len(r["ok"]) + (0 if dry_run else len(r["changed"]))})
        return HostResult(h.name, "ok", f"{len(r['ok'])} peers already pinned", {"pinned": len(r["ok"])})

    return fleet.each(hosts, one)


def control_routes(ctx, inv: Inventory, dry_run: bool) -> list[HostResult]:
    """Routes from the control machine to the hosts: Windows always checks, others only if asked."""
    from . import routes

    system = platform.system()
    ctl = inv.control
    if inv.lab:
        return []  # the lab's control address sits on the lab bridge: hosts are on-link
    if system != "Windows" and not ctl.get("add_routes"):
        return []
    results = []
    unreachable = []
    for h in inv.hosts:
        if routes.reachable(ctx, h.ip, system):
            results.append(HostResult(h.name, "ok", f"{h.ip} answers ping from the control machine"))
        else:
            unreachable.append(h)
    if not unreachable:
        return results
    if not ctl.get("gateway"):
        return results + [HostResult(h.name, "failed", f"{h.ip} does not answer and control.gateway is not set")
                          for h in unreachable]
    try:
        if system == "Windows":
            table = routes.read_route_table(ctx)
            iface = routes.find_interface(table, ctl.get("interface"), ctl["gateway"])
            actions = routes.plan_windows_routes(table, unreachable, ctl["gateway"], iface)
            outcome = routes.apply_windows_routes(ctx, actions, dry_run=dry_run)
        else:
            actions = routes.plan_posix_routes(unreachable, ctl["gateway"], ctl.get("interface"), system)
            outcome = routes.apply_posix_routes(ctx, actions, dry_run=dry_run, sudo=os.geteuid() != 0)
    except routes.RouteError as exc:
        return results + [HostResult(h.name, "failed", str(exc)) for h in unreachable]
    status = {"ok": "ok", "planned": "ok", "added": "changed", "changed": "changed"}
    by_ip = {h.ip: h.name for h in unreachable}
    for r in outcome:
        results.append(HostResult(by_ip.get(r.action.ip, r.action.host), status.get(r.status, "failed"), r.message))
    return results
