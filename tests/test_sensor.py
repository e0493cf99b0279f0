"""The sensor role's shutdown wait, on loopback sockets: bounded once SIGTERM came."""

import socket
import threading
import time

import pytest

from roles import sensor


def _loopback_pair():
    lst = socket.create_server(("127.0.0.1", 0))
    cli = socket.create_connection(lst.getsockname())
    srv, _ = lst.accept()
    lst.close()
    return cli, srv  # srv never closes until the test does: the peer that does not answer


@pytest.mark.parametrize("stop_after", [0.0, 0.3])
def test_sensor_close_wait_is_short_once_stopped(stop_after):
    """SIGTERM (the stop flag) cuts the peer wait to ~1 s whatever close_timeout_s says, so
    the XDP detach in the sensor's finally comes long before the control side's SIGKILL."""
    cli, srv = _loopback_pair()
    stop = threading.Event()
    timer = threading.Timer(stop_after, stop.set)
    timer.start()
    t0 = time.monotonic()
    try:
        assert sensor.close_and_wait(cli, 10.0, stop) is False
        took = time.monotonic() - t0
    finally:
        timer.cancel()
        srv.close()
    assert took < 5.0  # far from close_timeout_s (10 s) and the control side's SIGKILL (10 s)
    assert cli.fileno() == -1  # closed


def test_sensor_close_wait_sees_the_peer_close():
    cli, srv = _loopback_pair()
    threading.Timer(0.2, srv.close).start()
    assert sensor.close_and_wait(cli, 5.0, threading.Event()) is True
