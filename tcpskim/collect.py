"""``invoke collect``: fetch every host's raw files of a run, in parallel and resumably.

A file already here with the remote's size is skipped, so an interrupted collect picks up
where it stopped; a host that is gone is reported and the others are still collected.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from .fleet import Fleet, HostResult


def collect(fleet: Fleet, run_dir: Path) -> list[HostResult]:
    run = json.loads((run_dir / "run.json").read_text())
    run_id = run["run_id"]
    hosts = [fleet.inv.host(name) for name in run.get("hosts", {})]

    def one(h) -> HostResult:
        base = f"{run['hosts'][h.name]['checkout']}/.tcpskim/runs/{run_id}"
        r = fleet.run(h, f"cd {shlex.quote(base)} 2>/dev/null && find . -type f -printf '%P\\t%s\\n' || true")
        fetched = skipped = 0
        for line in r.stdout.splitlines():
            rel, _, size = line.partition("\t")
            trial, _, name = rel.partition("/")
            if not name or "/" in name or name.endswith((".tmp", ".ready")):
                continue
            local = run_dir / trial / h.name / name
            if local.exists() and local.stat().st_size == int(size):
                skipped += 1
                continue
            local.parent.mkdir(parents=True, exist_ok=True)
            part = local.with_name(local.name + ".part")
            fleet.get(h, f"{base}/{rel}", str(part))
            part.replace(local)
            fetched += 1
        return HostResult(h.name, "changed" if fetched else "ok", f"{fetched} fetched, {skipped} already here",
                          {"files": fetched + skipped})

    return fleet.each(hosts, one)
