"""tcpskim.report on fake run folders (tests/reportdata.py): tables, flags, plots, report.md."""

from __future__ import annotations

import json
import math
import re

import pytest

from reportdata import COMPONENTS_US, add_components, make_run
from tcpskim import plots, report, stats
from tcpskim.components import not_charged

PNG_SIG = b"\x89PNG\r\n\x1a\n"


def _expected_ratio_ci(a, b):
    """Fieller for independent samples, textbook form (independent of stats.ratio_ci)."""
    na, nb = len(a), len(b)
    ma, mb = sum(a) / na, sum(b) / nb
    r = ma / mb
    va = sum((x - ma) ** 2 for x in a) / (na - 1) / na
    vb = sum((x - mb) ** 2 for x in b) / (nb - 1) / nb
    v = va + r * r * vb
    df = v * v / (va * va / (na - 1) + (r * r * vb) ** 2 / (nb - 1))
    t = stats.t_quantile(0.95, df)
    g = t * t * vb / mb**2
    half = t / mb * math.sqrt(va * (1 - g) + r * r * vb)
    return (r - half) / (1 - g), (r + half) / (1 - g)


def _expected_paired_ci(a, shift):
    """Paired Fieller when tcp = xdp + shift in every repeat (independent of stats).

    Then a_i - R b_i = (1 - R) a_i - R shift, whose standard error is |1 - R| k with
    k = t(n-1) s_a / sqrt(n), so |ma - R mb| <= k |1 - R| has the roots (ma -+ k)/(mb -+ k).
    """
    n = len(a)
    ma = sum(a) / n
    mb = ma + shift
    s = math.sqrt(sum((x - ma) ** 2 for x in a) / (n - 1))
    k = stats.t_quantile(0.95, n - 1) * s / math.sqrt(n)
    return (ma - k) / (mb - k), (ma + k) / (mb + k)


def _md_ratio_row(md, rate, size):
    """The github-table row of the ratio table for rate x size."""
    for line in md.splitlines():
        if re.match(rf"\| +{rate} +\| +{size} +\|", line):
            return line
    raise AssertionError(f"no ratio row {rate} x {size} in:\n{md}")


def _line(text, *startswith):
    """The table row starting with the given cells (whitespace-separated)."""
    for line in text.splitlines():
        cells = line.split()
        if cells[:len(startswith)] == [str(s) for s in startswith]:
            return line
    raise AssertionError(f"no row {startswith} in:\n{text}")


@pytest.fixture
def clean_run(tmp_path):
    return make_run(tmp_path)


def test_write_report_tables(clean_run):
    text, files = report.write_report(clean_run)
    # header line
    assert "run 20240101T000000-test" in text and "status ok" in text
    assert "wakeup=batch:5ms" in text and "repeat=3" in text
    # per-mode table: both modes at both rates, mean and hand-computed t CI (t(2)=4.302653)
    for rate in (1000, 2000):
        xdp = _line(text, "xdp", rate, 1024)
        tcp = _line(text, "tcp", rate, 1024)
        assert " 3 " in xdp and "10.00" in xdp and "[7.52, 12.48]" in xdp
        assert "20.00" in tcp and "[17.52, 22.48]" in tcp
        assert "450.0" in xdp  # BPF ns per packet
        # tcp: process 0.8 x (19, 20, 21), the rest (CPU - process) 0.2 x the same
        assert re.search(r"16\.00 ± 1\.99 +4\.00 ± 0\.50 +- ", tcp)
        n = rate * 2 * 3  # sent/delivered/logged, then lost/dup/corrupt: 3 trials x 2 s
        assert re.search(rf" {n} +{n} +{n} +0 +0 +0 ", xdp)
    # ratio table: 0.500, paired Fieller CI (xdp and tcp of a repeat move together), saves 50 %
    lo, hi = _expected_paired_ci([9, 10, 11], 10)
    assert (lo, hi) == (pytest.approx(0.42909, abs=1e-5), pytest.approx(0.55524, abs=1e-5))
    ind_lo, ind_hi = _expected_ratio_ci([9, 10, 11], [19, 20, 21])
    assert f"[{ind_lo:.3f}, {ind_hi:.3f}]" not in text
    for rate in (1000, 2000):
        row = _line(text, rate, 1024)
        assert "0.500" in row
        assert f"[{lo:.3f}, {hi:.3f}]" in row
        assert f"50.0 % [{(1 - hi) * 100:.1f}, {(1 - lo) * 100:.1f}]" in row
        assert "paired over 3 repeats" in row
    # idle baseline 0.02 CPU s/s
    assert "0.0200" in _line(text, "idle", "trials")
    # nothing flagged, lab footnote present
    assert "!!" not in text
    assert report.LAB_NOTE in text


