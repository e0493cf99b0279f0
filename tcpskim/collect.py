"""``invoke collect``: fetch every host's raw files of a run, in parallel and resumably.

A file already here with the remote's size is skipped, so an interrupted collect picks up
where it stopped; a host that is gone is reported and the others are still collected.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from roles import fsutil, vocab

from .fleet import Fleet, HostResult
from .results import RunFileError, read_meta


def run_hosts(run_dir: Path, inv) -> tuple[dict, list]:
    """(run.json, the inventory hosts it names); ValueError (one line) before any SSH if the
    folder is not a run or names a host the inventory does not have."""
    run = read_meta(run_dir)  # RunFileError (a ValueError): one line naming the file and key
    try:
        vocab.token(run["run_id"])  # it names a remote folder
    except vocab.Invalid as exc:
        raise RunFileError(f"{run_dir / 'run.json'}: run_id: {run['run_id']!r} {exc}") from None
    missing = [name for name in run["hosts"] if name not in inv.names]
    if missing:
        raise ValueError(f"run {run['run_id']} used host(s) {', '.join(missing)}, "
                         f"not in inventory {inv.path.name}")
    for name, h in run["hosts"].items():
        if not isinstance(h.get("checkout"), str) or not h["checkout"].startswith("/"):
            raise RunFileError(f"{run_dir / 'run.json'}: hosts.{name}.checkout: must be the absolute "
                               f"path the run used, not {h.get('checkout')!r}")
    return run, [inv.host(name) for name in run["hosts"]]


def collect(fleet: Fleet, run_dir: Path) -> list[HostResult]:
    run, hosts = run_hosts(run_dir, fleet.inv)
    run_id = run["run_id"]

    def one(h) -> HostResult:
        base = f"{run['hosts'][h.name]['checkout']}/.tcpskim/runs/{run_id}"
        r = fleet.run(h, f"if cd {shlex.quote(base)} 2>/dev/null; then find . -type f -printf '%P\\t%s\\n'; "
                         f"else echo NO-RUN-FOLDER; fi", warn=True)
        if r.stdout.strip() == "NO-RUN-FOLDER":
            if run.get("status") == "ok":  # every host took part in a complete run
                return HostResult(h.name, "failed", f"no folder {base} (checkout moved or cleaned?)")
            return HostResult(h.name, "ok", "nothing here: the run failed before this host took part",
                              {"files": 0})
        if r.exited:
            return HostResult(h.name, "failed", f"listing {base}: {(r.stderr or r.stdout).strip()[:200]}")
        fetched = skipped = 0
        for line in r.stdout.splitlines():
            rel, _, size = line.partition("\t")
            trial, _, name = rel.partition("/")
            if not name or "/" in name or name.endswith((".tmp", ".ready", ".sent", ".delivered")):
                continue
            local = run_dir / trial / h.name / name
            if local.exists() and local.stat().st_size == int(size):
                skipped += 1
                continue
            local.parent.mkdir(parents=True, exist_ok=True)
            with fsutil.replacing(local, fsync=False) as part:  # the remote copy is still there
                fleet.get(h, f"{base}/{rel}", part)
            fetched += 1
        return HostResult(h.name, "changed" if fetched else "ok", f"{fetched} fetched, {skipped} already here",
                          {"files": fetched + skipped})

    return fleet.each(hosts, one)
