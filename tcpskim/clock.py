"""Clock offset of a host against the control machine, estimated from SSH round trips.

Each probe runs ``date +%s.%N`` remotely between two local timestamps; the probe with the
shortest round trip wins (least queueing) and the offset's uncertainty is half that round
trip (the remote read happened somewhere inside it). Good to a few ms over Wi-Fi: enough
for send-to-delivery latency when hosts are not NTP-synchronised, and reported with its
uncertainty so nobody mistakes it for better.
"""

from __future__ import annotations

import time

from .fleet import Fleet
from .inventory import Host


def offset(fleet: Fleet, host: Host, probes: int = 5) -> dict:
    best = None
    fleet.connection(host)  # connect first: the handshake must not count as round trip
    for _ in range(probes):
        t0 = time.time()
        remote = float(fleet.run(host, "date +%s.%N").stdout.strip())
        t1 = time.time()
        rtt = t1 - t0
        if best is None or rtt < best[0]:
            best = (rtt, remote - (t0 + t1) / 2)
    rtt, off = best
    return {"offset_s": off, "uncertainty_s": rtt / 2, "rtt_s": rtt}
