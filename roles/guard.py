"""The network guard: a host daemon that keeps the testbed's neighbour entries pinned and
follows the peers' MAC changes (``python3 -m roles.guard start|stop|status|set-peer|run``).

The original testbed (three Raspberry Pis on Wi-Fi) lost neighbour entries mid-run (`arp -n`
showed them ``incomplete``); ``fix-network`` pins them once, the guard keeps them true:

* **Event-driven.** One netlink socket subscribed to RTMGRP_NEIGH and RTMGRP_LINK, one ARP
  packet socket filtered in the kernel to the peers' sender IPs, a signal pipe: the daemon
  sleeps in ``select`` with no timeout (a timeout exists only while a timer is pending: an
  announcement repeat, a hold-off). With nothing changing it uses no CPU.
* **Pins** (``roles.guardpins``): every peer entry PERMANENT with the wanted MAC; a deleted,
  INCOMPLETE/FAILED/any non-permanent or wrong-lladdr entry is replaced at once. Its own
  repair comes back as a right entry, so it never loops; a program fighting over an entry is
  detected and held off.
* **Lost events.** ENOBUFS on the netlink socket (its queue overflowed): the socket is
  reopened *first*, then the whole link and neighbour tables are re-read and repaired, and
  the overflow is journalled. ARP frames the kernel dropped are counted and journalled.
* **MAC changes.** A changed MAC is discovered by the host that owns it: its guard sees
  RTM_NEWLINK with a new IFLA_ADDRESS on its own interface and announces it by gratuitous
  ARP (request and reply forms, at once, after 0.5 s and 2 s; again whenever the link comes
  back up). The kernel never updates a PERMANENT entry from received ARP, so each peer's
  guard listens for ARP itself: a frame whose sender IP is a configured peer and whose sender
  MAC differs from the pin is a MAC change, the pin follows (``learn = "arp"``). A change
  made in a peer's neighbour table is damage and is repaired back; a frame on the wire is
  information. The control side can push MACs too (``set-peer``, or ``start`` with a new
  config: SIGHUP reloads). The newest information wins: each MAC carries the time it was
  last changed (config ``since`` vs learnt), and learnt MACs survive a restart
  (``learned.json``). Trust model: the testbed LAN is trusted (anyone who can send ARP as a
  peer can move its pin); ``learn = "off"`` leaves MAC changes to the control side alone.
* **Bad input** is refused with one line naming it: an all-zero or multicast MAC (config,
  push or ARP), a peer IP that is not in the config (push), an invalid config.
* **Journal.** Every event for the interface or a peer, every repair, learn, announcement,
  overflow and refusal: one JSON line with its time in ``<state_dir>/guard/events.jsonl``;
  ``status.json`` holds the state and the last events (``status`` adds the live table).
* **Detached.** ``start`` spawns ``run`` in a new session (stdin /dev/null, output to
  ``guard.log``) with a pidfile: it survives the SSH session that started it.
"""

from __future__ import annotations

import argparse
import collections
import heapq
import json
import logging
import os
import select
import signal
import sys
import time
import traceback

from roles import fsutil, guardcfg
from roles.guardcfg import GuardError

log = logging.getLogger("tcpskim.guard")
IFF_UP, IFF_LOWER_UP = 0x1, 0x10000
ERROR_LIMIT, ERROR_WINDOW_S = 20, 10.0


class Journal:
    """Every event as one JSON line with its time; the last ones and counts kept for status."""

    def __init__(self, path: str, keep: int = 50, max_bytes: int = 4 << 20):
        self.path, self.max_bytes = path, max_bytes
        self.f = open(path, "a", buffering=1)
        self.recent = collections.deque(maxlen=keep)
        self.counts = collections.Counter()
        self.dirty = False

    def __call__(self, kind: str, **fields) -> dict:
        rec = {"time": round(time.time(), 6), "kind": kind, **fields}
        self.f.write(json.dumps(rec, default=str) + "\n")
        self.recent.append(rec)
        self.counts[kind] += 1
        self.dirty = True
        if self.f.tell() > self.max_bytes:  # a bounded file even if something fights for hours
            self.f.close()
            os.replace(self.path, self.path + ".1")
            self.f = open(self.path, "a", buffering=1)
        return rec

    def close(self) -> None:
        self.f.close()


class Timers:
    """One-shot callbacks; ``timeout()`` is what select waits (None: nothing pending)."""

    def __init__(self):
        self._heap, self._n = [], 0

    def add(self, delay: float, fn) -> None:
        self._n += 1
        heapq.heappush(self._heap, (time.monotonic() + delay, self._n, fn))

    def timeout(self):
        return None if not self._heap else max(0.0, self._heap[0][0] - time.monotonic())

    def run_due(self) -> None:
        while self._heap and self._heap[0][0] <= time.monotonic():
            heapq.heappop(self._heap)[2]()


