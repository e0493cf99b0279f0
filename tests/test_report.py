"""tcpskim.report on fake run folders (tests/reportdata.py): tables, flags, plots, report.md."""

from __future__ import annotations

import math
import re

import pytest

from reportdata import make_run
from tcpskim import report, stats

PNG_SIG = b"\x89PNG\r\n\x1a\n"


def _expected_ratio_ci():
    """Fieller for xdp 9,10,11 vs tcp 19,20,21, textbook form (independent of stats.ratio_ci)."""
    va = vb = 1 / 3
    v = va + 0.25 * vb
    df = v * v / (va * va / 2 + (0.25 * vb) ** 2 / 2)
    t = stats.t_quantile(0.95, df)
    g = t * t * vb / 400
    half = t / 20 * math.sqrt(va * (1 - g) + 0.25 * vb)
    return (0.5 - half) / (1 - g), (0.5 + half) / (1 - g)


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
    assert "wakeup=batch/5ms" in text and "repeat=3" in text
    # per-mode table: both modes at both rates, mean and hand-computed t CI (t(2)=4.302653)
    for rate in (1000, 2000):
        xdp = _line(text, "xdp", rate, 1024)
        tcp = _line(text, "tcp", rate, 1024)
        assert " 3 " in xdp and "10.00" in xdp and "[7.52, 12.48]" in xdp
        assert "20.00" in tcp and "[17.52, 22.48]" in tcp
        assert "450.0" in xdp  # BPF ns per packet
        n = rate * 2 * 3  # sent/delivered/logged, then lost/dup/corrupt: 3 trials x 2 s
        assert re.search(rf" {n} +{n} +{n} +0 +0 +0 ", xdp)
    # ratio table: 0.500, Fieller CI, saves 50 %
    lo, hi = _expected_ratio_ci()
    for rate in (1000, 2000):
        row = _line(text, rate, 1024)
        assert "0.500" in row
        assert f"[{lo:.3f}, {hi:.3f}]" in row
        assert f"50.0 % [{(1 - hi) * 100:.1f}, {(1 - lo) * 100:.1f}]" in row
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
    assert "6.1.0-lab" in md and "0123456789ab" in md and "hardworker" in md
    assert report.LAB_NOTE in md


def test_cpu_per_record_one_point_per_rate_and_mode(clean_run, tmp_path):
    _run, rows = report.load_run(clean_run)
    plotted = report.plot_cpu_per_record(rows, tmp_path / "c.png")
    assert list(plotted) == [1024]
    assert set(plotted[1024]) == {"xdp", "tcp"}
    xs, ys = plotted[1024]["xdp"]
    assert xs == [1000, 2000] and ys == pytest.approx([10, 10])
    xs, ys = plotted[1024]["tcp"]
    assert xs == [1000, 2000] and ys == pytest.approx([20, 20])
    pts = report.cpu_per_record_points(rows)
    assert pts[1024]["xdp"][0][2] == pytest.approx(7.515862, abs=1e-6)  # CI lower bound


def test_cpu_per_record_subplot_per_size(tmp_path):
    run_dir = make_run(tmp_path, sizes=(64, 1024), rates=(500,))
    _run, rows = report.load_run(run_dir)
    plotted = report.plot_cpu_per_record(rows, tmp_path / "c.png")
    assert sorted(plotted) == [64, 1024]
    for size in (64, 1024):
        for mode in ("xdp", "tcp"):
            assert plotted[size][mode][0] == [500]


def test_cpu_over_time_one_line_per_trial(clean_run, tmp_path):
    _run, rows = report.load_run(clean_run)
    assert report.plot_cpu_over_time(clean_run, rows, tmp_path / "t.png") == len(rows) == 15
    # the derivative of the fake cumulative counter is the configured busy fraction
    tcp = next(r for r in rows if r["mode"] == "tcp" and r["rate_hz"] == 2000 and r["repeat"] == 1)
    s = report.read_samples(next((clean_run / tcp["trial"]).glob("*/hardworker-*.samples.csv")))
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
    assert row.split() == ["1000", "1024", "1", "1", "9.00", "19.00", "0.474", "-", "52.6", "%"]
    assert "-" in _line(text, "xdp", 1000, 1024).split()[5]
