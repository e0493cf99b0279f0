"""doctor on a fake fleet: whether the tracepoint attribution can run on each host (tracefs, the
tracepoints bpf/attribution.c needs, BPF run-time stats), one line per missing item."""

from __future__ import annotations

import pytest

from fakefleet import role_fleet
from roles import attribution
from tcpskim.doctor import COLUMNS, attribution_items, doctor

READY = {"tracefs": "/sys/kernel/tracing", "tracefs_error": None, "missing": [], "lost": {},
         "bpf_stats": "BPF_ENABLE_STATS", "bpf_stats_error": None}


def _fleet(tmp_path, attr_by_host):
    fleet = role_fleet(tmp_path)
    for name, host in fleet.hosts.items():
        check = {"kernel": "6.12.0-fake", "arch": "aarch64", "headers": "present", "pyroute2": "ok",
                 "bcc": "compiles+loads", "xdp_modes": ["generic"], "time": 0.0}
        if attr_by_host.get(name) is not None:
            check["attribution"] = attr_by_host[name]
        host.hostctl_on("check", check).hostctl_on("commit", {"commit": "0" * 40})
        host.on(r"^id -u$", "0\n")
    return fleet


def test_a_ready_host_is_ok(tmp_path):
    fleet = _fleet(tmp_path, {n: READY for n in ("sensor", "hardworker", "logger")})
    res = {r.host: r for r in doctor(fleet, fleet.inv.hosts)}
    assert "attribution" in COLUMNS
    assert all(r.status == "ok" and r.data["attribution"] == "ok" and r.detail == "" for r in res.values()), res


def test_every_missing_item_is_one_line_naming_it(tmp_path):
    broken = {"tracefs": None, "tracefs_error": "mount: permission denied", "missing": None, "lost": None,
              "bpf_stats": None, "bpf_stats_error": "kernel.bpf_stats_enabled is not writable"}
    no_sched = {**READY, "missing": ["sched/sched_switch", "irq/softirq_entry"],
                "lost": {"napi/napi_poll": "NAPI polls per record"}}
    fleet = _fleet(tmp_path, {"hardworker": broken, "logger": no_sched, "sensor": None})
    res = {r.host: r for r in doctor(fleet, fleet.inv.hosts)}
    hw = res["hardworker"]
    assert hw.status == "failed" and hw.data["attribution"] == "NO"
    lines = hw.detail.splitlines()
    assert len(lines) == 2, lines
    assert "tracefs" in lines[0] and "/sys/kernel/tracing or /sys/kernel/debug/tracing" in lines[0] \
        and "permission denied" in lines[0] and "attribution cannot run" in lines[0]
    assert lines[1].startswith("BPF stats:") and "not writable" in lines[1]
    # the logger's CPU is not traced: its missing tracepoints are noted, one line each, not a failure
    lg = res["logger"]
    assert lg.status == "ok" and lg.data["attribution"] == "NO"
    assert lg.detail.splitlines() == [
        "tracepoint sched/sched_switch: missing, attribution needs it",
        "tracepoint irq/softirq_entry: missing, attribution needs it",
        "tracepoint napi/napi_poll: missing, the attribution goes without NAPI polls per record"]
    assert res["sensor"].data["attribution"] == "unknown" and "invoke deploy" in res["sensor"].detail


def test_tracefs_to_mount_and_optional_events_do_not_fail_the_hardworker(tmp_path):
    a = {**READY, "tracefs": "mountable", "lost": {"ipi/ipi_entry": "IPI time by reason"}}
    column, problems, notes = attribution_items(a)
    assert (column, problems) == ("ok, 1 optional missing", [])
    assert notes == ["tracefs: not mounted; the hardworker mounts it at /sys/kernel/tracing when it starts",
                     "tracepoint ipi/ipi_entry: missing, the attribution goes without IPI time by reason"]
    missing_hw = {**READY, "missing": ["irq/irq_handler_entry"]}
    fleet = _fleet(tmp_path, {"hardworker": missing_hw, "logger": READY, "sensor": READY})
    hw = next(r for r in doctor(fleet, fleet.inv.hosts) if r.host == "hardworker")
    assert hw.status == "failed" and hw.detail == "tracepoint irq/irq_handler_entry: missing, attribution needs it"


def test_host_check_reads_tracefs_without_changing_the_host(tmp_path, monkeypatch):
    """roles.attribution.check on a fake tracefs tree: present, missing, per architecture."""
    root = tmp_path / "tracing"
    for e in attribution.REQUIRED + ("napi/napi_poll", "ipi/ipi_send_cpu", "irq_vectors/local_timer_entry"):
        (root / "events" / e).mkdir(parents=True)
    monkeypatch.setattr(attribution, "TRACEFS_PLACES", (str(tmp_path / "absent"), str(root)))
    monkeypatch.setattr(attribution, "_bpf_stats_switch", lambda: ("BPF_ENABLE_STATS", None))
    x86 = attribution.check("x86_64")
    assert x86["tracefs"] == str(root) and x86["missing"] == []
    assert set(x86["lost"]) == {"power/cpu_idle", "irq_vectors/call_function_entry",
                                "irq_vectors/call_function_single_entry", "irq_vectors/reschedule_entry",
                                "irq_vectors/irq_work_entry"}
    arm = attribution.check("aarch64")
    assert set(arm["lost"]) == {"power/cpu_idle", "ipi/ipi_entry"}  # no x86 vectors expected there
    (root / "events" / "sched" / "sched_switch").rmdir()
    assert attribution.check("aarch64")["missing"] == ["sched/sched_switch"]


@pytest.mark.skipif(not attribution.os.path.isdir("/proc/sys/kernel"), reason="Linux only")
def test_host_check_on_this_machine_answers_every_key():
    a = attribution.check()
    assert set(a) == set(READY)
    assert a["tracefs"] is not None or a["tracefs_error"]
