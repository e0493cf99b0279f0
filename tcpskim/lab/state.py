"""The lab's files: its state dir (marked as ours), lab.json (with the device IRQ affinities the
lab changed), the known_hosts entries (through ``tcpskim.hostkeys``), and the per-host git
checkouts cloned from the control checkout.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import time
from pathlib import Path

import paramiko

from roles import fsutil

from .. import CHECKOUT, hostkeys
from ..inventory import Host, Inventory
from . import sshd
from .names import LabError, cpu_plan, host_dir, host_mac, lab_key, lab_of, namespace, veth_name
from .net import run

MARKER = ".tcpskim-lab"  # proves a state dir is ours before `down` deletes it


# --------------------------------------------------------------------------- state dir, files


def state_dir_kind(inv: Inventory) -> str:
    """'missing' | 'ours' (marked) | 'empty' (unmarked, empty) | 'foreign'."""
    d = Path(lab_of(inv).state_dir)
    if not d.is_dir():
        return "missing"
    if (d / MARKER).exists():
        return "ours"
    return "foreign" if any(d.iterdir()) else "empty"


def make_state_dir(inv: Inventory) -> None:
    d = Path(lab_of(inv).state_dir)
    d.mkdir(parents=True, mode=0o700, exist_ok=True)
    os.chmod(d, 0o700)
    (d / MARKER).touch()
    (d / "hosts").mkdir(exist_ok=True)


def write_if_changed(path: Path, text: str, mode: int = 0o600) -> bool:
    try:
        if path.read_text() == text:
            return False
    except OSError:
        pass
    fsutil.atomic_write(path, text, mode=mode)
    return True


def read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def custom_pub(inv: Inventory, host: Host) -> str | None:
    """The public half of the host's own ssh_key from the inventory, if not the lab key."""
    if host.ssh_key and Path(host.ssh_key) != lab_key(inv):
        return read_text(Path(host.ssh_key + ".pub"))
    return None


# --------------------------------------------------------------------------- known_hosts


def known_names(host: Host) -> list[str]:
    """known_hosts names for a host, as OpenSSH/paramiko look them up ([h]:port unless 22)."""
    return [hostkeys.known_name(host, a) for a in dict.fromkeys([host.ssh_host, host.ip])]


def _host_key(inv: Inventory, host: Host) -> paramiko.PKey | None:
    text = read_text(host_dir(inv, host) / "ssh_host_ed25519_key.pub")
    if not text or len(text.split()) < 2:
        return None
    typ, b64 = text.split()[:2]
    return paramiko.PKey.from_type_string(typ, base64.b64decode(b64))


def known_hosts_current(inv: Inventory) -> bool:
    """Whether known_hosts trusts exactly each lab host's own key under each of its names."""
    hk = hostkeys.load_known_hosts(inv.known_hosts)
    for h in inv.hosts:
        key = _host_key(inv, h)
        if key is None:
            return False
        for name in known_names(h):
            have = hk.lookup(name) or {}
            if list(have.keys()) != [key.get_name()] or have[key.get_name()].get_base64() != key.get_base64():
                return False
    return True


def write_known_hosts(inv: Inventory) -> None:
    path = os.path.expanduser(inv.known_hosts)
    for h in inv.hosts:
        key = _host_key(inv, h)
        if key is None:
            raise LabError(f"{h.name}: no host key in {host_dir(inv, h)}")
        for name in known_names(h):
            hostkeys.remember(path, name, key, replace=True)


def forget_known_hosts(inv: Inventory) -> bool:
    return hostkeys.forget(os.path.expanduser(inv.known_hosts), [n for h in inv.hosts for n in known_names(h)])


# --------------------------------------------------------------------------- checkouts


def _git(argv: list[str], cwd: str | Path | None = None, check: bool = True) -> str:
    return run(["git", *(["-C", str(cwd)] if cwd else []), *argv], check=check, timeout=300).stdout.strip()


def control_checkout() -> Path:
    """The git toplevel of the control checkout this package runs from."""
    r = run(["git", "-C", str(CHECKOUT), "rev-parse", "--show-toplevel"], check=False)
    if r.returncode != 0:
        raise LabError(f"{CHECKOUT} is not a git checkout: lab hosts clone their code from it")
    return Path(r.stdout.strip())


