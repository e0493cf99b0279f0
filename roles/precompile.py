"""``hostctl precompile``: fill this host's compiled-program cache for a run, before its first trial.

Given the role configs the run will start on this host (``--configs``: a JSON list, as the
control side builds them), it works out every program those roles will load, with exactly the
flags they will use (the same functions: ``HardworkerSkim.program``, ``SensorSkim.program``,
``attribution.tracer_program``), and compiles the ones the cache lacks (``roles.bpfcache``).
Then no trial's role start runs clang, the first one included. Per config: the hardworker loads
the attribution tracer in every mode and ``hardworker.c`` in xdp mode; a sensor ``sensor.c`` in
xdp mode; the logger nothing. ``--check`` says what would be compiled, compiles nothing (and
mounts no tracefs). Needs root, as the roles do (bcc loads what it compiles).
"""

from __future__ import annotations

import json
import os

from roles.answer import add_check, answer

def programs(cfg: dict) -> list[tuple[str, list[str]]]:
    """[(program, flags)] the role of ``cfg`` (validated) loads at its start, tracer last."""
    from roles import skim

    out = []
    if cfg["mode"] == "xdp" and cfg["role"] == "hardworker":
        out.append(skim.HardworkerSkim.program(**skim.hardworker_args(cfg)))
    elif cfg["mode"] == "xdp" and cfg["role"] == "sensor":
        out.append(skim.SensorSkim.program(**skim.sensor_args(cfg)))
    return out


def tracer(cfg: dict):
    """(program, flags) of the hardworker's tracer, or None (another role; tracefs unmounted)."""
    from roles import attribution

    if cfg["role"] != "hardworker" or not attribution.tracefs_mounted():
        return None
    cpus = cfg["cpus"] or sorted(os.sched_getaffinity(0))  # the role pins itself to cfg["cpus"]
    # as roles.window.WindowMeter builds its Tracer
    _, program, flags, _ = attribution.tracer_program(cpus, cpu_idle=cfg.get("trace_idle", True))
    return program, flags


def precompile(args):
    from roles import attribution, bpfcache, runtime

    try:
        configs = json.loads(args.configs)
    except ValueError as exc:
        raise ValueError(f"configs: not JSON ({exc})") from None
    if not isinstance(configs, list) or not configs:
        raise ValueError("configs: must be a non-empty JSON list of role configs")
    mounted = False
    if not args.check and any(isinstance(c, dict) and c.get("role") == "hardworker" for c in configs):
        mounted = attribution.ensure_tracefs()  # as the role would; the tracer's flags need it
    wanted = {}
    for i, cfg in enumerate(configs):
        try:
            cfg = runtime.validate(cfg)
        except runtime.ConfigError as exc:
            raise ValueError(f"configs[{i}]: {exc}") from None
        for program, flags in programs(cfg) + [t for t in [tracer(cfg)] if t]:
            wanted[bpfcache.key(bpfcache.program_path(program), flags)] = (program, flags)
    rows = []
    for k, (program, flags) in wanted.items():
        if bpfcache.lookup(k) is not None:
            how = "hit"
        elif args.check:
            how = "would compile"
        else:
            how = bpfcache.ensure(program, flags)[0]
        rows.append({"program": program, "key": k[:16], "cache": how})
    todo = [r for r in rows if r["cache"] != "hit"]
    msg = (f"{len(todo)} {'to compile' if args.check else 'compiled'}, "
           f"{len(rows) - len(todo)} already compiled") + ("; mounted tracefs" if mounted else "")
    return answer({"programs": rows, "cache_dir": bpfcache.cache_dir(), "mounted_tracefs": mounted},
                  changed=bool(todo) or mounted, msg=msg)


def register(sub) -> None:
    p = sub.add_parser("precompile", help="compile the BPF programs these role configs will load, "
                                          "into the host's cache (before a run's first trial)")
    p.add_argument("--configs", required=True, help="a JSON list of role configs (as `start` gets)")
    add_check(p)
    p.set_defaults(func=precompile)
