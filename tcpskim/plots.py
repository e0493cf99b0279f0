"""The PNGs of a run's report, each function returning what it drew, read back from the axes.

* ``cpu_per_record.png``: mean hardworker CPU per record per mode against rate (95 % CI bars);
* ``components.png``: where that CPU goes, one stacked bar per mode and rate x size x policy
  from the tracepoint attribution (``hw_components_us``), other tasks apart;
* ``cpu_over_time.png``: busy CPU s/s per trial from the hardworker's samples file;
* ``cpu_vs_latency.png``: CPU per sent record against p99 latency per policy and wake-up;
* ``latency_cdf.png``: latency CDF per mode.

Used by ``tcpskim.report.write_report`` (``write_all``) and by tests that check the drawn data.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # never a display: reports are made over SSH and in CI
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullFormatter, ScalarFormatter  # noqa: E402

from roles import fsutil, vocab  # noqa: E402

from . import stats  # noqa: E402
from .components import NOT_RECORD_COST, SMALL_US, not_charged  # noqa: E402
from .trialrows import groups, mode_key, ok  # noqa: E402

MODE_COLORS = {"xdp": "tab:blue", "tcp": "tab:orange", "idle": "tab:gray"}


def cpu_per_record_points(rows) -> dict:
    """{size: {mode: [(rate, mean, lo, hi, n), ...]}} — one point per (rate, mode)."""
    out: dict = {}
    for (mode, rate, size), grp in groups(rows, modes=("xdp", "tcp")).items():
        mean, lo, hi, n = stats.mean_ci(r.get("hw_cpu_us_per_record") for r in grp if ok(r))
        if mean is not None:
            out.setdefault(size, {}).setdefault(mode, []).append((rate, mean, lo, hi, n))
    return out


def plot_cpu_per_record(rows, path) -> dict:
    """Write cpu_per_record.png; return {size: {mode: (xs, ys)}} read back from the axes."""
    points = cpu_per_record_points(rows)
    sizes = sorted(points) or [None]
    rates = {p[0] for s in points.values() for pts in s.values() for p in pts}
    fig, axes = plt.subplots(1, len(sizes), figsize=(5.5 * len(sizes), 4.2), squeeze=False)
    plotted: dict = {}
    for ax, size in zip(axes[0], sizes):
        for mode, pts in sorted(points.get(size, {}).items(), key=lambda kv: mode_key(kv[0])):
            pts = sorted(pts)
            xs = [p[0] for p in pts]
            ys = [p[1] for p in pts]
            err = [[0 if p[2] is None else p[1] - p[2] for p in pts],
                   [0 if p[3] is None else p[3] - p[1] for p in pts]]
            cont = ax.errorbar(xs, ys, yerr=err, marker="o", capsize=4, label=mode,
                               color=MODE_COLORS.get(mode))
            line = cont.lines[0]
            plotted.setdefault(size, {})[mode] = (list(line.get_xdata()),
                                                  list(line.get_ydata()))
        if len(rates) > 1:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.set_xticks(sorted(rates))
        ax.set_xlabel("rate (records/s)")
        ax.set_ylabel("hardworker CPU µs per record (idle subtracted)")
        ax.set_title(f"{size} B records" if size is not None else "no data")
        ax.set_ylim(bottom=0)
        ax.grid(True, which="both", alpha=0.3)
        if points.get(size):
            ax.legend(title="mode (95 % CI)")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return plotted


def _trial_files(run_dir: Path, trial: str, pattern: str) -> list[Path]:
    return sorted((run_dir / trial).glob(f"*/{pattern}"))


def read_samples(path) -> list[tuple[float, float]]:
    """[(t, cpu_busy_s)] from a samples.csv, skipping malformed lines."""
    out = []
    with open(path, newline="") as fh:
        for rec in csv.DictReader(fh):
            try:
                out.append((float(rec["t"]), float(rec["cpu_busy_s"])))
            except (KeyError, TypeError, ValueError):
                continue
    return sorted(out)


def plot_cpu_over_time(run_dir: Path, rows, path) -> int:
    """Write cpu_over_time.png (busy CPU s/s per trial); return the number of lines drawn."""
    fig, ax = plt.subplots(figsize=(9, 4.5))
    drawn = 0
    seen_modes = set()
    for r in sorted(rows, key=lambda r: r["trial"]):
        for f in _trial_files(run_dir, r["trial"], "hardworker-*.samples.csv"):
            s = read_samples(f)
            if len(s) < 2:
                continue
            t0 = s[0][0]
            xs, ys = [], []
            for (ta, ca), (tb, cb) in zip(s, s[1:]):
                if tb > ta:
                    xs.append((ta + tb) / 2 - t0)
                    ys.append((cb - ca) / (tb - ta))
            mode = r.get("mode")
            ax.plot(xs, ys, color=MODE_COLORS.get(mode, "black"), alpha=0.6, lw=1,
                    linestyle="-" if ok(r) else ":",
                    label=None if mode in seen_modes else mode)
            seen_modes.add(mode)
            drawn += 1
    ax.set_xlabel("time since first sample (s)")
    ax.set_ylabel("hardworker busy CPU (CPU s / s)")
    ax.set_title("hardworker busy CPU over time, one line per trial (dotted: failed)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    if drawn:
        ax.legend(title="mode")
    else:
        ax.text(0.5, 0.5, "no samples", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return drawn


def read_latencies(path) -> list[float]:
    out = []
    for line in Path(path).read_text().split():
        try:
            out.append(float(line))
        except ValueError:
            continue
    return out


def plot_latency_cdf(run_dir: Path, rows, path) -> bool:
    """Write latency_cdf.png (CDF per mode, per rate x size when several); False if no data."""
    pooled = defaultdict(list)
    for r in rows:
        if not ok(r) or r.get("mode") not in ("xdp", "tcp"):
            continue
        for f in _trial_files(run_dir, r["trial"], "hardworker-*.latency_us.txt"):
            pooled[(r["mode"], r.get("rate_hz"), r.get("size_bytes"))].extend(read_latencies(f))
    pooled = {k: sorted(v) for k, v in pooled.items() if v}
    if not pooled:
        return False
    cells = sorted({(k[1], k[2]) for k in pooled}, key=lambda c: (c[0] or 0, c[1] or 0))
    styles = ["-", "--", ":", "-."]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for (mode, rate, size), vals in sorted(pooled.items(),
                                           key=lambda kv: (mode_key(kv[0][0]), kv[0][1] or 0)):
        n = len(vals)
        # at most ~2000 points per line: quantiles, not raw values
        qs = [i / 2000 * 100 for i in range(2001)] if n > 2001 else None
        xs = [stats.percentile(vals, q) for q in qs] if qs else vals
        ys = [q / 100 for q in qs] if qs else [(i + 1) / n for i in range(n)]
        label = mode if len(cells) == 1 else f"{mode} {rate} Hz {size} B"
        ax.plot(xs, ys, color=MODE_COLORS.get(mode), drawstyle="steps-post",
                linestyle=styles[cells.index((rate, size)) % len(styles)], label=label)
    if min(v[0] for v in pooled.values()) > 0:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("latency (µs, hardworker-0.latency_us.txt)")
    ax.set_ylabel("fraction of records")
    ax.set_title("latency CDF (all ok trials pooled)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return True


def cpu_vs_latency_points(rows) -> dict:
    """{label: [(p99 latency µs, CPU µs per sent record)]} per mode x policy x wake-up x rate."""
    pts = defaultdict(list)
    for r in rows:
        if r.get("mode") in ("xdp", "tcp") and ok(r) and r.get("latency_p99_us") is not None \
                and r.get("hw_cpu_us_per_sent_record") is not None:
            label = (f"{r['mode']} {r.get('deliver') or 'all'} {vocab.wakeup_text(r.get('wakeup'))}"
                     f" {r.get('rate_hz'):g} Hz")
            pts[label].append((r["latency_p99_us"], r["hw_cpu_us_per_sent_record"]))
    return dict(pts)


def plot_cpu_vs_latency(rows, path) -> bool:
    """Hardworker CPU per sent record against p99 latency of delivered records, one marker per
    trial and mode x policy x wake-up x rate: the trade-off each choice makes. False: no data."""
    pts = cpu_vs_latency_points(rows)
    if not pts:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, xy in sorted(pts.items()):
        ax.scatter([x for x, _ in xy], [y for _, y in xy], label=label,
                   marker="o" if label.startswith("xdp") else "s")
    ax.set_xscale("log")
    ax.set_xlabel("p99 latency of delivered records (µs, log)")
    ax.set_ylabel("hardworker CPU µs per sent record")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    _save(fig, path)
    plt.close(fig)
    return True


# Segment order of a bar, bottom up: the role, what the XDP program and the softirqs did for
# it, interrupts, then what no tracepoint saw. Other tasks and the steal while the role ran
# are drawn apart (hatched, on top): the records are not charged for them.
_KIND_ORDER = ("role", "xdp program", "softirq ", "irq ", "ipi", "idle exit", "idle loop", "unattributed")
OTHER_TASKS = "other tasks, steal (not charged)"
SMALLER = "smaller parts"


def _kind_rank(name: str) -> tuple[int, str]:
    for i, prefix in enumerate(_KIND_ORDER):
        if name.startswith(prefix):
            return i, name
    return len(_KIND_ORDER), name


def component_bars(rows) -> dict:
    """{(cell label, mode): {component: mean µs per record}} over the ok trials with attribution.

    A cell is rate x size x delivery policy x wake-up; a component a trial did not see counts
    0 for it, so a bar's parts sum to the mean of the trials' totals. Other tasks ("task *")
    and the steal while the role ran are summed into OTHER_TASKS; idle is not busy time and is
    left out. The role is split into "role user" and "role system" in the trials with
    ``hw_role_user_share`` (its tick counts)."""
    cells: dict = defaultdict(list)
    for r in rows:
        if r.get("mode") in ("xdp", "tcp") and ok(r) and r.get("hw_components_us"):
            label = (f"{r.get('rate_hz'):g} Hz x {r.get('size_bytes')} B\n"
                     f"{r.get('deliver') or 'all'}, {vocab.wakeup_text(r.get('wakeup'))}")
            cells[(r.get("rate_hz") or 0, r.get("size_bytes") or 0, label, mode_key(r["mode"]), r["mode"])].append(r)
    out = {}
    for (_rate, _size, label, _key, mode), grp in sorted(cells.items()):
        sums: dict = defaultdict(float)
        for r in grp:
            for name, us in r["hw_components_us"].items():
                if name not in NOT_RECORD_COST and us is not None:
                    sums[OTHER_TASKS if not_charged(name) else name] += us
            user = r.get("hw_role_user_share")
            if user is not None and "role" in r["hw_components_us"]:  # split by the role's ticks
                role = r["hw_components_us"]["role"]
                sums["role"] -= role
                sums["role user"] += role * user
                sums["role system"] += role * (1 - user)
        out[(label, mode)] = {k: v / len(grp) for k, v in sums.items()
                              if k != "role" or any(r.get("hw_role_user_share") is None for r in grp)}
    return out


def _segments(bars: dict) -> list[str]:
    """The stacked components of the figure, bottom up; parts under SMALL_US in every bar are
    merged into SMALLER."""
    names = {n for b in bars.values() for n in b if n != OTHER_TASKS}
    big = sorted((n for n in names if max(abs(b.get(n, 0.0)) for b in bars.values()) >= SMALL_US),
                 key=_kind_rank)
    return big + ([SMALLER] if names - set(big) else [])


def plot_components(rows, path) -> dict | None:
    """Write components.png; return {(cell, mode): {segment: height}} read back from the
    axes, or None (nothing written) without attribution data."""
    bars = component_bars(rows)
    if not bars:
        return None
    segs = _segments(bars)
    keys = list(bars)
    heights = {s: [b.get(s, 0.0) if s != SMALLER else sum(v for n, v in b.items() if n not in segs
                                                           and n != OTHER_TASKS) for b in bars.values()]
               for s in segs}
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(keys) + 4.5), 5.0))
    xs = list(range(len(keys)))
    bottom, below = [0.0] * len(keys), [0.0] * len(keys)
    cmap = plt.get_cmap("tab20")
    for i, s in enumerate(segs):
        h = heights[s]
        # a negative part (the unattributed rest when tracing saw more than the idle
        # accounting) hangs below 0, so the bar's parts still sum to its total
        ax.bar(xs, h, bottom=[b if v >= 0 else n for v, b, n in zip(h, bottom, below)], label=s,
               color={"unattributed": "darkgray", SMALLER: "gainsboro"}.get(s, cmap(i % 20)),
               edgecolor="white", linewidth=0.5)
        bottom = [b + max(v, 0.0) for b, v in zip(bottom, h)]
        below = [n + min(v, 0.0) for n, v in zip(below, h)]
    other = [b.get(OTHER_TASKS, 0.0) for b in bars.values()]
    if any(other):
        ax.bar(xs, other, bottom=bottom, label=OTHER_TASKS, fill=False, hatch="//",
               edgecolor="dimgray", linewidth=0.5)
        top = max(bottom)
        if top > 0 and max(b + o for b, o in zip(bottom, other)) > 1.6 * top:
            # other tasks would squash the records' parts (a shared machine): cut them off
            ax.set_ylim(min(min(below), 0.0) * 1.1, top * 1.6)
            for x, b, o in zip(xs, bottom, other):
                if b + o > top * 1.6:
                    ax.text(x, top * 1.55, f"not charged {o:.0f} µs ↑", ha="center", va="top", fontsize=7,
                            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8})
    ax.set_xticks(xs, [f"{mode}\n{label}" for label, mode in keys], fontsize=7)
    ax.set_ylabel("hardworker CPU µs per record")
    ax.set_title("where the hardworker CPU goes (tracepoint attribution, mean over trials)", fontsize=10)
    ax.axhline(0, color="black", linewidth=0.5)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    drawn = _bars_drawn(ax, keys)
    _save(fig, path)
    plt.close(fig)
    return drawn


def _bars_drawn(ax, keys) -> dict:
    """{(cell, mode): {segment: height}} from the axes' bar containers."""
    out: dict = {k: {} for k in keys}
    for cont in ax.containers:
        for key, patch in zip(keys, cont.patches):
            out[key][cont.get_label()] = patch.get_height()
    return out


def write_all(run_dir, rows) -> list[Path]:
    """Write the PNGs into run_dir; returns their paths (the optional ones only with data; a
    stale one from an earlier report of this folder is removed)."""
    run_dir = Path(run_dir)
    files = []
    plot_cpu_per_record(rows, run_dir / "cpu_per_record.png")
    files.append(run_dir / "cpu_per_record.png")
    optional = (("components.png", lambda p: plot_components(rows, p) is not None),
                ("cpu_over_time.png", lambda p: plot_cpu_over_time(run_dir, rows, p) >= 0),
                ("cpu_vs_latency.png", lambda p: plot_cpu_vs_latency(rows, p)),
                ("latency_cdf.png", lambda p: plot_latency_cdf(run_dir, rows, p)))
    for name, draw in optional:
        p = run_dir / name
        if draw(p):
            files.append(p)
        elif p.exists():
            p.unlink()
    return files

def _save(fig, path) -> None:
    """savefig through a temporary file: an interrupted render never leaves half a PNG."""
    path = Path(path)
    with fsutil.replacing(path, suffix=path.suffix, fsync=False) as tmp:  # matplotlib picks the format by suffix
        fig.savefig(tmp, dpi=100)

