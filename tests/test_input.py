"""Bad input (issue 12), one test per class: every malformed inventory, option or run folder
ends in exactly one error line naming the key or option, and nothing connects to a host.

Tasks run in-process (``tasks.<task>(Context(), ...)``) with ``tasks.Fleet`` replaced by a
counter and every host's SSH port pointing at a TCP listener on 127.0.0.1 that counts accepts,
so "no connection" is checked both ways. The property test at the end generates inventories
and option sets and asserts the same of each: a valid inventory, or one line naming a key.
"""

from __future__ import annotations

import copy
import re
import math

import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st
from invoke import Context, Exit

import tasks
from tcpskim import inventory
from helpers import toml_dump
from test_inventory import _Listener, base


class _NoFleet:
    """Stands in for tasks.Fleet: counts constructions; any use fails the test."""
    built = 0

    def __init__(self, *a, **k):
        type(self).built += 1
        raise AssertionError("a Fleet was built: validation let bad input through")


@pytest.fixture
def guard(monkeypatch):
    """(listener, counter): every host's sshd is the listener; no Fleet may be built."""
    lst = _Listener()
    _NoFleet.built = 0
    monkeypatch.setattr(tasks, "Fleet", _NoFleet)
    monkeypatch.delenv(inventory.ENV_VAR, raising=False)
    yield lst
    lst.close()
    assert lst.accepted == 0, "a connection reached the fake sshd"
    assert _NoFleet.built == 0


def good(port: int) -> dict:
    d = base(port)
    for h in d["hosts"].values():
        h["ssh_port"] = port
    d["hosts"]["hardworker"]["ssh_host"] = "localhost"  # distinct (ssh_host, port) per host
    d["hosts"]["logger"]["ssh_host"] = "127.0.0.2"
    return d


def write(tmp_path, d_or_bytes, name="inv.toml"):
    p = tmp_path / name
    if isinstance(d_or_bytes, bytes):
        p.write_bytes(d_or_bytes)
    else:
        p.write_text(toml_dump(d_or_bytes), encoding="utf-8")
    return p


def refused(task, *args, **kw) -> str:
    """Run a task in-process; it must stop with Exit code 2 and one line; returns that line."""
    with pytest.raises(Exit) as err:
        task(Context(), *args, **kw)
    msg = str(err.value.message or "")
    assert err.value.code == 2, msg
    assert msg.startswith("error: ") and "\n" not in msg.strip(), repr(msg)
    return msg


def mutated(port, path, value):
    d = copy.deepcopy(good(port))
    *parents, last = path.split(".")
    t = d
    for p in parents:
        t = t.setdefault(p, {})
    t[last] = value
    return d


# --- 1. a trailing newline passes no pattern -------------------------------------------------
NEWLINE_KEYS = [
    "hosts.sensor.interface", "hosts.sensor.mac", "hosts.sensor.ssh_user", "hosts.sensor.ssh_host",
    "hosts.sensor.ip", "hosts.sensor.checkout", "hosts.sensor.python", "hosts.sensor.ssh_key",
    "code.branch", "code.remote", "testbed.name", "control.interface", "control.gateway",
    "experiment.wakeup", "experiment.deliver", "ssh.user", "ssh.known_hosts",
]
NEWLINE_GOOD = {"hosts.sensor.mac": "02:00:00:00:00:01", "hosts.sensor.ssh_host": "127.0.0.1",
                "hosts.sensor.ip": "192.0.2.85", "hosts.sensor.checkout": "tcpskim",
                "hosts.sensor.python": "/usr/bin/python3", "hosts.sensor.ssh_key": "/k",
                "code.branch": "main", "code.remote": "https://example.invalid/x.git", "testbed.name": "t",
                "control.interface": "Wi-Fi", "control.gateway": "192.0.2.1", "experiment.wakeup": "batch:10ms",
                "experiment.deliver": "all", "ssh.user": "pi", "ssh.known_hosts": "/k",
                "hosts.sensor.interface": "wlan0", "hosts.sensor.ssh_user": "pi"}


