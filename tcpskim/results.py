"""One folder per run, and the summary row of a trial.

``results/<run-id>/`` holds ``run.json`` (parameters, inventory, commit/kernel/bcc/clock
offset per host, start/end, status), one folder per trial and host with the raw files the
roles wrote, and ``summary.json`` + ``summary.csv`` with one row per trial (schema in the
README). A figure can always be traced back to what made it.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict
from pathlib import Path

from roles import delivery, fsutil

from . import components

COLUMNS = ["run_id", "trial", "mode", "rate_hz", "size_bytes", "duration_s", "repeat", "sent", "delivered",
           "logged", "lost", "duplicates", "corrupt", "hw_busy_cpu_s", "hw_idle_baseline_cpu_s",
           "hw_cpu_us_per_record", "hw_process_cpu_us_per_record", "bpf_ns_per_packet", "ctx_switches",
           "peak_rss_bytes", "latency_p50_us", "latency_p99_us", "achieved_rate_hz", "status", "wakeup",
           "deliver", "expected", "skipped", "hw_cpu_us_per_sent_record", "hw_attr_us_per_sent_record",
           "hw_stream_us_per_sent_record",
           "hw_sampler_cpu_s", "send_lateness_p99_us", "hw_wake_cost_us", "hw_softirq_share",
           # tracepoint attribution of the hardworker's dedicated CPU (tcpskim.components)
           "hw_attr_us_per_record", "hw_components_us", "hw_events_per_record", "hw_unattributed_us",
           "hw_tracer_cost_us", "hw_tracer_cost_share", "hw_tracer_self_us", "hw_tracer_runs_per_record",
           "hw_tracer_dispatch_ns", "hw_period_median_us", "hw_period_ci_us",
           "hw_other_tasks_s", "hw_steal_s", "hw_role_steal_s", "hw_role_user_share"]


def _json(path: Path, obj):
    fsutil.atomic_write(path, json.dumps(obj, indent=1, default=str))


class RunFolder:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.run_id = self.path.name
        self.meta: dict = {}

    @classmethod
    def new(cls, base: Path, tag: str = "") -> "RunFolder":
        run_id = time.strftime("%Y%m%d-%H%M%S") + (f"-{tag}" if tag else "")
        path = base / run_id
        n = 1
        while path.exists():  # two runs in one second
            n += 1
            path = base / f"{run_id}.{n}"
        path.mkdir(parents=True)
        return cls(path)

    def discard_if_empty(self) -> bool:
        """Remove the folder of a run that ended before its first trial (run.json and
        summaries only, no trial folder), so it never becomes "latest"; whether it did."""
        if not self.path.is_dir() or any(p.is_dir() for p in self.path.iterdir()):
            return False
        for p in self.path.iterdir():
            p.unlink()
        self.path.rmdir()
        return True

    @classmethod
    def latest(cls, base: Path) -> "RunFolder":
        runs = sorted(p for p in base.glob("*/run.json"))
        if not runs:
            raise FileNotFoundError(f"no runs in {base}")
        return cls(max(runs, key=lambda p: p.stat().st_mtime).parent)

    def trial_dir(self, trial: str, host: str) -> Path:
        d = self.path / trial / host
        d.mkdir(parents=True, exist_ok=True)
        return d

    def start(self, *, params: dict, inventory, lab: bool, control_commit: str):
        inv = {"path": str(inventory.path), "name": inventory.name, "tos": inventory.tos, "port": inventory.port,
               "experiment": inventory.experiment, "hosts": [asdict(h) for h in inventory.hosts]}
        self.meta = {"run_id": self.run_id, "status": "running", "started": time.time(), "ended": None,
                     "params": params, "inventory": inv, "lab": lab, "control_commit": control_commit,
                     "hosts": {}, "failure": None}
        _json(self.path / "run.json", self.meta)

    def set_hosts(self, hosts: dict):
        self.meta["hosts"] = hosts
        _json(self.path / "run.json", self.meta)

    def finish(self, status: str, failure: str | None = None):
        self.meta.update(status=status, ended=time.time(), failure=failure)
        _json(self.path / "run.json", self.meta)

    def write_summary(self, rows: list[dict]):
        clean = [{k: r.get(k) for k in COLUMNS} for r in rows]
        _json(self.path / "summary.json", {"run_id": self.run_id, "columns": COLUMNS, "rows": clean})
        with fsutil.replacing(self.path / "summary.csv") as tmp, open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS)  # a reader never sees half a table
            w.writeheader()
            w.writerows({k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in r.items()}
                        for r in clean)


def _one(summaries: dict, role: str) -> dict:
    for (h, r, i), s in summaries.items():
        if r == role:
            return s
    return {}


def trial_row(run_id: str, trial, p, summaries: dict, idle_rate: dict) -> dict:
    """The summary row of one trial from its role summaries.

    hw_cpu_us_per_record = (busy CPU of the hardworker's CPU set in the window − the idle
    baseline's busy CPU for the same time) / records delivered in the window. The baseline
    comes from the idle trial of the same repeat (the closest in time).

    Latency is hardworker receive time minus sensor send time, two clocks: the hardworker
    takes each sensor's clock skew out per record (its config's ``clock_skew_s``: hardworker
    offset minus that sensor's offset, both measured against the control machine); the
    offsets and their uncertainty are in run.json. In the lab both clocks are one."""
    hw = _one(summaries, "hardworker")
    lg = _one(summaries, "logger")
    sensors = [s for (h, r, i), s in summaries.items() if r == "sensor"]
    win = hw.get("window") or {}
    busy = win.get("cpu_busy_s")
    elapsed = win.get("elapsed_s")
    n_win = win.get("delivered_in_window") or 0
    row = {"run_id": run_id, "trial": trial.id, "mode": trial.mode, "rate_hz": trial.rate_hz,
           "size_bytes": trial.size_bytes, "duration_s": elapsed, "repeat": trial.repeat,
           "hw_busy_cpu_s": busy, "wakeup": p.wakeup,
           "ctx_switches": (win.get("ctx_voluntary") or 0) + (win.get("ctx_involuntary") or 0),
           "peak_rss_bytes": hw.get("peak_rss_bytes"), "status": "ok",
           "hw_sampler_cpu_s": win.get("sampler_cpu_s"), "hw_wake_cost_us": hw.get("wake_cost_us"),
           # Busy CPU not charged to the role process: interrupts and softirq (receive, XDP,
           # forwarding) and kernel threads. Both terms are precise; /proc/stat's softirq
           # column is tick-sampled (no IRQ_TIME_ACCOUNTING on most kernels) and is not used.
           "hw_softirq_share": (busy - win["process_cpu_s"]) / busy
           if busy and win.get("process_cpu_s") is not None else None}
    if trial.mode == "idle":
        row["_idle_rate"] = busy / elapsed if busy is not None and elapsed else None
        row.update(sent=0, delivered=0, logged=0, lost=0, duplicates=0, corrupt=0)
        row.update(components.row_fields(win))
        return row
    rate0 = idle_rate.get(trial.repeat, next(iter(idle_rate.values()), None) if idle_rate else None)
    baseline = rate0 * elapsed if rate0 is not None and elapsed else None
    row.update(
        sent=sum(s.get("sent", 0) for s in sensors),
        delivered=hw.get("delivered"), logged=lg.get("stored"),
        lost=hw.get("lost"), duplicates=hw.get("duplicates"), corrupt=hw.get("corrupt"),
        hw_idle_baseline_cpu_s=baseline,
        hw_cpu_us_per_record=((busy - (baseline or 0.0)) / n_win * 1e6) if busy is not None and n_win else None,
        # The measurement's own sampler thread is not the hardworker's cost: it is reported
        # apart (hw_sampler_cpu_s), and the idle baseline removes it from the busy figure.
        hw_process_cpu_us_per_record=((win["process_cpu_s"] - win["sampler_cpu_s"]) / n_win * 1e6)
        if win.get("process_cpu_s") is not None and win.get("sampler_cpu_s") is not None and n_win else None,
        bpf_ns_per_packet=(win["bpf_run_time_ns"] / win["bpf_run_cnt"]) if win.get("bpf_run_cnt") else None,
        latency_p50_us=(hw.get("latency_us") or {}).get("p50"),
        latency_p99_us=(hw.get("latency_us") or {}).get("p99"),
        achieved_rate_hz=(sum(s.get("achieved_rate_hz") or 0 for s in sensors) or None),
        # how late the sensors sent against their schedule (worst sensor)
        send_lateness_p99_us=max(((s.get("lateness_us") or {}).get("p99") or 0.0 for s in sensors), default=None),
    )
    _deliver_counts(row, hw, sensors, p, trial, elapsed, busy, baseline)
    if row["lost"] or row["duplicates"] or row["corrupt"] or row["logged"] != row["sent"] \
            or (row["expected"] is not None and row["delivered"] != row["expected"]) \
            or (hw.get("policy") or {}).get("policy_mismatch") or not win.get("complete"):
        row["status"] = "incomplete"
    row.update(components.row_fields(win))
    return row


def _deliver_counts(row, hw, sensors, p, trial, elapsed, busy, baseline) -> None:
    """What the delivery policy promised and what it skipped; CPU per *sent* record.

    ``expected`` replays the policy over each sensor's sent records (all: every one; filter:
    the matching ones; latest: none promised, so None). Records missing from what was
    promised are lost; a latest decision skips the records it superseded."""
    policy = delivery.parse(getattr(p, "deliver", "all"))
    exp = [delivery.expected(policy, s.get("sent", 0)) for s in sensors]
    row["deliver"] = str(policy)
    row["expected"] = None if None in exp else sum(exp)
    if row["delivered"] is not None and row["expected"] is not None:
        # delivered counts each record once (duplicates apart); a corrupt record arrived, damaged
        row["lost"] = max(row["lost"] or 0, row["expected"] - row["delivered"] - (row["corrupt"] or 0))
    if policy.kind == "latest":
        row["lost"] = 0  # superseded records are skipped by contract, counted below
        row["skipped"] = ((hw.get("policy") or {}).get("latest") or {}).get("skipped")
    elif row["delivered"] is not None:
        row["skipped"] = row["sent"] - row["delivered"] - (row["lost"] or 0) - (row["corrupt"] or 0)
    # The hardworker's cost of the whole stream: per record the sensors sent in the window
    # (they pace exactly; achieved_rate_hz says how well), whatever the policy let through.
    n_sent = trial.rate_hz * elapsed * len(sensors) if elapsed else 0
    row["hw_cpu_us_per_sent_record"] = ((busy - (baseline or 0.0)) / n_sent * 1e6) \
        if busy is not None and n_sent else None
    # The same from tracepoint attribution: other tasks (kdamond, kworkers, sshd) taken out
    # instead of subtracting an idle trial, whose noise swamps a 50 Hz stream's few ms per
    # second. What stays (ticks, the CPU's housekeeping) is in both modes alike, so it can
    # only pull the xdp/tcp ratio towards 1.
    attr = components.attributed_busy_s(hw.get("window"))
    row["hw_attr_us_per_sent_record"] = attr / n_sent * 1e6 if attr is not None and n_sent else None
    # Only the busy periods that served the stream (a packet received, or the role ran): the
    # housekeeping left in the attributed figure is out too.
    # The steal while the role ran is out of it too (the role runs only in such periods).
    a = (hw.get("window") or {}).get("attribution") or {}
    stream = (a.get("periods") or {}).get("stream_s")
    row["hw_stream_us_per_sent_record"] = (stream - components.role_steal_s(a)) / n_sent * 1e6 \
        if stream is not None and n_sent else None


class RunFileError(ValueError):
    """A run folder's file that cannot be what the runner wrote: one line naming file and key."""