class Guard:
    """The guard's state and event handlers (``Daemon`` runs its loop)."""

    def __init__(self, state_dir: str):
        from pyroute2 import IPRoute  # host half only

        from roles.guardmac import MacWatch
        from roles.guardpins import Pins

        self.p = guardcfg.paths(state_dir)
        self.journal = Journal(self.p["events"])
        self.timers = Timers()
        self.ipr = IPRoute()
        self.pins = Pins(self.ipr, self.journal, self.timers)
        self.macs = MacWatch(self)
        self.cfg = None
        self.nl = None
        self.link = {"ifindex": None, "mac": None, "up": False, "xdp": None}
        self.seen = collections.Counter()
        self.started = time.time()

    # --- configuration ---------------------------------------------------------------------
    def apply(self, cfg: dict, want: dict, reason: str) -> None:
        from roles import nlwatch

        old, self.cfg = self.cfg, cfg
        self.pins.want = want
        if cfg["cpus"]:
            os.sched_setaffinity(0, cfg["cpus"])
        if self.nl is None:
            self.nl = nlwatch.EventSocket(rcvbuf=cfg["rcvbuf"])  # first: no event between read and watch
        self.resync(reason)  # finds the interface (index, MAC) first
        self.macs.configure(old or cfg)
        self.journal(reason, interface=cfg["interface"], token=cfg["token"],
                     peers={ip: w["mac"] for ip, w in want.items()})

    def reload(self) -> None:
        try:
            cfg, want = load(self.p)
        except GuardError as exc:
            self.journal("refused", msg=f"reload: {exc}; keeping the running config")
            return
        self.apply(cfg, want, "reload")

    # --- netlink ---------------------------------------------------------------------------
    def resync(self, reason: str) -> None:
        """Re-read the link and the whole neighbour table; repair what is not right."""
        idx = self.ipr.link_lookup(ifname=self.cfg["interface"])
        if not idx:
            self.journal("error", error=f"interface {self.cfg['interface']} does not exist", reason=reason)
            self.link["ifindex"] = self.pins.ifindex = None
            return
        self._update_link(self.ipr.get_links(idx[0])[0])
        fixed = self.pins.sync(reason)
        self.journal("resync", reason=reason, repaired=fixed)
        self.macs.sync_xdp(reason)

    def _update_link(self, msg) -> list:
        """Take in a link message of our interface; returns what changed."""
        xdp = msg.get_attr("IFLA_XDP")
        new = {"ifindex": msg["index"], "mac": (msg.get_attr("IFLA_ADDRESS") or "").lower() or None,
               "up": bool(msg["flags"] & IFF_UP and msg["flags"] & IFF_LOWER_UP),
               "xdp": xdp.get_attr("IFLA_XDP_PROG_ID") if xdp else None}
        changed = [k for k in new if new[k] != self.link[k]]
        self.link.update(new)
        self.pins.ifindex = new["ifindex"]
        return changed

    def on_link(self, event: str, msg) -> None:
        name = msg.get_attr("IFLA_IFNAME")
        if msg["index"] != self.link["ifindex"] and name != self.cfg["interface"]:
            return
        if event == "RTM_DELLINK":
            self.journal("link", event=event, ifname=name, verdict="interface removed: pins wait for it")
            self.link.update(ifindex=None, up=False)
            self.pins.ifindex = None
            return
        was_up = self.link["up"]
        changed = self._update_link(msg)
        self.journal("link", event=event, ifname=name, changed=changed, mac=self.link["mac"],
                     up=self.link["up"], xdp_prog_id=self.link["xdp"])
        came_up = self.link["up"] and not was_up
        if "ifindex" in changed or came_up:
            self.resync("interface re-created" if "ifindex" in changed else "link up")
            self.macs.close()  # a fresh ARP socket on the (possibly new) interface
            self.macs.configure(self.cfg)
        if self.link["up"] and ("mac" in changed or came_up):
            self.macs.announce_soon("own MAC changed" if "mac" in changed else "link up")
        if "xdp" in changed or "mac" in changed:
            self.macs.sync_xdp("XDP program attached" if "xdp" in changed else "own MAC changed")

    def read_netlink(self) -> None:
        from roles import nlwatch

        try:
            msgs = self.nl.read()
        except nlwatch.Overflow as exc:
            self.journal("overflow", msg=f"{exc}: events were lost; reopening and re-reading the tables")
            self.reopen("after ENOBUFS")
            return
        neigh = []
        for m in msgs:
            event = nlwatch.NAMES[m["header"]["type"]]
            self.seen[event] += 1
            if event in ("RTM_NEWLINK", "RTM_DELLINK"):
                self.on_link(event, m)
            else:
                neigh.append((event, m))
        self.pins.on_events(neigh)

    def reopen(self, reason: str) -> None:
        """New sockets (netlink first, so nothing falls between), then the whole tables again."""
        from roles import nlwatch

        self.nl.close()
        self.nl = nlwatch.EventSocket(rcvbuf=self.cfg["rcvbuf"])
        self.macs.close()
        self.resync(reason)
        self.macs.configure(self.cfg)

    # --- status ----------------------------------------------------------------------------
    def write_status(self, running: bool = True) -> None:
        guardcfg.write_json(self.p["status"], status_of(self, running))
        self.journal.dirty = False

    def close(self) -> None:
        self.macs.close()
        for s in (self.nl, self.ipr):
            if s is not None:
                s.close()
        self.journal.close()