@pytest.mark.parametrize("key", NEWLINE_KEYS)
def test_1_trailing_newline_is_refused_naming_the_key(tmp_path, guard, key):
    d = mutated(guard.port, key, NEWLINE_GOOD[key] + "\n")
    msg = refused(tasks.deploy, inventory=str(write(tmp_path, d)))
    assert f" {key}: " in msg and "\\n" in msg, msg


def test_1_host_name_and_lab_prefix_with_a_newline(tmp_path, guard):
    d = good(guard.port)
    d["hosts"]["sensor\n"] = d["hosts"].pop("sensor")
    assert 'hosts."sensor\\n"' in refused(tasks.stop, inventory=str(write(tmp_path, d)))
    lab = (tasks.__file__.rsplit("/", 1)[0] + "/inventory.toml")
    text = open(lab, encoding="utf-8").read().replace('prefix = "tsk"', 'prefix = "tsk\\n"')
    msg = refused(tasks.stop, inventory=str(write(tmp_path, text.encode(), "lab.toml")))
    assert " lab.prefix: " in msg


# --- 2. encoding ---------------------------------------------------------------------------
def test_2_bom_is_accepted_and_non_utf8_is_one_line(tmp_path, guard):
    text = toml_dump(good(guard.port)).encode("utf-8")
    inv = inventory.load(write(tmp_path, b"\xef\xbb\xbf" + text, "bom.toml"))
    assert inv.name == "t"
    latin1 = toml_dump(mutated(guard.port, "testbed.name", "cafe")).replace('"cafe"', '"caf\u00e9"').encode("latin-1")
    msg = refused(tasks.deploy, inventory=str(write(tmp_path, latin1, "latin1.toml")))
    assert "latin1.toml" in msg and "UTF-8" in msg, msg
    msg = refused(tasks.doctor, inventory=str(write(tmp_path, b"\xff\xfe[\x00", "utf16.toml")))
    assert "utf16.toml" in msg and "UTF-8" in msg, msg


# --- 3. structure --------------------------------------------------------------------------
@pytest.mark.parametrize("text, key, hint", [
    ("hosts = 5\n", "hosts", "must be a table"),
    ('hosts = "sensor"\n', "hosts", "must be a table"),
    ('[[hosts]]\nrole = "sensor"\n[[hosts]]\nrole = "logger"\n', "hosts", "[[hosts]]"),
    ('ssh = 1\n', "ssh", "must be a table"),
    ('[[experiment]]\nrate = 1\n', "experiment", "[[experiment]]"),
    ('testbed = [1, 2]\n', "testbed", "must be a table"),
    ('[hosts]\nsensor = 3\n', "hosts.sensor", "must be a table"),
    ('control = "eth0"\n', "control", "must be a table"),
    ('marker = true\n', "marker", "must be a table"),
    ('code = []\n', "code", "must be a table"),
])
def test_3_a_table_that_is_not_a_table(tmp_path, guard, text, key, hint):
    d = good(guard.port)
    top = text.split("=")[0].strip().strip("[]")
    d.pop(top if top in d else "hosts", None)
    body = toml_dump(d)
    p = write(tmp_path, (text + "\n" + body).encode() if not text.startswith("[") else (body + "\n" + text).encode())
    msg = refused(tasks.stop, inventory=str(p))
    assert f" {key}: " in msg and hint in msg, msg


