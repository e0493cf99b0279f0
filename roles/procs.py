"""Starting, waiting for and stopping role processes: subcommands of ``roles.hostctl``.

``start`` spawns ``python3 -m roles.<role> --config F`` fully detached (new session, stdin from
/dev/null, stdout+stderr to the role's log, cwd = the checkout) and records its pid under
state_dir/pids; ``wait-ready`` polls the role's ready file; ``go`` writes go.json; ``stop``
TERMs (then KILLs) every role with a pidfile and detaches XDP; ``status`` lists the roles.
A pid counts as a role only while /proc/<pid>/cmdline names a ``roles.`` module, so a reused
pid is never signalled. Also runnable alone: ``python3 -m roles.procs CMD``. ``start``, ``go``
and ``stop`` answer in ``roles.answer``'s shape and take ``--check``.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time

from roles import fsutil, runtime
from roles.proctab import live_argv  # noqa: F401 - also used as procs.live_argv
from roles.answer import add_check, answer, shape

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_STATE_DIR = os.path.join(CHECKOUT, ".tcpskim")


def role_cmdline(pid: int):
    """The argv of a live (non-zombie) role process, or None."""
    argv = live_argv(pid)
    return argv if argv and any(a.startswith("roles.") for a in argv) else None


def read_pid(path):
    """The pid a pidfile holds, or None."""
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def terminate(pids, timeout: float, alive=live_argv) -> set:
    """TERM ``pids``, wait up to ``timeout`` s for ``alive(pid)`` to turn false, KILL the rest
    (and wait up to 2 s more for them). Returns the pids that needed SIGKILL."""
    pids = list(pids)
    for pid in pids:
        _kill(pid, signal.SIGTERM)
    end = time.monotonic() + timeout
    while time.monotonic() < end and any(alive(pid) for pid in pids):
        time.sleep(0.05)
    killed = {pid for pid in pids if alive(pid)}
    for pid in killed:
        _kill(pid, signal.SIGKILL)
    end = time.monotonic() + 2
    while time.monotonic() < end and any(alive(pid) for pid in killed):
        time.sleep(0.05)
    return killed


def _pidfiles(state_dir, role=None):
    d = os.path.join(state_dir, "pids")
    try:
        names = sorted(n for n in os.listdir(d) if n.endswith(".pid"))
    except FileNotFoundError:
        return []
    out = []
    for n in names:
        name = n[:-4]
        if role and name.rsplit("-", 1)[0] != role:
            continue
        out.append((name, os.path.join(d, n), read_pid(os.path.join(d, n))))
    return out


def tail(path, n=20):
    try:
        with open(path, errors="replace") as f:
            return f.read().splitlines()[-n:]
    except OSError:
        return []


def start(args) -> dict:
    cfg = runtime.load_config(args.config)
    p = runtime.paths(cfg)
    name = runtime.role_name(cfg)
    old = read_pid(p["pid"])
    if old and role_cmdline(old):
        raise RuntimeError(f"{name} is already running (pid {old})")
    if args.check:
        return answer({"role": name, "log": p["log"]}, changed=True, msg=f"would start {name}")
    os.makedirs(os.path.dirname(p["pid"]), exist_ok=True)
    os.makedirs(cfg["out_dir"], exist_ok=True)
    for stale in (p["ready"], p["summary"]):  # never let wait-ready see a previous run's file
        try:
            os.unlink(stale)
        except FileNotFoundError:
            pass
    with open(p["log"], "ab") as logf, open(os.devnull, "rb") as null:
        proc = subprocess.Popen([sys.executable, "-m", f"roles.{cfg['role']}", "--config",
                                 os.path.abspath(args.config)],
                                stdin=null, stdout=logf, stderr=subprocess.STDOUT, cwd=CHECKOUT,
                                start_new_session=True, close_fds=True)
    # The role rewrites (and at exit removes) the same file; writing it now closes the gap.
    fsutil.atomic_write(p["pid"], f"{proc.pid}\n")
    return answer({"pid": proc.pid, "role": name, "log": p["log"]}, changed=True,
                  msg=f"started {name} (pid {proc.pid})")


def wait_ready(args) -> dict:
    cfg = runtime.load_config(args.config)
    p = runtime.paths(cfg)
    name = runtime.role_name(cfg)
    end = time.monotonic() + args.timeout
    while True:
        try:
            with open(p["ready"]) as f:
                return {"role": name, **json.load(f)}
        except (FileNotFoundError, ValueError):
            pass
        pid = read_pid(p["pid"])
        if pid is None or role_cmdline(pid) is None:
            if os.path.exists(p["ready"]):
                continue
            raise RuntimeError(f"{name} died before it was ready; last log lines:\n"
                               + "\n".join(tail(p["log"])))
        if time.monotonic() > end:
            raise TimeoutError(f"{name} not ready after {args.timeout} s; last log lines:\n"
                               + "\n".join(tail(p["log"], 5)))
        time.sleep(0.05)


def go(args) -> dict:
    start_at = args.start_at if args.start_at is not None else time.time() + args.delay
    path = os.path.join(args.out_dir, "go.json")
    if not args.check:
        os.makedirs(args.out_dir, exist_ok=True)
        runtime.write_json_atomic(path, {"start_at": start_at})
    return answer({"start_at": start_at}, changed=True,
                  msg=f"{'would write' if args.check else 'wrote'} {path} (start at {start_at:.3f})")


def _stop_check(args) -> dict:
    running = [name for name, _, pid in _pidfiles(args.state_dir, args.role) if pid is not None and role_cmdline(pid)]
    prog = None
    if args.interface:
        from roles.netops import _xdp_prog
        prog = _xdp_prog(args.interface)
    guard = []
    if args.guard:
        from roles import guardctl
        guard = guardctl.guard_pids(os.path.abspath(args.state_dir))
    parts = ([f"would stop {', '.join(running)}"] if running else []) + \
        ([f"would detach XDP prog {prog} from {args.interface}"] if prog else []) + \
        ([f"would stop the guard (pid {', '.join(map(str, guard))})"] if guard else [])
    return answer({"running": running, "xdp_prog_id": prog, "guard": guard}, changed=bool(parts),
                  msg="; ".join(parts) or "nothing running")


def stop(args) -> dict:
    if args.check:
        return _stop_check(args)
    targets = []
    stale = []
    for name, path, pid in _pidfiles(args.state_dir, args.role):
        if pid is not None and role_cmdline(pid):
            targets.append((name, path, pid))
        else:
            stale.append(name)
            _unlink(path)
    killed_pids = terminate([pid for _, _, pid in targets], args.timeout, alive=role_cmdline)
    stopped = [name for name, _, pid in targets if pid not in killed_pids]
    killed = [name for name, _, pid in targets if pid in killed_pids]
    for _, path, _ in targets:
        _unlink(path)  # a KILLed role could not remove its own
    detached = None
    if args.interface:
        from roles.xdp import detach_any
        detached = detach_any(args.interface)
    guard = _stop_guard(args) if args.guard else []
    parts = ([f"stopped {', '.join(stopped)}"] if stopped else []) + \
        ([f"KILLED {', '.join(killed)}"] if killed else []) + \
        ([f"detached XDP from {args.interface}"] if detached else []) + \
        ([f"stopped the guard (pid {', '.join(map(str, guard))})"] if guard else [])
    return answer({"stopped": stopped, "killed": killed, "stale_pidfiles": stale, "xdp_detached": detached,
                   "guard_stopped": guard},
                  changed=bool(stopped or killed or detached or guard), msg="; ".join(parts) or "nothing running")


def _stop_guard(args) -> list[int]:
    """The guard of this state dir stopped too (``stop --guard``); the pids it had."""
    from roles import guardctl  # only when asked: a plain stop stays as small as it was

    out = guardctl.stop(argparse.Namespace(state_dir=args.state_dir, timeout=args.timeout, check=False))
    return out["stopped"] + out["killed"]


def status(args) -> dict:
    running, stale = {}, []
    for name, _, pid in _pidfiles(args.state_dir):
        if pid is not None and role_cmdline(pid):
            running[name] = pid
        else:
            stale.append(name)
    return {"running": running, "stale_pidfiles": stale}


def _kill(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def register(sub) -> None:
    p = sub.add_parser("start", help="start a role fully detached; prints its pid")
    p.add_argument("--config", required=True, help="the role's JSON config")
    add_check(p)
    p.set_defaults(func=start)
    p = sub.add_parser("wait-ready", help="wait until a role wrote its ready file")
    p.add_argument("--config", required=True, help="the role's JSON config")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    p.set_defaults(func=wait_ready)
    p = sub.add_parser("go", help="write go.json (start_at) into a trial's out dir")
    p.add_argument("--out-dir", required=True, help="the trial's out_dir")
    p.add_argument("--start-at", type=float, help="epoch seconds")
    p.add_argument("--delay", type=float, default=1.0, help="start_at = now + DELAY when --start-at is absent")
    add_check(p)
    p.set_defaults(func=go)
    p = sub.add_parser("stop", help="TERM (then KILL) running roles, detach XDP; idempotent")
    p.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help="host state dir (default <checkout>/.tcpskim)")
    p.add_argument("--role", help="only this role (sensor, hardworker, logger)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds before SIGKILL (default 10)")
    p.add_argument("--interface", help="detach any XDP program from this interface afterwards")
    p.add_argument("--guard", action="store_true", help="stop the network guard of this state dir too")
    add_check(p)
    p.set_defaults(func=stop)
    p = sub.add_parser("status", help="which roles are running")
    p.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help="host state dir (default <checkout>/.tcpskim)")
    p.set_defaults(func=status)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="roles.procs", description=__doc__)
    register(parser.add_subparsers(dest="cmd", required=True))
    args = parser.parse_args(argv)
    try:
        result = shape(args.func(args))
    except Exception as exc:  # same contract as roles.hostctl
        result = answer(failed=True, msg=f"{type(exc).__name__}: {exc}")
    print(json.dumps(result, default=str))
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
