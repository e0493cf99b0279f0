"""Device IRQs and their CPU affinity, read from /proc/irq (standard library only; both halves).

A device IRQ's handler, and the softirq it raises (BLOCK for a disk completion, NET_RX for a
NIC), run on the CPU the interrupt lands on: on a dedicated hardworker CPU that work is charged
to the hardworker. ``read`` lists the IRQs that have a handler (a named directory under
/proc/irq/N) with their ``smp_affinity_list`` and, where the kernel reports it, the effective
affinity (the CPU the interrupt controller delivers to). The lab steers them (tcpskim.lab.steps);
``invoke doctor`` warns about the ones that may land on the hardworker's CPUs (``on_cpus``).
"""

from __future__ import annotations

from pathlib import Path

ROOT = "/proc/irq"


def parse_cpus(text: str) -> list[int]:
    """A kernel CPU list ("0-2,5") as CPU numbers ([0, 1, 2, 5]); "" is []."""
    out: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return sorted(out)


def cpu_list(cpus) -> str:
    """CPU numbers as a kernel CPU list: [0, 1, 2, 5] -> "0-2,5"."""
    runs: list[list[int]] = []
    for c in sorted(set(cpus)):
        if runs and c == runs[-1][1] + 1:
            runs[-1][1] = c
        else:
            runs.append([c, c])
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)


def affinity_path(irq: int, root: str | None = None) -> str:
    return f"{root or ROOT}/{irq}/smp_affinity_list"


def _text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def read(root: str | None = None) -> dict[int, dict]:
    """{irq: {"name", "affinity", "effective"}} for every IRQ with a handler. ``name`` joins the
    handlers of a shared line; ``effective`` is None where the kernel has no such file."""
    out = {}
    base = Path(root or ROOT)
    try:
        entries = sorted((int(p.name), p) for p in base.iterdir() if p.name.isdigit())
    except OSError:
        return {}
    for n, d in entries:
        try:
            names = sorted(p.name for p in d.iterdir() if p.is_dir())
        except OSError:
            continue
        affinity = _text(d / "smp_affinity_list")
        if not names or affinity is None:  # no handler: nothing lands anywhere
            continue
        out[n] = {"name": ",".join(names), "affinity": affinity, "effective": _text(d / "effective_affinity_list")}
    return out


def on_cpus(irqs: dict, cpus) -> list[int]:
    """The IRQs whose affinity includes one of ``cpus``. An IRQ whose effective affinity the
    kernel reports as empty is not delivered by affinity (a per-CPU IRQ such as a timer or an
    arm64 IPI fires on every CPU whatever its mask says) and is left out."""
    want = set(cpus)
    out = []
    for n, irq in sorted(irqs.items(), key=lambda kv: int(kv[0])):
        if irq.get("effective") == "":
            continue
        if want & set(parse_cpus(irq["affinity"])):
            out.append(int(n))
    return out
