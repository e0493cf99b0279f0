"""``invoke guard.start|stop|status``: the network guard (``roles.guard``) on every host.

The control side builds each host's guard config from the inventory and from live facts: its
``interface`` and ``ip``; ``peers``, every other testbed host's IP with the MAC read from that
host's interface just now (``hostctl facts``, as fix-network reads unknown MACs); its
``state_dir`` (``<checkout>/.tcpskim``, the checkout as the host reports it); and ``cpus``. In the
lab the guard runs on the CPUs the lab's plan gives every host but the hardworker
(``lab.names.cpu_plan`` / ``other_cpus``), so never on the hardworker's dedicated CPU; on real
hosts the hardworker's guard avoids the CPUs its inventory gives the roles, the others are not
pinned. A bad MAC (all zeros, multicast), a host down or a link down fails that host with one
line, and every host that needs it as a peer with a line naming it. Then one SSH command per
host (``hostctl guard-start --live``: the live MACs replace what a guard learnt before).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from roles import guardcfg

from .fleet import Fleet, HostError, HostResult
from .inventory import Host, Inventory
from .netfix import discover_macs, peers_of

START_TIMEOUT_S = 60.0  # the host waits up to 15 s for the daemon to apply its config
SHOWN_COUNTS = ("pin", "learn", "xdp", "announce", "fight", "overflow", "refused", "error")


def read_facts(fleet: Fleet) -> tuple[dict[str, dict], dict[str, str]]:
    """Every inventory host's live facts (MAC, checkout, CPU count), and why a host has none."""
    facts, bad = {}, {}
    for r in discover_macs(fleet, list(fleet.inv.hosts)):
        if r.failed:
            bad[r.host] = r.detail
            continue
        h = fleet.inv.host(r.host)
        try:
            guardcfg.check_mac(r.data["mac"], f"hosts.{h.name}: live MAC of {h.interface}")
        except guardcfg.GuardError as exc:
            bad[r.host] = str(exc)
            continue
        if not r.data.get("checkout"):
            bad[r.host] = "hostctl facts reports no checkout: deploy first"
            continue
        facts[r.host] = r.data
    return facts, bad


def guard_cpus(inv: Inventory, facts: dict[str, dict]) -> dict[str, list[int]]:
    """Host name -> the CPUs its guard may use ([] = not pinned)."""
    if inv.lab is not None:
        from .lab.names import cpu_plan, other_cpus

        rest = other_cpus(cpu_plan(inv), inv.hosts)
        return {h.name: list(rest) for h in inv.hosts}
    out = {}
    for h in inv.hosts:
        n = facts.get(h.name, {}).get("ncpu")
        out[h.name] = [c for c in range(n) if c not in h.cpus] if h.role == "hardworker" and h.cpus and n else []
    return out


def build_config(inv: Inventory, host: Host, facts: dict[str, dict], bad: dict[str, str],
                 cpus: dict[str, list[int]]) -> dict:
    """The guard config of one host; HostError (one line) naming a peer whose MAC is unknown or bad."""
    if host.name in bad:
        raise HostError(bad[host.name])
    peers = peers_of(inv, host)
    for p in peers:
        if p.name in bad:
            raise HostError(f"peer {p.name} ({p.ip}): {bad[p.name]}")
    return {"interface": host.interface, "ip": host.ip,
            "peers": {p.ip: facts[p.name]["mac"] for p in peers},
            "state_dir": f"{facts[host.name]['checkout']}/.tcpskim", "cpus": cpus.get(host.name, [])}


def start(fleet: Fleet, hosts: list[Host], check: bool = False) -> list[HostResult]:
    """Start (or reload) the guard on ``hosts``; each row carries the action and the pid."""
    inv = fleet.inv
    facts, bad = read_facts(fleet)
    cpus = guard_cpus(inv, facts)

    def one(h: Host) -> HostResult:
        cfg = build_config(inv, h, facts, bad, cpus)
        ans = fleet.call(h, "guard-start", "--config-json", json.dumps(cfg, separators=(",", ":")), "--live",
                         *(["--check"] if check else []), timeout=START_TIMEOUT_S)
        return ans.result(h.name, data={"action": ans.data.get("action", ""), "pid": ans.data.get("pid") or "",
                                        "peers": len(cfg["peers"]),
                                        "cpus": ",".join(map(str, cfg["cpus"])) or "any"})

    return fleet.each(hosts, one)


def stop(fleet: Fleet, hosts: list[Host], timeout: float = 5.0, check: bool = False) -> list[HostResult]:
    def one(h: Host) -> HostResult:
        ans = fleet.call(h, "guard-stop", "--timeout", str(timeout), *(["--check"] if check else []),
                         timeout=timeout + 30)
        return ans.result(h.name, data={"stopped": ",".join(map(str, ans.data.get("stopped", []) +
                                                                 ans.data.get("killed", [])))})

    return fleet.each(hosts, one)


def status(fleet: Fleet, hosts: list[Host], events: int = 10) -> list[HostResult]:
    """Each host's guard: state, live pins, counters and its last ``events`` (``data["events"]``)."""
    def one(h: Host) -> HostResult:
        st = fleet.hostctl(h, "guard-status", "--events", str(events))
        return HostResult(h.name, "ok", event_line(st["events"][-1]) if st.get("events") else "no events",
                          {"state": state_of(st), "pins": pins_of(st), "counts": counts_of(st),
                           "events": st.get("events", [])})

    return fleet.each(hosts, one)


def state_of(st: dict) -> str:
    if st.get("running"):
        return f"running (pid {st.get('pid')}, since {_time(st.get('started'))})"
    if st.get("started"):
        return f"stopped (last update {_time(st.get('updated'))})"
    return "never started"


def pins_of(st: dict) -> str:
    live = st.get("live") or {}
    if not live:
        return "-"
    ok = sum(1 for w in live.values() if w.get("ok"))
    wrong = [f"{ip} {w.get('state')}" for ip, w in live.items() if not w.get("ok")]
    return f"{ok}/{len(live)} ok" + (f" ({', '.join(wrong)})" if wrong else "")


def counts_of(st: dict) -> str:
    c = st.get("counts") or {}
    return ", ".join(f"{k} {c[k]}" for k in SHOWN_COUNTS if c.get(k)) or "-"


def _time(t) -> str:
    if not isinstance(t, (int, float)):
        return "?"
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def event_line(ev: dict) -> str:
    """One journal event: its UTC time, kind and fields (a traceback's lines left out)."""
    rest = " ".join(f"{k}={v if isinstance(v, str) else json.dumps(v, default=str)}"
                    for k, v in ev.items() if k not in ("time", "kind", "trace", "token"))
    return f"{_time(ev.get('time'))} {ev.get('kind', '?'):<8} {rest}"[:220]


def print_events(results: list[HostResult], out=print) -> None:
    for r in results:
        if r.failed or not r.data.get("events"):
            continue
        out(f"\n{r.host}: last {len(r.data['events'])} guard event(s)")
        for ev in r.data["events"]:
            out("  " + event_line(ev))
