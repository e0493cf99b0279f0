"""iproute2/ethtool/sysfs plumbing of the lab: run a command, read links, addresses, offload and
RPS state (in the root namespace or a lab namespace), detach XDP. Commands are argument
lists, never shell strings; a failing command is a one-line LabError.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from .names import LabError

RPS = "/sys/class/net/{}/queues/rx-0/rps_cpus"


def run(argv, check: bool = True, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    argv = list(argv)
    r = subprocess.run(argv, capture_output=True, text=True, input=input, timeout=timeout,
                       stdin=None if input is not None else subprocess.DEVNULL)
    if check and r.returncode != 0:
        msg = (r.stderr.strip() or r.stdout.strip() or f"exit {r.returncode}").splitlines()[-1]
        raise LabError(f"{' '.join(argv)}: {msg}")
    return r


def ip(ns: str | None, *argv: str) -> tuple[str, ...]:
    """``ip [-n ns] argv...``"""
    return ("ip", *(("-n", ns) if ns else ()), *argv)


def in_ns(ns: str | None, *argv: str) -> tuple[str, ...]:
    """``[ip netns exec ns] argv...`` (sysfs shows a namespace's devices only this way)."""
    return (("ip", "netns", "exec", ns) if ns else ()) + argv


def ip_json(ns: str | None, *argv: str) -> list[dict]:
    r = run(ip(ns, "-j", *argv), check=False)
    if r.returncode != 0 or not r.stdout.strip():
        return []
    return json.loads(r.stdout)


def link(dev: str, ns: str | None = None) -> dict | None:
    """``ip -j link show dev X`` (in ns), None if it does not exist."""
    links = ip_json(ns, "link", "show", "dev", dev)
    return links[0] if links else None


def links(ns: str | None = None) -> list[dict]:
    return ip_json(ns, "link", "show")


def addrs(dev: str, ns: str | None = None) -> list[str]:
    return [f"{a['local']}/{a['prefixlen']}" for link_ in ip_json(ns, "-4", "addr", "show", "dev", dev)
            for a in link_.get("addr_info", [])]


def is_up(link_: dict | None) -> bool:
    return "UP" in (link_ or {}).get("flags", [])


def ns_exists(ns: str) -> bool:
    return Path("/run/netns", ns).exists()


def tx_off(dev: str, ns: str | None) -> bool:
    """Whether TX checksum offload is off on dev (False when it cannot be read)."""
    r = run(in_ns(ns, "ethtool", "-k", dev), check=False)
    return r.returncode == 0 and "tx-checksumming: off" in r.stdout


def rps_mask(dev: str, ns: str | None) -> int | None:
    """The device's rx-0 RPS mask, None when unreadable (no device, kernel without RPS)."""
    r = run(in_ns(ns, "cat", RPS.format(dev)), check=False)
    if r.returncode != 0:
        return None
    try:
        return int(r.stdout.strip().replace(",", "") or "0", 16)
    except ValueError:
        return None


def rps_supported() -> bool:
    return Path(RPS.format("lo")).exists()


def xdp_off(dev: str, ns: str | None) -> bool:
    """Detach every XDP mode from dev; True if a program was attached."""
    # XDP attached through netlink outlives the process that attached it; `xdp off` alone
    # picks the driver mode on veth, so detach every mode explicitly (harmless if none).
    link_ = link(dev, ns)
    if link_ is None or "xdp" not in link_:
        return False
    for mode in ("xdp", "xdpgeneric", "xdpdrv", "xdpoffload"):
        run(ip(ns, "link", "set", "dev", dev, mode, "off"), check=False)
    return True


def mounts_under(paths: list[str]) -> list[str]:
    try:
        text = Path("/proc/self/mounts").read_text()
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        mp = line.split()[1].encode().decode("unicode_escape")  # \040 etc.
        if any(mp == p or mp.startswith(p.rstrip("/") + "/") for p in paths):
            out.append(mp)
    return out
