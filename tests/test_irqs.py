"""Device IRQ steering off the hardworker's dedicated CPU: reading /proc/irq (a fake tree in
tmp), the lab's plan (pure, on fake facts), applying it and restoring what it changed (a fake
tree in tmp: no root), and doctor's warning. The real /proc/irq is exercised by test_lab.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from roles import irqs
from tcpskim import lab
from tcpskim.doctor import dedicated_cpus, irq_items, irq_warning
from tcpskim.lab import state, teardown
from tcpskim.lab.steps import Facts, diff

from helpers import write_lab_inventory


def fake_irq(root: Path, n: int, affinity: str, *names: str, effective: str | None = "") -> Path:
    d = root / str(n)
    d.mkdir(parents=True)
    (d / "smp_affinity_list").write_text(affinity + "\n")
    if effective is not None:
        (d / "effective_affinity_list").write_text((effective or affinity.split("-")[0].split(",")[0]) + "\n")
    for name in names:
        (d / name).mkdir()
    return d


@pytest.fixture
def tree(tmp_path):
    """A 4-CPU machine's /proc/irq: a disk on 0-3 delivered to 3, a NIC queue on 3 alone, a
    serial port already on 0, a shared line, an IRQ without a handler and a file beside them."""
    root = tmp_path / "irq"
    fake_irq(root, 36, "0-3", "virtio1-req.0", effective="3")
    fake_irq(root, 38, "3", "virtio2-input.0")
    fake_irq(root, 26, "0", "ttyS0")
    fake_irq(root, 9, "0-3", "acpi", "i801_smbus")
    fake_irq(root, 7, "0-3")  # no handler
    (root / "default_smp_affinity").write_text("f\n")
    return root


@pytest.fixture
def inv(tmp_path):
    return write_lab_inventory(tmp_path / "lab", prefix="tsi", base=192, name="irqtest")


def test_cpu_lists_round_trip():
    assert irqs.parse_cpus("0-2,5,7-8\n") == [0, 1, 2, 5, 7, 8] and irqs.parse_cpus("") == []
    assert irqs.cpu_list([8, 0, 1, 2, 5, 7]) == "0-2,5,7-8" and irqs.cpu_list([3]) == "3"
    assert irqs.cpu_list([]) == ""


def test_read_lists_irqs_with_a_handler(tree):
    got = irqs.read(str(tree))
    assert sorted(got) == [9, 26, 36, 38]
    assert got[36] == {"name": "virtio1-req.0", "affinity": "0-3", "effective": "3"}
    assert got[9]["name"] == "acpi,i801_smbus"
    (tree / "26" / "effective_affinity_list").unlink()  # a kernel without effective affinity
    assert irqs.read(str(tree))[26]["effective"] is None
    assert irqs.read(str(tree / "absent")) == {}


def test_on_cpus_skips_irqs_delivered_per_cpu(tree):
    got = irqs.read(str(tree))
    assert irqs.on_cpus(got, [3]) == [9, 36, 38]
    got[9]["effective"] = ""  # a per-CPU IRQ: no effective affinity, fires on every CPU anyway
    assert irqs.on_cpus(got, [3]) == [36, 38]
    assert irqs.on_cpus(got, []) == []


def facts_of(tree, saved=None, ncpu=4) -> Facts:
    return Facts(ncpu=ncpu, source=("/src", "main", None), irqs=irqs.read(str(tree)), irqs_saved=saved or {},
                 irq_root=str(tree))


def irq_steps(plan):
    return [s for s in plan.steps if s.area == "irq"]


def test_plan_moves_irqs_off_the_hardworker_cpu(inv, tree):
    plan = diff(inv, facts_of(tree))
    steps = irq_steps(plan)
    assert [s.what for s in steps] == ["IRQ 9 (acpi,i801_smbus) affinity 0-3 -> 0-2",
                                       "IRQ 36 (virtio1-req.0) affinity 0-3 -> 0-2",
                                       "IRQ 38 (virtio2-input.0) affinity 3 -> 0-2"]  # nothing left: the others
    assert [(c.argv, c.input) for c in steps[1].cmds] == [(("tee", f"{tree}/36/smp_affinity_list"), "0-2\n")]
    assert steps[1].op == "irq" and steps[1].args == (36, "virtio1-req.0", "0-3")
    assert "1 device IRQ(s) off CPU 3" in plan.found
    # after the sshds' and before known_hosts: the order diff's other steps keep
    whats = [s.what for s in plan.steps]
    assert whats.index("rps_cpus 7 on bridge port tsi-logger") < whats.index(steps[0].what) < \
        whats.index("sshd of sensor on 198.18.0.194:22")


def test_plan_keeps_refused_irqs_and_what_is_off_already(inv, tree):
    saved = {"36": {"name": "virtio1-req.0", "affinity": "0-3", "refused": "Input/output error"},
             "38": {"name": "virtio2-input.0", "affinity": "3"}}
    (tree / "38" / "smp_affinity_list").write_text("0-2\n")  # steered by an earlier up
    plan = diff(inv, facts_of(tree, saved))
    assert [s.what for s in irq_steps(plan)] == ["IRQ 9 (acpi,i801_smbus) affinity 0-3 -> 0-2"]
    assert "IRQ 36 (virtio1-req.0) on CPUs 0-3: refuses affinity changes (Input/output error)" in plan.found
    assert "2 device IRQ(s) off CPU 3" in plan.found


def test_plan_without_a_cpu_to_dedicate_restores_what_a_lab_changed(tmp_path, tree):
    off = write_lab_inventory(tmp_path / "off", prefix="tsi", base=192, dedicate=False)
    saved = {"26": {"name": "ttyS0", "affinity": "0-3"}, "38": {"name": "virtio2-input.0", "affinity": "3"},
             "36": {"name": "virtio1-req.0", "affinity": "0", "refused": "Input/output error"}}
    for plan in (diff(off, facts_of(tree, saved)), diff(off, facts_of(tree, saved, ncpu=1))):
        steps = irq_steps(plan)
        assert [s.what for s in steps] == ["IRQ 26 (ttyS0) affinity 0 -> 0-3 (restored)"]  # 38 is as it was
        assert steps[0].op == "irq_restore" and steps[0].cmds[0].input == "0-3\n"
    assert irq_steps(diff(off, facts_of(tree))) == []


def refuse(tree: Path, n: int) -> Path:
    """Make IRQ n's smp_affinity_list refuse writes (as a managed IRQ's does, with EIO): a
    directory in its place, which ``tee`` cannot write (root ignores file modes)."""
    p = tree / str(n) / "smp_affinity_list"
    p.unlink()
    p.mkdir()
    return p


def test_apply_records_before_changing_and_down_restores_exactly(inv, tree):
    state.make_state_dir(inv)
    before = irqs.read(str(tree))
    rep = lab.Report(lambda *_: None)
    lab.apply(inv, irq_steps(diff(inv, facts_of(tree))), rep)
    assert len(rep.created) == 3 and rep.warnings == []
    now = irqs.read(str(tree))
    assert {n: v["affinity"] for n, v in now.items()} == {9: "0-2", 26: "0", 36: "0-2", 38: "0-2"}
    saved = state.read_state(inv)["irqs"]
    assert saved == {str(n): {"name": before[n]["name"], "affinity": before[n]["affinity"]} for n in (9, 36, 38)}
    # a second up changes nothing and keeps the originals, also through lab.json's rewrite
    assert irq_steps(diff(inv, facts_of(tree, saved))) == []
    assert state.write_state(inv)["irqs"] == saved and state.read_state(inv)["irqs"] == saved
    down = lab.Report(lambda *_: None)
    teardown._restore_irqs(saved, down, root=str(tree))
    assert {n: v["affinity"] for n, v in irqs.read(str(tree)).items()} == {n: v["affinity"] for n, v in before.items()}
    assert down.removed == ["IRQ 9 (acpi,i801_smbus) steering: affinity 0-2 -> 0-3",
                            "IRQ 36 (virtio1-req.0) steering: affinity 0-2 -> 0-3",
                            "IRQ 38 (virtio2-input.0) steering: affinity 0-2 -> 3"]


def test_a_refused_irq_is_warned_once_recorded_and_left_alone(inv, tree):
    state.make_state_dir(inv)
    facts = facts_of(tree)
    p = refuse(tree, 36)
    rep = lab.Report(lambda *_: None)
    lab.apply(inv, irq_steps(diff(inv, facts)), rep)
    p.rmdir()
    p.write_text("0-3\n")  # as the kernel left it
    assert len(rep.warnings) == 1 and rep.warnings[0].startswith(
        "IRQ 36 (virtio1-req.0) refuses affinity changes (Is a directory): stays on CPUs 0-3")
    assert "IRQ 36 (virtio1-req.0) affinity 0-3 -> 0-2" not in rep.created and len(rep.created) == 2
    saved = state.read_state(inv)["irqs"]
    assert saved["36"] == {"name": "virtio1-req.0", "affinity": "0-3", "refused": "Is a directory"}
    again = diff(inv, facts_of(tree, saved))  # the next up: found, not tried again, no warning
    assert irq_steps(again) == [] and again.warnings == []
    assert "IRQ 36 (virtio1-req.0) on CPUs 0-3: refuses affinity changes (Is a directory)" in again.found
    down = lab.Report(lambda *_: None)
    teardown._restore_irqs(saved, down, root=str(tree))  # nothing to restore for 36
    assert all("IRQ 36" not in r for r in down.removed) and down.warnings == []


def test_a_crashed_lab_is_restored_by_the_next_down(inv, tree):
    """The record is written before the change: a lab killed right after steering (before
    lab.json's final write) leaves the original affinities for the next up (kept) and down."""
    state.make_state_dir(inv)
    state.save_irq(inv, 38, {"name": "virtio2-input.0", "affinity": "3"})
    (tree / "38" / "smp_affinity_list").write_text("0-2\n")  # the crash came after the write
    state.save_irq(inv, 38, {"name": "virtio2-input.0", "affinity": "0-2"})  # a later record never wins
    saved = state.read_state(inv)["irqs"]
    assert saved == {"38": {"name": "virtio2-input.0", "affinity": "3"}}
    assert all("IRQ 38" not in s.what for s in irq_steps(diff(inv, facts_of(tree, saved))))
    rep = lab.Report(lambda *_: None)
    teardown._restore_irqs(saved, rep, root=str(tree))
    assert (tree / "38" / "smp_affinity_list").read_text() == "3\n"
    gone = lab.Report(lambda *_: None)
    teardown._restore_irqs({"99": {"name": "gone", "affinity": "0"}}, gone, root=str(tree))  # device removed
    assert gone.removed == gone.warnings == []


def test_restore_step_forgets_the_record(tmp_path, tree):
    off = write_lab_inventory(tmp_path / "off", prefix="tsi", base=192, dedicate=False)
    state.make_state_dir(off)
    state.save_irq(off, 26, {"name": "ttyS0", "affinity": "0-3"})
    rep = lab.Report(lambda *_: None)
    lab.apply(off, irq_steps(diff(off, facts_of(tree, state.read_state(off)["irqs"]))), rep)
    assert rep.created == ["IRQ 26 (ttyS0) affinity 0 -> 0-3 (restored)"]
    assert (tree / "26" / "smp_affinity_list").read_text() == "0-3\n"
    assert state.read_state(off)["irqs"] == {}


def test_doctor_warns_in_one_line_naming_irqs_and_cpu(inv, tree):
    got = {str(n): v for n, v in irqs.read(str(tree)).items()}  # as JSON brings them
    w = irq_warning(got, [3])
    assert "\n" not in w and w.startswith("3 device IRQ(s) may land on the hardworker's dedicated CPU 3")
    assert "36 virtio1-req.0 (there now), 38 virtio2-input.0 (there now), 9 acpi,i801_smbus;" in w  # there now first
    assert irq_warning(got, [0, 1, 2]) .startswith("3 device IRQ(s) may land") and irq_warning(got, []) is None
    assert irq_warning({"26": got["26"]}, [3]) is None and irq_warning(None, [3]) is None
    many = {str(n): {"name": f"q{n}", "affinity": "0-3", "effective": "0"} for n in range(10)}
    assert irq_warning(many, [3], limit=2).count(" q") == 2 and "and 8 more" in irq_warning(many, [3], limit=2)
    assert irq_items(got, [3]) == ("3 on CPU 3", [f"warning: {w}"])
    assert irq_items({"26": got["26"]}, [3]) == ("none on CPU 3", [])
    assert irq_items(None, [3]) == irq_items(got, []) == ("", [])  # an old checkout; no dedicated CPU
    hw = inv.hardworker
    assert dedicated_cpus(inv, inv.logger) == [] and dedicated_cpus(inv, hw) == lab.cpu_plan(inv)[hw.name]


def test_check_reports_irqs_as_json(monkeypatch, tree):
    import sys

    from roles import netops

    monkeypatch.setattr(irqs, "ROOT", str(tree))
    monkeypatch.setitem(sys.modules, "bcc", None)  # check() then stops at "bcc not importable"
    got = json.loads(json.dumps(netops.check(type("A", (), {"interface": None})())))["irqs"]
    assert got["36"]["name"] == "virtio1-req.0" and set(got) == {"9", "26", "36", "38"}
