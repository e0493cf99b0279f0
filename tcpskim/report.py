"""Report of one experiment run: tables and report.md from ``results/<run_id>/``.

Input (written by the experiment runner): ``run.json`` (params, hosts, status), ``summary.json``
(or ``summary.csv``) with one row per trial, and per-trial folders
``<trial>/<host>/hardworker-0.samples.csv`` / ``hardworker-0.latency_us.txt``.

Statistics: the replicate is the trial. Per mode x rate x size, the mean hardworker CPU per
record (idle baseline already subtracted by the runner) gets a Student-t 95 % CI over the ok
trials; the xdp/tcp ratio gets Fieller's 95 % CI (``tcpskim.stats``), paired by repeat when
at least 2 repeats have one ok trial of each mode (the two share the repeat's idle baseline and
drift), else for independent samples; the table names the method. Failed trials are left
out of the statistics but counted and flagged; trials that lost, duplicated or corrupted
records stay in (their CPU figures are real) but are flagged.

API: ``load_run``, ``tables``, ``write_report`` (used by ``invoke report`` and ``invoke
collect``; the PNGs are ``tcpskim.plots``); ``xdp_tcp_ratio`` (also used by ``bench/overhead.py``).
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path

from tabulate import tabulate

from roles import fsutil, vocab

from . import components, plots, resolve, results, stats
from .trialrows import groups as _groups, mode_key as _mode_key, ok as _ok

LAB_NOTE = ("lab: all hosts share one kernel; only the hardworker's dedicated CPU and "
            "per-process counters are per-host figures")
_INT_COLS = {"rate_hz", "size_bytes", "repeat", "sent", "delivered", "logged", "lost", "expected", "skipped",
             "duplicates", "corrupt", "ctx_switches", "peak_rss_bytes"}
_FLOAT_COLS = {"duration_s", "hw_busy_cpu_s", "hw_idle_baseline_cpu_s", "hw_cpu_us_per_record",
               "hw_process_cpu_us_per_record", "bpf_ns_per_packet", "latency_p50_us",
               "latency_p99_us", "achieved_rate_hz", "hw_wake_cost_us", "hw_attr_us_per_record",
               "hw_unattributed_us", "hw_tracer_cost_us", "hw_tracer_cost_share", "hw_tracer_self_us",
               "hw_tracer_runs_per_record", "hw_tracer_dispatch_ns",
               "hw_period_median_us", "hw_other_tasks_s", "hw_steal_s", "hw_role_steal_s", "hw_cpu_us_per_sent_record",
               "hw_attr_us_per_sent_record", "hw_stream_us_per_sent_record", "hw_role_user_share"}
_JSON_COLS = {"hw_components_us", "hw_events_per_record", "hw_period_ci_us"}  # JSON text in the CSV
_TEXT_COLS = {"mode", "95% CI", "flags", "source", "saves", "CI method", "deliver", "CPU source"}
_PROBLEM_COLS = (("lost", "LOST"), ("duplicates", "DUP"), ("corrupt", "CORRUPT"))
IDLE_BUSY_LIMIT = 0.10  # busy share of the hardworker CPU set above which an idle trial is suspect
OTHER_TASKS_LIMIT = 0.10  # share of the window other tasks ran on the hardworker CPU: say so


# ----------------------------------------------------------------------------- loading

def _num(value, kind):
    """CSV cell or JSON value -> int/float/None ('' and 'None' are None)."""
    if value is None or value == "" or value == "None":
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return value
    if math.isnan(f):
        return None
    return int(f) if kind is int and f.is_integer() else f


def _normalise(row: dict) -> dict:
    out = dict(row)
    for col in _INT_COLS:
        if col in out:
            out[col] = _num(out[col], int)
    for col in _FLOAT_COLS:
        if col in out:
            out[col] = _num(out[col], float)
    for col in _JSON_COLS:
        if isinstance(out.get(col), str):
            try:
                out[col] = json.loads(out[col]) if out[col] not in ("", "None") else None
            except ValueError:
                out[col] = None
    out["trial"] = str(out.get("trial", ""))
    out.setdefault("status", "ok")
    return out


def load_run(run_dir) -> tuple[dict, list[dict]]:
    """(run.json as dict, trial rows). Prefers summary.json, falls back to summary.csv.

    A missing run.json gives a minimal run dict (status "unknown"); missing summaries give
    no rows, so a report of a run that failed early still says what is known.
    """
    run_dir = Path(run_dir)
    run_path = run_dir / "run.json"
    if run_path.exists():
        run = results.read_meta(run_dir)  # RunFileError: one line naming the file and key
    else:
        run = {"run_id": run_dir.name, "status": "unknown", "params": {}, "hosts": {},
               "lab": False, "failure": "run.json missing"}
    rows: list[dict] = []
    if (run_dir / "summary.json").exists():
        rows = _summary_rows(run_dir / "summary.json")
    elif (run_dir / "summary.csv").exists():
        with open(run_dir / "summary.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
    return run, [_normalise(r) for r in rows]


def _summary_rows(path: Path) -> list[dict]:
    """summary.json's rows, or RunFileError naming the file and key."""
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise results.RunFileError(f"{path}: not valid JSON ({' '.join(str(exc).split())[:120]})") from None
    rows = data.get("rows", []) if isinstance(data, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise results.RunFileError(f"{path}: rows: must be a list of objects")
    return rows


# ----------------------------------------------------------------------------- helpers


def _fmt(v, digits=2):
    if v is None:
        return "-"
    if isinstance(v, float) and math.isnan(v):
        return "-"
    return f"{v:.{digits}f}"


def _ci(lo, hi, digits=2):
    return "-" if lo is None or hi is None else f"[{lo:.{digits}f}, {hi:.{digits}f}]"


def _kernel_us(row, col="hw_cpu_us_per_record"):
    """Busy CPU per record the role process was not charged for: receive softirq, XDP and
    forwarding (plus any other kernel work on the CPU beyond the idle baseline)."""
    cpu, proc = row.get(col), row.get("hw_process_cpu_us_per_record")
    return None if cpu is None or proc is None else cpu - proc


def _pm(values, digits=2):
    """'mean ± half-width' (or just the mean for n=1, '-' without values)."""
    mean, lo, hi, _n = stats.mean_ci(values)
    if mean is None:
        return "-"
    if lo is None:
        return _fmt(mean, digits)
    return f"{mean:.{digits}f} ± {(hi - lo) / 2:.{digits}f}"


def _sum(rows, col):
    vals = [r.get(col) for r in rows if r.get(col) is not None]
    return sum(vals) if vals else None



def _per_record_col(cell) -> str:
    """The attributed figure when every ok traffic trial of the cell has one, else busy - idle.

    The attributed figure (busy time of the dedicated CPU by its precise idle accounting, minus
    other tasks and the steal while the role ran) subtracts no idle trial: at low rates an idle
    trial's noise is the size of the stream's cost, and busy - idle came out negative (issue 9)."""
    ok = [r for r in cell if _ok(r) and r.get("mode") in ("xdp", "tcp")]
    if ok and all(r.get("hw_attr_us_per_record") is not None for r in ok):
        return "hw_attr_us_per_record"
    return "hw_cpu_us_per_record"


def _cell_cols(rows) -> dict:
    """{(rate, size): the per-record column both modes of that cell are reported in}."""
    cells = defaultdict(list)
    for r in rows:
        if r.get("mode") in ("xdp", "tcp"):
            cells[(r.get("rate_hz"), r.get("size_bytes"))].append(r)
    return {k: _per_record_col(v) for k, v in cells.items()}


def xdp_tcp_ratio(rows, col: str = "hw_cpu_us_per_record", level: float = 0.95):
    """(ratio, lo, hi, method) of xdp over tcp for the rows of one rate x size cell.

    Only ok rows with a value count. When at least 2 repeats have exactly one xdp and one tcp
    value, the ratio and its CI come from ``stats.paired_ratio_ci`` over those repeats
    (method "paired over N repeats"): the two trials of a repeat share its idle baseline and
    the machine's drift, so they are not independent. Otherwise ``stats.ratio_ci`` over all
    values (method "independent (Fieller)").
    """
    by = defaultdict(lambda: {"xdp": [], "tcp": []})
    for r in rows:
        if _ok(r) and r.get("mode") in ("xdp", "tcp") and r.get(col) is not None:
            by[r.get("repeat")][r["mode"]].append(r[col])
    pairs = [(v["xdp"][0], v["tcp"][0]) for rep, v in by.items()
             if rep is not None and len(v["xdp"]) == 1 and len(v["tcp"]) == 1]
    if len(pairs) >= 2:
        return (*stats.paired_ratio_ci(pairs, level), f"paired over {len(pairs)} repeats")
    xs = [x for v in by.values() for x in v["xdp"]]
    ts = [t for v in by.values() for t in v["tcp"]]
    return (*stats.ratio_ci(xs, ts, level), "independent (Fieller)")


def _row_problems(row) -> list[str]:
    probs = [] if _ok(row) else ["FAILED"]
    if row.get("status") == "incomplete":
        probs.append("INCOMPLETE")
    for col, label in _PROBLEM_COLS:
        if (row.get(col) or 0) != 0:
            probs.append(f"{label} {row[col]}")
    # A dedicated CPU idles at a few % with no traffic; more means something else ran there
    # during the trial, and every figure subtracting this baseline is off by as much.
    busy, dur = row.get("hw_busy_cpu_s"), row.get("duration_s")
    if row.get("mode") == "idle" and busy is not None and dur and busy / dur > IDLE_BUSY_LIMIT:
        probs.append(f"IDLE BUSY {busy / dur:.0%} (other work on the hardworker CPU?)")
    # Negative: the figure the report uses for this trial (busy - idle only without attribution).
    if row.get("hw_attr_us_per_record") is not None:
        attr, proc = row["hw_attr_us_per_record"], row.get("hw_process_cpu_us_per_record")
        if attr <= 0:
            probs.append("NEGATIVE CPU (attributed busy time <= 0)")
        elif proc is not None and attr < proc:  # the role's own runtime is a part of it
            probs.append(f"ATTRIBUTION LOW: {attr:.1f} µs/rec attributed < the role's own {proc:.1f} "
                         "(idle time charged to another task?)")
    elif (row.get("hw_cpu_us_per_record") or 0) < 0:
        probs.append("NEGATIVE CPU (idle baseline above this trial's busy time)")
    other, dur = row.get("hw_other_tasks_s"), row.get("duration_s")
    if row.get("mode") in ("xdp", "tcp") and other is not None and dur and other / dur > OTHER_TASKS_LIMIT:
        probs.append(f"OTHER TASKS {other / dur:.0%} of the hardworker CPU (not charged to records; "
                     "a shared machine?)")
    return probs


def flags(rows) -> list[str]:
    """One warning line per failed trial, trial with lost/duplicate/corrupt records, idle
    baseline that was not idle, or negative CPU figure."""
    out = []
    for r in rows:
        probs = _row_problems(r)
        if probs:
            out.append(f"!! trial {r['trial']} ({r.get('mode')}, {r.get('rate_hz')} Hz, "
                       f"{r.get('size_bytes')} B): {', '.join(probs)}")
    return out


def _header(run) -> str:
    p = run.get("params", {}) or {}
    parts = [f"run {run.get('run_id')}", f"status {run.get('status')}"]
    for key in ("modes", "rates", "sizes", "duration_s", "warmup_s", "repeat", "sensors",
                "idle", "tag", "deliver"):
        if key in p:
            v = p[key]
            parts.append(f"{key}={','.join(map(str, v)) if isinstance(v, list) else v}")
    parts.append(f"wakeup={_wakeup_str(p.get('wakeup'))}")
    line = "  ".join(parts)
    if run.get("failure"):
        line += f"\nFAILURE: {run['failure']}"
    return line


def _wakeup_str(w) -> str:
    return vocab.wakeup_text(w)


# ----------------------------------------------------------------------------- tables

def table_data(run, rows) -> dict:
    """The tables as {name: (headers, rows)} — shared by console and markdown output."""
    out = {"per_mode": _per_mode_table(rows), "ratio": _ratio_table(rows), "idle": _idle_table(rows)}
    if any(r.get("deliver") not in (None, "all") for r in rows):
        out["deliver"] = _deliver_table(rows)
    return out


def _per_mode_table(rows):
    """(1) per mode x rate x size: cost per record, delivery, latency, problems."""
    h1 = ["mode", "rate Hz", "size B", "n", "CPU µs/rec", "95% CI", "median µs/rec", "median 95% CI", "proc µs/rec",
          "kernel µs/rec", "BPF ns/pkt", "sent", "delivered", "logged", "lost", "dup", "corrupt",
          "p50 µs", "p99 µs", "achieved Hz", "CPU source", "flags"]
    t1 = []
    cols = _cell_cols(rows)
    for (mode, rate, size), grp in _groups(rows, modes=("xdp", "tcp")).items():
        ok = [r for r in grp if _ok(r)]
        col = cols[(rate, size)]
        mean, lo, hi, n = stats.mean_ci(r.get(col) for r in ok)
        med, mlo, mhi, _ = stats.mean_ci(r.get("hw_period_median_us") for r in ok)
        probs = []
        nfail = len(grp) - len(ok)
        if nfail:
            probs.append(f"FAILED {nfail}")
        for pcol, label in _PROBLEM_COLS:
            s = _sum(grp, pcol)
            if s:
                probs.append(f"{label} {s}")
        t1.append([
            mode, rate, size, n, _fmt(mean), _ci(lo, hi), _fmt(med), _ci(mlo, mhi),
            _pm([r.get("hw_process_cpu_us_per_record") for r in ok]),
            _pm([_kernel_us(r, col) for r in ok]),
            _pm([r.get("bpf_ns_per_packet") for r in ok], 1),
            _sum(grp, "sent"), _sum(grp, "delivered"), _sum(grp, "logged"),
            _sum(grp, "lost"), _sum(grp, "duplicates"), _sum(grp, "corrupt"),
            _fmt(stats.mean_ci(r.get("latency_p50_us") for r in ok)[0], 1),
            _fmt(stats.mean_ci(r.get("latency_p99_us") for r in ok)[0], 1),
            _fmt(stats.mean_ci(r.get("achieved_rate_hz") for r in ok)[0], 1),
            "attributed" if col == "hw_attr_us_per_record" else "busy - idle",
            "!! " + ", ".join(probs) if probs else "",
        ])
    return h1, t1


def _cell_figures(rows):
    """Per rate x size, in order: the figures of both modes, their ratio and whether the
    reports' rule (``resolve``) lets the ratio and the saving be shown."""
    cells = sorted({(r.get("rate_hz"), r.get("size_bytes")) for r in rows
                    if r.get("mode") in ("xdp", "tcp")}, key=lambda k: (k[0] or 0, k[1] or 0))
    for rate, size in cells:
        cell = [r for r in rows if r.get("mode") in ("xdp", "tcp") and r.get("rate_hz") == rate
                and r.get("size_bytes") == size]
        col = _per_record_col(cell)
        x, t = ([r[col] for r in cell if _ok(r) and r["mode"] == mode
                 and r.get(col) is not None] for mode in ("xdp", "tcp"))
        ratio, lo, hi, method = xdp_tcp_ratio(cell, col)
        durations = sorted(r["duration_s"] for r in cell if r.get("duration_s"))
        window = durations[len(durations) // 2] if durations else None
        allowed, why = resolve.ratio_allowed(x, t, window)
        if not allowed:  # never a ratio or a saving from a mean <= 0 or a CI spanning 0
            ratio = lo = hi = None
        yield {"rate": rate, "size": size, "col": col, "x": x, "t": t, "ratio": ratio, "lo": lo,
               "hi": hi, "method": method, "allowed": allowed, "why": why, "window_s": window,
               "nflag": sum(1 for r in cell if _row_problems(r))}


def _ratio_table(rows):
    """(2) xdp / tcp per rate x size: the ratio, its CI and the saving, when allowed."""
    h2 = ["rate Hz", "size B", "n xdp", "n tcp", "xdp µs/rec", "tcp µs/rec", "xdp/tcp",
          "95% CI", "saves", "CI method", "flags"]
    t2 = []
    for f in _cell_figures(rows):
        ratio, lo, hi, method = f["ratio"], f["lo"], f["hi"], f["method"]
        if not f["allowed"]:
            saves = f["why"]
        elif ratio is None:
            saves = "-"
        else:
            # saving = 1 - ratio; its CI is the ratio's CI mirrored.
            saves = f"{(1 - ratio) * 100:.1f} %"
            if lo is not None:
                saves += f" [{(1 - hi) * 100:.1f}, {(1 - lo) * 100:.1f}]"
        if f["col"] != "hw_cpu_us_per_record":
            method += "; attributed (busy - other tasks - steal while the role ran)"
        t2.append([f["rate"], f["size"], len(f["x"]), len(f["t"]), _fmt(stats.mean_ci(f["x"])[0]),
                   _fmt(stats.mean_ci(f["t"])[0]), _fmt(ratio, 3), _ci(lo, hi, 3), saves, method,
                   f"!! {f['nflag']} trial(s) flagged" if f["nflag"] else ""])
    return h2, t2


def answer_lines(rows) -> list[str]:
    """What the run found, in words, per rate x size: both modes' CPU per record with its 95 %
    CI and the ratio, or "not resolved" with what would resolve it. Resolved means both modes
    have an interval above 0 (a single trial per mode has none) and the ratio a bounded CI."""
    out = []
    for f in _cell_figures(rows):
        what = "attributed" if f["col"] == "hw_attr_us_per_record" else "busy - idle"
        head = (f"answer, {f['rate']:g} Hz x {f['size']} B ({what} hardworker CPU per record, "
                f"n xdp {len(f['x'])}, tcp {len(f['t'])}): ")
        res = {m: resolve.resolution(v, f["window_s"]) for m, v in (("xdp", f["x"]), ("tcp", f["t"]))}
        open_ = [m for m in ("xdp", "tcp") if not res[m]["resolved"]]
        if open_:
            out.append(head + "; ".join(f"{m} {res[m]['text']}" for m in open_))
            continue
        figs = ", ".join(f"{m} {res[m]['mean']:.1f} µs [{res[m]['lo']:.1f}, {res[m]['hi']:.1f}]"
                         for m in ("xdp", "tcp"))
        r, lo, hi = f["ratio"], f["lo"], f["hi"]
        if r is None or lo is None:
            out.append(head + figs + "; xdp/tcp not resolved: its 95 % CI is unbounded")
        elif lo <= 1 <= hi:
            out.append(head + figs + f"; xdp/tcp {r:.3f} [{lo:.3f}, {hi:.3f}]: no difference "
                       "resolved between the modes (the CI contains 1)")
        else:
            verdict = (f"xdp saves {(1 - r) * 100:.1f} % [{(1 - hi) * 100:.1f}, {(1 - lo) * 100:.1f}]"
                       if r < 1 else f"xdp costs {(r - 1) * 100:.1f} % [{(lo - 1) * 100:.1f}, "
                       f"{(hi - 1) * 100:.1f}] more than tcp")
            out.append(head + figs + f"; xdp/tcp {r:.3f} [{lo:.3f}, {hi:.3f}]: {verdict}")
    return out


def _idle_table(rows):
    """(3) idle baseline: busy CPU seconds per second of the hardworker's CPU set, no traffic."""
    h3 = ["source", "n", "CPU s/s", "95% CI"]
    idle = [r for r in rows if r.get("mode") == "idle" and _ok(r)
            and r.get("hw_busy_cpu_s") is not None and r.get("duration_s")]
    m, lo, hi, n = stats.mean_ci(r["hw_busy_cpu_s"] / r["duration_s"] for r in idle)
    t3 = [["idle trials (busy / duration)", n, _fmt(m, 4), _ci(lo, hi, 4)]]
    used = [r for r in rows if r.get("mode") in ("xdp", "tcp") and _ok(r)
            and r.get("hw_idle_baseline_cpu_s") is not None and r.get("duration_s")]
    if used:
        m, lo, hi, n = stats.mean_ci(r["hw_idle_baseline_cpu_s"] / r["duration_s"] for r in used)
        t3.append(["baseline subtracted in traffic trials", n, _fmt(m, 4), _ci(lo, hi, 4)])
    return h3, t3


def _deliver_table(rows):
    """(4) what the delivery policy gave the hardworker, and its cost per *sent* record (the
    hardworker's cost of the whole stream) beside its cost per delivered record."""
    h = ["mode", "deliver", "rate Hz", "size B", "n", "CPU µs/sent rec", "95% CI",
         "attributed µs/sent rec", "stream µs/sent rec", "CPU µs/delivered", "sent", "expected", "delivered",
         "skipped", "p99 µs"]
    body = []
    g = defaultdict(list)
    for r in rows:
        if r.get("mode") in ("xdp", "tcp"):
            g[(r["mode"], r.get("deliver") or "all", r.get("rate_hz"), r.get("size_bytes"))].append(r)
    for (mode, deliver, rate, size), grp in sorted(g.items(), key=lambda kv: (
            kv[0][1], kv[0][2] or 0, kv[0][3] or 0, _mode_key(kv[0][0]))):
        ok = [r for r in grp if _ok(r)]
        mean, lo, hi, n = stats.mean_ci(r.get("hw_cpu_us_per_sent_record") for r in ok)
        exp = [r.get("expected") for r in grp]
        attr = stats.mean_ci(r.get("hw_attr_us_per_sent_record") for r in ok)
        strm = stats.mean_ci(r.get("hw_stream_us_per_sent_record") for r in ok)
        body.append([mode, deliver, rate, size, n, _fmt(mean), _ci(lo, hi),
                     _fmt(attr[0]) + (" " + _ci(attr[1], attr[2]) if attr[1] is not None else ""),
                     _fmt(strm[0]) + (" " + _ci(strm[1], strm[2]) if strm[1] is not None else ""),
                     _fmt(stats.mean_ci(r.get("hw_cpu_us_per_record") for r in ok)[0]),
                     _sum(grp, "sent"), "-" if None in exp else sum(exp), _sum(grp, "delivered"),
                     _sum(grp, "skipped"), _fmt(stats.mean_ci(r.get("latency_p99_us") for r in ok)[0], 1)])
    return h, body


_TITLES = {
    "per_mode": "Hardworker cost per mode, rate and size (mean over trials; CPU = busy CPU of "
                "the hardworker's CPU set minus other tasks and the steal while the role ran where traced "
                "(attributed), else minus the idle baseline; median = each trial's median busy period per "
                "record, robust to the host's outliers but on the tracer's clock, so steal included; "
                "mean over trials)",
    "ratio": "xdp / tcp hardworker CPU per record (Fieller 95 % CI, paired by repeat where "
             "possible)",
    "idle": "Idle baseline",
    "deliver": "Delivery policy: what reached the hardworker's decision step, and its CPU per "
               "record sent (the whole stream) and per record delivered",
}


def tables(run, rows, tablefmt: str = "simple") -> str:
    """Header line, the three tables, flags and (lab) footnote as text."""
    md = tablefmt == "github"
    parts = [_header(run).replace("\n", "  \n") if md else _header(run), ""]
    fl = flags(rows)
    if fl:
        parts += [f"!! {len(fl)} trial(s) flagged:"] + [("- " if md else "") + f for f in fl] + [""]
    for name, (headers, body) in table_data(run, rows).items():
        parts.append(("### " if md else "") + _TITLES[name])
        parts.append("")
        # cells are preformatted strings; numbers right-aligned, text columns left
        align = ["left" if h in _TEXT_COLS else "right" for h in headers]
        parts.append(tabulate(body, headers=headers, tablefmt=tablefmt, disable_numparse=True,
                              colalign=align) if body else "(no trials)")
        parts.append("")
    for title, headers, body, notes in components.component_tables(rows, lab=bool(run.get("lab"))):
        parts += [("### " if md else "") + title, ""]
        parts.append(tabulate(body, headers=headers, tablefmt=tablefmt, disable_numparse=True,
                              colalign=["left", "right", "right", "right"]))
        parts += [("- " if md else "") + n for n in notes] + [""]
    wake = wake_cost_line(rows)
    if wake:
        parts += [wake, ""]
    answers = answer_lines(rows)
    if answers:
        parts += [("- " if md else "") + a for a in answers] + [""]
    if run.get("lab"):
        parts.append(("*" + LAB_NOTE + "*") if md else LAB_NOTE)
    return "\n".join(parts).rstrip() + "\n"


def wake_cost_line(rows) -> str | None:
    """The hardworker's sleep/wake cost (median over trials), or None if not measured."""
    vals = sorted(r["hw_wake_cost_us"] for r in rows if r.get("hw_wake_cost_us") is not None)
    if not vals:
        return None
    return (f"hardworker sleep/wake cycle: {stats.percentile(vals, 50):.1f} µs of process CPU "
            f"(median of {len(vals)} trials, measured before each window); a per-record "
            "wake-up costs at least this per record in either mode")


# ----------------------------------------------------------------------------- report.md

def _hosts_table(run, tablefmt) -> str:
    hosts = run.get("hosts") or {}
    if not hosts:
        return "(no host metadata)"
    body = []
    for name, h in sorted(hosts.items()):
        off, unc = h.get("clock_offset_s"), h.get("clock_uncertainty_s")
        clock = "-" if off is None else f"{off * 1e3:+.2f} ms" + (
            "" if unc is None else f" ± {unc * 1e3:.2f}")
        body.append([name, h.get("role", "-"), (h.get("commit") or "-")[:12],
                     h.get("kernel", "-"), h.get("bcc", "-") or "-", clock])
    return tabulate(body, headers=["host", "role", "commit", "kernel", "bcc", "clock offset"],
                    tablefmt=tablefmt, disable_numparse=True)



def write_report(run_dir) -> tuple[str, list[Path]]:
    """Write report.md and the plots into run_dir; return (console text, written paths)."""
    run_dir = Path(run_dir)
    run, rows = load_run(run_dir)
    images = plots.write_all(run_dir, rows)
    console = tables(run, rows, "simple")
    md = [f"# tcpskim run {run.get('run_id')}", "",
          f"status **{run.get('status')}**, started {run.get('started', '-')}, "
          f"ended {run.get('ended', '-')}", ""]
    md.append(tables(run, rows, "github"))
    md += ["## Plots", ""]
    for img in images:
        md += [f"![{img.stem}]({img.name})", ""]
    md += ["## Run metadata", "", "```", json.dumps(run.get("params", {}), indent=2,
                                                   sort_keys=True), "```", "",
           _hosts_table(run, "github"), ""]
    report = run_dir / "report.md"
    fsutil.atomic_write(report, "\n".join(md), fsync=False)
    return console, [report] + images
