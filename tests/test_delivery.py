"""Delivery policies: spec parsing, the userspace predicate both modes share, the signal."""

import pytest

from roles import delivery
from roles.delivery import DeliverError, Policy, parse
from roles.record import payload_for, signal, signal_of


@pytest.mark.parametrize("spec, policy", [
    ("all", Policy()),
    ("filter:outside:-1500..1500", Policy("filter", "outside", lo=-1500, hi=1500)),
    ("filter:outside:+3..3", Policy("filter", "outside", lo=3, hi=3)),
    ("filter:deadband:200", Policy("filter", "deadband", deadband=200)),
    ("filter:every:100", Policy("filter", "every", every=100)),
    ("latest", Policy("latest", hz=10)),
    ("latest:50", Policy("latest", hz=50)),
])
def test_specs_parse_and_print_back(spec, policy):
    assert parse(spec) == policy
    assert parse(str(policy)) == policy
    assert delivery.from_config(policy.to_config()) == policy


@pytest.mark.parametrize("spec", [
    "", "ALL", "all\n", "filter", "filter:outside:5..1", "filter:outside:1..", "filter:deadband:-1",
    "filter:every:0", "filter:every:x", "latest:0", "latest:1001", "latest:", "filter:every:١٢",
    "filter:outside:0..99999999999", 42, None,
])
def test_bad_specs_are_one_line_naming_the_spec(spec):
    with pytest.raises(DeliverError) as e:
        parse(spec)
    msg = str(e.value)
    assert "\n" not in msg and repr(spec) in msg


def _delivered(spec, seqs):
    m = parse(spec).matcher()
    return [s for s in seqs if m.match(s, signal(s))]


def test_outside_passes_the_rare_excursions_about_one_percent():
    got = _delivered("filter:outside:-1500..1500", range(20000))
    assert 0.005 < len(got) / 20000 < 0.02
    assert all(abs(signal(s)) > 1500 for s in got)


def test_deadband_is_relative_to_the_last_delivered_value():
    got = _delivered("filter:deadband:200", range(2000))
    assert got[0] == 0
    last = signal(0)
    for s in range(1, 2000):  # replay: a record passes iff it moved more than 200 from the last passed
        passed = abs(signal(s) - last) > 200
        assert (s in got) == passed
        if passed:
            last = signal(s)


def test_every_and_all():
    assert _delivered("filter:every:7", range(50)) == list(range(0, 50, 7))
    assert _delivered("all", range(5)) == [0, 1, 2, 3, 4]
    assert _delivered("latest:5", range(5)) == [0, 1, 2, 3, 4]  # latest keeps all; the reader picks


def test_value_filters_never_match_a_payload_without_a_signal():
    assert not parse("filter:outside:0..0").matcher().match(1, None)
    assert parse("filter:every:1").matcher().match(1, None)


def test_signal_is_in_the_payload_and_deterministic():
    assert [signal(s) for s in range(5)] == [signal(s) for s in range(5)]
    assert signal_of(payload_for(123, 1024)) == signal(123)
    assert signal_of(payload_for(123, 3)) is None
    vals = [signal(s) for s in range(5000)]
    assert -6000 < min(vals) and max(vals) < 6000
    slow = [v for v in vals if abs(v) <= 1010]
    assert len(slow) > 0.97 * len(vals)  # slowly varying, with rare excursions


def test_bpf_defines_are_integers_for_the_compiler():
    d = delivery.bpf_defines(parse("filter:outside:-1500..1500"))
    assert d == {"SKIM_DELIVER": 1, "SKIM_FILTER": 1, "SKIM_LO": -1500, "SKIM_HI": 1500,
                 "SKIM_DEADBAND": 0, "SKIM_EVERY": 1}
    assert delivery.bpf_defines(parse("latest:10"))["SKIM_DELIVER"] == 2
    assert all(type(v) is int for v in d.values())


def test_run_experiment_deliver_option_is_checked_before_any_host():
    from tcpskim.inventory import InventoryError
    from tcpskim.plan import params

    d = {"rate": "50", "size": "1024", "duration": 10, "warmup": 2, "tail": 1, "modes": ["xdp", "tcp"],
         "repeat": 3, "wakeup": "per-record", "idle": True, "work_us": 0.0, "deliver": "all"}
    assert params(d).deliver == "all"
    assert params(d, deliver="latest").deliver == "latest:10"
    assert params({**d, "deliver": "filter:every:5"}).deliver == "filter:every:5"
    with pytest.raises(InventoryError, match=r"^--deliver: 'latest:0': HZ must be 1\.\.1000$"):
        params(d, deliver="latest:0")


def test_expected_counts_replay_the_policy():
    assert delivery.expected(parse("all"), 17) == 17
    assert delivery.expected(parse("filter:every:5"), 11) == 3  # 0, 5, 10
    assert delivery.expected(parse("latest:10"), 50) is None
    assert delivery.expected(parse("filter:deadband:300"), 3000) == len(_delivered("filter:deadband:300", range(3000)))
