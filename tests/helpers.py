"""Helpers the tests share: the e2e lab's inventory text, what a lab leaves behind, and the
real `invoke` command line. Imported as ``from helpers import ...`` (tests/ is on sys.path)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROOT_LINUX = sys.platform.startswith("linux") and os.geteuid() == 0

def lab_inventory_text(state_dir: Path, prefix: str = "tse", base: int = 192, sensors: int = 1) -> str:
    ip = lambda n: f"198.18.0.{base + n}"  # noqa: E731
    extra = "".join(f"""
[hosts.sensor{i}]
role = "sensor"
ip = "{ip(5 + i)}"
interface = "eth0"
""" for i in range(2, sensors + 1))
    return f"""
[testbed]
name = "e2e"
lab = true

[lab]
prefix = "{prefix}"
subnet = "198.18.0.{base}/26"
control_ip = "{ip(1)}"
state_dir = "{state_dir}"

[ssh]
user = "root"
connect_timeout = 3

[experiment]
duration = 3
warmup = 1
repeat = 1

[hosts.sensor]
role = "sensor"
ip = "{ip(2)}"
interface = "eth0"

[hosts.hardworker]
role = "hardworker"
ip = "{ip(3)}"
interface = "eth0"

[hosts.logger]
role = "logger"
ip = "{ip(4)}"
interface = "eth0"
{extra}"""


def lab_leftovers(inv) -> list[str]:
    """Everything of this lab still present on the machine (empty = clean)."""
    prefix = inv.lab.prefix + "-"
    left = []
    netns = Path("/run/netns")
    left += [f"netns {p.name}" for p in (netns.iterdir() if netns.is_dir() else []) if p.name.startswith(prefix)]
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    for line in links.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name.startswith(prefix) or name == inv.lab.bridge:
            left.append(f"link {name}")
    state = inv.lab.state_dir
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "sshd" in cmd and state in cmd:
                left.append(f"process {p.name}: {cmd.strip()}")
    if Path(state).exists():
        left.append(f"state dir {state}")
    for line in Path("/proc/mounts").read_text().splitlines():
        mp = line.split()[1]
        if mp.startswith(state) or mp.startswith(f"/run/netns/{prefix}"):
            left.append(f"mount {mp}")
    return left


def run_invoke(inv_path, *args, timeout=600) -> subprocess.CompletedProcess:
    """The real `invoke` command line, as a user runs it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TCPSKIM_INVENTORY": str(inv_path)}
    return subprocess.run([sys.executable, "-m", "invoke", "-r", str(ROOT), *args], capture_output=True,
                          text=True, env=env, timeout=timeout)
