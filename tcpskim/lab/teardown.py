"""``down``: remove everything ``up`` made, in an order that is safe on any half-built lab:
XDP first, then processes, links and namespaces, mounts, device IRQ affinities back as lab.json
recorded them, and last the files.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from roles import irqs

from ..inventory import Inventory
from . import net, procs, state
from .actions import Report
from .names import lab_of, namespace, veth_name


def down(inv: Inventory, rep: Report, b: str | None = None) -> None:
    """``b``: the namespace holding the bridge and the root-side veths (None: the root one)."""
    lab = lab_of(inv)
    old = state.read_state(inv)
    namespaces = list(dict.fromkeys([namespace(inv, h) for h in inv.hosts] + old.get("namespaces", [])))
    veths = list(dict.fromkeys([veth_name(inv, h) for h in inv.hosts] + old.get("veths", [])))
    inodes = {v["netns_inode"] for v in old.get("hosts", {}).values() if v.get("netns_inode")}
    every_ns = namespaces + ([b] if b else [])

    # 1. XDP first, so nothing keeps swallowing traffic if a later step fails.
    for ns in namespaces:
        if net.ns_exists(ns):
            for link in net.links(ns):
                if link.get("ifname") != "lo" and net.xdp_off(link["ifname"], ns):
                    rep.gone(f"XDP program on {ns}:{link['ifname']}")
    for v in veths:
        if net.xdp_off(v, b):
            rep.gone(f"XDP program on {v}")

    # 2. Processes: every process in a lab namespace (sshd, sessions, roles), lab sshds.
    line = procs.end(procs.lab_pids(inv, namespaces, inodes))
    if line:
        rep.gone(line)

    # 3. Links and namespaces (deleting either veth end deletes the pair).
    for v in veths:
        if net.link(v, b) is not None:
            net.run(net.ip(b, "link", "del", "dev", v), check=False)
            rep.gone(f"veth {v}")
    if net.link(lab.bridge, b) is not None:
        net.run(net.ip(b, "link", "del", "dev", lab.bridge), check=False)
        rep.gone(f"bridge {lab.bridge}")
    for ns in every_ns:
        if net.ns_exists(ns):
            r = net.run(["ip", "netns", "del", ns], check=False)
            if r.returncode != 0:
                rep.warn(f"ip netns del {ns}: {r.stderr.strip()}")
            else:
                rep.gone(f"namespace {ns}")

    _unmount(every_ns, lab.state_dir, rep)
    _restore_irqs(old.get("irqs", {}), rep)
    _files(inv, rep)
    leftover = [ns for ns in every_ns if net.ns_exists(ns)] + [v for v in veths if net.link(v, b) is not None]
    if leftover:
        rep.warn(f"still present: {', '.join(leftover)}")


def _unmount(namespaces: list[str], state_dir: str, rep: Report) -> None:
    """A netns bind mount `ip netns del` could not remove, anything in the state dir."""
    for mp in sorted(net.mounts_under([f"/run/netns/{ns}" for ns in namespaces] + [state_dir]), reverse=True):
        r = net.run(["umount", "-l", mp], check=False)
        if r.returncode == 0:
            rep.gone(f"mount {mp}")
        else:
            rep.warn(f"umount {mp}: {r.stderr.strip()}")
    for ns in namespaces:  # the (now unmounted) file `ip netns add` left, if any
        Path("/run/netns", ns).unlink(missing_ok=True)


def _restore_irqs(saved: dict, rep: Report, root: str | None = None) -> None:
    """Every IRQ affinity this lab changed, back to what it was before (exactly the list it
    read; which CPU of it the kernel then delivers to is the kernel's choice). An IRQ that is
    gone (its device removed) has nothing to restore."""
    now = irqs.read(root or irqs.ROOT)
    for key, entry in sorted(saved.items(), key=lambda kv: int(kv[0])):
        n = int(key)
        if "refused" in entry or n not in now or now[n]["affinity"] == entry["affinity"]:
            continue
        try:
            Path(irqs.affinity_path(n, root)).write_text(entry["affinity"] + "\n")
        except OSError as exc:
            rep.warn(f"IRQ {n} ({entry['name']}): affinity not restored to {entry['affinity']}: {exc.strerror}")
            continue
        rep.gone(f"IRQ {n} ({entry['name']}) steering: affinity {now[n]['affinity']} -> {entry['affinity']}")


def _files(inv: Inventory, rep: Report) -> None:
    """known_hosts entries outside the state dir, then the state dir itself."""
    d = Path(lab_of(inv).state_dir)
    kh = Path(inv.known_hosts).expanduser()
    if kh.exists() and not str(kh.resolve()).startswith(str(d.resolve()) + "/") and state.forget_known_hosts(inv):
        rep.gone(f"lab entries in {kh}")
    if d.is_dir():
        if (d / state.MARKER).exists() or not any(d.iterdir()):
            shutil.rmtree(d)
            rep.gone(f"state dir {d}")
        else:
            rep.warn(f"{d} has no {state.MARKER} marker: not deleting a directory tcpskim did not make")
