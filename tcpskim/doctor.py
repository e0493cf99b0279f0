"""``invoke doctor``: one row per host with everything that must hold before an experiment."""

from __future__ import annotations

import re

from roles import irqs as irqmod

from . import localgit
from .clock import offset
from .fleet import Fleet, HostError, HostResult, remote_path
from .inventory import Host, Inventory

# bcc's LLVM backend and the XDP JIT need a 64-bit kernel; Raspberry Pi OS 32-bit reports armv7l.
UNSUPPORTED_ARCH = {"armv7l": "32-bit ARM: bcc/XDP need Raspberry Pi OS 64-bit (aarch64)",
                    "armv6l": "32-bit ARM: bcc/XDP need Raspberry Pi OS 64-bit (aarch64)",
                    "i686": "32-bit x86 is not supported by bcc's XDP path"}

# Kernels whose verifier was shown to accept bpf/*.c and that passed the XDP tests (README,
# "Supported hosts"; scripts/arm64-check runs Debian's 6.1 and 6.12 arm64 kernels). Below 6.1
# the programs are refused; newer kernels are flagged as unverified, not refused.
SUPPORTED_KERNELS = ((6, 1), (6, 18))


def kernel_range(release: str) -> tuple[str | None, str | None]:
    """(problem, note) for a kernel release string such as ``6.1.0-28-arm64``."""
    m = re.match(r"(\d+)\.(\d+)", release or "")
    lo, hi = SUPPORTED_KERNELS
    span = f"{lo[0]}.{lo[1]}-{hi[0]}.{hi[1]}"
    if not m:
        return f"kernel {release!r}: cannot tell its version (supported: {span})", None
    v = (int(m[1]), int(m[2]))
    if v < lo:
        return (f"kernel {release} is older than the supported {span}: the XDP programs need "
                f"{lo[0]}.{lo[1]}'s verifier and helpers"), None
    if v > hi:
        return None, f"newer than the verified {span}"
    return None, None


COLUMNS = ["sudo", "kernel", "arch", "bcc", "headers", "iface", "xdp", "attribution", "irqs", "commit", "clock"]
_TRACEFS_PLACES = "/sys/kernel/tracing or /sys/kernel/debug/tracing"


def attribution_items(a: dict | None) -> tuple[str, list[str], list[str]]:
    """(column, problems, notes) from hostctl check's ``attribution``: whether the tracepoint
    attribution of the hardworker's CPU can run (tracefs, the tracepoints bpf/attribution.c
    needs, BPF run-time stats), one item per missing thing, naming it."""
    if not a or a.get("error"):
        why = (a or {}).get("error") or "the host's checkout does not report it (invoke deploy)"
        return "unknown", [f"attribution: cannot tell ({why})"], []
    problems, notes = [], []
    if a.get("tracefs") is None:
        problems.append(f"tracefs: not mounted at {_TRACEFS_PLACES}, and mounting it failed "
                        f"({a.get('tracefs_error') or 'unknown reason'}): attribution cannot run")
    elif a["tracefs"] == "mountable":
        notes.append("tracefs: not mounted; the hardworker mounts it at /sys/kernel/tracing when it starts")
    for event in a.get("missing") or []:
        problems.append(f"tracepoint {event}: missing, attribution needs it")
    for event, lost in (a.get("lost") or {}).items():
        notes.append(f"tracepoint {event}: missing, the attribution goes without {lost}")
    if not a.get("bpf_stats"):
        problems.append(f"BPF stats: cannot be switched on ({a.get('bpf_stats_error')}): the XDP "
                        "program's run time is not measured")
    column = "NO" if problems else ("ok" if not a.get("lost") else f"ok, {len(a['lost'])} optional missing")
    return column, problems, notes


def dedicated_cpus(inv: Inventory, host: Host) -> list[int]:
    """The hardworker's dedicated CPUs: the lab's CPU plan, else the inventory's ``cpus``
    ([] for other roles and for a hardworker that is not pinned)."""
    if host.role != "hardworker":
        return []
    if inv.lab is not None:
        from .lab.names import cpu_plan

        return cpu_plan(inv)[host.name]
    return list(host.cpus)


