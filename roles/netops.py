"""Host-side network facts and fixes (pyroute2), and host checks, for ``roles.hostctl``.

Subcommands: ``facts`` (interface MAC/state, kernel, arch, clock), ``neigh-pin`` (permanent
neighbour entries, read back), ``netfix`` (fix-network's one call: the host's own interface
checked against the MAC its peers will pin, then ``neigh-pin``), ``neigh-show``, ``detach-xdp``,
``headers-shim`` (make bcc find kernel headers when the running kernel has none) and ``check``
(what ``invoke doctor`` shows: bcc imports, compiles and loads a trivial XDP program, which XDP
modes attach, the device IRQs' affinities). Commands that change state answer in
``roles.answer``'s shape and take ``--check``.
"""

from __future__ import annotations

import glob
import json
import os
import platform
import re
import shutil
import subprocess
import time
from pathlib import Path

from roles import irqs
from roles.answer import add_check, answer, failure

NUD_PERMANENT = 0x80
CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _ipr():
    from pyroute2 import IPRoute  # host half only: pyroute2 is not needed on the control machine

    return IPRoute()


class _Msg(dict):
    """A netlink message as pyroute2 shows one: fields as items, attributes by ``get_attr``."""

    def __init__(self, attrs: dict, **fields):
        super().__init__(fields)
        self.attrs = attrs

    def get_attr(self, name):
        return self.attrs.get(name)


class IpRoute2:
    """The few IPRoute calls of ``neigh-pin`` and ``netfix``, answered by iproute2 (``ip -j``).

    Importing pyroute2 costs about 0.25 s of CPU here (more on a Raspberry Pi) against a few ms
    for two ``ip`` runs, and fix-network runs these on every host, every time."""

    def __init__(self):
        self.names: dict[int, str] = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    @staticmethod
    def _ip(*args: str, check: bool = True):
        r = subprocess.run(["ip", *args], capture_output=True, text=True)
        if r.returncode and check:
            raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()[:200]}")
        return json.loads(r.stdout or "[]") if r.returncode == 0 and "-j" in args else None

    def link_lookup(self, ifname: str) -> list[int]:
        links = self._ip("-j", "link", "show", "dev", ifname, check=False) or []
        self.links = {link["ifindex"]: link for link in links}
        self.names.update({link["ifindex"]: link["ifname"] for link in links})
        return list(self.links)

    def get_links(self, idx: int):
        link = self.links[idx]
        return [_Msg({"IFLA_ADDRESS": link.get("address"), "IFLA_OPERSTATE": link.get("operstate")},
                     index=idx, flags=1 if "UP" in link.get("flags", []) else 0)]

    def get_neighbours(self, ifindex: int, family: int = 2):
        rows = self._ip("-j", "-4", "neigh", "show", "dev", self.names[ifindex])
        return [_Msg({"NDA_DST": n.get("dst"), "NDA_LLADDR": n.get("lladdr")},
                     state=NUD_PERMANENT if "PERMANENT" in n.get("state", []) else 0) for n in rows]

    def neigh(self, op: str, dst: str, lladdr: str, ifindex: int, state: int):
        assert op == "replace" and state == NUD_PERMANENT
        self._ip("neigh", "replace", dst, "lladdr", lladdr, "dev", self.names[ifindex], "nud", "permanent")


def _neighbours():
    """What pins neighbours: iproute2 (JSON output since 4.14) when installed, pyroute2 otherwise."""
    return IpRoute2() if shutil.which("ip") else _ipr()


def _link(ipr, ifname: str):
    idx = ipr.link_lookup(ifname=ifname)
    if not idx:
        raise RuntimeError(f"interface {ifname!r} does not exist on this host")
    return ipr.get_links(idx[0])[0]


def facts(args) -> dict:
    with _ipr() as ipr:
        link = _link(ipr, args.interface)
        xdp = link.get_attr("IFLA_XDP")
        prog = xdp.get_attr("IFLA_XDP_PROG_ID") if xdp else None
        addrs = [a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=link["index"], family=2)]
        return {
            "interface": args.interface,
            "mac": link.get_attr("IFLA_ADDRESS"),
            "link_up": link.get_attr("IFLA_OPERSTATE") in ("UP", "UNKNOWN") and bool(link["flags"] & 1),
            "mtu": link.get_attr("IFLA_MTU"),
            "ipv4": addrs,
            "xdp_prog_id": prog,
            "kernel": platform.release(),
            "arch": platform.machine(),
            "hostname": platform.node(),
            "time": time.time(),
            "checkout": CHECKOUT,  # absolute: where this host's state_dir lives
            "ncpu": os.cpu_count(),
        }


def neigh_show(args) -> dict:
    with _ipr() as ipr:
        idx = _link(ipr, args.interface)["index"]
        rows = []
        for n in ipr.get_neighbours(ifindex=idx, family=2):
            rows.append({"ip": n.get_attr("NDA_DST"), "mac": n.get_attr("NDA_LLADDR"),
                         "permanent": bool(n["state"] & NUD_PERMANENT), "state": n["state"]})
        return {"neighbours": rows}


