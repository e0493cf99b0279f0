"""known_hosts handling, and ``invoke accept-host-keys``: trust the keys hosts offer now.

* ``load_known_hosts`` reads a known_hosts file line by line, the way tcpskim checks keys:
  lines paramiko cannot use (``@cert-authority``/``@revoked`` markers, key types it does
  not know, malformed lines) are skipped instead of failing every connection.
* ``remember`` adds one host's key at the text level: every other line of the file (comments,
  markers, hashed entries, keys paramiko cannot parse) is kept byte for byte, and the file is
  replaced atomically with its mode kept. (paramiko's ``HostKeys.save`` would rewrite the
  file with only the entries it understood.)
* ``accept`` replaces a host's old entries with the key it offers now. Only this explicit step
  writes a changed key into known_hosts; the fleet refuses changed keys otherwise. The key is
  fetched with a bare SSH handshake (no authentication).
"""

from __future__ import annotations

import hmac
import os
import socket

import paramiko
from paramiko.hostkeys import HostKeyEntry

from roles import fsutil

from .inventory import Host, Inventory
from .outcome import HostResult



def _usable_pattern(pattern: str) -> bool:
    """False for a hashed pattern paramiko would crash on when it compares a name with it."""
    if not pattern:
        return False
    if pattern.startswith("|1|"):
        try:
            paramiko.HostKeys.hash_host("x", pattern)
        except Exception:  # noqa: BLE001 - bad base64, salt length, ...
            return False
    return True


def _names_host(host_field: str, name: str) -> bool:
    """Whether a known_hosts host field (comma-separated patterns) names ``name`` exactly.

    Plain patterns match by equality, hashed ``|1|salt|hash`` ones by hashing ``name`` with
    their salt. Wildcards and negations are not expanded (paramiko does not expand them either).
    """
    for pattern in host_field.split(","):
        if pattern == name:
            return True
        if (pattern.startswith("|1|") and _usable_pattern(pattern)
                and hmac.compare_digest(paramiko.HostKeys.hash_host(name, pattern).encode(), pattern.encode())):
            return True
    return False


def _parse(data: bytes, into: paramiko.HostKeys) -> paramiko.HostKeys:
    seen: set[tuple[str, str]] = set()
    for raw in data.splitlines():
        line = raw.decode("utf-8", "replace").strip()
        # Marker lines are skipped: tcpskim does not enforce @revoked or trust @cert-authority
        # (paramiko implements neither); OpenSSH still honours them.
        if not line or line.startswith(("#", "@")):
            continue
        try:
            entry = HostKeyEntry.from_line(" ".join(line.split()))  # OpenSSH allows runs of blanks
        except Exception:  # noqa: BLE001, S112 - InvalidHostKey, SSHException, ValueError, ...
            continue
        if entry is None:  # too few fields or a key type paramiko does not know
            continue
        keytype = entry.key.get_name()
        for h in entry.hostnames:
            if _usable_pattern(h) and (h, keytype) not in seen:  # first line wins, as in paramiko
                seen.add((h, keytype))
                into.add(h, keytype, entry.key)
    return into


def load_known_hosts(path: str, into: paramiko.HostKeys | None = None) -> paramiko.HostKeys:
    """The host keys of a known_hosts file that paramiko can use; a missing file gives none.

    ``into`` (e.g. ``SSHClient.get_host_keys()``) receives the keys instead of a new HostKeys.
    Unlike ``HostKeys.load``, a line paramiko rejects is skipped, never raised.
    """
    hk = into if into is not None else paramiko.HostKeys()
    try:
        with open(os.path.expanduser(path), "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return hk
    return _parse(data, hk)


def _write_atomic(path: str, data: bytes) -> None:
    """Replace ``path`` with ``data`` (roles.fsutil), keeping the old file's mode and owner;
    a new file gets 0600 and, if missing, a 0700 parent directory. A symlinked file is
    written through to its target."""
    os.makedirs(os.path.dirname(os.path.realpath(path)), mode=0o700, exist_ok=True)
    fsutil.atomic_write(path, data, mode=0o600, keep_mode=True)


def remember(path: str, name: str, key: paramiko.PKey, replace: bool = False) -> bool:
    """Trust ``key`` for ``name`` (``host`` or ``[host]:port``) in a known_hosts file.

    Appends one line ``name keytype base64``; with ``replace``, first drops the plain entry
    lines whose host field names ``name`` (plainly or hashed), like ``ssh-keygen -R``: every key
    type, and the whole line if it also names other hosts. Marker lines, comments and all other
    lines stay byte for byte. Without ``replace``, a key already trusted for ``name`` is not
    added twice. Returns whether the file was written.
    """
    path = os.path.expanduser(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        data = b""
    if not replace and _parse(data, paramiko.HostKeys()).check(name, key):
        return False
    out = _without(data, [name]) if replace else data
    if out and not out.endswith((b"\n", b"\r")):
        out += b"\n"
    out += f"{name} {key.get_name()} {key.get_base64()}\n".encode()
    _write_atomic(path, out)
    return True


def _without(data: bytes, names) -> bytes:
    """``data`` without the plain entry lines whose host field names any of ``names``."""
    keep = []
    for raw in data.splitlines(keepends=True):
        line = raw.decode("utf-8", "replace").strip()
        if line and not line.startswith(("#", "@")) and any(_names_host(line.split()[0], n) for n in names):
            continue
        keep.append(raw)
    return b"".join(keep)


def forget(path: str, names) -> bool:
    """Drop every entry line naming one of ``names`` (as ``remember(replace=True)`` does), keeping
    all other lines byte for byte. Returns whether the file was written."""
    path = os.path.expanduser(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return False
    out = _without(data, list(names))
    if out == data:
        return False
    _write_atomic(path, out)
    return True


def offered_key(host: Host, timeout: float) -> paramiko.PKey:
    sock = socket.create_connection((host.ssh_host, host.ssh_port), timeout=timeout)
    t = paramiko.Transport(sock)
    try:
        t.banner_timeout = timeout
        t.start_client(timeout=timeout)
        return t.get_remote_server_key()
    finally:
        t.close()


def known_name(host: Host, addr: str | None = None) -> str:
    """The known_hosts name of ``addr`` (default the host's ssh_host) at the host's SSH port."""
    addr = addr or host.ssh_host
    return addr if host.ssh_port == 22 else f"[{addr}]:{host.ssh_port}"


def accept(inv: Inventory, hosts: list[Host]) -> list[HostResult]:
    path = os.path.expanduser(inv.known_hosts)
    hk = load_known_hosts(path)
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
        try:
            # replace: drop every old key type for this host (it was reinstalled), keep all else
            remember(path, name, key, replace=True)
        except OSError as exc:
            results.append(HostResult(h.name, "failed", f"cannot write {path}: {exc}", {"fingerprint": fp}))
            continue
        hk = load_known_hosts(path)  # as written, should the same name come up again
        results.append(HostResult(h.name, "changed", "replaced old key" if old else "new key trusted",
                                  {"fingerprint": fp}))
    return results
