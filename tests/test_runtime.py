"""Role config validation (roles.runtime.validate): every bad key is named, and combinations
that would stall the data path are refused before a role starts."""

import pytest

from roles import runtime, vocab


def cfg(**over):
    c = {"role": "hardworker", "instance": 0, "run_id": "r1", "trial": "t001-xdp", "mode": "xdp",
         "state_dir": "/var/tmp/s", "out_dir": "/var/tmp/o", "interface": "eth0",
         "hosts": {"hardworker": {"ip": "198.18.0.12", "mac": "02:00:c6:12:00:0c"},
                   "logger": {"ip": "198.18.0.13", "mac": "02:00:c6:12:00:0d"},
                   "sensor": [{"ip": "198.18.0.11", "name": "sensor"}]}}
    c.update(over)
    return c


def test_a_complete_config_is_valid_and_gets_defaults():
    c = runtime.validate(cfg())
    assert c["capture_bytes"] == 1448 and c["ringbuf_bytes"] == 1 << 20 and c["close_timeout_s"] == 10.0


@pytest.mark.parametrize("over, key", [
    ({"capture_bytes": 65535}, "capture_bytes"),         # above what the program can copy
    ({"capture_bytes": 9000, "ringbuf_bytes": 16384}, "ringbuf_bytes"),  # not two records
    ({"ringbuf_bytes": 4096, "capture_bytes": 2048}, "ringbuf_bytes"),
    ({"ringbuf_bytes": 5000}, "ringbuf_bytes"),
    ({"mode": "udp"}, "mode"),
    ({"interface": "eth0; reboot"}, "interface"),
    ({"wakeup": {"policy": "batch", "interval_ms": 0}}, "wakeup.interval_ms"),
    ({"wakeup": {"policy": "coalesce", "records": 0, "timeout_us": 100}}, "wakeup.records"),
    ({"wakeup": {"policy": "coalesce", "records": 8}}, "wakeup.timeout_us"),
    ({"wakeup": {"policy": "sometimes"}}, "wakeup.policy"),
])
def test_bad_values_name_their_key(over, key):
    with pytest.raises(runtime.ConfigError) as exc:
        runtime.validate(cfg(**over))
    assert exc.value.key == key and f"'{key}'" in str(exc.value)


def test_two_records_fit_exactly():
    over = vocab.RING_RECORD_OVERHEAD  # 8 + 20: 2 x (2020 + 28) = 4096
    runtime.validate(cfg(capture_bytes=2048 - over, ringbuf_bytes=4096))
    with pytest.raises(runtime.ConfigError, match="ringbuf_bytes"):
        runtime.validate(cfg(capture_bytes=2049 - over, ringbuf_bytes=4096))