def _pin(ipr, interface: str, wanted: dict[str, str], check: bool) -> tuple[list[str], list[str]]:
    """Pin ``wanted`` (IP -> MAC) as PERMANENT where it differs; read back. (changed, ok) IPs."""
    changed, ok = [], []
    idx = _link(ipr, interface)["index"]
    have = {n.get_attr("NDA_DST"): n for n in ipr.get_neighbours(ifindex=idx, family=2)}
    for ip, mac in wanted.items():
        n = have.get(ip)
        if n is not None and n["state"] & NUD_PERMANENT and (n.get_attr("NDA_LLADDR") or "").lower() == mac.lower():
            ok.append(ip)
            continue
        if not check:
            ipr.neigh("replace", dst=ip, lladdr=mac, ifindex=idx, state=NUD_PERMANENT)
        changed.append(ip)
    if not check and changed:
        now = {n.get_attr("NDA_DST"): n for n in ipr.get_neighbours(ifindex=idx, family=2)}
        for ip, mac in wanted.items():
            n = now.get(ip)
            if n is None or not n["state"] & NUD_PERMANENT or (n.get_attr("NDA_LLADDR") or "").lower() != mac.lower():
                raise RuntimeError(f"neighbour {ip} -> {mac} did not stick on {interface}")
    return changed, ok


def _pin_answer(changed: list[str], ok: list[str], check: bool, data: dict | None = None):
    verb = "would pin" if check else "pinned"
    msg = f"{verb} {', '.join(changed)}" if changed else f"{len(ok)} peers already pinned"
    return answer({**(data or {}), "changed": changed, "ok": ok, "check": check}, changed=bool(changed), msg=msg)


def neigh_pin(args):
    """Pin ``IP=MAC`` pairs as PERMANENT neighbours; change only what differs; verify by reading back."""
    wanted = dict(p.split("=", 1) for p in args.peer)
    check = args.check or args.dry_run
    with _neighbours() as ipr:
        changed, ok = _pin(ipr, args.interface, wanted, check)
    return _pin_answer(changed, ok, check)


def netfix(args):
    """fix-network in one call: this host's interface up and carrying ``--mac`` (what its peers
    pin for it), then its peers pinned. A wrong MAC fails before anything is pinned."""
    wanted = dict(p.split("=", 1) for p in args.peer)
    with _neighbours() as ipr:
        link = _link(ipr, args.interface)
        mac = (link.get_attr("IFLA_ADDRESS") or "").lower()
        up = link.get_attr("IFLA_OPERSTATE") in ("UP", "UNKNOWN") and bool(link["flags"] & 1)
        data = {"mac": mac, "interface": args.interface}
        if not up:
            return failure(f"{args.interface} is down", data)
        if args.mac and mac != args.mac.lower():
            return failure(f"{args.interface} has MAC {mac}, {args.mac_source} says {args.mac.lower()}", data)
        changed, ok = _pin(ipr, args.interface, wanted, args.check)
    return _pin_answer(changed, ok, args.check, data)


def _xdp_prog(interface: str):
    with _ipr() as ipr:
        xdp = _link(ipr, interface).get_attr("IFLA_XDP")
        return xdp.get_attr("IFLA_XDP_PROG_ID") if xdp else None


def detach_xdp(args):
    if args.check:
        prog = _xdp_prog(args.interface)
        return answer({"detached": False, "prog_id": prog, "interface": args.interface}, changed=bool(prog),
                      msg=f"would detach XDP prog {prog}" if prog else "no XDP program attached")
    from roles import xdp

    detached = bool(xdp.detach_any(args.interface))
    return answer({"detached": detached, "interface": args.interface}, changed=detached,
                  msg=f"detached XDP from {args.interface}" if detached else "no XDP program attached")


def _headers_dir() -> Path:
    return Path("/lib/modules") / platform.release() / "build"


