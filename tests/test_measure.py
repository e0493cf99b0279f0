"""The hardworker's idle-time reading at the window edges, and its batch ticker.

Reads the real /proc files of this machine (no mocks of the kernel's figures): the precise
reading (/proc/timer_list, read on the CPU itself) and /proc/stat must agree.
"""

import os
import time

import pytest

from roles import attribution, hardworker


def _stat_idle_s(cpu):
    with open("/proc/stat") as f:
        for line in f:
            parts = line.split()
            if parts[0] == f"cpu{cpu}":
                return (int(parts[4]) + int(parts[5])) / os.sysconf("SC_CLK_TCK")
    raise AssertionError(f"cpu{cpu} not in /proc/stat")


@pytest.fixture
def pinned():
    """This thread pinned to one CPU (the one it runs on), affinity restored after."""
    old = os.sched_getaffinity(0)
    cpu = sorted(old)[-1]
    os.sched_setaffinity(0, {cpu})
    try:
        yield cpu
    finally:
        os.sched_setaffinity(0, old)


def test_precise_idle_agrees_with_proc_stat(pinned):
    if attribution._timer_list_idle_ns(pinned) is None:
        pytest.skip("no nohz idle figures in /proc/timer_list on this kernel")
    time.sleep(0.2)  # let the CPU go idle for a while, so both figures move
    precise = attribution.precise_idle_ns([pinned])[pinned] / 1e9
    coarse = _stat_idle_s(pinned)
    # /proc/stat prints the same accounting in clock ticks: they differ by under two ticks.
    assert abs(precise - coarse) < 2.0 / os.sysconf("SC_CLK_TCK") + 1e-9
    assert precise != round(precise, 2) or precise == 0  # ns resolution, not 10 ms steps
    assert os.sched_getaffinity(0) == {pinned}  # the reading moved this thread and back


def test_ticker_returns_on_stop_and_keeps_its_deadlines():
    import threading

    stop = threading.Event()
    tick = hardworker.Ticker(30.0)  # a long batch interval: only stop can end this sleep
    threading.Timer(0.05, stop.set).start()
    t0 = time.monotonic()
    tick.sleep(stop)
    assert time.monotonic() - t0 < 5.0  # checked every Ticker.STOP_CHECK_S, not after 30 s
    # late (the batch took longer than the interval): no burst of catch-up ticks after it
    stop.clear()
    tick = hardworker.Ticker(0.01)
    time.sleep(0.1)
    t0 = time.monotonic()
    tick.sleep(stop)
    assert tick.next >= t0 + 0.01 - 1e-3


def test_xdp_run_time_stats_are_on_in_the_warm_up_only(monkeypatch, tmp_path):
    """The global run-time stats switch costs every BPF program (the tracer's probes too) a
    clock pair per run: on from go to the window's open, off in the window; the program's
    window time is its warm-up ns per run x the frames it saw in the window."""
    import contextlib
    import threading

    from roles import window

    def no_tracer(*a, **k):
        raise RuntimeError("no tracer in this test")

    monkeypatch.setattr(attribution, "Tracer", no_tracer)
    on = threading.Event()
    state = {"run_time_ns": 0, "run_cnt": 0, "frames": 0}
    ticking = threading.Event()

    def frames():  # the program runs every ms; the kernel counts its time only while stats are on
        while not ticking.is_set():
            state["frames"] += 1
            if on.is_set():
                state["run_cnt"] += 1
                state["run_time_ns"] += 500
            time.sleep(0.001)

    @contextlib.contextmanager
    def switch():
        on.set()
        try:
            yield
        finally:
            on.clear()

    t = threading.Thread(target=frames, daemon=True)
    t.start()
    try:
        m = window.WindowMeter({os.sched_getaffinity(0).pop()}, str(tmp_path / "s.csv"))
        assert m.tracer is None
        now = time.time()
        m.start(now + 0.3, now + 0.6, lambda: 0, prog_stats=lambda: dict(state), run_time_stats=switch)
        assert on.is_set()  # the warm-up counts
        time.sleep(0.45)
        assert not on.is_set()  # the window does not
        cnt_at_open = state["run_cnt"]
        time.sleep(0.3)
        out = m.finish()
    finally:
        ticking.set()
        t.join()
    assert state["run_cnt"] == cnt_at_open  # nothing counted after the open
    assert out["bpf_run_cnt"] > 100  # frames in the window (its own counters: ~300 at 1 kHz)
    assert out["bpf_run_time_ns"] == pytest.approx(500 * out["bpf_run_cnt"])
    assert out["bpf_warmup_runs"] > 100 and "warm-up" in out["bpf_run_time_source"]
