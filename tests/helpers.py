"""Helpers the tests share: the lab inventory and the one lab builder (``lab_built``), what a
lab leaves behind, and the real `invoke` command line. Imported as ``from helpers import ...``
(tests/ is on sys.path)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROOT_LINUX = sys.platform.startswith("linux") and os.geteuid() == 0


def lab_inventory_text(state_dir: Path, prefix: str = "tse", base: int = 192, sensors: int = 1, *,
                       name: str = "e2e", names: tuple[str, str, str] = ("sensor", "hardworker", "logger"),
                       dedicate: bool = True, remote: str | None = None, connect_timeout: float = 3,
                       hw_ssh_port: int | None = None, logger_interface: str = "eth0",
                       logger_mac: str | None = None) -> str:
    """A lab inventory in 198.18.0.<base>/26: control .base+1, sensor, hardworker, logger
    .base+2.., further sensors ``sensor2``.. at .base+7.. (the e2e lab: prefix ``tse``, .192/26)."""
    ip = lambda n: f"198.18.0.{base + n}"  # noqa: E731
    sensor, hardworker, logger = names
    extra = "".join(f"""
[hosts.sensor{i}]
role = "sensor"
ip = "{ip(5 + i)}"
interface = "eth0"
""" for i in range(2, sensors + 1))
    code = f'\n[code]\nremote = "{remote}"\n' if remote is not None else ""
    return f"""
[testbed]
name = "{name}"
lab = true

[lab]
prefix = "{prefix}"
subnet = "198.18.0.{base}/26"
control_ip = "{ip(1)}"
state_dir = "{state_dir}"
dedicate_cpu = {str(dedicate).lower()}

[ssh]
user = "root"
connect_timeout = {connect_timeout}
{code}
[experiment]
duration = 3
warmup = 1
repeat = 1

[hosts.{sensor}]
role = "sensor"
ip = "{ip(2)}"
interface = "eth0"

[hosts.{hardworker}]
role = "hardworker"
ip = "{ip(3)}"
interface = "eth0"
{f"ssh_port = {hw_ssh_port}" if hw_ssh_port else ""}

[hosts.{logger}]
role = "logger"
ip = "{ip(4)}"
interface = "{logger_interface}"
{f'mac = "{logger_mac}"' if logger_mac else ""}
{extra}"""


def write_lab_inventory(d: Path, **kw):
    """``lab_inventory_text`` written to ``d/inventory.toml`` (state dir ``d/state``), loaded."""
    from tcpskim import inventory

    d.mkdir(parents=True, exist_ok=True)
    p = d / "inventory.toml"
    p.write_text(lab_inventory_text(d / "state", **kw))
    return inventory.load(p)


@contextlib.contextmanager
def lab_built(inv, areas=None, before_down=None, bridge_netns=None):
    """The tests' one lab builder. Removes a leftover lab of the same names (a killed earlier
    run), builds the lab (``areas`` None: all of ``lab.up``; else only the plan's steps in those
    areas, e.g. ``("net",)``; ``()``: nothing, the test builds it), yields the report, and
    always tears it down: ``before_down()`` (if given) then ``lab.down``, even when the test fails.
    ``bridge_netns``: the bridge in its own namespace (a plain wire; only with ``areas``)."""
    from tcpskim import lab

    lab.down(inv, log=_quiet, bridge_netns=bridge_netns)
    try:
        if areas is None:
            yield lab.up(inv, log=_quiet)
        else:
            rep = lab.Report(_quiet)
            lab.apply(inv, [s for s in lab.plan(inv, bridge_netns).steps if s.area in areas], rep)
            yield {"created": rep.created, "warnings": rep.warnings}
    finally:
        try:
            if before_down is not None:
                before_down()
        finally:
            lab.down(inv, log=_quiet, bridge_netns=bridge_netns)


def _quiet(*_a, **_k):
    pass


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


def toml_dump(d, prefix=""):
    """A TOML writer for tables, scalars and lists; strings escaped as JSON (valid TOML basic
    strings), so any text, newlines included, reaches the inventory parser as written."""
    def q(text):  # JSON escapes control characters; TOML also wants DEL escaped
        return json.dumps(str(text), ensure_ascii=False).replace("\x7f", "\\u007f")

    def val(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return q(v)
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{q(k)} = {val(x)}" for k, x in v.items()) + "}"
        return repr(v)

    lines, tables = [], []
    for k, v in d.items():
        (tables if isinstance(v, dict) else lines).append((k, v))
    out = [f"{q(k)} = {val(v)}" for k, v in lines]
    for k, v in tables:
        name = f"{prefix}{q(k)}"
        out.append(f"\n[{name}]")
        out.append(toml_dump(v, name + "."))
    return "\n".join(out)