def headers_shim(args):
    """bcc needs /lib/modules/$(uname -r)/build. When the running kernel ships no headers (VMs,
    custom kernels), link the newest distribution headers package: enough for programs that use
    only UAPI headers, which is all tcpskim's are. Done only when headers are missing."""
    build = _headers_dir()
    if build.exists():
        shim = build.is_symlink() and "linux-headers" in os.readlink(build)
        return answer({"headers": str(build.resolve()), "shim": shim}, msg="kernel headers present")
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    candidates = sorted(glob.glob(f"/usr/src/linux-headers-*-{arch}") + glob.glob("/usr/src/linux-headers-*-rpi-*"),
                        key=lambda p: [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", p)])
    if not candidates:
        raise RuntimeError(f"no kernel headers for {platform.release()} and no /usr/src/linux-headers-*-{arch} "
                           f"package to link (install linux-headers-{arch})")
    target = Path(candidates[-1])
    verb = "would link" if args.check else "linked"
    msg = f"{verb} kernel headers {target} ({platform.release()} has none)"
    if not args.check:
        build.parent.mkdir(parents=True, exist_ok=True)
        build.symlink_to(target)
        common = Path(str(target).rsplit("-", 1)[0] + "-common")
        source = build.parent / "source"
        if common.exists() and not source.exists():
            source.symlink_to(common)
    return answer({"headers": str(target), "shim": True, "created": not args.check}, changed=True, msg=msg)


_TRIVIAL_XDP = "int xdp_pass(struct xdp_md *ctx) { return XDP_PASS; }"


def check(args) -> dict:
    """What doctor needs from the host side. Each item is reported, never raised."""
    out = {"kernel": platform.release(), "arch": platform.machine(), "time": time.time(),
           "python": platform.python_version(), "irqs": irqs.read()}
    build = _headers_dir()
    out["headers"] = ("shim -> " + os.readlink(build)) if build.is_symlink() and "linux-headers" in os.readlink(build) \
        else ("present" if build.exists() else "missing")
    try:  # can the tracepoint attribution of the hardworker's CPU run here?
        from roles import attribution

        out["attribution"] = attribution.check(out["arch"])
    except Exception as exc:
        out["attribution"] = {"error": f"{type(exc).__name__}: {exc}"}
    try:
        import pyroute2  # noqa: F401
        out["pyroute2"] = "ok"
    except ImportError as exc:
        out["pyroute2"] = f"missing ({exc})"
    try:
        from bcc import BPF
    except Exception as exc:  # ImportError, or a broken libbcc
        out["bcc"] = f"not importable: {exc}"
        return out
    out["bcc"] = "importable"
    try:
        b = BPF(text=_TRIVIAL_XDP)
        fn = b.load_func("xdp_pass", BPF.XDP)
        out["bcc"] = "compiles+loads"
    except Exception as exc:
        out["bcc"] = f"compile/load failed: {str(exc).splitlines()[0][:120]}"
        return out
    modes = []
    busy = None
    if args.interface:
        with _ipr() as ipr:
            xdp = _link(ipr, args.interface).get_attr("IFLA_XDP")
            busy = xdp.get_attr("IFLA_XDP_PROG_ID") if xdp else None
    if busy:  # a role (or a leftover) owns the interface: probing would replace its program
        out["xdp_modes"] = [f"in use (prog {busy})"]
        return out
    if args.interface:
        for name, flag in (("generic", BPF.XDP_FLAGS_SKB_MODE), ("native", BPF.XDP_FLAGS_DRV_MODE)):
            try:
                BPF.attach_xdp(args.interface, fn, flag)
                BPF.remove_xdp(args.interface, flag)
                modes.append(name)
            except Exception:
                pass
    out["xdp_modes"] = modes
    return out


def git_commit(args) -> dict:
    root = Path(__file__).resolve().parent.parent
    r = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True)
    return {"commit": r.stdout.strip() or None}


def register(sub) -> None:
    p = sub.add_parser("facts", help="interface MAC/state, kernel, arch, clock")
    p.add_argument("--interface", required=True)
    p.set_defaults(func=facts)
    p = sub.add_parser("neigh-show", help="IPv4 neighbours of an interface")
    p.add_argument("--interface", required=True)
    p.set_defaults(func=neigh_show)
    p = sub.add_parser("neigh-pin", help="pin IP=MAC neighbours as PERMANENT")
    p.add_argument("--interface", required=True)
    p.add_argument("--peer", action="append", default=[], help="IP=MAC, repeatable")
    p.add_argument("--dry-run", action="store_true", help="the same as --check")
    add_check(p)
    p.set_defaults(func=neigh_pin)
    p = sub.add_parser("netfix", help="check this host's MAC, then pin IP=MAC neighbours as PERMANENT")
    p.add_argument("--interface", required=True)
    p.add_argument("--mac", help="the MAC the peers pin for this host: fail if the interface has another")
    p.add_argument("--mac-source", default="the inventory", help="where --mac comes from (for the message)")
    p.add_argument("--peer", action="append", default=[], help="IP=MAC, repeatable")
    add_check(p)
    p.set_defaults(func=netfix)
    p = sub.add_parser("detach-xdp", help="remove any XDP program from an interface")
    p.add_argument("--interface", required=True)
    add_check(p)
    p.set_defaults(func=detach_xdp)
    p = sub.add_parser("headers-shim", help="link distribution kernel headers when the running kernel has none")
    add_check(p)
    p.set_defaults(func=headers_shim)
    p = sub.add_parser("check", help="bcc, headers, XDP modes, IRQ affinities (for invoke doctor)")
    p.add_argument("--interface")
    p.set_defaults(func=check)
    p = sub.add_parser("commit", help="the checkout's commit")
    p.set_defaults(func=git_commit)
