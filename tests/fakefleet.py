"""A fake fleet for unit tests of the control side: no SSH, no root, every call logged.

``FakeFleet`` has the methods of ``tcpskim.fleet.Fleet`` the control side uses: ``inv``,
``connection``, ``run``, ``call``, ``hostctl``, ``put``, ``get``, ``each``. ``call``,
``hostctl`` and ``each`` are the real ones (so the JSON a host prints is read as in production); ``run`` asks the
host's script. Every call is appended to ``fleet.calls`` as ``Call(host, kind, what)``, with
kind ``run`` / ``hostctl`` (``what`` = the argv list) / ``put`` / ``get``.

Two kinds of host, chosen per host name:

* ``FakeHost``: answers what it was told. ``on(regex, reply)`` for a shell command (reply:
  stdout text, a ``Reply``, or ``callable(cmd) -> Reply | str``); ``hostctl_on(sub, reply)``
  for a hostctl subcommand (reply: a dict, ``callable(argv) -> dict``, or an exception,
  printed as hostctl prints errors); ``files`` (remote path -> bytes) backs put/get;
  ``down = "reason"`` makes every call fail like an unreachable host. A command no rule
  matches exits 127 and is kept in ``fleet.unmatched``.
* ``RoleHost``: a host running tcpskim roles as the host half does, simulated on a real
  temporary checkout (``tmp/<name>``): ``start`` writes the pidfile of a live process,
  ``go`` writes go.json, sensors finish (summary written, pidfile removed) when their
  traffic ends, ``stop`` ends roles with a summary, ``facts`` reports the interface. The
  control side's liveness command runs with /bin/sh against those real files. Scripted
  per role name (``"hardworker-0"``): ``never_ready``, ``die_after`` (seconds after the
  start time: the process is gone, no summary, as after SIGKILL; ``"hardworker-0@xdp"``
  in one mode's trials only), ``summary_patch``;
  per host: ``xdp_prog_id`` (left attached until ``stop --interface``), ``offset_s`` (its
  clock against the control machine's, as ``date`` shows it). Its network guard is simulated
  too: ``guard-start`` validates the config as the host does (``roles.guardcfg``) and keeps it
  in ``guard`` (None: not running) with ``guard_pid``; ``guard-stop`` and ``stop --guard`` end
  it; ``guard-status`` reports it with ``guard_events``.

``fake_inventory(tmp)`` writes a three-host (or more) inventory whose checkouts are the
RoleHosts' folders. Other unit tests (netfix, doctor, stop, collect) can use the same fleet.
"""

from __future__ import annotations

import collections
import json
import os
import re
import shlex
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from roles.answer import answer, failure, shape
from tcpskim import inventory
from tcpskim.fleet import Fleet, HostError
from tcpskim.outcome import SHAPE


@dataclass
class Reply:
    stdout: str = ""
    stderr: str = ""
    exited: int = 0


@dataclass
class Call:
    host: str
    kind: str  # run | hostctl | put | get
    what: object


# The last hostctl call of a command (deploy's is the tail of an if/else), without its "; fi".
_HOSTCTL = re.compile(r".*-m roles\.hostctl ([^;]*?)(?:; fi)?$")