def test_report_md_and_pngs(clean_run):
    _text, files = report.write_report(clean_run)
    md_path = clean_run / "report.md"
    assert md_path in files
    md = md_path.read_text()
    for name in ("cpu_per_record.png", "cpu_over_time.png", "latency_cdf.png"):
        p = clean_run / name
        assert p in files
        assert f"]({name})" in md
        data = p.read_bytes()
        assert data[:8] == PNG_SIG and len(data) > 5000
    # github tables, metadata
    assert re.search(r"^\| mode +\| +rate Hz", md, re.M) and "|--" in md
    assert re.search(r"\| +0\.500 +\|", md) and "50.0 %" in md
    lo, hi = _expected_paired_ci([9, 10, 11], 10)
    row = _md_ratio_row(md, 1000, 1024)
    assert f"| [{lo:.3f}, {hi:.3f}] |" in row and "| paired over 3 repeats |" in row
    assert "6.1.0-lab" in md and "0123456789ab" in md and "hardworker" in md
    assert report.LAB_NOTE in md


def test_cpu_per_record_one_point_per_rate_and_mode(clean_run, tmp_path):
    _run, rows = report.load_run(clean_run)
    plotted = plots.plot_cpu_per_record(rows, tmp_path / "c.png")
    assert list(plotted) == [1024]
    assert set(plotted[1024]) == {"xdp", "tcp"}
    xs, ys = plotted[1024]["xdp"]
    assert xs == [1000, 2000] and ys == pytest.approx([10, 10])
    xs, ys = plotted[1024]["tcp"]
    assert xs == [1000, 2000] and ys == pytest.approx([20, 20])
    pts = plots.cpu_per_record_points(rows)
    assert pts[1024]["xdp"][0][2] == pytest.approx(7.515862, abs=1e-6)  # CI lower bound


def test_cpu_per_record_subplot_per_size(tmp_path):
    run_dir = make_run(tmp_path, sizes=(64, 1024), rates=(500,))
    _run, rows = report.load_run(run_dir)
    plotted = plots.plot_cpu_per_record(rows, tmp_path / "c.png")
    assert sorted(plotted) == [64, 1024]
    for size in (64, 1024):
        for mode in ("xdp", "tcp"):
            assert plotted[size][mode][0] == [500]


def test_cpu_over_time_one_line_per_trial(clean_run, tmp_path):
    _run, rows = report.load_run(clean_run)
    assert plots.plot_cpu_over_time(clean_run, rows, tmp_path / "t.png") == len(rows) == 15
    # the derivative of the fake cumulative counter is the configured busy fraction
    tcp = next(r for r in rows if r["mode"] == "tcp" and r["rate_hz"] == 2000 and r["repeat"] == 1)
    s = plots.read_samples(next((clean_run / tcp["trial"]).glob("*/hardworker-*.samples.csv")))
    (t0, c0), (t1, c1) = s[0], s[-1]
    assert (c1 - c0) / (t1 - t0) == pytest.approx(0.02 + 20e-6 * 2000, rel=1e-3)


def test_flags_lost_dup_failed(tmp_path):
    # trial indices: 0 idle, 1 xdp@1000, 2 tcp@1000, 3 xdp@2000, 4 tcp@2000, 5 idle, ...
    run_dir = make_run(tmp_path, lost={2: 5}, duplicates={3: 1}, failed={4}, lab=False)
    text, _files = report.write_report(run_dir)
    assert "!! 3 trial(s) flagged" in text
    assert re.search(r"!! trial 002-tcp-1000-1024-r0 .*LOST 5", text)
    assert re.search(r"!! trial 003-xdp-2000-1024-r0 .*DUP 1", text)
    assert re.search(r"!! trial 004-tcp-2000-1024-r0 .*FAILED", text)
    assert "!! LOST 5" in _line(text, "tcp", 1000, 1024)
    assert "!! DUP 1" in _line(text, "xdp", 2000, 1024)
    tcp2000 = _line(text, "tcp", 2000, 1024)
    assert "!! FAILED 1" in tcp2000 and " 2 " in tcp2000  # failed trial left out of n
    assert "20.50" in tcp2000  # mean of the two ok trials (20, 21)
    assert "!! 1 trial(s) flagged" in _line(text, 1000, 1024)
    md = (run_dir / "report.md").read_text()
    assert "LOST 5" in md and "FAILED" in md
    assert report.LAB_NOTE not in text and report.LAB_NOTE not in md


