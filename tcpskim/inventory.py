"""The testbed inventory: load a TOML file, validate every value, give typed objects.

Validation is complete before anything touches a host: a bad inventory raises
``InventoryError`` whose message is one line naming the key path and the bad value,
e.g. ``inventory.toml: hosts.sensor.ip: '10.0.0.300' is not an IPv4 address``.
Values validated here are later used in remote commands and compiler flags, so the
checks are strict; every rule a host also applies comes from ``roles.vocab`` (fullmatch
patterns, ASCII digits), so the control side never accepts what a host then refuses.

The file is read as bytes and decoded as UTF-8 (a byte-order mark, as Windows Notepad
writes, is accepted), never with the platform's default encoding. ``parse`` checks one TOML
table per function; ``check_paths`` checks the files the inventory names (SSH keys,
known_hosts) and is called by every task before its first SSH connection.
"""

from __future__ import annotations

import ipaddress
import math
import os
import posixpath
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from roles import delivery, vocab

ROLES = vocab.ROLES
MODES = vocab.MODES
XDP_MODES = vocab.XDP_MODES
ENV_VAR = "TCPSKIM_INVENTORY"
DEFAULT_PATH = Path(__file__).resolve().parent.parent / "inventory.toml"


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
    # host name -> the key path its ssh_key came from (hosts.NAME.ssh_key, ssh.key or the lab's)
    key_sources: dict = field(default_factory=dict, repr=False, compare=False)

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
        """Hosts named in a comma list (``None`` = all), in inventory order; a list that names
        no host (``""``, ``","``, ``" "``) is an error, never "all" or "none"."""
        if names is None:
            return list(self.hosts)
        wanted = [n.strip() for n in str(names).split(",") if n.strip()]
        if not wanted:
            raise InventoryError(f"--hosts: {names!r} names no host (hosts: {', '.join(self.names)})")
        for n in wanted:
            if n not in self.names:
                raise InventoryError(f"--hosts: {n!r} is not a host of {self.path.name} "
                                     f"(hosts: {', '.join(self.names)})")
        return [h for h in self.hosts if h.name in wanted]


