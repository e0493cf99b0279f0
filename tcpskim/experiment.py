"""``invoke run-experiment``: run a planned experiment on the testbed and keep every result.

Per trial: write each role's config, start logger -> hardworker -> sensor(s) waiting for each
ready signal, send ``go`` (a start time in each host's own clock), watch the roles while the
sensors send, then stop sensor -> hardworker -> logger, check that every role exited cleanly
and no XDP program is left, and fetch the summaries. The measurement window opens only
after every role reported ready (bcc compiles cost seconds of CPU) plus the warm-up.

Ctrl-C or any failure stops every role everywhere, detaches XDP, keeps the partial results
and marks the run failed. One folder per run: ``results/<run-id>/`` (see results.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import threading
import time
from dataclasses import dataclass

from . import CHECKOUT, localgit
from .clock import offset as clock_offset
from .fleet import Fleet, HostError, remote_path
from .inventory import Host, parse_wakeup
from .lab.names import other_cpus
from .plan import Params, Trial, estimate_s, trials
from .results import RunFolder, trial_row
from .stop import stop_host

READY_TIMEOUT_S = {"logger": 30.0, "hardworker": 120.0, "sensor": 120.0}  # xdp roles compile with bcc
GO_DELAY_S = 1.0
POLL_S = 1.0


class RunFailed(Exception):
    """A trial failed; the message names the host and role."""


@dataclass
class HostInfo:
    host: Host
    checkout: str  # absolute
    offset_s: float = 0.0

    @property
    def state_dir(self) -> str:
        return f"{self.checkout}/.tcpskim"


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
    bad = [r for r in facts + macs if r.failed]
    if bad:
        raise RunFailed("; ".join(f"{r.host}: {r.detail}" for r in bad))
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
    def __init__(self, fleet: Fleet, p: Params, out=print, progress=True, overrides: dict | None = None):
        """``overrides``: role config keys set for every role (tests and benchmarks use it for
        knobs such as ``consumer_delay_us`` or a smaller ``ringbuf_bytes``)."""
        self.fleet, self.p, self.out, self.progress = fleet, p, out, progress
        self.overrides = dict(overrides or {})
        self.inv = fleet.inv
        self.plan = trials(p)
        self.sensors = self.inv.sensors[: p.sensors]
        self.hosts = [self.inv.logger, self.inv.hardworker, *self.sensors]
        self.info: dict[str, HostInfo] = {}
        self.cpus = cpu_plan(self.inv)
        # In the lab the control side (SSH threads, polling) shares the hosts' CPUs: keep it
        # off the hardworker's dedicated CPU during the run, like every lab sshd.
        self.control_cpus = (other_cpus(self.cpus, self.inv.hosts)
                             if self.inv.lab is not None and hasattr(os, "sched_setaffinity") else [])
        self.idle_rate: dict[int, float] = {}  # repeat -> busy CPU s per s with no traffic

    # --- configs -------------------------------------------------------------------------
    def config(self, trial: Trial, run_id: str, host: Host, role: str, instance: int, facts: dict) -> dict:
        hi = self.info[host.name]
        inv, p = self.inv, self.p

        def ref(h):
            return {"name": h.name, "ip": h.ip, "mac": facts[h.name]["mac"]}

        return {
            "role": role, "instance": instance, "run_id": run_id, "trial": trial.id,
            "mode": trial.mode, "state_dir": hi.state_dir,
            "out_dir": f"{hi.state_dir}/runs/{run_id}/{trial.id}",
            "interface": host.interface,
            "hosts": {"sensor": [ref(s) for s in self.sensors], "hardworker": ref(inv.hardworker),
                      "logger": ref(inv.logger)},
            "sensor_host": host.name if role == "sensor" else None,
            "expected_streams": len(self.sensors) if trial.mode != "idle" else None,
            "tos": inv.tos, "port": inv.port,
            "rate_hz": trial.rate_hz or 1.0, "size_bytes": trial.size_bytes,
            "warmup_s": p.warmup_s, "duration_s": p.duration_s, "tail_s": p.tail_s,
            "wakeup": parse_wakeup(p.wakeup),
            "xdp_mode": inv.experiment["xdp_mode"], "ringbuf_bytes": inv.experiment["ringbuf_bytes"],
            "capture_bytes": inv.experiment["capture_bytes"], "work_us": p.work_us,
            "cpus": self.cpus.get(host.name, []),
            # hardworker clock minus each sensor's clock (both measured against this machine),
            # so the hardworker takes each record's latency on one clock; 0 in the lab
            "clock_skew_s": {str(i + 1): 0.0 if inv.lab else
                             self.info[inv.hardworker.name].offset_s - self.info[s.name].offset_s
                             for i, s in enumerate(self.sensors)} if role == "hardworker" else {},
        } | self.overrides

    # --- one trial -----------------------------------------------------------------------
    def run_trial(self, folder: RunFolder, trial: Trial, facts: dict) -> dict:
        fleet = self.fleet
        parts = [(self.inv.hardworker, "hardworker", 0)] if trial.mode == "idle" else \
            [(self.inv.logger, "logger", 0), (self.inv.hardworker, "hardworker", 0),
             *[(s, "sensor", i + 1) for i, s in enumerate(self.sensors)]]
        cfgs = {}
        for host, role, inst in parts:
            cfg = self.config(trial, folder.run_id, host, role, inst, facts)
            local = folder.trial_dir(trial.id, host.name) / f"{role}-{inst}.json"
            local.write_text(json.dumps(cfg, indent=1))
            remote = f"{cfg['out_dir']}/{role}-{inst}.json"
            fleet.run(host, f"mkdir -p {shlex.quote(cfg['out_dir'])}", root=True)
            if host.is_root:
                fleet.put(host, str(local), remote)
            else:  # out_dir belongs to root: stage in /tmp, then move with sudo
                tmp = f"/tmp/tcpskim-{folder.run_id}-{role}-{inst}.json"
                fleet.put(host, str(local), tmp)
                fleet.run(host, f"mv {shlex.quote(tmp)} {shlex.quote(remote)}", root=True)
            cfgs[(host.name, role, inst)] = (host, remote, cfg)
        # Start in order, each ready before the next: the logger must listen before the
        # hardworker bounces to it, and both before the sensor connects.
        for (hname, role, inst), (host, remote, cfg) in cfgs.items():
            fleet.hostctl(host, "start", "--config", remote)
            try:
                fleet.hostctl(host, "wait-ready", "--config", remote, "--timeout", str(READY_TIMEOUT_S[role]),
                              timeout=READY_TIMEOUT_S[role] + 30)
            except HostError as exc:
                raise RunFailed(f"{role} on {hname} did not become ready: {exc}") from None
        # One start time for all, in each host's own clock (control time + its measured offset).
        start_at = time.time() + GO_DELAY_S
        go_dirs = {host.name: (host, cfg["out_dir"]) for (_, role, _), (host, _, cfg) in cfgs.items()
                   if role != "logger"}
        res = fleet.each([h for h, _ in go_dirs.values()], lambda h: ("ok", "", fleet.hostctl(
            h, "go", "--out-dir", go_dirs[h.name][1], "--start-at", f"{start_at + self.info[h.name].offset_s:.6f}")))
        if any(r.failed for r in res):
            raise RunFailed("; ".join(f"go on {r.host}: {r.detail}" for r in res if r.failed))
        self.watch(trial, cfgs, start_at)
        return self.finish(folder, trial, cfgs)

    def _alive(self, host: Host, cfg: dict, progress: bool = False) -> tuple[set[str], set[str], dict]:
        """(running role names, role names with a summary, {"delivered", "sent"} so far) on one
        host. This runs every second during the measurement window, so it is shell builtins
        only (no Python, no extra processes) but for ``tail`` when a progress bar wants the
        hardworker's delivered count (the sensors' sent counts are one-line files)."""
        st, out = shlex.quote(cfg["state_dir"] + "/pids"), shlex.quote(cfg["out_dir"])
        smp = ("tail -n1 hardworker-0.samples.csv 2>/dev/null | sed 's/^/smp /'; "
               "for f in sensor-*.sent; do [ -e \"$f\" ] && read n < \"$f\" && echo \"sent $n\"; done; "
               if progress else "")
        r = self.fleet.run(host, f"cd {st} 2>/dev/null && for f in *.pid; do p=; [ -e \"$f\" ] && read p < \"$f\"; "
                                 f"[ -n \"$p\" ] && kill -0 \"$p\" 2>/dev/null && echo \"run ${{f%.pid}}\"; done; "
                                 f"cd {out} && for f in *.summary.json; do [ -e \"$f\" ] && "
                                 f"echo \"sum ${{f%.summary.json}}\"; done; {smp}true", root=True)
        running, done, counts = set(), set(), {}
        for line in r.stdout.split("\n"):
            kind, _, rest = line.partition(" ")
            if kind == "run":
                running.add(rest)
            elif kind == "sum":
                done.add(rest)
            elif kind == "smp":  # t,cpu_busy_s,process_cpu_s,delivered (csv rows end in \r\n)
                fields = rest.strip().split(",")
                if len(fields) > 3 and fields[3].isdigit():
                    counts["delivered"] = int(fields[3])
            elif kind == "sent" and rest.strip().isdigit():
                counts["sent"] = counts.get("sent", 0) + int(rest)
        return running, done, counts

    def watch(self, trial: Trial, cfgs: dict, start_at: float):
        """Until the sensors are done (or the idle window passed), checking every role is alive."""
        p = self.p
        end = start_at + p.warmup_s + p.duration_s + (p.tail_s if trial.mode != "idle" else 0.0)
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=round(end - time.time()), desc=f"{trial.id}", unit="s", leave=False,
                       bar_format="{desc} {bar} {n:.0f}/{total:.0f} s{postfix}")
        hosts = {}
        for (hname, role, inst), (host, _, cfg) in cfgs.items():
            hosts.setdefault(hname, (host, cfg, []))[2].append(f"{role}-{inst}")
        try:
            while True:
                time.sleep(POLL_S)
                if bar is not None:
                    bar.n = min(bar.total, max(0, round(time.time() - (end - bar.total))))
                    bar.refresh()
                res = self.fleet.each([h for h, _, _ in hosts.values()], lambda h: (
                    "ok", "", dict(zip(("run", "sum", "counts"), self._alive(h, hosts[h.name][1], bar is not None)))))
                if bar is not None:
                    ok = [r.data["counts"] for r in res if not r.failed]
                    sent = sum(c.get("sent", 0) for c in ok)
                    delivered = next((c["delivered"] for c in ok if "delivered" in c), None)
                    if sent or delivered is not None:
                        bar.set_postfix_str(f"sent {sent} delivered {delivered if delivered is not None else '-'}",
                                            refresh=True)
                sensors_done = True
                for r in res:
                    if r.failed:
                        raise RunFailed(f"lost contact with {r.host}: {r.detail}")
                    for name in hosts[r.host][2]:
                        running, summarised = name in r.data["run"], name in r.data["sum"]
                        if not running and not summarised:
                            raise RunFailed(f"{name.rsplit('-', 1)[0]} on {r.host} died without a summary "
                                            f"(killed?) during {trial.id}")
                        if name.startswith("sensor") and running:
                            sensors_done = False
                        if not running and name.startswith(("hardworker", "logger")) and time.time() < end - 0.5:
                            raise RunFailed(f"{name.rsplit('-', 1)[0]} on {r.host} exited early during {trial.id}")
                if trial.mode == "idle" and time.time() > end:
                    break
                if trial.mode != "idle" and sensors_done:
                    break
                if time.time() > end + 60:
                    raise RunFailed(f"sensors still running 60 s after the planned end of {trial.id}")
        finally:
            if bar is not None:
                bar.close()

    def finish(self, folder: RunFolder, trial: Trial, cfgs: dict) -> dict:
        """Stop hardworker then logger (sensors ended by themselves), verify, fetch summaries."""
        fleet = self.fleet
        for role in ("sensor", "hardworker", "logger"):
            for (hname, r, inst), (host, remote, cfg) in cfgs.items():
                if r != role:
                    continue
                # In tcp mode the hardworker ends on the sensors' FINs: give it a moment before
                # TERM. In xdp mode it stays attached until told (a late retransmission must
                # still reach the logger); the sensors' connections are closed by now.
                deadline = time.time() + (10.0 if role == "hardworker" and trial.mode == "tcp" else 0.0)
                while time.time() < deadline and f"{role}-{inst}" in self._alive(host, cfg)[0]:
                    time.sleep(0.2)
                fleet.hostctl(host, "stop", "--role", role, "--timeout", "10", timeout=60)
        summaries, problems = {}, []
        for (hname, role, inst), (host, remote, cfg) in cfgs.items():
            name = f"{role}-{inst}"
            local_dir = folder.trial_dir(trial.id, hname)
            for suffix in (".summary.json", ".log"):
                try:
                    fleet.get(host, f"{cfg['out_dir']}/{name}{suffix}", str(local_dir / f"{name}{suffix}"))
                except (OSError, IOError) as exc:
                    if suffix == ".summary.json":
                        problems.append(f"{name} on {hname}: no summary ({exc})")
            try:
                s = json.loads((local_dir / f"{name}.summary.json").read_text())
            except (OSError, ValueError):
                continue
            summaries[(hname, role, inst)] = s
            if s.get("status") not in (None, "ok") or s.get("error"):
                problems.append(f"{name} on {hname}: {s.get('error') or s.get('status')}")
        # No XDP program may survive a trial: it would swallow the next trial's traffic.
        for h in {c[0].name: c[0] for c in cfgs.values()}.values():
            f = fleet.hostctl(h, "facts", "--interface", h.interface)
            if f.get("xdp_prog_id"):
                problems.append(f"XDP program {f['xdp_prog_id']} still attached on {h.name}:{h.interface}")
        if problems:
            raise RunFailed("; ".join(problems))
        return summaries

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
            with _signals_interrupt():
                self._trials(folder, rows)
        except BaseException as exc:  # KeyboardInterrupt included: stop everything, keep results
            reason = f"interrupted ({exc.args[0] if exc.args else 'Ctrl-C'})" \
                if isinstance(exc, KeyboardInterrupt) else str(exc)
            if hasattr(signal, "SIGHUP") and threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the terminal may be gone: clean up anyway

            def say(text):
                with contextlib.suppress(OSError):  # ... and printing to it may fail
                    self.out(text)

            say(f"run failed: {reason}; stopping every role on every host")
            from .fleet import summary

            summary("cleanup", self.fleet.each(list(self.inv.hosts), lambda h: stop_host(self.fleet, h)), out=say)
            folder.write_summary(rows)
            folder.finish("failed", reason)
            say(f"run {folder.run_id} FAILED: partial results in {folder.path}")
            raise RunFailed(reason) from None
        finally:
            if affinity:
                os.sched_setaffinity(0, affinity)
        folder.finish("ok")
        self.out(f"run {folder.run_id} ok: {folder.path}")
        return folder

    def _trials(self, folder: RunFolder, rows: list):
        """Preflight, then every trial of the plan; a summary row written after each."""
        p = self.p
        facts = preflight(self.fleet, self.hosts)
        for h in self.hosts:
            self.info[h.name] = HostInfo(h, facts[h.name]["checkout"], facts[h.name]["clock_offset_s"])
        folder.set_hosts({h.name: {"role": h.role, **facts[h.name]} for h in self.hosts})
        t_run = time.time()
        for i, trial in enumerate(self.plan):
            self.out(f"[{i + 1}/{len(self.plan)}] {trial.id}  (elapsed {time.time() - t_run:.0f} s)")
            summaries = self.run_trial(folder, trial, facts)
            row = trial_row(folder.run_id, trial, p, summaries, self.idle_rate)
            if trial.mode == "idle" and row.get("_idle_rate") is not None:
                self.idle_rate[trial.repeat] = row["_idle_rate"]
            rows.append(row)
            folder.write_summary(rows)
            self.out("    " + _row_line(row))

    def print_plan(self, folder: RunFolder):
        p = self.p
        modes = ",".join(p.modes) + (" + idle baseline" if p.idle else "")
        self.out(f"run {folder.run_id}: {len(self.plan)} trials ({modes}), rates {','.join(f'{r:g}' for r in p.rates)} Hz, "
                 f"sizes {','.join(map(str, p.sizes))} B, {p.duration_s:g} s window after {p.warmup_s:g} s warm-up, "
                 f"{p.repeat} repeat(s), wake-up {p.wakeup}, {p.sensors} sensor(s); "
                 f"estimated {estimate_s(p, self.plan) / 60:.1f} min")
        self.out("order: " + " ".join(t.id.split("-", 1)[1] for t in self.plan))


@contextlib.contextmanager
def _signals_interrupt():
    """SIGTERM and SIGHUP (a closed terminal or SSH session to the control machine) interrupt
    the run like Ctrl-C, so its cleanup still stops every role and detaches every XDP program."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, _frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    sigs = [signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    old = {s: signal.signal(s, interrupt) for s in sigs}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _row_line(row: dict) -> str:
    if row["mode"] == "idle":
        return f"idle baseline: {row.get('_idle_rate', 0) * 100:.2f} % of the hardworker CPU set busy"
    def f(v, fmt):
        return "-" if v is None else format(v, fmt)
    return (f"sent {row['sent']} delivered {row['delivered']} logged {row['logged']} lost {row['lost']} "
            f"dup {row['duplicates']} corrupt {row['corrupt']} | hw {f(row['hw_cpu_us_per_record'], '.1f')} µs/rec "
            f"(process {f(row['hw_process_cpu_us_per_record'], '.1f')}) bpf {f(row['bpf_ns_per_packet'], '.0f')} ns/pkt "
            f"| latency p50 {f(row['latency_p50_us'], '.0f')} µs")