# --- 5. values that parse but cannot be right ------------------------------------------------
@pytest.mark.parametrize("key, value, why", [
    ("hosts.sensor.ip", "0.0.0.0", "unspecified"), ("hosts.sensor.ip", "255.255.255.255", "broadcast"),
    ("hosts.sensor.ip", "224.0.0.1", "multicast"), ("hosts.sensor.ip", "127.0.0.1", "loopback"),
    ("control.gateway", "0.0.0.0", "unspecified"),
    ("hosts.sensor.mac", "00:00:00:00:00:00", "all-zero"), ("hosts.sensor.mac", "01:00:5e:00:00:01", "multicast"),
    ("hosts.sensor.cpus", [0, 1, 0], "more than once"),
    ("code.branch", "a..b", "check-ref-format"), ("code.branch", "HEAD", "HEAD"),
    ("code.branch", "x.lock", "check-ref-format"), ("code.branch", "-x", "check-ref-format"),
    ("hosts.sensor.checkout", "/", "checkout directory"), ("hosts.sensor.checkout", "../..", "checkout directory"),
    ("hosts.sensor.checkout", "-P", "leading '-'"),
    ("hosts.sensor.ssh_key", "-oProxyCommand=x", "leading '-'"), ("ssh.key", "-i", "leading '-'"),
    ("hosts.sensor.python", "-c", "leading '-'"), ("hosts.sensor.python", "~/venv/bin/python", "never expands"),
    ("experiment.duration", math.nan, "not a number"), ("ssh.connect_timeout", math.inf, "out of range"),
])
def test_5_values_that_parse_but_cannot_be_right(tmp_path, guard, key, value, why):
    msg = refused(tasks.deploy, inventory=str(write(tmp_path, mutated(guard.port, key, value))))
    assert f" {key}: " in msg and why in msg, msg


def test_5_lab_addresses_are_inside_the_subnet_and_not_its_edges(tmp_path, guard):
    lab = open(tasks.__file__.rsplit("/", 1)[0] + "/inventory.toml", encoding="utf-8").read()
    for bad, why in (('"198.18.0.255"', "broadcast address of lab.subnet"), ('"127.0.0.1"', "loopback"),
                     ('"198.18.1.5"', "not inside lab.subnet")):
        p = write(tmp_path, lab.replace('"198.18.0.11"', bad).encode(), "lab.toml")
        msg = refused(tasks.stop, inventory=str(p))
        assert " hosts.sensor.ip: " in msg and why in msg, msg


# --- 6. command-line options ---------------------------------------------------------------
def cli(capsys, *argv) -> str:
    """The real invoke command line, in-process: exit 2 with one stderr line; returns it."""
    from invoke import Program

    with pytest.raises(SystemExit) as err:
        Program(namespace=tasks.ns, name="tcpskim", binary="invoke").run(["invoke", *argv])
    text = capsys.readouterr().err.strip()
    assert err.value.code == 2, text
    assert len(text.splitlines()) == 1, text
    return text


@pytest.mark.parametrize("argv, key", [
    (["run-experiment", "--sensors", "abc"], "--sensors"), (["run-experiment", "--sensors", "0"], "--sensors"),
    (["stop", "--timeout", "abc"], "--timeout"), (["stop", "--timeout", "-5"], "--timeout"),
    (["stop", "--timeout", "nan"], "--timeout"), (["stop", "--timeout", "inf"], "--timeout"),
    (["stop", "--hosts", ","], "--hosts"), (["stop", "--hosts", " "], "--hosts"), (["doctor", "--hosts", ""], "--hosts"),
    (["run-experiment", "--duration", "\u0661\u0660"], "--duration"),  # Arabic-Indic "10"
    (["run-experiment", "--rate", "50,"], "--rate"), (["run-experiment", "--repeat", "1e400"], "--repeat"),
    (["run-experiment", "--wakeup", "batch:10ms\n"], "--wakeup"), (["run-experiment", "--wakeup", ""], "--wakeup"),
    (["run-experiment", "--deliver", "all\n"], "--deliver"), (["run-experiment", "--tag", "-x"], "--tag"),
    (["run-experiment", "--modes", ""], "--modes"), (["fix-network", "--interval", "0"], "--interval"),
    (["fix-network", "--misses", "x"], "--misses"), (["demo", "--duration", "nan"], "--duration"),
])
def test_6_bad_options_are_one_line_naming_the_option(tmp_path, guard, capsys, argv, key):
    task, *rest = argv
    inv = write(tmp_path, good(guard.port))
    if task == "demo":
        inv = tasks.__file__.rsplit("/", 1)[0] + "/inventory.toml"
    line = cli(capsys, task, "-i", str(inv), *rest)
    assert line.startswith(f"error: {key}: ") or f" {key}: " in line, line


