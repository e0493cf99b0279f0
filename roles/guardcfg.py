"""The guard's configuration, file layout and input checks (stdlib only).

The control side writes a JSON config per host: the data-plane ``interface``, the ``peers``
(IPv4 -> MAC: every other testbed host) and an absolute ``state_dir``. ``roles.guard start``
validates it, stamps each peer with the time its MAC was last *changed* by the control side
(``since``), and keeps the result as ``<state_dir>/guard/config.json``, which the daemon reads
(again on SIGHUP). Every refusal is one line naming the key and the value.
"""

from __future__ import annotations

import json
import os
import time

from roles import fsutil, vocab

KEYS = {"interface", "peers", "state_dir", "ip", "cpus", "learn", "announce", "rcvbuf", "since", "token"}
DEFAULTS = {"ip": None, "cpus": [], "learn": "arp", "announce": True, "rcvbuf": None, "since": {}, "token": ""}


class GuardError(ValueError):
    """Bad guard input: the message is one line naming the offending key and value."""


def _rule(rule, value, where: str, **kw):
    try:
        return rule(value, **kw)
    except vocab.Invalid as exc:
        raise GuardError(f"{where}: {value!r} {exc}") from None


def check_mac(mac, where: str) -> str:
    """A unicast, non-zero MAC in lower case (roles.vocab's rule), or GuardError naming ``where``."""
    return _rule(vocab.mac, mac, where)


def check_ip(ip, where: str) -> str:
    """A unicast IPv4 host address, or GuardError naming ``where``."""
    return _rule(vocab.ipv4_host, ip, where)


def validate(cfg) -> dict:
    """Defaults filled, every key checked; raises GuardError with one line."""
    if not isinstance(cfg, dict):
        raise GuardError("guard config: must be a JSON object")
    unknown = sorted(set(cfg) - KEYS)
    if unknown:
        raise GuardError(f"guard config: unknown key {unknown[0]!r}")
    cfg = {**json.loads(json.dumps(DEFAULTS)), **cfg}
    for key in ("interface", "peers", "state_dir"):
        if key not in cfg:
            raise GuardError(f"guard config: {key}: missing")
    _rule(vocab.interface, cfg["interface"], "guard config: interface")
    if not isinstance(cfg["state_dir"], str) or not os.path.isabs(cfg["state_dir"]):
        raise GuardError(f"guard config: state_dir: {cfg['state_dir']!r} is not an absolute path")
    if not isinstance(cfg["peers"], dict) or not cfg["peers"]:
        raise GuardError("guard config: peers: expected a non-empty object {ip: mac}")
    peers = {}
    for ip, mac in cfg["peers"].items():
        ip2 = check_ip(ip, f"guard config: peers.{ip}")
        peers[ip2] = check_mac(mac, f"guard config: peers.{ip}")
    cfg["peers"] = peers
    if cfg["ip"] is not None:
        cfg["ip"] = check_ip(cfg["ip"], "guard config: ip")
        if cfg["ip"] in peers:
            raise GuardError(f"guard config: peers.{cfg['ip']}: is this host's own ip")
    _rule(vocab.cpu_list, cfg["cpus"], "guard config: cpus", count=os.cpu_count() or 1)
    if cfg["learn"] not in ("arp", "off"):
        raise GuardError(f"guard config: learn: {cfg['learn']!r} is not 'arp' or 'off'")
    if type(cfg["announce"]) is not bool:
        raise GuardError(f"guard config: announce: {cfg['announce']!r} is not true or false")
    if cfg["rcvbuf"] is not None and (type(cfg["rcvbuf"]) is not int or not 1024 <= cfg["rcvbuf"] <= 1 << 26):
        raise GuardError(f"guard config: rcvbuf: {cfg['rcvbuf']!r} is not a byte count in 1024..64 MiB")
    if not isinstance(cfg["since"], dict) or not all(isinstance(v, (int, float)) for v in cfg["since"].values()):
        raise GuardError("guard config: since: expected {ip: epoch seconds}")
    return cfg


def guard_dir(state_dir: str) -> str:
    return os.path.join(state_dir, "guard")


def paths(state_dir: str) -> dict:
    d = guard_dir(state_dir)
    return {"dir": d, "config": os.path.join(d, "config.json"), "pid": os.path.join(d, "guard.pid"),
            "status": os.path.join(d, "status.json"), "events": os.path.join(d, "events.jsonl"),
            "learned": os.path.join(d, "learned.json"), "log": os.path.join(d, "guard.log")}


def read_json(path: str, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def write_json(path: str, obj) -> None:
    """Atomic (readers see the old or the new file); no fsync: these files are advisory."""
    fsutil.atomic_write(path, json.dumps(obj, indent=1, sort_keys=True), fsync=False)


def stamp(new: dict, old: dict | None, now: float | None = None) -> dict:
    """``since`` per peer: kept from the old config when the MAC is unchanged, else now."""
    now = time.time() if now is None else now
    old = old or {}
    prev_peers, prev_since = old.get("peers", {}), old.get("since", {})
    new["since"] = {ip: (prev_since.get(ip, now) if prev_peers.get(ip) == mac else now)
                    for ip, mac in new["peers"].items()}
    return new


def effective(cfg: dict, learned: dict) -> dict:
    """ip -> {mac, since, source}: the newest of what the control side said and what was learnt."""
    out = {}
    for ip, mac in cfg["peers"].items():
        best = {"mac": mac, "since": float(cfg["since"].get(ip, 0.0)), "source": "config"}
        got = learned.get(ip)
        if isinstance(got, dict) and got.get("since", 0) > best["since"]:
            try:
                best = {"mac": check_mac(got.get("mac"), "learned"), "since": float(got["since"]),
                        "source": got.get("source", "arp")}
            except GuardError:
                pass
        out[ip] = best
    return out


def read_pid(path: str):
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
