"""Controlling the guard daemon: ``start`` (or reload), ``stop``, ``status`` and ``set-peer``.

``start --config F`` validates F, keeps it as ``<state_dir>/guard/config.json`` (each peer
stamped with when its MAC last changed) and either spawns the daemon fully detached (new
session, stdin /dev/null, output to ``guard.log``, pidfile) or, when one runs, makes it reload
(SIGHUP); it returns once the daemon has applied that config (its status carries the config's
token), or fails with the log's last lines. ``--check`` says what would change and changes
nothing. A pid counts as the guard only while its command line is ``roles.guard run`` for this
state dir, so a reused pid is never signalled; ``stop`` also finds a guard whose pidfile is gone.
Every command returns one dict with ``changed``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from roles import fsutil, guardcfg
from roles.proctab import live_argv
from roles.guardcfg import GuardError

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_STATE_DIR = os.path.join(CHECKOUT, ".tcpskim")
# a slow host (an emulated arm64 VM takes ~40 s to import pyroute2 and apply) may raise it
READY_TIMEOUT_S = float(os.environ.get("TCPSKIM_GUARD_READY_S", "15"))


_cmdline = live_argv  # the argv of a live (non-zombie) process, or None


def _is_guard(pid: int, state_dir: str) -> bool:
    argv = _cmdline(pid) or []
    return "roles.guard" in argv and "run" in argv and state_dir in argv


def guard_pids(state_dir: str) -> list[int]:
    """Live guard daemons of this state dir: the pidfile's, and any other (a lost pidfile)."""
    pids = set()
    pid = guardcfg.read_pid(guardcfg.paths(state_dir)["pid"])
    if pid and _is_guard(pid, state_dir):
        pids.add(pid)
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) not in pids and _is_guard(int(name), state_dir):
            pids.add(int(name))
    return sorted(pids)


def _tail(path: str, n: int = 10) -> str:
    try:
        with open(path, errors="replace") as f:
            return "\n".join(f.read().splitlines()[-n:])
    except OSError:
        return ""


def _spawn(state_dir: str) -> subprocess.Popen:
    p = guardcfg.paths(state_dir)
    with open(p["log"], "ab") as logf, open(os.devnull, "rb") as null:
        proc = subprocess.Popen([sys.executable, "-m", "roles.guard", "run", "--state-dir", state_dir],
                                stdin=null, stdout=logf, stderr=subprocess.STDOUT, cwd=CHECKOUT,
                                start_new_session=True, close_fds=True)
    fsutil.atomic_write(p["pid"], f"{proc.pid}\n", fsync=False)  # the daemon rewrites it; this closes the gap
    return proc


def _ended(pid: int, state_dir: str, proc) -> bool:
    """Whether the daemon is gone. One we spawned is our child: its exit status is the truth
    (and poll reaps it); one we only signalled is gone once its pid is no longer the guard."""
    if proc is not None:
        return proc.poll() is not None
    return not _is_guard(pid, state_dir)


def _how_it_ended(proc) -> str:
    """'exited with status N' or 'was killed by SIGX' for a daemon we spawned, else 'exited'."""
    rc = proc.returncode if proc is not None else None
    if rc is None:
        return "exited"
    if rc >= 0:
        return f"exited with status {rc}"
    try:
        return f"was killed by {signal.Signals(-rc).name}"
    except ValueError:  # a real-time signal has no name
        return f"was killed by signal {-rc}"


def _wait_applied(state_dir: str, pid: int, token: str, timeout: float, proc=None) -> dict:
    """The daemon's status once it carries token; fails with how the daemon ended and the last
    lines of its log and journal (a daemon killed by a signal leaves nothing in its log)."""
    p = guardcfg.paths(state_dir)
    end = time.monotonic() + timeout
    while True:
        st = guardcfg.read_json(p["status"], {})
        if st.get("pid") == pid and st.get("token") == token and st.get("running"):
            return st
        gone = _ended(pid, state_dir, proc)
        if gone or time.monotonic() > end:
            what = _how_it_ended(proc) if gone else f"did not apply its config in {timeout} s"
            raise (RuntimeError if gone else TimeoutError)(
                f"the guard (pid {pid}) {what}; last lines of {p['log']}:\n{_tail(p['log'])}\n"
                f"last events of {p['events']}:\n{_tail(p['events'], 3)}")
        time.sleep(0.05)


