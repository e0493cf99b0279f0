"""``invoke deploy``: every host clones or fast-forwards its checkout, then its runtime is checked.

The host half runs with the distribution's python3 (bcc from python3-bpfcc is importable only
there), so "preparing the runtime" means checking that python3 imports bcc and pyroute2 and
that bcc finds kernel headers (linking the headers shim when the kernel ships none).
``--install-deps`` installs what is missing with the host's package manager.

Each host's deploy is ONE SSH command: a clone if there is no checkout yet, then
``hostctl deploy`` (``roles.deployctl``), which pulls, re-checks bcc only when its package
changed, and answers changed or not. A checkout older than that command gets one plain
``git pull`` first, after which it has it.
"""

from __future__ import annotations

import json
import shlex

from . import CHECKOUT, localgit
from .fleet import Fleet, HostError, HostResult, remote_path
from .outcome import Answer, read_answer
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


def deploy_command(host: Host, remote: str, branch: str, check: bool = False) -> str:
    """The one shell command of a host's deploy (clone when needed, then hostctl deploy)."""
    q = shlex.quote
    ck = remote_path(host.checkout)
    flag = " --check" if check else ""
    hostctl = f"{q(host.python)} -m roles.hostctl deploy --remote {q(remote)} --branch {q(branch)}{flag}"
    if check:
        would = {"changed": True, "failed": False, "msg": f"would clone {branch} of {remote}",
                 "data": {"action": "would clone"}}
        absent = f"printf '%s\\n' {q(json.dumps(would))}"
        return f"if ! test -d {ck}/.git; then {absent}; else cd {ck} && exec {hostctl}; fi"
    clone = f"git clone --quiet --branch {q(branch)} -- {q(remote)} {ck} >&2"
    return f"if ! test -d {ck}/.git; then {clone} && cd {ck} && exec {hostctl} --after none; " \
           f"else cd {ck} && exec {hostctl}; fi"


def update_host(fleet: Fleet, host: Host, remote: str, branch: str, check: bool = False) -> Answer:
    """The host's deploy in one round trip; an old checkout (no ``hostctl deploy``) is pulled first."""
    r = fleet.run(host, deploy_command(host, remote, branch, check), warn=True)
    if r.exited == 2 and "invalid choice: 'deploy'" in r.stderr and not check:
        ck = remote_path(host.checkout)
        fleet.run(host, f"git -C {ck} checkout --quiet {shlex.quote(branch)} && "
                        f"git -C {ck} pull --quiet --ff-only origin {shlex.quote(branch)}")
        r = fleet.run(host, deploy_command(host, remote, branch), warn=True)
    ans = read_answer(r, "deploy")
    if ans.data.get("needs_root"):  # no kernel headers and not root: link them as root, once
        shim = fleet.call(host, "headers-shim", *(["--check"] if check else []))
        ans.data.update(shim.data, needs_root=False)
        ans.changed |= shim.changed
        ans.msg += f"; {shim.msg}" if shim.changed else ""
    return ans


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


def deploy(fleet: Fleet, hosts: list[Host], *, install: bool = False, check: bool = False,
           guard_unit: bool = False) -> list[HostResult]:
    """``guard_unit``: also write and enable the guard's systemd unit (a second call, with the
    code just pulled: ``hostctl guard-unit``)."""
    remote, branch = code_source(fleet.inv)
    control_head = localgit.head()

    def one(host: Host) -> HostResult:
        notes = [install_deps(fleet, host)] if install and not check else []
        ans = update_host(fleet, host, remote, branch, check)
        if guard_unit and ans.data.get("action") == "would clone":
            notes.append("would write and enable the guard unit after the clone")
        elif guard_unit:
            unit = fleet.call(host, "guard-unit", *(["--check"] if check else []))
            ans.changed |= unit.changed
            notes.append(unit.msg)
        new = ans.data.get("commit") or ""
        if new and new != control_head:
            notes.append(f"differs from control HEAD {control_head[:10]}")
        return ans.result(host.name, "; ".join([ans.msg, *notes]),
                          {**ans.data, "commit": new[:10], "same_as_control": new == control_head})

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