class FakeHost:
    def __init__(self, name: str):
        self.name = name
        self.rules: list[tuple[re.Pattern, object]] = []
        self.ctl: dict[str, object] = {}
        self.files: dict[str, bytes] = {}
        self.down: str | None = None

    def on(self, pattern: str, reply) -> "FakeHost":
        self.rules.insert(0, (re.compile(pattern), reply))  # later rules win
        return self

    def hostctl_on(self, sub: str, reply) -> "FakeHost":
        self.ctl[sub] = reply
        return self

    def answer(self, command: str) -> Reply | None:
        m = _HOSTCTL.search(command)
        if m:
            return self.hostctl(shlex.split(m.group(1)))
        for rx, reply in self.rules:
            if rx.search(command):
                r = reply(command) if callable(reply) else reply
                return Reply(stdout=r) if isinstance(r, str) else r
        return None

    def hostctl(self, argv: list[str]) -> Reply:
        """What ``python3 -m roles.hostctl ARGV`` prints: one JSON object in ``roles.answer``'s
        shape (a reply not in it yet is its data, changing nothing), exit 0 or 1."""
        reply = self.ctl.get(argv[0])
        try:
            if reply is None:
                raise RuntimeError(f"fakefleet: no hostctl {argv[0]} on {self.name}")
            if isinstance(reply, BaseException):
                raise reply
            data = reply(argv) if callable(reply) else reply
        except Exception as exc:  # as roles.hostctl.main prints it
            return Reply(stdout=json.dumps(failure(f"{type(exc).__name__}: {exc}")) + "\n", exited=1)
        data = data if isinstance(data, dict) and SHAPE <= data.keys() else shape(data)
        return Reply(stdout=json.dumps(data) + "\n", exited=1 if data["failed"] else 0)

    def put(self, local: str, remote: str):
        self.files[remote] = Path(local).read_bytes()

    def get(self, remote: str, local: str):
        if remote not in self.files:
            raise FileNotFoundError(2, "No such file", remote)
        Path(local).write_bytes(self.files[remote])


def _dead_pid() -> int:
    """The pid of a process that has exited (what a SIGKILLed role's pidfile holds)."""
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def _flag(argv: list[str], name: str, default=None):
    return argv[argv.index(name) + 1] if name in argv else default


