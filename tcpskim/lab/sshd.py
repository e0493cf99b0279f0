"""One OpenSSH sshd per lab host, inside its namespace: config text, host key, start, pid.

sshd is started by absolute path (it re-executes itself and refuses a relative argv[0]),
daemonizes itself, and is found again through its pidfile checked against /proc.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from roles import procs

from ..inventory import Host, Inventory
from .names import LabError, cpu_plan, host_dir, namespace, other_cpus
from .net import run

SSHD = "/usr/sbin/sshd"
PRIVSEP_DIR = Path("/run/sshd")
SSHD_WAIT_S = 10.0


def config_text(inv: Inventory, host: Host) -> str:
    d = host_dir(inv, host)
    return "\n".join([
        f"# tcpskim lab sshd for {host.name} (namespace {namespace(inv, host)}); written by tcpskim.lab",
        f"ListenAddress {host.ip}",
        f"Port {host.ssh_port}",
        f"HostKey {d / 'ssh_host_ed25519_key'}",
        f"PidFile {d / 'sshd.pid'}",
        f"AuthorizedKeysFile {d / 'authorized_keys'}",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        # The lab files live under a 0700 root-owned dir; the checks would only get in the way.
        "StrictModes no",
        # No PAM: no login sessions or systemd-logind registration for namespace hosts.
        "UsePAM no",
        "UseDNS no",
        "PrintMotd no",
        "X11Forwarding no",
        "AcceptEnv LANG LC_*",
        # bash run by sshd sources ~/.bashrc for every command unless it is nested (SHLVL >= 1):
        # lab hosts share the control machine's home, whose .bashrc is no lab host's (here it
        # ran `pyenv init`: 0.1 s of CPU per SSH command, more than the command itself).
        "SetEnv SHLVL=1",
        # Fabric's put/get use SFTP; internal-sftp needs no external binary.
        "Subsystem sftp internal-sftp",
        "MaxStartups 50:30:100",
        "",
    ])


def keygen_argv(path: Path, comment: str) -> tuple[str, ...]:
    return ("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path))


def pid(inv: Inventory, host: Host) -> int | None:
    """Pid of the host's running lab sshd (from its pidfile, checked against /proc)."""
    d = host_dir(inv, host)
    p = procs.read_pid(d / "sshd.pid")
    # Space-joined: sshd rewrites its process title ("sshd: /usr/sbin/sshd -f ... [listener]").
    if p is not None and f"-f {d / 'sshd_config'}" in " ".join(procs.live_argv(p) or []):
        return p
    return None


def port_open(ip: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts on ip:port and greets with an SSH banner."""
    try:
        with socket.create_connection((ip, port), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(256).startswith(b"SSH-")
    except OSError:
        return False


def start_argv(inv: Inventory, host: Host, ncpu: int | None = None) -> list[str]:
    # Every sshd (the hardworker's too) and so every command the control side runs stays
    # off the hardworker's dedicated CPU: control traffic must not land in its measurement.
    d = host_dir(inv, host)
    others = other_cpus(cpu_plan(inv, ncpu), inv.hosts)
    pin = ["taskset", "-c", ",".join(map(str, others))] if others else []
    return [*pin, "ip", "netns", "exec", namespace(inv, host), SSHD, "-f", str(d / "sshd_config"),
            "-E", str(d / "sshd.log")]


def start(inv: Inventory, host: Host) -> int:
    """Start the host's sshd and wait until it greets; returns its pid."""
    d = host_dir(inv, host)
    PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)  # privilege separation chroot (systemd makes it normally)
    (d / "sshd.pid").unlink(missing_ok=True)
    log = d / "sshd.log"
    test = run(["ip", "netns", "exec", namespace(inv, host), SSHD, "-t", "-f", str(d / "sshd_config")], check=False)
    if test.returncode != 0:
        raise LabError(f"{host.name}: sshd rejects {d / 'sshd_config'}: {test.stderr.strip().splitlines()[-1:]}")
    with open(log, "ab") as lf:
        # sshd daemonizes itself (fork + setsid, std streams to /dev/null) and stays in the
        # namespace (and in the private mount namespace `ip netns exec` made for it).
        r = subprocess.run(start_argv(inv, host), stdin=subprocess.DEVNULL, stdout=lf, stderr=lf,
                           timeout=30, start_new_session=True)
    if r.returncode != 0:
        raise LabError(f"{host.name}: sshd failed to start (exit {r.returncode}): {_last(log)}")
    deadline = time.monotonic() + SSHD_WAIT_S
    while time.monotonic() < deadline:
        p = pid(inv, host)
        if p is not None and port_open(host.ip, host.ssh_port):
            return p
        time.sleep(0.05)
    raise LabError(f"{host.name}: sshd did not accept connections on {host.ip}:{host.ssh_port} "
                   f"within {SSHD_WAIT_S:.0f} s: {_last(log)}")


def _last(log: Path) -> str:
    return (procs.tail(log, 1) or ["(empty or no log)"])[-1]
