"""roles.vocab: the rules both halves share. Every pattern refuses a trailing newline, numbers
typed as text take ASCII digits only, and the branch rule never accepts what git refuses."""

import subprocess

import pytest
from hypothesis import given, settings, strategies as st

from roles import vocab


@pytest.mark.parametrize("rule, good", [
    (vocab.host_name, "sensor2"), (vocab.interface, "wlan0"), (vocab.mac, "02:00:c6:12:00:0b"),
    (vocab.user, "pi"), (vocab.ssh_host, "pi.local"), (vocab.git_branch, "main"),
    (vocab.git_remote, "https://example.invalid/x.git"), (vocab.path, "~/.ssh/id_ed25519"),
    (vocab.checkout, "tcpskim"), (vocab.command_path, "/usr/bin/python3"), (vocab.token, "t001-xdp"),
    (vocab.ipv4_host, "192.168.1.85"), (vocab.wakeup, "batch:10ms"),
])
def test_a_trailing_newline_never_passes(rule, good):
    rule(good)
    for bad in (good + "\n", good + "\r\n", "\n" + good):
        with pytest.raises(vocab.Invalid):
            rule(bad)


@pytest.mark.parametrize("rule, bad, why", [
    (vocab.ipv4_host, "0.0.0.0", "unspecified"), (vocab.ipv4_host, "255.255.255.255", "broadcast"),
    (vocab.ipv4_host, "224.0.0.5", "multicast"), (vocab.ipv4_host, "127.0.0.1", "loopback"),
    (vocab.mac, "00:00:00:00:00:00", "all-zero"), (vocab.mac, "01:00:5e:00:00:01", "multicast"),
    (vocab.mac, "ff:ff:ff:ff:ff:ff", "multicast"),
    (vocab.git_branch, "a..b", "check-ref-format"), (vocab.git_branch, "HEAD", "HEAD"),
    (vocab.checkout, "/", "checkout directory"), (vocab.checkout, "../..", "checkout directory"),
    (vocab.checkout, "-P", "leading '-'"), (vocab.checkout, "~/", "checkout directory"),
    (vocab.path, "-oProxyCommand=x", "leading '-'"), (vocab.command_path, "-c", "leading '-'"),
    (vocab.command_path, "~/venv/bin/python", "never expands"),
    (vocab.interface, "eth0@if5", "ip link"), (vocab.interface, "eth0:1", "interface name"),
])
def test_values_that_parse_but_cannot_be_right(rule, bad, why):
    with pytest.raises(vocab.Invalid, match=why):
        rule(bad)


def test_loopback_only_where_allowed():
    assert vocab.ipv4_host("127.0.0.1", loopback=True) == "127.0.0.1"
    assert vocab.ssh_host("127.0.0.1") == "127.0.0.1"  # an SSH tunnel is a fair way to reach a host
    with pytest.raises(vocab.Invalid):
        vocab.ssh_host("0.0.0.0")


@pytest.mark.parametrize("text", ["١٠", "１０", "nan", "inf", "-inf", "1_000", "", " ", "5s", "0x10"])
def test_numbers_from_text_take_ascii_digits_only(text):
    with pytest.raises(vocab.Invalid):
        vocab.number(text)
    with pytest.raises(vocab.Invalid):
        vocab.number(text, int)


def test_limits_and_tos_marker():
    assert vocab.limited("repeat", 3) == 3 and vocab.limited("rate_hz", 50) == 50.0
    for name, bad in (("repeat", 2.5), ("repeat", True), ("rate_hz", float("nan")), ("repeat", 10 ** 400),
                      ("duration_s", 0.1), ("size_bytes", 70_000)):
        with pytest.raises(vocab.Invalid):
            vocab.limited(name, bad)
    assert vocab.tos_marker(0x68) == 0x68
    for bad in (0, 0x69, 0x6a, 256, True, "104"):
        with pytest.raises(vocab.Invalid):
            vocab.tos_marker(bad)


def test_cpu_list_refuses_duplicates():
    assert vocab.cpu_list([0, 3]) == [0, 3]
    with pytest.raises(vocab.Invalid, match="CPU 1 more than once"):
        vocab.cpu_list([1, 2, 1])


def _git_accepts(name: str) -> bool:
    return subprocess.run(["git", "check-ref-format", "--branch", name], capture_output=True,
                          cwd="/").returncode == 0


@settings(max_examples=150)
@given(st.text(alphabet="ab/.-_@{}~^:?*[ \\HEADlock", min_size=1, max_size=12))
def test_branch_rule_never_accepts_what_git_refuses(name):
    try:
        vocab.git_branch(name)
    except vocab.Invalid:
        return
    assert _git_accepts(name), name


@pytest.mark.parametrize("text, want", [
    ("per-record", {"policy": "per-record"}),
    ("batch:10ms", {"policy": "batch", "interval_ms": 10}),
    ("coalesce:16:500us", {"policy": "coalesce", "records": 16, "timeout_us": 500}),
    ("coalesce:1:5ms", {"policy": "coalesce", "records": 1, "timeout_us": 5000}),
])
def test_wakeup_forms_and_their_text(text, want):
    assert vocab.wakeup(text) == want
    assert vocab.wakeup(vocab.wakeup_text(want)) == want  # the report's text reads back


@pytest.mark.parametrize("bad, why", [
    ("coalesce:0:5ms", "out of range"), ("coalesce:5000:5ms", "out of range"),
    ("coalesce:4:0us", "timeout"), ("coalesce:4:20000ms", "timeout"), ("coalesce:4:5s", "coalesce"),
    ("coalesce:4", "coalesce"), ("batch:0ms", "interval"),
])
def test_bad_wakeups_say_why(bad, why):
    with pytest.raises(vocab.Invalid, match=why):
        vocab.wakeup(bad)
