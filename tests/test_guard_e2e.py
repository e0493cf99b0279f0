"""The network guard end to end on the lab, through the real `invoke` as a user runs it: pins
damaged and a MAC changed in the middle of 2 kHz xdp trials, the guard's status, and `stop`.

The damage is done in the hosts' namespaces while the trial runs; the times come from the
guard's journal (``<checkout>/.tcpskim/guard/events.jsonl``) and from the neighbour table read
here. Every test leaves the lab as it found it: MACs restored and no guard running, even when
it fails (the session's lab is torn down at the end as always)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tcpskim import CHECKOUT, lab

from helpers import ROOT, run_invoke

pytestmark = pytest.mark.lab  # builds the e2e lab

WRONG_MAC = "02:00:00:00:be:ef"
NEW_LOGGER_MAC = "02:00:00:00:10:99"


def neigh(inv, host, ip):
    """(lladdr, states) of host's neighbour entry for ip, or None."""
    out = lab.ns_exec(inv, host.name, ["ip", "-j", "neigh", "show", "dev", host.interface]).stdout
    for row in json.loads(out or "[]"):
        if row["dst"] == ip:
            return row.get("lladdr"), row.get("state", [])
    return None


def pinned(inv, host, peer, mac) -> bool:
    got = neigh(inv, host, peer.ip)
    return got is not None and got[0] == mac and "PERMANENT" in got[1]


def guard_dir(host) -> Path:
    return Path(host.checkout) / ".tcpskim" / "guard"


def events(host, kind=None, since=0.0) -> list[dict]:
    path = guard_dir(host) / "events.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [e for e in rows if e["time"] >= since and kind in (None, e["kind"])]


def wait_for(cond, timeout: float, what: str) -> float:
    """Seconds until cond() held (polled every 2 ms); fails the test at the timeout."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(0.002)
    return time.monotonic() - t0


def xdp_addrs(inv, host):
    """The address map of the XDP program on host's interface (bpf objects are global)."""
    from roles import bpfmap

    link = json.loads(lab.ns_exec(inv, host.name, ["ip", "-j", "-d", "link", "show", host.interface]).stdout)[0]
    prog = link.get("xdp", {}).get("prog", {}).get("id")
    if not prog:
        return None
    return bpfmap.prog_addrs(prog)


def guard_processes(inv) -> list[str]:
    left = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            with contextlib.suppress(OSError):
                argv = (p / "cmdline").read_bytes().decode(errors="replace").split("\0")
                if "roles.guard" in argv and any(a.startswith(inv.lab.state_dir) for a in argv):
                    left.append(f"{p.name}: {' '.join(argv)}")
    return left


def role_pids(inv) -> dict[str, int]:
    out = {}
    for h in inv.hosts:
        for f in (Path(h.checkout) / ".tcpskim" / "pids").glob("*.pid"):
            with contextlib.suppress(OSError, ValueError):
                out[f"{h.name}/{f.stem}"] = int(f.read_text().split()[0])
    return out