def test_6_empty_inventory_option_is_refused_not_a_fallback(tmp_path, guard, capsys, monkeypatch):
    monkeypatch.setenv(inventory.ENV_VAR, str(write(tmp_path, good(guard.port))))
    assert "--inventory: ''" in cli(capsys, "stop", "-i", "")
    monkeypatch.setenv(inventory.ENV_VAR, "")
    assert inventory.ENV_VAR in cli(capsys, "stop")


# --- 4. paths the inventory names ------------------------------------------------------------
def test_4_ssh_key_and_known_hosts_are_checked_before_any_ssh(tmp_path, guard):
    kh = tmp_path / "known_hosts"
    kh.write_text("")
    (tmp_path / "keydir").mkdir()
    cases = [
        ({"ssh.key": str(tmp_path / "nope"), "ssh.known_hosts": str(kh)}, "ssh.key", "does not exist"),
        ({"hosts.sensor.ssh_key": str(tmp_path / "keydir"), "ssh.known_hosts": str(kh)},
         "hosts.sensor.ssh_key", "is a directory"),
        ({"ssh.known_hosts": str(tmp_path / "keydir")}, "ssh.known_hosts", "is a directory"),
        ({"ssh.known_hosts": str(tmp_path / "absent")}, "ssh.known_hosts", "does not exist"),
    ]
    for i, (settings_, key, why) in enumerate(cases):
        d = good(guard.port)
        for k, v in settings_.items():
            d = mutated(guard.port, k, v) if not d else _set(d, k, v)
        p = write(tmp_path, d, f"inv{i}.toml")
        for task in (tasks.stop, tasks.doctor, tasks.run_experiment, tasks.fix_network):
            msg = refused(task, inventory=str(p))
            assert f" {key}: " in msg and why in msg and str(tmp_path) in msg, msg
    # known_hosts may be missing when new keys are to be accepted: that creates it
    inv = inventory.load(write(tmp_path, _set(good(guard.port), "ssh.known_hosts", str(tmp_path / "new")), "ok.toml"))
    inventory.check_paths(inv, creating_known_hosts=True)


def _set(d, path, value):
    *parents, last = path.split(".")
    t = d
    for p in parents:
        t = t.setdefault(p, {})
    t[last] = value
    return d


# --- 7. results ------------------------------------------------------------------------------
@pytest.mark.parametrize("content, key", [
    ("not json {", "not valid JSON"), ("{}", "run_id: is missing"), ("[]", "must hold a JSON object"),
    ('{"run_id": "r", "hosts": "sensor"}', "hosts: must be an object"),
    ('{"run_id": 5, "hosts": {}}', "run_id: must be a string"),
    ('{"run_id": "r", "hosts": {"sensor": 1}}', "hosts.sensor: must be an object"),
    ('{"run_id": "r", "hosts": {}, "params": []}', "params: must be an object"),
    (b'\xff\xfe{}', "not valid JSON"),
])
def test_7_report_and_collect_name_the_file_and_key_of_a_bad_run_json(tmp_path, guard, content, key):
    run = tmp_path / "20260101-000000"
    run.mkdir()
    (run / "run.json").write_bytes(content if isinstance(content, bytes) else content.encode())
    msg = refused(tasks.report, str(run))
    assert str(run / "run.json") in msg and key in msg, msg
    inv = write(tmp_path, _set(good(guard.port), "ssh.known_hosts", str(tmp_path / "kh")))
    msg = refused(tasks.collect, run=str(run), inventory=str(inv))
    assert str(run / "run.json") in msg and key in msg, msg


