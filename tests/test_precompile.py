"""Pre-compiling a run's BPF programs: ``hostctl precompile`` on a host (root, bcc: compiles for
real into a temporary cache) and ``run-experiment`` calling it once per host before the first
trial (fake fleet, no root)."""

from __future__ import annotations

import json
import os

import pytest

from roles import hostctl

try:
    import bcc  # noqa: F401
    HAVE_BCC = True
except Exception:  # ImportError, or bcc failing without kernel headers
    HAVE_BCC = False

needs_bpf = pytest.mark.skipif(os.geteuid() != 0 or not HAVE_BCC, reason="needs root (BPF) and bcc")
HOSTS = {"hardworker": {"ip": "198.18.0.12", "mac": "02:00:c6:12:00:0c"},
         "logger": {"ip": "198.18.0.13", "mac": "02:00:c6:12:00:0d"},
         "sensor": [{"ip": "198.18.0.11", "name": "sensor", "mac": "02:00:c6:12:00:0b"}]}


def cfg(role="hardworker", mode="xdp", **over):
    c = {"role": role, "instance": 0, "run_id": "r1", "trial": "t001", "mode": mode, "state_dir": "/var/tmp/s",
         "out_dir": "/var/tmp/o", "interface": "lo", "hosts": HOSTS, "size_bytes": 64,
         "sensor_host": "sensor" if role == "sensor" else None, "cpus": [0]}
    c.update(over)
    return c


def call(capsys, *argv):
    code = hostctl.main(["precompile", *argv])
    return code, json.loads(capsys.readouterr().out)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TCPSKIM_BPF_CACHE", str(tmp_path / "bpf-cache"))
    return tmp_path / "bpf-cache"


@needs_bpf
def test_precompile_fills_the_cache_the_roles_then_hit(cache, capsys):
    from roles import precompile, runtime
    from roles.skim import HardworkerSkim, SensorSkim, hardworker_args, sensor_args

    configs = json.dumps([cfg(), cfg(mode="tcp"), cfg(trial="t002"), cfg("sensor"), cfg("logger")])
    code, ans = call(capsys, "--configs", configs, "--check")
    assert code == 0 and ans["changed"] and not cache.exists()
    assert {r["program"] for r in ans["data"]["programs"] if r["cache"] == "would compile"} >= {"hardworker.c", "sensor.c"}

    code, ans = call(capsys, "--configs", configs)
    progs = sorted(r["program"] for r in ans["data"]["programs"])
    assert code == 0 and ans["changed"], ans
    assert progs == sorted(["hardworker.c", "sensor.c"] + ["attribution.c"] * ("attribution.c" in progs))
    assert all(r["cache"] == "compiled" for r in ans["data"]["programs"])
    code, ans = call(capsys, "--configs", configs)
    assert code == 0 and not ans["changed"] and {r["cache"] for r in ans["data"]["programs"]} == {"hit"}

    hw = HardworkerSkim(**hardworker_args(runtime.validate(cfg())))
    s = SensorSkim(**sensor_args(runtime.validate(cfg("sensor"))))
    try:
        assert (hw.bpf.cache, s.bpf.cache) == ("hit", "hit")  # the role's own flags, exactly
    finally:
        hw.close()
        s.close()
    if precompile.tracer(runtime.validate(cfg())) is not None:
        from roles.attribution import Tracer

        tr = Tracer([0], cpu_idle=runtime.validate(cfg())["trace_idle"])
        try:
            assert tr.bpf.cache == "hit"
        finally:
            tr.cleanup()


@pytest.mark.parametrize("configs, says", [
    ("{not json", "configs: not JSON"),
    ("[]", "non-empty JSON list"),
    (json.dumps([cfg(mode="udp")]), "configs[0]"),
    (json.dumps([cfg(), cfg(interface="eth0; reboot")]), "configs[1]"),
])
def test_bad_configs_fail_in_one_line(cache, capsys, configs, says):
    code, ans = call(capsys, "--configs", configs, "--check")
    assert code == 1 and ans["failed"] and says in ans["msg"] and "\n" not in ans["msg"]
    assert not cache.exists()


def test_run_experiment_precompiles_once_per_host_before_the_first_start(tmp_path):
    from tcpskim.experiment import Runner
    from tcpskim.results import RunFolder

    from fakefleet import role_fleet
    from test_trial import FAST, quick

    fleet = role_fleet(tmp_path, sensors=2)
    out = []
    r = Runner(fleet, quick(fleet.inv, sensors=2, repeat="2"), out=out.append, progress=False)
    r.session_opts = FAST
    r.run(RunFolder.new(tmp_path / "results", "unit"))
    for name in ("hardworker", "sensor", "sensor2"):
        subs = [argv[0] for _h, argv in fleet.hostctl_calls() if _h == name]
        assert subs.count("precompile") == 1 and subs.index("precompile") < subs.index("start"), (name, subs)
        (configs,) = fleet.hosts[name].precompiled
        # one config per mode (trials and repeats differ only where no flag comes from)
        assert sorted(c["mode"] for c in configs) == (["idle", "tcp", "xdp"] if name == "hardworker" else ["tcp", "xdp"])
    assert fleet.hosts["logger"].precompiled == []
    assert any(line.startswith("precompile (BPF programs)") for line in "\n".join(out).split("\n"))
    assert fleet.unmatched == []
