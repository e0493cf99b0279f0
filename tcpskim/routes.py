"""Routes from the control machine to the testbed hosts (Windows, Linux, macOS).

The original author's fix for "Windows shows sensor unreachable" was a persistent
host route pinned to the testbed-facing interface::

    route -p add <ip> MASK 255.255.255.255 <gateway> IF <index>

This module does that reproducibly, driven by the inventory's ``[control]`` table
(``gateway``, ``interface``, ``add_routes``):

* ``parse_route_print`` reads Windows ``route print`` (English locale, Windows 7-11):
  interface list, IPv4 active routes and IPv4 persistent routes; IPv6 is ignored.
* ``find_interface`` turns ``control.interface`` (index, description substring or
  unset) into an interface index.
* ``plan_windows_routes`` / ``plan_posix_routes`` compare with what exists and build
  argv tuples; every value is validated first, commands are never built from raw text.
* ``apply_windows_routes`` / ``apply_posix_routes`` run the plan through an Invoke
  context (``ctx.run(cmd, warn=True, hide=True)``), recognise "needs elevation/root"
  and re-read the table to verify.

Only the standard library and (duck-typed) Invoke contexts are used, so this imports
on Windows without pyroute2/bcc.

Decisions worth knowing:

* A persistent route for a host with a *different* gateway is replaced by
  ``route delete <ip> MASK 255.255.255.255 <old-gw>`` then ``route -p add ...``.
  ``route change`` is not used: ``-p`` is documented as ignored for everything but
  ``add``, and the persistent registry entry is keyed by gateway, so delete+add is
  the unambiguous way to get exactly one persistent route.
* "ok" means a persistent /32 with the same gateway exists; ``route print`` does not
  show the interface of persistent routes, so the IF of an existing route is not
  checked.
* ``route print`` never maps an IPv4 address to an interface index. With
  ``control.interface`` unset, the index is found through
  ``netsh interface ipv4 show ipaddresses`` (see ``read_route_table``); if that is not
  available the user is asked to set ``control.interface``.
* ``route.exe`` often exits 0 on failure, so its output text is checked as well.
* Windows ``ping`` exits 0 on "Destination host unreachable" replies, so
  ``reachable`` also requires a ``TTL=`` line there.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field, replace
from typing import Iterable

HOST_MASK = "255.255.255.255"
ON_LINK = "On-link"
ELEVATION_EXIT = 740  # ERROR_ELEVATION_REQUIRED

ELEVATION_HINT = ("changing routes needs administrator rights: re-run tcpskim from an elevated "
                  "prompt (right-click Terminal/Command Prompt > \"Run as administrator\")")
ROOT_HINT = "changing routes needs root: re-run with sudo (or pass sudo=True)"


class RouteError(ValueError):
    """A one-line, user-facing routing problem."""


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Interface:
    index: int
    mac: str | None  # "00:15:5d:01:02:03"; None for the loopback; 8 bytes for tunnels
    description: str
    addresses: tuple[str, ...] = ()  # IPv4 addresses, only known from netsh

    def __str__(self) -> str:
        return f"{self.index} ({self.description})"


@dataclass(frozen=True)
class ActiveRoute:
    destination: str
    netmask: str
    gateway: str  # an IPv4 address or "On-link"
    interface: str  # the interface's IPv4 address (route print shows no index here)
    metric: int

    @property
    def on_link(self) -> bool:
        return self.gateway == ON_LINK

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"{self.destination}/{self.netmask}", strict=False)


@dataclass(frozen=True)
class PersistentRoute:
    destination: str
    netmask: str
    gateway: str
    metric: str  # "1", "Default", ...


@dataclass
class RouteTable:
    interfaces: list[Interface] = field(default_factory=list)
    active: list[ActiveRoute] = field(default_factory=list)
    persistent: list[PersistentRoute] = field(default_factory=list)

    def interface(self, index: int) -> Interface | None:
        return next((i for i in self.interfaces if i.index == index), None)

    def persistent_for(self, ip: str, netmask: str = HOST_MASK) -> list[PersistentRoute]:
        return [r for r in self.persistent if r.destination == ip and r.netmask == netmask]


# --------------------------------------------------------------------------- parsing

_IP = r"\d{1,3}(?:\.\d{1,3}){3}"
# " 12...00 15 5d 01 02 03 ......Hyper-V Virtual Ethernet Adapter"
# "  1...........................Software Loopback Interface 1"
# " 13...00 00 00 00 00 00 00 e0 Teredo Tunneling Pseudo-Interface"   (8-byte tunnel id)
_IFACE_ROW = re.compile(r"^\s*(\d+)\s*\.{3}((?:[0-9A-Fa-f]{2}[ -]){5,7}[0-9A-Fa-f]{2})?[\s.]*(.*?)\s*$")
_ACTIVE_ROW = re.compile(rf"^\s*({_IP})\s+({_IP})\s+({_IP}|On-link)\s+({_IP})\s+(\d+)\s*$", re.I)
_PERSIST_ROW = re.compile(rf"^\s*({_IP})\s+({_IP})\s+({_IP}|On-link)\s+(\d+|Default)\s*$", re.I)


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def parse_route_print(text: str) -> RouteTable:
    """Parse Windows ``route print`` output (English locale) into a ``RouteTable``.

    Rows are recognised by shape (5 columns = active route, 4 = persistent route),
    so missing headers, CRLF and blank lines do not matter; everything after the
    "IPv6 Route Table" header (until another IPv4 header) is ignored.
    """
    table = RouteTable()
    in_v6 = False
    for raw in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        line = raw.rstrip()
        head = line.strip().lower()
        if head.startswith("ipv6 route table"):
            in_v6 = True
            continue
        if head.startswith("ipv4 route table") or head.startswith("interface list"):
            in_v6 = False
            continue
        if in_v6 or not head or head.startswith("="):
            continue
        m = _ACTIVE_ROW.match(line)
        if m:
            dest, mask, gw, ifip, metric = m.groups()
            if all(_is_ipv4(x) for x in (dest, mask, ifip)) and (gw.lower() == "on-link" or _is_ipv4(gw)):
                gw = ON_LINK if gw.lower() == "on-link" else gw
                table.active.append(ActiveRoute(dest, mask, gw, ifip, int(metric)))
            continue
        m = _PERSIST_ROW.match(line)
        if m:
            dest, mask, gw, metric = m.groups()
            if _is_ipv4(dest) and _is_ipv4(mask) and (gw.lower() == "on-link" or _is_ipv4(gw)):
                gw = ON_LINK if gw.lower() == "on-link" else gw
                table.persistent.append(PersistentRoute(dest, mask, gw, metric))
            continue
        m = _IFACE_ROW.match(line)
        if m and m.group(3):
            mac = m.group(2)
            mac = ":".join(re.split(r"[ -]", mac.lower())) if mac else None
            table.interfaces.append(Interface(int(m.group(1)), mac, m.group(3)))
    return table


_NETSH_IFACE = re.compile(r"^\s*Interface\s+(\d+)\s*:", re.I)
_NETSH_ADDR = re.compile(rf"\s({_IP})\s*$")


def parse_netsh_ipaddresses(text: str) -> dict[int, tuple[str, ...]]:
    """Index -> IPv4 addresses from ``netsh interface ipv4 show ipaddresses``.

    The output is blocks headed ``Interface 12: vEthernet (External)`` whose address
    rows end in the address; lenient on purpose (best effort, English locale).
    """
    result: dict[int, list[str]] = {}
    current = None
    for line in text.replace("\r\n", "\n").split("\n"):
        m = _NETSH_IFACE.match(line)
        if m:
            current = int(m.group(1))
            result.setdefault(current, [])
            continue
        m = _NETSH_ADDR.search(" " + line)
        if current is not None and m and _is_ipv4(m.group(1)):
            result[current].append(m.group(1))
    return {k: tuple(v) for k, v in result.items()}


def with_addresses(table: RouteTable, addresses: dict[int, tuple[str, ...]]) -> RouteTable:
    """A copy of ``table`` whose interfaces carry the IPv4 addresses from netsh."""
    return RouteTable([replace(i, addresses=tuple(addresses.get(i.index, ()))) for i in table.interfaces],
                      list(table.active), list(table.persistent))


def read_route_table(ctx) -> RouteTable:
    """Run ``route print`` (and best-effort netsh for addresses) on this Windows machine."""
    res = ctx.run("route print", warn=True, hide=True)
    if res is None or res.exited != 0 or not res.stdout.strip():
        raise RouteError(f"route print failed (exit {getattr(res, 'exited', '?')}): "
                         f"{_first_line(_output(res)) or 'no output'}")
    table = parse_route_print(res.stdout)
    netsh = ctx.run("netsh interface ipv4 show ipaddresses", warn=True, hide=True)
    if netsh is not None and netsh.exited == 0:
        table = with_addresses(table, parse_netsh_ipaddresses(netsh.stdout))
    return table


# --------------------------------------------------------------------------- choosing the interface


def _iface_list(table: RouteTable) -> str:
    return ", ".join(str(i) for i in table.interfaces) or "none found in route print"


def _iface_error(table: RouteTable, value, why: str) -> RouteError:
    return RouteError(f"control.interface: {value!r} {why} (interfaces: {_iface_list(table)})")


def find_interface(table: RouteTable, wanted: str | int | None, gateway: str | None) -> Interface:
    """Resolve ``control.interface`` to an ``Interface``.

    ``wanted``: an index ("12" or 12), a case-insensitive description substring
    ("Wi-Fi", "Intel") that must match exactly one interface, or None. With None the
    interface whose on-link subnet contains ``gateway`` is chosen (most specific
    subnet wins); its index comes from the netsh addresses, since ``route print``
    shows IPv4 addresses but no indexes in the route table.
    """
    if isinstance(wanted, bool):
        raise _iface_error(table, wanted, "must be an interface index or description")
    if isinstance(wanted, int) or (isinstance(wanted, str) and wanted.strip().isdigit()):
        index = int(wanted)
        found = table.interface(index)
        if found is None:
            raise _iface_error(table, wanted, "is not an interface index in route print")
        return found
    if isinstance(wanted, str) and wanted.strip():
        needle = wanted.strip().lower()
        hits = [i for i in table.interfaces if needle in i.description.lower()]
        if len(hits) == 1:
            return hits[0]
        if not hits:
            raise _iface_error(table, wanted, "matches no interface description")
        raise _iface_error(table, wanted, f"matches {len(hits)} interfaces "
                                          f"({', '.join(str(i.index) for i in hits)}); use the index")
    if wanted not in (None, ""):
        raise _iface_error(table, wanted, "must be an interface index or description")

    if not gateway:
        raise _iface_error(table, None, "is unset and so is control.gateway; set control.interface")
    gw = ipaddress.IPv4Address(_ipv4(gateway, "control.gateway"))
    # On-link subnet routes (not host, broadcast, multicast or default routes) containing the gateway.
    subnets = [r for r in table.active
               if r.on_link and r.netmask not in (HOST_MASK, "0.0.0.0")
               and not r.network.is_multicast and not ipaddress.IPv4Address(r.interface).is_loopback
               and gw in r.network]
    if not subnets:
        raise _iface_error(table, None, f"is unset and no interface reaches control.gateway {gateway} "
                                        "on-link; set control.interface")
    best = max(r.network.prefixlen for r in subnets)
    ips = sorted({r.interface for r in subnets if r.network.prefixlen == best})
    if len(ips) > 1:
        raise _iface_error(table, None, f"is unset and control.gateway {gateway} is on-link via "
                                        f"several addresses ({', '.join(ips)}); set control.interface")
    owners = [i for i in table.interfaces if ips[0] in i.addresses]
    if len(owners) != 1:
        raise _iface_error(table, None, f"is unset: control.gateway {gateway} is reached from address "
                                        f"{ips[0]} but its interface index is unknown; set control.interface")
    return owners[0]


# --------------------------------------------------------------------------- validation


def _ipv4(value, what: str) -> str:
    """Canonical IPv4 unicast address text, or RouteError naming ``what``."""
    if not isinstance(value, str):
        raise RouteError(f"{what}: {value!r} is not an IPv4 address")
    try:
        addr = ipaddress.IPv4Address(value)
    except ValueError:
        raise RouteError(f"{what}: {value!r} is not an IPv4 address") from None
    if str(addr) != value:
        raise RouteError(f"{what}: {value!r} is not an IPv4 address in dotted-decimal form")
    if addr.is_unspecified or addr.is_multicast or addr.is_loopback or value == "255.255.255.255":
        raise RouteError(f"{what}: {value!r} is not a unicast IPv4 address")
    return value


_IFNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,14}")
_SAFE_TOKEN = re.compile(r"[A-Za-z0-9./:_-]+")


def _line(argv: tuple[str, ...]) -> str:
    """The command line for an argv built here; every token is checked (no shell metacharacters)."""
    for tok in argv:
        if not _SAFE_TOKEN.fullmatch(tok):
            raise RouteError(f"refusing to run a command with token {tok!r}")
    return " ".join(argv)


def _hosts(hosts) -> list[tuple[str, str]]:
    """(name, validated ip) for Host-like objects (``.name``, ``.ip``) or plain IP strings."""
    out = []
    for h in hosts:
        name, ip = (h, h) if isinstance(h, str) else (getattr(h, "name", "?"), getattr(h, "ip", None))
        out.append((name, _ipv4(ip, f"hosts.{name}.ip" if name != ip else "host ip")))
    return out


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class Action:
    kind: str  # "ok" | "add" | "change"
    host: str
    ip: str
    gateway: str
    interface: int | str | None  # Windows index, Linux device, None on macOS
    commands: tuple[tuple[str, ...], ...] = ()
    old_gateways: tuple[str, ...] = ()
    platform: str = "windows"

    @property
    def argv(self) -> tuple[str, ...]:
        """The command that installs the route (the last one), or () for "ok"."""
        return self.commands[-1] if self.commands else ()

    @property
    def lines(self) -> list[str]:
        return [_line(c) for c in self.commands]


def windows_add_argv(ip: str, gateway: str, index: int) -> tuple[str, ...]:
    return ("route", "-p", "add", _ipv4(ip, "host ip"), "MASK", HOST_MASK,
            _ipv4(gateway, "control.gateway"), "IF", str(_index(index)))


def _index(index) -> int:
    if isinstance(index, Interface):
        index = index.index
    if isinstance(index, bool) or not isinstance(index, int) or not 0 < index < 2**31:
        raise RouteError(f"control.interface: {index!r} is not an interface index")
    return index


def plan_windows_routes(table: RouteTable, hosts: Iterable, gateway: str,
                        interface: Interface | int) -> list[Action]:
    """One Action per host: "ok" (persistent /32 via ``gateway`` exists), "change"
    (persistent /32 via another gateway: delete it, then add) or "add".
    All inputs are validated before any command is built."""
    gw = _ipv4(gateway, "control.gateway")
    index = _index(interface)
    pairs = _hosts(hosts)
    for name, ip in pairs:
        if ip == gw:
            raise RouteError(f"hosts.{name}.ip: {ip!r} is control.gateway itself")
    actions = []
    for name, ip in pairs:
        existing = table.persistent_for(ip)
        same = any(r.gateway == gw for r in existing)
        others = tuple(dict.fromkeys(r.gateway for r in existing if r.gateway != gw))
        add = windows_add_argv(ip, gw, index)
        if same and not others:
            actions.append(Action("ok", name, ip, gw, index))
        elif others:
            # Other gateways are invalid input for route.exe only if unparsed; they came from
            # route print and are re-validated (On-link routes are deleted without a gateway).
            dels = tuple(("route", "delete", ip, "MASK", HOST_MASK)
                         + (() if g == ON_LINK else (_ipv4(g, "persistent route gateway"),)) for g in others)
            actions.append(Action("change", name, ip, gw, index, dels + (() if same else (add,)), others))
        else:
            actions.append(Action("add", name, ip, gw, index, (add,)))
    return actions


def _os_kind(os_name: str) -> str:
    """'windows' | 'linux' | 'macos' from platform.system() or sys.platform spellings."""
    n = (os_name or "").strip().lower()
    if n.startswith("win") or n == "nt":
        return "windows"
    if n.startswith("linux"):
        return "linux"
    if n in ("darwin", "macos", "mac", "osx"):
        return "macos"
    raise RouteError(f"unsupported control machine OS {os_name!r} (windows, linux, macos)")


def plan_posix_routes(hosts: Iterable, gateway: str, iface: str | None, os_name: str) -> list[Action]:
    """Host routes for a Linux/macOS control machine (used when control.add_routes is true).

    Linux: ``ip route replace <ip>/32 via <gw> dev <iface>`` — idempotent, so every host
    gets an "add" action; ``apply_posix_routes`` first asks ``linux_route_exists`` and
    skips hosts already right. macOS: ``route -n delete -host <ip>`` (a missing route is
    tolerated) then ``route -n add -host <ip> <gw>``; ``iface`` is not used there.
    """
    kind = _os_kind(os_name)
    if kind == "windows":
        raise RouteError("a Windows control machine uses plan_windows_routes")
    gw = _ipv4(gateway, "control.gateway")
    if kind == "linux" and (not isinstance(iface, str) or not _IFNAME.fullmatch(iface)):
        raise RouteError(f"control.interface: {iface!r} is not a Linux interface name (like eth0)")
    pairs = _hosts(hosts)
    actions = []
    for name, ip in pairs:
        if kind == "linux":
            cmds = (("ip", "route", "replace", f"{ip}/32", "via", gw, "dev", iface),)
            actions.append(Action("add", name, ip, gw, iface, cmds, platform="linux"))
        else:
            cmds = (("route", "-n", "delete", "-host", ip), ("route", "-n", "add", "-host", ip, gw))
            actions.append(Action("add", name, ip, gw, None, cmds, platform="macos"))
    return actions


# --------------------------------------------------------------------------- applying


@dataclass(frozen=True)
class RouteResult:
    action: Action
    ok: bool
    status: str  # ok | planned | added | changed | failed | elevation | skipped | unverified
    message: str

    def __str__(self) -> str:
        return f"{self.action.host} {self.action.ip}: {self.status}: {self.message}"


def _output(res) -> str:
    if res is None:
        return ""
    return f"{getattr(res, 'stdout', '') or ''}\n{getattr(res, 'stderr', '') or ''}"


def _first_line(text: str) -> str:
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), "")


_WIN_FAIL = re.compile(r"fail|bad |invalid|error|not found|denied|requires elevation", re.I)
_WIN_TOLERATED = re.compile(r"element not found", re.I)  # deleting a route that is already gone
_POSIX_DENIED = re.compile(r"operation not permitted|must be root|permission denied", re.I)
_POSIX_TOLERATED = re.compile(r"not in table", re.I)  # macOS delete of a missing route


def _needs_elevation(res) -> bool:
    return getattr(res, "exited", 0) == ELEVATION_EXIT or "requires elevation" in _output(res).lower()


def apply_windows_routes(ctx, actions: list[Action], dry_run: bool = False,
                         verify: bool = True) -> list[RouteResult]:
    """Run the planned ``route`` commands; one RouteResult per action, in order.

    Stops running commands at the first "requires elevation" answer (the remaining
    actions are "skipped"). With ``verify``, ``route print`` is read back and every
    added/changed route must show up as persistent with the planned gateway.
    """
    results: list[RouteResult] = []
    elevated_failed = False
    for a in actions:
        lines = a.lines  # validates every token before anything runs
        if a.kind == "ok":
            results.append(RouteResult(a, True, "ok", f"persistent route via {a.gateway} already present"))
            continue
        if dry_run:
            results.append(RouteResult(a, True, "planned", "would run: " + " && ".join(lines)))
            continue
        if elevated_failed:
            results.append(RouteResult(a, False, "skipped", "not attempted: " + ELEVATION_HINT))
            continue
        failure = None
        for line in lines:
            res = ctx.run(line, warn=True, hide=True)
            text = _output(res)
            if _needs_elevation(res):
                elevated_failed = True
                failure = RouteResult(a, False, "elevation", f"`{line}`: {ELEVATION_HINT}")
                break
            if line.startswith("route delete") and _WIN_TOLERATED.search(text):
                continue
            if res is None or res.exited != 0 or _WIN_FAIL.search(text):
                failure = RouteResult(a, False, "failed", f"`{line}` failed (exit {getattr(res, 'exited', '?')}): "
                                                          f"{_first_line(text) or 'no output'}")
                break
        results.append(failure or RouteResult(a, True, "added" if a.kind == "add" else "changed",
                                              " && ".join(lines)))

    if verify and not dry_run and any(r.status in ("added", "changed") for r in results):
        results = _verify_windows(ctx, results)
    return results


def _verify_windows(ctx, results: list[RouteResult]) -> list[RouteResult]:
    res = ctx.run("route print", warn=True, hide=True)
    if res is None or res.exited != 0:
        msg = f"could not read back routes: route print failed: {_first_line(_output(res)) or 'no output'}"
        return [replace(r, ok=False, status="unverified", message=msg) if r.status in ("added", "changed") else r
                for r in results]
    table = parse_route_print(res.stdout)
    out = []
    for r in results:
        if r.status in ("added", "changed"):
            gws = [p.gateway for p in table.persistent_for(r.action.ip)]
            if gws != [r.action.gateway]:
                shown = ", ".join(gws) or "none"
                r = replace(r, ok=False, status="unverified",
                            message=f"route print shows persistent gateway(s) {shown} for {r.action.ip}/32, "
                                    f"expected {r.action.gateway} after `{' && '.join(r.action.lines)}`")
        out.append(r)
    return out


def linux_route_exists(ctx, ip: str, gateway: str, iface: str) -> bool:
    """True if ``ip -4 route show exact <ip>/32`` lists a route via ``gateway`` dev ``iface``.

    ``ip route get`` is not used: it would also "succeed" through a default route
    that happens to use the same gateway.
    """
    ip, gateway = _ipv4(ip, "host ip"), _ipv4(gateway, "control.gateway")
    res = ctx.run(_line(("ip", "-4", "route", "show", "exact", f"{ip}/32")), warn=True, hide=True)
    if res is None or res.exited != 0:
        return False
    for row in res.stdout.splitlines():
        tok = row.split()
        pairs = dict(zip(tok[1::2], tok[2::2])) if tok and tok[0] in (ip, f"{ip}/32") else {}
        if pairs.get("via") == gateway and pairs.get("dev") == iface:
            return True
    return False


def apply_posix_routes(ctx, actions: list[Action], dry_run: bool = False,
                       sudo: bool = False) -> list[RouteResult]:
    """Run ``plan_posix_routes`` actions (``ctx.sudo`` when ``sudo``); Linux hosts whose
    route already exists are reported "ok" without running anything."""
    results = []
    denied = False
    run = ctx.sudo if sudo else ctx.run
    for a in actions:
        lines = a.lines
        if a.platform == "linux" and not dry_run and linux_route_exists(ctx, a.ip, a.gateway, a.interface):
            results.append(RouteResult(a, True, "ok", f"route via {a.gateway} dev {a.interface} already present"))
            continue
        if dry_run:
            results.append(RouteResult(a, True, "planned", "would run: " + " && ".join(lines)))
            continue
        if denied:
            results.append(RouteResult(a, False, "skipped", "not attempted: " + ROOT_HINT))
            continue
        failure = None
        for line in lines:
            res = run(line, warn=True, hide=True)
            text = _output(res)
            if _POSIX_DENIED.search(text):
                denied = True
                failure = RouteResult(a, False, "elevation", f"`{line}`: {ROOT_HINT}")
                break
            if " delete " in line and _POSIX_TOLERATED.search(text):
                continue
            if res is None or res.exited != 0:
                failure = RouteResult(a, False, "failed", f"`{line}` failed (exit {getattr(res, 'exited', '?')}): "
                                                          f"{_first_line(text) or 'no output'}")
                break
        results.append(failure or RouteResult(a, True, "added", " && ".join(lines)))
    return results


def ping_argv(ip: str, os_name: str) -> tuple[str, ...]:
    ip = _ipv4(ip, "host ip")
    kind = _os_kind(os_name)
    if kind == "windows":
        return ("ping", "-n", "1", "-w", "1000", ip)
    if kind == "linux":
        return ("ping", "-c", "1", "-W", "1", ip)
    return ("ping", "-c", "1", "-t", "1", ip)  # macOS: -t is the overall timeout in seconds


def reachable(ctx, ip: str, os_name: str) -> bool:
    """One ping from the control machine. On Windows a reply must contain ``TTL=``:
    "Destination host unreachable" from the gateway still exits 0 there."""
    argv = ping_argv(ip, os_name)
    res = ctx.run(_line(argv), warn=True, hide=True)
    if res is None or res.exited != 0:
        return False
    if argv[1] == "-n":
        return "TTL=" in (res.stdout or "").upper()
    return True
