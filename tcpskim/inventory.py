"""The testbed inventory: load a TOML file, validate every value, give typed objects.

Validation is complete before anything touches a host: a bad inventory raises
``InventoryError`` whose message is one line naming the key path and the bad value,
e.g. ``inventory.toml: hosts.sensor.ip: '10.0.0.300' is not an IPv4 address``.
Values validated here are later used in remote commands and compiler flags, so the
checks are strict (interface names, paths and branch names use conservative charsets).
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from roles import delivery, vocab

ROLES = ("sensor", "hardworker", "logger")
MODES = ("xdp", "tcp")
XDP_MODES = ("generic", "native", "auto")
ENV_VAR = "TCPSKIM_INVENTORY"
DEFAULT_PATH = Path(__file__).resolve().parent.parent / "inventory.toml"

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,14}$")  # host names become namespace/veth suffixes
_IFNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,14}$")  # IFNAMSIZ is 16 with the NUL
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_USER = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
_PATH = re.compile(r"^[A-Za-z0-9_./~+-]+$")  # no spaces or shell metacharacters
_BRANCH = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,99}$")


class InventoryError(ValueError):
    """A one-line, user-facing inventory problem."""


@dataclass(frozen=True)
class Host:
    name: str
    role: str
    ip: str  # data-plane IPv4
    interface: str
    ssh_host: str
    ssh_port: int
    ssh_user: str
    ssh_key: str | None
    checkout: str
    python: str
    mac: str | None = None
    cpus: tuple[int, ...] = ()

    @property
    def is_root(self) -> bool:
        return self.ssh_user == "root"


@dataclass(frozen=True)
class Lab:
    prefix: str
    bridge: str
    subnet: str
    control_ip: str
    state_dir: str
    dedicate_cpu: bool = True


@dataclass(frozen=True)
class Inventory:
    path: Path
    name: str
    hosts: tuple[Host, ...]
    tos: int
    port: int
    known_hosts: str
    connect_timeout: float
    command_timeout: float
    code_remote: str  # "" = the control checkout itself (lab: shared filesystem)
    code_branch: str  # "" = the control checkout's current branch
    experiment: dict = field(default_factory=dict)
    control: dict = field(default_factory=dict)
    lab: Lab | None = None

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise InventoryError(f"{self.path.name}: no host named {name!r} (hosts: {', '.join(self.names)})")

    @property
    def names(self) -> list[str]:
        return [h.name for h in self.hosts]

    def by_role(self, role: str) -> list[Host]:
        return [h for h in self.hosts if h.role == role]

    @property
    def hardworker(self) -> Host:
        return self.by_role("hardworker")[0]

    @property
    def logger(self) -> Host:
        return self.by_role("logger")[0]

    @property
    def sensors(self) -> list[Host]:
        return self.by_role("sensor")

    def select(self, names: str | None) -> list[Host]:
        """Hosts named in a comma list (``None``/empty = all), in inventory order."""
        if not names:
            return list(self.hosts)
        wanted = [n.strip() for n in names.split(",") if n.strip()]
        for n in wanted:
            self.host(n)
        return [h for h in self.hosts if h.name in wanted]


class _Checker:
    """Reads one table, remembering the key path for error messages."""

    def __init__(self, fname: str, table: dict, path: str, allowed: dict):
        self.fname, self.table, self.path = fname, table, path
        if not isinstance(table, dict):
            self.fail(path, table, "must be a table")
        for key in table:
            if key not in allowed:
                self.fail(self.key(key), table[key], f"unknown key (allowed: {', '.join(sorted(allowed))})")

    def key(self, k: str) -> str:
        return f"{self.path}.{k}" if self.path else k

    def fail(self, path: str, value, why: str):
        raise InventoryError(f"{self.fname}: {path}: {value!r} {why}" if value is not _MISSING
                             else f"{self.fname}: {path}: {why}")

    def get(self, k, kind, default=None, required=False):
        if k not in self.table:
            if required:
                self.fail(self.key(k), _MISSING, "is required")
            return default
        v = self.table[k]
        if kind is int and (isinstance(v, bool) or not isinstance(v, int)):
            self.fail(self.key(k), v, "must be an integer")
        if kind is float and (isinstance(v, bool) or not isinstance(v, (int, float))):
            self.fail(self.key(k), v, "must be a number")
        if kind is str and not isinstance(v, str):
            self.fail(self.key(k), v, "must be a string")
        if kind is bool and not isinstance(v, bool):
            self.fail(self.key(k), v, "must be true or false")
        if kind is list and not isinstance(v, list):
            self.fail(self.key(k), v, "must be a list")
        return v

    def match(self, k, regex, what, default=None, required=False):
        v = self.get(k, str, default, required)
        if v and not regex.match(v):
            self.fail(self.key(k), v, f"is not {what}")
        return v

    def ipv4(self, k, default=None, required=False):
        v = self.get(k, str, default, required)
        if v is None:
            return None
        try:
            ipaddress.IPv4Address(v)
        except ValueError:
            self.fail(self.key(k), v, "is not an IPv4 address")
        return v

    def int_range(self, k, lo, hi, default=None, required=False):
        v = self.get(k, int, default, required)
        if v is not None and not lo <= v <= hi:
            self.fail(self.key(k), v, f"is out of range {lo}..{hi}")
        return v

    def number(self, k, lo, hi, default=None):
        v = self.get(k, float, default)
        if v is not None and not lo <= v <= hi:
            self.fail(self.key(k), v, f"is out of range {lo}..{hi}")
        return float(v) if v is not None else None


_MISSING = object()

_CONTROL_IFACE = re.compile(r"^[A-Za-z0-9 _.()-]{1,64}$")
_TOP = {"testbed", "lab", "ssh", "code", "marker", "experiment", "control", "hosts"}
_HOST = {"role", "ip", "interface", "mac", "ssh_host", "ssh_port", "ssh_user", "ssh_key",
         "checkout", "python", "cpus"}
_EXPERIMENT = {"rate", "size", "duration", "warmup", "tail", "modes", "repeat", "wakeup", "deliver",
               "xdp_mode", "ringbuf_bytes", "capture_bytes", "work_us", "idle"}


def load(path: str | os.PathLike | None = None) -> Inventory:
    """Load and validate an inventory (``path``, else $TCPSKIM_INVENTORY, else the lab default)."""
    p = Path(path or os.environ.get(ENV_VAR) or DEFAULT_PATH)
    try:
        text = p.read_text()
    except OSError as exc:
        raise InventoryError(f"{p}: cannot read inventory ({exc.strerror})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InventoryError(f"{p.name}: not valid TOML ({exc})") from None
    return parse(data, p)


def parse(data: dict, path: Path) -> Inventory:
    f = path.name
    top = _Checker(f, data, "", {k: 1 for k in _TOP})

    tb = _Checker(f, top.get("testbed", dict, {}), "testbed", {"name": 1, "lab": 1})
    name = tb.match("name", re.compile(r"^[\w.-]{1,40}$"), "a short name", "testbed")
    is_lab = tb.get("lab", bool, False)

    lab = None
    if is_lab:
        lb = _Checker(f, top.get("lab", dict, {}), "lab",
                      {k: 1 for k in ("prefix", "bridge", "subnet", "control_ip", "state_dir", "dedicate_cpu")})
        prefix = lb.match("prefix", re.compile(r"^[a-z][a-z0-9]{0,5}$"), "1-6 lowercase letters/digits", "tsk")
        bridge = lb.match("bridge", _IFNAME, "an interface name", f"{prefix}-br0")
        subnet = lb.get("subnet", str, "198.18.0.0/24")
        try:
            net = ipaddress.IPv4Network(subnet)
        except ValueError:
            lb.fail("lab.subnet", subnet, "is not an IPv4 network (like 198.18.0.0/24)")
        control_ip = lb.ipv4("control_ip", str(next(net.hosts())))
        if ipaddress.IPv4Address(control_ip) not in net:
            lb.fail("lab.control_ip", control_ip, f"is not inside lab.subnet {subnet}")
        state_dir = lb.match("state_dir", _PATH, "an absolute path without spaces", "/var/tmp/tcpskim-lab")
        if not state_dir.startswith("/"):
            lb.fail("lab.state_dir", state_dir, "must be an absolute path")
        lab = Lab(prefix, bridge, subnet, control_ip, state_dir, lb.get("dedicate_cpu", bool, True))
    elif "lab" in data:
        top.fail("lab", data["lab"], "is only allowed with testbed.lab = true")

    ssh = _Checker(f, top.get("ssh", dict, {}), "ssh",
                   {k: 1 for k in ("user", "port", "key", "known_hosts", "connect_timeout", "command_timeout")})
    d_user = ssh.match("user", _USER, "a user name", "root")
    d_port = ssh.int_range("port", 1, 65535, 22)
    d_key = ssh.match("key", _PATH, "a path without spaces")
    known = ssh.match("known_hosts", _PATH, "a path without spaces",
                      f"{lab.state_dir}/known_hosts" if lab else "~/.ssh/known_hosts")
    connect_timeout = ssh.number("connect_timeout", 0.5, 120, 5.0)
    command_timeout = ssh.number("command_timeout", 1, 3600, 300.0)

    code = _Checker(f, top.get("code", dict, {}), "code", {"remote": 1, "branch": 1})
    remote = code.get("remote", str, "")
    if remote and (not re.match(r"^[A-Za-z0-9@:/._~+-]+$", remote) or remote.startswith("-")):
        code.fail("code.remote", remote, "is not a git URL or path")
    if not remote and not is_lab:
        code.fail("code.remote", remote, "is required outside the lab (hosts pull from it)")
    branch = code.match("branch", _BRANCH, "a branch name", "")

    mk = _Checker(f, top.get("marker", dict, {}), "marker", {"tos": 1, "port": 1})
    tos = mk.int_range("tos", 4, 252, 0x68)
    if tos & 0x3:  # the two low TOS bits are ECN, which the network may rewrite
        mk.fail("marker.tos", tos, "must have its two low (ECN) bits zero")
    port = mk.int_range("port", 1024, 65535, 12345)

    experiment = _experiment(f, top.get("experiment", dict, {}))

    ctl = _Checker(f, top.get("control", dict, {}), "control",
                   {"gateway": 1, "interface": 1, "add_routes": 1})
    control = {
        "gateway": ctl.ipv4("gateway"),
        "interface": ctl.get("interface", str),
        "add_routes": ctl.get("add_routes", bool, False),
    }
    # Windows names interfaces like "Wi-Fi" or "Ethernet 2": spaces are fine, shell syntax is not.
    if control["interface"] is not None and not _CONTROL_IFACE.match(control["interface"]):
        ctl.fail("control.interface", control["interface"],
                 "may hold only letters, digits, spaces and - _ . ( ) (max 64)")
    if control["add_routes"] and not control["gateway"]:
        ctl.fail("control.gateway", _MISSING, "is required when control.add_routes is true")

    raw_hosts = top.get("hosts", dict, None)
    if not raw_hosts:
        top.fail("hosts", _MISSING, "is required: one [hosts.NAME] table per host")
    hosts = []
    for hname, hdata in raw_hosts.items():
        if not _NAME.match(hname):
            top.fail(f"hosts.{hname}", hname, "is not a host name (lowercase letters, digits, '-', max 15)")
        h = _Checker(f, hdata, f"hosts.{hname}", {k: 1 for k in _HOST})
        role = h.get("role", str, required=True)
        if role not in ROLES:
            h.fail(h.key("role"), role, f"is not a role ({', '.join(ROLES)})")
        ip = h.ipv4("ip", required=True)
        if lab and ipaddress.IPv4Address(ip) not in ipaddress.IPv4Network(lab.subnet):
            h.fail(h.key("ip"), ip, f"is not inside lab.subnet {lab.subnet}")
        mac = h.get("mac", str)
        if mac is not None:
            mac = mac.lower()
            if not _MAC.match(mac):
                h.fail(h.key("mac"), mac, "is not a MAC address (aa:bb:cc:dd:ee:ff)")
            if int(mac[:2], 16) & 1:
                h.fail(h.key("mac"), mac, "is a multicast MAC address")
        cpus = h.get("cpus", list, [])
        for c in cpus:
            if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < 1024:
                h.fail(h.key("cpus"), cpus, "must be a list of CPU numbers")
        checkout = h.match("checkout", _PATH, "a path without spaces", "tcpskim")
        if lab and not checkout.startswith("/"):
            checkout = f"{lab.state_dir}/hosts/{hname}/tcpskim"
        ssh_host = h.get("ssh_host", str, ip)
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$", ssh_host):
            h.fail(h.key("ssh_host"), ssh_host, "is not a host name or address")
        hosts.append(Host(
            name=hname, role=role, ip=ip,
            interface=h.match("interface", _IFNAME, "an interface name", required=True),
            ssh_host=ssh_host,
            ssh_port=h.int_range("ssh_port", 1, 65535, d_port),
            ssh_user=h.match("ssh_user", _USER, "a user name", d_user),
            ssh_key=h.match("ssh_key", _PATH, "a path without spaces", d_key or (f"{lab.state_dir}/id_ed25519" if lab else None)),
            checkout=checkout,
            python=h.match("python", _PATH, "a path without spaces", "/usr/bin/python3"),
            mac=mac, cpus=tuple(cpus),
        ))

    first = {}
    for x in hosts:
        if x.role != "sensor" and x.role in first:
            raise InventoryError(f"{f}: hosts.{x.name}.role: {x.role!r} is taken by hosts.{first[x.role]} "
                                 f"(more than one host has role {x.role!r})")
        first.setdefault(x.role, x.name)
    for role in ROLES:
        if role not in first:
            top.fail("hosts", _MISSING, f"no host has role {role!r} (need one sensor or more, one hardworker, one logger)")
    _unique(f, hosts, "ip", "data-plane address")
    _unique(f, [x for x in hosts if x.mac], "mac", "MAC address")
    seen = {}
    for x in hosts:
        k = (x.ssh_host, x.ssh_port)
        if k in seen and not lab:
            raise InventoryError(f"{f}: hosts.{x.name}.ssh_host: {x.ssh_host!r} port {x.ssh_port} "
                                 f"is also used by hosts.{seen[k]}")
        seen[k] = x.name
    if lab:
        ips = {x.ip for x in hosts}
        if lab.control_ip in ips:
            top.fail("lab.control_ip", lab.control_ip, "is also a host's ip")

    return Inventory(path=path, name=name, hosts=tuple(hosts), tos=tos, port=port,
                     known_hosts=known, connect_timeout=connect_timeout,
                     command_timeout=command_timeout, code_remote=remote, code_branch=branch,
                     experiment=experiment, control=control, lab=lab)


def _unique(f, hosts, attr, what):
    seen = {}
    for x in hosts:
        v = getattr(x, attr)
        if v in seen:
            raise InventoryError(f"{f}: hosts.{x.name}.{attr}: {v!r} is the same {what} as hosts.{seen[v]}")
        seen[v] = x.name


def _experiment(f, table) -> dict:
    e = _Checker(f, table, "experiment", {k: 1 for k in _EXPERIMENT})
    modes = e.get("modes", list, list(MODES))
    if not modes or any(m not in MODES for m in modes) or len(set(modes)) != len(modes):
        e.fail("experiment.modes", modes, f"must be a non-empty list of distinct modes from {MODES}")
    wakeup = e.get("wakeup", str, "per-record")
    try:
        parse_wakeup(wakeup)
    except InventoryError:
        e.fail("experiment.wakeup", wakeup, "is not 'per-record' or 'batch:<N>ms' with N in 1..10000")
    deliver = e.get("deliver", str, "all")
    try:
        deliver = str(delivery.parse(deliver))
    except delivery.DeliverError as exc:
        e.fail("experiment.deliver", deliver, str(exc)[len(repr(deliver)):].lstrip(": "))
    xdp_mode = e.get("xdp_mode", str, "generic")
    if xdp_mode not in XDP_MODES:
        e.fail("experiment.xdp_mode", xdp_mode, f"is not one of {', '.join(XDP_MODES)}")
    ring = e.int_range("ringbuf_bytes", 4096, 1 << 30, 1 << 20)
    if ring & (ring - 1):
        e.fail("experiment.ringbuf_bytes", ring, "must be a power of two")
    return {
        "rate": e.number("rate", 0.1, 100_000, 50.0),
        "size": e.int_range("size", 0, 65_000, 1024),
        "duration": e.number("duration", 0.5, 86_400, 10.0),
        "warmup": e.number("warmup", 0, 3600, 2.0),
        "tail": e.number("tail", 0, 60, 1.0),
        "modes": modes,
        "repeat": e.int_range("repeat", 1, 1000, 3),
        "wakeup": wakeup,
        "deliver": deliver,
        "xdp_mode": xdp_mode,
        "ringbuf_bytes": ring,
        "capture_bytes": e.int_range("capture_bytes", 1448, 9000, 1448),
        "work_us": e.number("work_us", 0, 1_000_000, 0.0),
        "idle": e.get("idle", bool, True),
    }


def parse_wakeup(text: str) -> dict:
    """The wake-up policy (roles.vocab.wakeup: the host half applies the same rule)."""
    try:
        return vocab.wakeup(text)
    except vocab.Invalid as exc:
        raise InventoryError(f"wakeup: {text!r} {exc}") from None
