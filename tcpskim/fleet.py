"""SSH to the testbed: one place that opens Fabric connections to inventory hosts.

* Host keys are checked against the inventory's known_hosts file (Fabric alone would accept
  any key), read with ``hostkeys.load_known_hosts`` (lines paramiko cannot use are skipped).
  Unknown keys are refused unless the caller asked to accept new keys (then appended to the
  file, the rest of it untouched); a changed key is always refused, with both fingerprints,
  until ``invoke accept-host-keys``.
* Connect, banner, auth and command timeouts come from the inventory, so an unreachable host
  fails that host alone, quickly.
* Commands that need root go through sudo for non-root users (invoke's
  ``--prompt-for-sudo-password`` fills the password).
* ``Fleet.call`` runs one ``roles.hostctl`` command and returns its ``Answer`` (changed,
  failed, msg, data); ``Fleet.hostctl`` returns just its data.
* ``Fleet.each`` works hosts in parallel and returns one ``HostResult`` per host; each host's
  result goes to ``Fleet.progress`` as soon as it is known (so a failed host is reported at
  once, not after the slowest one); ``summary`` prints them as a table and reports whether
  any failed.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed

import paramiko
from fabric import Config, Connection
from invoke.exceptions import CommandTimedOut, UnexpectedExit
from invoke.watchers import FailingResponder
from tabulate import tabulate

from .hostkeys import load_known_hosts, remember
from .inventory import Host, Inventory
from .outcome import Answer, HostError, HostResult, read_answer

__all__ = ["Answer", "Fleet", "HostError", "HostResult", "remote_path", "summary"]

SUDO_PROMPT = "[tcpskim sudo] password: "


def remote_path(path: str) -> str:
    """Quote a validated path for a remote shell; keep a leading ``~/`` expandable."""
    if path.startswith("~/"):
        return "~/" + shlex.quote(path[2:])
    return shlex.quote(path)


class _AcceptNew(paramiko.MissingHostKeyPolicy):
    """Accept and remember a key the known_hosts file does not have yet (never a changed one).

    paramiko calls this only for a host with no usable key in the file (a changed key raises
    BadHostKeyException first); the key is appended, leaving the rest of the file as it was.
    """

    def __init__(self, path: str, lock: threading.Lock):
        self.path, self.lock = path, lock

    def missing_host_key(self, client, hostname, key):
        with self.lock:
            remember(self.path, hostname, key, replace=False)


def fingerprint(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.fingerprint}"  # e.g. "ssh-ed25519 SHA256:..."


class Fleet:
    """Connections to the hosts of one inventory. Use as a context manager."""

    def __init__(self, inv: Inventory, *, accept_new_keys: bool = False, sudo_password: str | None = None):
        self.inv = inv
        self.accept_new_keys = accept_new_keys
        self.sudo_password = sudo_password
        self.known_hosts = os.path.expanduser(inv.known_hosts)
        self._conns: dict[str, Connection] = {}
        self._lock = threading.Lock()
        self._kh_lock = threading.Lock()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        for c in self._conns.values():
            try:
                c.close()
            except Exception:
                pass
        self._conns.clear()

    # --- connections ---------------------------------------------------------------------
    def connection(self, host: Host) -> Connection:
        with self._lock:
            c = self._conns.get(host.name)
            if c is not None and c.is_connected:
                return c
        t = self.inv.connect_timeout
        kwargs = {"banner_timeout": t, "auth_timeout": t, "allow_agent": True, "look_for_keys": host.ssh_key is None}
        if host.ssh_key:
            kwargs["key_filename"] = os.path.expanduser(host.ssh_key)
        c = Connection(host.ssh_host, user=host.ssh_user, port=host.ssh_port,
                       connect_timeout=t, connect_kwargs=kwargs,
                       config=Config(overrides={"load_ssh_configs": False, "run": {"hide": True}}))
        load_known_hosts(self.known_hosts, into=c.client.get_host_keys())  # RejectPolicy/BadHostKey as before
        c.client.set_missing_host_key_policy(
            _AcceptNew(self.known_hosts, self._kh_lock) if self.accept_new_keys else paramiko.RejectPolicy())
        try:
            c.open()
        except paramiko.BadHostKeyException as exc:
            raise HostError(
                f"host key CHANGED for {host.ssh_host}:{host.ssh_port} (known: {fingerprint(exc.expected_key)}, "
                f"offered: {fingerprint(exc.key)}); refusing. If the change is expected: "
                f"invoke accept-host-keys --hosts {host.name}") from None
        except paramiko.SSHException as exc:
            if "not found in known_hosts" in str(exc):
                raise HostError(f"host key of {host.ssh_host}:{host.ssh_port} is unknown ({self.known_hosts}); "
                                f"to trust it: invoke accept-host-keys --hosts {host.name}") from None
            raise HostError(f"ssh to {host.ssh_host}:{host.ssh_port} failed: {exc}") from None
        except (socket.timeout, TimeoutError):
            raise HostError(f"ssh to {host.ssh_host}:{host.ssh_port}: no answer within {t:g} s") from None
        except OSError as exc:
            raise HostError(f"ssh to {host.ssh_host}:{host.ssh_port}: {exc.strerror or exc}") from None
        with self._lock:
            self._conns[host.name] = c
        return c

    # --- commands ------------------------------------------------------------------------
    def run(self, host: Host, command: str, *, root: bool = False, timeout: float | None = None,
            warn: bool = False, pty: bool = False):
        """Run a shell command (already quoted by the caller); ``root`` uses sudo for non-root users."""
        c = self.connection(host)
        watchers = []
        if root and not host.is_root:
            command = f"sudo -S -p {shlex.quote(SUDO_PROMPT)} -- sh -c {shlex.quote(command)}"
            if self.sudo_password is None:
                command = command.replace("sudo -S", "sudo -n", 1)  # never hang on a prompt
            else:
                watchers.append(FailingResponder(pattern=re.escape(SUDO_PROMPT),
                                                 response=self.sudo_password + "\n",
                                                 sentinel="Sorry, try again.\n"))
        try:
            return c.run(command, hide=True, warn=warn, pty=pty, in_stream=False, watchers=watchers,
                         timeout=timeout or self.inv.command_timeout)
        except CommandTimedOut as exc:
            raise HostError(f"command timed out after {exc.timeout:g} s: {command[:80]}") from None
        except UnexpectedExit as exc:
            r = exc.result
            tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or [""]
            if "a password is required" in (r.stderr or ""):
                raise HostError("sudo needs a password: run with invoke --prompt-for-sudo-password") from None
            raise HostError(f"exit {r.exited}: {tail[0][:200]}") from None

    def call(self, host: Host, *args: str, timeout: float | None = None) -> Answer:
        """Run ``python3 -m roles.hostctl ARGS`` as root in the host's checkout; its Answer.

        A failed answer raises HostError("hostctl CMD: msg")."""
        argv = " ".join(shlex.quote(str(a)) for a in args)
        cmd = f"cd {remote_path(host.checkout)} && {shlex.quote(host.python)} -m roles.hostctl {argv}"
        return read_answer(self.run(host, cmd, root=True, timeout=timeout, warn=True), str(args[0]))

    def hostctl(self, host: Host, *args: str, timeout: float | None = None) -> dict:
        """``call``'s data: for commands read for what they report."""
        return self.call(host, *args, timeout=timeout).data

    def put(self, host: Host, local: str, remote: str):
        self.connection(host).put(local, remote)

    def get(self, host: Host, remote: str, local: str):
        self.connection(host).get(remote, local)

    # --- many hosts ----------------------------------------------------------------------
    progress = None  # callable(HostResult), told of each host as soon as it is done

    def each(self, hosts: list[Host], fn) -> list[HostResult]:
        """Call ``fn(host) -> HostResult | (status, detail[, data])`` on every host in parallel.

        A host whose step raises is "failed" with the exception's message; the others go on.
        Results come back in ``hosts``' order; ``self.progress`` hears each one as it ends.
        """
        def one(h: Host) -> HostResult:
            try:
                r = fn(h)
            except HostError as exc:
                return HostResult(h.name, "failed", str(exc))
            except Exception as exc:  # keep one bad host from hiding the others
                return HostResult(h.name, "failed", f"{type(exc).__name__}: {exc}")
            if isinstance(r, HostResult):
                return r
            return HostResult(h.name, *r)

        if not hosts:
            return []
        results: dict[int, HostResult] = {}
        with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
            futures = {pool.submit(one, h): i for i, h in enumerate(hosts)}
            for fut in as_completed(futures):
                results[futures[fut]] = r = fut.result()
                if getattr(self, "progress", None):
                    self.progress(r)
        return [results[i] for i in range(len(hosts))]


def summary(title: str, results: list[HostResult], columns: list[str] | None = None, out=print) -> bool:
    """Print one row per host (status + detail, plus chosen data columns); True if all succeeded."""
    columns = columns or []
    rows = [[r.host, r.status, *[r.data.get(c, "") for c in columns], r.detail] for r in results]
    out(f"\n{title}")
    out(tabulate(rows, headers=["host", "status", *columns, "detail"], tablefmt="simple"))
    failed = [r.host for r in results if r.failed]
    changed = sum(r.status == "changed" for r in results)
    out(f"{len(results) - len(failed)} ok ({changed} changed), {len(failed)} failed"
        + (f": {', '.join(failed)}" if failed else ""))
    return not failed
