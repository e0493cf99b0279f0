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
* RPS steering of the hardworker's receive processing to its dedicated CPU, and every device IRQ
  that can move off it (the affinities it changed are in lab.json; ``down`` restores them).

``up`` reads what exists (``facts.gather``), computes the missing steps (``steps.diff``, pure)
and runs them (``actions.apply``); ``up(dry_run=True)`` prints the steps instead. ``down`` removes all
of it (and tolerates any half-built state); ``status`` reports it. ``up`` twice changes nothing
the second time. Commands are argument lists, never shell strings.

Rooms: ``names`` (naming, CPU planning), ``steps`` (facts, steps, diff), ``facts`` (reading),
``actions`` (running steps, the report), ``net`` (iproute2/ethtool/sysfs), ``sshd``, ``procs`` (lab
processes), ``state`` (state dir, lab.json, known_hosts, checkouts), ``teardown`` (``down``).
"""

from __future__ import annotations

import os
import subprocess
import sys

from roles import irqs

from ..inventory import Inventory
from . import net, sshd
from .actions import Report, apply
from .facts import gather
from .names import (LabError, cpu_mask, cpu_plan, derived_mac, host_dir, host_mac, lab_key, lab_of,  # noqa: F401
                    namespace, other_cpus, parse_mask, veth_name)
from .steps import Plan, Step, diff
from .state import control_checkout  # noqa: F401
from .state import read_state, write_state
from .teardown import down as _down

__all__ = ["LabError", "up", "down", "status", "irq_status", "ns_exec", "plan", "apply", "Report", "Plan", "Step",
           "namespace", "veth_name", "derived_mac", "host_mac", "host_dir", "lab_key", "cpu_plan",
           "other_cpus", "cpu_mask", "parse_mask", "control_checkout"]


def _require(inv: Inventory) -> None:
    lab_of(inv)
    if not sys.platform.startswith("linux"):
        raise LabError(f"the local lab needs Linux (network namespaces); this is {sys.platform}")
    if os.geteuid() != 0:
        raise LabError("the local lab needs root (it creates namespaces, veths, a bridge and sshds): run as root")


def _require_tools() -> None:
    import shutil

    missing = [t for t in ("ip", "ethtool", "ssh-keygen", "git") if not shutil.which(t)]
    if not os.access(sshd.SSHD, os.X_OK):
        missing.append(sshd.SSHD + " (openssh-server)")
    if missing:
        raise LabError(f"the local lab needs these programs, missing: {', '.join(missing)}")


def plan(inv: Inventory, bridge_netns: str | None = None) -> Plan:
    """What ``up`` would do now: the missing steps, what is in place, warnings (root, Linux).
    ``bridge_netns``: build the bridge in that namespace (a plain wire for data-path tests,
    unreachable from the control machine; see ``steps.Facts``)."""
    _require(inv)
    _require_tools()
    return diff(inv, gather(inv, bridge_netns))


def up(inv: Inventory, log=print, dry_run: bool = False) -> dict:
    """Build (or complete) the local lab; idempotent.

    Returns ``{"created": [...], "found": [...], "warnings": [...], "state": <lab.json>}``;
    a second run has an empty ``created`` list. With ``dry_run``, nothing changes: the steps
    are printed, ``created`` is empty, ``steps`` lists what would be created and ``state``
    is the current lab.json.
    """
    p = plan(inv)
    rep = Report(log)
    rep.found = list(p.found)
    for w in p.warnings:
        rep.warn(w)
    apply(inv, p.steps, rep, dry_run=dry_run)
    if dry_run:
        log(f"lab {inv.name} (dry run): {len(p.steps)} step(s) to take, {len(p.found)} already in place")
        return {"created": [], "steps": [s.what for s in p.steps], "found": rep.found,
                "warnings": rep.warnings, "state": read_state(inv)}
    state = write_state(inv)
    log(f"lab {inv.name}: {len(rep.created)} created, {len(rep.found)} already in place"
        + (f", {len(rep.warnings)} warning(s)" if rep.warnings else ""))
    return {"created": rep.created, "found": rep.found, "warnings": rep.warnings, "state": state}


def down(inv: Inventory, log=print, bridge_netns: str | None = None) -> dict:
    """Remove everything ``up`` made; works on any half-built lab and when nothing is left.
    ``bridge_netns``: the one given to ``plan``, if any.

    Returns ``{"removed": [...], "warnings": [...]}``.
    """
    _require(inv)
    rep = Report(log)
    _down(inv, rep, bridge_netns)
    log(f"lab {inv.name}: down, {len(rep.removed)} item(s) removed"
        + (f", {len(rep.warnings)} warning(s)" if rep.warnings else ""))
    return {"removed": rep.removed, "warnings": rep.warnings}


def status(inv: Inventory) -> list[dict]:
    """One row per host: namespace, link, address, MAC, sshd, port, checkout commit, RPS."""
    _require(inv)
    rows = []
    for h in inv.hosts:
        ns = namespace(inv, h)
        row = {"host": h.name, "role": h.role, "namespace": ns, "netns": net.ns_exists(ns),
               "link": "missing", "address": "", "mac": "", "sshd_pid": None, "port_open": False,
               "checkout": "", "rps_cpus": ""}
        link = net.link(h.interface, ns) if row["netns"] else None
        if link is not None:
            flags = link.get("flags", [])
            row["link"] = "up" if "UP" in flags and "LOWER_UP" in flags else "down"
            row["mac"] = link.get("address", "")
            row["address"] = " ".join(net.addrs(h.interface, ns))
            row["rps_cpus"] = net.run(net.in_ns(ns, "cat", net.RPS.format(h.interface)), check=False).stdout.strip()
        row["sshd_pid"] = sshd.pid(inv, h)
        row["port_open"] = row["netns"] and sshd.port_open(h.ip, h.ssh_port)
        if os.path.exists(os.path.join(h.checkout, ".git")):
            r = net.run(["git", "-C", h.checkout, "rev-parse", "--short", "HEAD"], check=False)
            row["checkout"] = r.stdout.strip() if r.returncode == 0 else "(no commit)"
        rows.append(row)
    return rows


def irq_status(inv: Inventory) -> list[dict]:
    """One row per device IRQ: its affinity and effective CPUs, whether it may land on the
    hardworker's dedicated CPUs, and what this lab did to it (the affinity ``down`` restores)."""
    _require(inv)
    hw = set(cpu_plan(inv)[inv.hardworker.name])
    saved = read_state(inv).get("irqs", {})
    rows = []
    for n, irq in irqs.read().items():
        s = saved.get(str(n))
        lab = "" if s is None else f"refused ({s['refused']})" if "refused" in s else f"steered (was {s['affinity']})"
        rows.append({"irq": n, "name": irq["name"], "affinity": irq["affinity"], "effective": irq["effective"] or "",
                     "hw_cpu": "yes" if hw & set(irqs.parse_cpus(irq["affinity"])) else "", "lab": lab})
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
