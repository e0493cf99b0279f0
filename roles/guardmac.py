"""MAC changes for the guard: the peers' new MACs learnt from the wire, its own announced.

A PERMANENT neighbour entry is never updated by received ARP, so the guard listens itself
(``roles.arpwire``): an ARP frame whose sender IP is a configured peer and whose sender MAC
differs from the pin is that peer's new MAC; it is checked (unicast, not all zeros), kept in
``learned.json`` with its time, and the pin follows. The guard's own MAC is watched through
RTM_NEWLINK (in ``roles.guard``); a change, or the link coming back up, is announced by
gratuitous ARP now and after 0.5 s and 2 s (a broadcast on Wi-Fi can be lost). Either kind of
change, and a newly attached program, also rewrites the XDP program's address map
(``roles.bpfmap``): the hardworker's bounce towards the logger and the sensor's rewrite of
the logger's replies follow without a restart.
"""

from __future__ import annotations

import time

from roles import arpwire, guardcfg
from roles.guardcfg import GuardError

ANNOUNCE_REPEATS_S = (0.5, 2.0)


class MacWatch:
    """The ARP side of a Guard (it reads the guard's cfg, link, pins, journal and timers)."""

    def __init__(self, guard):
        self.g = guard
        self.listener = None

    def configure(self, old_cfg) -> None:
        """Open, re-filter or close the listener for the guard's (new) config."""
        cfg = self.g.cfg
        if self.listener is not None and (cfg["learn"] != "arp" or old_cfg["interface"] != cfg["interface"]):
            self.listener.close()
            self.listener = None
        if cfg["learn"] != "arp" or self.g.link["ifindex"] is None:
            return
        if self.listener is None:
            self.listener = arpwire.Listener(cfg["interface"], self.g.pins.want)
        else:
            self.listener.set_peers(self.g.pins.want)

    def read(self) -> None:
        frames = self.listener.read()
        dropped = self.listener.drops()
        if dropped:
            self.g.journal("arp-drops", dropped=dropped, msg="the kernel dropped ARP frames from peers")
        for op, sha, spa, tpa in frames:
            self.g.seen["ARP"] += 1
            self.on_arp(op, sha, spa, tpa)

    def on_arp(self, op: int, sha: str, spa: str, tpa: str) -> None:
        known = self.g.pins.mac(spa)
        if known is None:
            return  # not a peer (the socket filter lets none through)
        form = "announcement" if spa == tpa else ("request" if op == 1 else "reply")
        if sha == known:
            self.g.journal("arp", ip=spa, mac=sha, form=form, verdict="known")
            return
        if self.g.cfg["learn"] != "arp":
            self.g.journal("arp", ip=spa, mac=sha, form=form, verdict=f"differs from {known}; learn is off")
            return
        try:
            guardcfg.check_mac(sha, f"ARP {form} from peer {spa}")
        except GuardError as exc:
            self.g.journal("refused", ip=spa, mac=sha, msg=str(exc))
            return
        self.learn(spa, sha, f"arp {form}")

    def learn(self, ip: str, mac: str, source: str) -> None:
        pins = self.g.pins
        old = pins.want[ip]["mac"]
        pins.want[ip] = {"mac": mac, "since": time.time(), "source": source}
        path = self.g.p["learned"]
        learned = guardcfg.read_json(path, {})
        learned[ip] = pins.want[ip]
        guardcfg.write_json(path, learned)
        self.g.journal("learn", ip=ip, old=old, mac=mac, source=source)
        pins.repair(ip, f"peer MAC changed {old} -> {mac}")
        self.sync_xdp(f"peer {ip} MAC changed")

    def sync_xdp(self, reason: str) -> None:
        """Bring the address map of the XDP program on the interface (if it is one of ours) up
        to date: peers' MACs as pinned, this host's own addresses with its link's MAC."""
        from roles import bpfmap

        g = self.g
        prog = g.link["xdp"]
        if not prog:
            return
        macs = {ip: w["mac"] for ip, w in g.pins.want.items()}
        if g.link["mac"] and g.link["ifindex"] is not None:
            for a in g.ipr.get_addr(index=g.link["ifindex"], family=2):
                macs[a.get_attr("IFA_ADDRESS")] = g.link["mac"]
        try:
            changes = bpfmap.sync_prog(prog, macs)
        except OSError as exc:
            g.journal("error", error=f"XDP program {prog}: {exc}", reason=reason)
            return
        if changes is None:
            return  # not a tcpskim program
        for c in changes:
            g.journal("xdp", prog_id=prog, reason=reason, **c)

    def announce(self, why: str) -> None:
        g = self.g
        if not (g.cfg["announce"] and g.link["up"] and g.link["mac"]):
            return
        ip = g.cfg["ip"] or next(iter(a.get_attr("IFA_ADDRESS") for a in g.ipr.get_addr(
            index=g.link["ifindex"], family=2)), None)
        if ip is None:
            g.journal("error", error=f"no IPv4 address on {g.cfg['interface']} to announce")
            return
        try:
            arpwire.announce(g.cfg["interface"], g.link["mac"], ip)
        except OSError as exc:
            g.journal("error", error=f"announce: {exc}", reason=why)
            return
        g.journal("announce", ip=ip, mac=g.link["mac"], reason=why)

    def announce_soon(self, why: str) -> None:
        self.announce(why)
        for delay in ANNOUNCE_REPEATS_S:
            self.g.timers.add(delay, lambda: self.announce(f"{why} (repeat)"))

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None
