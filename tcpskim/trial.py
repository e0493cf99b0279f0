"""One trial on the testbed, in explicit phases: start -> go -> watch -> finish.

start   write each role's config (kept in the run folder too), copy it to its host, and start
        the roles in ``plan.START_ORDER`` (logger, hardworker, sensors), each ready before the
        next
go      one start time for all, in each host's own clock (control time + its measured offset);
        the measurement window opens ``warmup_s`` after it, so only after every role was ready
        (bcc compiles cost seconds of CPU)
watch   poll every host once a second (``liveness``) until the sensors are done, or the idle
        window passed; a role gone without a summary, a hardworker or logger exiting before
        the window closed, or a host out of reach fails the trial
finish  stop the roles in ``plan.STOP_ORDER``, fetch every role's summary and log, and check
        that each role ended well and no XDP program is left

A failed phase raises ``RunFailed`` naming the host and role. Stopping every role on every
host after a failure is the run's job (``experiment.Runner``): it must happen on Ctrl-C too.
"""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

from . import liveness
from .fleet import HostError
from .plan import STOP_ORDER, RoleInstance, Trial, role_instances
from .progress import TrialBar
from .results import RunFolder
from .trialconfig import Testbed, role_config

READY_TIMEOUT_S = {"logger": 30.0, "hardworker": 120.0, "sensor": 120.0}  # xdp roles compile with bcc
GO_DELAY_S = 1.0
POLL_S = 1.0
LATE_S = 60.0  # sensors still running this long after the planned end fail the trial
TCP_HW_GRACE_S = 10.0  # a tcp hardworker ends on the sensors' FINs: time it gets before TERM


class RunFailed(Exception):
    """A trial failed; the message names the host and role."""


@dataclass
class RoleRun:
    """One role instance of one trial: where it runs, its config, and its files on the host."""
    at: RoleInstance
    config: dict

    host = property(lambda self: self.at.host)
    role = property(lambda self: self.at.role)
    name = property(lambda self: self.at.name)
    out_dir = property(lambda self: self.config["out_dir"])
    state_dir = property(lambda self: self.config["state_dir"])

    @property
    def remote_config(self) -> str:
        return f"{self.out_dir}/{self.name}.json"

    def fetched(self) -> list[tuple[str, bool]]:
        """(file name in out_dir, required) fetched after the trial; a missing required file
        fails it. Later measurements (trace data read after the window) add theirs here."""
        return [(f"{self.name}.summary.json", True), (f"{self.name}.log", False)]

    def stage(self, fleet, local_dir: Path, run_id: str):
        """The config into the run folder (local_dir) and onto the host, at remote_config."""
        host = self.host
        local = local_dir / f"{self.name}.json"
        local.write_text(json.dumps(self.config, indent=1))
        fleet.run(host, f"mkdir -p {shlex.quote(self.out_dir)}", root=True)
        if host.is_root:
            fleet.put(host, str(local), self.remote_config)
        else:  # out_dir belongs to root: stage in /tmp, then move with sudo
            tmp = f"/tmp/tcpskim-{run_id}-{self.name}.json"
            fleet.put(host, str(local), tmp)
            fleet.run(host, f"mv {shlex.quote(tmp)} {shlex.quote(self.remote_config)}", root=True)

    def fetch(self, fleet, local_dir: Path) -> tuple[dict | None, list[str]]:
        """The role's files into local_dir: (its summary or None, problems found)."""
        problems = []
        for fname, required in self.fetched():
            try:
                fleet.get(self.host, f"{self.out_dir}/{fname}", str(local_dir / fname))
            except OSError as exc:
                if required:
                    what = "summary" if fname.endswith(".summary.json") else fname
                    problems.append(f"{self.name} on {self.host.name}: no {what} ({exc})")
        try:
            s = json.loads((local_dir / f"{self.name}.summary.json").read_text())
        except (OSError, ValueError):
            return None, problems
        if s.get("status") not in (None, "ok") or s.get("error"):
            problems.append(f"{self.name} on {self.host.name}: {s.get('error') or s.get('status')}")
        return s, problems


