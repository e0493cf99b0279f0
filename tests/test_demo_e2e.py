"""The README's main job, `invoke demo`, end to end on the e2e lab, twice; then the lab's own
tasks through the real `invoke`: lab.status, lab.down."""

from __future__ import annotations

import json
import re

import pytest

from tcpskim import lab
from tcpskim.report import load_run, tables

from helpers import ROOT, lab_leftovers, run_invoke

pytestmark = pytest.mark.lab  # builds the e2e lab


def test_demo_runs_twice_then_lab_down(e2e_lab):
    inv, path = e2e_lab
    runs = []
    for _ in range(2):  # the quick start must survive being run again on a built lab
        r = run_invoke(path, "demo", "--duration", "2")
        assert r.returncode == 0, r.stdout + r.stderr
        runs.append(re.search(r"^run (\S+) ok: ", r.stdout, re.M).group(1))
        d = ROOT / "results" / runs[-1]
        rows = json.loads((d / "summary.json").read_text())["rows"]
        assert [row["mode"] for row in rows] == ["idle", "xdp", "tcp"]
        assert tables(*load_run(d)) in r.stdout, r.stdout  # collect printed the run's tables
        for row in rows[1:]:
            assert (row["rate_hz"], row["size_bytes"]) == (50, 1024), row
            assert row["status"] == "ok" and row["sent"] == row["delivered"] == row["logged"] >= 100, row
        assert (d / "report.md").exists() and (d / "cpu_per_record.png").exists()
    assert runs[0] != runs[1]

    st = run_invoke(path, "lab.status")
    assert st.returncode == 0, st.stdout + st.stderr
    for h in inv.hosts:
        row = next(line for line in st.stdout.splitlines() if line.startswith(h.name + " "))
        assert h.ip in row and lab.namespace(inv, h) in row, row

    down = run_invoke(path, "lab.down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert lab_leftovers(inv) == []  # namespaces, links, bridge, sshds, state dir, mounts
