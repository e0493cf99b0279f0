"""``invoke run-experiment``: run a planned experiment on the testbed and keep every result.

The run: print the plan (plan.py), gather every host's facts (preflight, which also sweeps
leftovers), compile every host's BPF programs for the whole plan once (precompile.py), then
one ``trial.TrialSession`` per trial of the plan (start -> go -> watch -> finish), a summary
row written after each (results.py).

Ctrl-C, SIGTERM/SIGHUP (signals.py) or any failure stops every role everywhere, detaches
XDP, keeps the partial results and marks the run failed. One folder per run:
``results/<run-id>/``.

With ``guard`` (``--guard``, ``experiment.guard``) the network guard runs on every inventory
host from preflight to the end (``guardops.start``: started, or reloaded with the live MACs).
The run stops the guards it started, when it ends for any reason; a guard that was already
running stays. The guard is no trial's role: the sweeps around trials leave it alone.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import time

from . import CHECKOUT, localgit, signals
from .clock import offset as clock_offset
from .fleet import Fleet, remote_path
from .inventory import Host
from .lab.names import other_cpus
from .plan import Params, estimate_s, trials
from .precompile import precompile
from .results import RunFolder, trial_row
from .stop import stop_host
from .trial import RunFailed, TrialSession
from .trialconfig import HostInfo, Testbed

__all__ = ["HostInfo", "PreflightFailed", "RunFailed", "Runner", "preflight"]


class PreflightFailed(RunFailed):
    """Preflight failed on some hosts (``failed``: host -> its one-line reason), before any trial."""

    def __init__(self, failed: dict[str, str]):
        super().__init__("preflight failed: " + "; ".join(f"{h}: {d}" for h, d in failed.items()))
        self.failed = failed


def preflight(fleet: Fleet, hosts: list[Host]) -> dict[str, dict]:
    """Facts every result must carry, gathered before anything starts; also sweeps leftovers."""
    from .netfix import discover_macs

    def one(h: Host):
        stop_host(fleet, h)
        ck = remote_path(h.checkout)
        abs_ck = fleet.run(h, f"cd {ck} && pwd").stdout.strip()
        commit = fleet.run(h, f"git -C {ck} rev-parse HEAD").stdout.strip()
        kernel = fleet.run(h, "uname -r").stdout.strip()
        bcc = fleet.run(h, f"{shlex.quote(h.python)} -c 'import bcc; print(getattr(bcc, \"__version__\", \"?\"))'",
                        warn=True).stdout.strip() or "missing"
        off = clock_offset(fleet, h)
        return "ok", "", {"checkout": abs_ck, "commit": commit, "kernel": kernel, "bcc": bcc,
                          "clock_offset_s": off["offset_s"], "clock_uncertainty_s": off["uncertainty_s"]}

    facts = fleet.each(hosts, one)
    macs = discover_macs(fleet, hosts)
    bad = {}
    for r in facts + macs:
        if r.failed:
            bad.setdefault(r.host, r.detail)  # a host's first error only: the MAC step repeats an SSH one
    if bad:
        raise PreflightFailed(bad)
    out = {r.host: r.data for r in facts}
    for r in macs:
        out[r.host]["mac"] = r.data["mac"]
    return out


def cpu_plan(inv) -> dict[str, list[int]]:
    if inv.lab is not None:
        from .lab import cpu_plan as lab_plan

        return lab_plan(inv)
    return {h.name: list(h.cpus) for h in inv.hosts}


class Runner:
    """The run: preflight, every trial of the plan, one summary row each; cleanup on failure."""

    def __init__(self, fleet: Fleet, p: Params, out=print, progress=True, overrides: dict | None = None):
        """``overrides``: role config keys set for every role (tests and benchmarks use it for
        knobs such as ``consumer_delay_us`` or a smaller ``ringbuf_bytes``)."""
        self.fleet, self.p, self.out, self.progress = fleet, p, out, progress
        self.overrides = dict(overrides or {})
        self.inv = fleet.inv
        self.plan = trials(p)
        self.sensors = self.inv.sensors[: p.sensors]
        self.hosts = [self.inv.logger, self.inv.hardworker, *self.sensors]
        self.cpus = cpu_plan(self.inv)
        # In the lab the control side (SSH threads, polling) shares the hosts' CPUs: keep it
        # off the hardworker's dedicated CPU during the run, like every lab sshd.
        self.control_cpus = (other_cpus(self.cpus, self.inv.hosts)
                             if self.inv.lab is not None and hasattr(os, "sched_setaffinity") else [])
        self.idle_rate: dict[int, float] = {}  # repeat -> busy CPU s per s with no traffic
        self.session_opts: dict = {}  # TrialSession keywords (unit tests poll faster)
        self.guards_started: list[Host] = []  # hosts whose guard this run started (stopped at its end)

    def testbed(self) -> Testbed:
        """Preflight every host taking part; what every trial of the run shares."""
        facts = preflight(self.fleet, self.hosts)
        return Testbed(self.fleet, self.p, self.sensors, facts, self.cpus, self.overrides)

    # --- the run -------------------------------------------------------------------------
    def run(self, tag_folder: RunFolder | None = None) -> RunFolder:
        p = self.p
        folder = tag_folder or RunFolder.new(CHECKOUT / "results", p.tag)
        self.print_plan(folder)
        folder.start(params=p.as_dict(), inventory=self.inv, lab=self.inv.lab is not None,
                     control_commit=localgit.head())
        rows = []
        affinity = os.sched_getaffinity(0) if self.control_cpus else None
        if self.control_cpus:
            os.sched_setaffinity(0, self.control_cpus)
        try:
            with signals.interrupting():
                self._trials(folder, rows)
        except BaseException as exc:  # KeyboardInterrupt included: stop everything, keep results
            reason = f"interrupted ({exc.args[0] if exc.args else 'Ctrl-C'})" \
                if isinstance(exc, KeyboardInterrupt) else str(exc)
            self._fail(folder, rows, reason, skip=getattr(exc, "failed", {}))
            raise RunFailed(reason) from None
        finally:
            if affinity:
                os.sched_setaffinity(0, affinity)
            self._guards_down()
        folder.finish("ok")
        self.out(f"run {folder.run_id} ok: {folder.path}")
        return folder

    def _fail(self, folder: RunFolder, rows: list, reason: str, skip=()):
        """Stop every role on every host (XDP detached), keep the rows so far, mark the run failed.

        ``skip``: hosts whose preflight failed (it already swept them, or they cannot be
        reached: their error is in ``reason`` once, not again from a cleanup). A run that ended
        before its first trial keeps no folder, so it never becomes the "latest" run."""
        signals.ignore_hangup()  # the terminal may be gone: clean up anyway

        def say(text):
            with contextlib.suppress(OSError):  # ... and printing to it may fail
                self.out(text)

        from .fleet import summary

        hosts = [h for h in self.inv.hosts if h.name not in skip]
        say(f"run failed: {reason}" + ("; stopping every role on every host" if hosts else ""))
        if hosts:
            summary("cleanup", self.fleet.each(hosts, lambda h: stop_host(self.fleet, h)), out=say)
        folder.write_summary(rows)
        folder.finish("failed", reason)
        if not rows and folder.discard_if_empty():
            say(f"run {folder.run_id} FAILED before its first trial: no results kept")
        else:
            say(f"run {folder.run_id} FAILED: partial results in {folder.path}")

    def _trials(self, folder: RunFolder, rows: list):
        """Preflight, then every trial of the plan; a summary row written after each."""
        p = self.p
        bed = self.testbed()
        folder.set_hosts({h.name: {"role": h.role, **bed.facts[h.name]} for h in self.hosts})
        if p.guard:
            self._guards_up()
        failed = {r.host: r.detail for r in precompile(self.fleet, bed, self.plan, folder.run_id, out=self.out)
                  if r.failed}
        if failed:  # a role start would compile and fail the same way: stop before any trial
            raise RunFailed("precompile failed: " + "; ".join(f"{h}: {d}" for h, d in failed.items()))
        t_run = time.time()
        for i, trial in enumerate(self.plan):
            self.out(f"[{i + 1}/{len(self.plan)}] {trial.id}  (elapsed {time.time() - t_run:.0f} s)")
            summaries = TrialSession(bed, folder, trial, progress=self.progress, **self.session_opts).run()
            row = trial_row(folder.run_id, trial, p, summaries, self.idle_rate)
            if trial.mode == "idle" and row.get("_idle_rate") is not None:
                self.idle_rate[trial.repeat] = row["_idle_rate"]
            rows.append(row)
            folder.write_summary(rows)
            self.out("    " + _row_line(row))

    def _guards_up(self):
        """The guard on every inventory host (its peers are all of them), or RunFailed naming a host."""
        from .guardops import start

        results = start(self.fleet, list(self.inv.hosts))
        self.guards_started = [self.inv.host(r.host) for r in results if r.data.get("action") == "start"]
        bad = [f"{r.host}: {r.detail}" for r in results if r.failed]
        if bad:
            raise RunFailed("guard: " + "; ".join(bad))
        self.out("guard: " + ", ".join(f"{r.host} {r.data['action']} (pid {r.data['pid']})" for r in results))

    def _guards_down(self):
        if not self.guards_started:
            return
        from .guardops import stop

        hosts, self.guards_started = self.guards_started, []
        for r in stop(self.fleet, hosts):
            with contextlib.suppress(OSError):
                self.out(f"guard on {r.host}: {r.detail}" if not r.failed else
                         f"guard on {r.host}: could not stop it: {r.detail}")

    def print_plan(self, folder: RunFolder):
        p = self.p
        modes = ",".join(p.modes) + (" + idle baseline" if p.idle else "")
        self.out(f"run {folder.run_id}: {len(self.plan)} trials ({modes}), rates {','.join(f'{r:g}' for r in p.rates)} Hz, "
                 f"sizes {','.join(map(str, p.sizes))} B, {p.duration_s:g} s window after {p.warmup_s:g} s warm-up, "
                 f"{p.repeat} repeat(s), wake-up {p.wakeup}, {p.sensors} sensor(s); "
                 f"estimated {estimate_s(p, self.plan) / 60:.1f} min")
        self.out("order: " + " ".join(t.id.split("-", 1)[1] for t in self.plan))


def _row_line(row: dict) -> str:
    if row["mode"] == "idle":
        return f"idle baseline: {row.get('_idle_rate', 0) * 100:.2f} % of the hardworker CPU set busy"
    def f(v, fmt):
        return "-" if v is None else format(v, fmt)
    # the attributed figure when traced (busy - other tasks - steal while the role ran), as the
    # report gives it; else busy - idle
    attr = row.get("hw_attr_us_per_record")
    hw = f"{attr:.1f} µs/rec attributed" if attr is not None else f"{f(row['hw_cpu_us_per_record'], '.1f')} µs/rec"
    return (f"sent {row['sent']} delivered {row['delivered']} logged {row['logged']} lost {row['lost']} "
            f"dup {row['duplicates']} corrupt {row['corrupt']} | hw {hw} "
            f"(process {f(row['hw_process_cpu_us_per_record'], '.1f')}) bpf {f(row['bpf_ns_per_packet'], '.0f')} ns/pkt "
            f"| latency p50 {f(row['latency_p50_us'], '.0f')} µs")
