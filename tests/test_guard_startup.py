"""The guard daemon's start-up, with a stand-in ``pyroute2`` put first on its path: signals are
caught before the slow imports, and a daemon that dies starting says how it died.

No namespace is needed: the stand-in stops the daemon inside ``Guard()``'s import, before it
touches any network state. A CI run once saw ``start`` fail with "the guard exited" and an
empty log, which a signal death leaves; these tests pin what ``start`` and ``run`` do then.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import ROOT
from roles import guardctl

CONFIG = {"interface": "eth0", "peers": {"198.18.0.242": "02:00:c6:12:00:f2"}}


def _fake_pyroute2(tmp_path: Path, body: str) -> dict:
    """The environment of a daemon whose ``import pyroute2`` runs body instead."""
    pkg = tmp_path / "fake" / "pyroute2"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(body)
    return {**os.environ, "PYTHONPATH": str(pkg.parent)}


def _caught(pid: int) -> int:
    """The SigCgt mask of pid (bit n-1 set: signal n has a handler)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return int(line.split()[1], 16)
    raise AssertionError(f"no SigCgt for {pid}")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_signals_are_caught_before_the_start_up_imports(tmp_path):
    marker = tmp_path / "importing"
    env = _fake_pyroute2(tmp_path, f"import pathlib, time\npathlib.Path({str(marker)!r}).touch()\ntime.sleep(30)\n")
    state = tmp_path / "state"
    proc = subprocess.Popen([sys.executable, "-m", "roles.guard", "run", "--state-dir", str(state)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 20
        while not marker.exists():
            assert proc.poll() is None and time.monotonic() < end, "the daemon never reached Guard()'s import"
            time.sleep(0.01)
        mask = _caught(proc.pid)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            assert mask & (1 << (sig - 1)), f"{sig.name} not caught while the daemon imports"
    finally:
        proc.kill()
        proc.wait()


def test_start_says_how_a_daemon_that_died_starting_ended(tmp_path, monkeypatch):
    """A daemon killed by a signal writes nothing to its log: ``start`` names the signal."""
    env = _fake_pyroute2(tmp_path, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    cfg = {**CONFIG, "state_dir": str(tmp_path / "state")}
    path = tmp_path / "guard.json"
    path.write_text(json.dumps(cfg))
    p = subprocess.run([sys.executable, "-m", "roles.guard", "start", "--config", str(path)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 1
    err = json.loads(p.stdout.strip())["error"]
    assert err.startswith("RuntimeError: the guard (pid ") and ") was killed by SIGKILL; last lines of " in err, err
    assert guardctl.guard_pids(cfg["state_dir"]) == []


@pytest.mark.parametrize("script, said", [("raise SystemExit(3)", "exited with status 3"),
                                          ("import os; os.kill(os.getpid(), 15)", "was killed by SIGTERM")])
def test_how_it_ended(script, said):
    proc = subprocess.Popen([sys.executable, "-c", script])
    proc.wait()
    assert guardctl._how_it_ended(proc) == said
    assert guardctl._how_it_ended(None) == "exited"  # a daemon we only signalled is not ours to reap


def test_a_real_time_signal_is_named_by_number():
    """signal.Signals has no member for SIGRTMIN+n: the error must still say what ended it."""
    proc = subprocess.Popen([sys.executable, "-c", f"import os; os.kill(os.getpid(), {signal.SIGRTMIN + 6})"])
    proc.wait()
    assert guardctl._how_it_ended(proc) == f"was killed by signal {signal.SIGRTMIN + 6}"
