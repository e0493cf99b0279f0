"""``invoke accept-host-keys``: trust the keys hosts offer now, replacing any old entry.

Only this explicit step writes a changed key into known_hosts; the fleet refuses changed
keys otherwise. The key is fetched with a bare SSH handshake (no authentication).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import paramiko

from .fleet import HostResult
from .inventory import Host, Inventory


def offered_key(host: Host, timeout: float) -> paramiko.PKey:
    sock = socket.create_connection((host.ssh_host, host.ssh_port), timeout=timeout)
    t = paramiko.Transport(sock)
    try:
        t.banner_timeout = timeout
        t.start_client(timeout=timeout)
        return t.get_remote_server_key()
    finally:
        t.close()


def known_name(host: Host) -> str:
    return host.ssh_host if host.ssh_port == 22 else f"[{host.ssh_host}]:{host.ssh_port}"


def accept(inv: Inventory, hosts: list[Host]) -> list[HostResult]:
    path = os.path.expanduser(inv.known_hosts)
    hk = paramiko.HostKeys()
    if os.path.exists(path):
        hk.load(path)
    results = []
    for h in hosts:
        try:
            key = offered_key(h, inv.connect_timeout)
        except (OSError, paramiko.SSHException) as exc:
            results.append(HostResult(h.name, "failed", f"{h.ssh_host}:{h.ssh_port}: {exc}"))
            continue
        name = known_name(h)
        old = hk.lookup(name) or {}
        fp = f"{key.get_name()} {key.fingerprint}"
        if old.get(key.get_name()) == key:
            results.append(HostResult(h.name, "ok", "already trusted", {"fingerprint": fp}))
            continue
        if name in hk:
            del hk[name]  # drop every old key type for this host: the host was reinstalled
        hk.add(name, key.get_name(), key)
        results.append(HostResult(h.name, "changed", "replaced old key" if old else "new key trusted",
                                  {"fingerprint": fp}))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    hk.save(path)
    return results