class TrialSession:
    """One trial's roles and phases (module doc); ``run()`` does them all in order."""

    def __init__(self, bed: Testbed, folder: RunFolder, trial: Trial, *, progress: bool = False,
                 poll_s: float = POLL_S, go_delay_s: float = GO_DELAY_S):
        self.bed, self.fleet, self.folder, self.trial = bed, bed.fleet, folder, trial
        self.progress, self.poll_s, self.go_delay_s = progress, poll_s, go_delay_s
        inv = bed.inv
        self.roles = [RoleRun(ri, role_config(bed, trial, folder.run_id, ri))
                      for ri in role_instances(trial, inv.logger, inv.hardworker, bed.sensors)]
        self.start_at: float | None = None

    def run(self) -> dict:
        """All four phases; the role summaries keyed by (host name, role, instance)."""
        self.start()
        self.go()
        self.watch()
        return self.finish()

    def hosts(self) -> dict:
        """Host name -> (host, [its RoleRuns]); the roles on one host share state_dir and out_dir."""
        out = {}
        for rr in self.roles:
            out.setdefault(rr.host.name, (rr.host, []))[1].append(rr)
        return out

    # --- start ---------------------------------------------------------------------------
    def start(self):
        for rr in self.roles:
            rr.stage(self.fleet, self.local_dir(rr), self.folder.run_id)
        for rr in self.roles:  # role_instances gives START_ORDER
            self.fleet.hostctl(rr.host, "start", "--config", rr.remote_config)
            wait = READY_TIMEOUT_S[rr.role]
            try:
                self.fleet.hostctl(rr.host, "wait-ready", "--config", rr.remote_config, "--timeout", str(wait),
                                   timeout=wait + 30)
            except HostError as exc:
                raise RunFailed(f"{rr.role} on {rr.host.name} did not become ready: {exc}") from None

    # --- go ------------------------------------------------------------------------------
    def go(self):
        """Sensors and hardworker get go.json; the logger just listens."""
        start_at = self.start_at = time.time() + self.go_delay_s
        info = self.bed.info
        dirs = {rr.host.name: (rr.host, rr.out_dir) for rr in self.roles if rr.role != "logger"}
        res = self.fleet.each([h for h, _ in dirs.values()], lambda h: ("ok", "", self.fleet.hostctl(
            h, "go", "--out-dir", dirs[h.name][1], "--start-at", f"{start_at + info[h.name].offset_s:.6f}")))
        if any(r.failed for r in res):
            raise RunFailed("; ".join(f"go on {r.host}: {r.detail}" for r in res if r.failed))

    # --- watch ---------------------------------------------------------------------------
    @property
    def planned_end(self) -> float:
        p = self.bed.p
        return self.start_at + p.warmup_s + p.duration_s + (p.tail_s if self.trial.mode != "idle" else 0.0)

    def poll(self, counts: bool = False) -> dict[str, liveness.Liveness]:
        """Every host's liveness at once; a host out of reach fails the trial."""
        hosts = self.hosts()

        def one(h):
            rr = hosts[h.name][1][0]
            cmd = liveness.command(rr.state_dir, rr.out_dir, progress=counts)
            return "ok", "", {"alive": liveness.parse(self.fleet.run(h, cmd, root=True).stdout)}

        res = self.fleet.each([h for h, _ in hosts.values()], one)
        for r in res:
            if r.failed:
                raise RunFailed(f"lost contact with {r.host}: {r.detail}")
        return {r.host: r.data["alive"] for r in res}

    def check(self, alive: dict[str, liveness.Liveness], now: float) -> bool:
        """Raise if a role died or quit early; True once every sensor is done."""
        sensors_done, tid = True, self.trial.id
        for rr in self.roles:
            a = alive[rr.host.name]
            running, summarised = rr.name in a.running, rr.name in a.summarised
            if not running and not summarised:
                raise RunFailed(f"{rr.role} on {rr.host.name} died without a summary (killed?) during {tid}")
            if rr.role == "sensor" and running:
                sensors_done = False
            if not running and rr.role in ("hardworker", "logger") and now < self.planned_end - 0.5:
                raise RunFailed(f"{rr.role} on {rr.host.name} exited early during {tid}")
        return sensors_done

    def watch(self):
        """Until the sensors are done (or the idle window passed), checking every role is alive."""
        end, idle = self.planned_end, self.trial.mode == "idle"
        bar = TrialBar(self.trial.id if self.progress else None, end)
        try:
            while True:
                time.sleep(self.poll_s)
                bar.tick()
                alive = self.poll(counts=bar.wants_counts)
                bar.counts(sum(a.sent for a in alive.values()),
                           next((a.delivered for a in alive.values() if a.delivered is not None), None))
                sensors_done = self.check(alive, time.time())
                if (idle and time.time() > end) or (not idle and sensors_done):
                    return
                if time.time() > end + LATE_S:
                    raise RunFailed(f"sensors still running {LATE_S:.0f} s after the planned end of {self.trial.id}")
        finally:
            bar.close()

    # --- finish --------------------------------------------------------------------------
    def stop_roles(self):
        for role in STOP_ORDER:
            for rr in (r for r in self.roles if r.role == role):
                # In tcp mode the hardworker ends on the sensors' FINs: give it a moment before
                # TERM. In xdp mode it stays attached until told (a late retransmission must
                # still reach the logger); the sensors' connections are closed by now.
                grace = TCP_HW_GRACE_S if role == "hardworker" and self.trial.mode == "tcp" else 0.0
                deadline = time.time() + grace
                while time.time() < deadline and rr.name in self._running_on(rr.host):
                    time.sleep(0.2)
                self.fleet.hostctl(rr.host, "stop", "--role", role, "--timeout", "10", timeout=60)

    def _running_on(self, host) -> frozenset[str]:
        rr = self.hosts()[host.name][1][0]
        return liveness.parse(self.fleet.run(host, liveness.command(rr.state_dir, rr.out_dir), root=True).stdout).running

    def local_dir(self, rr: RoleRun):
        return self.folder.trial_dir(self.trial.id, rr.host.name)

    def xdp_left(self) -> list[str]:
        """No XDP program may survive a trial: it would swallow the next trial's traffic."""
        problems = []
        for h, _ in self.hosts().values():
            f = self.fleet.hostctl(h, "facts", "--interface", h.interface)
            if f.get("xdp_prog_id"):
                problems.append(f"XDP program {f['xdp_prog_id']} still attached on {h.name}:{h.interface}")
        return problems

    def finish(self) -> dict:
        """Stop the roles, fetch and check their summaries, check no XDP is left."""
        self.stop_roles()
        summaries, problems = {}, []
        for rr in self.roles:
            summary, trouble = rr.fetch(self.fleet, self.local_dir(rr))
            problems += trouble
            if summary is not None:
                summaries[rr.at.key] = summary
        problems += self.xdp_left()
        if problems:
            raise RunFailed("; ".join(problems))
        return summaries