def test_failed_run_header(tmp_path):
    run_dir = make_run(tmp_path, status="failed")
    text, _ = report.write_report(run_dir)
    assert "status failed" in text and "FAILURE: trial 004 timed out" in text


def test_csv_fallback_same_tables(clean_run):
    run, rows_json = report.load_run(clean_run)
    expected = report.tables(run, rows_json)
    (clean_run / "summary.json").unlink()
    run, rows_csv = report.load_run(clean_run)
    assert rows_csv[0]["hw_cpu_us_per_record"] is None  # idle row, empty cell
    assert isinstance(rows_csv[1]["rate_hz"], int)
    assert report.tables(run, rows_csv) == expected


def test_no_latency_no_samples(tmp_path):
    run_dir = make_run(tmp_path, latency=False, samples=False, idle=False)
    text, files = report.write_report(run_dir)
    assert not (run_dir / "latency_cdf.png").exists()
    assert [f.name for f in files] == ["report.md", "cpu_per_record.png", "cpu_over_time.png"]
    assert "latency_cdf" not in (run_dir / "report.md").read_text()
    assert "0.500" in text


def test_empty_run_folder(tmp_path):
    run_dir = tmp_path / "broken"
    run_dir.mkdir()
    text, files = report.write_report(run_dir)
    assert "run broken" in text and "(no trials)" in text
    assert (run_dir / "report.md").exists()


def test_single_repeat_has_no_ci(tmp_path):
    run_dir = make_run(tmp_path, repeat=1, rates=(1000,))
    text, files = report.write_report(run_dir)
    row = _line(text, 1000, 1024)
    # k=0: xdp 9 / tcp 19; n=1 gives no CI at all (and no CI column in the per-mode table)
    assert row.split() == ["1000", "1024", "1", "1", "9.00", "19.00", "0.474", "-", "52.6", "%",
                           "independent", "(Fieller)"]
    assert "-" in _line(text, "xdp", 1000, 1024).split()[5]


def test_ratio_paired_over_the_complete_repeats(tmp_path):
    # trial 1 = xdp r0 failed: repeats 1 and 2 still pair (xdp 10, 11 / tcp 20, 21)
    run_dir = make_run(tmp_path, rates=(1000,), failed={1})
    text, _files = report.write_report(run_dir)
    lo, hi = _expected_paired_ci([10, 11], 10)
    row = _line(text, 1000, 1024)
    assert row.split()[:4] == ["1000", "1024", "2", "3"]
    assert f"{10.5 / 20.5:.3f}" in row  # the ratio over the pairs, not 10.5 / 20
    assert f"[{lo:.3f}, {hi:.3f}]" in row and "paired over 2 repeats" in row
    md_row = _md_ratio_row((run_dir / "report.md").read_text(), 1000, 1024)
    assert f"| [{lo:.3f}, {hi:.3f}] |" in md_row and "| paired over 2 repeats |" in md_row


def test_ratio_falls_back_to_independent_without_pairs(tmp_path):
    # trials 1 = xdp r0 and 5 = tcp r1 failed: only repeat 2 has both modes -> one pair
    run_dir = make_run(tmp_path, rates=(1000,), failed={1, 5})
    text, _files = report.write_report(run_dir)
    lo, hi = _expected_ratio_ci([10, 11], [19, 21])
    row = _line(text, 1000, 1024)
    assert row.split()[:4] == ["1000", "1024", "2", "2"]
    assert f"{10.5 / 20:.3f}" in row
    assert f"[{lo:.3f}, {hi:.3f}]" in row and "independent (Fieller)" in row
    md_row = _md_ratio_row((run_dir / "report.md").read_text(), 1000, 1024)
    assert f"| [{lo:.3f}, {hi:.3f}] |" in md_row and "| independent (Fieller) |" in md_row