class Daemon:
    """The guard's loop: select on the signal pipe, netlink and ARP sockets, with no timeout
    unless a timer is pending; SIGHUP reloads, SIGTERM/SIGINT stop."""

    def __init__(self, guard: Guard, sigfd: int):
        self.g = guard
        self.sigfd = sigfd
        self.stopping = False
        self.errors = []

    def loop(self) -> None:
        g = self.g
        g.write_status()
        while not self.stopping:
            arp = g.macs.listener
            fds = [self.sigfd, g.nl] + ([arp] if arp else [])
            ready = select.select(fds, [], [], g.timers.timeout())[0]
            if self.sigfd in ready:
                for signum in os.read(self.sigfd, 64):
                    if signum == signal.SIGHUP:
                        self.guarded(g.reload)
                    else:
                        self.stopping = True
                        g.journal("signal", signal=signal.Signals(signum).name)
            if g.nl in ready:
                self.guarded(g.read_netlink)
            if arp is not None and arp in ready:
                self.guarded(g.macs.read)
            self.guarded(g.timers.run_due)
            if g.journal.dirty:
                g.write_status()

    def guarded(self, fn) -> None:
        """Run a handler; an unexpected error is journalled, the sockets replaced (a broken one
        is not read again in a loop) and the tables re-read. Only an error storm (ERROR_LIMIT
        within ERROR_WINDOW_S) ends the guard."""
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - a guard that dies guards nothing
            now = time.monotonic()
            self.errors = [t for t in self.errors if t > now - ERROR_WINDOW_S] + [now]
            where = getattr(fn, "__name__", "?")
            self.g.journal("error", error=f"{type(exc).__name__}: {exc}", where=where,
                           trace=traceback.format_exc(limit=3).splitlines()[-3:])
            if len(self.errors) >= ERROR_LIMIT:
                raise
            self.g.reopen(f"after an error in {where}")


def load(p: dict):
    """(config, wanted MACs) from the guard's files; GuardError names what is wrong."""
    cfg = guardcfg.read_json(p["config"])
    if cfg is None:
        raise GuardError(f"guard config: cannot read {p['config']}")
    cfg = guardcfg.validate(cfg)
    return cfg, guardcfg.effective(cfg, guardcfg.read_json(p["learned"], {}))


def status_of(g: Guard, running: bool = True) -> dict:
    return {"pid": os.getpid(), "running": running, "started": g.started, "updated": time.time(),
            "interface": g.cfg["interface"] if g.cfg else None, "ifindex": g.link["ifindex"],
            "own_mac": g.link["mac"], "link_up": g.link["up"], "xdp_prog_id": g.link["xdp"],
            "token": g.cfg["token"] if g.cfg else None, "peers": g.pins.want,
            "repairs": dict(g.pins.repairs), "counts": dict(g.journal.counts),
            "seen": dict(g.seen), "events": list(g.journal.recent)}


def catch_signals() -> int:
    """The read end of a pipe that receives SIGTERM, SIGINT and SIGHUP as bytes, for select.
    Installed before anything else (the imports of start-up take a while): a signal then is
    read by the loop and journalled, never a silent death with an empty log."""
    rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wfd, warn_on_full_buffer=False)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: None)
    return rfd


def run(state_dir: str) -> int:
    """The daemon's main: load, pin, watch; every exit path journals and writes the status."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s guard[%(process)d] %(levelname)s %(message)s")
    sigfd = catch_signals()
    p = guardcfg.paths(state_dir)
    os.makedirs(p["dir"], exist_ok=True)
    guard = Guard(state_dir)
    daemon = Daemon(guard, sigfd)
    status = 0
    try:
        cfg, want = load(p)
    except GuardError as exc:
        log.error("%s", exc)
        guard.journal("refused", msg=str(exc))
        guard.close()
        return 2
    fsutil.atomic_write(p["pid"], f"{os.getpid()}\n", fsync=False)
    try:
        guard.apply(cfg, want, "start")
        daemon.loop()
    except Exception as exc:  # noqa: BLE001 - the journal and log must say why it died
        log.error("failed: %s\n%s", exc, traceback.format_exc())
        guard.journal("error", error=f"{type(exc).__name__}: {exc}", fatal=True)
        status = 1
    finally:
        guard.journal("stop", status=status)
        guard.write_status(running=False)
        guard.close()
        if guardcfg.read_pid(p["pid"]) == os.getpid():
            os.unlink(p["pid"])
    return status


def main(argv=None) -> int:
    from roles import guardctl

    parser = argparse.ArgumentParser(prog="roles.guard", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    guardctl.register(sub)
    p = sub.add_parser("run", help="the daemon itself, in the foreground (start runs it detached)")
    p.add_argument("--state-dir", required=True)
    args = parser.parse_args(argv)
    if args.cmd == "run":
        return run(os.path.abspath(args.state_dir))
    try:
        result = args.func(args)
    except Exception as exc:  # one JSON line, as roles.hostctl answers
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}" if not isinstance(exc, GuardError) else str(exc)}))
        return 1
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