class RoleHost(FakeHost):
    """A host whose roles are simulated on real files under ``root/<name>`` (see module doc)."""

    def __init__(self, name: str, root: Path, interface: str = "eth0", mac: str = "02:00:00:00:00:01",
                 clock: dict | None = None):
        """``clock``: shared by the hosts of one fleet, so a host that gets no ``go`` (the
        logger) still knows when the trial started."""
        super().__init__(name)
        self.clock = clock if clock is not None else {"start_at": None}
        self.checkout = Path(root) / name
        (self.checkout / "roles").mkdir(parents=True, exist_ok=True)
        self.state = self.checkout / ".tcpskim"
        self.interface, self.mac = interface, mac
        self.roles: dict[str, dict] = {}  # role name -> its config, while started
        self.never_ready: dict[str, str] = {}  # role name -> error message
        self.die_after: dict[str, float] = {}  # role name[@mode] -> seconds after start_at
        self.summary_patch: dict[str, dict] = {}
        self.xdp_prog_id: int | None = None
        self.lock = threading.RLock()
        ck = re.escape(shlex.quote(str(self.checkout)))
        self.on(rf"^cd {ck} && pwd$", f"{self.checkout}\n")
        self.on(r"rev-parse HEAD", "0" * 40 + "\n").on(r"^uname -r$", "6.18.0-fake\n")
        self.offset_s = 0.0  # this host's clock minus the control machine's
        self.on(r"import bcc", "0.29.1\n").on(r"^date \+%s\.%N$", lambda _: f"{time.time() + self.offset_s:.9f}\n")
        self.on(rf"^test -d {ck}/roles$", "")
        self.on(r"^mkdir -p (\S+)$", self._mkdir).on(r"^mv (\S+) (\S+)$", self._mv)
        self.on(r"for f in \*\.pid", self._liveness)
        self.guard: dict | None = None  # the running guard's config
        self.guard_pid: int | None = None
        self.guard_events: list[dict] = []
        for sub in ("start", "wait-ready", "go", "stop", "facts", "status", "guard-start", "guard-stop",
                    "guard-status", "precompile"):
            self.hostctl_on(sub, getattr(self, "_" + sub.replace("-", "_")))
        self.precompiled: list[list[dict]] = []  # the role configs of each precompile call

    # --- files: real under the checkout, in memory elsewhere (/tmp staging) ---------------
    def _local(self, remote: str) -> Path | None:
        p = Path(remote)
        return p if p.is_absolute() and p.resolve().is_relative_to(self.checkout.resolve()) else None

    def put(self, local: str, remote: str):
        if self._local(remote) is None:
            return super().put(local, remote)
        shutil.copyfile(local, remote)

    def get(self, remote: str, local: str):
        self.advance()
        if self._local(remote) is None:
            return super().get(remote, local)
        shutil.copyfile(remote, local)  # FileNotFoundError as over SFTP

    def _mkdir(self, cmd: str) -> Reply:
        path = shlex.split(cmd)[2]
        if self._local(path) is None:
            return Reply(stderr=f"fakefleet: mkdir outside {self.checkout}", exited=1)
        Path(path).mkdir(parents=True, exist_ok=True)
        return Reply()

    def _mv(self, cmd: str) -> Reply:
        src, dst = shlex.split(cmd)[1:]
        if self._local(dst) is None or src not in self.files:
            return Reply(stderr=f"mv: cannot move {src}", exited=1)
        Path(dst).write_bytes(self.files.pop(src))
        return Reply()

    def _liveness(self, cmd: str) -> Reply:
        """The real command, run by /bin/sh against this host's real pidfiles and summaries."""
        self.advance()
        for word in shlex.split(cmd.split(";")[0])[1:2]:  # cd <pids dir>: must be ours
            if self._local(word) is None:
                return Reply(stderr=f"fakefleet: liveness outside {self.checkout}", exited=1)
        r = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, cwd=self.checkout)
        return Reply(r.stdout, r.stderr, r.returncode)

    # --- the roles -----------------------------------------------------------------------
    def pidfile(self, name: str) -> Path:
        return self.state / "pids" / f"{name}.pid"

    def _end(self, name: str, summary: dict | None):
        """The role ends: its summary (None: killed, no summary, pidfile left dead), pid gone."""
        cfg = self.roles.pop(name)
        if summary is None:
            self.pidfile(name).write_text(f"{_dead_pid()}\n")
            return
        summary = {"status": "ok", **summary, **self.summary_patch.get(name, {})}
        Path(cfg["out_dir"], f"{name}.summary.json").write_text(json.dumps(summary))
        self.pidfile(name).unlink(missing_ok=True)

    def advance(self):
        """Move the simulated roles on to now: deaths, sensors done, a tcp hardworker after them."""
        with self.lock:
            start_at = self.clock["start_at"]
            if start_at is None:
                return
            now = time.time()
            for name, cfg in list(self.roles.items()):
                die = self.die_after.get(f"{name}@{cfg['mode']}", self.die_after.get(name))
                if die is not None and now >= start_at + die:
                    self._end(name, None)
                    continue
                end = start_at + cfg["warmup_s"] + cfg["duration_s"]
                if cfg["mode"] != "idle":
                    end += cfg["tail_s"]
                if cfg["role"] == "sensor" and now >= end:
                    self._end(name, {"sent": self.sent(cfg), "achieved_rate_hz": cfg["rate_hz"]})
                elif cfg["role"] == "hardworker" and cfg["mode"] in ("tcp", "idle") and now >= end + 0.05:
                    self._end(name, self.hardworker_summary(cfg))

    @staticmethod
    def sent(cfg: dict) -> int:
        return round(cfg["rate_hz"] * (cfg["warmup_s"] + cfg["duration_s"] + cfg["tail_s"]))

    def hardworker_summary(self, cfg: dict) -> dict:
        n = 0 if cfg["mode"] == "idle" else self.sent(cfg) * len(cfg["hosts"]["sensor"])
        return {"delivered": n, "lost": 0, "duplicates": 0, "corrupt": 0, "wake_cost_us": 50.0,
                "window": {"cpu_busy_s": 0.02, "elapsed_s": cfg["duration_s"], "delivered_in_window": n,
                           "process_cpu_s": 0.01, "sampler_cpu_s": 0.001, "complete": True}}

    def _start(self, argv):
        cfg = json.loads(Path(_flag(argv, "--config")).read_text())
        name = f"{cfg['role']}-{cfg['instance']}"
        with self.lock:
            if name in self.roles:
                raise RuntimeError(f"{name} is already running (pid {os.getpid()})")
            self.pidfile(name).parent.mkdir(parents=True, exist_ok=True)
            Path(cfg["out_dir"], f"{name}.summary.json").unlink(missing_ok=True)
            self.pidfile(name).write_text(f"{os.getpid()}\n")  # alive for kill -0
            self.roles[name] = cfg
        return {"pid": os.getpid(), "role": name}

    def _wait_ready(self, argv):
        cfg = json.loads(Path(_flag(argv, "--config")).read_text())
        name = f"{cfg['role']}-{cfg['instance']}"
        if name in self.never_ready:
            raise RuntimeError(f"{name} died before it was ready; last log lines:\n{self.never_ready[name]}")
        return {"role": name, "pid": os.getpid(), "time": time.time()}

    def _go(self, argv):
        start_at = float(_flag(argv, "--start-at"))
        Path(_flag(argv, "--out-dir"), "go.json").write_text(json.dumps({"start_at": start_at}))
        self.clock["start_at"] = start_at
        return {"start_at": start_at}

    def _stop(self, argv):
        role = _flag(argv, "--role")
        with self.lock:
            self.advance()
            stopped = [n for n, c in self.roles.items() if role in (None, c["role"])]
            for name in stopped:
                cfg = self.roles[name]
                s = {"stopped_by_signal": True}
                if cfg["role"] == "logger":
                    s["stored"] = self.sent(cfg) * len(cfg["hosts"]["sensor"])
                elif cfg["role"] == "hardworker":
                    s.update(self.hardworker_summary(cfg))
                self._end(name, s)
            detached = None
            if _flag(argv, "--interface"):
                detached, self.xdp_prog_id = self.xdp_prog_id, None
            guard = self._end_guard() if "--guard" in argv else []
        return answer({"stopped": stopped, "killed": [], "stale_pidfiles": [], "xdp_detached": detached,
                       "guard_stopped": guard}, changed=bool(stopped or detached or guard),
                      msg="; ".join(([f"stopped {', '.join(stopped)}"] if stopped else []) +
                                    ([f"stopped the guard (pid {guard[0]})"] if guard else [])) or "nothing running")

    # --- the guard -------------------------------------------------------------------------
    def _end_guard(self) -> list[int]:
        pids = [self.guard_pid] if self.guard is not None else []
        self.guard, self.guard_pid = None, None
        return pids

    def _guard_start(self, argv):
        from roles import guardcfg

        cfg = guardcfg.validate(json.loads(_flag(argv, "--config-json")))
        action = "start" if self.guard is None else "unchanged" if cfg == self.guard else "reload"
        if "--check" not in argv:
            self.guard, self.guard_pid = cfg, self.guard_pid or 40000 + len(self.name)
        return answer({"action": action, "pid": self.guard_pid, "interface": cfg["interface"],
                       "peers": cfg["peers"], "dropped_learned": []},
                      changed=action != "unchanged", msg=f"{action} (pid {self.guard_pid})")

    def _guard_stop(self, argv):
        pids = [self.guard_pid] if self.guard is not None else []
        if "--check" not in argv:
            self._end_guard()
        return answer({"stopped": pids, "killed": []}, changed=bool(pids),
                      msg=f"stopped the guard (pid {pids[0]})" if pids else "no guard running")

    def _guard_status(self, argv):
        n = int(_flag(argv, "--events", "10"))
        cfg = self.guard or {}
        return {"running": self.guard is not None, "pid": self.guard_pid, "started": 1.0 if self.guard_events else None,
                "updated": time.time(), "counts": dict(collections.Counter(e["kind"] for e in self.guard_events)),
                "events": self.guard_events[-n:] if n else [],
                "live": {ip: {"mac": mac, "state": "permanent", "ok": True} for ip, mac in cfg.get("peers", {}).items()}}

    def _facts(self, argv):
        return {"interface": self.interface, "mac": self.mac, "link_up": True, "mtu": 1500, "ipv4": [],
                "xdp_prog_id": self.xdp_prog_id, "kernel": "6.18.0-fake", "arch": "x86_64",
                "hostname": self.name, "time": time.time(), "checkout": str(self.checkout), "ncpu": os.cpu_count()}

    def _status(self, argv):
        self.advance()
        return {"running": {n: os.getpid() for n in self.roles}}

    def _precompile(self, argv):
        configs = json.loads(_flag(argv, "--configs"))
        self.precompiled.append(configs)
        progs = [{"program": f"{c['role']}.c", "cache": "compiled"} for c in configs if c["mode"] == "xdp"]
        return answer({"programs": progs}, changed=bool(progs), msg=f"{len(progs)} compiled")