def irq_warning(irqs: dict | None, cpus: list[int], limit: int = 6) -> str | None:
    """One line naming the device IRQs that may land on the dedicated ``cpus`` (None: none do,
    or nothing to check): their handlers and softirqs run there and are charged to the
    hardworker (a disk's BLOCK completion of anyone's write, another NIC's receive)."""
    if not irqs or not cpus:
        return None
    by = {int(k): v for k, v in irqs.items()}
    want = set(cpus)
    now = {n for n, v in by.items() if want & set(irqmod.parse_cpus(v.get("effective") or ""))}
    hit = sorted(irqmod.on_cpus(by, cpus), key=lambda n: (n not in now, n))  # those delivered there now first
    if not hit:
        return None
    names = [f"{n} {by[n]['name']}" + (" (there now)" if n in now else "") for n in hit[:limit]]
    more = f" and {len(hit) - limit} more" if len(hit) > limit else ""
    return (f"{len(hit)} device IRQ(s) may land on the hardworker's dedicated CPU {irqmod.cpu_list(cpus)} and be "
            f"charged to it: {', '.join(names)}{more}; steer them off (/proc/irq/N/smp_affinity_list, as lab.up does)")


def irq_items(irqs: dict | None, cpus) -> tuple[str, list[str]]:
    """(column, notes) from hostctl check's ``irqs`` for the hardworker's dedicated ``cpus``
    (nothing to say without them, or from a checkout too old to report IRQs)."""
    if not cpus or irqs is None:
        return "", []
    n = len(irqmod.on_cpus({int(k): v for k, v in irqs.items()}, cpus))
    w = irq_warning(irqs, list(cpus))
    return f"{n or 'none'} on CPU {irqmod.cpu_list(cpus)}", [f"warning: {w}"] if w else []


def check_host(fleet: Fleet, host: Host, control_head: str, cpus: list[int] = ()) -> HostResult:
    """``cpus``: the hardworker's dedicated CPUs (device IRQs on them are warned about)."""
    d = {}
    problems = []
    fleet.connection(host)  # "reachable" = this succeeds; failure ends the row with the reason
    r = fleet.run(host, "id -u", root=True, warn=True)
    d["sudo"] = "yes" if r.exited == 0 and r.stdout.strip() == "0" else "NO"
    if d["sudo"] == "NO":
        problems.append("sudo does not work (invoke --prompt-for-sudo-password?)")
    if fleet.run(host, f"test -d {remote_path(host.checkout)}/roles", warn=True).exited != 0:
        raise HostError(f"no checkout at {host.checkout}: run invoke deploy")
    c = fleet.hostctl(host, "check", "--interface", host.interface, timeout=180)
    d["kernel"], d["arch"] = c["kernel"], c["arch"]
    problem, note = kernel_range(c["kernel"])
    if problem:
        problems.append(problem)
    if note:
        d["kernel"] += f" ({note})"
    if c["arch"] in UNSUPPORTED_ARCH:
        problems.append(UNSUPPORTED_ARCH[c["arch"]])
    d["bcc"], d["headers"] = c.get("bcc"), c.get("headers")
    if c.get("bcc") != "compiles+loads":
        problems.append(f"bcc {c.get('bcc')}")
    if c.get("pyroute2") != "ok":
        problems.append(f"pyroute2 {c.get('pyroute2')}")
    try:
        f = fleet.hostctl(host, "facts", "--interface", host.interface)
        d["iface"] = f"{host.interface} {f['mac']} {'up' if f['link_up'] else 'DOWN'}"
        if not f["link_up"]:
            problems.append(f"{host.interface} is down")
        if host.mac and f["mac"].lower() != host.mac:
            problems.append(f"MAC {f['mac']} != inventory {host.mac}")
    except HostError as exc:
        d["iface"] = "missing"
        problems.append(str(exc))
    d["xdp"] = ",".join(c.get("xdp_modes") or []) or "none"
    d["attribution"], attr_problems, notes = attribution_items(c.get("attribution"))
    if host.role == "hardworker":  # only the hardworker's CPU is traced: elsewhere a note
        problems += attr_problems
    else:
        notes = attr_problems + notes
    d["irqs"], irq_notes = irq_items(c.get("irqs"), cpus)
    notes += irq_notes
    commit = fleet.hostctl(host, "commit").get("commit") or "?"
    d["commit"] = commit[:10] + ("" if commit == control_head else " (!= control)")
    o = offset(fleet, host)
    d["clock"] = f"{o['offset_s'] * 1e3:+.1f}±{o['uncertainty_s'] * 1e3:.1f} ms"
    # one line per problem, then what the host lacks without failing
    return HostResult(host.name, "failed" if problems else "ok", "\n".join(problems + notes), d)


def doctor(fleet: Fleet, hosts: list[Host]) -> list[HostResult]:
    head = localgit.head()
    return fleet.each(hosts, lambda h: check_host(fleet, h, head, dedicated_cpus(fleet.inv, h)))