# run.json keys a report or a collect reads, and the JSON types each must have
_META_TYPES = {"run_id": (str,), "status": (str,), "hosts": (dict,), "params": (dict,),
               "lab": (bool,), "failure": (str, type(None)), "started": (int, float, str, type(None)),
               "ended": (int, float, str, type(None))}
_REQUIRED = ("run_id", "hosts")
_HOST_TYPES = {"role": (str,), "checkout": (str,), "commit": (str, type(None)), "kernel": (str, type(None)),
               "bcc": (str, type(None)),
               "clock_offset_s": (int, float, type(None)), "clock_uncertainty_s": (int, float, type(None))}


def _kind(v) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false",
            type(None): "null"}.get(type(v), "a number" if isinstance(v, (int, float)) else type(v).__name__)


def read_meta(run_dir) -> dict:
    """A run folder's run.json, checked: a JSON object with the keys the runner writes, of
    the types it writes them; else ``RunFileError`` naming the file and the key."""
    path = Path(run_dir) / "run.json"
    try:
        meta = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise RunFileError(f"{run_dir} is not a run folder (no run.json)") from None
    except IsADirectoryError:
        raise RunFileError(f"{path}: is a directory, not a file") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise RunFileError(f"{path}: not valid JSON ({' '.join(str(exc).split())[:120]})") from None
    if not isinstance(meta, dict):
        raise RunFileError(f"{path}: must hold a JSON object, not {_kind(meta)}")
    for key in _REQUIRED:
        if key not in meta:
            raise RunFileError(f"{path}: {key}: is missing (not a run.json the runner wrote)")
    for key, types in _META_TYPES.items():
        if key in meta and (not isinstance(meta[key], types) or isinstance(meta[key], bool) and bool not in types):
            raise RunFileError(f"{path}: {key}: must be {_kind(types[0]())}, not {_kind(meta[key])}")
    for name, h in meta["hosts"].items():
        if not isinstance(h, dict):
            raise RunFileError(f"{path}: hosts.{name}: must be an object, not {_kind(h)}")
        for key, types in _HOST_TYPES.items():
            if key in h and not isinstance(h[key], types):
                raise RunFileError(f"{path}: hosts.{name}.{key}: must be {_kind(types[0]())}, not {_kind(h[key])}")
    return meta
