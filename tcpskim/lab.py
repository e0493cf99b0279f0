"""The local lab: one Linux machine (as root) stands in for the testbed.

``up`` builds, from a lab inventory (``testbed.lab = true``):

* a bridge ``lab.bridge`` in the root namespace carrying ``lab.control_ip`` (the control
  machine's address on the lab network);
* per host a network namespace ``<prefix>-<name>`` joined to the bridge by a veth pair
  (root side ``<prefix>-<name>`` on the bridge, namespace side ``host.interface`` with the
  host's IP and MAC), TX checksum offload off on both ends;
* per host an OpenSSH ``sshd`` running inside the namespace with its own host key and
  authorized_keys (the lab key ``<state_dir>/id_ed25519``), listed in ``inv.known_hosts``;
* per host a git checkout (``host.checkout``) cloned from the control checkout;
* RPS steering of the hardworker's receive processing to its dedicated CPU.

``down`` removes all of it (and tolerates any half-built state); ``status`` reports it.
Every step is idempotent: ``up`` twice changes nothing the second time, and reports what it
created versus what it found. Commands are argument lists, never shell strings.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from hashlib import sha1
from pathlib import Path

from . import CHECKOUT
from .inventory import Host, Inventory

SSHD = "/usr/sbin/sshd"  # absolute: sshd re-executes itself and refuses a relative argv[0]
PRIVSEP_DIR = Path("/run/sshd")
MARKER = ".tcpskim-lab"  # proves a state dir is ours before `down` deletes it
SSHD_WAIT_S = 10.0
TERM_WAIT_S = 3.0


class LabError(RuntimeError):
    """A one-line, user-facing lab problem."""


# --------------------------------------------------------------------------- names


def namespace(inv: Inventory, host: Host | str) -> str:
    """Network namespace name of a lab host: ``<prefix>-<name>``."""
    name = host if isinstance(host, str) else host.name
    return f"{_lab(inv).prefix}-{name}"


def veth_name(inv: Inventory, host: Host | str) -> str:
    """Root-side veth of a lab host: ``<prefix>-<name>``, shortened with a hash if > 15 chars."""
    name = host if isinstance(host, str) else host.name
    prefix = _lab(inv).prefix
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
    name = host if isinstance(host, str) else host.name
    return Path(_lab(inv).state_dir) / "hosts" / name


def lab_key(inv: Inventory) -> Path:
    return Path(_lab(inv).state_dir) / "id_ed25519"


def cpu_plan(inv: Inventory) -> dict[str, list[int]]:
    """CPUs each host's roles should use: hardworker the last CPU, the others the rest.

    Empty lists mean "no pinning" (``lab.dedicate_cpu`` false, not a lab, or < 2 CPUs).
    A host's own ``cpus`` in the inventory always wins.
    """
    n = os.cpu_count() or 1
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


# --------------------------------------------------------------------------- helpers


def _lab(inv: Inventory):
    if inv.lab is None:
        raise LabError(f"{inv.path.name}: not a lab inventory (set testbed.lab = true and a [lab] table)")
    return inv.lab


def _require(inv: Inventory) -> None:
    _lab(inv)
    if not sys.platform.startswith("linux"):
        raise LabError(f"the local lab needs Linux (network namespaces); this is {sys.platform}")
    if os.geteuid() != 0:
        raise LabError("the local lab needs root (it creates namespaces, veths, a bridge and sshds): run as root")


def _require_tools() -> None:
    missing = [t for t in ("ip", "ethtool", "ssh-keygen", "git") if not shutil.which(t)]
    if not os.access(SSHD, os.X_OK):
        missing.append(SSHD + " (openssh-server)")
    if missing:
        raise LabError(f"the local lab needs these programs, missing: {', '.join(missing)}")


def _run(argv: list[str], check: bool = True, input: str | None = None,
         timeout: float = 60) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, capture_output=True, text=True, input=input, timeout=timeout,
                       stdin=None if input is not None else subprocess.DEVNULL)
    if check and r.returncode != 0:
        msg = (r.stderr.strip() or r.stdout.strip() or f"exit {r.returncode}").splitlines()[-1]
        raise LabError(f"{' '.join(argv)}: {msg}")
    return r


def _ip_json(argv: list[str]) -> list[dict]:
    r = _run(["ip", "-j", *argv], check=False)
    if r.returncode != 0 or not r.stdout.strip():
        return []
    return json.loads(r.stdout)


def _link(dev: str, ns: str | None = None) -> dict | None:
    """`ip -j link show dev X` (in ns), None if it does not exist."""
    links = _ip_json((["-n", ns] if ns else []) + ["link", "show", "dev", dev])
    return links[0] if links else None


def _addrs(dev: str, ns: str | None = None) -> list[str]:
    out = []
    for link in _ip_json((["-n", ns] if ns else []) + ["-4", "addr", "show", "dev", dev]):
        for a in link.get("addr_info", []):
            out.append(f"{a['local']}/{a['prefixlen']}")
    return out


def _ns_exists(ns: str) -> bool:
    return Path("/run/netns", ns).exists()


def _prefixlen(inv: Inventory) -> int:
    return ipaddress.IPv4Network(_lab(inv).subnet).prefixlen


def _no_ipv6(dev: str) -> None:
    # Router solicitations, MLD and DAD packets on the lab links are noise in packet counts.
    p = Path("/proc/sys/net/ipv6/conf", dev, "disable_ipv6")
    if p.exists():
        p.write_text("1\n")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is not alive
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _cmdline(pid: int) -> str:
    # Space-joined: sshd rewrites its process title ("sshd: /usr/sbin/sshd -f ... [listener]"),
    # which can turn argv into one string, so match substrings, not argv items.
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").replace("\0", " ")
    except OSError:
        return ""


def _sshd_pid(inv: Inventory, host: Host) -> int | None:
    """Pid of the host's running lab sshd (from its pidfile, checked against /proc)."""
    d = host_dir(inv, host)
    try:
        pid = int((d / "sshd.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if _pid_alive(pid) and f"-f {d / 'sshd_config'}" in _cmdline(pid):
        return pid
    return None


def _port_open(ip: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts on ip:port and greets with an SSH banner."""
    try:
        with socket.create_connection((ip, port), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(256).startswith(b"SSH-")
    except OSError:
        return False


class _Report:
    def __init__(self, log):
        self.log = log
        self.created: list[str] = []
        self.found: list[str] = []
        self.removed: list[str] = []
        self.warnings: list[str] = []

    def made(self, what: str) -> None:
        self.created.append(what)
        self.log(f"created  {what}")

    def had(self, what: str) -> None:
        self.found.append(what)

    def gone(self, what: str) -> None:
        self.removed.append(what)
        self.log(f"removed  {what}")

    def warn(self, what: str) -> None:
        self.warnings.append(what)
        self.log(f"warning  {what}")


# --------------------------------------------------------------------------- up steps


def _state_dir(inv: Inventory, rep: _Report) -> None:
    d = Path(_lab(inv).state_dir)
    if d.is_dir():
        rep.had(f"state dir {d}")
        if not (d / MARKER).exists() and any(d.iterdir()):
            raise LabError(f"lab.state_dir {d} exists, is not empty and was not made by tcpskim: "
                           "choose another lab.state_dir")
    else:
        d.mkdir(parents=True, mode=0o700)
        rep.made(f"state dir {d}")
    os.chmod(d, 0o700)
    (d / MARKER).touch()
    (d / "hosts").mkdir(exist_ok=True)


def _keygen(path: Path, comment: str, what: str, rep: _Report) -> None:
    if path.exists() and path.with_name(path.name + ".pub").exists():
        rep.had(what)
        return
    for p in (path, path.with_name(path.name + ".pub")):
        p.unlink(missing_ok=True)
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    rep.made(what)


def _lab_key(inv: Inventory, rep: _Report) -> None:
    _keygen(lab_key(inv), f"tcpskim-lab@{inv.name}", f"lab key {lab_key(inv)}", rep)


def _bridge(inv: Inventory, rep: _Report) -> None:
    lab = _lab(inv)
    br = lab.bridge
    link = _link(br)
    if link is None:
        _run(["ip", "link", "add", "name", br, "type", "bridge"])
        # A bridge without its own MAC takes the lowest port MAC and changes it as ports
        # join, leaving stale ARP entries for control_ip in the namespaces: pin one.
        _run(["ip", "link", "set", "dev", br, "address", derived_mac(lab.control_ip)])
        _no_ipv6(br)
        rep.made(f"bridge {br}")
    elif link.get("linkinfo", {}).get("info_kind") not in (None, "bridge"):
        raise LabError(f"{br} exists but is not a bridge: remove it or change lab.bridge")
    else:
        rep.had(f"bridge {br}")
    want = f"{lab.control_ip}/{_prefixlen(inv)}"
    if want not in _addrs(br):
        _run(["ip", "addr", "add", want, "dev", br])
        rep.made(f"address {want} on {br}")
    if "UP" not in (_link(br) or {}).get("flags", []):
        _run(["ip", "link", "set", "dev", br, "up"])
        rep.made(f"{br} up")


def _tx_off(dev: str, ns: str | None, rep: _Report) -> None:
    # With TX checksum offload on, locally generated TCP on a veth carries only a partial
    # checksum (CHECKSUM_PARTIAL), so an XDP rewrite with a wrong checksum goes unnoticed;
    # turning it off also turns off TSO, so the sensor's stack segments to the MSS.
    pre = ["ip", "netns", "exec", ns] if ns else []
    out = _run(pre + ["ethtool", "-k", dev]).stdout
    if "tx-checksumming: off" in out:
        rep.had(f"tx offload off on {ns + ':' if ns else ''}{dev}")
        return
    _run(pre + ["ethtool", "-K", dev, "tx", "off"])
    rep.made(f"tx offload off on {ns + ':' if ns else ''}{dev}")


def _host_net(inv: Inventory, host: Host, rep: _Report) -> None:
    lab = _lab(inv)
    ns, veth, ifc, mac = namespace(inv, host), veth_name(inv, host), host.interface, host_mac(host)
    if veth == lab.bridge:
        raise LabError(f"host {host.name}: its veth name {veth} is the bridge's name: rename the host or lab.bridge")
    if not _ns_exists(ns):
        _run(["ip", "netns", "add", ns])
        rep.made(f"namespace {ns}")
    else:
        rep.had(f"namespace {ns}")
    # Set before the veth end arrives so the new device inherits "default".
    _run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w",
          "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"], check=False)

    root_side = _link(veth)
    inner = _link(ifc, ns)
    if root_side is not None and inner is None:
        # A half-made pair (or the peer was renamed): start over.
        _run(["ip", "link", "del", "dev", veth], check=False)
        root_side = None
    if inner is not None and root_side is None:
        _run(["ip", "-n", ns, "link", "del", "dev", ifc], check=False)
        inner = None
    if root_side is None:
        # Create the peer directly inside the namespace with its final name and MAC: no
        # temporary name in the root namespace that could clash with a real interface.
        _run(["ip", "link", "add", "name", veth, "type", "veth",
              "peer", "name", ifc, "address", mac, "netns", ns])
        _no_ipv6(veth)
        rep.made(f"veth {veth} <-> {ns}:{ifc}")
        inner = _link(ifc, ns)
    else:
        rep.had(f"veth {veth} <-> {ns}:{ifc}")

    if (inner or {}).get("address") != mac:
        _run(["ip", "-n", ns, "link", "set", "dev", ifc, "down"])
        _run(["ip", "-n", ns, "link", "set", "dev", ifc, "address", mac])
        rep.made(f"MAC {mac} on {ns}:{ifc}")
    if _link(veth).get("master") != lab.bridge:
        _run(["ip", "link", "set", "dev", veth, "master", lab.bridge])
        rep.made(f"{veth} on bridge {lab.bridge}")

    want = f"{host.ip}/{_prefixlen(inv)}"
    if want not in _addrs(ifc, ns):
        _run(["ip", "-n", ns, "addr", "add", want, "dev", ifc])
        rep.made(f"address {want} on {ns}:{ifc}")

    _tx_off(veth, None, rep)
    _tx_off(ifc, ns, rep)

    for dev, where in (("lo", ns), (ifc, ns), (veth, None)):
        if "UP" not in (_link(dev, where) or {}).get("flags", []):
            _run(["ip"] + (["-n", where] if where else []) + ["link", "set", "dev", dev, "up"])
            rep.made(f"{where + ':' if where else ''}{dev} up")


def _rps(inv: Inventory, host: Host, rep: _Report) -> None:
    cpus = cpu_plan(inv)[host.name]
    if not cpus or not _lab(inv).dedicate_cpu:
        return
    ns = namespace(inv, host)
    # sysfs lists the devices of the namespace of whoever mounted it: only `ip netns exec`
    # (which remounts /sys inside its private mount namespace) shows the namespace's eth0.
    path = f"/sys/class/net/{host.interface}/queues/rx-0/rps_cpus"
    cur = _run(["ip", "netns", "exec", ns, "cat", path], check=False)
    if cur.returncode != 0:
        rep.warn(f"{host.name}: no {path} (kernel without RPS?): receive processing not steered")
        return
    mask = cpu_mask(cpus)
    if parse_mask(cur.stdout) == parse_mask(mask):
        rep.had(f"rps_cpus {mask} on {ns}:{host.interface}")
        return
    # RPS moves this device's receive processing (softirq, generic XDP included) to these
    # CPUs, so the hardworker's dedicated CPU carries its whole networking cost.
    _run(["ip", "netns", "exec", ns, "tee", path], input=mask + "\n")
    rep.made(f"rps_cpus {mask} on {ns}:{host.interface}")


def _bridge_rps(inv: Inventory, rep: _Report) -> None:
    """The bridge ports' receive work (forwarding, e.g. of the hardworker's XDP_TX bounces) goes
    to the non-hardworker CPUs: on hardware the NIC sends those frames, not the hardworker's CPU."""
    plan = cpu_plan(inv)
    others = next((plan[h.name] for h in inv.hosts if h.role != "hardworker"), [])
    if not others or not _lab(inv).dedicate_cpu:
        return
    mask = cpu_mask(others)
    for h in inv.hosts:
        path = Path(f"/sys/class/net/{veth_name(inv, h)}/queues/rx-0/rps_cpus")
        if path.exists() and parse_mask(path.read_text()) != parse_mask(mask):
            path.write_text(mask + "\n")
            rep.made(f"rps_cpus {mask} on bridge port {veth_name(inv, h)}")


def _sshd_config(inv: Inventory, host: Host) -> str:
    d = host_dir(inv, host)
    return "\n".join([
        f"# tcpskim lab sshd for {host.name} (namespace {namespace(inv, host)}); written by tcpskim.lab",
        f"ListenAddress {host.ip}",
        f"Port {host.ssh_port}",
        f"HostKey {d / 'ssh_host_ed25519_key'}",
        f"PidFile {d / 'sshd.pid'}",
        f"AuthorizedKeysFile {d / 'authorized_keys'}",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        # The lab files live under a 0700 root-owned dir; the checks would only get in the way.
        "StrictModes no",
        # No PAM: no login sessions or systemd-logind registration for namespace hosts.
        "UsePAM no",
        "UseDNS no",
        "PrintMotd no",
        "X11Forwarding no",
        "AcceptEnv LANG LC_*",
        # Fabric's put/get use SFTP; internal-sftp needs no external binary.
        "Subsystem sftp internal-sftp",
        "MaxStartups 50:30:100",
        "",
    ])


def _write_if_changed(path: Path, text: str, mode: int = 0o600) -> bool:
    try:
        if path.read_text() == text:
            return False
    except OSError:
        pass
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    return True


def _host_sshd(inv: Inventory, host: Host, rep: _Report) -> None:
    d = host_dir(inv, host)
    d.mkdir(parents=True, exist_ok=True)
    ns = namespace(inv, host)
    _keygen(d / "ssh_host_ed25519_key", f"tcpskim-lab-{host.name}", f"host key of {host.name}", rep)

    keys = [lab_key(inv).with_name(lab_key(inv).name + ".pub").read_text().strip()]
    if host.ssh_key and Path(host.ssh_key) != lab_key(inv) and Path(host.ssh_key + ".pub").exists():
        keys.append(Path(host.ssh_key + ".pub").read_text().strip())  # a custom key in the inventory
    if _write_if_changed(d / "authorized_keys", "\n".join(keys) + "\n"):
        rep.made(f"authorized_keys of {host.name}")
    config_changed = _write_if_changed(d / "sshd_config", _sshd_config(inv, host))
    if config_changed:
        rep.made(f"sshd_config of {host.name}")

    pid = _sshd_pid(inv, host)
    if pid is not None:
        if config_changed:
            rep.warn(f"{host.name}: sshd {pid} runs with an older config: `lab down` + `lab up` to apply")
        rep.had(f"sshd of {host.name} (pid {pid})")
        return

    # sshd's privilege separation chroot; normally made by systemd's RuntimeDirectory.
    PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
    (d / "sshd.pid").unlink(missing_ok=True)
    log = d / "sshd.log"
    test = _run(["ip", "netns", "exec", ns, SSHD, "-t", "-f", str(d / "sshd_config")], check=False)
    if test.returncode != 0:
        raise LabError(f"{host.name}: sshd rejects {d / 'sshd_config'}: {test.stderr.strip().splitlines()[-1:]}")
    with open(log, "ab") as lf:
        # sshd daemonizes itself (fork + setsid, std streams to /dev/null) and stays in the
        # namespace (and in the private mount namespace `ip netns exec` made for it).
        # Every sshd (the hardworker's too) and so every command the control side runs stays
        # off the hardworker's dedicated CPU: control traffic must not land in its measurement.
        plan = cpu_plan(inv)
        others = plan.get(next((h.name for h in inv.hosts if h.role != "hardworker"), ""), [])
        pin = ["taskset", "-c", ",".join(map(str, others))] if others else []
        r = subprocess.run([*pin, "ip", "netns", "exec", ns, SSHD, "-f", str(d / "sshd_config"), "-E", str(log)],
                           stdin=subprocess.DEVNULL, stdout=lf, stderr=lf, timeout=30, start_new_session=True)
    if r.returncode != 0:
        raise LabError(f"{host.name}: sshd failed to start (exit {r.returncode}): {_tail(log)}")
    deadline = time.monotonic() + SSHD_WAIT_S
    while time.monotonic() < deadline:
        pid = _sshd_pid(inv, host)
        if pid is not None and _port_open(host.ip, host.ssh_port):
            rep.made(f"sshd of {host.name} on {host.ip}:{host.ssh_port} (pid {pid})")
            return
        time.sleep(0.05)
    raise LabError(f"{host.name}: sshd did not accept connections on {host.ip}:{host.ssh_port} "
                   f"within {SSHD_WAIT_S:.0f} s: {_tail(log)}")


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return lines[-1] if lines else "(empty log)"


def _known_names(host: Host) -> list[str]:
    """known_hosts names for a host, as OpenSSH/paramiko look them up ([h]:port unless 22)."""
    names = []
    for h in dict.fromkeys([host.ssh_host, host.ip]):
        names.append(h if host.ssh_port == 22 else f"[{h}]:{host.ssh_port}")
    return names


def _strip_known(lines: list[str], names: set[str]) -> list[str]:
    keep = []
    for line in lines:
        fields = line.split()
        if fields and not line.startswith("#") and set(fields[0].split(",")) & names:
            continue
        keep.append(line)
    return keep


def _known_hosts(inv: Inventory, rep: _Report) -> None:
    path = Path(os.path.expanduser(inv.known_hosts))
    try:
        lines = path.read_text().splitlines()
    except OSError:
        lines = []
    names = {n for h in inv.hosts for n in _known_names(h)}
    new = _strip_known(lines, names)
    for h in inv.hosts:
        typ, b64 = (host_dir(inv, h) / "ssh_host_ed25519_key.pub").read_text().split()[:2]
        new.append(f"{','.join(_known_names(h))} {typ} {b64}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if _write_if_changed(path, "\n".join(new) + "\n"):
        rep.made(f"known_hosts entries in {path}")
    else:
        rep.had(f"known_hosts entries in {path}")


def _git(argv: list[str], cwd: str | Path | None = None, check: bool = True) -> str:
    r = _run(["git", *(["-C", str(cwd)] if cwd else []), *argv], check=check, timeout=300)
    return r.stdout.strip()


def control_checkout() -> Path:
    """The git toplevel of the control checkout this package runs from."""
    r = _run(["git", "-C", str(CHECKOUT), "rev-parse", "--show-toplevel"], check=False)
    if r.returncode != 0:
        raise LabError(f"{CHECKOUT} is not a git checkout: lab hosts clone their code from it")
    return Path(r.stdout.strip())


def _source(inv: Inventory) -> tuple[str, str | None, str | None]:
    """(clone source, branch or None, detached commit or None) for the host checkouts."""
    if inv.code_remote:
        return inv.code_remote, inv.code_branch or None, None
    src = control_checkout()
    if inv.code_branch:
        return str(src), inv.code_branch, None
    if _run(["git", "-C", str(src), "rev-parse", "-q", "--verify", "HEAD"], check=False).returncode != 0:
        return str(src), None, None  # no commit yet: an empty clone that `deploy` fills later
    br = _run(["git", "-C", str(src), "symbolic-ref", "-q", "--short", "HEAD"], check=False)
    if br.returncode == 0:
        return str(src), br.stdout.strip(), None
    return str(src), None, _git(["rev-parse", "HEAD"], src)  # detached HEAD


def _checkout(inv: Inventory, host: Host, source: tuple[str, str | None, str | None], rep: _Report) -> None:
    dest = Path(host.checkout)
    if (dest / ".git").exists():
        rep.had(f"checkout {dest}")  # updating it is `invoke deploy`'s job
        return
    if dest.exists() and any(dest.iterdir()):
        raise LabError(f"{host.name}: {dest} exists and is not a git checkout: remove it")
    src, branch, commit = source
    if branch is None and commit is None and not inv.code_remote:
        rep.warn(f"{host.name}: the control checkout {src} has no commit yet: cloned an empty repository")
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Clone beside the target and rename, so an interrupted clone never looks finished.
    tmp = dest.with_name(dest.name + f".cloning-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _git(["clone", "-q", *(["--branch", branch] if branch else []), "--", src, str(tmp)])
        if commit:
            _git(["checkout", "-q", "--detach", commit], tmp)
        if dest.exists():
            dest.rmdir()
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rep.made(f"checkout {dest} ({branch or commit or 'empty'})")


def _write_state(inv: Inventory) -> dict:
    lab = _lab(inv)
    state = {
        "inventory": str(inv.path),
        "prefix": lab.prefix,
        "bridge": lab.bridge,
        "state_dir": lab.state_dir,
        "known_hosts": os.path.expanduser(inv.known_hosts),
        "namespaces": [namespace(inv, h) for h in inv.hosts],
        "veths": [veth_name(inv, h) for h in inv.hosts],
        "hosts": {},
        "updated": time.time(),
    }
    for h in inv.hosts:
        ns = namespace(inv, h)
        try:
            ino = os.stat(Path("/run/netns", ns)).st_ino
        except OSError:
            ino = None
        state["hosts"][h.name] = {
            "namespace": ns, "netns_inode": ino, "veth": veth_name(inv, h), "interface": h.interface,
            "ip": h.ip, "mac": host_mac(h), "ssh_port": h.ssh_port, "sshd_pid": _sshd_pid(inv, h),
            "checkout": h.checkout, "cpus": cpu_plan(inv)[h.name],
        }
    p = Path(lab.state_dir) / "lab.json"
    old = _read_state(inv)
    if {k: v for k, v in old.items() if k != "updated"} != {k: v for k, v in state.items() if k != "updated"}:
        _write_if_changed(p, json.dumps(state, indent=2) + "\n")
    return state


def _read_state(inv: Inventory) -> dict:
    try:
        return json.loads((Path(_lab(inv).state_dir) / "lab.json").read_text())
    except (OSError, ValueError):
        return {}


# --------------------------------------------------------------------------- public API


def up(inv: Inventory, log=print) -> dict:
    """Build (or complete) the local lab; idempotent.

    Returns ``{"created": [...], "found": [...], "warnings": [...], "state": <lab.json>}``;
    a second run has an empty ``created`` list.
    """
    _require(inv)
    _require_tools()
    rep = _Report(log)
    source = _source(inv)  # fail early if the control checkout is unusable
    _state_dir(inv, rep)
    _lab_key(inv, rep)
    _bridge(inv, rep)
    for h in inv.hosts:
        _host_net(inv, h, rep)
        _rps(inv, h, rep)
    _bridge_rps(inv, rep)
    for h in inv.hosts:
        _host_sshd(inv, h, rep)
    _known_hosts(inv, rep)
    for h in inv.hosts:
        _checkout(inv, h, source, rep)
    state = _write_state(inv)
    log(f"lab {inv.name}: {len(rep.created)} created, {len(rep.found)} already in place"
        + (f", {len(rep.warnings)} warning(s)" if rep.warnings else ""))
    return {"created": rep.created, "found": rep.found, "warnings": rep.warnings, "state": state}


def _lab_pids(inv: Inventory, namespaces: list[str], inodes: set[int]) -> set[int]:
    """Processes that belong to the lab: inside a lab namespace, or a lab sshd by cmdline."""
    pids: set[int] = set()
    for ns in namespaces:
        if _ns_exists(ns):
            r = _run(["ip", "netns", "pids", ns], check=False)
            pids.update(int(p) for p in r.stdout.split() if p.isdigit())
            try:
                inodes.add(os.stat(Path("/run/netns", ns)).st_ino)
            except OSError:
                pass
    marker = str(Path(_lab(inv).state_dir)) + "/"
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        pid = int(p.name)
        try:
            net = os.readlink(p / "ns" / "net")
        except OSError:
            continue
        if inodes and net.startswith("net:[") and int(net[5:-1]) in inodes:
            pids.add(pid)  # in a lab namespace even if its name is gone already
            continue
        cmd = _cmdline(pid)
        if "sshd" in cmd.split(" ", 1)[0] and f"-f {marker}" in cmd:
            pids.add(pid)  # a lab sshd whose namespace is gone already
    pids.discard(os.getpid())
    return pids


def _kill(pids: set[int], rep: _Report) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + TERM_WAIT_S
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        alive = {p for p in alive if _pid_alive(p)}
        if alive:
            time.sleep(0.05)
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if pids:
        rep.gone(f"{len(pids)} lab process(es): {' '.join(map(str, sorted(pids)))}"
                 + (f" ({len(alive)} needed SIGKILL)" if alive else ""))


def _xdp_off(dev: str, ns: str | None, rep: _Report) -> None:
    # XDP attached through netlink outlives the process that attached it; `xdp off` alone
    # picks the driver mode on veth, so detach every mode explicitly (harmless if none).
    pre = ["ip"] + (["-n", ns] if ns else [])
    link = _link(dev, ns)
    if link is None or "xdp" not in link:
        return
    for mode in ("xdp", "xdpgeneric", "xdpdrv", "xdpoffload"):
        _run(pre + ["link", "set", "dev", dev, mode, "off"], check=False)
    rep.gone(f"XDP program on {ns + ':' if ns else ''}{dev}")


def _mounts_under(paths: list[str]) -> list[str]:
    out = []
    try:
        text = Path("/proc/self/mounts").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        mp = line.split()[1].encode().decode("unicode_escape")  # \040 etc.
        if any(mp == p or mp.startswith(p.rstrip("/") + "/") for p in paths):
            out.append(mp)
    return out


def down(inv: Inventory, log=print) -> dict:
    """Remove everything ``up`` made; works on any half-built lab and when nothing is left.

    Returns ``{"removed": [...], "warnings": [...]}``.
    """
    _require(inv)
    lab = _lab(inv)
    rep = _Report(log)
    state = _read_state(inv)
    namespaces = list(dict.fromkeys([namespace(inv, h) for h in inv.hosts] + state.get("namespaces", [])))
    veths = list(dict.fromkeys([veth_name(inv, h) for h in inv.hosts] + state.get("veths", [])))
    inodes = {v["netns_inode"] for v in state.get("hosts", {}).values() if v.get("netns_inode")}

    # 1. XDP first, so nothing keeps swallowing traffic if a later step fails.
    for ns in namespaces:
        if _ns_exists(ns):
            for link in _ip_json(["-n", ns, "link", "show"]):
                if link.get("ifname") != "lo":
                    _xdp_off(link["ifname"], ns, rep)
    for v in veths:
        _xdp_off(v, None, rep)

    # 2. Processes: every process in a lab namespace (sshd, sessions, roles), lab sshds.
    _kill(_lab_pids(inv, namespaces, inodes), rep)

    # 3. Links and namespaces (deleting either veth end deletes the pair).
    for v in veths:
        if _link(v) is not None:
            _run(["ip", "link", "del", "dev", v], check=False)
            rep.gone(f"veth {v}")
    for ns in namespaces:
        if _ns_exists(ns):
            r = _run(["ip", "netns", "del", ns], check=False)
            if r.returncode != 0:
                rep.warn(f"ip netns del {ns}: {r.stderr.strip()}")
            else:
                rep.gone(f"namespace {ns}")
    if _link(lab.bridge) is not None:
        _run(["ip", "link", "del", "dev", lab.bridge], check=False)
        rep.gone(f"bridge {lab.bridge}")

    # 4. Mounts (a netns bind mount `ip netns del` could not remove, anything in the state dir).
    for mp in sorted(_mounts_under([f"/run/netns/{ns}" for ns in namespaces] + [lab.state_dir]), reverse=True):
        r = _run(["umount", "-l", mp], check=False)
        if r.returncode == 0:
            rep.gone(f"mount {mp}")
        else:
            rep.warn(f"umount {mp}: {r.stderr.strip()}")
    for ns in namespaces:  # the (now unmounted) file `ip netns add` left, if any
        Path("/run/netns", ns).unlink(missing_ok=True)

    # 5. Files: known_hosts entries outside the state dir, then the state dir itself.
    d = Path(lab.state_dir)
    kh = Path(os.path.expanduser(inv.known_hosts))
    if kh.exists() and not str(kh.resolve()).startswith(str(d.resolve()) + "/"):
        lines = kh.read_text().splitlines()
        keep = _strip_known(lines, {n for h in inv.hosts for n in _known_names(h)})
        if keep != lines:
            _write_if_changed(kh, "\n".join(keep) + ("\n" if keep else ""))
            rep.gone(f"lab entries in {kh}")
    if d.is_dir():
        if (d / MARKER).exists() or not any(d.iterdir()):
            shutil.rmtree(d)
            rep.gone(f"state dir {d}")
        else:
            rep.warn(f"{d} has no {MARKER} marker: not deleting a directory tcpskim did not make")
    leftover = [ns for ns in namespaces if _ns_exists(ns)] + [v for v in veths if _link(v) is not None]
    if leftover:
        rep.warn(f"still present: {', '.join(leftover)}")
    log(f"lab {inv.name}: down, {len(rep.removed)} item(s) removed"
        + (f", {len(rep.warnings)} warning(s)" if rep.warnings else ""))
    return {"removed": rep.removed, "warnings": rep.warnings}


def status(inv: Inventory) -> list[dict]:
    """One row per host: namespace, link, address, MAC, sshd, port, checkout commit, RPS."""
    _require(inv)
    rows = []
    for h in inv.hosts:
        ns = namespace(inv, h)
        row = {"host": h.name, "role": h.role, "namespace": ns, "netns": _ns_exists(ns),
               "link": "missing", "address": "", "mac": "", "sshd_pid": None, "port_open": False,
               "checkout": "", "rps_cpus": ""}
        if row["netns"]:
            link = _link(h.interface, ns)
            if link is not None:
                row["link"] = "up" if "UP" in link.get("flags", []) and "LOWER_UP" in link.get("flags", []) else "down"
                row["mac"] = link.get("address", "")
                row["address"] = " ".join(_addrs(h.interface, ns))
                r = _run(["ip", "netns", "exec", ns, "cat",
                          f"/sys/class/net/{h.interface}/queues/rx-0/rps_cpus"], check=False)
                row["rps_cpus"] = r.stdout.strip()
        row["sshd_pid"] = _sshd_pid(inv, h)
        row["port_open"] = row["netns"] and _port_open(h.ip, h.ssh_port)
        if (Path(h.checkout) / ".git").exists():
            r = _run(["git", "-C", h.checkout, "rev-parse", "--short", "HEAD"], check=False)
            row["checkout"] = r.stdout.strip() if r.returncode == 0 else "(no commit)"
        rows.append(row)
    return rows


def ns_exec(inv: Inventory, host_name: str, argv: list[str], **kw) -> subprocess.CompletedProcess:
    """Run ``argv`` inside a lab host's namespace (``subprocess.run``; text output captured
    unless ``stdout``/``stderr`` are given; ``check`` defaults to False)."""
    _require(inv)
    host = inv.host(host_name)
    kw.setdefault("text", True)
    if "stdout" not in kw and "stderr" not in kw and "capture_output" not in kw:
        kw["capture_output"] = True
    kw.setdefault("timeout", 60)
    return subprocess.run(["ip", "netns", "exec", namespace(inv, host), *argv], **kw)