def test_xdp_tcp_ratio_pairs_only_single_trials_per_repeat():
    rows = [{"mode": "xdp", "repeat": 0, "hw_cpu_us_per_record": 9.0},
            {"mode": "tcp", "repeat": 0, "hw_cpu_us_per_record": 19.0},
            {"mode": "xdp", "repeat": 1, "hw_cpu_us_per_record": 11.0},
            {"mode": "tcp", "repeat": 1, "hw_cpu_us_per_record": 21.0},
            {"mode": "idle", "repeat": 1, "hw_cpu_us_per_record": None},
            {"mode": "tcp", "repeat": 2, "hw_cpu_us_per_record": 20.0, "status": "failed"}]
    r, lo, hi, method = report.xdp_tcp_ratio(rows)
    assert method == "paired over 2 repeats"
    assert (r, lo, hi) == stats.paired_ratio_ci([(9, 19), (11, 21)])
    # two xdp values in repeat 1 (or no repeat column): not paired
    extra = rows + [{"mode": "xdp", "repeat": 1, "hw_cpu_us_per_record": 12.0}]
    assert report.xdp_tcp_ratio(extra)[3] == "independent (Fieller)"
    no_rep = [{k: v for k, v in r.items() if k != "repeat"} for r in rows]
    assert report.xdp_tcp_ratio(no_rep) == (*stats.ratio_ci([9, 11], [19, 21]),
                                            "independent (Fieller)")


def test_flags_busy_idle_baseline_and_negative_cpu(tmp_path):
    # Something else ran on the hardworker CPU during an idle trial (87 % busy): the baseline
    # and every figure subtracting it are wrong, and the report must say so.
    run_dir = make_run(tmp_path, lab=False)
    doc = json.loads((run_dir / "summary.json").read_text())
    idle = next(r for r in doc["rows"] if r["mode"] == "idle")
    idle["hw_busy_cpu_s"] = 0.87 * idle["duration_s"]
    xdp = next(r for r in doc["rows"] if r["mode"] == "xdp")
    xdp["hw_cpu_us_per_record"] = -396.9
    (run_dir / "summary.json").write_text(json.dumps(doc))
    text, _files = report.write_report(run_dir)
    assert "!! 2 trial(s) flagged" in text
    assert re.search(rf"!! trial {idle['trial']} .*IDLE BUSY 87% \(other work on the hardworker CPU\?\)", text)
    assert re.search(rf"!! trial {xdp['trial']} .*NEGATIVE CPU", text)
    # a normal idle trial (2 % busy in make_run) is not flagged
    assert sum("IDLE BUSY" in line for line in text.splitlines()) == 1


def test_wake_cost_line(tmp_path):
    run_dir = make_run(tmp_path, lab=False)
    text, _ = report.write_report(run_dir)
    assert "sleep/wake cycle" not in text  # runs from before the column: no line
    doc = json.loads((run_dir / "summary.json").read_text())
    for i, r in enumerate(doc["rows"]):
        r["hw_wake_cost_us"] = 10.0 + i  # 15 trials: 10..24, median 17
    (run_dir / "summary.json").write_text(json.dumps(doc))
    text, _ = report.write_report(run_dir)
    assert "hardworker sleep/wake cycle: 17.0 µs of process CPU (median of 15 trials" in text
    assert "sleep/wake cycle: 17.0" in (run_dir / "report.md").read_text()


def test_ratio_not_resolved_prints_what_would_resolve_it(tmp_path):
    # The demo: negative means; and a CI spanning 0: no ratio, no saving anywhere.
    run_dir = make_run(tmp_path, lab=False, rates=(1000,), cpu_us={"xdp": 5.0, "tcp": 20.0},
                       noise=(-60.0, 0.0, 60.0))
    text, _ = report.write_report(run_dir)
    row = _line(text, 1000, 1024)
    assert "not resolved: ±" in row and "µs per record; about" in row and "would resolve it" in row
    assert row.split()[6:8] == ["-", "-"] and "%" not in row  # no ratio, no CI, no saving


