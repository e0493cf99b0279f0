"""``invoke deploy``: every host clones or fast-forwards its checkout, then its runtime is checked.

The host half runs with the distribution's python3 (bcc from python3-bpfcc is importable only
there), so "preparing the runtime" means checking that python3 imports bcc and pyroute2 and
that bcc finds kernel headers (linking the headers shim when the kernel ships none).
``--install-deps`` installs what is missing with the host's package manager.
"""

from __future__ import annotations

import shlex

from . import CHECKOUT, localgit
from .fleet import Fleet, HostError, HostResult, remote_path
from .inventory import Host, Inventory

# Debian / Raspberry Pi OS / Ubuntu package names for the host half.
APT_PACKAGES = ["git", "python3", "python3-bpfcc", "bpfcc-tools", "python3-pyroute2",
                "iproute2", "ethtool", "nftables"]


def code_source(inv: Inventory) -> tuple[str, str]:
    """(remote, branch) hosts pull from; the lab pulls from the control checkout itself."""
    remote = inv.code_remote or str(CHECKOUT)
    try:
        branch = inv.code_branch or localgit.branch()
    except RuntimeError as exc:  # not a git checkout, git missing...
        raise ValueError(f"cannot read the control checkout's branch: {exc}") from None
    if branch == "HEAD":  # `git rev-parse --abbrev-ref HEAD` on a detached HEAD
        raise ValueError("the control checkout is on a detached HEAD: check out a branch "
                         "or set code.branch in the inventory")
    return remote, branch


def sync_checkout(fleet: Fleet, host: Host, remote: str, branch: str) -> tuple[str, str | None, str]:
    """Clone or ``git pull --ff-only``; returns (action, old_commit, new_commit)."""
    ck = remote_path(host.checkout)
    q = shlex.quote
    r = fleet.run(host, f"git -C {ck} rev-parse HEAD 2>/dev/null", warn=True)
    old = r.stdout.strip() if r.exited == 0 else None
    if old is None:
        fleet.run(host, f"git clone --quiet --branch {q(branch)} -- {q(remote)} {ck}")
        action = "cloned"
    else:
        url = fleet.run(host, f"git -C {ck} remote get-url origin", warn=True).stdout.strip()
        if url != remote:
            raise HostError(f"checkout {host.checkout} pulls from {url!r}, inventory says {remote!r}")
        fleet.run(host, f"git -C {ck} checkout --quiet {q(branch)} && git -C {ck} pull --quiet --ff-only origin {q(branch)}")
        action = "pulled"
    new = fleet.run(host, f"git -C {ck} rev-parse HEAD").stdout.strip()
    return action, old, new


def install_deps(fleet: Fleet, host: Host) -> str:
    r = fleet.run(host, "command -v apt-get", warn=True)
    if r.exited != 0:
        raise HostError("no apt-get on this host: install bcc (python3 bindings), pyroute2, kernel headers, "
                        "iproute2 and ethtool with its package manager")
    arch = fleet.run(host, "dpkg --print-architecture").stdout.strip()
    headers = {"amd64": "linux-headers-amd64", "arm64": "raspberrypi-kernel-headers linux-headers-arm64"}.get(arch, "")
    # Raspberry Pi OS names its headers package differently; apt takes the first that exists.
    pkgs = " ".join(APT_PACKAGES)
    fleet.run(host, f"DEBIAN_FRONTEND=noninteractive apt-get update -qq && "
                    f"DEBIAN_FRONTEND=noninteractive apt-get install -y -qq {pkgs}", root=True, timeout=1800)
    got = []
    for h in headers.split():
        if fleet.run(host, f"DEBIAN_FRONTEND=noninteractive apt-get install -y -qq {shlex.quote(h)}",
                     root=True, warn=True, timeout=1800).exited == 0:
            got.append(h)
            break
    return f"apt: {pkgs}" + (f" {got[0]}" if got else " (no kernel headers package found)") + " present"


def check_runtime(fleet: Fleet, host: Host) -> dict:
    """Host half runtime: python3 imports bcc + pyroute2; headers present (shim if needed)."""
    q = shlex.quote
    r = fleet.run(host, f"{q(host.python)} -c 'import bcc, pyroute2'", warn=True)
    if r.exited != 0:
        raise HostError(f"{host.python} cannot import bcc/pyroute2 ({(r.stderr.strip().splitlines() or ['?'])[-1]}); "
                        "run invoke deploy --install-deps")
    return fleet.hostctl(host, "headers-shim")


def deploy(fleet: Fleet, hosts: list[Host], *, install: bool = False) -> list[HostResult]:
    remote, branch = code_source(fleet.inv)
    control_head = localgit.head()

    def one(host: Host) -> HostResult:
        notes = []
        if install:
            notes.append(install_deps(fleet, host))
        action, old, new = sync_checkout(fleet, host, remote, branch)
        shim = check_runtime(fleet, host)
        if shim.get("created"):
            notes.append(f"linked kernel headers {shim['headers']} (kernel has none)")
        status = "changed" if old != new else "ok"
        if new != control_head:
            notes.append(f"differs from control HEAD {control_head[:10]}")
        detail = f"{action} {old[:10] + '..' if old and old != new else ''}{new[:10]}"
        return HostResult(host.name, status, "; ".join([detail, *notes]),
                          {"commit": new[:10], "same_as_control": new == control_head})

    return fleet.each(hosts, one)


def control_warnings(inv: Inventory) -> list[str]:
    """What the control checkout has that hosts will not get."""
    warn = []
    remote, branch = code_source(inv)
    if localgit.dirty():
        warn.append("the control checkout has uncommitted changes: hosts get only committed code")
    if inv.code_remote:
        n = localgit.unpushed(f"origin/{branch}")
        if n:
            warn.append(f"the control checkout has {n} commit(s) not on origin/{branch}: push them first")
    return warn
