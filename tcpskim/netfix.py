"""``invoke fix-network``: pin neighbour (ARP) entries on hosts; routes on the control machine.

The original testbed lost neighbour entries on Wi-Fi (``arp -n`` showed ``incomplete``) and
the Windows control machine could not reach the sensor. Here every host's data-plane MAC is
read live over SSH (pyroute2 on the host), checked against the inventory, and every host gets
PERMANENT entries for all its peers; the result is read back. Runs are idempotent.

Each host needs ONE call (``hostctl netfix``) when every host's MAC is known before any SSH
(the inventory's ``mac``, or the MAC the lab gave it): the host checks that its own interface
is up and carries that MAC, then pins its peers. Only hosts whose MAC nobody knows are asked
first (``facts``), and only then does every pin wait for that answer.
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
        return HostResult(h.name, "ok", f"{h.interface} {mac}",
                          {"mac": mac, "ip": h.ip, "checkout": f.get("checkout"), "ncpu": f.get("ncpu")})

    return fleet.each(hosts, one)


def peers_of(inv: Inventory, host: Host) -> list[Host]:
    """Every other host: sensor<->hardworker, sensor<->logger, hardworker<->logger (and sensor<->sensor,
    harmless) all exchange traffic, directly or through the XDP bounce."""
    return [h for h in inv.hosts if h.name != host.name]


def known_macs(inv: Inventory) -> dict[str, tuple[str, str]]:
    """host -> (MAC, where it comes from), for the hosts whose MAC is known without asking them."""
    out = {}
    for h in inv.hosts:
        if h.mac:
            out[h.name] = (h.mac.lower(), f"inventory hosts.{h.name}.mac")
        elif inv.lab is not None:
            from .lab.names import host_mac

            out[h.name] = (host_mac(h).lower(), "the lab")
    return out


def plan_macs(fleet: Fleet, hosts: list[Host]) -> tuple[dict[str, tuple[str, str]], list[HostResult]]:
    """Every host's MAC: known ones as they are, the others discovered (their failures returned)."""
    macs = known_macs(fleet.inv)
    unknown = [h for h in fleet.inv.hosts if h.name not in macs]
    found = discover_macs(fleet, unknown) if unknown else []
    for r in found:
        if not r.failed:
            macs[r.host] = (r.data["mac"], "discovered")
    return macs, [r for r in found if r.failed and r.host in {h.name for h in hosts}]


def pin_neighbours(fleet: Fleet, hosts: list[Host], macs: dict[str, tuple[str, str]],
                   dry_run: bool) -> list[HostResult]:
    """One ``hostctl netfix`` per host: its own MAC checked, its peers pinned (``dry_run``: --check)."""
    inv = fleet.inv

    def one(h: Host) -> HostResult:
        peers = peers_of(inv, h)
        missing = [p.name for p in peers if p.name not in macs]
        if missing:
            raise HostError(f"MAC unknown for peer(s) {', '.join(missing)} (see above)")
        args = ["netfix", "--interface", h.interface]
        if h.name in macs and macs[h.name][1] != "discovered":
            args += ["--mac", macs[h.name][0], "--mac-source", macs[h.name][1]]
        for p in peers:
            args += ["--peer", f"{p.ip}={macs[p.name][0]}"]
        if dry_run:
            args.append("--check")
        ans = fleet.call(h, *args)
        by_ip = {p.ip: p.name for p in peers}
        changed = [f"{by_ip[ip]}({ip})" for ip in ans.data["changed"]]
        data = {"ip": h.ip, "mac": ans.data.get("mac", ""), "pinned": len(ans.data["ok"])
                + (0 if dry_run else len(changed))}
        if changed:
            return ans.result(h.name, f"{'would pin' if dry_run else 'pinned'} {', '.join(changed)}", data)
        return ans.result(h.name, ans.msg, data)

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