def test_component_table_side_by_side_with_lab_artifact(tmp_path):
    run_dir = make_run(tmp_path, lab=True, rates=(2000,))
    doc = json.loads((run_dir / "summary.json").read_text())
    for r in doc["rows"]:
        if r["mode"] == "xdp":
            r["hw_components_us"] = {"role": 8.0, "softirq NET_RX": 11.0, "xdp program": 0.5,
                                     "idle": 400.0, "softirq RCU": 0.01}
            r["hw_events_per_record"] = {"ipi_sent": 1.0, "wakeups": 0.05}
        elif r["mode"] == "tcp":
            r["hw_components_us"] = {"role": 6.0, "softirq NET_RX": 3.0, "idle": 420.0}
            r["hw_events_per_record"] = {"ipi_sent": 0.06, "wakeups": 0.05}
    (run_dir / "summary.json").write_text(json.dumps(doc))
    text, _ = report.write_report(run_dir)
    assert "Where the hardworker CPU goes, µs per record: 2000 Hz x 1024 B" in text
    assert _line(text, "softirq", "NET_RX").split()[2:] == ["11.00", "3.00", "8.00"]
    assert _line(text, "role").split()[1:] == ["8.00", "6.00", "2.00"]
    assert _line(text, "=", "busy,").split()[-3:] == ["19.51", "9.00", "10.51"]  # idle not in it
    assert "1 smaller parts" in text
    assert _line(text, "IPIs", "sent", "per").split()[-3:] == ["1.000", "0.060", "0.940"]
    assert "IPIs sent per record: xdp 1.00, tcp 0.06 - the veth bounce through the bridge" in text
    # the CSV keeps the dicts as JSON: the same table from summary.csv
    (run_dir / "summary.json").unlink()
    from tcpskim.results import COLUMNS
    import csv
    with open(run_dir / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows({k: json.dumps(v) if isinstance(v, dict) else v for k, v in r.items() if k in COLUMNS}
                    for r in doc["rows"])
    assert "IPIs sent per record: xdp 1.00" in report.write_report(run_dir)[0]


def test_delivery_policy_table_and_cpu_vs_latency_plot(tmp_path):
    run_dir = make_run(tmp_path, rates=(50,))
    doc = json.loads((run_dir / "summary.json").read_text())
    for r in doc["rows"]:
        if r["mode"] in ("xdp", "tcp"):
            r.update(deliver="filter:outside:-1500..1500", expected=r["delivered"] // 100,
                     skipped=r["sent"] - r["delivered"] // 100,
                     hw_cpu_us_per_sent_record=12.5 if r["mode"] == "xdp" else 40.0)
    (run_dir / "summary.json").write_text(json.dumps(doc))
    text, files = report.write_report(run_dir)
    assert "Delivery policy" in text and "filter:outside:-1500..1500" in text
    line = next(x for x in text.splitlines() if x.strip().startswith("xdp") and "filter:" in x)
    assert "12.50" in line
    assert run_dir / "cpu_vs_latency.png" in files and (run_dir / "cpu_vs_latency.png").stat().st_size > 1000


def test_no_policy_table_without_a_policy(clean_run):
    text, files = report.write_report(clean_run)
    assert "Delivery policy" not in text and clean_run / "cpu_vs_latency.png" not in files


def test_component_bars_sum_to_the_rows_component_totals(tmp_path):
    run_dir = make_run(tmp_path, rates=(50, 2000), lab=True)
    rows = add_components(run_dir)
    _run, loaded = report.load_run(run_dir)
    drawn = plots.plot_components(loaded, tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:8] == PNG_SIG
    cell = lambda r: f"{r['rate_hz']:g} Hz x 1024 B\nall, batch:5ms"  # noqa: E731
    assert sorted(drawn) == sorted((cell(r), m) for r in rows if r["rate_hz"] in (50, 2000)
                                   for m in ("xdp", "tcp") if r["mode"] == m and r["repeat"] == 0)
    for (label, mode), parts in drawn.items():
        mine = [r for r in rows if r["mode"] == mode and cell(r) == label]
        assert len(mine) == 3
        total = sum(sum(v for k, v in r["hw_components_us"].items() if k != "idle") for r in mine) / 3
        tasks = sum(sum(v for k, v in r["hw_components_us"].items() if not_charged(k)) for r in mine) / 3
        assert sum(parts.values()) == pytest.approx(total)  # every part drawn, idle left out
        assert parts[plots.OTHER_TASKS] == pytest.approx(tasks)  # apart (tasks, steal), not charged to records
        charged = sum(v for k, v in parts.items() if k != plots.OTHER_TASKS)
        assert charged == pytest.approx(sum(r["hw_attr_us_per_record"] for r in mine) / 3)
        assert parts["softirq TIMER"] == pytest.approx(0.6 / 3)  # absent in two trials: 0 there
        assert "softirq RCU" not in parts and parts[plots.SMALLER] > 0  # under 0.05 µs: merged
    assert drawn[(cell(rows[1]), "tcp")]["unattributed"] == pytest.approx(-0.3)  # below 0, kept
    assert "xdp program" not in {k for k, v in drawn[(cell(rows[1]), "tcp")].items() if v}
    # the component table's total is the bars' total (a part one trial missed counts 0 there)
    busy = _line(report.write_report(run_dir)[0], "=", "busy,").split()[-3:-1]
    assert [float(x) for x in busy] == pytest.approx(
        [sum(drawn[(cell(rows[1]), m)].values()) for m in ("xdp", "tcp")], abs=0.006)


def test_components_png_beside_the_others(tmp_path):
    run_dir = make_run(tmp_path, rates=(50,))
    _text, files = report.write_report(run_dir)
    assert run_dir / "components.png" not in files  # no attribution: no bars
    add_components(run_dir)
    _text, files = report.write_report(run_dir)
    assert run_dir / "components.png" in files and "](components.png)" in (run_dir / "report.md").read_text()
    (run_dir / "summary.json").unlink()
    (run_dir / "summary.csv").unlink()
    _text, files = report.write_report(run_dir)
    assert not (run_dir / "components.png").exists()  # stale plot removed


def test_measurement_cost_per_mode_against_the_target(tmp_path):
    run_dir = make_run(tmp_path, rates=(2000,), lab=False)
    add_components(run_dir)
    doc = json.loads((run_dir / "summary.json").read_text())
    for r in doc["rows"]:
        if r["mode"] in ("xdp", "tcp"):
            # share of busy time as the host measured it: small when other tasks fill the CPU
            r["hw_tracer_cost_share"] = 0.0002
            # of the records' (attributed) CPU: xdp 0.4/0.5/0.6 % (mean 0.5 %), tcp 2.5 %
            r["hw_tracer_cost_us"] = r["hw_attr_us_per_record"] * (
                0.025 if r["mode"] == "tcp" else 0.004 + 0.001 * r["repeat"])
    (run_dir / "summary.json").write_text(json.dumps(doc))
    text, _ = report.write_report(run_dir)
    xdp_us = stats.mean_ci(r["hw_tracer_cost_us"] for r in doc["rows"] if r["mode"] == "xdp")[0]
    for out in (text, (run_dir / "report.md").read_text()):
        row = _line(out.replace("|", " "), "measurement's", "own", "cost,")
        assert "% of hardworker CPU (target <= 2%)" in row
        assert row.split()[-5:] == ["0.50", "%", "2.50", "%", "-"]
        assert _line(out.replace("|", " "), "measurement's", "own", "cost", "µs").split()[-3] == f"{xdp_us:.2f}"
        assert "tcp: the measurement cost 2.5% of the hardworker CPU, above the 2% target" in out
        assert "xdp: the measurement cost" not in out
    # without the attributed figure: the host's share of busy time
    from tcpskim.components import cost_share
    assert cost_share({"hw_tracer_cost_us": 1.0, "hw_tracer_cost_share": 0.01}) == 0.01
    assert cost_share({"hw_tracer_cost_us": 1.0, "hw_attr_us_per_record": 50.0}) == pytest.approx(0.02)
    assert cost_share({"hw_tracer_cost_us": 1.0, "hw_attr_us_per_record": -5.0, "hw_tracer_cost_share": 0.01}) is None


def _answer(text):
    return [line for line in text.splitlines() if line.startswith("answer, ")]


def test_answer_says_what_the_run_found(tmp_path):
    text, _ = report.write_report(make_run(tmp_path / "a", rates=(50,)))
    assert _answer(text) == [
        "answer, 50 Hz x 1024 B (busy - idle hardworker CPU per record, n xdp 3, tcp 3): xdp 10.0 µs "
        "[7.5, 12.5], tcp 20.0 µs [17.5, 22.5]; xdp/tcp 0.500 [0.429, 0.555]: xdp saves 50.0 % [44.5, 57.1]"]
    assert "- answer, 50 Hz" in (tmp_path / "a" / "20240101T000000-test" / "report.md").read_text()
    text, _ = report.write_report(make_run(tmp_path / "b", rates=(50,), cpu_us={"xdp": 20.0, "tcp": 10.0}))
    lo, hi = sorted(_expected_paired_ci([19, 20, 21], -10))  # the helper's roots, in order
    assert _answer(text)[0].endswith(f"xdp/tcp 2.000 [{lo:.3f}, {hi:.3f}]: xdp costs 100.0 % "
                                     f"[{(lo - 1) * 100:.1f}, {(hi - 1) * 100:.1f}] more than tcp")
    # the same cost: a ratio, but no verdict
    text, _ = report.write_report(make_run(tmp_path / "c", rates=(50,), cpu_us={"xdp": 20.0, "tcp": 20.0}))
    assert "no difference resolved between the modes (the CI contains 1)" in _answer(text)[0]


def test_answer_not_resolved_with_one_trial_or_a_ci_spanning_0(tmp_path):
    text, _ = report.write_report(make_run(tmp_path / "a", rates=(50,), repeat=1))
    (line,) = _answer(text)
    assert "xdp not resolved: 1 trial, no interval; at least 3 repeats are needed; tcp not resolved" in line
    assert "xdp/tcp" not in line and "saves" not in line
    text, _ = report.write_report(make_run(tmp_path / "b", rates=(50,), cpu_us={"xdp": 5.0, "tcp": 20.0},
                                           noise=(-60.0, 0.0, 60.0)))
    (line,) = _answer(text)
    assert re.search(r"xdp not resolved: ±\d+\.\d µs per record; about \d+ repeats \(or a \d+ s window\) "
                     r"would resolve it; tcp not resolved", line) and "saves" not in line


def test_attributed_figure_is_the_per_mode_answer(tmp_path):
    """With attribution, busy - idle is not the answer: a negative one is neither shown nor flagged."""
    run_dir = make_run(tmp_path, rates=(50,), lab=False)
    rows = add_components(run_dir)
    doc = json.loads((run_dir / "summary.json").read_text())
    for r in doc["rows"]:
        if r["mode"] in ("xdp", "tcp"):
            r["hw_cpu_us_per_record"] = -100.0  # the idle trial was busier than the traffic
            r["hw_other_tasks_s"] = 0.5 if r["trial"].startswith("001") else 0.01  # 25 % of 2 s
    (run_dir / "summary.json").write_text(json.dumps(doc))
    text, _ = report.write_report(run_dir)
    xdp_attr = [r["hw_attr_us_per_record"] for r in rows if r["mode"] == "xdp"]
    mean, lo, hi, _n = stats.mean_ci(xdp_attr)
    row = _line(text, "xdp", 50, 1024)
    assert f"{mean:.2f}  [{lo:.2f}, {hi:.2f}]" in row and "attributed" in row and "-100" not in row
    kernel = stats.mean_ci(r["hw_attr_us_per_record"] - r["hw_components_us"]["role"] for r in rows if r["mode"] == "xdp")
    assert f"{kernel[0]:.2f} ±" in row  # kernel = attributed - process (the role's part)
    assert "NEGATIVE" not in text
    assert "trial 001-xdp-50-1024-r0 (xdp, 50 Hz, 1024 B): OTHER TASKS 25% of the hardworker CPU" in text
    assert "ATTRIBUTION LOW" not in text
    doc["rows"][1]["hw_process_cpu_us_per_record"] = doc["rows"][1]["hw_attr_us_per_record"] + 1
    (run_dir / "summary.json").write_text(json.dumps(doc))
    assert re.search(r"trial 001-xdp-50-1024-r0 .*ATTRIBUTION LOW: \d+\.\d µs/rec attributed < the role's own",
                     report.write_report(run_dir)[0])
    assert _answer(text)[0].startswith("answer, 50 Hz x 1024 B (attributed hardworker CPU per record")


def test_component_bars_split_the_role_by_its_ticks(tmp_path):
    run_dir = make_run(tmp_path, rates=(2000,))
    rows = add_components(run_dir)
    doc = json.loads((run_dir / "summary.json").read_text())
    for r in doc["rows"]:
        if r["mode"] == "xdp":
            r["hw_role_user_share"] = 0.25 * (r["repeat"] + 1)  # 0.25, 0.5, 0.75
    (run_dir / "summary.json").write_text(json.dumps(doc))
    drawn = plots.plot_components(report.load_run(run_dir)[1], tmp_path / "c.png")
    xdp = next(v for (_c, m), v in drawn.items() if m == "xdp")
    tcp = next(v for (_c, m), v in drawn.items() if m == "tcp")
    roles = [r["hw_components_us"]["role"] for r in rows if r["mode"] == "xdp"]  # 7.2, 8, 8.8
    assert xdp["role user"] == pytest.approx(sum(x * 0.25 * (k + 1) for k, x in enumerate(roles)) / 3)
    assert xdp["role user"] + xdp["role system"] == pytest.approx(8.0)
    assert not xdp.get("role") and tcp["role"] == pytest.approx(6.0) and not tcp.get("role user")


def test_block_softirq_on_the_lab_is_named_an_artifact(tmp_path):
    comps = {m: {**v, "softirq BLOCK": 2.5 if m == "tcp" else 0.4} for m, v in
             COMPONENTS_US.items()}
    for lab in (True, False):
        run_dir = make_run(tmp_path / str(lab), rates=(50,), lab=lab)
        add_components(run_dir, comps)
        text, _ = report.write_report(run_dir)
        assert ("softirq BLOCK per record: xdp 0.40, tcp 2.50 µs - disk I/O completions" in text) is lab


def test_component_bars_cut_off_other_tasks_that_would_squash_them(tmp_path, monkeypatch):
    run_dir = make_run(tmp_path, rates=(50,))
    comps = {m: {**v, "task python": 5000.0} for m, v in COMPONENTS_US.items()}
    add_components(run_dir, comps)
    seen = {}
    real_save = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: (seen.update(ax=fig.axes[0]), real_save(fig, path)))
    drawn = plots.plot_components(report.load_run(run_dir)[1], tmp_path / "c.png")
    ax = seen["ax"]
    charged = max(sum(v for k, v in parts.items() if k != plots.OTHER_TASKS and v > 0) for parts in drawn.values())
    assert ax.get_ylim()[1] == pytest.approx(1.6 * charged)  # the records' parts stay readable
    labels = sorted(t.get_text() for t in ax.texts)
    assert len(labels) == 2 and all(t.startswith("not charged 50") and t.endswith(" µs ↑") for t in labels), labels
    assert all(parts[plots.OTHER_TASKS] > 5000 for parts in drawn.values())  # the full height, read back