class FakeFleet:
    """The Fleet methods the control side calls, answered by FakeHost scripts (module doc)."""

    hostctl = Fleet.hostctl  # the real reading of what hostctl printed
    call = Fleet.call
    each = Fleet.each  # the real parallel per-host step
    progress = None

    def __init__(self, inv, hosts: dict[str, FakeHost]):
        self.inv, self.hosts = inv, hosts
        self.calls: list[Call] = []
        self.unmatched: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        pass

    def _log(self, host, kind, what) -> FakeHost:
        with self._lock:
            self.calls.append(Call(host.name, kind, what))
        fh = self.hosts[host.name]
        if fh.down:
            raise HostError(f"ssh to {host.ssh_host}:{host.ssh_port}: {fh.down}")
        return fh

    def connection(self, host):
        fh = self.hosts[host.name]
        if fh.down:
            raise HostError(f"ssh to {host.ssh_host}:{host.ssh_port}: {fh.down}")
        return fh

    def run(self, host, command: str, *, root: bool = False, timeout: float | None = None, warn: bool = False,
            pty: bool = False) -> Reply:
        m = _HOSTCTL.search(command)
        fh = self._log(host, "hostctl" if m else "run", shlex.split(m.group(1)) if m else command)
        r = fh.answer(command)
        if r is None:
            with self._lock:
                self.unmatched.append((host.name, command))
            r = Reply(stderr=f"fakefleet: no rule for {command[:80]}", exited=127)
        if r.exited and not warn:  # as Fleet.run raises on a non-zero exit
            raise HostError(f"exit {r.exited}: {(r.stderr or r.stdout).strip()[:200]}")
        return r

    def put(self, host, local: str, remote: str):
        self._log(host, "put", remote).put(local, remote)

    def get(self, host, remote: str, local: str):
        self._log(host, "get", remote).get(remote, local)

    # --- for assertions ------------------------------------------------------------------
    def hostctl_calls(self, sub: str | None = None) -> list[tuple[str, list[str]]]:
        """(host, argv) of every hostctl call, or of one subcommand's, in call order."""
        return [(c.host, c.what) for c in self.calls if c.kind == "hostctl" and sub in (None, c.what[0])]

    def index(self, host: str, *argv: str) -> int:
        """Position in ``calls`` of the first hostctl call on host starting with argv."""
        for i, c in enumerate(self.calls):
            if c.host == host and c.kind == "hostctl" and list(c.what[:len(argv)]) == list(argv):
                return i
        raise AssertionError(f"no hostctl {' '.join(argv)} on {host}")


