"""Unit tests of the guard's pure parts: config checks, newest-wins MACs, verdicts, ARP frames,
the socket filter program, the journal and the timers (no root, no network)."""

from __future__ import annotations

import json
import struct

import pytest

from roles import arpwire, guardcfg
from roles.guard import Journal, Timers
from roles.guardcfg import GuardError
from roles.guardpins import verdict

PEERS = {"198.18.0.2": "02:00:c6:12:00:02", "198.18.0.3": "02:00:c6:12:00:03"}


def cfg(**over):
    return {"interface": "eth0", "state_dir": "/var/lib/x", "peers": dict(PEERS), **over}


def test_validate_fills_defaults_and_lowercases():
    c = guardcfg.validate(cfg(peers={"198.18.0.2": "02:AA:C6:12:00:02"}))
    assert c["peers"] == {"198.18.0.2": "02:aa:c6:12:00:02"}
    assert (c["learn"], c["announce"], c["cpus"], c["ip"]) == ("arp", True, [], None)


@pytest.mark.parametrize("over, line", [
    ({"peers": {"198.18.0.2": "00:00:00:00:00:00"}},
     "guard config: peers.198.18.0.2: '00:00:00:00:00:00' is the all-zero MAC address"),
    ({"peers": {"198.18.0.2": "33:33:00:00:00:01"}},
     "guard config: peers.198.18.0.2: '33:33:00:00:00:01' is a multicast MAC address"),
    ({"peers": {"224.0.0.1": "02:00:00:00:00:01"}},
     "guard config: peers.224.0.0.1: '224.0.0.1' is a multicast address, not a host's address"),
    ({"peers": {}}, "guard config: peers: expected a non-empty object {ip: mac}"),
    ({"ip": "198.18.0.2"}, "guard config: peers.198.18.0.2: is this host's own ip"),
    ({"interface": "eth0; rm"}, "guard config: interface: 'eth0; rm' is not an interface name"),
    ({"state_dir": "rel/dir"}, "guard config: state_dir: 'rel/dir' is not an absolute path"),
    ({"learn": "yes"}, "guard config: learn: 'yes' is not 'arp' or 'off'"),
    ({"colour": 1}, "guard config: unknown key 'colour'"),
])
def test_validate_refuses_with_one_line(over, line):
    with pytest.raises(GuardError) as exc:
        guardcfg.validate(cfg(**over))
    assert str(exc.value).startswith(line) and "\n" not in str(exc.value)


def test_stamp_keeps_since_of_unchanged_macs():
    old = guardcfg.stamp(guardcfg.validate(cfg()), None, now=100.0)
    assert old["since"] == {ip: 100.0 for ip in PEERS}
    new = guardcfg.validate(cfg(peers={**PEERS, "198.18.0.3": "02:00:c6:12:00:33"}))
    guardcfg.stamp(new, old, now=200.0)
    assert new["since"] == {"198.18.0.2": 100.0, "198.18.0.3": 200.0}


def test_effective_newest_wins_and_bad_learnt_macs_are_ignored():
    c = guardcfg.stamp(guardcfg.validate(cfg()), None, now=100.0)
    learned = {"198.18.0.2": {"mac": "02:00:c6:12:00:22", "since": 150.0, "source": "arp announcement"},
               "198.18.0.3": {"mac": "02:00:c6:12:00:33", "since": 50.0}}
    eff = guardcfg.effective(c, learned)
    assert eff["198.18.0.2"] == {"mac": "02:00:c6:12:00:22", "since": 150.0, "source": "arp announcement"}
    assert eff["198.18.0.3"]["mac"] == PEERS["198.18.0.3"]  # the control side spoke later
    eff = guardcfg.effective(c, {"198.18.0.2": {"mac": "01:00:5e:00:00:01", "since": 999.0}})
    assert eff["198.18.0.2"]["mac"] == PEERS["198.18.0.2"]


@pytest.mark.parametrize("deleted, state, lladdr, want", [
    (True, 0x80, "02:00:00:00:00:01", "deleted"),
    (False, 0x01, None, "state INCOMPLETE"),
    (False, 0x20, None, "state FAILED"),
    (False, 0x04, "02:00:00:00:00:01", "state STALE"),
    (False, 0x80, "02:00:00:00:00:99", "lladdr 02:00:00:00:00:99 is not 02:00:00:00:00:01"),
    (False, 0x80, "02:00:00:00:00:01", "ok"),
])
def test_verdict(deleted, state, lladdr, want):
    assert verdict(deleted, state, lladdr, "02:00:00:00:00:01") == want


def test_arp_frame_round_trip():
    f = arpwire.frame(1, "02:00:c6:12:00:02", "198.18.0.2")
    assert len(f) == 28
    assert arpwire.parse(f) == (1, "02:00:c6:12:00:02", "198.18.0.2", "198.18.0.2")
    assert arpwire.parse(f[:27]) is None
    assert arpwire.parse(b"\x00\x06" + f[2:]) is None  # not Ethernet


def run_cbpf(prog: bytes, pkt: bytes) -> int:
    """A tiny interpreter for the three instructions the filter uses."""
    ins = [struct.unpack("HBBI", prog[i:i + 8]) for i in range(0, len(prog) - 1, 8)]
    pc, acc = 0, 0
    while True:
        code, jt, jf, k = ins[pc]
        if code == 0x20:
            acc = struct.unpack("!I", pkt[k:k + 4])[0]
            pc += 1
        elif code == 0x15:
            pc += 1 + (jt if acc == k else jf)
        elif code == 0x06:
            return k


def test_socket_filter_accepts_only_peers():
    prog = arpwire._filter(PEERS).raw
    for ip in PEERS:
        assert run_cbpf(prog, arpwire.frame(2, "02:00:00:00:00:09", ip)) > 0
    assert run_cbpf(prog, arpwire.frame(1, "02:00:00:00:00:09", "198.18.0.9")) == 0


def test_journal_lines_have_times_and_rotate(tmp_path):
    j = Journal(str(tmp_path / "e.jsonl"), keep=3, max_bytes=400)
    for i in range(10):
        j("pin", ip=f"198.18.0.{i}")
    j.close()
    lines = [json.loads(x) for x in (tmp_path / "e.jsonl").read_text().splitlines()]
    older = [json.loads(x) for x in (tmp_path / "e.jsonl.1").read_text().splitlines()]
    assert [e["ip"] for e in older + lines][-10:] == [f"198.18.0.{i}" for i in range(10)]
    assert all(isinstance(e["time"], float) for e in lines)
    assert [e["ip"] for e in j.recent] == ["198.18.0.7", "198.18.0.8", "198.18.0.9"]
    assert j.counts["pin"] == 10


def test_timers_have_no_timeout_when_idle():
    t = Timers()
    assert t.timeout() is None  # select then blocks: no polling
    fired = []
    t.add(0.0, lambda: fired.append(1))
    t.add(60.0, lambda: fired.append(2))
    assert t.timeout() == 0.0
    t.run_due()
    assert fired == [1] and 59 < t.timeout() <= 60