def test_cpu_vs_latency_labels_name_the_wake_up_policy():
    from tcpskim import plots
    rows = [{"mode": m, "status": "ok", "latency_p99_us": 300.0, "hw_cpu_us_per_sent_record": 20.0,
             "rate_hz": 2000, "deliver": None, "wakeup": w}
            for m in ("xdp", "tcp") for w in ({"policy": "per-record"}, {"policy": "batch", "interval_ms": 10},
                                               {"policy": "coalesce", "records": 10, "timeout_us": 5000})]
    labels = set(plots.cpu_vs_latency_points(rows))
    assert labels == {f"{m} all {w} 2000 Hz" for m in ("xdp", "tcp")
                      for w in ("per-record", "batch:10ms", "coalesce:10:5000us")}, labels


def test_per_record_median_is_shown_beside_the_window_total(tmp_path):
    """Issue 9: the busy periods' per-record median (mean over trials, with its CI) sits beside
    the window figure; a cell without medians (batched wake-ups) shows '-' there."""
    run_dir = make_run(tmp_path, rates=(50,), lab=False)
    add_components(run_dir)
    doc = json.loads((run_dir / "summary.json").read_text())
    meds = {"xdp": (300.0, 310.0, 320.0), "tcp": (400.0, 404.0, 408.0)}
    for r in doc["rows"]:
        if r["mode"] in meds:
            r["hw_period_median_us"] = meds[r["mode"]][r["repeat"]]
    (run_dir / "summary.json").write_text(json.dumps(doc))
    text, _ = report.write_report(run_dir)
    for mode, vals in meds.items():
        mean, lo, hi, _n = stats.mean_ci(vals)
        assert f"{mean:.2f}  [{lo:.2f}, {hi:.2f}]" in _line(text, mode, 50, 1024)
    for r in doc["rows"]:
        r.pop("hw_period_median_us", None)
    (run_dir / "summary.json").write_text(json.dumps(doc))
    text = report.write_report(run_dir)[0]
    cells = re.split(r"\s{2,}", _line(text, "xdp", 50, 1024).strip())  # the console table: 2+ spaces apart
    h = re.split(r"\s{2,}", next(line for line in text.splitlines() if "median µs/rec" in line).strip())
    assert cells[h.index("median µs/rec")] == "-" and cells[h.index("median 95% CI")] == "-"