def test_7_collect_refuses_a_run_whose_checkout_is_not_a_path(tmp_path, guard):
    run = tmp_path / "r1"
    run.mkdir()
    (run / "run.json").write_text('{"run_id": "r1", "status": "ok", "hosts": {"sensor": {"checkout": "-P"}}}')
    inv = write(tmp_path, good(guard.port))
    assert "hosts.sensor.checkout" in refused(tasks.collect, run=str(run), inventory=str(inv))


def test_7_unreachable_hosts_fail_once_each_and_leave_no_empty_run(tmp_path, monkeypatch, capsys):
    """A real Fleet against a listener that hangs up: each host's SSH error is printed once,
    the run leaves no results folder, and "latest" still names the run before it."""
    from tcpskim import experiment
    from tcpskim.results import RunFolder

    lst = _Listener()
    try:
        monkeypatch.setattr(experiment, "CHECKOUT", tmp_path)
        earlier = tmp_path / "results" / "20250101-000000"
        earlier.mkdir(parents=True)
        (earlier / "run.json").write_text('{"run_id": "20250101-000000", "hosts": {}}')
        (earlier / "t000-idle").mkdir()
        key, kh = tmp_path / "id", tmp_path / "known_hosts"
        key.write_text("not a key")
        kh.write_text("")
        d = good(lst.port)
        for h, sock in zip(d["hosts"].values(), lst.socks):
            h["ssh_host"], h["ssh_port"] = "127.0.0.1", sock.getsockname()[1]
        d["ssh"].update(key=str(key), known_hosts=str(kh), connect_timeout=2)
        with pytest.raises(Exit) as err:
            tasks.run_experiment(Context(), inventory=str(write(tmp_path, d)), progress=False)
        assert err.value.code == 1
        out = capsys.readouterr()
        text = out.out + out.err
        for name in ("sensor", "hardworker", "logger"):
            assert text.count(f"{name}: ") == 1, text
        assert "FAILED before its first trial" in text
        assert [p.name for p in (tmp_path / "results").iterdir()] == [earlier.name]
        assert RunFolder.latest(tmp_path / "results").path == earlier
    finally:
        lst.close()


# --- the property: any inventory and option set, one outcome or one line --------------------
class _Reached(Exception):
    """Validation passed: the task got as far as building its Fleet."""


LEAVES = [f"{t}.{k}" for t, ks in {
    "testbed": ("name", "lab"), "ssh": ("user", "port", "key", "known_hosts", "connect_timeout"),
    "code": ("remote", "branch"), "marker": ("tos", "port"), "control": ("gateway", "interface", "add_routes"),
    "experiment": ("rate", "size", "duration", "modes", "repeat", "wakeup", "deliver", "xdp_mode",
                   "ringbuf_bytes", "idle"),
    "lab": ("prefix", "subnet", "control_ip", "state_dir"),
}.items() for k in ks] + [f"hosts.{h}.{k}" for h in ("sensor", "logger") for k in (
    "role", "ip", "interface", "mac", "ssh_host", "ssh_port", "ssh_user", "ssh_key", "checkout", "python", "cpus")]
TABLES = ["hosts", "ssh", "experiment", "testbed", "hosts.sensor", "code", "x"]
NASTY = ["", " ", "\n", "a\n", "0.0.0.0", "255.255.255.255", "127.0.0.1", "224.0.0.1", "00:00:00:00:00:00",
         "01:00:5e:00:00:01", "HEAD", "a..b", "/", "../..", "-P", "-oProxyCommand=x", "~/x", "~", "\u0661\u0660",
         "batch:10ms\n", "per-record", "all", "latest:0", "eth0", "main", "sensor", "xdp", "nan", "1e400",
         "\ufeff", "caf\u00e9", "$(id)", "a;b", "02:00:00:00:00:01", "192.0.2.9", "198.18.0.11", "/tmp"]
