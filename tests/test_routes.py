"""Tests for tcpskim.routes: route print parsing, interface choice, planning, applying."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given, settings, strategies as st
from invoke import MockContext, Result

from tcpskim import routes
from tcpskim.routes import (Action, RouteError, find_interface, parse_netsh_ipaddresses, parse_route_print,
                            plan_posix_routes, plan_windows_routes, with_addresses)

DATA = Path(__file__).parent / "data"


def text(name: str) -> str:
    # newline="" keeps CRLF exactly as recorded
    return (DATA / f"route_print_{name}.txt").open(newline="").read()


WIN10 = text("win10_wifi_hyperv")
WIN11 = text("win11_persistent")
NONE_CRLF = text("win10_none_crlf")

NETSH_WIN10 = """\

Interface 1: Loopback Pseudo-Interface 1

Addr Type  DAD State   Valid Life Pref. Life Address
---------  ----------- ---------- ---------- ------------------------
Other      Preferred     infinite   infinite 127.0.0.1

Interface 12: vEthernet (External)

Addr Type  DAD State   Valid Life Pref. Life Address
---------  ----------- ---------- ---------- ------------------------
Dhcp       Preferred    23h51m8s   23h51m8s 192.168.1.100

Interface 7: Wi-Fi

Addr Type  DAD State   Valid Life Pref. Life Address
---------  ----------- ---------- ---------- ------------------------
Dhcp       Preferred     6h12m3s    6h12m3s 10.20.30.45
"""


def host(name, ip):
    return SimpleNamespace(name=name, ip=ip)


class RecordingContext:
    """A context that records every command and fails the test if one is run."""

    def __init__(self):
        self.calls = []

    def run(self, cmd, **kw):
        self.calls.append(cmd)
        raise AssertionError(f"unexpected command {cmd!r}")

    sudo = run


def with_persistent(base: str, rows: list[tuple[str, str, str, str]]) -> str:
    """``base`` (no persistent routes) with persistent rows, formatted as route print does."""
    body = "Persistent Routes:\n  Network Address          Netmask  Gateway Address  Metric\n"
    body += "".join(f"{d:>17}{m:>17}{g:>17}{met:>8}\n" for d, m, g, met in rows)
    return base.replace("\r\n", "\n").replace("Persistent Routes:\n  None\n", body, 1)


# ----------------------------------------------------------------------------- parsing


def test_parse_win10_interfaces():
    t = parse_route_print(WIN10)
    assert [i.index for i in t.interfaces] == [18, 12, 7, 9, 15, 5, 1]
    hv = t.interface(12)
    assert hv.description == "Hyper-V Virtual Ethernet Adapter"
    assert hv.mac == "00:15:5d:01:02:03"
    lo = t.interface(1)
    assert lo.mac is None and lo.description == "Software Loopback Interface 1"
    assert t.interface(7).description == "Intel(R) Wi-Fi 6 AX201 160MHz"
    assert t.interface(5).description == "Bluetooth Device (Personal Area Network)"


def test_parse_win10_active_routes_and_ipv6_ignored():
    t = parse_route_print(WIN10)
    assert len(t.active) == 17
    assert t.active[0] == routes.ActiveRoute("0.0.0.0", "0.0.0.0", "192.168.1.1", "192.168.1.100", 25)
    lan = [r for r in t.active if r.destination == "192.168.1.0"]
    assert lan == [routes.ActiveRoute("192.168.1.0", "255.255.255.0", "On-link", "192.168.1.100", 281)]
    assert lan[0].on_link and str(lan[0].network) == "192.168.1.0/24"
    assert all(":" not in r.destination for r in t.active)
    assert t.persistent == []  # "None"


def test_parse_win11_persistent_routes():
    t = parse_route_print(WIN11)
    assert [(p.destination, p.netmask, p.gateway, p.metric) for p in t.persistent] == [
        ("10.0.6.11", "255.255.255.255", "10.0.5.1", "1"),
        ("10.0.6.12", "255.255.255.255", "10.0.5.254", "1"),
        ("172.16.0.0", "255.240.0.0", "10.0.5.1", "Default"),
    ]
    assert [i.index for i in t.interfaces] == [14, 21, 8, 19, 27, 1]
    assert t.interface(14).description == "Realtek PCIe GbE Family Controller"
    assert len(t.active) == 24
    assert t.persistent_for("10.0.6.12")[0].gateway == "10.0.5.254"
    assert t.persistent_for("172.16.0.0") == []  # not a /32


def test_parse_crlf_and_tunnel_adapter():
    assert "\r\n" in NONE_CRLF
    t = parse_route_print(NONE_CRLF)
    assert t == parse_route_print(NONE_CRLF.replace("\r\n", "\n"))
    assert [i.index for i in t.interfaces] == [11, 1, 13]
    teredo = t.interface(13)
    assert teredo.description == "Teredo Tunneling Pseudo-Interface"
    assert teredo.mac == "00:00:00:00:00:00:00:e0"
    assert t.persistent == [] and len(t.active) == 11


def test_parse_tolerates_missing_sections_blank_lines_and_spacing_variants():
    partial = (
        "\r\n\r\n  8 ...00 12 3f a7 17 ba ...... Intel(R) PRO/100 VE Network Connection\r\n"
        "\r\n"
        "          0.0.0.0          0.0.0.0      192.168.1.1    192.168.1.100     25\r\n"
        "\r\n\r\n"
        "Persistent Routes:\r\n"
        "    192.168.1.85  255.255.255.255      192.168.1.1       1\r\n"
    )
    t = parse_route_print(partial)
    assert t.interfaces == [routes.Interface(8, "00:12:3f:a7:17:ba", "Intel(R) PRO/100 VE Network Connection")]
    assert t.active[0].gateway == "192.168.1.1" and t.active[0].metric == 25
    assert t.persistent == [routes.PersistentRoute("192.168.1.85", HOST, "192.168.1.1", "1")]
    assert parse_route_print("") == routes.RouteTable()


def test_parse_ignores_ipv6_persistent_and_bogus_rows():
    t = parse_route_print(
        "IPv6 Route Table\n===\nActive Routes:\n  1    331 ::1/128                  On-link\n"
        "Persistent Routes:\n  10.0.0.1  255.255.255.255  10.0.0.254  1\n"
        "IPv4 Route Table\nActive Routes:\n  999.1.1.1  255.255.255.255  On-link  10.0.0.2  5\n")
    assert t.persistent == [] and t.active == []


HOST = "255.255.255.255"


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_parse_never_raises(s):
    parse_route_print(s)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.ip_addresses(v=4), st.ip_addresses(v=4), st.sampled_from(["1", "Default", "25"])),
                min_size=1, max_size=5))
def test_persistent_rows_round_trip(rows):
    formatted = [(str(a), HOST, str(g), m) for a, g, m in rows]
    t = parse_route_print(with_persistent(WIN10, formatted))
    assert [(p.destination, p.netmask, p.gateway, p.metric) for p in t.persistent] == formatted


def test_parse_netsh_ipaddresses():
    assert parse_netsh_ipaddresses(NETSH_WIN10.replace("\n", "\r\n")) == {
        1: ("127.0.0.1",), 12: ("192.168.1.100",), 7: ("10.20.30.45",)}


# ----------------------------------------------------------------------------- interface choice


@pytest.fixture
def win10():
    return parse_route_print(WIN10)


@pytest.mark.parametrize("wanted", ["12", 12, " 12 "])
def test_find_interface_by_index(win10, wanted):
    assert find_interface(win10, wanted, None).index == 12


@pytest.mark.parametrize("wanted,index", [("hyper-v", 12), ("Wi-Fi 6", 7), ("I219", 18), ("bluetooth", 5)])
def test_find_interface_by_description(win10, wanted, index):
    assert find_interface(win10, wanted, "192.168.1.1").index == index


def test_find_interface_ambiguous_description(win10):
    with pytest.raises(RouteError) as e:
        find_interface(win10, "Intel", None)
    msg = str(e.value)
    assert msg.startswith("control.interface: 'Intel' matches 2 interfaces (18, 7); use the index")
    assert "12 (Hyper-V Virtual Ethernet Adapter)" in msg and "\n" not in msg


@pytest.mark.parametrize("wanted,why", [("99", "is not an interface index"), ("Realtek", "matches no interface")])
def test_find_interface_unknown(win10, wanted, why):
    with pytest.raises(RouteError, match=rf"^control\.interface: '{wanted}' {why}.*interfaces: 18 \(Intel"):
        find_interface(win10, wanted, None)


def test_find_interface_by_gateway_uses_netsh_addresses(win10):
    table = with_addresses(win10, parse_netsh_ipaddresses(NETSH_WIN10))
    found = find_interface(table, None, "192.168.1.1")
    assert found.index == 12 and found.addresses == ("192.168.1.100",)
    assert find_interface(table, "", "10.20.30.1").index == 7


def test_find_interface_by_gateway_without_addresses_asks_for_control_interface(win10):
    with pytest.raises(RouteError) as e:
        find_interface(win10, None, "192.168.1.1")
    msg = str(e.value)
    assert msg.startswith("control.interface: None is unset: control.gateway 192.168.1.1 is reached from "
                          "address 192.168.1.100 but its interface index is unknown; set control.interface")


def test_find_interface_gateway_not_on_link(win10):
    with pytest.raises(RouteError, match=r"no interface reaches control.gateway 10\.9\.9\.1 on-link"):
        find_interface(win10, None, "10.9.9.1")
    with pytest.raises(RouteError, match=r"unset and so is control.gateway"):
        find_interface(win10, None, None)
    with pytest.raises(RouteError, match=r"control.gateway: 'nope' is not an IPv4 address"):
        find_interface(win10, None, "nope")


# ----------------------------------------------------------------------------- planning


def test_plan_add_exact_argv(win10):
    acts = plan_windows_routes(win10, [host("sensor", "192.168.1.85"), host("logger", "192.168.1.86")],
                               "192.168.1.1", find_interface(win10, "Hyper-V", None))
    assert [a.kind for a in acts] == ["add", "add"]
    assert acts[0].argv == ("route", "-p", "add", "192.168.1.85", "MASK", "255.255.255.255",
                            "192.168.1.1", "IF", "12")
    assert acts[0].lines == ["route -p add 192.168.1.85 MASK 255.255.255.255 192.168.1.1 IF 12"]
    assert acts[1].host == "logger" and acts[1].lines == [
        "route -p add 192.168.1.86 MASK 255.255.255.255 192.168.1.1 IF 12"]


def test_plan_ok_change_add():
    t = parse_route_print(WIN11)
    acts = plan_windows_routes(t, [host("sensor", "10.0.6.11"), host("hardworker", "10.0.6.12"),
                                   host("logger", "10.0.6.13")], "10.0.5.1", 14)
    assert [a.kind for a in acts] == ["ok", "change", "add"]
    assert acts[0].commands == ()
    assert acts[1].old_gateways == ("10.0.5.254",)
    assert acts[1].lines == ["route delete 10.0.6.12 MASK 255.255.255.255 10.0.5.254",
                             "route -p add 10.0.6.12 MASK 255.255.255.255 10.0.5.1 IF 14"]
    assert acts[2].lines == ["route -p add 10.0.6.13 MASK 255.255.255.255 10.0.5.1 IF 14"]


def test_plan_change_keeps_matching_route_and_deletes_extra():
    t = parse_route_print(with_persistent(WIN10, [("192.168.1.85", HOST, "192.168.1.1", "1"),
                                                  ("192.168.1.85", HOST, "192.168.1.254", "1")]))
    (a,) = plan_windows_routes(t, ["192.168.1.85"], "192.168.1.1", 12)
    assert a.kind == "change"
    assert a.lines == ["route delete 192.168.1.85 MASK 255.255.255.255 192.168.1.254"]


@pytest.mark.parametrize("hosts,gateway,iface,match", [
    (["192.168.1.300"], "192.168.1.1", 12, r"host ip: '192\.168\.1\.300' is not an IPv4 address"),
    ([host("sensor", "192.168.1.85 & calc")], "192.168.1.1", 12, r"hosts\.sensor\.ip: .* is not an IPv4"),
    (["192.168.001.85"], "192.168.1.1", 12, r"is not an IPv4 address"),
    (["192.168.1.85"], "192.168.1.1; del", 12, r"control\.gateway: .* is not an IPv4 address"),
    (["192.168.1.85"], "224.0.0.1", 12, r"not a unicast"),
    (["192.168.1.85"], "192.168.1.1", 0, r"control\.interface: 0 is not an interface index"),
    (["192.168.1.85"], "192.168.1.1", "12", r"control\.interface: '12' is not an interface index"),
    (["192.168.1.85"], "192.168.1.1", True, r"is not an interface index"),
    (["192.168.1.85", "192.168.1.1"], "192.168.1.1", 12, r"is control\.gateway itself"),
    ([host("sensor", None)], "192.168.1.1", 12, r"hosts\.sensor\.ip: None is not an IPv4"),
])
def test_plan_refuses_invalid_input(win10, hosts, gateway, iface, match):
    with pytest.raises(RouteError, match=match):
        plan_windows_routes(win10, hosts, gateway, iface)


def test_apply_refuses_unsafe_action_before_running_anything():
    ctx = RecordingContext()
    bad = Action("add", "sensor", "x", "192.168.1.1", 12,
                 (("route", "-p", "add", "192.168.1.85&calc", "MASK", HOST, "192.168.1.1", "IF", "12"),))
    with pytest.raises(RouteError, match="refusing to run"):
        routes.apply_windows_routes(ctx, [bad])
    assert ctx.calls == []


# ----------------------------------------------------------------------------- applying

ADD85 = "route -p add 192.168.1.85 MASK 255.255.255.255 192.168.1.1 IF 12"
ADD86 = "route -p add 192.168.1.86 MASK 255.255.255.255 192.168.1.1 IF 12"


def plan85_86():
    return plan_windows_routes(parse_route_print(WIN10), ["192.168.1.85", "192.168.1.86"], "192.168.1.1", 12)


def test_apply_adds_and_verifies():
    after = with_persistent(WIN10, [("192.168.1.85", HOST, "192.168.1.1", "1"),
                                    ("192.168.1.86", HOST, "192.168.1.1", "1")])
    ctx = MockContext(run={ADD85: Result(" OK!\r\n"), ADD86: Result(" OK!\r\n"), "route print": Result(after)})
    res = routes.apply_windows_routes(ctx, plan85_86())
    assert [(r.ok, r.status) for r in res] == [(True, "added"), (True, "added")]
    assert res[0].message == ADD85


def test_apply_elevation_required_stops_and_explains():
    ctx = MockContext(run={ADD85: Result("The requested operation requires elevation.\r\n", exited=1)})
    res = routes.apply_windows_routes(ctx, plan85_86())
    assert [(r.ok, r.status) for r in res] == [(False, "elevation"), (False, "skipped")]
    assert res[0].message.startswith(f"`{ADD85}`: changing routes needs administrator rights")
    assert '"Run as administrator"' in res[0].message and "elevated prompt" in res[0].message
    assert "Run as administrator" in res[1].message
    # ADD86 and route print were never run (MockContext raises on unknown commands)


def test_apply_elevation_exit_code_740():
    ctx = MockContext(run={ADD85: Result("", exited=740)})
    (r,) = routes.apply_windows_routes(ctx, plan85_86()[:1])
    assert r.status == "elevation" and not r.ok


def test_apply_route_exe_failure_with_exit_zero():
    ctx = MockContext(run={ADD85: Result("The route addition failed: The parameter is incorrect.\r\n", exited=0)})
    (r,) = routes.apply_windows_routes(ctx, plan85_86()[:1])
    assert (r.ok, r.status) == (False, "failed")
    assert r.message == f"`{ADD85}` failed (exit 0): The route addition failed: The parameter is incorrect."


def test_apply_unverified_when_route_print_disagrees():
    ctx = MockContext(run={ADD85: Result(" OK!\r\n"), "route print": Result(WIN10)})
    (r,) = routes.apply_windows_routes(ctx, plan85_86()[:1])
    assert (r.ok, r.status) == (False, "unverified")
    assert "shows persistent gateway(s) none for 192.168.1.85/32, expected 192.168.1.1" in r.message


def test_apply_change_tolerates_missing_old_route():
    t = parse_route_print(WIN11)
    acts = plan_windows_routes(t, ["10.0.6.11", "10.0.6.12"], "10.0.5.1", 14)
    after = WIN11.replace("10.0.5.254       1", "  10.0.5.1       1")
    ctx = MockContext(run={
        "route delete 10.0.6.12 MASK 255.255.255.255 10.0.5.254":
            Result("The route deletion failed: Element not found.\r\n", exited=1),
        "route -p add 10.0.6.12 MASK 255.255.255.255 10.0.5.1 IF 14": Result(" OK!\r\n"),
        "route print": Result(after),
    })
    res = routes.apply_windows_routes(ctx, acts)
    assert [(r.ok, r.status) for r in res] == [(True, "ok"), (True, "changed")]


def test_apply_dry_run_runs_nothing():
    ctx = RecordingContext()
    res = routes.apply_windows_routes(ctx, plan85_86(), dry_run=True)
    assert [r.status for r in res] == ["planned", "planned"]
    assert res[0].message == f"would run: {ADD85}"
    assert ctx.calls == []


def test_read_route_table_merges_netsh():
    ctx = MockContext(run={"route print": Result(WIN10),
                           "netsh interface ipv4 show ipaddresses": Result(NETSH_WIN10)})
    t = routes.read_route_table(ctx)
    assert find_interface(t, None, "192.168.1.1").index == 12


# ----------------------------------------------------------------------------- reachability, POSIX


@pytest.mark.parametrize("os_name,cmd", [
    ("Windows", "ping -n 1 -w 1000 10.0.6.11"),
    ("win32", "ping -n 1 -w 1000 10.0.6.11"),
    ("Linux", "ping -c 1 -W 1 10.0.6.11"),
    ("Darwin", "ping -c 1 -t 1 10.0.6.11"),
])
def test_ping_command(os_name, cmd):
    assert " ".join(routes.ping_argv("10.0.6.11", os_name)) == cmd


def test_reachable():
    ok = "Reply from 10.0.6.11: bytes=32 time=1ms TTL=64\r\n"
    unreachable = "Reply from 10.0.5.10: Destination host unreachable.\r\n"
    assert routes.reachable(MockContext(run=Result(ok)), "10.0.6.11", "Windows") is True
    assert routes.reachable(MockContext(run=Result(unreachable)), "10.0.6.11", "Windows") is False
    assert routes.reachable(MockContext(run=Result("", exited=1)), "10.0.6.11", "Linux") is False
    assert routes.reachable(MockContext(run={"ping -c 1 -t 1 10.0.6.11": Result("1 packets received")}),
                            "10.0.6.11", "macos") is True
    with pytest.raises(RouteError, match="unsupported control machine OS 'plan9'"):
        routes.reachable(RecordingContext(), "10.0.6.11", "plan9")
    with pytest.raises(RouteError, match="is not an IPv4"):
        routes.reachable(RecordingContext(), "10.0.6.11 -f", "Linux")


def test_plan_posix_linux_and_macos():
    (a,) = plan_posix_routes([host("sensor", "10.0.6.11")], "10.0.5.1", "enp3s0", "Linux")
    assert a.lines == ["ip route replace 10.0.6.11/32 via 10.0.5.1 dev enp3s0"]
    (m,) = plan_posix_routes(["10.0.6.11"], "10.0.5.1", None, "Darwin")
    assert m.lines == ["route -n delete -host 10.0.6.11", "route -n add -host 10.0.6.11 10.0.5.1"]
    with pytest.raises(RouteError, match=r"control\.interface: 'eth0; reboot' is not a Linux interface"):
        plan_posix_routes(["10.0.6.11"], "10.0.5.1", "eth0; reboot", "linux")
    with pytest.raises(RouteError, match="plan_windows_routes"):
        plan_posix_routes(["10.0.6.11"], "10.0.5.1", None, "Windows")


SHOW = "ip -4 route show exact 10.0.6.11/32"
REPLACE = "ip route replace 10.0.6.11/32 via 10.0.5.1 dev enp3s0"


def test_apply_posix_linux_existing_route_is_ok():
    acts = plan_posix_routes(["10.0.6.11"], "10.0.5.1", "enp3s0", "linux")
    ctx = MockContext(run={SHOW: Result("10.0.6.11 via 10.0.5.1 dev enp3s0 \n")})
    (r,) = routes.apply_posix_routes(ctx, acts)
    assert (r.ok, r.status) == (True, "ok")


def test_apply_posix_linux_adds_and_reports_root():
    acts = plan_posix_routes(["10.0.6.11"], "10.0.5.1", "enp3s0", "linux")
    ctx = MockContext(run={SHOW: Result("10.0.6.11 via 10.0.5.254 dev enp3s0 \n"), REPLACE: Result("")})
    assert routes.apply_posix_routes(ctx, acts)[0].status == "added"
    ctx = MockContext(run={SHOW: Result(""), REPLACE: Result("RTNETLINK answers: Operation not permitted\n",
                                                              exited=2)})
    (r,) = routes.apply_posix_routes(ctx, acts)
    assert (r.ok, r.status) == (False, "elevation") and "re-run with sudo" in r.message


def test_apply_posix_macos_tolerates_missing_route():
    acts = plan_posix_routes(["10.0.6.11"], "10.0.5.1", None, "macos")
    ctx = MockContext(run={"route -n delete -host 10.0.6.11": Result("route: writing to routing socket: "
                                                                     "not in table\n", exited=1),
                           "route -n add -host 10.0.6.11 10.0.5.1": Result("add host 10.0.6.11: gateway 10.0.5.1\n")})
    (r,) = routes.apply_posix_routes(ctx, acts)
    assert (r.ok, r.status) == (True, "added")