_MISSING = object()
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _keyname(k) -> str:
    """A TOML key as written in a key path: bare when it can be, else quoted (one line)."""
    k = str(k)
    if _BARE_KEY.fullmatch(k):
        return k
    return '"' + k.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class _Checker:
    """Reads one table, remembering the key path for error messages.

    Every failure is ``InventoryError("<file>: <key path>: <value> <why>")``, one line."""

    def __init__(self, fname: str, table, path: str, allowed):
        self.fname, self.table, self.path = fname, table, path
        if not isinstance(table, dict):
            self.fail(path, table, _table_hint(path, table))
        for key in table:
            if key not in allowed:
                self.fail(self.key(key), table[key], f"unknown key (allowed: {', '.join(sorted(allowed))})")

    def key(self, k: str) -> str:
        return f"{self.path}.{_keyname(k)}" if self.path else _keyname(k)

    def fail(self, path: str, value, why: str):
        raise InventoryError(f"{self.fname}: {path}: {_show(value)} {why}" if value is not _MISSING
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
        if kind is dict and not isinstance(v, dict):
            self.fail(self.key(k), v, _table_hint(self.key(k), v))
        return v

    def table_of(self, k, allowed) -> "_Checker":
        """The sub-table ``k`` (an empty one when absent) as a checker of its own."""
        return _Checker(self.fname, self.get(k, dict, {}), self.key(k), allowed)

    def rule(self, k, validator, default=None, required=False, **kw):
        """``validator`` (a ``roles.vocab`` rule) applied to the value; its reason names the key."""
        if k not in self.table:
            if required:
                self.fail(self.key(k), _MISSING, "is required")
            return default
        try:
            return validator(self.table[k], **kw)
        except vocab.Invalid as exc:
            self.fail(self.key(k), self.table[k], str(exc))

    def limited(self, k, limit: str, default=None):
        """A number inside ``vocab.LIMITS[limit]`` (NaN and out-of-range refused)."""
        self.get(k, vocab.LIMITS[limit].kind)  # "must be an integer" / "must be a number"
        return self.rule(k, _limited, default, name=limit)

    def number(self, k, lo, hi, default=None):
        v = self.get(k, float, default)
        if v is not None and (math.isnan(v) or not lo <= v <= hi):
            self.fail(self.key(k), v, f"is out of range {lo:g}..{hi:g}")
        return float(v) if v is not None else None


def _table_hint(path: str, value) -> str:
    if isinstance(value, list) and value and all(isinstance(x, dict) for x in value):
        return (f"must be a table, not an array of tables: write [{path}.NAME] per entry, "
                f"not [[{path}]]" if path == "hosts" else f"must be a table ([{path}]), not [[{path}]]")
    return f"must be a table ([{path}])" if path else "must be a table"


def _limited(value, name):  # vocab.limited with the value first, as _Checker.rule calls it
    return vocab.limited(name, value)


_TOP = {"testbed", "lab", "ssh", "code", "marker", "experiment", "control", "hosts"}
_LAB = {"prefix", "bridge", "subnet", "control_ip", "state_dir", "dedicate_cpu"}
_SSH = {"user", "port", "key", "known_hosts", "connect_timeout", "command_timeout"}
_HOST = {"role", "ip", "interface", "mac", "ssh_host", "ssh_port", "ssh_user", "ssh_key",
         "checkout", "python", "cpus"}
_EXPERIMENT = {"rate", "size", "duration", "warmup", "tail", "modes", "repeat", "wakeup", "deliver",
               "xdp_mode", "ringbuf_bytes", "capture_bytes", "work_us", "idle", "guard", "trace_idle"}


def load(path: str | os.PathLike | None = None) -> Inventory:
    """Load and validate an inventory (``path``, else $TCPSKIM_INVENTORY, else the lab default).

    An explicit empty path is an error, never a silent fall-back to the default."""
    if path is not None and str(path).strip() == "":
        raise InventoryError("--inventory: '' names no file")
    if path is None and os.environ.get(ENV_VAR) == "":
        raise InventoryError(f"${ENV_VAR} is set but empty: unset it or name an inventory file")
    p = Path(path if path is not None else os.environ.get(ENV_VAR) or DEFAULT_PATH)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise InventoryError(f"{p}: cannot read inventory ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")  # a BOM (Windows Notepad) is not part of the TOML
    except UnicodeDecodeError as exc:
        raise InventoryError(f"{p.name}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                             f"save the file as UTF-8") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InventoryError(f"{p.name}: not valid TOML ({' '.join(str(exc).split())})") from None
    return parse(data, p)


def parse(data: dict, path: Path) -> Inventory:
    """Validate the parsed TOML one table at a time, then the rules across tables."""
    f = path.name
    top = _Checker(f, data, "", _TOP)
    name, is_lab = _testbed(top)
    lab = _lab(top) if is_lab else None
    if not is_lab and "lab" in data:
        top.fail("lab", data["lab"], "is only allowed with testbed.lab = true")
    ssh = _ssh(top, lab)
    remote, branch = _code(top, is_lab)
    tos, port = _marker(top)
    experiment = _experiment(top.table_of("experiment", _EXPERIMENT))
    control = _control(top.table_of("control", {"gateway", "interface", "add_routes"}))
    hosts, sources = _hosts(top, lab, ssh)
    _across(f, top, hosts, lab)
    return Inventory(path=path, name=name, hosts=tuple(hosts), tos=tos, port=port,
                     known_hosts=ssh["known_hosts"], connect_timeout=ssh["connect_timeout"],
                     command_timeout=ssh["command_timeout"], code_remote=remote, code_branch=branch,
                     experiment=experiment, control=control, lab=lab, key_sources=sources)


def _testbed(top: _Checker) -> tuple[str, bool]:
    tb = top.table_of("testbed", {"name", "lab"})
    return tb.rule("name", vocab.token, "testbed", max_len=40), tb.get("lab", bool, False)


def _lab(top: _Checker) -> Lab:
    lb = top.table_of("lab", _LAB)
    prefix = lb.rule("prefix", vocab.matching, "tsk", pattern=r"[a-z][a-z0-9]{0,5}",
                     why="is not 1-6 lowercase letters/digits, starting with a letter")
    bridge = lb.rule("bridge", vocab.interface, f"{prefix}-br0")
    net = lb.rule("subnet", vocab.ipv4_network, ipaddress.IPv4Network("198.18.0.0/24"))
    control_ip = lb.rule("control_ip", vocab.ipv4_host, str(next(net.hosts())))
    _in_subnet(lb, "control_ip", control_ip, net)
    state_dir = lb.rule("state_dir", vocab.path, "/var/tmp/tcpskim-lab")
    if not state_dir.startswith("/") or posixpath.normpath(state_dir) in ("/", "//"):
        lb.fail("lab.state_dir", state_dir, "must be an absolute path below /")
    return Lab(prefix, bridge, str(net), control_ip, state_dir, lb.get("dedicate_cpu", bool, True))


def _in_subnet(t: _Checker, k: str, ip: str, net: ipaddress.IPv4Network):
    addr = ipaddress.IPv4Address(ip)
    if addr not in net:
        t.fail(t.key(k), ip, f"is not inside lab.subnet {net}")
    if addr in (net.network_address, net.broadcast_address):
        t.fail(t.key(k), ip, f"is the network or broadcast address of lab.subnet {net}")


def _ssh(top: _Checker, lab: Lab | None) -> dict:
    ssh = top.table_of("ssh", _SSH)
    return {
        "user": ssh.rule("user", vocab.user, "root"),
        "port": ssh.limited("port", "ssh_port", 22),
        "key": ssh.rule("key", vocab.path),
        "known_hosts": ssh.rule("known_hosts", vocab.path,
                                f"{lab.state_dir}/known_hosts" if lab else "~/.ssh/known_hosts"),
        "connect_timeout": ssh.number("connect_timeout", 0.5, 120, 5.0),
        "command_timeout": ssh.number("command_timeout", 1, 3600, 300.0),
    }


def _code(top: _Checker, is_lab: bool) -> tuple[str, str]:
    code = top.table_of("code", {"remote", "branch"})
    remote = code.get("remote", str, "")
    if remote:
        remote = code.rule("remote", vocab.git_remote)
    elif not is_lab:
        code.fail("code.remote", remote, "is required outside the lab (hosts pull from it)")
    branch = code.get("branch", str, "")
    return remote, code.rule("branch", vocab.git_branch) if branch else ""


def _marker(top: _Checker) -> tuple[int, int]:
    mk = top.table_of("marker", {"tos", "port"})
    return mk.rule("tos", vocab.tos_marker, 0x68), mk.limited("port", "marker_port", 12345)


def _control(ctl: _Checker) -> dict:
    # Windows names interfaces like "Wi-Fi" or "Ethernet 2": spaces are fine, shell syntax is not.
    control = {
        "gateway": ctl.rule("gateway", vocab.ipv4_host),
        "interface": ctl.rule("interface", vocab.matching, pattern=r"[A-Za-z0-9][A-Za-z0-9 _.()-]{0,63}",
                              why="may hold only letters, digits, spaces and - _ . ( ) (max 64)"),
        "add_routes": ctl.get("add_routes", bool, False),
    }
    if control["add_routes"] and not control["gateway"]:
        ctl.fail("control.gateway", _MISSING, "is required when control.add_routes is true")
    return control


def _hosts(top: _Checker, lab: Lab | None, ssh: dict) -> tuple[list[Host], dict]:
    raw = top.get("hosts", dict, None)
    if not raw:
        top.fail("hosts", _MISSING, "is required: one [hosts.NAME] table per host")
    hosts, sources = [], {}
    for hname in raw:
        try:
            vocab.host_name(hname)
        except vocab.Invalid as exc:
            top.fail(f"hosts.{_keyname(hname)}", hname, str(exc))
        h = _Checker(top.fname, raw[hname], f"hosts.{hname}", _HOST)
        host, sources[hname] = _host(h, hname, lab, ssh)
        hosts.append(host)
    return hosts, sources


def _host(h: _Checker, hname: str, lab: Lab | None, ssh: dict) -> tuple[Host, str]:
    role = h.get("role", str, required=True)
    if role not in ROLES:
        h.fail(h.key("role"), role, f"is not a role ({', '.join(ROLES)})")
    ip = h.rule("ip", vocab.ipv4_host, required=True)
    if lab:
        _in_subnet(h, "ip", ip, ipaddress.IPv4Network(lab.subnet))
    checkout = h.rule("checkout", vocab.checkout, "tcpskim")
    if lab and not checkout.startswith("/"):
        checkout = f"{lab.state_dir}/hosts/{hname}/tcpskim"
    key, source = ssh["key"], "ssh.key"
    if "ssh_key" in h.table:
        key, source = h.rule("ssh_key", vocab.path), h.key("ssh_key")
    elif key is None and lab:
        key, source = f"{lab.state_dir}/id_ed25519", "ssh.key (the lab key in lab.state_dir)"
    host = Host(
        name=hname, role=role, ip=ip,
        interface=h.rule("interface", vocab.interface, required=True),
        ssh_host=h.rule("ssh_host", vocab.ssh_host, ip),
        ssh_port=h.limited("ssh_port", "ssh_port", ssh["port"]),
        ssh_user=h.rule("ssh_user", vocab.user, ssh["user"]),
        ssh_key=key, checkout=checkout,
        python=h.rule("python", vocab.command_path, "/usr/bin/python3"),
        mac=h.rule("mac", vocab.mac), cpus=tuple(h.rule("cpus", vocab.cpu_list, [])))
    return host, source


def _across(f: str, top: _Checker, hosts: list[Host], lab: Lab | None):
    """Rules across hosts: one hardworker, one logger, sensors; distinct addresses."""
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
    if lab and lab.control_ip in {x.ip for x in hosts}:
        top.fail("lab.control_ip", lab.control_ip, "is also a host's ip")


def _unique(f, hosts, attr, what):
    seen = {}
    for x in hosts:
        v = getattr(x, attr)
        if v in seen:
            raise InventoryError(f"{f}: hosts.{x.name}.{attr}: {v!r} is the same {what} as hosts.{seen[v]}")
        seen[v] = x.name


def _experiment(e: _Checker) -> dict:
    modes = e.get("modes", list, list(MODES))
    if not modes or any(not isinstance(m, str) or m not in MODES for m in modes) or len(set(modes)) != len(modes):
        e.fail("experiment.modes", modes, f"must be a non-empty list of distinct modes from {MODES}")
    wakeup = e.get("wakeup", str, "per-record")
    e.rule("wakeup", vocab.wakeup)
    deliver = e.get("deliver", str, "all")
    try:
        deliver = str(delivery.parse(deliver))
    except delivery.DeliverError as exc:
        e.fail("experiment.deliver", deliver, str(exc)[len(repr(deliver)):].lstrip(": "))
    xdp_mode = e.get("xdp_mode", str, "generic")
    if xdp_mode not in XDP_MODES:
        e.fail("experiment.xdp_mode", xdp_mode, f"is not one of {', '.join(XDP_MODES)}")
    return {
        "rate": e.limited("rate", "rate_hz", 50.0),
        "size": e.limited("size", "size_bytes", 1024),
        "duration": e.limited("duration", "duration_s", 10.0),
        "warmup": e.limited("warmup", "warmup_s", 2.0),
        "tail": e.limited("tail", "tail_s", 1.0),
        "modes": modes,
        "repeat": e.limited("repeat", "repeat", 3),
        "wakeup": wakeup,
        "deliver": deliver,
        "xdp_mode": xdp_mode,
        "ringbuf_bytes": e.rule("ringbuf_bytes", vocab.ringbuf_bytes, 1 << 20),
        "capture_bytes": e.limited("capture_bytes", "capture_bytes", 1448),
        "work_us": e.limited("work_us", "work_us", 0.0),
        "idle": e.get("idle", bool, True),
        "guard": e.get("guard", bool, False),
        "trace_idle": e.get("trace_idle", bool, True),
    }


def parse_wakeup(text: str) -> dict:
    """'per-record' -> {"policy": "per-record"}; 'batch:10ms' -> {"policy": "batch", "interval_ms": 10}."""
    try:
        return vocab.wakeup(text)
    except vocab.Invalid as exc:
        raise InventoryError(f"wakeup: {text!r} {exc}") from None


def check_paths(inv: Inventory, *, creating_known_hosts: bool = False) -> None:
    """The files the inventory names, checked on this machine before any SSH: every host's
    SSH key exists and is a file, and known_hosts is a file (it may be missing only when
    new host keys are to be accepted, which creates it). ``InventoryError`` names the key
    that named the path, and the path."""
    f = inv.path.name
    lab_hint = " (invoke lab.up makes it)" if inv.lab else ""
    for h in inv.hosts:
        if h.ssh_key is None:
            continue
        p = Path(os.path.expanduser(h.ssh_key))
        source = inv.key_sources.get(h.name, f"hosts.{h.name}.ssh_key")
        if p.is_dir():
            raise InventoryError(f"{f}: {source}: {h.ssh_key!r} is a directory, not a private key file")
        if not p.is_file():
            raise InventoryError(f"{f}: {source}: {h.ssh_key!r} does not exist{lab_hint}")
        if not os.access(p, os.R_OK):
            raise InventoryError(f"{f}: {source}: {h.ssh_key!r} is not readable by this user")
    kh = Path(os.path.expanduser(inv.known_hosts))
    if kh.is_dir():
        raise InventoryError(f"{f}: ssh.known_hosts: {inv.known_hosts!r} is a directory, not a file")
    if not kh.exists() and not creating_known_hosts:
        hint = "invoke lab.up writes it" if inv.lab else \
            "invoke accept-host-keys, or deploy --accept-new-host-keys, creates it"
        raise InventoryError(f"{f}: ssh.known_hosts: {inv.known_hosts!r} does not exist ({hint})")
