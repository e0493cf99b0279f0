"""Fleet.hostctl's reading of what the host half printed (the SSH run itself is faked here;
the end-to-end tests drive it over real SSH)."""

from types import SimpleNamespace

import pytest

from tcpskim import CHECKOUT, inventory
from tcpskim.fleet import Fleet, HostError


@pytest.fixture
def fleet(monkeypatch):
    inv = inventory.load(CHECKOUT / "inventory.toml")
    f = Fleet(inv)
    out = {}
    monkeypatch.setattr(f, "run", lambda host, cmd, **kw: SimpleNamespace(**out["r"]))
    return f, inv.hardworker, out


def test_json_object_is_the_answer(fleet):
    f, h, out = fleet
    out["r"] = {"stdout": 'log line\n{"xdp_prog_id": 7}\n', "stderr": "", "exited": 0}
    assert f.hostctl(h, "facts") == {"xdp_prog_id": 7}


def test_exit_zero_without_json_is_a_failure(fleet):
    f, h, out = fleet
    out["r"] = {"stdout": "Python 2 says hello\n", "stderr": "", "exited": 0}
    with pytest.raises(HostError, match="hostctl facts: Python 2 says hello"):
        f.hostctl(h, "facts")


def test_the_host_halfs_error_is_kept_whole(fleet):
    f, h, out = fleet
    long = "sensor-1 died before it was ready; last log lines: " + "x" * 400
    out["r"] = {"stdout": '{"error": "%s"}\n' % long, "stderr": "", "exited": 1}
    with pytest.raises(HostError) as exc:
        f.hostctl(h, "wait-ready")
    assert str(exc.value) == f"hostctl wait-ready: {long}"