def alive(pid: int) -> bool:
    with contextlib.suppress(OSError):
        return "roles." in (Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"))
    return False


@contextlib.contextmanager
def trial_running(inv, path, tag, *extra):
    """A 2 kHz xdp run-experiment in the background; yields once its window is open, then waits
    for it to end and yields its result into the list it gave: [exit code, output, rows]."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TCPSKIM_INVENTORY": str(path)}
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "-r", str(ROOT), "run-experiment", "--rate", "2000",
                             "--duration", "8", "--warmup", "1", "--repeat", "1", "--modes", "xdp", "--no-idle",
                             "--tag", tag, *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    result = []
    try:
        runs = Path(inv.hardworker.checkout) / ".tcpskim" / "runs"
        deadline = time.time() + 180
        while time.time() < deadline and not any(runs.glob(f"*-{tag}/*/go.json")) and proc.poll() is None:
            time.sleep(0.05)
        go = json.loads(next(runs.glob(f"*-{tag}/*/go.json")).read_text())["start_at"]
        time.sleep(max(0.0, go + 1.5 - time.time()))  # inside the measurement window
        yield result
        out, _ = proc.communicate(timeout=120)
        m = re.search(r"^run (\S+) ok: ", out, re.M)
        rows = json.loads((CHECKOUT / "results" / m.group(1) / "summary.json").read_text())["rows"] if m else []
        result.extend([proc.returncode, out, rows])
    finally:
        if proc.poll() is None:
            proc.kill()
            run_invoke(path, "stop", timeout=120)


def assert_complete(result):
    code, out, rows = result
    assert code == 0, out
    (row,) = rows
    assert row["lost"] == row["duplicates"] == row["corrupt"] == 0, row
    assert row["sent"] == row["delivered"] == row["logged"] >= 2000 * 8, row


def test_pins_damaged_mid_trial_are_restored_within_1s(deployed):
    """run-experiment --guard: the sensor's pin for the hardworker is deleted, then set to a
    wrong MAC, during a 2 kHz xdp trial; each is restored within 1 s, nothing is lost."""
    inv, path = deployed
    sensor, hw = inv.sensors[0], inv.hardworker
    hw_mac = lab.host_mac(hw)
    times = {}
    try:
        with trial_running(inv, path, "pins", "--guard") as result:
            assert pinned(inv, sensor, hw, hw_mac)
            for name, damage in (("deleted", ["ip", "neigh", "del", hw.ip, "dev", sensor.interface]),
                                 ("wrong MAC", ["ip", "neigh", "replace", hw.ip, "lladdr", WRONG_MAC, "nud",
                                                "permanent", "dev", sensor.interface])):
                t0 = time.time()
                assert lab.ns_exec(inv, sensor.name, damage).returncode == 0
                seen = wait_for(lambda: pinned(inv, sensor, hw, hw_mac), 1.0, f"pin {name}")
                pins = [e for e in events(sensor, "pin", since=t0) if e["ip"] == hw.ip]
                assert pins and pins[0]["mac"] == hw_mac, events(sensor, since=t0)
                times[name] = (pins[0]["time"] - t0, seen)
                assert pins[0]["time"] - t0 < 1.0, times
                time.sleep(1.0)
        assert_complete(result)
        print(f"\nrestored (journal, neighbour table) s: {times}")
        assert re.search(r"^guard: .*sensor start", result[1], re.M), result[1]
        assert "guard on sensor: stopped the guard" in result[1]  # the run stops what it started
        assert guard_processes(inv) == []
    finally:
        lab.ns_exec(inv, sensor.name, ["ip", "neigh", "replace", hw.ip, "lladdr", hw_mac, "nud", "permanent",
                                       "dev", sensor.interface])
        run_invoke(path, "guard.stop", timeout=120)


def test_a_mac_change_mid_trial_reaches_every_pin_and_the_xdp_rewrite(deployed):
    """guard.start, then the logger's MAC changes during a 2 kHz xdp trial: every other host's
    pin and the hardworker's XDP rewrite follow within 2 s, no role restarts, nothing is lost.
    Then guard.status shows the events with their times, and stop leaves no guard."""
    inv, path = deployed
    logger, hw = inv.logger, inv.hardworker
    old = lab.host_mac(logger)
    others = [h for h in inv.hosts if h.name != logger.name]
    r = run_invoke(path, "guard.start")
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"^hardworker\s+changed\s+start\s+\d+\s+3\s+\S+", r.stdout, re.M), r.stdout
    dedicated = set(lab.cpu_plan(inv)[hw.name])
    if len(dedicated) == 1:  # no guard, the hardworker's own included, on the hardworker's CPU
        for h in inv.hosts:
            pid = int((guard_dir(h) / "guard.pid").read_text())
            assert not os.sched_getaffinity(pid) & dedicated, (h.name, os.sched_getaffinity(pid))
    follow = {}
    try:
        with trial_running(inv, path, "macchange") as result:
            assert xdp_addrs(inv, hw)[1] == (logger.ip, old)
            pids = role_pids(inv)
            assert {"hardworker/hardworker-0", "logger/logger-0", "sensor/sensor-1"} <= set(pids), pids
            t0 = time.time()
            assert lab.ns_exec(inv, logger.name, ["ip", "link", "set", "dev", logger.interface, "address",
                                                  NEW_LOGGER_MAC]).returncode == 0
            follow["pins+xdp"] = wait_for(lambda: all(pinned(inv, h, logger, NEW_LOGGER_MAC) for h in others)
                                          and xdp_addrs(inv, hw)[1] == (logger.ip, NEW_LOGGER_MAC), 2.0,
                                          "the MAC change")
            learns = {h.name: [e for e in events(h, "learn", since=t0) if e["ip"] == logger.ip] for h in others}
            assert all(learns.values()), learns
            follow["journal"] = max(v[0]["time"] for v in learns.values()) - t0
            xdp = [e for e in events(hw, "xdp", since=t0) if e.get("mac") == NEW_LOGGER_MAC]
            assert xdp and xdp[0]["time"] - t0 < 2.0, events(hw, since=t0)
            follow["xdp journal"] = xdp[0]["time"] - t0
            time.sleep(1.0)
            assert role_pids(inv) == pids and all(alive(p) for p in pids.values())  # nothing restarted
        assert_complete(result)
        print(f"\nMAC change followed in s: {follow}")
        # back to the lab's MAC: followed the same way
        lab.ns_exec(inv, logger.name, ["ip", "link", "set", "dev", logger.interface, "address", old])
        wait_for(lambda: all(pinned(inv, h, logger, old) for h in others), 2.0, "the MAC restored")
        st = run_invoke(path, "guard.status", "--events", "50")
        assert st.returncode == 0, st.stdout + st.stderr
        assert re.search(r"^sensor: last \d+ guard event\(s\)$", st.stdout, re.M), st.stdout
        assert re.search(rf"^  \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{{3}}Z learn +ip={re.escape(logger.ip)} "
                         rf"mac={re.escape(NEW_LOGGER_MAC)} old={re.escape(old)}", st.stdout, re.M), st.stdout
        for h in inv.hosts:
            assert re.search(rf"^{h.name}\s+ok\s+running \(pid \d+, since [^)]+\)\s+3/3 ok", st.stdout, re.M), st.stdout
    finally:
        lab.ns_exec(inv, logger.name, ["ip", "link", "set", "dev", logger.interface, "address", old])
        s = run_invoke(path, "stop", timeout=120)
    assert s.returncode == 0, s.stdout + s.stderr
    assert len(re.findall(r"stopped the guard \(pid \d+\)", s.stdout)) == len(inv.hosts), s.stdout
    assert guard_processes(inv) == []
    r = run_invoke(path, "fix-network")  # the lab's pins, as the next test expects them
    assert r.returncode == 0, r.stdout + r.stderr