def source(inv: Inventory) -> tuple[str, str | None, str | None]:
    """(clone source, branch or None, detached commit or None) for the host checkouts."""
    if inv.code_remote:
        return inv.code_remote, inv.code_branch or None, None
    src = control_checkout()
    if inv.code_branch:
        return str(src), inv.code_branch, None
    if run(["git", "-C", str(src), "rev-parse", "-q", "--verify", "HEAD"], check=False).returncode != 0:
        return str(src), None, None  # no commit yet: an empty clone that `deploy` fills later
    br = run(["git", "-C", str(src), "symbolic-ref", "-q", "--short", "HEAD"], check=False)
    if br.returncode == 0:
        return str(src), br.stdout.strip(), None
    return str(src), None, _git(["rev-parse", "HEAD"], src)  # detached HEAD


def checkout_kind(host: Host) -> str:
    """'git' | 'missing' (absent or empty dir) | 'foreign' (a non-empty non-checkout)."""
    dest = Path(host.checkout)
    if (dest / ".git").exists():
        return "git"
    return "foreign" if dest.exists() and any(dest.iterdir()) else "missing"


def clone(host: Host, src: tuple[str, str | None, str | None]) -> None:
    dest = Path(host.checkout)
    url, branch, commit = src
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Clone beside the target and rename, so an interrupted clone never looks finished.
    tmp = dest.with_name(dest.name + f".cloning-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _git(["clone", "-q", *(["--branch", branch] if branch else []), "--", url, str(tmp)])
        if commit:
            _git(["checkout", "-q", "--detach", commit], tmp)
        if dest.exists():
            dest.rmdir()
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- lab.json


def read_state(inv: Inventory) -> dict:
    try:
        return json.loads((Path(lab_of(inv).state_dir) / "lab.json").read_text())
    except (OSError, ValueError):
        return {}


def write_state(inv: Inventory) -> dict:
    """lab.json: what `down` must find again even after the inventory changed."""
    lab = lab_of(inv)
    state = {
        "inventory": str(inv.path), "prefix": lab.prefix, "bridge": lab.bridge, "state_dir": lab.state_dir,
        "known_hosts": os.path.expanduser(inv.known_hosts),
        "namespaces": [namespace(inv, h) for h in inv.hosts],
        "veths": [veth_name(inv, h) for h in inv.hosts],
        "hosts": {}, "updated": time.time(),
    }
    plan = cpu_plan(inv)
    for h in inv.hosts:
        try:
            ino = os.stat(Path("/run/netns", namespace(inv, h))).st_ino
        except OSError:
            ino = None
        state["hosts"][h.name] = {
            "namespace": namespace(inv, h), "netns_inode": ino, "veth": veth_name(inv, h),
            "interface": h.interface, "ip": h.ip, "mac": host_mac(h), "ssh_port": h.ssh_port,
            "sshd_pid": sshd.pid(inv, h), "checkout": h.checkout, "cpus": plan[h.name],
        }
    old = read_state(inv)
    state["irqs"] = old.get("irqs", {})  # written as they change (save_irq): kept until `down` restores them
    if {k: v for k, v in old.items() if k != "updated"} != {k: v for k, v in state.items() if k != "updated"}:
        _write_state_dict(inv, state)
    return state


def _write_state_dict(inv: Inventory, state: dict) -> None:
    write_if_changed(Path(lab_of(inv).state_dir) / "lab.json", json.dumps(state, indent=2) + "\n")


def save_irq(inv: Inventory, irq: int, entry: dict, replace: bool = False) -> None:
    """Record IRQ ``irq``'s affinity before the lab changes it (``entry``: name, affinity, and
    ``refused`` when the kernel refused the change). Written before the change, so a lab that
    crashes right after leaves what ``down`` (or the next ``up``) must restore. The first
    record of an IRQ is its original affinity: later ones never overwrite it (``replace``: the
    entry itself changes, e.g. to say the change was refused)."""
    state = read_state(inv)
    saved = state.setdefault("irqs", {})
    if str(irq) in saved and not replace:
        return
    saved[str(irq)] = entry
    _write_state_dict(inv, state)


def forget_irqs(inv: Inventory, irqs) -> None:
    """Drop the records of IRQs whose affinity is back as it was (or whose IRQ is gone)."""
    state = read_state(inv)
    saved = state.get("irqs", {})
    if any(str(n) in saved for n in irqs):
        for n in irqs:
            saved.pop(str(n), None)
        _write_state_dict(inv, state)
