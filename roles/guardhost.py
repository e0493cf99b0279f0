"""The guard's ``roles.hostctl`` commands, in ``roles.answer``'s shape (stdlib only).

``guard-start --config-json J [--live]`` starts the guard with the config the control side
built (or makes the running one reload it); ``guard-stop``, ``guard-status``; and
``guard-unit``, which writes the optional systemd unit on a real host (``deploy --guard-unit``).
The daemon and its files are ``roles.guardctl``'s; this module only speaks hostctl's shape, so
one SSH command per host starts, stops or reads a guard.

The unit runs ``python3 -m roles.guard run --state-dir D`` in the foreground, which is the
command line ``roles.guardctl`` recognises as the guard: ``guard.start`` then reloads the unit's
daemon (SIGHUP), ``guard.stop`` ends it (exit 0 on SIGTERM, so ``Restart=on-failure`` leaves it
stopped until the next boot). It starts only once a config was written (ConditionPathExists).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

from roles import fsutil, guardctl
from roles.answer import add_check, answer
from roles.guardcfg import GuardError

UNIT_NAME = "tcpskim-guard.service"
UNIT_DIR = "/etc/systemd/system"
_UNIT_PATH = re.compile(r"/[A-Za-z0-9._+/-]+")  # nothing a unit file would need to quote or escape


def guard_start(args) -> dict:
    try:
        cfg = json.loads(args.config_json)
    except ValueError as exc:
        raise GuardError(f"guard-start: --config-json is not JSON ({exc})") from None
    out = guardctl.start_config(cfg, args.check, live=args.live)
    would = "would " if args.check else ""
    verb = {"start": "start", "reload": "reload", "unchanged": "leave unchanged"}[out["action"]]
    msg = f"{would}{verb}" if args.check else {"start": "started", "reload": "reloaded",
                                                "unchanged": "running, config unchanged"}[out["action"]]
    msg += f" (pid {out['pid']})" if out.get("pid") else ""
    msg += f", {len(out['peers'])} peer(s) pinned on {out['interface']}"
    if out["dropped_learned"]:
        msg += f"; live MACs replace what was learnt for {', '.join(out['dropped_learned'])}"
    return answer({k: v for k, v in out.items() if k != "changed"}, changed=out["changed"], msg=msg)


def guard_stop(args) -> dict:
    out = guardctl.stop(args)
    pids = out["stopped"] + out["killed"]
    if not pids:
        msg = "no guard running"
    elif args.check:
        msg = f"would stop the guard (pid {', '.join(map(str, pids))})"
    else:
        msg = f"stopped the guard (pid {', '.join(map(str, pids))})" + (" with SIGKILL" if out["killed"] else "")
    return answer({k: v for k, v in out.items() if k != "changed"}, changed=out["changed"], msg=msg)


def guard_status(args) -> dict:
    """Read only: the daemon's status (its state, counters, last events, live pins)."""
    st = guardctl.status(args)
    st.pop("changed", None)
    return st


# --- the systemd unit (real hosts only) ---------------------------------------------------------
def unit_text(checkout: str, python: str, state_dir: str) -> str:
    """The unit for this checkout; GuardError (one line) for a path a unit would have to quote."""
    for key, value in (("checkout", checkout), ("python", python), ("state_dir", state_dir)):
        if not _UNIT_PATH.fullmatch(value or ""):
            raise GuardError(f"guard-unit: {key}: {value!r} is not an absolute path of [A-Za-z0-9._+/-]")
    return f"""# Written by tcpskim (invoke deploy --guard-unit); docs/guard.md
[Unit]
Description=tcpskim network guard: keeps the testbed's neighbour pins, follows MAC changes
After=network-online.target
Wants=network-online.target
ConditionPathExists={state_dir}/guard/config.json

[Service]
Type=simple
WorkingDirectory={checkout}
ExecStart={python} -m roles.guard run --state-dir {state_dir}
Restart=on-failure
RestartSec=2

[Install]
WantedBy=multi-user.target
"""


def _systemctl(*args: str) -> None:
    r = subprocess.run(["systemctl", *args], capture_output=True, text=True)
    if r.returncode:
        tail = ((r.stderr or r.stdout).strip().splitlines() or [f"exit {r.returncode}"])[-1]
        raise RuntimeError(f"systemctl {' '.join(args)}: {tail}")


def guard_unit(args) -> dict:
    """Write (or say it would write) the unit and enable it; it is started by boot, or by hand."""
    text = unit_text(guardctl.CHECKOUT, os.path.realpath(sys.executable), guardctl.DEFAULT_STATE_DIR)
    path = os.path.join(args.unit_dir, UNIT_NAME)
    try:
        with open(path) as f:
            same = f.read() == text
    except OSError:
        same = False
    data = {"unit": path, "enabled_by": "multi-user.target", "check": args.check}
    if same:
        return answer(data, msg=f"{path} is up to date")
    if args.check:
        return answer(data, changed=True, msg=f"would write and enable {path}")
    if args.unit_dir == UNIT_DIR and (shutil.which("systemctl") is None or not os.path.isdir("/run/systemd/system")):
        raise GuardError("guard-unit: this host does not run systemd (no systemctl or /run/systemd/system)")
    os.makedirs(args.unit_dir, exist_ok=True)
    fsutil.atomic_write(path, text)
    _systemctl("daemon-reload")
    _systemctl("enable", UNIT_NAME)
    return answer(data, changed=True, msg=f"wrote and enabled {path} (starts at boot; now: systemctl start {UNIT_NAME})")


def register(sub) -> None:
    p = sub.add_parser("guard-start", help="start the guard with this config, or make the running one reload it")
    p.add_argument("--config-json", required=True, help="the guard's config as one JSON object")
    p.add_argument("--live", action="store_true",
                   help="the peers' MACs were just read live: they replace MACs learnt before")
    add_check(p)
    p.set_defaults(func=guard_start)
    p = sub.add_parser("guard-stop", help="stop the guard (TERM, then KILL); idempotent")
    p.add_argument("--state-dir", default=guardctl.DEFAULT_STATE_DIR)
    p.add_argument("--timeout", type=float, default=5.0, help="seconds before SIGKILL (default 5)")
    add_check(p)
    p.set_defaults(func=guard_stop)
    p = sub.add_parser("guard-status", help="the guard's state, counters, last events and live pins")
    p.add_argument("--state-dir", default=guardctl.DEFAULT_STATE_DIR)
    p.add_argument("--events", type=int, default=10, help="how many recent events (default 10)")
    p.set_defaults(func=guard_status)
    p = sub.add_parser("guard-unit", help="write and enable the guard's systemd unit (real hosts)")
    p.add_argument("--unit-dir", default=UNIT_DIR, help=f"where units go (default {UNIT_DIR})")
    add_check(p)
    p.set_defaults(func=guard_unit)
