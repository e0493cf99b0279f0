"""Tests for tcpskim.netwatch (``fix-network --watch``) against Windows outputs in the
format of `route print` and `ping -n 1 -w 1000` (tests/data), scripted round by round."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from invoke import Result

from tcpskim.netwatch import Watch

DATA = Path(__file__).parent / "data"
HOST = "255.255.255.255"


def data(name: str) -> str:
    return (DATA / name).open(newline="").read()


WIN10 = data("route_print_win10_wifi_hyperv.txt")
REPLY, TIMEOUT, UNREACH = (data(f"ping_win_{n}.txt") for n in ("reply", "timeout", "unreachable"))
IPS = {"sensor": "192.168.1.85", "hardworker": "192.168.1.79", "logger": "192.168.1.93"}
ADD85 = "route -p add 192.168.1.85 MASK 255.255.255.255 192.168.1.1 IF 12"


def ping(ip):
    return f"ping -n 1 -w 1000 {ip}"


def answer(ip, text):
    """A ping answer as Windows gives it: timeouts exit 1, 'Destination host unreachable' exits 0."""
    return Result(text.replace("192.168.1.85", ip), exited=1 if text is TIMEOUT else 0)


def route_print(persistent=(), active=()):
    text = WIN10.replace("\r\n", "\n")
    rows = "".join(f"{ip:>17}{HOST:>17}{'192.168.1.1':>17}{'192.168.1.100':>17}{26:>7}\n" for ip in active)
    text = text.replace("  255.255.255.255  255.255.255.255          On-link        127.0.0.1    331\n",
                        rows + "  255.255.255.255  255.255.255.255          On-link        127.0.0.1    331\n", 1)
    if persistent:
        body = "Persistent Routes:\n  Network Address          Netmask  Gateway Address  Metric\n"
        body += "".join(f"{ip:>17}{HOST:>17}{'192.168.1.1':>17}{'1':>8}\n" for ip in persistent)
        text = text.replace("Persistent Routes:\n  None\n", body, 1)
    return Result(text.replace("\n", "\r\n"))


class Script:
    """A context that answers each command from its own queue (the last answer repeats) and
    records every command; an unscripted command fails the test."""

    def __init__(self, answers: dict):
        self.answers = {k: list(v) if isinstance(v, list) else [v] for k, v in answers.items()}
        self.calls = []

    def run(self, cmd, **kw):
        self.calls.append(cmd)
        assert cmd in self.answers, f"unexpected command {cmd!r}"
        q = self.answers[cmd]
        return q.pop(0) if len(q) > 1 else q[0]

    sudo = run


def inventory(**control):
    hosts = [SimpleNamespace(name=n, ip=ip) for n, ip in IPS.items()]
    return SimpleNamespace(hosts=hosts, control={"gateway": "192.168.1.1", "interface": "12", **control})


def pings(sensor: list, **others):
    out = {ping(IPS["sensor"]): [answer(IPS["sensor"], t) for t in sensor]}
    for name in ("hardworker", "logger"):
        out[ping(IPS[name])] = [answer(IPS[name], t) for t in others.get(name, [REPLY])]
    return out


def watch(ctx, **kw):
    lines = []
    clock = iter(range(1_796_160_000, 1_796_170_000))
    w = Watch(ctx, inventory(), system="Windows", out=lines.append, now=lambda: float(next(clock)), **kw)
    return w, lines


def test_route_readded_after_two_missed_pings():
    ctx = Script({**pings([REPLY, TIMEOUT, TIMEOUT, REPLY, REPLY]),
                  "route print": [route_print(), route_print(persistent=[IPS["sensor"]], active=[IPS["sensor"]])],
                  "netsh interface ipv4 show ipaddresses": Result("", exited=1),
                  ADD85: Result(" OK!\r\n")})
    w, lines = watch(ctx)
    rows = w.run(interval=0, rounds=4, sleep=lambda s: None)
    assert ctx.calls.count(ADD85) == 1
    assert [e["event"] for e in w.events] == [
        "no answer to ping (1/2)", "no answer to ping (2/2)",
        f"route re-added ({ADD85}); answers now", "answers again after 2 missed ping(s)"]
    assert all(e["host"] == "sensor" and isinstance(e["time"], float) for e in w.events)
    assert lines[0] == "2026-12-01T21:20:00Z sensor 192.168.1.85: no answer to ping (1/2)"
    by = {r.host: r for r in rows}
    assert (by["sensor"].status, by["sensor"].data) == ("changed", {"outages": 1, "repairs": 1})
    assert by["hardworker"].status == by["logger"].status == "ok"


def test_destination_unreachable_counts_as_a_miss_and_repair_happens_once_per_outage():
    ctx = Script({**pings([UNREACH]), "route print": [route_print(), route_print(persistent=[IPS["sensor"]])],
                  "netsh interface ipv4 show ipaddresses": Result("", exited=1), ADD85: Result(" OK!\r\n")})
    w, _ = watch(ctx, misses=1)
    rows = w.run(interval=0, rounds=3, sleep=lambda s: None)
    assert ctx.calls.count(ADD85) == 1  # still no answer: no route churn every round
    assert "still no answer" in w.events[1]["event"]
    assert {r.host: r.status for r in rows}["sensor"] == "failed"


def test_persistent_route_that_is_not_active_is_deleted_and_added_again():
    delete = "route delete 192.168.1.85 MASK 255.255.255.255 192.168.1.1"
    ctx = Script({**pings([TIMEOUT, REPLY]),
                  "route print": [route_print(persistent=[IPS["sensor"]]),
                                  route_print(persistent=[IPS["sensor"]], active=[IPS["sensor"]])],
                  "netsh interface ipv4 show ipaddresses": Result("", exited=1),
                  delete: Result(" OK!\r\n"), ADD85: Result(" OK!\r\n")})
    w, _ = watch(ctx, misses=1)
    w.run(interval=0, rounds=1, sleep=lambda s: None)
    route_cmds = [c for c in ctx.calls if c.startswith("route ") and c != "route print"]
    assert route_cmds == [delete, ADD85]
    assert w.events[-1]["status"] == "changed"


def test_active_route_is_left_alone_when_the_host_itself_is_down():
    ctx = Script({**pings([TIMEOUT]),
                  "route print": route_print(persistent=[IPS["sensor"]], active=[IPS["sensor"]]),
                  "netsh interface ipv4 show ipaddresses": Result("", exited=1)})
    w, _ = watch(ctx, misses=1)
    w.run(interval=0, rounds=1, sleep=lambda s: None)
    assert [c for c in ctx.calls if c.startswith("route ") and c != "route print"] == []
    assert w.events[-1]["event"].startswith("route ok: persistent route via 192.168.1.1 already present")


def test_elevation_refusal_is_reported_and_dry_run_runs_nothing():
    ctx = Script({**pings([TIMEOUT]), "route print": route_print(),
                  "netsh interface ipv4 show ipaddresses": Result("", exited=1),
                  ADD85: Result("The requested operation requires elevation.\r\n", exited=1)})
    w, _ = watch(ctx, misses=1)
    rows = w.run(interval=0, rounds=1, sleep=lambda s: None)
    assert "Run as administrator" in w.events[-1]["event"] and w.events[-1]["status"] == "elevation"
    assert {r.host: r.status for r in rows}["sensor"] == "failed"
    ctx = Script({**pings([TIMEOUT]), "route print": route_print(),
                  "netsh interface ipv4 show ipaddresses": Result("", exited=1)})
    w, _ = watch(ctx, misses=1, dry_run=True)
    w.run(interval=0, rounds=1, sleep=lambda s: None)
    assert ADD85 not in ctx.calls and w.events[-1]["event"] == f"route planned: would run: {ADD85}"


def test_missing_gateway_is_one_line_and_ctrl_c_ends_with_the_table():
    ctx = Script(pings([TIMEOUT]))
    w, _ = watch(ctx, misses=1)
    w.inv.control = {}
    w.round()
    assert w.events[-1]["event"] == "cannot repair its route: control.gateway is not set in the inventory"

    def interrupt(_):
        raise KeyboardInterrupt

    w, lines = watch(Script(pings([REPLY])))
    rows = w.run(interval=5, rounds=None, sleep=interrupt)
    assert lines[-1] == "watch stopped (Ctrl-C)" and [r.status for r in rows] == ["ok", "ok", "ok"]
