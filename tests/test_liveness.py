"""The liveness poll: the real command run by /bin/sh over a real state folder, read back by
its parser (they live together in tcpskim/liveness.py)."""

from __future__ import annotations

import os
import subprocess

from roles.counterfile import CounterFile
from tcpskim import liveness


def dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def poll(tmp_path, progress=False) -> liveness.Liveness:
    cmd = liveness.command(str(tmp_path / "state"), str(tmp_path / "out"), progress=progress)
    r = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    return liveness.parse(r.stdout)


def test_live_dead_and_summarised_roles(tmp_path):
    pids, out = tmp_path / "state" / "pids", tmp_path / "out"
    pids.mkdir(parents=True)
    out.mkdir()
    (pids / "logger-0.pid").write_text(f"{os.getpid()}\n")  # alive
    (pids / "hardworker-0.pid").write_text(f"{dead_pid()}\n")  # killed: pidfile left behind
    (pids / "sensor-1.pid").write_text("")  # being written
    (out / "sensor-1.summary.json").write_text("{}")
    CounterFile(out / "hardworker-0.delivered", 42)  # as the roles write them
    CounterFile(out / "sensor-1.sent", 40)
    a = poll(tmp_path)
    assert a.running == {"logger-0"} and a.summarised == {"sensor-1"}
    assert a.sent == 0 and a.delivered is None  # counts only when a progress bar wants them
    b = poll(tmp_path, progress=True)
    assert (b.running, b.summarised, b.sent, b.delivered) == (a.running, a.summarised, 40, 42)


def test_nothing_there_yet_is_an_empty_answer(tmp_path):
    assert poll(tmp_path, progress=True) == liveness.Liveness()


def test_the_poll_starts_no_python(tmp_path):
    """It runs on the measured hosts every second: shell builtins only."""
    assert "python" not in liveness.command("/s", "/o", progress=True)
    words = set(liveness.command("/s", "/o", progress=True).replace(";", " ").split())
    assert not words & {"tail", "sed", "cat", "ls", "ps", "pgrep"}


def test_parser_sums_sensors_and_ignores_noise():
    a = liveness.parse("run sensor-1\nrun sensor-2\nsum logger-0\nsent 5\nsent 7\nsent x\n"
                       "dlv x\ndlv 9\r\nsudo: a warning\n\n")
    assert a.running == {"sensor-1", "sensor-2"} and a.summarised == {"logger-0"}
    assert a.sent == 12 and a.delivered == 9


def test_paths_are_quoted(tmp_path):
    odd = tmp_path / "a b;c"
    (odd / "state" / "pids").mkdir(parents=True)
    (odd / "state" / "pids" / "logger-0.pid").write_text(f"{os.getpid()}\n")
    assert poll(odd).running == {"logger-0"}
