"""The summary row of a trial: the per-record CPU formula, baseline, sampler, faults."""

import pytest

from tcpskim.plan import Trial, params
from tcpskim.results import trial_row

P = params({"rate": 50.0, "size": 1024, "duration": 5.0, "warmup": 1.0, "tail": 1.0, "modes": ["xdp", "tcp"],
            "repeat": 1, "wakeup": "per-record", "idle": True, "work_us": 0.0})


def summaries(sent=1100, delivered=1100, stored=1100, complete=True, **win):
    w = {"complete": complete, "elapsed_s": 5.0, "cpu_busy_s": 0.5, "process_cpu_s": 0.3, "sampler_cpu_s": 0.05,
         "delivered_in_window": 1000, "bpf_run_time_ns": 5_000_000, "bpf_run_cnt": 10_000,
         "ctx_voluntary": 900, "ctx_involuntary": 100} | win
    return {("hw", "hardworker", 0): {"delivered": delivered, "lost": 0, "duplicates": 0, "corrupt": 0,
                                      "window": w, "peak_rss_bytes": 1 << 24,
                                      "latency_us": {"p50": 300.0, "p99": 900.0}},
            ("lg", "logger", 0): {"stored": stored},
            ("s1", "sensor", 1): {"sent": sent, "achieved_rate_hz": 50.0}}


def test_idle_trial_gives_the_baseline_rate():
    row = trial_row("r", Trial(0, 0, "idle", 0.0, 0), P, summaries(cpu_busy_s=0.1), {})
    assert row["_idle_rate"] == pytest.approx(0.1 / 5.0)


def test_cpu_per_record_subtracts_the_scaled_baseline_and_the_sampler():
    row = trial_row("r", Trial(1, 0, "xdp", 50.0, 1024), P, summaries(), {0: 0.02})
    assert row["hw_idle_baseline_cpu_s"] == pytest.approx(0.1)  # 0.02 CPU-s/s x 5 s
    assert row["hw_cpu_us_per_record"] == pytest.approx((0.5 - 0.1) / 1000 * 1e6)  # 400 µs
    assert row["hw_process_cpu_us_per_record"] == pytest.approx((0.3 - 0.05) / 1000 * 1e6)  # 250 µs
    assert row["bpf_ns_per_packet"] == pytest.approx(500.0)
    assert row["ctx_switches"] == 1000 and row["status"] == "ok"
    assert (row["sent"], row["delivered"], row["logged"], row["lost"]) == (1100, 1100, 1100, 0)


def test_missing_tail_is_lost_and_the_trial_incomplete():
    row = trial_row("r", Trial(1, 0, "tcp", 50.0, 1024), P, summaries(delivered=1090), {0: 0.02})
    assert row["lost"] == 10 and row["status"] == "incomplete"


def test_unclosed_window_or_unknown_sampler_is_not_hidden():
    row = trial_row("r", Trial(1, 0, "xdp", 50.0, 1024), P, summaries(complete=False, sampler_cpu_s=None), {0: 0.0})
    assert row["status"] == "incomplete"
    assert row["hw_process_cpu_us_per_record"] is None


def test_latency_as_the_hardworker_measured_it_and_no_baseline_without_idle():
    row = trial_row("r", Trial(1, 0, "xdp", 50.0, 1024), P, summaries(), {})
    assert row["latency_p50_us"] == pytest.approx(300.0) and row["latency_p99_us"] == pytest.approx(900.0)
    assert row["hw_idle_baseline_cpu_s"] is None  # no idle trial: nothing subtracted, and the row says so


def test_hardworker_takes_each_sensors_clock_skew_out():
    """Two sensors with different clocks: each record's latency on the hardworker's clock."""
    from roles.hardworker import Decider, Stream
    from roles.record import encode

    # hardworker clock = sensor 1's + 2 ms = sensor 2's - 3 ms; true latency 100 µs for both
    dec = Decider(0, 0, 10, clock_skew_s={"1": 0.002, "2": -0.003})
    for sid, skew_ns in ((1, 2_000_000), (2, -3_000_000)):
        send = 1_000_000_000  # sensor clock
        dec.feed(Stream(("s", sid)), encode(sid, 0, send, 16), send + 100_000 + skew_ns)
    assert sorted(dec.latency.items) == [100_000, 100_000]


def test_duplicates_do_not_hide_lost_records_and_corrupt_ones_are_not_lost():
    # 100 sent, 90 delivered once each, 5 of them again (duplicates), 3 arrived corrupt:
    # 7 never arrived in any form.
    s = summaries(sent=100, delivered=90, stored=100)
    s[("hw", "hardworker", 0)].update(duplicates=5, corrupt=3)
    row = trial_row("r", Trial(1, 0, "xdp", 50.0, 1024), P, s, {0: 0.02})
    assert (row["lost"], row["duplicates"], row["corrupt"]) == (7, 5, 3)
    assert row["status"] == "incomplete"


def test_softirq_share_is_busy_cpu_outside_the_process():
    row = trial_row("r", Trial(1, 0, "xdp", 50.0, 1024), P, summaries(cpu_busy_s=0.5, process_cpu_s=0.3), {0: 0.02})
    assert row["hw_softirq_share"] == pytest.approx((0.5 - 0.3) / 0.5)
    idle = trial_row("r", Trial(0, 0, "idle", 0.0, 0), P, summaries(cpu_busy_s=0.0), {})
    assert idle["hw_softirq_share"] is None  # nothing busy: no share