scalars = st.one_of(st.sampled_from(NASTY), st.text(max_size=12), st.integers(-2**63, 2**63 - 1),
                    st.floats(allow_nan=True, allow_infinity=True), st.booleans())
values = st.one_of(scalars, st.lists(scalars, max_size=3),
                   st.dictionaries(st.sampled_from(["role", "ip", "a", "\n"]), scalars, max_size=2))
mutations = st.lists(st.one_of(
    st.tuples(st.just("set"), st.sampled_from(LEAVES + TABLES), values),
    st.tuples(st.just("del"), st.sampled_from(LEAVES + TABLES), st.none()),
    st.tuples(st.just("set"), st.text(min_size=1, max_size=6).map(lambda k: f"hosts.sensor.{k}"), values),
), max_size=3)
option_sets = st.fixed_dictionaries({}, optional={
    "hosts": st.one_of(st.sampled_from(["sensor", ",", " ", "", "sensor,ghost", "logger\n"]), st.text(max_size=6)),
    "timeout": st.one_of(st.sampled_from(["5", "-5", "nan", "abc", "\u0665", "1e3", ""]), st.text(max_size=5)),
    "rate": st.one_of(st.sampled_from(["50", "50,", "0", "inf", "1,2"]), st.text(max_size=5)),
    "sensors": st.one_of(st.sampled_from(["1", "abc", "0", "2"]), st.text(max_size=3)),
    "wakeup": st.one_of(st.sampled_from(["per-record", "batch:5ms\n", "coalesce:4:100us", ""]), st.text(max_size=8)),
    "deliver": st.one_of(st.sampled_from(["all", "latest", "filter:every:0"]), st.text(max_size=8)),
    "tag": st.text(max_size=6), "modes": st.text(max_size=8),
})


def _apply(d, op, path, value):
    *parents, last = path.split(".")
    t = d
    for p in parents:
        if not isinstance(t, dict):
            return
        t = t.setdefault(p, {}) if op == "set" else t.get(p)
    if isinstance(t, dict):
        if op == "set":
            t[last] = value
        else:
            t.pop(last, None)


_KEY = r'(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*")'
ONE_LINE = re.compile(rf"error: (?:inv\.toml: )?(--[a-z-]+|\$TCPSKIM_INVENTORY|{_KEY}(?:\.{_KEY})*)(?: \(.*?\))?: ")


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(muts=mutations, opts=option_sets, task=st.sampled_from(["stop", "run_experiment", "doctor"]))
def test_property_any_inventory_and_options_give_a_run_or_one_line_naming_a_key(tmp_path, guard, monkeypatch,
                                                                                 muts, opts, task):
    def reached(*a, **k):
        raise _Reached

    monkeypatch.setattr(tasks, "Fleet", reached)
    kh = tmp_path / "known_hosts"
    kh.write_text("")
    d = _set(good(guard.port), "ssh.known_hosts", str(kh))
    for op, path, value in muts:
        _apply(d, op, path, copy.deepcopy(value))
    p = write(tmp_path, d)
    fn = getattr(tasks, task)
    allowed = {"stop": ("hosts", "timeout"), "doctor": ("hosts",),
               "run_experiment": ("rate", "sensors", "wakeup", "deliver", "tag", "modes")}[task]
    kw = {k: v for k, v in opts.items() if k in allowed}
    try:
        fn(Context(), inventory=str(p), **kw)
    except _Reached:
        inventory.load(p)  # it was valid
        event("valid")
        return
    except Exit as exc:
        msg = str(exc.message or "")
        assert exc.code == 2 and "\n" not in msg, repr(msg)
        assert ONE_LINE.match(msg) and "not valid TOML" not in msg, msg
        event("refused: " + ONE_LINE.match(msg).group(1).split(".")[0])
        return
    raise AssertionError(f"{task} ran to its end without building a Fleet")
