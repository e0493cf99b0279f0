"""Run the steps of a ``steps.Plan``, and the report every lab operation returns.

A step either runs its commands in order or is one of the named actions below (files, keys,
sshd, known_hosts, clone, IRQ affinity). ``dry_run`` prints each step and its commands, and runs
nothing. An action may answer a warning instead (an IRQ the kernel would not move): the step is
then reported as a warning, not as created.
"""

from __future__ import annotations

from pathlib import Path

from ..inventory import Inventory
from . import sshd, state
from .names import host_dir, lab_key
from .net import run
from .steps import Step, authorized_keys_text


class Report:
    """created / found / removed / warnings of one lab operation, logged as they happen."""

    def __init__(self, log):
        self.log = log
        self.created: list[str] = []
        self.found: list[str] = []
        self.removed: list[str] = []
        self.warnings: list[str] = []

    def made(self, what: str) -> None:
        self.created.append(what)
        self.log(f"created  {what}")

    def gone(self, what: str) -> None:
        self.removed.append(what)
        self.log(f"removed  {what}")

    def warn(self, what: str) -> None:
        self.warnings.append(what)
        self.log(f"warning  {what}")


def _run_cmds(inv: Inventory, step: Step) -> None:
    for c in step.cmds:
        run(c.argv, check=c.check, input=c.input)


def _keygen(inv: Inventory, step: Step) -> None:
    path = Path(step.args[0])
    for p in (path, path.with_name(path.name + ".pub")):
        p.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    _run_cmds(inv, step)


def _write(inv: Inventory, step: Step) -> None:
    path, text = Path(step.args[0]), step.args[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    state.write_if_changed(path, text)


def _authorized_keys(inv: Inventory, step: Step) -> None:
    host = inv.host(step.args[0])
    pub = lab_key(inv).with_name(lab_key(inv).name + ".pub").read_text()
    _write(inv, Step(step.area, step.host, step.what, args=(
        str(host_dir(inv, host) / "authorized_keys"), authorized_keys_text(pub, state.custom_pub(inv, host)))))


def _irq_write(step: Step) -> str | None:
    """Run the step's one ``tee`` into smp_affinity_list; None, or the kernel's reason."""
    c = step.cmds[0]
    r = run(c.argv, check=False, input=c.input)
    if r.returncode == 0:
        return None
    return (r.stderr.strip() or f"exit {r.returncode}").splitlines()[-1].rpartition(": ")[2]


def _irq(inv: Inventory, step: Step) -> str | None:
    n, name, old = step.args
    state.save_irq(inv, n, {"name": name, "affinity": old})  # before the change: a crash leaves it to restore
    why = _irq_write(step)
    if why is None:
        return None
    # Managed IRQs (the kernel spreads a device's queue vectors over the CPUs itself, e.g.
    # virtio-blk's request queues) and per-CPU ones refuse (EIO; EPERM on this 6.18 kernel); only
    # the boot parameter isolcpus=managed_irq,CPUS keeps managed ones off a CPU.
    saved = state.read_state(inv).get("irqs", {}).get(str(n), {"name": name, "affinity": old})
    state.save_irq(inv, n, {**saved, "refused": why}, replace=True)
    return (f"IRQ {n} ({name}) refuses affinity changes ({why}): stays on CPUs {old} "
            "(a managed or per-CPU IRQ; isolcpus=managed_irq,CPU at boot keeps managed ones off a CPU)")


def _irq_restore(inv: Inventory, step: Step) -> str | None:
    why = _irq_write(step)
    if why is not None:
        return f"{step.what}: {why}"
    state.forget_irqs(inv, [step.args[0]])
    return None


def _clone(inv: Inventory, step: Step) -> None:
    name, *src = step.args
    state.clone(inv.host(name), tuple(src))


ACTIONS = {
    "": _run_cmds,
    "state_dir": lambda inv, step: state.make_state_dir(inv),
    "keygen": _keygen,
    "write": _write,
    "authorized_keys": _authorized_keys,
    "sshd": lambda inv, step: sshd.start(inv, inv.host(step.args[0])),
    "known_hosts": lambda inv, step: state.write_known_hosts(inv),
    "clone": _clone,
    "irq": _irq,
    "irq_restore": _irq_restore,
}


def apply(inv: Inventory, steps: list[Step], rep: Report, dry_run: bool = False) -> None:
    for step in steps:
        if dry_run:
            rep.log(f"would create  {step.what}")
            for c in step.cmds:
                rep.log(f"    $ {c}")
            continue
        warning = ACTIONS[step.op](inv, step)
        if isinstance(warning, str):  # (other actions may answer a value, e.g. sshd's pid)
            rep.warn(warning)
        else:
            rep.made(step.what)