def _install(cfg: dict, check: bool, force: bool = False) -> dict:
    """Keep cfg as the guard's config, start or reload the daemon; the common end of start and set-peer.
    ``force``: reload even when the config is the same (what the daemon learnt was dropped)."""
    state_dir = cfg["state_dir"]
    p = guardcfg.paths(state_dir)
    old = guardcfg.read_json(p["config"])
    same = not force and old is not None and {k: v for k, v in old.items() if k not in ("since", "token")} == \
        {k: v for k, v in cfg.items() if k not in ("since", "token")}
    pids = guard_pids(state_dir)
    action = ("unchanged" if same else "reload") if pids else "start"
    out = {"changed": action != "unchanged", "action": action, "pid": pids[0] if pids else None,
           "interface": cfg["interface"], "peers": cfg["peers"], "check": check}
    if check or action == "unchanged":
        return out
    os.makedirs(p["dir"], exist_ok=True)
    guardcfg.stamp(cfg, old)
    cfg["token"] = f"{time.time():.6f}.{os.getpid()}"
    guardcfg.write_json(p["config"], cfg)
    proc = None
    if pids:
        os.kill(pids[0], signal.SIGHUP)
        pid = pids[0]
    else:
        proc = _spawn(state_dir)
        pid = proc.pid
    st = _wait_applied(state_dir, pid, cfg["token"], READY_TIMEOUT_S, proc)
    out.update(pid=pid, own_mac=st.get("own_mac"), peers={ip: w["mac"] for ip, w in st["peers"].items()})
    return out


def start(args) -> dict:
    cfg = guardcfg.read_json(args.config)
    if cfg is None:
        raise GuardError(f"guard config: cannot read {args.config} as JSON")
    return start_config(cfg, args.check)


def start_config(cfg, check: bool, live: bool = False) -> dict:
    """``start`` with the config itself. ``live``: its peers' MACs were just read from the peers
    themselves, so they are newer than anything learnt before: a learnt MAC that disagrees is
    dropped (``dropped_learned`` in the answer) and the daemon reloads."""
    cfg = guardcfg.validate(cfg)
    cfg.pop("since", None)
    cfg.pop("token", None)
    stale = []
    if live:
        path = guardcfg.paths(cfg["state_dir"])["learned"]
        learned = guardcfg.read_json(path, {})
        stale = sorted(ip for ip, w in learned.items()
                       if ip in cfg["peers"] and not (isinstance(w, dict) and w.get("mac") == cfg["peers"][ip]))
        if stale and not check:
            guardcfg.write_json(path, {ip: w for ip, w in learned.items() if ip not in stale})
    out = _install(cfg, check, force=bool(stale))
    out["dropped_learned"] = stale
    return out


def set_peer(args) -> dict:
    """Push peers' MACs (IP=MAC) to the running config; all are checked before anything changes."""
    state_dir = os.path.abspath(args.state_dir)
    cfg = guardcfg.read_json(guardcfg.paths(state_dir)["config"])
    if cfg is None:
        raise GuardError(f"set-peer: no guard config in {state_dir}: start the guard first")
    cfg = guardcfg.validate(cfg)
    new = dict(cfg["peers"])
    for item in args.peer:
        ip, sep, mac = item.partition("=")
        if not sep:
            raise GuardError(f"set-peer: {item!r} is not IP=MAC")
        ip = guardcfg.check_ip(ip.strip(), "set-peer")
        if ip not in cfg["peers"]:
            raise GuardError(f"set-peer: {ip} is not a peer in the guard's config (peers: {', '.join(cfg['peers'])})")
        new[ip] = guardcfg.check_mac(mac.strip(), f"set-peer: {ip}")
    cfg = {k: v for k, v in cfg.items() if k not in ("since", "token")}
    cfg["peers"] = new
    return _install(cfg, args.check)


