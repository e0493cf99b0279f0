"""The guard's neighbour pins: what each peer's entry must be, and the repair when it is not.

An entry is right when it is PERMANENT and carries the wanted MAC. Every neighbour event for
a peer is judged against that; anything else (deleted, INCOMPLETE, FAILED, STALE, a
different lladdr) is repaired with one ``replace``. The guard's own repair comes back as an
event that is right, so it never loops on itself. A peer whose entry is changed back more
than ``FIGHT_LIMIT`` times in ``FIGHT_WINDOW_S`` (another program fighting over it) is left
alone for that window, said so in the journal, then repaired again.
"""

from __future__ import annotations

import collections
import socket
import time

NUD_STATES = {0x01: "INCOMPLETE", 0x02: "REACHABLE", 0x04: "STALE", 0x08: "DELAY", 0x10: "PROBE",
              0x20: "FAILED", 0x40: "NOARP", 0x80: "PERMANENT", 0x00: "NONE"}
NUD_PERMANENT = 0x80
NTF_PROXY = 0x08
FIGHT_LIMIT = 10
FIGHT_WINDOW_S = 1.0


def state_name(state: int) -> str:
    return "|".join(n for bit, n in NUD_STATES.items() if bit and state & bit) or "NONE"


def verdict(deleted: bool, state: int, lladdr: str | None, want: str) -> str:
    """'ok' or why the entry needs repair."""
    if deleted:
        return "deleted"
    if not state & NUD_PERMANENT:
        return f"state {state_name(state)}"
    if (lladdr or "").lower() != want:
        return f"lladdr {lladdr or 'none'} is not {want}"
    return "ok"


class Pins:
    """Wanted MACs (ip -> {mac, since, source}) kept in the neighbour table of one interface."""

    def __init__(self, ipr, journal, timers):
        self.ipr, self.journal, self.timers = ipr, journal, timers
        self.ifindex = None
        self.want: dict[str, dict] = {}
        self.repairs = collections.Counter()
        self._recent: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        self._held: dict[str, float] = {}

    def mac(self, ip: str) -> str | None:
        w = self.want.get(ip)
        return w["mac"] if w else None

    def on_events(self, events) -> None:
        """Judge a batch of (RTM_NEWNEIGH/RTM_DELNEIGH, msg); each is journalled, and a peer's
        entry is repaired once, if the batch's last word on it is not right (``ip neigh del``
        alone sends FAILED, then DELNEIGH)."""
        last = {}
        for event, msg in events:
            ip = msg.get_attr("NDA_DST")
            if (msg["family"] != socket.AF_INET or msg["ifindex"] != self.ifindex or ip not in self.want
                    or msg["flags"] & NTF_PROXY):
                continue
            lladdr = msg.get_attr("NDA_LLADDR")
            last[ip] = verdict(event == "RTM_DELNEIGH", msg["state"], lladdr, self.want[ip]["mac"])
            self.journal("neigh", event=event, ip=ip, state=state_name(msg["state"]), lladdr=lladdr,
                         verdict=last[ip])
        for ip, why in last.items():
            if why != "ok":
                self.repair(ip, why)

    def sync(self, reason: str) -> int:
        """Read the interface's whole table and repair every peer entry that is not right."""
        if self.ifindex is None:
            return 0
        have = {n.get_attr("NDA_DST"): n for n in self.ipr.get_neighbours(ifindex=self.ifindex, family=socket.AF_INET)}
        fixed = 0
        for ip, w in self.want.items():
            n = have.get(ip)
            why = "missing" if n is None else verdict(False, n["state"], n.get_attr("NDA_LLADDR"), w["mac"])
            if why != "ok":
                fixed += self.repair(ip, f"{reason}: {why}")
        return fixed

    def repair(self, ip: str, why: str) -> bool:
        if self.ifindex is None:
            self.journal("error", ip=ip, reason=why, error="interface missing: repair waits for it")
            return False
        now = time.monotonic()
        if self._held.get(ip, 0) > now:
            return False
        recent = self._recent[ip]
        while recent and recent[0] < now - FIGHT_WINDOW_S:
            recent.popleft()
        if len(recent) >= FIGHT_LIMIT:
            self._held[ip] = now + FIGHT_WINDOW_S
            self.journal("fight", ip=ip, repairs=len(recent), window_s=FIGHT_WINDOW_S,
                         msg=f"{ip} was changed back {len(recent)} times in {FIGHT_WINDOW_S} s: "
                             f"another program manages it; holding off for {FIGHT_WINDOW_S} s")
            self.timers.add(FIGHT_WINDOW_S, lambda: self.sync(f"after holding off {ip}"))
            return False
        recent.append(now)
        mac = self.want[ip]["mac"]
        try:
            self.ipr.neigh("replace", dst=ip, lladdr=mac, ifindex=self.ifindex, state=NUD_PERMANENT)
        except Exception as exc:  # NetlinkError (e.g. interface down): retried on the next link-up
            self.journal("error", ip=ip, mac=mac, reason=why, error=f"{type(exc).__name__}: {exc}")
            return False
        self.repairs[ip] += 1
        self.journal("pin", ip=ip, mac=mac, reason=why)
        return True
