"""``invoke fix-network --watch``: the control machine's side of the guard.

The original testbed's Windows control machine lost its route to the sensor during a run;
``route -p add <ip> MASK 255.255.255.255 <gw> IF 3`` brought it back. The watch repeats what
``fix-network`` does for routes, for as long as it runs: every ``interval`` seconds each host
gets one ping (the control machine has no event to wait for; Windows may be the OS). When a
host misses ``misses`` pings in a row, the watch reads ``route print``, plans the host's route
(``tcpskim.routes``) and applies it, then pings again:

* no persistent /32, or one via another gateway: ``route -p add`` (after ``route delete``);
* a persistent /32 via ``control.gateway`` that is not *active* (Windows did not re-apply it,
  e.g. after an adapter reset): deleted and added again;
* the route is there and active: nothing is changed; the host itself does not answer.

Every event is printed with its time; a host is repaired once per outage. Only the standard
library and ``tcpskim.routes`` are used (Windows).
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from . import routes
from .fleet import HostResult


@dataclass
class HostState:
    misses: int = 0
    repaired: bool = False  # in the current outage
    repairs: int = 0
    outages: int = 0
    last: str = "not checked"


def _stamp(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def reassert_action(a: routes.Action) -> routes.Action:
    """Delete and add again a persistent route that route print shows but that is not active."""
    delete = ("route", "delete", a.ip, "MASK", routes.HOST_MASK, a.gateway)
    return routes.Action("change", a.host, a.ip, a.gateway, a.interface,
                         (delete, routes.windows_add_argv(a.ip, a.gateway, a.interface)), (a.gateway,))


class Watch:
    """Ping rounds over the inventory's hosts; repairs routes of hosts that stopped answering."""

    def __init__(self, ctx, inv, system: str | None = None, misses: int = 2, dry_run: bool = False,
                 out=print, now=time.time):
        self.ctx, self.inv, self.misses, self.dry_run, self.out, self.now = ctx, inv, misses, dry_run, out, now
        self.system = system or platform.system()
        self.state = {h.name: HostState() for h in inv.hosts}
        self.events: list[dict] = []

    def say(self, host, what: str, **extra) -> None:
        t = self.now()
        self.events.append({"time": t, "host": host.name, "ip": host.ip, "event": what, **extra})
        self.out(f"{_stamp(t)} {host.name} {host.ip}: {what}")

    def round(self) -> None:
        due = []
        for h in self.inv.hosts:
            st = self.state[h.name]
            if routes.reachable(self.ctx, h.ip, self.system):
                if st.misses:
                    self.say(h, f"answers again after {st.misses} missed ping(s)")
                st.misses, st.repaired, st.last = 0, False, "answers"
                continue
            st.misses += 1
            if st.misses == 1:
                st.outages += 1
            st.last = f"no answer ({st.misses} in a row)"
            self.say(h, f"no answer to ping ({st.misses}/{self.misses})")
            if st.misses >= self.misses and not st.repaired:
                due.append(h)
        if due:
            self.repair(due)

    def repair(self, hosts) -> None:
        for h in hosts:
            self.state[h.name].repaired = True
        try:
            outcome = self._apply(hosts)
        except routes.RouteError as exc:
            for h in hosts:
                self.say(h, f"cannot repair its route: {exc}")
            return
        by_ip = {h.ip: h for h in hosts}
        for r in outcome:
            h = by_ip[r.action.ip]
            if r.status in ("added", "changed"):
                self.state[h.name].repairs += 1
                ok = routes.reachable(self.ctx, h.ip, self.system)
                self.say(h, f"route re-added ({r.message}); {'answers now' if ok else 'still no answer'}",
                         status=r.status)
            else:
                self.say(h, f"route {r.status}: {r.message}", status=r.status)

    def _apply(self, hosts) -> list[routes.RouteResult]:
        ctl = self.inv.control
        if not ctl.get("gateway"):
            raise routes.RouteError("control.gateway is not set in the inventory")
        if routes._os_kind(self.system) != "windows":
            actions = routes.plan_posix_routes(hosts, ctl["gateway"], ctl.get("interface"), self.system)
            return routes.apply_posix_routes(self.ctx, actions, dry_run=self.dry_run, sudo=os.geteuid() != 0)
        table = routes.read_route_table(self.ctx)
        iface = routes.find_interface(table, ctl.get("interface"), ctl["gateway"])
        actions = []
        for a in routes.plan_windows_routes(table, hosts, ctl["gateway"], iface):
            active = any(r.destination == a.ip and r.netmask == routes.HOST_MASK for r in table.active)
            if a.kind == "ok" and active:
                actions.append(a)  # reported "ok": the route is not what is wrong
            elif a.kind == "ok":
                actions.append(reassert_action(a))
            else:
                actions.append(a)
        return routes.apply_windows_routes(self.ctx, actions, dry_run=self.dry_run)

    def run(self, interval: float, rounds: int | None = None, sleep=time.sleep) -> list[HostResult]:
        """Rounds every ``interval`` s until ``rounds`` are done or Ctrl-C; the per-host table rows."""
        n = 0
        try:
            while rounds is None or n < rounds:
                start = time.monotonic()
                self.round()
                n += 1
                if rounds is None or n < rounds:
                    sleep(max(0.0, interval - (time.monotonic() - start)))
        except KeyboardInterrupt:
            self.out("watch stopped (Ctrl-C)")
        return self.results()

    def results(self) -> list[HostResult]:
        out = []
        for h in self.inv.hosts:
            st = self.state[h.name]
            status = "failed" if st.misses else ("changed" if st.repairs else "ok")
            out.append(HostResult(h.name, status, f"{st.last}; {st.outages} outage(s), {st.repairs} route repair(s)",
                                  {"outages": st.outages, "repairs": st.repairs}))
        return out