def fake_inventory(tmp: Path, sensors: int = 1, user: str = "root") -> inventory.Inventory:
    """A non-lab inventory of logger, hardworker and ``sensors`` sensor hosts, checkouts in tmp."""
    names = ["sensor"] + [f"sensor{i}" for i in range(2, sensors + 1)] + ["hardworker", "logger"]
    hosts = "".join(f"""
[hosts.{n}]
role = "{'sensor' if n.startswith('sensor') else n}"
ip = "198.18.0.{10 + i}"
interface = "eth0"
checkout = "{tmp / n}"
cpus = [{1 if n == "hardworker" else 0}]
""" for i, n in enumerate(names))
    path = tmp / "inventory.toml"
    path.write_text(f"""
[testbed]
name = "fake"

[ssh]
user = "{user}"
known_hosts = "{tmp / 'known_hosts'}"

[code]
remote = "https://example.invalid/tcpskim.git"

[experiment]
duration = 1
warmup = 0
repeat = 1
{hosts}""")
    return inventory.load(path)


def role_fleet(tmp: Path, sensors: int = 1, user: str = "root") -> FakeFleet:
    """A FakeFleet of RoleHosts over fake_inventory(tmp): every host runs simulated roles."""
    inv = fake_inventory(tmp, sensors, user)
    clock = {"start_at": None}
    return FakeFleet(inv, {h.name: RoleHost(h.name, tmp, h.interface, f"02:00:00:00:00:{10 + i:02x}", clock)
                           for i, h in enumerate(inv.hosts)})
