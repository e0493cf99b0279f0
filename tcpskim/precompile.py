"""Before a run's first trial: every host compiles the BPF programs the run's roles will load.

A role loads its programs from its host's compiled-program cache (``roles.bpfcache``); only a
miss runs clang, seconds of CPU (about a minute on an emulated Raspberry Pi). So that no trial
pays it, the first one included, ``run-experiment`` sends each host, once, the role configs of
every trial it will start there (``hostctl precompile``, one SSH command per host, in parallel),
and the host compiles what its cache lacks. Configs that differ only where no program flag
comes from (trial id, folder, rate) are sent once. A host that fails is named and the run stops
before any trial, as preflight does.
"""

from __future__ import annotations

import json

from .fleet import Fleet, HostResult, summary
from .plan import role_instances
from .trialconfig import Testbed, role_config

# Per trial, keys no BPF program's flags come from: configs equal but for these compile the same.
_NOT_FLAGS = ("trial", "out_dir", "rate_hz", "instance", "warmup_s", "duration_s", "tail_s", "work_us")
TIMEOUT_S = 900  # a cold cache on an emulated Pi: about a minute per program


def configs_by_host(bed: Testbed, plan, run_id: str) -> dict[str, tuple]:
    """Host name -> (host, [role configs]) for the roles that load programs (not the logger)."""
    inv, out, seen = bed.inv, {}, set()
    for trial in plan:
        for ri in role_instances(trial, inv.logger, inv.hardworker, bed.sensors):
            if ri.role == "logger":
                continue
            cfg = role_config(bed, trial, run_id, ri)
            sig = (ri.host.name, json.dumps({k: v for k, v in cfg.items() if k not in _NOT_FLAGS}, sort_keys=True))
            if sig not in seen:
                seen.add(sig)
                out.setdefault(ri.host.name, (ri.host, []))[1].append(cfg)
    return out


def precompile(fleet: Fleet, bed: Testbed, plan, run_id: str, out=print) -> list[HostResult]:
    """``hostctl precompile`` on every host with programs; the per-host table is printed."""
    todo = configs_by_host(bed, plan, run_id)

    def one(h):
        ans = fleet.call(h, "precompile", "--configs", json.dumps(todo[h.name][1]), timeout=TIMEOUT_S)
        return HostResult(h.name, "changed" if ans.changed else "ok", ans.msg, ans.data)

    results = fleet.each([h for h, _ in todo.values()], one)
    summary("precompile (BPF programs)", results, out=out)
    return results