def stop(args) -> dict:
    """TERM every guard of the state dir, KILL after the timeout; never leaves one running."""
    state_dir = os.path.abspath(args.state_dir)
    pids = guard_pids(state_dir)
    out = {"changed": bool(pids), "stopped": [], "killed": [], "check": args.check}
    if args.check:
        out["stopped"] = pids
        return out
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    end = time.monotonic() + args.timeout
    while time.monotonic() < end and any(_is_guard(pid, state_dir) for pid in pids):
        time.sleep(0.05)
    for pid in pids:
        if _is_guard(pid, state_dir):
            _signal(pid, signal.SIGKILL)
            out["killed"].append(pid)
        else:
            out["stopped"].append(pid)
    end = time.monotonic() + 2.0
    while time.monotonic() < end and any(_is_guard(pid, state_dir) for pid in pids):
        time.sleep(0.05)
    left = [pid for pid in pids if _is_guard(pid, state_dir)]
    if left:
        raise RuntimeError(f"guard pid(s) {left} still running after SIGKILL")
    try:
        os.unlink(guardcfg.paths(state_dir)["pid"])
    except FileNotFoundError:
        pass
    return out


def _signal(pid: int, sig) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def live_pins(interface: str, peers: dict) -> dict:
    """ip -> {mac, state, ok} from the neighbour table now (this host's namespace)."""
    from pyroute2 import IPRoute

    from roles.guardpins import NUD_PERMANENT, state_name

    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=interface)
        have = {n.get_attr("NDA_DST"): n for n in ipr.get_neighbours(ifindex=idx[0], family=2)} if idx else {}
    out = {}
    for ip, mac in peers.items():
        n = have.get(ip)
        got = (n.get_attr("NDA_LLADDR") or "").lower() if n is not None else None
        out[ip] = {"mac": got, "state": state_name(n["state"]) if n is not None else "missing",
                   "ok": n is not None and bool(n["state"] & NUD_PERMANENT) and got == mac}
    return out


def status(args) -> dict:
    state_dir = os.path.abspath(args.state_dir)
    pids = guard_pids(state_dir)
    st = guardcfg.read_json(guardcfg.paths(state_dir)["status"], {})
    out = {"changed": False, "running": bool(pids), "pid": pids[0] if pids else None,
           "interface": st.get("interface"), "own_mac": st.get("own_mac"), "link_up": st.get("link_up"),
           "started": st.get("started"), "updated": st.get("updated"), "counts": st.get("counts", {}),
           "repairs": st.get("repairs", {}), "peers": st.get("peers", {}),
           "events": st.get("events", [])[-args.events:] if args.events else []}
    if st.get("interface") and st.get("peers"):
        out["live"] = live_pins(st["interface"], {ip: w["mac"] for ip, w in st["peers"].items()})
    return out


def register(sub) -> None:
    p = sub.add_parser("start", help="start the guard detached, or make the running one reload F")
    p.add_argument("--config", required=True, help="the guard's JSON config")
    p.add_argument("--check", action="store_true", help="say what would change, change nothing")
    p.set_defaults(func=start)
    p = sub.add_parser("stop", help="stop the guard (TERM, then KILL); idempotent")
    p.add_argument("--state-dir", default=DEFAULT_STATE_DIR)
    p.add_argument("--timeout", type=float, default=5.0)
    p.add_argument("--check", action="store_true")
    p.set_defaults(func=stop)
    p = sub.add_parser("status", help="the guard's state, its last events and the live pins")
    p.add_argument("--state-dir", default=DEFAULT_STATE_DIR)
    p.add_argument("--events", type=int, default=20, help="how many recent events (default 20)")
    p.set_defaults(func=status)
    p = sub.add_parser("set-peer", help="push a peer's MAC (IP=MAC, repeatable) to the running guard")
    p.add_argument("--state-dir", default=DEFAULT_STATE_DIR)
    p.add_argument("--peer", action="append", required=True)
    p.add_argument("--check", action="store_true")
    p.set_defaults(func=set_peer)
