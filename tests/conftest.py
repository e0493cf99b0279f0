"""Shared fixtures: one end-to-end lab (prefix ``tse``, 198.18.0.192/26) for the tests that
drive the real tasks over real SSH, built once per session and always torn down."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import settings

ROOT = Path(__file__).resolve().parent.parent
ROOT_LINUX = sys.platform.startswith("linux") and os.geteuid() == 0

# Property tests check outcomes, not speed: no per-example deadline on a shared, noisy machine.
settings.register_profile("tcpskim", deadline=None)
settings.load_profile("tcpskim")


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


@pytest.fixture(scope="session")
def e2e_lab(tmp_path_factory):
    """The e2e lab's inventory; yields (inventory, path). Tests bring the lab up themselves
    (``deployed`` or a task); whatever they built is torn down even on failure, and a lab
    left behind by a killed earlier session is removed first."""
    if not ROOT_LINUX:
        pytest.skip("the lab end-to-end tests need Linux and root")
    from tcpskim import inventory, lab

    d = tmp_path_factory.mktemp("e2e")
    path = d / "inventory.toml"
    path.write_text(lab_inventory_text(d / "state", sensors=2))
    inv = inventory.load(path)
    lab.down(inv, log=lambda *_: None)
    try:
        yield inv, path
    finally:
        try:
            run_invoke(path, "stop", timeout=120)  # roles and XDP programs, over SSH
        finally:
            lab.down(inv, log=lambda *_: None)  # even if stop hung or the lab is half-built


@pytest.fixture(scope="module")
def deployed(e2e_lab):
    """The e2e lab after ``invoke lab.up deploy fix-network`` (the hosts run committed HEAD)."""
    inv, path = e2e_lab
    r = run_invoke(path, "lab.up", "deploy", "fix-network")
    assert r.returncode == 0, r.stdout + r.stderr
    return inv, path
